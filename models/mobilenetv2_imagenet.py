"""ImageNet MobileNetV2 (width 1.0) with a state_dict identical to torchvision's ``mobilenet_v2``.

``features`` is a ModuleList, as SemCKD's copy, so the stage features can be tapped: f0 =
features[0] (32x112x112 at 224 px), f1-f4 the outputs of features[3], [6], [13], [17], f5 the pooled
1280-d vector. Stage outputs are linear bottlenecks (BN, no ReLU), so ``preact`` changes nothing.
"""

from __future__ import annotations

from torch import Tensor, nn

from . import mobilenetv2
from .layers import ModelOutput, conv_bn, global_pool, init_weights

# Indices into ``features`` whose outputs are the stage features f0..f4.
FEATURE_LAYERS = (0, 3, 6, 13, 17)

# expansion t, channels c, blocks n, first stride s
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)]
_SETTING += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(mobilenetv2.InvertedResidual):
    """torchvision's layout: nested ConvBNReLU6 units, and no expansion conv when t == 1."""

    @staticmethod
    def _layers(inp: int, oup: int, stride: int, expand_ratio: float) -> list[nn.Module]:
        hidden = int(round(inp * expand_ratio))
        expand = [conv_bn(inp, hidden, 1, act=nn.ReLU6)] if expand_ratio != 1 else []
        depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        return [*expand, depthwise, *conv_bn(hidden, oup, 1)]


class MobileNetV2(nn.Module):
    """Stem (stride 2), 17 inverted residuals, 1x1 conv to 1280, global pool, dropout + Linear."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
        inp = 32
        for t, c, n, s in _SETTING:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        layers.append(conv_bn(inp, 1280, 1, act=nn.ReLU6))
        self.features = nn.ModuleList(layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        init_weights(self, linear_std=0.01)

    def get_feat_modules(self) -> nn.ModuleList:
        """Stem and inverted residuals (the 1280-channel conv is excluded, like the CIFAR model)."""
        return nn.ModuleList(list(self.features[:-1]))

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Projection BN of the block ending each stage feature f1..f4."""
        return [self.features[i].conv[-1] for i in FEATURE_LAYERS[1:]]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        feats = []
        for i, layer in enumerate(self.features[:-1]):
            x = layer(x)
            if i in FEATURE_LAYERS:
                feats.append(x)
        pooled = global_pool(self.features[-1](x))
        feats.append(pooled)
        logits = self.classifier(pooled)
        return (feats, logits) if is_feat else logits


def mobilenet_v2(**kwargs) -> MobileNetV2:
    return MobileNetV2(**kwargs)
