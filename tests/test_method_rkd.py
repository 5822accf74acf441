"""RKD: the loss against a loop-by-loop computation, gradient routing, defaults, one real run."""

from __future__ import annotations

import math

import numpy as np
import torch
from method_checks import check_e2e

from distiller_zoo.registry import get_method
from distiller_zoo.RKD import RKDLoss


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def rkd_by_hand(e_s: np.ndarray, e_t: np.ndarray, w_d: float = 25, w_a: float = 50) -> float:
    n = len(e_s)

    def distances(e):
        d = [[float(np.linalg.norm(e[i] - e[j])) for j in range(n)] for i in range(n)]
        positive = [v for row in d for v in row if v > 0]
        mu = sum(positive) / len(positive)
        return [[v / mu for v in row] for row in d]

    def unit(v):
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def angles(e):
        return [
            float(np.dot(unit(e[b] - e[a]), unit(e[c] - e[a])))
            for a in range(n) for b in range(n) for c in range(n)
        ]

    d_s, d_t = distances(e_s), distances(e_t)
    loss_d = sum(huber(d_s[i][j] - d_t[i][j]) for i in range(n) for j in range(n)) / n**2
    loss_a = sum(huber(s - t) for s, t in zip(angles(e_s), angles(e_t), strict=True)) / n**3
    return w_d * loss_d + w_a * loss_a


def test_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    # teacher spread much wider than the student, so both Huber branches are exercised
    e_s, e_t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * np.array([8.0, 0.1, 0.1])
    got = RKDLoss()(torch.from_numpy(e_s), torch.from_numpy(e_t)).item()
    assert math.isclose(got, rkd_by_hand(e_s, e_t), rel_tol=1e-7)
    got = RKDLoss(w_d=2, w_a=0)(torch.from_numpy(e_s), torch.from_numpy(e_t)).item()
    assert math.isclose(got, rkd_by_hand(e_s, e_t, 2, 0), rel_tol=1e-7)


def test_maps_are_flattened_and_scale_invariant():
    f_t = torch.randn(4, 2, 3, 3)
    assert RKDLoss()(f_t * 3.0, f_t).item() < 1e-5  # both terms ignore a global scale
    assert RKDLoss()(f_t[:1], f_t[:1]).item() == 0.0  # a lone sample has no relation to match


def test_pdist_keeps_rd_signature():
    e = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert torch.allclose(RKDLoss.pdist(e), torch.tensor([[0.0, 5.0], [5.0, 0.0]]))
    assert torch.allclose(RKDLoss.pdist(e, squared=True), torch.tensor([[0.0, 25.0], [25.0, 0.0]]))


def test_spec_defaults():
    spec = get_method("rkd")
    assert spec.name == "rkd" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    loss = spec.build(None).criterion  # the method builds nothing from the context
    assert (loss.w_d, loss.w_a) == (25, 50)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "rkd")
