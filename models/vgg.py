"""CIFAR VGGs with BN of RepDistiller (vgg8/11/13/16/19_bn); the classifier is a single Linear.

Each block ends in BN (its final ReLU is applied in ``forward``), which is what exposes the
pre-ReLU stage features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, init_weights

cfg = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "E": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
    "S": [[64], [128], [256], [512], [512]],
}


class VGG(nn.Module):
    """Five conv blocks; 2x2 max-pools after blocks 0-2 (and 3 for 64-px inputs), global pool, Linear."""

    def __init__(self, cfg: list[list[int]], batch_norm: bool = False, num_classes: int = 1000):
        super().__init__()
        in_channels = 3
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", self._make_layers(widths, batch_norm, in_channels))
            in_channels = widths[-1]
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        init_weights(self, linear_std=0.01)

    @staticmethod
    def _make_layers(widths: list[int], batch_norm: bool, in_channels: int) -> nn.Sequential:
        """3x3 conv (with bias) [+ BN] + ReLU per width, minus the block's final ReLU."""
        layers: list[nn.Module] = []
        for v in widths:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
        return nn.Sequential(*layers[:-1])

    def get_feat_modules(self) -> nn.ModuleList:
        """Blocks and pools up to the global pool (the AB/FSP pre-training set)."""
        return nn.ModuleList([getattr(self, f"{kind}{i}") for i in range(5) for kind in ("block", "pool")])

    def get_bn_before_relu(self) -> list[nn.Module]:
        """Last layer (the BN) of blocks 1-4."""
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        height = x.shape[2]
        x = F.relu(self.block0(x))
        feats = [x]
        pools = (self.pool0, self.pool1, self.pool2, self.pool3)
        for pool, block in zip(pools, (self.block1, self.block2, self.block3, self.block4), strict=True):
            # As RD: pool3 only for 64-px inputs, so on 32-px inputs blocks 3 and 4 both run at 4x4.
            if pool is not self.pool3 or height == 64:
                x = pool(x)
            pre = block(x)
            x = F.relu(pre)
            feats.append(pre if preact else x)
        pooled = torch.flatten(self.pool4(x), 1)
        feats.append(pooled)
        logits = self.classifier(pooled)
        return (feats, logits) if is_feat else logits


def vgg8_bn(**kwargs) -> VGG:
    return VGG(cfg["S"], batch_norm=True, **kwargs)


def vgg11_bn(**kwargs) -> VGG:
    return VGG(cfg["A"], batch_norm=True, **kwargs)


def vgg13_bn(**kwargs) -> VGG:
    return VGG(cfg["B"], batch_norm=True, **kwargs)


def vgg16_bn(**kwargs) -> VGG:
    return VGG(cfg["D"], batch_norm=True, **kwargs)


def vgg19_bn(**kwargs) -> VGG:
    return VGG(cfg["E"], batch_norm=True, **kwargs)
