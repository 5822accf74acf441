"""WSLD: the weighted soft-label loss by hand, its gradient (the weights are constants), its own
temperature, the defaults reproducing the official recipe through the trainer's objective, a real run."""

from __future__ import annotations

import argparse
import math
from contextlib import nullcontext

import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo import WSLDLoss
from distiller_zoo.registry import Weights, get_method
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher


def log_softmax_by_hand(z: list[float], t: float) -> list[float]:
    lse = math.log(sum(math.exp(v / t) for v in z))
    return [v / t - lse for v in z]


def wsld_soft_by_hand(z_t: list[list[float]], z_s: list[list[float]], y: list[int], t: float) -> float:
    total = 0.0
    for zt, zs, label in zip(z_t, z_s, y, strict=True):
        p_t = [math.exp(v) for v in log_softmax_by_hand(zt, t)]
        soft = -sum(p * q for p, q in zip(p_t, log_softmax_by_hand(zs, t), strict=True))
        ce_s, ce_t = -log_softmax_by_hand(zs, 1.0)[label], -log_softmax_by_hand(zt, 1.0)[label]
        weight = 1 - math.exp(-max(ce_s / (ce_t + 1e-7), 0.0))
        total += weight * soft
    return t * t * total / len(y)


def logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_t = torch.randn(6, 5, generator=g, dtype=torch.float64) * 2
    return z_t, torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (6,), generator=g)


def test_soft_loss_and_full_loss_match_hand_computation():
    z_t, z_s, y = logits()
    loss = WSLDLoss(argparse.Namespace(wsld_T=3.0))
    soft = wsld_soft_by_hand(z_t.tolist(), z_s.tolist(), y.tolist(), 3.0)
    assert math.isclose(loss.soft_loss(z_t, z_s, y).item(), soft, rel_tol=1e-10)
    ce = sum(-log_softmax_by_hand(row, 1.0)[label] for row, label in zip(z_s.tolist(), y.tolist(), strict=True)) / 6
    assert math.isclose(loss(z_t, z_s, y).item(), ce + 2.5 * soft, rel_tol=1e-10)


def test_gradient_treats_the_weights_as_constants():
    """d/dz_s of T^2 mean_b w_b CE_T(p_t, z_s) = T * w_b * (softmax(z_s/T) - softmax(z_t/T)) / B."""
    z_t, z_s, y = logits(1)
    z_s.requires_grad_(True)
    t = 2.0
    WSLDLoss(argparse.Namespace(wsld_T=t)).soft_loss(z_t, z_s, y).backward()
    for b in range(6):
        zs, zt, label = z_s[b].tolist(), z_t[b].tolist(), y[b].item()
        ce_s, ce_t = -log_softmax_by_hand(zs, 1.0)[label], -log_softmax_by_hand(zt, 1.0)[label]
        w = 1 - math.exp(-ce_s / (ce_t + 1e-7))
        p_s = [math.exp(v) for v in log_softmax_by_hand(zs, t)]
        p_t = [math.exp(v) for v in log_softmax_by_hand(zt, t)]
        for k in range(5):
            assert math.isclose(z_s.grad[b, k].item(), t * w * (p_s[k] - p_t[k]) / 6, rel_tol=1e-9, abs_tol=1e-15)


def test_temperature_is_its_own_flag_not_crds():
    loss = WSLDLoss(argparse.Namespace(wsld_T=2.0, nce_t=0.07))
    assert loss.T == 2.0 and loss.alpha == 2.5
    assert WSLDLoss(argparse.Namespace(nce_t=0.07)).T == 2.0  # the official default when the flag is absent
    import train_student

    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "wsld"])
    assert opt.wsld_T == 2.0 and (opt.gamma, opt.alpha, opt.beta) == (1.0, 0.0, 2.5)
    with pytest.raises(ValueError, match="wsld_T"):
        build_method("wsld", *nets(), wsld_T=0.0)


def test_defaults_reproduce_the_official_loss_through_the_objective():
    """CE at -r 1, no KD (-a 0), the soft term at -b 2.5: the trainer's total is WSLDLoss's forward."""
    spec = get_method("wsld")
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=2.5) and not spec.uses_features
    student, teacher = nets()
    method = build_method("wsld", student, teacher)
    objective = DistillObjective(student, FrozenTeacher(teacher.eval().requires_grad_(False), preact=False), method,
                                 spec, spec.weights, 4.0, nullcontext)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 7, 9])
    student.train()
    logit_s, terms, total = objective([x, y])
    with torch.no_grad():
        logit_t = teacher(x)
    expected = WSLDLoss(argparse.Namespace(wsld_T=2.0))(logit_t, logit_s, y)
    assert torch.allclose(total, expected, rtol=1e-6)


def test_gradients_reach_student_not_teacher():
    check_one_step("wsld")
    assert not list(build_method("wsld", *nets()).parameters())


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "wsld")
