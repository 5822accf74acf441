"""Networks by the reference's names (``registry.py`` of Fast-Datafree) mapped onto ours.

FDF's wrn*, resnet8...resnet110, resnet8x4/32x4 and vgg8/11/13 are RepDistiller's networks with the same
state_dict keys, so ``wrn40_2`` is our ``wrn_40_2``, ``vgg11`` our ``vgg11`` and so on; its ``resnet50``
(kuangliu/DAFL, bottlenecks) is RepDistiller's CIFAR ``ResNet50``, and DAFL's CIFAR ``resnet18``/``resnet34``
(basic blocks, ``shortcut``/``linear`` keys) are our ``ResNet18_cifar``/``ResNet34_cifar``. Its
``shufflenetv2``/``mobilenetv2`` are other implementations and are not mapped.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from helper.checkpoint import load_strict, safe_load, state_dict_of
from helper.errors import UserError
from helper.naming import arch_from_path
from models import model_dict

FDF_NAMES = {
    "wrn16_1": "wrn_16_1", "wrn16_2": "wrn_16_2", "wrn40_1": "wrn_40_1", "wrn40_2": "wrn_40_2",
    "resnet50": "ResNet50", "resnet18": "ResNet18_cifar", "resnet34": "ResNet34_cifar",
}
DEFAULT_TEACHER = "wrn_40_2"  # the reference's --teacher default


def known_archs() -> list[str]:
    return list(model_dict)


def canonical_arch(name: str) -> str:
    """Our name for a reference or our model name; a one-line error for anything else."""
    arch = FDF_NAMES.get(name, name)
    if arch not in model_dict:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(known_archs())} "
                        f"(or the reference's {', '.join(FDF_NAMES)})")
    return arch


def build_network(name: str, num_classes: int) -> nn.Module:
    arch = canonical_arch(name)
    return model_dict[arch](num_classes=num_classes)


def load_teacher(path: str | Path, arch: str | None, num_classes: int) -> tuple[nn.Module, str]:
    """The teacher in ``path`` (RepDistiller's {'model'}, the reference's {'state_dict'}, a bare state_dict)
    and its architecture: ``arch``, else the checkpoint's 'arch', else its folder's name (RepDistiller's
    convention), else the reference's default wrn40_2."""
    checkpoint = safe_load(path)
    stored = checkpoint.get("arch") if isinstance(checkpoint.get("arch"), str) else None
    name = arch or stored or arch_from_path(path, known_archs()) or DEFAULT_TEACHER
    teacher = build_network(name, num_classes)
    load_strict(teacher, state_dict_of(checkpoint, path), path, canonical_arch(name))
    return teacher, canonical_arch(name)
