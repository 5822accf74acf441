"""SP: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019 (arXiv:1907.09682).

The student should reproduce the teacher's batch similarity structure: the B x B Gram matrix of
flattened last-stage maps, row-normalised. Works across architectures since only B x B is compared.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import SummedGroupLoss
from distiller_zoo.registry import MethodContext, MethodSpec, Weights, register


class Similarity(nn.Module):
    """Per position: ||l2n(A_t A_t^T) - l2n(A_s A_s^T)||_F^2 / B^2, A = F flattened to B x (C*H*W).

    Returns a 0-dim loss per position (RepDistiller's has shape [1]; the sum is used the same way).
    """

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        return [self.similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t, strict=False)]

    def similarity_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        bsz = f_s.shape[0]
        a_s, a_t = f_s.reshape(bsz, -1), f_t.reshape(bsz, -1)
        g_s = F.normalize(a_s @ a_s.t())
        g_t = F.normalize(a_t @ a_t.t())
        return (g_t - g_s).pow(2).sum() / (bsz * bsz)


def build(ctx: MethodContext) -> SummedGroupLoss:
    if len(ctx.feat_s) < 2 or len(ctx.feat_t) < 2:
        raise ValueError("SP needs a last feature map F[-2] from both networks")
    # The last conv map F[-2] only, as RepDistiller (the ZOO variant averages rb1..rb3).
    return SummedGroupLoss(Similarity(), taps=slice(-2, -1))


register(
    MethodSpec(
        name="similarity",
        batch_local=False,
        aliases=("sp",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=3000.0),
        summary="similarity-preserving KD on the last feature map (Tung & Mori 2019)",
    )
)
