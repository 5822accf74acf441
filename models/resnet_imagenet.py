"""ImageNet ResNet18/34/50 with state_dicts identical to torchvision's (pretrained weights load strictly).

Features (as SemCKD): f0 after the max-pool, f1-f4 the stage outputs, f5 the pooled vector.
``preact=True`` swaps f1-f4 for the pre-ReLU sums of each stage's last block.
"""

from __future__ import annotations

from torch import nn

from .layers import init_weights
from .resnet import BasicBlock, Bottleneck, ResNetBase, make_stage


class ResNet(ResNetBase):
    """7x7/2 conv stem + 3x3/2 max-pool, four stages (64..512 wide) at strides 1, 2, 2, 2, ``fc``."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            self.add_module(f"layer{i}", make_stage(block, inplanes, planes, n, stride=1 if i == 1 else 2))
            inplanes = planes * block.expansion
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)

    def stem(self) -> list[nn.Module]:
        return [*super().stem(), self.maxpool]


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
