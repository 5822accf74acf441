"""HKD: Passalis, Tzelepi, Tefas, "Heterogeneous Knowledge Distillation using Information Flow Modeling",
CVPR 2020 (arXiv:2005.00727), as SemCKD runs it.

Two passes (scripts/run_cifar_hkd.sh): an auxiliary network (``resnet8x4_double``) is first distilled
from the teacher with PKT; the student then learns from that auxiliary network with this loss. At each
stage, both nets' flattened features define per-sample distributions over the batch under two kernels
(cosine and Student-t); the student's are pulled to the teacher's by the symmetric (Jeffreys) divergence.
"""

from __future__ import annotations

import argparse

from torch import Tensor, nn

from distiller_zoo._common import stage_maps
from distiller_zoo.PKT import _conditional_probs
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["HKDLoss", "HKDMethod", "cosine_pairwise_similarities", "pairwise_distances"]

EPS = 1e-6


def pairwise_distances(a: Tensor, eps: float = EPS) -> Tensor:
    """B x B Euclidean distances between the rows of ``a``: sqrt(max(|a_i|^2 + |a_j|^2 - 2 a_i.a_j, 0) + eps)."""
    sq = a.pow(2).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * (a @ a.t())).clamp_min(0).add(eps).sqrt()


def cosine_pairwise_similarities(features: Tensor, eps: float = EPS) -> Tensor:
    """Row-stochastic (cos + 1) / 2 kernel: PKT's, with SemCKD's HKD epsilon (1e-6, PKT's is 1e-7)."""
    return _conditional_probs(features, eps)


def _student_t_probs(features: Tensor) -> Tensor:
    """Row-stochastic Student-t kernel 1 / (1 + d) on Euclidean distances."""
    kernel = 1.0 / (1.0 + pairwise_distances(features))
    return kernel / kernel.sum(dim=1, keepdim=True)


def _jeffreys(p_t: Tensor, p_s: Tensor) -> Tensor:
    """mean over the B x B entries of (P_t - P_s)(log P_t - log P_s)."""
    return ((p_t - p_s) * (p_t.log() - p_s.log())).mean()


def prob_loss(teacher_features: Tensor, student_features: Tensor) -> Tensor:
    """SemCKD's 'combined' setting: the Jeffreys divergences under the cosine and the Student-t kernels, summed."""
    return (_jeffreys(cosine_pairwise_similarities(teacher_features), cosine_pairwise_similarities(student_features))
            + _jeffreys(_student_t_probs(teacher_features), _student_t_probs(student_features)))


class HKDLoss(nn.Module):
    """The per-stage :func:`prob_loss` on flattened features: the first stage x ``init_weight``, the others x 1.

    ``decay`` is kept for SemCKD's constructor but, as in SemCKD's code, never applied (its running weight
    is updated and unused); the paper's epoch-wise weighting is not implemented there either. We follow
    the code, whose published results it produced.
    """

    def __init__(self, init_weight: float = 100, decay: float = 0.7):
        super().__init__()
        self.init_weight = init_weight
        self.decay = decay

    def forward(self, f_s: list[Tensor], f_t: list[Tensor]) -> Tensor:
        pairs = zip(f_s, f_t, strict=False)  # SemCKD's zip: the shorter list sets the stages compared
        losses = [prob_loss(t.reshape(t.shape[0], -1), s.reshape(s.shape[0], -1)) for s, t in pairs]
        return self.init_weight * losses[0] + sum(losses[1:])


class HKDMethod(DistillMethod):
    """:class:`HKDLoss` on the stage maps ``F[1:-1]`` of both nets, paired by ``zip``; no trainable modules."""

    def __init__(self, init_weight: float):
        super().__init__()
        self.criterion = HKDLoss(init_weight=init_weight)

    def forward(self, batch: DistillBatch) -> Tensor:
        maps_s, maps_t = stage_maps(batch.feat_s, batch.feat_t, "hkd")
        return self.criterion(maps_s, [f.detach() for f in maps_t])


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--hkd_initial_weight", type=float, default=100,
                       help="HKD: weight of the first stage's term (the others weigh 1)")


def build(ctx: MethodContext) -> HKDMethod:
    stage_maps(ctx.feat_s, ctx.feat_t, "hkd")
    if ctx.opt.hkd_initial_weight < 0:
        raise ValueError(f"--hkd_initial_weight must not be negative, got {ctx.opt.hkd_initial_weight}")
    return HKDMethod(ctx.opt.hkd_initial_weight)


register(
    MethodSpec(
        name="hkd",
        batch_local=False,
        build=build,
        # SemCKD's script, pass 2 (student from the PKT-trained auxiliary network): -r 1 -a 1 -b 1.
        weights=Weights(gamma=1.0, alpha=1.0, beta=1.0),
        summary="heterogeneous KD via information flow: cosine + Student-t kernels per stage, run from an "
                "auxiliary network (Passalis et al. 2020)",
        add_args=add_args,
    )
)
