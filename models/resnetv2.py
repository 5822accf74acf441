"""RepDistiller's CIFAR ResNet50 (``resnetv2.py``): 3x3 stem, no max-pool, bottleneck stages; and the
same file's basic-block ResNet18/34, which our zoo names ``ResNet18_cifar``/``ResNet34_cifar`` (the plain
names are the ImageNet networks): DAFL's and Fast-Datafree's CIFAR ``resnet18``/``resnet34`` and mdistiller's
Tiny-ImageNet ResNet18 teacher, with the same keys.

Their keys differ from the torchvision-style ResNets (``shortcut`` instead of ``downsample``,
``linear`` instead of ``fc``), hence a separate class.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from . import resnet
from .layers import ModelOutput, conv_bn, global_pool, init_weights, run_stages


class Bottleneck(resnet.Bottleneck):
    """The torchvision-style bottleneck with RD resnetv2's ``shortcut`` module (empty when identity)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        out_planes = planes * self.expansion
        projects = stride != 1 or in_planes != out_planes
        self.shortcut = conv_bn(in_planes, out_planes, 1, stride) if projects else nn.Sequential()

    def skip(self, x: Tensor) -> Tensor:
        return self.shortcut(x)


class BasicBlock(resnet.BasicBlock):
    """The basic block with resnetv2's ``shortcut`` projection (empty Sequential when identity)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride)
        projects = stride != 1 or in_planes != planes
        self.shortcut = conv_bn(in_planes, planes, 1, stride) if projects else nn.Sequential()

    def skip(self, x: Tensor) -> Tensor:
        return self.shortcut(x)


class ResNet(nn.Module):
    """Four stages (64/128/256/512 x the block's expansion) at strides 1, 2, 2, 2, classifier ``linear``."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10, block: type = Bottleneck):
        super().__init__()
        self.conv1 = resnet.conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        widths_strides = zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True)
        for i, (planes, n, stride) in enumerate(widths_strides, start=1):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything from the input to the last stage (the AB/FSP pre-training set)."""
        return nn.ModuleList([self.conv1, self.bn1, *self.stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """``bn3`` of each stage's last block."""
        return [stage[-1].last_bn for stage in self.stages()]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        # RD returns a list ``[feats, logits]`` when preact=True; a tuple unpacks the same way.
        x = F.relu(self.bn1(self.conv1(x)))
        f0 = x
        x, maps = run_stages(self.stages(), x, preact)
        pooled = global_pool(x)
        logits = self.linear(pooled)
        return ([f0, *maps, pooled], logits) if is_feat else logits


def ResNet50(**kwargs) -> ResNet:
    return ResNet([3, 4, 6, 3], **kwargs)


def ResNet18_cifar(**kwargs) -> ResNet:
    return ResNet([2, 2, 2, 2], block=BasicBlock, **kwargs)


def ResNet34_cifar(**kwargs) -> ResNet:
    return ResNet([3, 4, 6, 3], block=BasicBlock, **kwargs)
