"""RepDistiller's CIFAR MobileNetV2 ("mobile_half": expansion T=6, width 0.5).

Differs from the ImageNet MobileNetV2: the second group keeps stride 1, every block has the 1x1
expansion conv (even at t=1), plain ReLU, channels are ``int(c * W)`` without rounding to 8.
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import ModelOutput, conv_bn, global_pool, init_weights

# Block-group indices whose outputs are the stage features f1..f4.
FEATURE_GROUPS = (1, 2, 4, 6)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; identity residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(*self._layers(inp, oup, stride, expand_ratio))

    @staticmethod
    def _layers(inp: int, oup: int, stride: int, expand_ratio: float) -> list[nn.Module]:
        """RD's flat layout: ``conv.0-2`` expand, ``conv.3-5`` depthwise, ``conv.6-7`` project."""
        hidden = int(inp * expand_ratio)
        return [
            *conv_bn(inp, hidden, 1, act=nn.ReLU),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU),
            *conv_bn(hidden, oup, 1),
        ]

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """Stem conv (stride 2), seven inverted-residual groups, 1x1 conv to 1280, pool, ``classifier``."""

    def __init__(self, T: int, feature_dim: int, width_mult: float = 1.0):
        super().__init__()
        # expansion t, channels c, blocks n, first stride s
        setting = [(1, 16, 1, 1), (T, 24, 2, 1), (T, 32, 3, 2), (T, 64, 4, 2)]
        setting += [(T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1)]
        input_channel = int(32 * width_mult)
        self.conv1 = conv_bn(3, input_channel, 3, 2, act=nn.ReLU)
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn(input_channel, self.last_channel, 1, act=nn.ReLU)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        init_weights(self, linear_std=0.01)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Projection BN of the last block of each feature group."""
        return [self.blocks[i][-1].conv[-1] for i in FEATURE_GROUPS]

    def get_feat_modules(self) -> nn.ModuleList:
        """Stem and inverted-residual groups (the 1280-channel conv is excluded, as in RD)."""
        return nn.ModuleList([self.conv1, self.blocks])

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        """``preact`` is ignored: the stage outputs are linear bottlenecks (BN, no ReLU) already."""
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in FEATURE_GROUPS:
                feats.append(x)
        pooled = global_pool(self.conv2(x))
        feats.append(pooled)
        logits = self.classifier(pooled)
        return (feats, logits) if is_feat else logits


def mobilenetv2_T_w(T: int, W: float, feature_dim: int = 100) -> MobileNetV2:
    return MobileNetV2(T=T, feature_dim=feature_dim, width_mult=W)


def mobile_half(num_classes: int) -> MobileNetV2:
    return mobilenetv2_T_w(6, 0.5, num_classes)
