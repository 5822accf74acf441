"""PKT: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
ECCV 2018 (arXiv:1803.10837).

Each net's pooled features define, per sample, a probability distribution over the other samples of
the batch (cosine-similarity kernel); the student's distributions are pulled to the teacher's by KL.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights, register


def _conditional_probs(f: Tensor, eps: float) -> Tensor:
    """Row-normalised (cos + 1) / 2 affinities of the rows of ``f`` (B x D -> B x B)."""
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    kernel = (f @ f.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


class PKT(nn.Module):
    """mean over the B x B entries of P_t * log((P_t + eps) / (P_s + eps)), eps = 1e-7.

    The mean over all B^2 entries (not a per-row sum) is RepDistiller's and the authors' reduction;
    the default weight (-b 30000) is tuned for it.
    """

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return self.cosine_similarity_loss(f_s, f_t)

    @staticmethod
    def cosine_similarity_loss(output_net: Tensor, target_net: Tensor, eps: float = 1e-7) -> Tensor:
        p_s = _conditional_probs(output_net, eps)
        p_t = _conditional_probs(target_net, eps)
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


class PKTMethod(DistillMethod):
    """:class:`PKT` on the pooled features ``F[-1]``; no trainable modules."""

    def __init__(self):
        super().__init__()
        self.criterion = PKT()

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1].detach())


register(
    MethodSpec(
        name="pkt",
        batch_local=False,
        build=lambda ctx: PKTMethod(),
        weights=Weights(gamma=1.0, alpha=0.0, beta=30000.0),
        summary="probabilistic knowledge transfer on pooled features (Passalis & Tefas 2018)",
    )
)
