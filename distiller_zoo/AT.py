"""AT: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017 (arXiv:1612.03928).

Matches spatial attention maps (channel-mean of |F|^p, L2-normalised per sample) of the student and
teacher at every stage. The paper writes a p-norm of the difference; as the authors' code and
RepDistiller we take the mean squared difference.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import SummedGroupLoss, pool_to_match, stage_maps
from distiller_zoo.registry import MethodContext, MethodSpec, Weights, register


class Attention(nn.Module):
    """Per position: mean over B*H*W of (a(F_s) - a(F_t))^2 with a(F) = l2n(mean_c F^p).

    Maps of different spatial size are pooled to the smaller one; channel counts may differ.
    """

    def __init__(self, p: int = 2):
        super().__init__()
        self.p = p

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        return [self.at_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t, strict=False)]

    def at_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool_to_match(f_s, f_t)
        return (self.at(f_s) - self.at(f_t)).pow(2).mean()

    def at(self, f: Tensor) -> Tensor:
        # F^p without abs, as RepDistiller (same as the paper's |F|^p for even p).
        return F.normalize(f.pow(self.p).mean(1).flatten(1))


def build(ctx: MethodContext) -> SummedGroupLoss:
    stage_maps(ctx.feat_s, ctx.feat_t, "AT")
    return SummedGroupLoss(Attention(), taps=slice(1, -1))


register(
    MethodSpec(
        name="attention",
        aliases=("at",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1000.0),
        summary="attention transfer on the stage maps (Zagoruyko & Komodakis 2017)",
    )
)
