"""CTKD: Li, Li, Yang, Cheng, Wang, Fan, Zhou, Ding, "Curriculum Temperature for Knowledge Distillation",
AAAI 2023 (arXiv:2211.16231); reference zhengli97/CTKD (``models/temp_global.py``, ``CosineDecay`` in
``train_student.py``, ``helper/loops.py``).

KD whose temperature is learnt adversarially: a temperature module feeds the KD term through a gradient
reversal layer, so the student descends the KD loss while the temperature ascends it (makes the task
harder), and the reversal's strength grows over the first epochs on a cosine curriculum, easy to hard.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn

from distiller_zoo._common import given_flags_tag
from distiller_zoo.registry import DistillBatch, DistillMethod, LossFn, MethodContext, MethodSpec, Weights, register

__all__ = ["CosineDecay", "CurriculumTemperature", "GradientReversal", "GradientReversalFunction", "Global_T"]


class GradientReversalFunction(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by ``lambda_`` (the curriculum's value, <= 0
    by default: a reversed, scaled gradient), as the reference's layer (Ganin & Lempitsky's GRL)."""

    @staticmethod
    def forward(ctx, x: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.lambda_ * grad, None


class GradientReversal(nn.Module):
    def forward(self, x: Tensor, lambda_: float) -> Tensor:
        return GradientReversalFunction.apply(x, lambda_)


class Global_T(nn.Module):  # the reference's class name
    """CTKD's global temperature: one learnable value (initially 1) behind the reversal layer; the two
    logit inputs are unused (the reference's instance-wise module would read them)."""

    def __init__(self):
        super().__init__()
        self.global_T = nn.Parameter(torch.ones(1))
        self.grl = GradientReversal()

    def forward(self, fake_input1: Tensor, fake_input2: Tensor, lambda_: float) -> Tensor:
        return self.grl(self.global_T, lambda_)


class CosineDecay:
    """The reference's curriculum: ``min + (max - min) * (1 + cos(pi * i / loops)) / 2`` with ``i`` clamped
    to [0, loops], i.e. from ``max_value`` at i = 0 to ``min_value`` from i = loops on."""

    def __init__(self, max_value: float, min_value: float, num_loops: float):
        self._max_value, self._min_value, self._num_loops = max_value, min_value, num_loops

    def get_value(self, i: float) -> float:
        i = min(max(i, 0), self._num_loops)
        value = (math.cos(i * math.pi / self._num_loops) + 1.0) * 0.5
        return value * (self._max_value - self._min_value) + self._min_value


class CurriculumTemperature(DistillMethod):
    """KD at the learnt temperature ``T = t_start + t_end * sigmoid(Global_T)`` (1 + 20 sigmoid(.) by default,
    15.6 at the start): the 'div' term (weighted by ``-a``) is the run's KD criterion at T; there is no
    ``-b`` term. The curriculum value for a 1-based epoch e is ``CosineDecay(decay_max, decay_min,
    decay_loops).get_value(e)`` (0 -> -1 over 10 epochs), as the reference's per-epoch ``decay_value``.

    'temperature' (weight 0) carries T, detached, so metrics.jsonl logs it per epoch as ``loss_temperature``.
    """

    extra_weights = {"temperature": 0.0}

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0, decay_max: float = 0.0, decay_min: float = -1.0,
                 decay_loops: float = 10.0):
        super().__init__()
        self.t_start, self.t_end = t_start, t_end
        self.mlp = Global_T()  # the reference's name for the temperature module
        self.curriculum = CosineDecay(decay_max, decay_min, decay_loops)

    def temperature(self, batch: DistillBatch) -> Tensor:
        """This step's temperature (0-dim), attached to the temperature module through the reversal layer."""
        raw = self.mlp(batch.logit_t, batch.logit_s, self.curriculum.get_value(batch.epoch))
        return (self.t_start + self.t_end * torch.sigmoid(raw)).reshape(())

    def forward(self, batch: DistillBatch) -> Tensor:
        return batch.logit_s.new_zeros(())

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        T = self.temperature(batch)
        return batch.logit_s, {
            "cls": ce(batch.logit_s, batch.target),
            "div": kd(batch.logit_s, batch.logit_t, T=T),
            "kd": self(batch),
            "temperature": T.detach(),
        }


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--ctkd_t_start", type=float, default=1.0,
                       help="CTKD: the lowest temperature (T = t_start + t_end * sigmoid(learnt value))")
    group.add_argument("--ctkd_t_end", type=float, default=20.0, help="CTKD: the temperature's range above t_start")
    group.add_argument("--ctkd_decay_max", type=float, default=0.0,
                       help="CTKD: the gradient-reversal factor at epoch 0 (the reference's --decay_max)")
    group.add_argument("--ctkd_decay_min", type=float, default=-1.0,
                       help="CTKD: the factor reached after --ctkd_decay_loops epochs (-1: full reversal)")
    group.add_argument("--ctkd_decay_loops", type=float, default=10.0,
                       help="CTKD: epochs of the cosine curriculum")


def build(ctx: MethodContext) -> CurriculumTemperature:
    opt = ctx.opt
    if opt.ctkd_t_start <= 0 or opt.ctkd_t_end < 0:
        raise ValueError(f"--ctkd_t_start must be positive and --ctkd_t_end not negative, got {opt.ctkd_t_start} "
                         f"and {opt.ctkd_t_end}")
    if opt.ctkd_decay_loops <= 0:
        raise ValueError(f"--ctkd_decay_loops must be positive, got {opt.ctkd_decay_loops}")
    return CurriculumTemperature(opt.ctkd_t_start, opt.ctkd_t_end, opt.ctkd_decay_max, opt.ctkd_decay_min,
                                 opt.ctkd_decay_loops)


register(
    MethodSpec(
        name="ctkd",
        build=build,
        # the CTKD script: KD with -r 0.1 -a 0.9 -b 0, the 'div' term at the learnt temperature
        weights=Weights(gamma=0.1, alpha=0.9, beta=0.0),
        uses_features=False,
        add_args=add_args,
        run_tag=given_flags_tag(ctkd_t_start=1.0, ctkd_t_end=20.0, ctkd_decay_max=0.0, ctkd_decay_min=-1.0,
                                ctkd_decay_loops=10.0),
        summary="KD at a temperature learnt adversarially through gradient reversal, cosine curriculum "
                "(Li et al. 2023)",
    )
)
