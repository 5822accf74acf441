"""mdistiller's Tiny-ImageNet MobileNetV2 (``mobilenetv2_tinyimagenet``, its ResNet18 -> MobileNetV2 student).

Not RepDistiller's CIFAR ``mobile_half`` nor the ImageNet one: full width, a 1x1 stem (padding 1, so a 64 px
image becomes 66 px), ReLU6, biased convolutions with PyTorch's default initialisation, and a 1x1 convolution
as the classifier (``conv2``). Module names follow mdistiller's (``pre``, ``stage1``-``stage7``, ``conv1``,
``conv2``, each block's ``residual``), so its state dicts load strictly; ``conv2`` computes as a Linear on the
pooled vector (:class:`models.layers.PointwiseClassifier`).
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import ModelOutput, PointwiseClassifier, global_pool

# (expansion, output channels, blocks, first stride) of stage2..stage6; stage1 and stage7 are single blocks
STAGES = ((6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 1))
LAST_CHANNELS = 1280


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                   groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups),
            nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True)]


class LinearBottleNeck(nn.Module):
    """1x1 expand, 3x3 depthwise (ReLU6 after each), 1x1 linear projection; identity residual when shapes
    allow. ``residual.0-7`` as mdistiller's."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, t: int = 6):
        super().__init__()
        hidden = in_channels * t
        self.residual = nn.Sequential(
            *_conv_bn_relu6(in_channels, hidden, 1),
            *_conv_bn_relu6(hidden, hidden, 3, stride, padding=1, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.add_identity = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual(x)
        return out + x if self.add_identity else out


class MobileNetV2TinyImageNet(nn.Module):
    """Features ``[pre, stage2, stage3, stage4, conv1, pooled]`` as mdistiller's ``feats`` + ``pooled_feat``."""

    def __init__(self, num_classes: int = 200):
        super().__init__()
        self.pre = nn.Sequential(*_conv_bn_relu6(3, 32, 1, padding=1))
        self.stage1 = LinearBottleNeck(32, 16, 1, t=1)
        in_channels = 16
        for index, (t, out_channels, blocks, stride) in enumerate(STAGES, start=2):
            layers = [LinearBottleNeck(in_channels, out_channels, stride, t)]
            layers += [LinearBottleNeck(out_channels, out_channels, 1, t) for _ in range(blocks - 1)]
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            in_channels = out_channels
        self.stage7 = LinearBottleNeck(in_channels, 320, 1, t=6)
        self.conv1 = nn.Sequential(*_conv_bn_relu6(320, LAST_CHANNELS, 1))
        self.conv2 = PointwiseClassifier(LAST_CHANNELS, num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything before the classifier (the AB/FSP pre-training set)."""
        return nn.ModuleList([self.pre, *(getattr(self, f"stage{i}") for i in range(1, 8)), self.conv1])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The projection BN of stage2-4's last block (linear bottlenecks) and the head's BN."""
        return [self.stage2[-1].residual[-1], self.stage3[-1].residual[-1], self.stage4[-1].residual[-1],
                self.conv1[1]]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        """``preact`` is ignored: the stage outputs are linear bottlenecks (BN, no ReLU), as mdistiller's."""
        f0 = self.pre(x)
        f1 = self.stage2(self.stage1(f0))
        f2 = self.stage3(f1)
        f3 = self.stage4(f2)
        f4 = self.conv1(self.stage7(self.stage6(self.stage5(f3))))
        pooled = global_pool(f4)
        logits = self.conv2(pooled)
        return ([f0, f1, f2, f3, f4, pooled], logits) if is_feat else logits


def mobilenetv2_tinyimagenet(num_classes: int = 200) -> MobileNetV2TinyImageNet:
    return MobileNetV2TinyImageNet(num_classes=num_classes)
