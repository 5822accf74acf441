"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (arXiv:1412.6550).

A trainable regressor maps the student's hint map ``F[--hint_layer]`` onto the teacher's, and the
mean squared error between the two is the hint loss. As every reference (RepDistiller included),
the hint is trained jointly with the task in one stage, not in the paper's two stages.
"""

from __future__ import annotations

from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register
from models.util import ConvReg


class HintLoss(nn.Module):
    """mean((f_s - f_t)^2) over every element."""

    def __init__(self):
        super().__init__()
        self.crit = nn.MSELoss()

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return self.crit(f_s, f_t)


class FitNetMethod(DistillMethod):
    """:class:`HintLoss` between ``regress_s(F_s[h])`` and ``F_t[h]``; ``regress_s`` is trainable."""

    def __init__(self, regress_s: nn.Module, hint_layer: int):
        super().__init__()
        self.regress_s = regress_s
        self.hint_layer = hint_layer
        self.criterion = HintLoss()

    def forward(self, batch: DistillBatch) -> Tensor:
        h = self.hint_layer
        return self.criterion(self.regress_s(batch.feat_s[h]), batch.feat_t[h].detach())


def build(ctx: MethodContext) -> FitNetMethod:
    h = int(ctx.opt.hint_layer)
    n_maps = min(len(ctx.feat_s), len(ctx.feat_t)) - 1  # the last entry is the pooled vector
    if not 0 <= h < n_maps or ctx.feat_s[h].dim() != 4 or ctx.feat_t[h].dim() != 4:
        raise ValueError(
            f"--hint_layer {h} is out of range: it must index a feature map of both networks, "
            f"0..{n_maps - 1} here (student has {len(ctx.feat_s) - 1} maps, teacher {len(ctx.feat_t) - 1})"
        )
    # ConvReg raises ValueError itself when the two map sizes cannot be regressed.
    return FitNetMethod(ConvReg(ctx.feat_s[h].shape, ctx.feat_t[h].shape), h)


register(
    MethodSpec(
        name="hint",
        aliases=("fitnet",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=100.0),
        summary="FitNet hints: ConvReg maps student F[--hint_layer] onto the teacher's (Romero et al. 2015)",
    )
)
