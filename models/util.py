"""Trainable connector / embedding modules used by the distillation methods (RepDistiller's ``util.py``).

Class names, constructor signatures and submodule names match RD's, so method state (and the
state_dict keys it produces) is interchangeable. Shapes are full ``(N, C, H, W)`` sizes, as RD
passes ``feat.shape``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .layers import conv_bn, init_weights

Shape = Sequence[int]


class ConvReg(nn.Module):
    """FitNet regressor: maps a student map onto the teacher map's shape, then BN (+ ReLU).

    Student height ``2H`` -> 3x3 stride-2 conv; ``H/2`` -> 4x4 stride-2 transposed conv;
    any larger-or-equal size -> a valid conv whose kernel absorbs the difference (1x1 when equal).
    """

    def __init__(self, s_shape: Shape, t_shape: Shape, use_relu: bool = True):
        super().__init__()
        self.use_relu = use_relu
        _, s_C, s_H, s_W = s_shape
        _, t_C, t_H, t_W = t_shape
        if s_H == 2 * t_H:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=3, stride=2, padding=1)
        elif s_H * 2 == t_H:
            self.conv = nn.ConvTranspose2d(s_C, t_C, kernel_size=4, stride=2, padding=1)
        elif s_H >= t_H and s_W >= t_W:
            self.conv = nn.Conv2d(s_C, t_C, kernel_size=(1 + s_H - t_H, 1 + s_W - t_W))
        else:
            raise ValueError(
                f"ConvReg cannot map a {s_H}x{s_W} student map onto a {t_H}x{t_W} teacher map: the student "
                "map must be exactly half, double, or at least the teacher's size; pick another hint layer"
            )
        self.bn = nn.BatchNorm2d(t_C)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x


class Regress(nn.Module):
    """Linear + ReLU regression on flattened features (hint on vectors)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 1024):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.linear(torch.flatten(x, 1)))


