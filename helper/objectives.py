"""What one training step minimises: plain CE, distillation, or a method's init stage.

Each objective runs the networks under autocast in the chosen precision and computes every loss
term in float32, returning the student's logits, the unweighted terms and the weighted total.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from torch import Tensor, nn

from distiller_zoo.KD import DistillKL
from distiller_zoo.registry import DistillBatch, DistillMethod, InitStage, MethodSpec, Networks, Weights
from helper.errors import UserError
from helper.teacher import FrozenTeacher

Autocast = Callable[[], AbstractContextManager]
StepResult = tuple[Tensor, dict[str, Tensor], Tensor]  # logits, unweighted terms, weighted total


def _as_float(tensors: list[Tensor]) -> list[Tensor]:
    return [t.float() for t in tensors]


def forward_pair(student: nn.Module, teacher: FrozenTeacher, x: Tensor, spec: MethodSpec,
                 autocast: Autocast, student_preact: bool) -> tuple[list[Tensor], Tensor, list[Tensor], Tensor]:
    """Both networks on one batch, every output in float32 for the losses.

    The teacher taps ``spec.preact`` features, the student ``student_preact`` ones (see
    ``MethodSpec.preact_student``). With ``spec.teacher_graph`` the teacher's outputs stay attached to its
    graph (see ``graph_t``)."""
    if spec.input_grad or spec.teacher_graph:
        x.requires_grad_(True)
    with autocast():
        if spec.uses_features:
            feat_s, logit_s = student(x, is_feat=True, preact=student_preact)
            feat_t, logit_t = teacher(x, is_feat=True, preact=spec.preact, input_grad=spec.teacher_graph)
        else:
            feat_s, logit_s = [], student(x)
            feat_t, logit_t = [], teacher(x, input_grad=spec.teacher_graph)
    return _as_float(list(feat_s)), logit_s.float(), feat_t, logit_t


class _Schedule:
    """Where the stage stands, for methods with warm-ups or decaying weights."""

    epoch: int = 1
    epochs: int = 1

    def set_epoch(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs


def _distill_batch(batch: list[Tensor], feats: tuple, nets: Networks, schedule: _Schedule,
                   teacher_graph: bool = False) -> DistillBatch:
    feat_s, logit_s, feat_t, logit_t = feats
    graph_t = None
    if teacher_graph:  # the losses see detached views; the method differentiates graph_t itself
        graph_t = feat_t, logit_t
        feat_t, logit_t = [f.detach() for f in feat_t], logit_t.detach()
    return DistillBatch(
        feat_s=feat_s, feat_t=feat_t, logit_s=logit_s, logit_t=logit_t, target=batch[1],
        index=batch[2] if len(batch) > 2 else None,
        contrast_idx=batch[3] if len(batch) > 3 else None,
        image=batch[0], nets=nets, epoch=schedule.epoch, epochs=schedule.epochs, graph_t=graph_t,
    )


class SupervisedObjective(_Schedule):
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


class DistillObjective(_Schedule):
    """``-r`` CE + ``-a`` KD + ``-b`` the method's term, as RepDistiller's ``train_distill``.

    The method may reshape the batch first, skip it (the step then returns None), replace the
    terms and add its own (see :class:`DistillMethod`). ``logit_standardization`` z-scores the logits
    inside the KD criterion (``--logit_standardization``).
    """

    term_names = ("cls", "div", "kd")

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, method: DistillMethod, spec: MethodSpec,
                 weights: Weights, kd_T: float, autocast: Autocast, logit_standardization: bool = False,
                 student_preact: bool | None = None):
        self.student, self.teacher, self.method, self.spec = student, teacher, method, spec
        self.student_preact = spec.preact if student_preact is None else student_preact
        self.weights = {"cls": weights.gamma, "div": weights.alpha, "kd": weights.beta, **method.extra_weights}
        self.autocast = autocast
        self.criterion_cls = nn.CrossEntropyLoss()
        self.criterion_div = DistillKL(kd_T, standardize=logit_standardization)
        self.nets = Networks(getattr(student, "module", student), teacher, autocast)

    def train_mode(self) -> None:
        self.student.train()
        self.method.train()
        self.teacher.eval()

    def __call__(self, batch: list[Tensor]) -> StepResult | None:
        batch = self.method.prepare_batch(batch)
        if batch is None:
            return None
        feats = forward_pair(self.student, self.teacher, batch[0], self.spec, self.autocast, self.student_preact)
        distill_batch = _distill_batch(batch, feats, self.nets, self, self.spec.teacher_graph)
        logits, terms = self.method.loss_terms(distill_batch, self.criterion_cls, self.criterion_div)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return logits, terms, total

    def task_and_distill(self, terms: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The weighted total in DOT's two parts: the task terms (the CE 'cls', and a trained peer's own
        '<name>_cls') and the distillation terms (every other), as mdistiller's loss_ce and loss_kd."""
        is_task = {name: name == "cls" or name.endswith("_cls") for name in terms}
        if all(is_task.values()) or not any(is_task.values()):
            raise UserError("--optimizer dot needs a task (cross-entropy) term and distillation terms apart, "
                            f"and this method's terms are {', '.join(terms)}")
        task = sum(self.weights[name] * value for name, value in terms.items() if is_task[name])
        distill = sum(self.weights[name] * value for name, value in terms.items() if not is_task[name])
        return task, distill


class InitObjective(_Schedule):
    """A method's pre-training stage: its own loss alone, as RepDistiller's ``helper/pretrain.py``."""

    term_names = ("init",)

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, spec: MethodSpec, stage: InitStage,
                 autocast: Autocast, student_preact: bool | None = None):
        self.student, self.teacher, self.spec, self.stage = student, teacher, spec, stage
        self.student_preact = spec.preact if student_preact is None else student_preact
        self.autocast = autocast
        self.nets = Networks(getattr(student, "module", student), teacher, autocast)

    def train_mode(self) -> None:
        # RepDistiller: the student in eval, then the trained modules (its trunk too) in train.
        self.student.eval()
        self.teacher.eval()
        for module in self.stage.modules:
            module.train()
        if self.stage.student_trunk:
            self.student.get_feat_modules().train()

    def __call__(self, batch: list[Tensor]) -> StepResult:
        feats = forward_pair(self.student, self.teacher, batch[0], self.spec, self.autocast, self.student_preact)
        loss = self.stage.loss(_distill_batch(batch, feats, self.nets, self, self.spec.teacher_graph))
        return feats[1], {"init": loss}, loss
