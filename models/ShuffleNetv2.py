"""RepDistiller's CIFAR ShuffleNetV2 (``ShuffleV2``: size 1, 116/232/464 channels, 3/7/3 units, 1024 head).

Stage depths (3, 7, 3) and the 1x1 stride-1 stem differ from the ImageNet ShuffleNetV2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, channel_shuffle, global_pool, run_stages

configs = {
    0.2: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 3, 3)},
    0.3: {"out_channels": (40, 80, 160, 512), "num_blocks": (3, 7, 3)},
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


class BasicBlock(nn.Module):
    """Split channels in half; the right half goes 1x1-BN-ReLU, 3x3 dw-BN, 1x1-BN-ReLU; concat, shuffle."""

    def __init__(self, in_channels: int):
        super().__init__()
        half = in_channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor, with_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        left, right = x.chunk(2, dim=1)
        right = F.relu(self.bn1(self.conv1(right)))
        right = self.bn3(self.conv3(self.bn2(self.conv2(right))))
        out = channel_shuffle(torch.cat([left, F.relu(right)], 1), 2)
        if with_preact:
            # RD takes the pre-activation *before* the shuffle: its channel order differs from ``out``.
            return out, torch.cat([left, right], 1)
        return out


class DownBlock(nn.Module):
    """Strided unit: both branches see the whole input and halve the resolution; concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid_channels = out_channels // 2
        # left: 3x3 dw-BN, 1x1-BN-ReLU
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right: 1x1-BN-ReLU, 3x3 dw-BN, 1x1-BN-ReLU
        self.conv3 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(
            mid_channels, mid_channels, kernel_size=3, stride=2, padding=1, groups=mid_channels, bias=False
        )
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_channels)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """1x1 stem to 24 channels (no pooling), three stages, 1x1 conv head, ``linear``."""

    def __init__(self, net_size: float, num_classes: int = 10):
        super().__init__()
        out_channels, num_blocks = configs[net_size]["out_channels"], configs[net_size]["num_blocks"]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        for i, (channels, n) in enumerate(zip(out_channels[:3], num_blocks, strict=True), start=1):
            units = [DownBlock(in_channels, channels), *(BasicBlock(channels) for _ in range(n))]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            in_channels = channels
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        """Stem and stages; the 1x1 head conv is excluded, as in RD."""
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError('ShuffleNetV2 currently is not supported for "Overhaul" teacher')

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        f0 = x
        x, maps = run_stages((self.layer1, self.layer2, self.layer3), x, preact)
        pooled = global_pool(F.relu(self.bn2(self.conv2(x))))
        logits = self.linear(pooled)
        return ([f0, *maps, pooled], logits) if is_feat else logits


def ShuffleV2(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(net_size=1, **kwargs)
