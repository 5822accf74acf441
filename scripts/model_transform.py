"""Turn a torchvision ImageNet checkpoint into a teacher file for ``--path_t``, as SemCKD's
scripts/model_transform.py does for its ImageNet teachers.

    python scripts/model_transform.py save/models/ResNet34_vanilla/resnet34-333f7ec4.pth
    # writes save/models/ResNet34_vanilla/resnet34_transformed.pth: {'model': state_dict, 'arch': 'ResNet34'}

The architecture comes from torchvision's file name (resnet18, resnet34, resnet50, mobilenet_v2,
shufflenetv2_x1: ResNet18, ResNet34, ResNet50_Imagenet, MobileNetV2_Imagenet, ShuffleV2_Imagenet), or
from --arch. Our ImageNet models share torchvision's keys, so the weights are stored as they are,
after a strict load into our model (any mismatch is one line naming the keys, and nothing is written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from helper.checkpoint import atomic_save, load_strict, safe_load, state_dict_of  # noqa: E402
from helper.errors import UserError  # noqa: E402
from helper.pretrained import TORCHVISION_WEIGHTS  # noqa: E402


def torchvision_names() -> dict[str, str]:
    """torchvision's file-name stem (``resnet34`` of ``resnet34-b627a593.pth``) -> our architecture, for
    every published version of each model's ImageNet weights."""
    from torchvision.models import get_weight

    names = {}
    for arch, weights in TORCHVISION_WEIGHTS.items():
        for version in type(get_weight(weights)):
            names[version.url.rsplit("/", 1)[-1].split("-")[0]] = arch
    return names


def classes_of(state: dict) -> int:
    """Rows of the last 2-D weight: the classifier's output size."""
    matrices = [value for key, value in state.items() if key.endswith("weight") and value.dim() == 2]
    if not matrices:
        raise UserError("the checkpoint has no classifier weight (no 2-D '...weight' tensor)")
    return matrices[-1].shape[0]


def transform(source: str | Path, target: str | Path | None = None, arch: str | None = None) -> Path:
    """Write ``source``'s weights as ``{'model': state_dict, 'arch': arch}``; returns the file written."""
    from models import build_model

    source = Path(source)
    stem = source.name.split("-")[0].removesuffix(".pth")
    arch = arch or torchvision_names().get(stem)
    if arch is None:
        known = ", ".join(sorted(torchvision_names()))
        raise UserError(f"cannot tell the architecture from the name {source.name} (torchvision's start with one "
                        f"of: {known}); pass --arch")
    state = state_dict_of(safe_load(source), source)
    load_strict(build_model(arch, classes_of(state)), state, source, arch)
    target = Path(target) if target is not None else source.with_name(f"{stem}_transformed.pth")
    atomic_save({"model": state, "arch": arch}, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="torchvision's weights file, e.g. resnet34-333f7ec4.pth")
    parser.add_argument("-o", "--output", default=None,
                        help="file to write (default: <name>_transformed.pth beside the checkpoint)")
    parser.add_argument("--arch", default=None, choices=sorted(TORCHVISION_WEIGHTS),
                        help="our architecture (default: from torchvision's file name)")
    args = parser.parse_args(argv)
    try:
        target = transform(args.checkpoint, args.output, args.arch)
    except UserError as exc:
        print(f"model_transform: {exc}", file=sys.stderr)
        return 1
    print(f"{target}: {args.checkpoint} as a teacher file (--path_t)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
