"""CRD: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020 (arXiv:1910.10699).

The loss itself is RepDistiller's ``crd/criterion.py`` (:class:`crd.criterion.CRDLoss`); this module
feeds it the pooled features and registers ``--distill crd``. The dataset supplies, per sample, its
index and ``[pos, neg_1..neg_K]`` contrast indices (negatives from other classes only).
"""

from __future__ import annotations

import argparse

from torch import Tensor

from crd.criterion import CRDLoss
from crd.sampling import MODES
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["CRDLoss", "CRDMethod"]


class CRDMethod(DistillMethod):
    """CRDLoss on the pooled features ``F[-1]``; the embeddings train with the student, the memory
    banks and the frozen normalisers Z are buffers saved with the run."""

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.criterion = CRDLoss(opt)

    def forward(self, batch: DistillBatch) -> Tensor:
        if batch.index is None:
            raise ValueError("crd needs each batch's dataset indices (a contrastive-sampling data loader)")
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1].detach(), batch.index, batch.contrast_idx)


def build(ctx: MethodContext) -> CRDMethod:
    opt = ctx.opt
    if opt.mode not in MODES:
        raise ValueError(f"--mode '{opt.mode}' is unknown for crd; use one of: {', '.join(MODES)}")
    if not 0 < opt.nce_k < ctx.n_data:
        raise ValueError(f"--nce_k must be in [1, {ctx.n_data - 1}] for a training set of {ctx.n_data}")
    if opt.feat_dim < 1 or opt.nce_t <= 0:
        raise ValueError(f"crd needs --feat_dim >= 1 and --nce_t > 0, got {opt.feat_dim} and {opt.nce_t}")
    # RepDistiller writes s_dim, t_dim and n_data into opt; a copy leaves the caller's opt alone.
    dims = {"s_dim": ctx.feat_s[-1].shape[1], "t_dim": ctx.feat_t[-1].shape[1], "n_data": ctx.n_data}
    return CRDMethod(argparse.Namespace(**{**vars(opt), **dims}))


register(
    MethodSpec(
        name="crd",
        batch_local=False,
        build=build,
        # RepDistiller's script: -a 0 -b 0.8 for CRD; CRD+KD is -a 1 -b 0.8.
        weights=Weights(gamma=1.0, alpha=0.0, beta=0.8),
        needs_contrast=True,
        summary="contrastive representation distillation with memory banks (Tian et al. 2020)",
    )
)
