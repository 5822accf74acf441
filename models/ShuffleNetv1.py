"""RepDistiller's CIFAR ShuffleNetV1 (``ShuffleV1``: 240/480/960 channels, 4/8/4 units, 3 groups)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, channel_shuffle, global_pool, run_stages


class Bottleneck(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1, merged with the shortcut, then ReLU.

    A strided unit averages the input (3x3/2) as shortcut and *concatenates* it, so its branch
    produces ``out_planes`` channels that are appended to the ``in_planes`` shortcut channels.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        # The first unit reads the 24-channel stem, too narrow to split into groups (RD's rule).
        self.first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity())

    def forward(self, x: Tensor, with_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        pre = torch.cat([out, res], 1) if self.stride == 2 else out + res
        out = F.relu(pre)
        return (out, pre) if with_preact else out


class ShuffleNet(nn.Module):
    """1x1 stem to 24 channels (no pooling), three stages each opening with a strided unit, ``linear``."""

    def __init__(self, cfg: dict, num_classes: int = 10):
        super().__init__()
        out_planes, num_blocks, groups = cfg["out_planes"], cfg["num_blocks"], cfg["groups"]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for i, (planes, n) in enumerate(zip(out_planes, num_blocks, strict=True), start=1):
            units = [Bottleneck(in_planes, planes - in_planes, stride=2, groups=groups)]
            units += [Bottleneck(planes, planes, stride=1, groups=groups) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            in_planes = planes
        self.linear = nn.Linear(out_planes[2], num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything from the input to the last stage (the AB/FSP pre-training set)."""
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError('ShuffleNet currently is not supported for "Overhaul" teacher')

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        f0 = x
        x, maps = run_stages((self.layer1, self.layer2, self.layer3), x, preact)
        pooled = global_pool(x)
        logits = self.linear(pooled)
        return ([f0, *maps, pooled], logits) if is_feat else logits


def ShuffleV1(**kwargs) -> ShuffleNet:
    return ShuffleNet({"out_planes": [240, 480, 960], "num_blocks": [4, 8, 4], "groups": 3}, **kwargs)
