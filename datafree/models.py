"""Networks by the reference's names (``registry.py`` of Fast-Datafree) mapped onto ours, and the two it
has that our zoo lacks: DAFL's CIFAR ResNet-18/34 (3x3 stem, no max-pool, ``shortcut``/``linear`` keys).

FDF's wrn*, resnet8...resnet110, resnet8x4/32x4 and vgg8/11/13 are RepDistiller's networks with the same
state_dict keys, so ``wrn40_2`` is our ``wrn_40_2``, ``vgg11`` our ``vgg11`` and so on; its ``resnet50``
(kuangliu/DAFL, bottlenecks) is RepDistiller's CIFAR ``ResNet50``. Its ``shufflenetv2``/``mobilenetv2``
are other implementations and are not mapped.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from helper.checkpoint import load_strict, safe_load, state_dict_of
from helper.errors import UserError
from helper.naming import arch_from_path
from models import model_dict, resnet, resnetv2
from models.layers import conv_bn, init_weights

FDF_NAMES = {
    "wrn16_1": "wrn_16_1", "wrn16_2": "wrn_16_2", "wrn40_1": "wrn_40_1", "wrn40_2": "wrn_40_2",
    "resnet50": "ResNet50",
}
DEFAULT_TEACHER = "wrn_40_2"  # the reference's --teacher default


class ShortcutBasicBlock(resnet.BasicBlock):
    """The basic block with DAFL's ``shortcut`` projection (empty Sequential when identity)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        projects = stride != 1 or in_planes != planes
        self.shortcut = conv_bn(in_planes, planes, 1, stride) if projects else nn.Sequential()

    def skip(self, x: Tensor) -> Tensor:
        return self.shortcut(x)


class CifarResNet(resnetv2.ResNet):
    """DAFL's CIFAR ResNet of basic blocks (64/128/256/512 at strides 1, 2, 2, 2, classifier ``linear``);
    RepDistiller's ``resnetv2.ResNet`` builds only bottlenecks, so the stages are built here and its
    forward, stages and feature API are reused."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10):
        nn.Module.__init__(self)
        self.conv1 = resnet.conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True), 1):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(ShortcutBasicBlock(in_planes, planes, s))
                in_planes = planes
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)


EXTRA_MODELS = {
    "resnet18": lambda num_classes: CifarResNet([2, 2, 2, 2], num_classes=num_classes),
    "resnet34": lambda num_classes: CifarResNet([3, 4, 6, 3], num_classes=num_classes),
}


def known_archs() -> list[str]:
    return [*model_dict, *EXTRA_MODELS]


def canonical_arch(name: str) -> str:
    """Our name for a reference or our model name; a one-line error for anything else."""
    arch = FDF_NAMES.get(name, name)
    if arch not in model_dict and arch not in EXTRA_MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(known_archs())} "
                        f"(or the reference's {', '.join(FDF_NAMES)})")
    return arch


def build_network(name: str, num_classes: int) -> nn.Module:
    arch = canonical_arch(name)
    return EXTRA_MODELS[arch](num_classes) if arch in EXTRA_MODELS else model_dict[arch](num_classes=num_classes)


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
