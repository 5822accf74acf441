"""Sobolev: the loss against finite-difference Jacobians, its second-order gradient, a real step, a run."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
from method_checks import build_method, check_e2e, nets
from torch import nn

from distiller_zoo.registry import Weights, get_method
from distiller_zoo.Sobolev import Sobolev
from helper.compile import decide as compile_decision
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher, fold_batchnorms

SHAPE = (3, 1, 2, 2)  # batch 3, 4 input values per sample


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def sobolev_by_hand(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: list[int], h: float = 1e-6) -> float:
    """Central finite differences of each sample's target logit, one input value at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for b, label in enumerate(y):
            grads = []
            for net in (student, teacher):
                g = []
                for d in range(x[b].numel()):
                    step = torch.zeros_like(x[b]).flatten()
                    step[d] = h
                    up = net((x[b].flatten() + step).reshape(1, *x.shape[1:]))[0, label].item()
                    down = net((x[b].flatten() - step).reshape(1, *x.shape[1:]))[0, label].item()
                    g.append((up - down) / (2 * h))
                norm = math.sqrt(sum(v * v for v in g))
                grads.append([v / norm for v in g])
            for gs, gt in zip(*grads, strict=True):
                total += (gs - gt) ** 2
                count += 1
    return total / count


def _loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    return Sobolev()(student(x), teacher(x), x, y)


def test_loss_matches_finite_difference_jacobians():
    student, teacher = _mlp(0), _mlp(1)
    x, y = torch.randn(*SHAPE, dtype=torch.float64), torch.tensor([0, 2, 1])
    got = _loss(student, teacher, x, y).item()
    assert got > 0 and math.isclose(got, sobolev_by_hand(student, teacher, x, y.tolist()), rel_tol=1e-6)


def test_student_gradient_is_the_derivative_of_the_loss():
    """create_graph: the loss's gradient w.r.t. a student weight equals its finite difference."""
    student, teacher = _mlp(0), _mlp(1)
    teacher.requires_grad_(False)
    x, y = torch.randn(*SHAPE, dtype=torch.float64), torch.tensor([0, 2, 1])
    _loss(student, teacher, x, y).backward()
    weight, h = student[1].weight, 1e-6
    for i, j in [(0, 0), (2, 3), (4, 1)]:
        with torch.no_grad():
            weight[i, j] += h
        up = sobolev_by_hand(student, teacher, x, y.tolist(), h=1e-5)
        with torch.no_grad():
            weight[i, j] -= 2 * h
        down = sobolev_by_hand(student, teacher, x, y.tolist(), h=1e-5)
        with torch.no_grad():
            weight[i, j] += h
        assert math.isclose(weight.grad[i, j].item(), (up - down) / (2 * h), rel_tol=1e-3, abs_tol=1e-7)


def _objective(name: str, precision: str, **opt):
    """The real DistillObjective with only the method's term weighted, a folded frozen teacher."""
    student, teacher = nets()
    spec = get_method(name)
    method = build_method(name, student, teacher, **opt)
    reference_teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    frozen = FrozenTeacher(fold_batchnorms(teacher.eval().requires_grad_(False), spec.preact), spec.preact)
    autocast = nullcontext if precision == "fp32" else (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    return DistillObjective(student, frozen, method, spec, Weights(0, 0, 1), 4.0, autocast), student, teacher, \
        reference_teacher


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_step_through_the_objective(precision):
    """channels_last images, real nets: gradient reaches the student only; in fp32 the term is the
    loss on an unfolded teacher computed directly."""
    objective, student, teacher, reference = _objective("sobolev", precision)
    objective.train_mode()
    state = copy.deepcopy(teacher.state_dict())
    torch.manual_seed(1)
    x = torch.randn(6, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (6,))
    _, terms, total = objective([x, y])
    total.backward()
    grad = student.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())
    if precision == "fp32":
        x2 = x.clone().requires_grad_(True)
        expected = Sobolev()(student(x2), reference(x2), x2, y)
        assert torch.allclose(terms["kd"], expected, rtol=1e-4, atol=1e-7)
    else:
        assert math.isfinite(terms["kd"].item()) and terms["kd"].item() > 0


def test_spec_defaults_and_compile_refused():
    spec = get_method("sobolev")
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=20.0)
    assert spec.input_grad and spec.teacher_graph and not spec.uses_features
    assert not spec.compilable  # double backward: --compile auto runs it eagerly, on refuses
    with pytest.raises(ValueError, match="sobolev.*double backward.*--compile off"):
        compile_decision("on", torch.device("cpu"), 10**6, "sobolev", spec.compilable)
    assert not compile_decision("auto", torch.device("cpu"), 10**6, "sobolev", spec.compilable).compile


def test_end_to_end_bf16(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "sobolev", "--precision", "bf16", "-a", "0.5")
