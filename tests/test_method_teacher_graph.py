"""The interface's ``teacher_graph``: the teacher's own pass stays attached to the image for the method,
while every loss term sees detached teacher outputs and the teacher's parameters get no gradient."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from method_checks import nets

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher


class _Grab(DistillMethod):
    def __init__(self):
        super().__init__()
        self.seen: DistillBatch | None = None

    def forward(self, batch: DistillBatch):
        self.seen = batch
        return batch.logit_s.new_zeros(())


def _run(teacher_graph: bool, uses_features: bool) -> tuple[DistillBatch, torch.nn.Module, torch.Tensor]:
    student, teacher = nets()
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    method = _Grab()
    spec = MethodSpec("grab", lambda ctx: method, Weights(1, 1, 1), "test", uses_features=uses_features,
                      teacher_graph=teacher_graph)
    objective = DistillObjective(student, frozen, method, spec, Weights(1, 1, 1), 4.0, nullcontext)
    _, _, total = objective([torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))])
    return method.seen, teacher, total


@pytest.mark.parametrize("uses_features", [True, False])
def test_teacher_graph_reaches_the_image_and_the_losses_see_detached_outputs(uses_features):
    batch, teacher, total = _run(True, uses_features)
    feat_t, logit_t = batch.graph_t
    assert batch.image.requires_grad
    assert not batch.logit_t.requires_grad and torch.equal(batch.logit_t, logit_t.detach())
    assert all(not f.requires_grad for f in batch.feat_t)
    (grad,) = torch.autograd.grad(logit_t[:, 0].sum(), batch.image, retain_graph=True)
    assert grad.abs().sum() > 0
    if uses_features:
        (grad,) = torch.autograd.grad(feat_t[2].sum(), batch.image)
        assert grad.abs().sum() > 0
    total.backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_without_teacher_graph_there_is_none():
    batch, _, _ = _run(False, True)
    assert batch.graph_t is None and not batch.image.requires_grad and not batch.logit_t.requires_grad
