"""NST (--distill nst)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_checks import batch_of, check_e2e, check_one_step, synthetic_ctx

from distiller_zoo.NST import NSTLoss
from distiller_zoo.registry import Weights, get_method


def hand_nst(f_s: np.ndarray, f_t: np.ndarray) -> float:
    """Squared MMD with k(u, v) = (u.v)^2 between L2-normalised channel vectors (equal spatial sizes)."""
    b = f_s.shape[0]

    def channels(f: np.ndarray, i: int) -> list[np.ndarray]:
        vecs = f[i].reshape(f.shape[1], -1)
        return [v / np.linalg.norm(v) for v in vecs]

    def mean_kernel(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
        return sum(float(np.dot(x, y)) ** 2 for x in xs for y in ys) / (len(xs) * len(ys))

    total = 0.0
    for i in range(b):
        cs, ct = channels(f_s, i), channels(f_t, i)
        total += mean_kernel(ct, ct) + mean_kernel(cs, cs) - 2 * mean_kernel(cs, ct)
    return total / b


def test_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    f_s, f_t = rng.random((3, 4, 3, 3)), rng.random((3, 6, 3, 3))
    losses = NSTLoss()([torch.tensor(f_s, dtype=torch.float32)], [torch.tensor(f_t, dtype=torch.float32)])
    assert losses[0].item() == pytest.approx(hand_nst(f_s, f_t), rel=1e-5)


def test_larger_map_is_pooled_and_positions_summed():
    rng = np.random.default_rng(1)
    big, small = rng.random((2, 3, 4, 4)), rng.random((2, 5, 2, 2))
    pooled = big.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    feat_s = [torch.zeros(2, 3, 4, 4), torch.tensor(big, dtype=torch.float32),
              torch.tensor(small, dtype=torch.float32), torch.zeros(2, 8)]
    feat_t = [torch.zeros(2, 3, 4, 4), torch.tensor(small, dtype=torch.float32),
              torch.tensor(big, dtype=torch.float32), torch.zeros(2, 8)]
    loss = get_method("nst").build(synthetic_ctx(feat_s, feat_t))(batch_of(feat_s, feat_t))
    assert loss.item() == pytest.approx(hand_nst(pooled, small) + hand_nst(small, pooled), rel=1e-5)


def test_teacher_only_term_is_detached():
    """As RepDistiller: mean K_tt is a constant, so a teacher map would get the cross term's gradient only."""
    f_s = torch.rand(2, 3, 4, 4)
    f_t = torch.rand(2, 5, 4, 4, requires_grad=True)
    (g_loss,) = torch.autograd.grad(NSTLoss()([f_s], [f_t])[0], f_t)
    u = F.normalize(f_s.flatten(2), dim=2)
    v = F.normalize(f_t.flatten(2), dim=2)
    cross = -2 * torch.stack([(u[i] @ v[i].t()).pow(2) for i in range(2)]).mean()
    (g_cross,) = torch.autograd.grad(cross, f_t)
    assert torch.allclose(g_loss, g_cross, atol=1e-7)


def test_gradients_reach_student_not_teacher():
    check_one_step("nst", student_arch="resnet8", teacher_arch="resnet8x4")


def test_spec_defaults():
    spec = get_method("nst")
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=50.0)
    assert not spec.preact and not spec.needs_contrast and spec.aliases == ()


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "nst")
