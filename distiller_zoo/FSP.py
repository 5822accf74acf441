"""FSP: Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
Transfer Learning", CVPR 2017.

The "flow" between two consecutive maps is their channel-by-channel Gram matrix averaged over space
(the FSP matrix); the student learns the teacher's flows. As in RepDistiller this happens only in an
init stage that trains the student's trunk; the main stage is ordinary training, so -b has no effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match
from distiller_zoo.registry import (
    DistillBatch,
    InitStage,
    MethodContext,
    MethodSpec,
    NoMethodLoss,
    Weights,
    register,
)


class FSP(nn.Module):
    """One loss per consecutive pair of maps: ``mean((G_s - G_t)^2)`` of the FSP matrices.

    Needs the same channel count at every position in both nets (the matrices must have one shape);
    raises ValueError otherwise, as RepDistiller.
    """

    def __init__(self, s_shapes: Sequence[Sequence[int]], t_shapes: Sequence[Sequence[int]]):
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(
                f"FSP pairs the maps F[:-1] one to one, but the student has {len(s_shapes)} and the "
                f"teacher {len(t_shapes)}; choose two networks with the same number of stages"
            )
        s_c = [int(s[1]) for s in s_shapes]
        t_c = [int(t[1]) for t in t_shapes]
        if s_c != t_c:
            raise ValueError(
                f"FSP needs equal channel counts at every tapped map F[:-1], but the student has {s_c} "
                f"and the teacher {t_c}"
            )

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        s_fsp = self.compute_fsp(g_s)
        t_fsp = self.compute_fsp(g_t)
        return [self.compute_loss(s, t) for s, t in zip(s_fsp, t_fsp, strict=True)]

    @staticmethod
    def compute_loss(s: Tensor, t: Tensor) -> Tensor:
        return (s - t).pow(2).mean()

    @staticmethod
    def compute_fsp(g: list[Tensor]) -> list[Tensor]:
        """B x C_top x C_bot matrices ``G[k, j] = mean_hw bot_j * top_k`` (RepDistiller's orientation)."""
        fsp_list = []
        for bot, top in zip(g[:-1], g[1:], strict=True):
            bot, top = pool_to_match(bot, top)
            fsp_list.append(torch.einsum("bjhw,bkhw->bkj", bot, top) / (bot.shape[2] * bot.shape[3]))
        return fsp_list


class FSPMethod(NoMethodLoss):
    """:class:`FSP` on all maps ``F[:-1]``, trained in the init stage over the student's trunk only."""

    def __init__(self, s_shapes: list[tuple[int, ...]], t_shapes: list[tuple[int, ...]], lr: float):
        super().__init__()
        self.criterion = FSP(s_shapes, t_shapes)
        self.lr = lr

    def init_loss(self, batch: DistillBatch) -> Tensor:
        g_t = [f.detach() for f in batch.feat_t[:-1]]
        return sum(self.criterion(batch.feat_s[:-1], g_t))

    def init_stage(self, student: nn.Module) -> InitStage:
        return InitStage(modules=[], loss=self.init_loss, lr=self.lr, student_trunk=True)


def build(ctx: MethodContext) -> FSPMethod:
    s_shapes = [tuple(f.shape) for f in ctx.feat_s[:-1]]
    t_shapes = [tuple(f.shape) for f in ctx.feat_t[:-1]]
    if len(s_shapes) < 2 or any(len(shape) != 4 for shape in s_shapes + t_shapes):
        raise ValueError("FSP needs at least two 4-D feature maps F[:-1] from both networks")
    return FSPMethod(s_shapes, t_shapes, float(ctx.opt.learning_rate))


register(
    MethodSpec(
        name="fsp",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=50.0),
        summary="flow-of-solution-procedure matrices, init stage only (Yim et al. 2017)",
    )
)
