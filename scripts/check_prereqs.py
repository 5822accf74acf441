"""A run script's prerequisites, checked once before its first run: this python (it must import torch and
torchvision), the data set (present, or downloadable where the run downloads it) and every teacher file the
script names. One line per missing item, then exit 2, so that a long series of runs never starts half-prepared.

    python scripts/check_prereqs.py --prog run_cifar_distill.sh --dataset cifar100 \\
        --teacher ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth -- "$@"

Arguments after ``--`` are the runs' own arguments (their extra ones at least): a --dataset or --data_folder
(--data_root) there replaces the script's, a --path_t or --teacher_ckpt there is one more teacher file. Runs
only the standard library until torch is known to import.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where fetch_pretrained_teachers.sh puts each name it fetches
PUBLISHED = re.compile(r"(?:^|/)save/models/(\w+)_vanilla/ckpt_epoch_240\.pth$")
TINYIMAGENET = re.compile(r"(?:^|/)save/models/ResNet18_cifar_tinyimagenet_vanilla/ti_res18$")


def teacher_missing(path: str) -> str | None:
    """Why the teacher file ``path`` is not usable yet, with how to get it; None when it is a file."""
    if os.path.isfile(path):
        return None
    published = PUBLISHED.search(path)
    name = published.group(1) if published else "tinyimagenet" if TINYIMAGENET.search(path) else None
    how = f"fetch it: sh scripts/fetch_pretrained_teachers.sh {name}" if name else "train it or copy it there"
    return f"teacher {path} is missing ({how})"


def python_missing() -> str | None:
    """Why this interpreter cannot run the training scripts, or None."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as exc:
        return (f"python {sys.executable} cannot import the project's requirements ({exc}): activate the "
                "project's venv (. .venv/bin/activate; sh scripts/setup_env.sh makes it) or "
                "pip install -r requirements.txt")
    return None


def run_arguments(extra: list[str]) -> argparse.Namespace:
    """What the runs' own arguments say about their data and teacher (the last of a repeated flag wins)."""
    run = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    run.add_argument("--dataset")
    run.add_argument("--data_folder", "--data_root", dest="data_folder")
    run.add_argument("--path_t", "--t_model_path", "--teacher_ckpt", dest="teacher")
    return run.parse_known_args(extra)[0]


def missing(args: argparse.Namespace) -> list[str]:
    """Every missing item, one line each."""
    run = run_arguments(args.extra)
    teachers = dict.fromkeys([*args.teacher, *([run.teacher] if run.teacher else [])])
    lines = [why for why in map(teacher_missing, teachers) if why]
    broken = python_missing()
    if broken:  # the data check needs torchvision; the interpreter comes first
        return [broken, *lines]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from dataset.availability import data_unavailable

    names = [run.dataset] if run.dataset else [name for value in args.dataset for name in value.split()]
    folder = run.data_folder or args.data_folder
    return [why for why in (data_unavailable(name, folder) for name in names) if why] + lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--prog", required=True, help="the run script's name, which starts each line")
    parser.add_argument("--dataset", action="append", default=[],
                        help="the data set(s) the runs use (repeatable, or several space-separated)")
    parser.add_argument("--data_folder", default="./data", help="where the runs look for it")
    parser.add_argument("--teacher", action="append", default=[], help="a teacher file the runs load (repeatable)")
    parser.add_argument("extra", nargs="*", help="after --: the runs' own extra arguments")
    args = parser.parse_args(argv)
    lines = missing(args)
    for line in lines:
        print(f"{args.prog}: missing: {line}", file=sys.stderr)
    return 2 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
