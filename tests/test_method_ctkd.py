"""CTKD: the gradient reversal, the cosine curriculum's values, the temperature's gradient by hand, gradients
reaching the student and the temperature (never the teacher), defaults, errors, and a run."""

from __future__ import annotations

import math

import pytest
import torch
from method_checks import build_method, check_e2e, make_opt, nets

from distiller_zoo.CTKD import CosineDecay, CurriculumTemperature, Global_T, GradientReversal
from distiller_zoo.KD import DistillKL
from distiller_zoo.registry import DistillBatch, Weights, get_method, run_tag


def test_gradient_reversal_is_identity_forward_and_scales_the_gradient():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    y = GradientReversal()(x, -0.3)
    assert torch.equal(y, x.detach())
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    assert x.grad.tolist() == pytest.approx([-0.6, -1.5])


def test_cosine_curriculum_values():
    """The reference's CosineDecay(0, -1, 10) read at 1-based epochs: 0 -> -1 over 10 epochs, then -1."""
    decay = CosineDecay(max_value=0.0, min_value=-1.0, num_loops=10)
    expected = {0: 0.0, 1: (math.cos(math.pi / 10) + 1) / 2 - 1, 5: -0.5, 10: -1.0, 30: -1.0, -3: 0.0}
    for epoch, value in expected.items():
        assert decay.get_value(epoch) == pytest.approx(value, abs=1e-12), epoch
    assert decay.get_value(1) == pytest.approx(-0.0244717, abs=1e-6)


def _batch(epoch: int, seed: int = 0) -> DistillBatch:
    """Logits of a trained net's spread: at T ~ 15.6 KD's slope in T is then well above float32's noise."""
    torch.manual_seed(seed)
    z_s, z_t = (torch.randn(4, 5) * 10).requires_grad_(), torch.randn(4, 5) * 10
    return DistillBatch([], [], z_s, z_t, torch.tensor([0, 1, 2, 3]), epoch=epoch, epochs=240)


def kd_at(z_s: list[list[float]], z_t: list[list[float]], T: float) -> float:
    total = 0.0
    for row_s, row_t in zip(z_s, z_t, strict=True):
        norm_s, norm_t = sum(math.exp(v / T) for v in row_s), sum(math.exp(v / T) for v in row_t)
        for a, b in zip(row_s, row_t, strict=True):
            p_s, p_t = math.exp(a / T) / norm_s, math.exp(b / T) / norm_t
            total += p_t * (math.log(p_t) - math.log(p_s))
    return T * T * total / len(z_s)


@pytest.mark.parametrize("epoch", [1, 4, 12])
def test_temperature_gets_the_reversed_gradient_scaled_by_the_curriculum(epoch):
    """d(div)/d(global_T) = lambda(epoch) * dKD/dT * t_end * sigmoid'(global_T), dKD/dT by central differences
    of the KD loss written with loops, lambda(epoch) <= 0: the temperature ascends the loss the student descends."""
    method = CurriculumTemperature()
    batch = _batch(epoch)
    _, terms = method.loss_terms(batch, torch.nn.functional.cross_entropy, DistillKL(4.0))
    raw = method.mlp.global_T.item()
    T = 1.0 + 20.0 / (1.0 + math.exp(-raw))
    assert terms["temperature"].item() == pytest.approx(T, rel=1e-6)
    z_s, z_t = batch.logit_s.tolist(), batch.logit_t.tolist()
    assert terms["div"].item() == pytest.approx(kd_at(z_s, z_t, T), rel=1e-5)
    terms["div"].backward()
    h = 1e-3
    dkd_dT = (kd_at(z_s, z_t, T + h) - kd_at(z_s, z_t, T - h)) / (2 * h)
    sig = 1.0 / (1.0 + math.exp(-raw))
    lam = (math.cos(min(epoch, 10) * math.pi / 10) + 1) / 2 - 1
    expected = lam * dkd_dT * 20.0 * sig * (1 - sig)
    assert method.mlp.global_T.grad.item() == pytest.approx(expected, rel=1e-4)
    assert batch.logit_s.grad is not None  # the student's gradient is not reversed
    assert terms["kd"].item() == 0.0 and not terms["temperature"].requires_grad


def test_standardised_kd_uses_the_learnt_temperature():
    method = CurriculumTemperature()
    batch = _batch(3, seed=2)
    _, terms = method.loss_terms(batch, torch.nn.functional.cross_entropy, DistillKL(4.0, standardize=True))
    T = terms["temperature"].item()
    assert terms["div"].item() == pytest.approx(DistillKL(T, standardize=True)(batch.logit_s, batch.logit_t).item(),
                                                rel=1e-5)


def test_gradients_reach_student_and_temperature_never_teacher():
    student, teacher = nets()
    method = build_method("ctkd", student, teacher)
    assert [name for name, _ in method.named_parameters()] == ["mlp.global_T"]
    student.train()
    x = torch.randn(4, 3, 16, 16)
    logit_s, logit_t = student(x), teacher(x)  # the teacher's forward with autograd on
    batch = DistillBatch([], [], logit_s, logit_t.detach(), torch.tensor([0, 1, 2, 3]), epoch=2, epochs=240)
    _, terms = method.loss_terms(batch, torch.nn.functional.cross_entropy, DistillKL(4.0))
    spec = get_method("ctkd")
    (spec.weights.gamma * terms["cls"] + spec.weights.alpha * terms["div"]).backward()
    assert next(student.parameters()).grad.abs().sum() > 0
    assert method.mlp.global_T.grad.abs().item() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_defaults_and_errors():
    spec = get_method("ctkd")
    assert spec.weights == Weights(gamma=0.1, alpha=0.9, beta=0.0) and not spec.uses_features
    method = build_method("ctkd", *nets())
    assert (method.t_start, method.t_end) == (1.0, 20.0)
    assert method.curriculum.get_value(10) == -1.0 and method.curriculum.get_value(0) == 0.0
    assert isinstance(method.mlp, Global_T) and method.mlp.global_T.item() == 1.0
    with pytest.raises(ValueError, match="--ctkd_decay_loops"):
        build_method("ctkd", *nets(), ctkd_decay_loops=0.0)
    with pytest.raises(ValueError, match="--ctkd_t_start"):
        build_method("ctkd", *nets(), ctkd_t_start=0.0)
    # the run folder names a changed curriculum; the defaults keep the plain name
    assert run_tag(make_opt(distill="ctkd")) == ""
    assert run_tag(make_opt(distill="ctkd", ctkd_decay_loops=5.0)) == "_ctkd_decay_loops:5.0"


def test_end_to_end(run_student, tmp_path):
    rows = check_e2e(run_student, tmp_path, "ctkd", "--epochs", "2", "--logit_standardization")
    assert all(1.0 < row["loss_temperature"] < 21.0 for row in rows)
    assert rows[0]["loss_temperature"] != rows[1]["loss_temperature"]  # it is learnt
