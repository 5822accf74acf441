"""EGA: Ma, Chen, Akata, "Distilling Knowledge from Self-Supervised Teacher by Embedding Graph
Alignment", BMVC 2022 (arXiv:2211.13264).

Teacher and student embeddings of a batch form one graph whose edges are Pearson correlations.
Nodes: each student embedding must correlate perfectly with its own teacher embedding (the
cross block is pushed to the identity). Edges: the student's within-batch correlations must equal
the teacher's.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from distiller_zoo._common import standardize
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["EGA", "PCC"]


def PCC(m: Tensor) -> Tensor:  # noqa: N802 (the reference's name)
    """Pearson correlation between the rows of ``m`` (N x D): covariance over the D columns with the
    unbiased ``1/(D-1)``, divided by the rows' standard deviations. A constant row correlates 0
    with everything (the reference divides by its zero std: NaN)."""
    z = standardize(m, 1)
    return z @ z.T / (m.shape[1] - 1)


class EGA(nn.Module):
    """``node_weight * ||N - I||_F + edge_weight * ||E_t - E_s||_F`` (norms, not squared) on
    ``C = PCC([ft; fs])``: ``E_t``, ``E_s`` its diagonal B x B blocks, ``N`` the teacher-student block.

    Needs ``ft`` and ``fs`` of the same width (they are stacked into one matrix)."""

    def __init__(self):
        super().__init__()
        self.node_weight = 1
        self.edge_weight = 0.3

    def forward(self, ft: Tensor, fs: Tensor) -> Tensor:
        c = PCC(torch.cat([ft, fs]))
        n = ft.shape[0]
        e_t, e_s, nodes = c[:n, :n], c[n:, n:], c[:n, n:]
        eye = torch.eye(n, dtype=c.dtype, device=c.device)
        return self.node_weight * (nodes - eye).norm() + self.edge_weight * (e_t - e_s).norm()


class EGAMethod(DistillMethod):
    """:class:`EGA` on the pooled features ``F[-1]``, the student's first projected by ``proj``
    (a trainable Linear ``d_s -> d_t``) when ``--ega_proj`` asked for one."""

    def __init__(self, proj: nn.Module | None):
        super().__init__()
        self.proj = proj if proj is not None else nn.Identity()
        self.criterion = EGA()

    def forward(self, batch: DistillBatch) -> Tensor:
        f_s = self.proj(batch.feat_s[-1].flatten(1))
        return self.criterion(batch.feat_t[-1].detach().flatten(1), f_s)


def build(ctx: MethodContext) -> EGAMethod:
    d_s, d_t = ctx.feat_s[-1].flatten(1).shape[1], ctx.feat_t[-1].flatten(1).shape[1]
    if ctx.opt.ega_proj:
        return EGAMethod(nn.Linear(d_s, d_t))
    if d_s != d_t:
        raise ValueError(f"ega needs equal pooled feature sizes, got student {d_s} and teacher {d_t}; "
                         "pass --ega_proj to learn a linear projection")
    return EGAMethod(None)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--ega_proj", action="store_true",
                       help="project the student's pooled features to the teacher's size with a trainable Linear "
                            "(needed when the sizes differ; the paper and the distillers repository have none)")


register(
    MethodSpec(
        name="ega",
        batch_local=False,
        build=build,
        # No distillers script line; the loss's own node/edge weights (1, 0.3) with -b 1.
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        add_args=add_args,
        summary="embedding graph alignment: Pearson-correlation graph of teacher and student (Ma et al. 2022)",
    )
)
