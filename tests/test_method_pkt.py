"""PKT: the loss against a loop-by-loop computation, gradient routing, defaults, one real run."""

from __future__ import annotations

import math

import numpy as np
import torch
from method_checks import check_e2e

from distiller_zoo.PKT import PKT
from distiller_zoo.registry import get_method


def pkt_by_hand(f_s: np.ndarray, f_t: np.ndarray, eps: float = 1e-7) -> float:
    def probs(f: np.ndarray) -> list[list[float]]:
        rows = [r / (math.sqrt(sum(v * v for v in r)) + eps) for r in f]
        kernel = [[(float(np.dot(a, b)) + 1.0) / 2.0 for b in rows] for a in rows]
        return [[k / sum(row) for k in row] for row in kernel]

    p_s, p_t = probs(f_s), probs(f_t)
    n = len(f_s)
    pairs = [(i, j) for i in range(n) for j in range(n)]
    return sum(p_t[i][j] * math.log((p_t[i][j] + eps) / (p_s[i][j] + eps)) for i, j in pairs) / (n * n)


def test_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    f_s, f_t = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    got = PKT()(torch.from_numpy(f_s), torch.from_numpy(f_t)).item()
    assert math.isclose(got, pkt_by_hand(f_s, f_t), rel_tol=1e-9)
    # same call in float32, as the trainer passes it
    got32 = PKT()(torch.from_numpy(f_s).float(), torch.from_numpy(f_t).float()).item()
    assert math.isclose(got32, got, rel_tol=1e-4)


def test_identical_and_zero_features():
    f = torch.randn(6, 4)
    assert abs(PKT()(f, f).item()) < 1e-6
    f_s = f.clone()
    f_s[2] = 0.0  # a dead feature vector normalises to 0, not NaN
    assert torch.isfinite(PKT()(f_s, f))


def test_spec_defaults():
    spec = get_method("pkt")
    assert spec.name == "pkt" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 30000.0)
    assert not spec.preact and spec.uses_features and not spec.needs_contrast


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "pkt")
