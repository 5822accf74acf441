"""WSLD: Zhou et al., "Rethinking Soft Labels for Knowledge Distillation: A Bias-Variance Tradeoff
Perspective", ICLR 2021 (arXiv:2102.00650).

Soft-label distillation whose per-sample weight grows with how much worse the student fits the true
label than the teacher does: ``w = 1 - exp(-CE(z_s, y) / CE(z_t, y))``. Samples the teacher fits
far better than the student (where soft labels reduce variance) weigh most; samples the student
already fits as well as the teacher (where soft labels mostly add bias) weigh less.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["WSLDLoss"]

DEFAULT_T = 2.0  # the official code's temperature


class WSLDLoss(nn.Module):
    """``CE(z_s, y) + alpha * L_soft`` (alpha 2.5, as the official code), with
    ``L_soft = T^2 * mean_b w_b * (-sum_k softmax(z_t/T)_k log softmax(z_s/T)_k)`` (:meth:`soft_loss`).

    The temperature is ``opt.wsld_T`` (default 2, the official code's). The distillers repository
    reads ``opt.nce_t`` here (CRD's 0.07) although its comment says 2, and takes the class count
    from ``opt.dataset`` (CIFAR only); here it comes from the logits.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.T = getattr(opt, "wsld_T", DEFAULT_T)
        self.alpha = 2.5

    def soft_loss(self, fc_t: Tensor, fc_s: Tensor, label: Tensor) -> Tensor:
        """The weighted soft-label term alone; the weights use T = 1 and no gradient."""
        fc_t = fc_t.detach()
        soft_ce = -(F.softmax(fc_t / self.T, dim=1) * F.log_softmax(fc_s / self.T, dim=1)).sum(dim=1)
        with torch.no_grad():
            ratio = F.cross_entropy(fc_s, label, reduction="none") / (
                F.cross_entropy(fc_t, label, reduction="none") + 1e-7)
            weight = 1 - torch.exp(-ratio)  # the reference's max(ratio, 0) is a no-op: CEs are >= 0
        return self.T**2 * (weight * soft_ce).mean()

    def forward(self, fc_t: Tensor, fc_s: Tensor, label: Tensor) -> Tensor:
        return F.cross_entropy(fc_s, label) + self.alpha * self.soft_loss(fc_t, fc_s, label)


class WSLDMethod(DistillMethod):
    """The method term is :meth:`WSLDLoss.soft_loss`; the hard CE is the trainer's ``-r`` term and
    the official alpha is ``-b`` (defaults 1 and 2.5), so ``--distill wsld`` alone is the official loss."""

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.criterion = WSLDLoss(opt)

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion.soft_loss(batch.logit_t, batch.logit_s, batch.target)


def build(ctx: MethodContext) -> WSLDMethod:
    if ctx.opt.wsld_T <= 0:
        raise ValueError(f"wsld needs --wsld_T > 0, got {ctx.opt.wsld_T}")
    return WSLDMethod(ctx.opt)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--wsld_T", type=float, default=DEFAULT_T, help="temperature of the soft labels")


register(
    MethodSpec(
        name="wsld",
        build=build,
        # The official recipe CE + 2.5 * L_soft; no distillers script line.
        weights=Weights(gamma=1.0, alpha=0.0, beta=2.5),
        uses_features=False,
        add_args=add_args,
        summary="weighted soft labels: per-sample weights from the student/teacher CE ratio (Zhou et al. 2021)",
    )
)
