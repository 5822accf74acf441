"""Check that a teacher checkpoint loads strictly into its architecture, the way train_student.py loads it.

    python scripts/check_teacher.py save/models/resnet56_vanilla/ckpt_epoch_240.pth resnet56
    python scripts/check_teacher.py --ready

Used by fetch_pretrained_teachers.sh on every file it keeps. Exit 0 when every key and shape fits; 1 with
one line on stderr saying what does not; 3 when this interpreter cannot run the check at all (no torch,
say): that says nothing about the file, which the fetcher then leaves alone. ``--ready`` only tests that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANNOT_RUN = 3


def check_teacher(path: str, arch: str, num_classes: int) -> None:
    """Raise with a one-line reason unless ``path`` holds weights that load strictly into ``arch``."""
    from helper.checkpoint import load_strict, safe_load, state_dict_of
    from models import build_model

    model = build_model(arch, num_classes)
    load_strict(model, state_dict_of(safe_load(path), path), path, arch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="checkpoint file (RepDistiller format: {'model': state_dict, ...})")
    parser.add_argument("arch", nargs="?", help="architecture name, as --model_t / models.model_dict")
    parser.add_argument("--num_classes", type=int, default=100, help="classes in the checkpoint")
    parser.add_argument("--ready", action="store_true", help="only check that this python can run the check")
    args = parser.parse_args(argv)
    if not args.ready and args.arch is None:
        parser.error("give a checkpoint file and its architecture, or --ready")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        import helper.checkpoint  # noqa: F401 - what the check needs: torch and the project
        import models  # noqa: F401
    except ImportError as exc:
        print(f"check_teacher: {sys.executable} cannot run the check ({exc})", file=sys.stderr)
        return CANNOT_RUN
    if args.ready:
        return 0
    try:
        check_teacher(args.path, args.arch, args.num_classes)
    except Exception as exc:  # any failure is reported the same way: one line, exit 1
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"check_teacher: {reason}", file=sys.stderr)
        return 1
    print(f"{args.path}: loads into {args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
