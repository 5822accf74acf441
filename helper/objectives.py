"""What one training step minimises: plain CE, distillation, or a method's init stage.

Each objective runs the networks under autocast in the chosen precision and computes every loss
term in float32, returning the student's logits, the unweighted terms and the weighted total.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from torch import Tensor, nn

from distiller_zoo.KD import DistillKL
from distiller_zoo.registry import DistillBatch, DistillMethod, InitStage, MethodSpec, Weights
from helper.teacher import FrozenTeacher

Autocast = Callable[[], AbstractContextManager]
StepResult = tuple[Tensor, dict[str, Tensor], Tensor]


def _as_float(tensors: list[Tensor]) -> list[Tensor]:
    return [t.float() for t in tensors]


def forward_pair(student: nn.Module, teacher: FrozenTeacher, x: Tensor, spec: MethodSpec,
                 autocast: Autocast) -> tuple[list[Tensor], Tensor, list[Tensor], Tensor]:
    """Both networks on one batch, every output in float32 for the losses."""
    with autocast():
        if spec.uses_features:
            feat_s, logit_s = student(x, is_feat=True, preact=spec.preact)
            feat_t, logit_t = teacher(x, is_feat=True, preact=spec.preact)
        else:
            feat_s, logit_s = [], student(x)
            feat_t, logit_t = [], teacher(x)
    return _as_float(list(feat_s)), logit_s.float(), feat_t, logit_t


def _distill_batch(batch: list[Tensor], feats: tuple) -> DistillBatch:
    feat_s, logit_s, feat_t, logit_t = feats
    return DistillBatch(
        feat_s=feat_s, feat_t=feat_t, logit_s=logit_s, logit_t=logit_t, target=batch[1],
        index=batch[2] if len(batch) > 2 else None,
        contrast_idx=batch[3] if len(batch) > 3 else None,
    )


class SupervisedObjective:
    """Cross-entropy on the labels: training a teacher, or a student without a teacher."""

    term_names = ("cls",)

    def __init__(self, model: nn.Module, autocast: Autocast):
        self.model = model
        self.autocast = autocast
        self.criterion = nn.CrossEntropyLoss()

    def train_mode(self) -> None:
        self.model.train()

    def __call__(self, batch: list[Tensor]) -> StepResult:
        with self.autocast():
            logits = self.model(batch[0])
        loss = self.criterion(logits.float(), batch[1])
        return logits, {"cls": loss}, loss


class DistillObjective:
    """``-r`` CE + ``-a`` KD + ``-b`` the method's term, as RepDistiller's ``train_distill``."""

    term_names = ("cls", "div", "kd")

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, method: DistillMethod, spec: MethodSpec,
                 weights: Weights, kd_T: float, autocast: Autocast):
        self.student, self.teacher, self.method, self.spec = student, teacher, method, spec
        self.weights = weights
        self.autocast = autocast
        self.criterion_cls = nn.CrossEntropyLoss()
        self.criterion_div = DistillKL(kd_T)

    def train_mode(self) -> None:
        self.student.train()
        self.method.train()
        self.teacher.eval()

    def __call__(self, batch: list[Tensor]) -> StepResult:
        feats = forward_pair(self.student, self.teacher, batch[0], self.spec, self.autocast)
        _, logit_s, _, logit_t = feats
        terms = {
            "cls": self.criterion_cls(logit_s, batch[1]),
            "div": self.criterion_div(logit_s, logit_t),
            "kd": self.method(_distill_batch(batch, feats)),
        }
        w = self.weights
        total = w.gamma * terms["cls"] + w.alpha * terms["div"] + w.beta * terms["kd"]
        return logit_s, terms, total


class InitObjective:
    """A method's pre-training stage: its own loss alone, as RepDistiller's ``helper/pretrain.py``."""

    term_names = ("init",)

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, spec: MethodSpec, stage: InitStage,
                 autocast: Autocast):
        self.student, self.teacher, self.spec, self.stage = student, teacher, spec, stage
        self.autocast = autocast

    def train_mode(self) -> None:
        # RepDistiller: the student in eval, then the trained modules (its trunk too) in train.
        self.student.eval()
        self.teacher.eval()
        for module in self.stage.modules:
            module.train()
        if self.stage.student_trunk:
            self.student.get_feat_modules().train()

    def __call__(self, batch: list[Tensor]) -> StepResult:
        feats = forward_pair(self.student, self.teacher, batch[0], self.spec, self.autocast)
        loss = self.stage.loss(_distill_batch(batch, feats))
        return feats[1], {"init": loss}, loss
