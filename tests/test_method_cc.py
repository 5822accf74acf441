"""CC (RepDistiller's form): the loss by hand, both embeddings trained, defaults, one real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.CC import Correlation
from distiller_zoo.registry import DistillBatch, get_method


def correlation_by_hand(e_s: np.ndarray, e_t: np.ndarray) -> float:
    n, d = e_s.shape
    total = 0.0
    for i in range(n - 1):
        for k in range(d):
            total += abs(e_s[i, k] - e_t[i, k]) * abs(e_s[i + 1, k] - e_t[i + 1, k])
    return total / (n - 1)


def test_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    e_s, e_t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    got = Correlation()(torch.from_numpy(e_s), torch.from_numpy(e_t)).item()
    assert math.isclose(got, correlation_by_hand(e_s, e_t), rel_tol=1e-12)
    assert Correlation()(torch.ones(1, 5), torch.zeros(1, 5)).item() == 0.0  # no consecutive pair


def test_method_embeds_both_pooled_features():
    method = build_method("correlation", *nets(), feat_dim=8)
    assert method.embed_s.linear.in_features == 64 and method.embed_t.linear.in_features == 64
    f_s, f_t = torch.randn(4, 64, dtype=torch.float64), torch.randn(4, 64, dtype=torch.float64)
    method = method.double()

    def embed(layer, f):
        return f.numpy() @ layer.linear.weight.detach().numpy().T + layer.linear.bias.detach().numpy()

    logits, target = torch.zeros(4, 10), torch.zeros(4, dtype=torch.long)
    batch = DistillBatch([f_s], [f_t], logits, logits, target)
    expected = correlation_by_hand(embed(method.embed_s, f_s), embed(method.embed_t, f_t))
    assert math.isclose(method(batch).item(), expected, rel_tol=1e-9)


def test_gradients_reach_student_and_both_embeddings_not_teacher():
    check_one_step("correlation", feat_dim=8)
    method = build_method("correlation", *nets(), feat_dim=8)
    assert {n for n, _ in method.named_parameters()} == {
        "embed_s.linear.weight", "embed_s.linear.bias", "embed_t.linear.weight", "embed_t.linear.bias",
    }


def test_bad_feat_dim_is_rejected():
    with pytest.raises(ValueError, match="feat_dim"):
        build_method("correlation", *nets(), feat_dim=0)


def test_spec_defaults():
    spec = get_method("cc")
    assert spec is get_method("correlation") and spec.aliases == ("cc",)
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 0.02)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "correlation")
