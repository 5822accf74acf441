"""MyMethod: a loss on the logits alone, at its own temperature --mymethod_T.

Written by scripts/new_method.py from its logit example; TODO: the paper this follows, in one line.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, flag_tag, register


class MyMethod(DistillMethod):
    """The -b term of ``--distill mymethod``: logits in, one scalar out, nothing to train."""

    def __init__(self, T: float):
        super().__init__()
        self.T = T

    def forward(self, batch: DistillBatch) -> Tensor:
        # TODO: the method's maths. The placeholder is KD's KL(teacher || student) at T, times T^2.
        log_p_s = F.log_softmax(batch.logit_s / self.T, dim=1)
        p_t = F.softmax(batch.logit_t.detach() / self.T, dim=1)  # never back into the teacher
        return F.kl_div(log_p_s, p_t, reduction="batchmean") * self.T**2


def build(ctx: MethodContext) -> MyMethod:
    """The method from the run's options (``ctx.opt``); a bad value is a ValueError, printed as one line."""
    if ctx.opt.mymethod_T <= 0:
        raise ValueError(f"--mymethod_T must be positive, got {ctx.opt.mymethod_T}")
    return MyMethod(ctx.opt.mymethod_T)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mymethod_T", type=float, default=4.0, help="mymethod: the temperature of its loss")


register(
    MethodSpec(
        name="mymethod",
        build=build,
        # -r (cross-entropy) / -a (the KD term) / -b (this method's term), when the command line gives none
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="TODO: what it distils (authors, year)",
        uses_features=False,  # logits only: the networks skip their feature lists
        add_args=add_args,
        run_tag=flag_tag("mymethod_T", 4.0),  # a run at another T gets a folder of its own
    )
)
