"""RKD: Park et al., "Relational Knowledge Distillation", CVPR 2019 (arXiv:1904.05068).

The student matches the teacher's pairwise distances (normalised by their mean) and the angles
formed by every triplet of samples in the batch, both through a Huber (smooth-L1) penalty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights, register


def _normalised_distances(e: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by the mean of the positive ones (the paper's mu)."""
    d = RKDLoss.pdist(e)
    return d / d[d > 0].mean()


def _angles(e: Tensor) -> Tensor:
    """cos of the angle at anchor a between b and c: <l2n(e_b - e_a), l2n(e_c - e_a)>, all B^3 of them."""
    unit = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [a, b] = l2n(e_b - e_a)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


class RKDLoss(nn.Module):
    """w_d * smoothL1(distances) + w_a * smoothL1(angles) on flattened features.

    The teacher's side is computed without autograd. A batch of one has no pair: RepDistiller then
    returns NaN (mean of an empty set); we return 0 instead.
    """

    def __init__(self, w_d: float = 25, w_a: float = 50):
        super().__init__()
        self.w_d = w_d
        self.w_a = w_a

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        student = f_s.reshape(f_s.shape[0], -1)
        teacher = f_t.reshape(f_t.shape[0], -1)
        if student.shape[0] < 2:
            return student.new_zeros(())
        with torch.no_grad():
            t_d = _normalised_distances(teacher)
            t_angle = _angles(teacher)
        loss_d = F.smooth_l1_loss(_normalised_distances(student), t_d)
        loss_a = F.smooth_l1_loss(_angles(student), t_angle)
        return self.w_d * loss_d + self.w_a * loss_a

    @staticmethod
    def pdist(e: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
        """B x B distances from |a|^2 + |b|^2 - 2ab clamped at ``eps`` (sqrt stays finite), zero diagonal."""
        sq_norm = e.pow(2).sum(dim=1)
        res = (sq_norm.unsqueeze(1) + sq_norm.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
        if not squared:
            res = res.sqrt()
        off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        return res * off_diagonal


class RKDMethod(DistillMethod):
    """:class:`RKDLoss` (w_d 25, w_a 50) on the pooled features ``F[-1]``; no trainable modules."""

    def __init__(self):
        super().__init__()
        self.criterion = RKDLoss()

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1])


register(
    MethodSpec(
        name="rkd",
        batch_local=False,
        build=lambda ctx: RKDMethod(),
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="relational KD: distance and angle structure of pooled features (Park et al. 2019)",
    )
)
