"""MyMethod: a feature method with a trainable connector from a student map to the teacher's.

Written by scripts/new_method.py from its feature example; TODO: the paper this follows, in one line.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, flag_tag, register


class MyMethod(DistillMethod):
    """The -b term of ``--distill mymethod``: a 1x1 conv + BN connector takes the student's map ``layer``
    to the teacher's width; the connector trains with the student and is saved with the run."""

    def __init__(self, c_s: int, c_t: int, layer: int):
        super().__init__()
        self.layer = layer
        self.connector = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))

    def forward(self, batch: DistillBatch) -> Tensor:
        f_s = self.connector(batch.feat_s[self.layer])
        f_t = batch.feat_t[self.layer].detach()  # never back into the teacher
        size = min(f_s.shape[2], f_t.shape[2])  # maps of different sizes meet at the smaller one
        f_s, f_t = F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size)
        # TODO: the method's maths. The placeholder is FitNet's mean squared error.
        return F.mse_loss(f_s, f_t)


def build(ctx: MethodContext) -> MyMethod:
    """Shapes from ``ctx.feat_s``/``ctx.feat_t`` (one dummy forward of both networks, pre-activation since the
    spec says ``preact``); a pair this cannot distil is a ValueError, printed as one line."""
    layer = ctx.opt.mymethod_layer
    maps = min(len(ctx.feat_s), len(ctx.feat_t)) - 1  # F[-1] is the pooled feature, not a map
    if not -maps <= layer < maps or ctx.feat_s[layer].dim() != 4 or ctx.feat_t[layer].dim() != 4:
        raise ValueError(f"--mymethod_layer must index a feature map of both networks, got {layer}")
    return MyMethod(ctx.feat_s[layer].shape[1], ctx.feat_t[layer].shape[1], layer)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mymethod_layer", type=int, default=-2,
                       help="mymethod: the feature map distilled (F[-2], the last stage's, by default)")


register(
    MethodSpec(
        name="mymethod",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="TODO: what it distils (authors, year)",
        preact=True,  # the maps before their last ReLU (OFD, ReviewKD); leave it out for the maps after
        add_args=add_args,
        run_tag=flag_tag("mymethod_layer", -2),
    )
)
