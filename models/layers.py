"""Building blocks shared by the model files: conv-BN units, weight init, stage plumbing.

Module names created here end up in state_dict keys, so every helper returns plain
``nn.Sequential`` containers whose indices match the RepDistiller / torchvision layouts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# What every model's forward returns: logits, or ``(feats, logits)`` when ``is_feat=True``.
ModelOutput = Tensor | tuple[list[Tensor], Tensor]


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: Callable[..., nn.Module] | None = None,
) -> nn.Sequential:
    """Bias-free 'same'-padded conv + BN (+ in-place activation): ``[conv, bn(, act)]``.

    Callers either nest the result (torchvision's ``ConvBNReLU`` keys ``x.0``/``x.1``) or splat it
    into a larger Sequential (RepDistiller's flat layouts), so one helper serves both key schemes.
    """
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """RepDistiller's init: He-normal (fan_out) convs with zero bias, BN weight 1 / bias 0.

    ``N(0, sqrt(2 / (k*k*out_channels)))``, as RD writes it for WRN/VGG/MobileNetV2, is exactly
    ``kaiming_normal_(mode='fan_out')``. Linear layers keep PyTorch's default unless
    ``linear_std`` is given (weights ``N(0, linear_std)``, bias 0) or ``zero_linear_bias`` is set.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if linear_std is not None or zero_linear_bias:
                nn.init.zeros_(m.bias)


def global_pool(x: Tensor) -> Tensor:
    """Global average pool to ``B x C``; equals RD's fixed-size pools at their native input size."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave ``groups`` equal channel groups (ShuffleNet) in one copy that keeps ``x``'s memory format.

    A reshape-based shuffle would return NCHW for a channels_last input and make the next conv convert back.
    """
    out = torch.empty_like(x)
    out.unflatten(1, (-1, groups)).copy_(x.unflatten(1, (groups, -1)).transpose(1, 2))
    return out


class PostActBlock(nn.Module):
    """Residual block computing ``relu(branch(x) + skip(x))``.

    ``forward(x, with_preact=True)`` also returns the pre-ReLU sum, which is what RD exposes as
    a stage's pre-activation feature (``preact=True``).
    """

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def skip(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor, with_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        pre = self.branch(x) + self.skip(x)
        out = F.relu(pre)
        return (out, pre) if with_preact else out


def run_stages(stages: Iterable[nn.Sequential], x: Tensor, preact: bool) -> tuple[Tensor, list[Tensor]]:
    """Run consecutive stages; return the final output and one feature per stage.

    The feature is the stage output, or with ``preact`` the pre-activation of its last block, which
    must accept ``with_preact=True`` and return ``(out, pre)``.
    """
    feats = []
    for stage in stages:
        *head, last = stage
        for block in head:
            x = block(x)
        x, pre = last(x, with_preact=True)
        feats.append(pre if preact else x)
    return x, feats


class PointwiseClassifier(nn.Conv2d):
    """A classifier stored as a 1x1 convolution (mdistiller's Tiny-ImageNet MobileNetV2 ``conv2``: its keys and
    shapes) that maps the pooled ``B x C`` vector to ``B x K`` logits, as a Linear does; so whatever finds or
    replaces a network's classifier (SRRL, SimKD, the linear probe) treats it as one."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, 1)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)
