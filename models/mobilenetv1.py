"""ImageNet MobileNetV1 (mdistiller's ResNet50 -> MobileNetV1 student), keys as mdistiller's.

Unlike mdistiller's version, ``num_classes`` is honoured and the pooling is adaptive, so any input
size works. Features: f0 the stem output, f1-f4 the outputs of depthwise-separable units 3, 5, 11
and 13 (128x56x56 ... 1024x7x7 at 224 px), f5 the pooled vector; ``preact`` gives f1-f4 before
their final ReLU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, conv_bn, global_pool

# Units of ``self.model`` whose outputs are the stage features f1..f4.
FEATURE_UNITS = (3, 5, 11, 13)

# (output channels, stride) of the 13 depthwise-separable units.
_UNITS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _separable(inp: int, oup: int, stride: int) -> nn.Sequential:
    """3x3 depthwise-BN-ReLU then 1x1 pointwise-BN-ReLU, flat (keys ``.0``-``.4``)."""
    depthwise = conv_bn(inp, inp, 3, stride, groups=inp, act=nn.ReLU)
    return nn.Sequential(*depthwise, *conv_bn(inp, oup, 1, act=nn.ReLU))


class MobileNetV1(nn.Module):
    """conv-BN-ReLU 3->32 (stride 2), 13 depthwise-separable units, global pool, ``fc``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        units: list[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.ReLU)]
        inp = 32
        for oup, stride in _UNITS:
            units.append(_separable(inp, oup, stride))
            inp = oup
        self.model = nn.Sequential(*units)
        self.fc = nn.Linear(inp, num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything from the input to the last unit (the AB/FSP pre-training set)."""
        return nn.ModuleList([self.model])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The pointwise BN of each feature unit."""
        return [self.model[i][-2] for i in FEATURE_UNITS]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        x = self.model[0](x)
        feats = [x]
        for i in range(1, len(self.model)):
            unit = self.model[i]
            if i in FEATURE_UNITS:
                pre = unit[:-1](x)  # the unit without its final (in-place) ReLU
                x = F.relu(pre)
                feats.append(pre if preact else x)
            else:
                x = unit(x)
        pooled = global_pool(x)
        feats.append(pooled)
        logits = self.fc(pooled)
        return (feats, logits) if is_feat else logits
