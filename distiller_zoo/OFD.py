"""OFD: Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019 (arXiv:1904.01866).

The student's pre-ReLU stage features, through a 1x1 conv + BN connector, regress the teacher's
pre-ReLU features with a partial L2: where the teacher is negative (a value its ReLU discards) only
a student value above the teacher's margin is penalised, and negative teacher values below the
margin are replaced by it. Two margins (``--ofd_margin``):

* ``bn`` (default), the paper's and mdistiller's: per teacher channel, the expected value of the
  negative part of the Gaussian that the BatchNorm before the ReLU describes (weight = std, bias =
  mean); positions weighted 1/2^(n-1-i), each the per-sample sum over C x H x W averaged over the
  batch. mdistiller's CIFAR weight: -b 0.001.
* ``batch``, Knowledge-Distillation-Zoo's: per channel, the mean of the teacher's negative values in
  the batch; each position the mean over all elements, positions averaged. KD-Zoo's weight: -b 0.5.

Deliberate deviation: mdistiller switches the teacher to train mode during OFD (its BatchNorms then
use batch statistics); our teacher is frozen in eval mode, as for every other method.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, flag_tag, register


def bn_margin(bn: nn.BatchNorm2d, floor: float = 1e-12) -> Tensor:
    """Per channel, E[x | x < 0] for x ~ N(bias, |weight|^2), or -3|weight| when P(x < 0) <= 0.001.

    mean - std * pdf(mean/std) / cdf(-mean/std), in float64 as mdistiller (scipy). A zero weight
    (a constant channel) is floored at ``floor`` to keep the ratio finite; the limit is the same.
    """
    std = bn.weight.detach().double().abs().clamp(min=floor)
    mean = bn.bias.detach().double()
    below = torch.special.ndtr(-mean / std)
    pdf = torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(below > 0.001, mean - std * pdf / below, -3 * std)
    return margin.float()


class OFD(nn.Module):
    """One position: KD-Zoo's connector and loss (``OFD(in_channels, out_channels)``), or with a fixed
    per-channel ``margin`` the paper's/mdistiller's partial L2.

    ``forward(fm_s, fm_t)`` takes pre-ReLU maps; the teacher's is average-pooled to the student's
    H x W first (mdistiller; KD-Zoo's pairs share sizes).
    """

    def __init__(self, in_channels: int, out_channels: int, margin: Tensor | None = None):
        super().__init__()
        self.connector = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        nn.init.kaiming_normal_(self.connector[0].weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("margin", None if margin is None else margin.reshape(1, -1, 1, 1).clone())

    def forward(self, fm_s: Tensor, fm_t: Tensor) -> Tensor:
        if fm_t.shape[2:] != fm_s.shape[2:]:
            fm_t = F.adaptive_avg_pool2d(fm_t, fm_s.shape[2:])
        fm_s = self.connector(fm_s)
        if self.margin is None:
            return self.batch_margin_loss(fm_s, fm_t)
        return self.partial_l2(fm_s, fm_t, self.margin)

    @staticmethod
    def partial_l2(fm_s: Tensor, fm_t: Tensor, margin: Tensor) -> Tensor:
        """The paper's loss: the target is max(t, margin); no penalty where s <= target <= 0.
        Summed over C x H x W, averaged over the batch."""
        target = torch.maximum(fm_t, margin)
        skip = (fm_s <= target) & (target <= 0)
        return ((fm_s - target) ** 2).masked_fill(skip, 0).sum() / fm_s.shape[0]

    @staticmethod
    def get_margin(fm: Tensor, eps: float = 1e-6) -> Tensor:
        """KD-Zoo's per-batch margin: per channel, the mean of the negative values (0 when none)."""
        negative = (fm < 0).to(fm.dtype)
        total = (fm * negative).sum(dim=(0, 2, 3), keepdim=True)
        return total / (negative.sum(dim=(0, 2, 3), keepdim=True) + eps)

    def batch_margin_loss(self, fm_s: Tensor, fm_t: Tensor) -> Tensor:
        """KD-Zoo's loss: the same partial L2 with the batch margin, averaged over every element."""
        target = torch.maximum(fm_t, self.get_margin(fm_t))
        skip = (fm_s <= target) & (target <= 0)
        return ((fm_s - target) ** 2).masked_fill(skip, 0).mean()


class OFDMethod(DistillMethod):
    """One :class:`OFD` per paired pre-ReLU stage map ``F[1:-1]``, lists aligned from the end
    (mdistiller). ``bn``: position i of n weighted 1/2^(n-1-i) and summed; ``batch``: averaged
    (KD-Zoo's ``/3``)."""

    def __init__(self, channels_s: list[int], channels_t: list[int], margins: list[Tensor] | None):
        super().__init__()
        n = len(channels_s)
        if margins is None:
            self.criterion = nn.ModuleList(OFD(c_s, c_t) for c_s, c_t in zip(channels_s, channels_t, strict=True))
            self.position_weights = [1.0 / n] * n
        else:
            pairs = zip(channels_s, channels_t, margins, strict=True)
            self.criterion = nn.ModuleList(OFD(c_s, c_t, m) for c_s, c_t, m in pairs)
            self.position_weights = [1.0 / 2 ** (n - 1 - i) for i in range(n)]

    def forward(self, batch: DistillBatch) -> Tensor:
        maps_s, maps_t = aligned_stages(batch.feat_s, batch.feat_t)
        terms = zip(maps_s, maps_t, self.criterion, self.position_weights, strict=True)
        return sum(w * ofd(f_s, f_t.detach()) for f_s, f_t, ofd, w in terms)


def aligned_stages(feat_s: list[Tensor], feat_t: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The last min(n_s, n_t) stage maps ``F[1:-1]`` of each net."""
    maps_s, maps_t = feat_s[1:-1], feat_t[1:-1]
    n = min(len(maps_s), len(maps_t))
    return maps_s[len(maps_s) - n:], maps_t[len(maps_t) - n:]


def teacher_margins(teacher: nn.Module, maps_t: list[Tensor]) -> list[Tensor]:
    """The ``bn`` margins of the teacher's last ``len(maps_t)`` stages, from its unfolded BatchNorms."""
    try:
        bns = list(teacher.get_bn_before_relu())
    except (AttributeError, NotImplementedError):
        raise ValueError(f"ofd's BatchNorm margins need the teacher's get_bn_before_relu(), which "
                         f"{type(teacher).__name__} lacks; use --ofd_margin batch") from None
    n = len(maps_t)
    bns = bns[len(bns) - n:]
    if len(bns) != n or any(bn.num_features != f.shape[1] for bn, f in zip(bns, maps_t, strict=True)):
        raise ValueError(f"ofd: the teacher's get_bn_before_relu() does not match its stage maps "
                         f"(channels {[f.shape[1] for f in maps_t]}); use --ofd_margin batch")
    return [bn_margin(bn) for bn in bns]


def build(ctx: MethodContext) -> OFDMethod:
    maps_s, maps_t = aligned_stages(ctx.feat_s, ctx.feat_t)
    if not maps_s or any(f.dim() != 4 for f in (*maps_s, *maps_t)):
        raise ValueError("ofd needs 4-D stage feature maps F[1:-1] from both networks")
    margins = teacher_margins(ctx.teacher, maps_t) if ctx.opt.ofd_margin == "bn" else None
    return OFDMethod([f.shape[1] for f in maps_s], [f.shape[1] for f in maps_t], margins)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--ofd_margin", default="bn", choices=["bn", "batch"],
                       help="bn: margins from the teacher's BatchNorms, the paper's/mdistiller's loss "
                            "(default -b 0.001); batch: KD-Zoo's per-batch margin and mean (use -b 0.5)")


register(
    MethodSpec(
        name="ofd",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=0.001),
        summary="overhaul of feature distillation: pre-ReLU features, margins, partial L2 (Heo et al. 2019)",
        preact=True,
        add_args=add_args,
        run_tag=flag_tag("ofd_margin", "bn"),
    )
)