class Normalize(nn.Module):
    """Divide each row by its L-``power`` norm (clamped away from 0 so a zero row stays finite)."""

    def __init__(self, power: float = 2):
        super().__init__()
        self.power = power

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(self.power).sum(1, keepdim=True).pow(1.0 / self.power)
        return x / norm.clamp_min(1e-12)


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation (CRD's embedding head)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.l2norm = Normalize(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.l2norm(self.linear(torch.flatten(x, 1)))


class LinearEmbed(nn.Module):
    """Plain linear projection of flattened features (CC's embedding)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(torch.flatten(x, 1))


class MLPEmbed(nn.Module):
    """Two-layer MLP (hidden ``2 * dim_out``) followed by L2 normalisation."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128):
        super().__init__()
        self.linear1 = nn.Linear(dim_in, 2 * dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(2 * dim_out, dim_out)
        self.l2norm = Normalize(2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.linear1(torch.flatten(x, 1)))
        return self.l2norm(self.linear2(x))


class AAEmbed(nn.Module):
    """SemCKD's per-pair regressor: 1x1 conv to 2C_t, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv to C_t.

    No biases and PyTorch's default init, as SemCKD; keys ``regressor.0`` ... ``regressor.6`` as its.
    """

    def __init__(self, num_input_channels: int = 1024, num_target_channels: int = 128):
        super().__init__()
        self.num_mid_channel = 2 * num_target_channels
        mid = self.num_mid_channel
        self.regressor = nn.Sequential(
            *conv_bn(num_input_channels, mid, 1, act=nn.ReLU),
            *conv_bn(mid, mid, 3, act=nn.ReLU),
            nn.Conv2d(mid, num_target_channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.regressor(x)


class Flatten(nn.Module):
    """``B x ...`` -> ``B x D`` as a module (safe for non-contiguous / channels_last input)."""

    def forward(self, feat: Tensor) -> Tensor:
        return torch.flatten(feat, 1)


# RD's PoolEmbed geometry per WRN-style feature index: (pooled size, channels); index 4 is the vector.
_POOL_EMBED_LAYERS = {0: (8, 16), 1: (8, 16), 2: (6, 32), 3: (4, 64), 4: (1, 64)}


class PoolEmbed(nn.Module):
    """Adaptive pool a 16/16/32/64-channel feature to a fixed grid, flatten, Linear, L2-normalise."""

    def __init__(self, layer: int = 0, dim_out: int = 128, pool_type: str = "avg"):
        super().__init__()
        if layer not in _POOL_EMBED_LAYERS:
            raise ValueError(f"PoolEmbed layer must be one of {sorted(_POOL_EMBED_LAYERS)}, got {layer}")
        if pool_type not in ("avg", "max"):
            raise ValueError(f"pool_type must be 'avg' or 'max', got {pool_type!r}")
        pool_size, channels = _POOL_EMBED_LAYERS[layer]
        self.embed = nn.Sequential()
        if layer <= 3:
            if pool_type == "max":
                self.embed.add_module("MaxPool", nn.AdaptiveMaxPool2d((pool_size, pool_size)))
            else:
                self.embed.add_module("AvgPool", nn.AdaptiveAvgPool2d((pool_size, pool_size)))
        self.embed.add_module("Flatten", Flatten())
        self.embed.add_module("Linear", nn.Linear(channels * pool_size * pool_size, dim_out))
        self.embed.add_module("Normalize", Normalize(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x)


class Connector(nn.Module):
    """AB connector: per position, identity when (C, H) already match, else ConvReg without ReLU."""

    def __init__(self, s_shapes: Sequence[Shape], t_shapes: Sequence[Shape]):
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(f"unequal length of feature lists: {len(s_shapes)} vs {len(t_shapes)}")
        self.s_shapes = s_shapes
        self.t_shapes = t_shapes
        pairs = zip(s_shapes, t_shapes, strict=True)
        self.connectors = nn.ModuleList([self._connector(s, t) for s, t in pairs])

    @staticmethod
    def _connector(s_shape: Shape, t_shape: Shape) -> nn.Module:
        if s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]:
            return nn.Sequential()
        return ConvReg(s_shape, t_shape, use_relu=False)

    def forward(self, g_s: Sequence[Tensor]) -> list[Tensor]:
        return [connector(f) for connector, f in zip(self.connectors, g_s, strict=True)]


class ConnectorV2(Connector):
    """OFD connector: per position a 1x1 conv (no bias) + BN to the teacher's channels, He-initialised."""

    @staticmethod
    def _connector(s_shape: Shape, t_shape: Shape) -> nn.Module:
        connector = conv_bn(s_shape[1], t_shape[1], 1)
        init_weights(connector)
        return connector


def _conv_stack(
    channels: Sequence[int], use_bn: bool, conv: type[nn.Conv2d] | type[nn.ConvTranspose2d]
) -> nn.Sequential:
    """3x3 same-size convs ``channels[i] -> channels[i+1]``, each + BN (or an empty slot) + LeakyReLU(0.1).

    The empty ``nn.Sequential()`` slot keeps RD's indices (conv at 0, 3, 6) whether or not BN is used.
    """
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [
            conv(c_in, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out) if use_bn else nn.Sequential(),
            nn.LeakyReLU(0.1, inplace=True),
        ]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT paraphraser: a conv auto-encoder on the teacher map whose bottleneck is the "factor".

    Encoder C -> C -> kC -> kC (convs), decoder kC -> kC -> C -> C (transposed convs).
    """

    def __init__(self, t_shape: Shape, k: float = 0.5, use_bn: bool = False):
        super().__init__()
        in_channel = t_shape[1]
        out_channel = int(t_shape[1] * k)
        encoder_widths = [in_channel, in_channel, out_channel, out_channel]
        self.encoder = _conv_stack(encoder_widths, use_bn, nn.Conv2d)
        self.decoder = _conv_stack(encoder_widths[::-1], use_bn, nn.ConvTranspose2d)

    def forward(self, f_s: Tensor, is_factor: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The factor alone if ``is_factor``, else ``(factor, reconstruction)``."""
        factor = self.encoder(f_s)
        if is_factor:
            return factor
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """FT translator: maps the student map to the paraphraser's factor space (C_s -> C_s -> kC_t -> kC_t)."""

    def __init__(self, s_shape: Shape, t_shape: Shape, k: float = 0.5, use_bn: bool = True):
        super().__init__()
        in_channel = s_shape[1]
        out_channel = int(t_shape[1] * k)
        self.encoder = _conv_stack([in_channel, in_channel, out_channel, out_channel], use_bn, nn.Conv2d)

    def forward(self, f_s: Tensor) -> Tensor:
        return self.encoder(f_s)


def __getattr__(name: str):
    """``from models.util import SelfA`` as in SemCKD's code: the module lives with its method
    (distiller_zoo/SemCKD.py), imported on first use since distiller_zoo itself imports this module."""
    if name == "SelfA":
        from distiller_zoo.SemCKD import SelfA

        return SelfA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
