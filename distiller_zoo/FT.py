"""FT: Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer",
NeurIPS 2018 (arXiv:1802.04977).

A paraphraser (convolutional auto-encoder) is first trained to reconstruct the teacher's last map;
its encoder output, the teacher's "factor", is then frozen, and a translator on the student's last
map learns to produce the same factor (compared after normalisation, with an L1 distance).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match
from distiller_zoo.registry import (
    DistillBatch,
    DistillMethod,
    InitStage,
    MethodContext,
    MethodSpec,
    Weights,
    register,
)
from models.util import Paraphraser, Translator

# RepDistiller pre-trains the paraphraser at lr 0.01 for these students, at --learning_rate otherwise.
_LOW_INIT_LR_STUDENTS = frozenset({
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
})


class FactorTransfer(nn.Module):
    """``mean |g(f_s) - g(f_t)|^p2`` with ``g(f) = l2n(vec_hw(mean_c f^p1))``, after pool-to-match.

    Follows RepDistiller: each factor is first collapsed over channels, attention-style (mean of
    f^p1), and that H*W map is L2-normalised. The paper (and the authors' code) instead normalises
    the full flattened C*H*W factor of each sample, with no channel collapse.
    """

    def __init__(self, p1: float = 2, p2: float = 1):
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return self.factor_loss(f_s, f_t)

    def factor_loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool_to_match(f_s, f_t)
        diff = self.factor(f_s) - self.factor(f_t)
        if self.p2 == 1:
            return diff.abs().mean()
        return diff.pow(self.p2).mean()

    def factor(self, f: Tensor) -> Tensor:
        # RepDistiller's channel collapse; the paper normalises the full flattened C*H*W factor instead.
        return F.normalize(f.pow(self.p1).mean(1).flatten(1))


class FTMethod(DistillMethod):
    """Paraphraser on the teacher's ``F[-2]`` (init stage); translator on the student's ``F[-2]`` (main).

    In the main stage the paraphraser is frozen: it stays in eval mode whatever ``train()`` is
    asked, stops requiring grad at the first main-stage step, computes the teacher factor without
    grad, and is left out of the main optimizer.
    """

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], init_lr: float):
        super().__init__()
        self.paraphraser = Paraphraser(t_shape)
        self.translator = Translator(s_shape, t_shape)
        self.criterion = FactorTransfer()
        self.init_lr = init_lr

    def init_loss(self, batch: DistillBatch) -> Tensor:
        """Reconstruction MSE of the teacher's last map through the paraphraser."""
        f_t = batch.feat_t[-2].detach()
        _, rec = self.paraphraser(f_t)
        return F.mse_loss(rec, f_t)

    def init_stage(self, student: nn.Module) -> InitStage:
        return InitStage(modules=[self.paraphraser], loss=self.init_loss, lr=self.init_lr)

    def main_parameters(self) -> Iterable[nn.Parameter]:
        """The translator only: the paraphraser is out of the main optimizer, as in RepDistiller."""
        return self.translator.parameters()

    def train(self, mode: bool = True) -> FTMethod:
        super().train(mode)
        self.paraphraser.eval()
        return self

    def forward(self, batch: DistillBatch) -> Tensor:
        # The main stage has begun: freeze the paraphraser here, not earlier, because the trainer
        # collects every trainable parameter (its init optimizer's included) before either stage runs.
        self.paraphraser.requires_grad_(False)
        factor_s = self.translator(batch.feat_s[-2])
        with torch.no_grad():
            factor_t = self.paraphraser(batch.feat_t[-2], is_factor=True)
        return self.criterion(factor_s, factor_t)


def build(ctx: MethodContext) -> FTMethod:
    f_s, f_t = ctx.feat_s[-2], ctx.feat_t[-2]
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError("FT needs a 4-D last feature map F[-2] from both networks")
    init_lr = 0.01 if ctx.opt.model_s in _LOW_INIT_LR_STUDENTS else float(ctx.opt.learning_rate)
    return FTMethod(tuple(f_s.shape), tuple(f_t.shape), init_lr)


register(
    MethodSpec(
        name="factor",
        aliases=("ft",),
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=200.0),
        summary="factor transfer through a pre-trained paraphraser and a translator (Kim et al. 2018)",
    )
)
