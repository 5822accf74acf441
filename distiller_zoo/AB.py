"""AB: Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019 (arXiv:1811.03233).

The student learns where the teacher's neurons switch on: a hinge-like squared loss pushes every
pre-activation of the student to the teacher's side of zero with a margin. As in RepDistiller this
only happens in an init stage that trains a connector and the student's trunk; the main stage is
ordinary training (CE, plus KD when -a > 0), so -b has no effect.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from distiller_zoo.registry import (
    DistillBatch,
    InitStage,
    MethodContext,
    MethodSpec,
    NoMethodLoss,
    Weights,
    register,
)
from models.util import Connector


class ABLoss(nn.Module):
    """Activation-boundary loss over ``feat_num`` positions; returns one loss per position.

    Per position, summed over all elements with s = student (through the connector), t = teacher:
    ``(s + m)^2 [s > -m and t <= 0] + (s - m)^2 [s <= m and t > 0]``, weighted by 2^(i-n+1)
    (the deepest position 1, then 1/2, 1/4, ...) and scaled by 3 / (1000 B) as the authors' code.
    """

    def __init__(self, feat_num: int, margin: float = 1.0):
        super().__init__()
        self.w = [2 ** (i - feat_num + 1) for i in range(feat_num)]
        self.margin = margin

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        bsz = g_s[0].shape[0]
        return [
            w * self.criterion_alternative_l2(s, t) * 3 / (1000 * bsz)
            for w, s, t in zip(self.w, g_s, g_t, strict=False)
        ]

    def criterion_alternative_l2(self, source: Tensor, target: Tensor) -> Tensor:
        """The summed margin loss of one position (RepDistiller's name)."""
        m = self.margin
        off = (source + m) ** 2 * ((source > -m) & (target <= 0))
        on = (source - m) ** 2 * ((source <= m) & (target > 0))
        return (off + on).sum()


class ABMethod(NoMethodLoss):
    """Connector + :class:`ABLoss` on the pre-activation stage maps ``F[1:-1]``, trained in the init stage.

    The main-stage term is zero and the connector is not trained after the init stage (RepDistiller
    keeps it in eval and out of the optimizer), so :meth:`main_parameters` yields nothing.
    """

    def __init__(self, s_shapes: list[tuple[int, ...]], t_shapes: list[tuple[int, ...]], lr: float):
        super().__init__()
        self.connector = Connector(s_shapes, t_shapes)
        self.criterion = ABLoss(len(s_shapes))
        self.lr = lr

    def init_loss(self, batch: DistillBatch) -> Tensor:
        g_s = self.connector(batch.feat_s[1:-1])
        g_t = [f.detach() for f in batch.feat_t[1:-1]]
        return sum(self.criterion(g_s, g_t))

    def init_stage(self, student: nn.Module) -> InitStage:
        return InitStage(modules=[self.connector], loss=self.init_loss, lr=self.lr, student_trunk=True)

    def main_parameters(self) -> Iterable[nn.Parameter]:
        return iter(())


def build(ctx: MethodContext) -> ABMethod:
    s_shapes = [tuple(f.shape) for f in ctx.feat_s[1:-1]]
    t_shapes = [tuple(f.shape) for f in ctx.feat_t[1:-1]]
    if len(s_shapes) != len(t_shapes):
        raise ValueError(
            f"AB pairs the stage maps F[1:-1] one to one, but the student has {len(s_shapes)} and the "
            f"teacher {len(t_shapes)}; choose two networks with the same number of stages"
        )
    if not s_shapes or any(len(shape) != 4 for shape in s_shapes + t_shapes):
        raise ValueError("AB needs 4-D stage feature maps F[1:-1] from both networks")
    return ABMethod(s_shapes, t_shapes, float(ctx.opt.learning_rate))


register(
    MethodSpec(
        name="abound",
        aliases=("ab",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        preact=True,
        summary="activation boundaries of pre-ReLU stage maps, init stage only (Heo et al. 2019)",
    )
)
