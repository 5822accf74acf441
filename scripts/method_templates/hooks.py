"""MyMethod: a method that needs an extra pass of both networks, on a second view of the batch.

Written by scripts/new_method.py from its hooks example; TODO: the paper this follows, in one line.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import Tensor

from distiller_zoo.registry import DistillBatch, DistillMethod, LossFn, MethodContext, MethodSpec, Weights, register


class MyMethod(DistillMethod):
    """``--distill mymethod``: its -b term on the batch both networks saw, and an extra 'view' term (weighed by
    --mymethod_view_weight) from a second pass of both networks on a flipped view."""

    def __init__(self, T: float, view_weight: float):
        super().__init__()
        self.T = T
        self.extra_weights = {"view": view_weight}  # terms beyond cls/div/kd, and their weights

    def kl(self, logit_s: Tensor, logit_t: Tensor) -> Tensor:
        # TODO: the method's maths. The placeholder is KD's KL(teacher || student) at T, times T^2.
        p_t = F.softmax(logit_t.detach() / self.T, dim=1)  # never back into the teacher
        return F.kl_div(F.log_softmax(logit_s / self.T, dim=1), p_t, reduction="batchmean") * self.T**2

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.kl(batch.logit_s, batch.logit_t)

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        logits, terms = super().loss_terms(batch, ce, kd)  # 'cls', 'div', 'kd' as every method
        view = batch.image.flip(3)  # TODO: the method's second view (a flip here)
        logit_s = batch.nets.student(view)  # runs under the run's autocast, joins this step's backward
        logit_t = batch.nets.teacher(view)  # the frozen teacher
        terms["view"] = self.kl(logit_s, logit_t)
        return logits, terms  # the logits the training accuracy is scored on: the batch's own


def build(ctx: MethodContext) -> MyMethod:
    if ctx.opt.mymethod_T <= 0 or ctx.opt.mymethod_view_weight < 0:
        raise ValueError("--mymethod_T must be positive and --mymethod_view_weight not negative")
    return MyMethod(ctx.opt.mymethod_T, ctx.opt.mymethod_view_weight)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mymethod_T", type=float, default=4.0, help="mymethod: the temperature of its loss")
    group.add_argument("--mymethod_view_weight", type=float, default=1.0, help="mymethod: the second view's weight")


register(
    MethodSpec(
        name="mymethod",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="TODO: what it distils (authors, year)",
        uses_features=False,
        add_args=add_args,
    )
)
