"""The method interface's hooks: batch preparation and skips, extra terms, extra passes, schedules."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from method_checks import nets
from torch import Tensor

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights
from helper.distributed import DistInfo
from helper.engine import EpochTotals, StepVerdict, train_epoch
from helper.objectives import DistillObjective
from helper.runlog import Progress
from helper.teacher import FrozenTeacher


class _Probe(DistillMethod):
    """Skips batches of 3, doubles the others (flipped copies), adds an 'extra' term, records what it saw."""

    extra_weights = {"extra": 0.25}

    def __init__(self):
        super().__init__()
        self.seen: list[DistillBatch] = []

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor] | None:
        if batch[0].shape[0] == 3:
            return None
        return [torch.cat([batch[0], batch[0].flip(3)]), batch[1].repeat(2)]

    def forward(self, batch: DistillBatch) -> Tensor:
        return batch.logit_s.pow(2).mean()

    def loss_terms(self, batch, ce, kd):
        self.seen.append(batch)
        logits, terms = super().loss_terms(batch, ce, kd)
        half = batch.logit_s.shape[0] // 2
        terms["extra"] = batch.logit_s.abs().mean()
        return logits[:half], terms


WEIGHTS = Weights(1.0, 0.5, 2.0)


def _objective(method: DistillMethod, spec: MethodSpec):
    student, teacher = nets()
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    return DistillObjective(student, frozen, method, spec, WEIGHTS, 4.0, nullcontext), student


def test_prepared_batch_reaches_both_networks_and_extra_terms_are_weighted():
    method = _Probe()
    spec = MethodSpec("probe", lambda ctx: method, Weights(1, 0, 1), "test", uses_features=False)
    objective, _ = _objective(method, spec)
    objective.set_epoch(3, 7)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    logits, terms, total = objective([x, y])
    seen = method.seen[-1]
    assert seen.image.shape[0] == 8 and torch.equal(seen.image[4:], x.flip(3))
    assert seen.logit_s.shape[0] == 8 and logits.shape[0] == 4
    assert (seen.epoch, seen.epochs) == (3, 7)
    expected = terms["cls"] + 0.5 * terms["div"] + 2.0 * terms["kd"] + 0.25 * terms["extra"]
    assert torch.allclose(total, expected)


def test_a_skipped_batch_is_counted_and_does_not_step():
    method = _Probe()
    spec = MethodSpec("probe", lambda ctx: method, Weights(1, 0, 1), "test", uses_features=False)
    objective, student = _objective(method, spec)
    before = [p.detach().clone() for p in student.parameters()]
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    loader = [[torch.randn(3, 3, 16, 16), torch.randint(0, 10, (3,))]]
    totals = EpochTotals()
    step = train_epoch(objective, loader, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                       torch.device("cpu"), False, totals, 0, Progress("t", 1, 100, enabled=False),
                       lambda s: f"step {s}", "", StepVerdict(DistInfo()))
    assert step == 1 and totals.skipped == 1 and totals.samples == 0
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


@pytest.mark.parametrize("is_feat", [False, True])
def test_teacher_pass_with_input_grad_reaches_the_input_only(is_feat):
    _, teacher = nets()
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    out = frozen(x, is_feat=is_feat, input_grad=True)
    logits = out[1] if is_feat else out
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not frozen(x).requires_grad  # without input_grad: no graph at all


def test_input_grad_spec_makes_the_images_require_grad():
    seen = {}

    class Grab(DistillMethod):
        def forward(self, batch):
            seen["grad"] = torch.autograd.grad(batch.logit_s[:, 0].sum(), batch.image, retain_graph=True)[0]
            return batch.logit_s.new_zeros(())

    method = Grab()
    spec = MethodSpec("grab", lambda ctx: method, Weights(1, 0, 1), "test", input_grad=True)
    objective, _ = _objective(method, spec)
    objective([torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))])
    assert seen["grad"].shape == (2, 3, 16, 16) and seen["grad"].abs().sum() > 0


def test_method_variants_chosen_by_their_own_flags_get_their_own_run_folders():
    import argparse

    from helper.naming import student_run_name
    from helper.runs import STUDENT_FOLDER

    base = dict(model_s="resnet8x4", model_t="resnet32x4", dataset="cifar100", gamma=1, alpha=0.0, beta=1.0, trial="1")
    name = lambda distill, **flags: student_run_name(argparse.Namespace(distill=distill, **base, **flags))  # noqa: E731
    assert name("rrd", memory_type="fifo") == "S:resnet8x4_T:resnet32x4_cifar100_rrd_r:1_a:0.0_b:1.0_1"  # RD's form
    assert name("rrd", memory_type="momentum").endswith("_rrd_r:1_a:0.0_b:1.0_memory_type:momentum_1")
    assert name("irg", irg_variant="semckd").endswith("_b:1.0_irg_variant:semckd_1")
    assert name("ofd", ofd_margin="batch") != name("ofd", ofd_margin="bn")
    assert name("mlkd", delta=20.0).endswith("_b:1.0_d:20.0_1") and name("mlkd", delta=10.0) != name("mlkd", delta=20.0)
    assert name("kd") == "S:resnet8x4_T:resnet32x4_cifar100_kd_r:1_a:0.0_b:1.0_1"
    assert name("kd", optimizer="sgd", logit_standardization=False) == name("kd")
    assert name("kd", optimizer="dot", logit_standardization=True).endswith("_b:1.0_optimizer:dot_ls:True_1")
    parsed = STUDENT_FOLDER.match(name("rrd", memory_type="momentum")).groupdict()
    assert (parsed["method"], parsed["b"], parsed["trial"]) == ("rrd", "1.0", "1")
