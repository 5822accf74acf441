"""ICD (DCD): Giakoumoglou & Stathaki, "Discriminative and Consistent Representation Distillation",
2024 (arXiv:2407.11802).

The distillers repository first named this loss ICD ("Invariant Consistency Distillation") and later
DCD; the two files are the same loss, so both class names are provided here. On the B x B matrix of
scaled similarities between student and teacher embeddings of one batch, each student row must pick
its own teacher column (a contrastive cross-entropy: discrimination), and the row-wise and
column-wise softmaxes of that matrix must agree (a KL term: consistency). The scale (through a
log-temperature) and a bias are learnt with the student.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import opt_with_dims
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights, register

__all__ = ["DCDLoss", "ICDLoss", "LearnableParams"]


class LearnableParams(nn.Module):
    """The learnt log-scale ``tau`` and bias ``b``, held in a module so they save as ``params.tau`` and
    ``params.b`` (the reference's state-dict keys)."""

    def __init__(self, init_tau: float = 1.0, init_b: float = 0.0):
        super().__init__()
        self.tau = nn.Parameter(torch.tensor(float(init_tau)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))


class DCDLoss(nn.Module):
    """``CE(L, arange(B)) + alpha * KL(softmax_col(L)^T || softmax_row(L))`` with
    ``L = s * v_s v_t^T + b``, ``v = l2n(Linear(f))`` (to ``opt.feat_dim``) and ``s = min(exp(tau), max_tau)``.

    ``opt`` provides ``s_dim``, ``t_dim`` and ``feat_dim`` (and ``nce_t`` when ``trainable=False``).
    The bias shifts every logit equally, so neither softmax (hence neither term) depends on it: it is
    learnt, as in the reference, but inert.

    ``trainable=False`` fixes the temperature at ``opt.nce_t`` and the bias at 0. The reference then
    *multiplies* the similarities by ``nce_t`` (a scale of 0.07), contradicting the temperature its
    docstring names; here the similarities are divided by it, as a temperature is used everywhere else.
    """

    def __init__(self, opt: argparse.Namespace, max_tau: float = 10.0, alpha: float = 0.5, init_tau: float = 1.0,
                 init_b: float = 0.0, trainable: bool = True):
        super().__init__()
        self.max_tau = max_tau
        self.alpha = alpha
        self.trainable = trainable
        self.params = LearnableParams(init_tau=init_tau, init_b=init_b)
        if not trainable:
            self.params.tau = nn.Parameter(torch.tensor(float(opt.nce_t)), requires_grad=False)
            self.params.b = nn.Parameter(torch.tensor(0.0), requires_grad=False)
        self.embed_s = nn.Linear(opt.s_dim, opt.feat_dim)
        self.embed_t = nn.Linear(opt.t_dim, opt.feat_dim)

    def scale(self) -> Tensor:
        """The factor the cosine similarities are multiplied by."""
        if self.trainable:
            return self.params.tau.exp().clamp(max=self.max_tau)
        return 1.0 / self.params.tau

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        v_s = F.normalize(self.embed_s(f_s), dim=1)
        v_t = F.normalize(self.embed_t(f_t), dim=1)
        logits = self.scale() * (v_s @ v_t.T) + self.params.b
        labels = torch.arange(logits.shape[0], device=logits.device)
        discrimination = F.cross_entropy(logits, labels)
        consistency = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(logits, dim=0).T, reduction="batchmean")
        return discrimination + self.alpha * consistency


class ICDLoss(DCDLoss):
    """The same loss under the name of the distillers repository's first version (``ICD.py``)."""


class ICDMethod(DistillMethod):
    """:class:`DCDLoss` on the pooled features ``F[-1]``; both embeddings and the scalars train."""

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.criterion = DCDLoss(opt)

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1].detach())


register(
    MethodSpec(
        name="icd",
        batch_local=False,
        aliases=("dcd",),
        build=lambda ctx: ICDMethod(opt_with_dims(ctx)),
        # The distillers script's (commented) lines: -a 0 -b 1 (DCD), -a 1 -b 1 (DCD+KD).
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="discriminative and consistent distillation, learnt temperature and bias (Giakoumoglou 2024)",
    )
)
