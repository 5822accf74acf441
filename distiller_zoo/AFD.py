"""AFD: Wang et al., "Pay Attention to Features, Transfer Learn Faster CNNs", ICLR 2020
(OpenReview ryxyCeHtPB), in Knowledge-Distillation-Zoo's form.

Feature maps, each channel normalised by its spatial L2 norm, are matched channel by channel; the
channels are weighted by an attention computed from the teacher's map. KD-Zoo replaces the paper's
attention (found unstable there) with a squeeze-and-excitation block, which we follow. The attention
is trained on the same loss, so it may drift towards channels that are already matched.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match, stage_maps
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register


class AFD(nn.Module):
    """One position: mean over the batch of sum_c rho_c * mean_hw (F_s/|F_s|_c - F_t/|F_t|_c)^2.

    rho = sigmoid(conv1x1(ReLU(conv1x1(GAP(F_t))))) normalised to sum 1 over the C channels; the
    hidden width is ``int(in_channels * att_f)``. Both maps must have ``in_channels`` channels.
    """

    def __init__(self, in_channels: int, att_f: float):
        super().__init__()
        mid_channels = int(in_channels * att_f)
        self.attention = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, 1, 0, bias=True),
            nn.ReLU(),
            nn.Conv2d(mid_channels, in_channels, 1, 1, 0, bias=True),
        )
        for m in self.attention:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, fm_s: Tensor, fm_t: Tensor, eps: float = 1e-6) -> Tensor:
        fm_s, fm_t = pool_to_match(fm_s, fm_t)
        b, c = fm_t.shape[:2]
        rho = torch.sigmoid(self.attention(fm_t.mean(dim=(2, 3), keepdim=True)).reshape(b, c))
        rho = rho / rho.sum(dim=1, keepdim=True)
        fm_s = fm_s / (torch.linalg.vector_norm(fm_s, dim=(2, 3), keepdim=True) + eps)
        fm_t = fm_t / (torch.linalg.vector_norm(fm_t, dim=(2, 3), keepdim=True) + eps)
        return (rho * (fm_s - fm_t).pow(2).mean(dim=(2, 3))).sum(dim=1).mean()


class AFDMethod(DistillMethod):
    """One :class:`AFD` per stage map ``F[1:-1]``, post-ReLU; losses averaged over positions (KD-Zoo's ``/3``)."""

    def __init__(self, channels: list[int], att_f: float):
        super().__init__()
        self.criterion = nn.ModuleList(AFD(c, att_f) for c in channels)

    def forward(self, batch: DistillBatch) -> Tensor:
        maps_s, maps_t = stage_maps(batch.feat_s, batch.feat_t, "AFD")
        pairs = zip(maps_s, maps_t, self.criterion, strict=True)
        return sum(afd(f_s, f_t.detach()) for f_s, f_t, afd in pairs) / len(self.criterion)


def build(ctx: MethodContext) -> AFDMethod:
    """KD-Zoo's AFD compares channel c of both nets, so it needs the same stage widths: no connector is invented."""
    stage_maps(ctx.feat_s, ctx.feat_t, "AFD")  # raises unless both nets have 4-D stage maps
    widths_s = [f.shape[1] for f in ctx.feat_s[1:-1]]
    widths_t = [f.shape[1] for f in ctx.feat_t[1:-1]]
    if widths_s != widths_t:
        raise ValueError(f"afd needs the same stage widths in both networks (student {widths_s}, teacher "
                         f"{widths_t}), as KD-Zoo's resnet20/resnet110; choose such a pair")
    if int(min(widths_t) * ctx.opt.att_f) < 1:
        raise ValueError(f"--att_f {ctx.opt.att_f} leaves the attention no hidden channel at width {min(widths_t)}")
    return AFDMethod(widths_t, ctx.opt.att_f)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--att_f", type=float, default=1.0,
                       help="hidden width of the SE attention as a multiple of the channels (KD-Zoo's default 1)")


register(
    MethodSpec(
        name="afd",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=500.0),
        summary="attention feature distillation with an SE attention over channels (Wang et al. 2020, KD-Zoo)",
        add_args=add_args,
    )
)
