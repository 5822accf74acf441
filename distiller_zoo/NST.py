"""NST: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"
(arXiv:1707.01219).

Treats each channel's spatial activation pattern as a sample and matches the two channel
distributions with a squared MMD under the polynomial kernel k(u, v) = (u . v)^2 (d = 2, c = 0).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import SummedGroupLoss, pool_to_match, stage_maps
from distiller_zoo.registry import MethodContext, MethodSpec, Weights, register


class NSTLoss(nn.Module):
    """Per position: mean K_tt + mean K_ss - 2 mean K_st over channel pairs, channels L2-normalised
    over H*W after pooling to the smaller map. The teacher-only term is a constant (detached).
    """

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        return [self.nst_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t, strict=False)]

    def nst_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool_to_match(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        return (
            self.poly_kernel(f_t, f_t).mean().detach()
            + self.poly_kernel(f_s, f_s).mean()
            - 2 * self.poly_kernel(f_s, f_t).mean()
        )

    def poly_kernel(self, a: Tensor, b: Tensor) -> Tensor:
        """(b_i . a_j)^2 for every channel pair: B x C_b x C_a, as RepDistiller's layout.

        A batched matmul instead of RepDistiller's broadcast product, which materialises
        B x C x C x HW (about 1 GB for resnet32x4 at batch 64).
        """
        return (b @ a.transpose(1, 2)).pow(2)


def build(ctx: MethodContext) -> SummedGroupLoss:
    stage_maps(ctx.feat_s, ctx.feat_t, "NST")
    return SummedGroupLoss(NSTLoss(), taps=slice(1, -1))


register(
    MethodSpec(
        name="nst",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=50.0),
        summary="neuron selectivity transfer, polynomial-kernel MMD on the stage maps (Huang & Wang 2017)",
    )
)
