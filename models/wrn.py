"""Wide ResNets of RepDistiller (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Pre-activation design: blocks start with BN-ReLU, so the stage outputs ``f0..f3`` are raw residual
sums and only the final ``bn1``-ReLU produces a post-activation map.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, global_pool, init_weights


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3; shortcut is identity, or a 1x1 conv of the *activated* input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropRate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.convShortcut = (
            None if in_planes == out_planes else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """One stage: ``nb_layers`` blocks in ``self.layer``, the first one striding."""

    def __init__(
        self, nb_layers: int, in_planes: int, out_planes: int, block: type[BasicBlock], stride: int,
        dropRate: float = 0.0,
    ):
        super().__init__()
        self.layer = nn.Sequential(*[
            block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropRate)
            for i in range(nb_layers)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: conv 3->16, stages of width 16k/32k/64k at strides 1, 2, 2, BN-ReLU, pool, ``fc``."""

    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1, dropRate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth {depth} must be 6n+4")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], BasicBlock, 1, dropRate)
        self.block2 = NetworkBlock(n, channels[1], channels[2], BasicBlock, 2, dropRate)
        self.block3 = NetworkBlock(n, channels[2], channels[3], BasicBlock, 2, dropRate)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        self.nChannels = channels[3]
        init_weights(self, zero_linear_bias=True)

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything from the input to the last stage (the AB/FSP pre-training set)."""
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN that next reads each stage output: the next stages' first ``bn1``, the final ``bn1``."""
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = global_pool(self.relu(self.bn1(f3)))
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        if preact:
            # As in RD: "pre-activation" = the stage output passed through the BN that follows it.
            # These BNs run a second time per forward, so in train mode their running statistics
            # are updated twice per step. Kept on purpose for checkpoint/behaviour compatibility.
            f1, f2, f3 = (bn(f) for bn, f in zip(self.get_bn_before_relu(), (f1, f2, f3), strict=True))
        return [f0, f1, f2, f3, pooled], logits


def wrn_40_2(**kwargs) -> WideResNet:
    return WideResNet(depth=40, widen_factor=2, **kwargs)


def wrn_40_1(**kwargs) -> WideResNet:
    return WideResNet(depth=40, widen_factor=1, **kwargs)


def wrn_16_2(**kwargs) -> WideResNet:
    return WideResNet(depth=16, widen_factor=2, **kwargs)


def wrn_16_1(**kwargs) -> WideResNet:
    return WideResNet(depth=16, widen_factor=1, **kwargs)
