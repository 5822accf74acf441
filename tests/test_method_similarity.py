"""SP (--distill similarity / sp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_checks import batch_of, check_e2e, check_one_step, synthetic_ctx

from distiller_zoo.registry import Weights, get_method
from distiller_zoo.SP import Similarity


def hand_sp(f_s: np.ndarray, f_t: np.ndarray) -> float:
    """||rownorm(G_t) - rownorm(G_s)||_F^2 / B^2 with G[i, j] = <a_i, a_j> over flattened samples."""
    b = f_s.shape[0]

    def gram(f: np.ndarray) -> np.ndarray:
        a = f.reshape(b, -1)
        g = np.array([[float(np.dot(a[i], a[j])) for j in range(b)] for i in range(b)])
        return g / np.sqrt((g ** 2).sum(axis=1, keepdims=True))

    return float(((gram(f_t) - gram(f_s)) ** 2).sum() / b ** 2)


def test_loss_matches_hand_computation_across_shapes():
    rng = np.random.default_rng(0)
    f_s, f_t = rng.standard_normal((5, 3, 4, 4)), rng.standard_normal((5, 7, 2, 2))
    losses = Similarity()([torch.tensor(f_s, dtype=torch.float32)], [torch.tensor(f_t, dtype=torch.float32)])
    assert len(losses) == 1
    assert losses[0].item() == pytest.approx(hand_sp(f_s, f_t), rel=1e-5)


def test_registered_method_uses_the_last_map_only():
    rng = np.random.default_rng(1)
    feat_s = [torch.tensor(rng.random((4, 3, 4, 4)), dtype=torch.float32) for _ in range(3)]
    feat_t = [torch.tensor(rng.random((4, 6, 2, 2)), dtype=torch.float32) for _ in range(3)]
    feat_s.append(torch.rand(4, 8))
    feat_t.append(torch.rand(4, 8))
    loss = get_method("sp").build(synthetic_ctx(feat_s, feat_t))(batch_of(feat_s, feat_t))
    assert loss.item() == pytest.approx(hand_sp(feat_s[-2].numpy(), feat_t[-2].numpy()), rel=1e-5)


def test_identical_similarity_structure_costs_nothing():
    f = torch.rand(4, 3, 4, 4)
    assert Similarity()([f], [2 * f])[0].item() == pytest.approx(0.0, abs=1e-12)


def test_gradients_reach_student_not_teacher():
    check_one_step("similarity", student_arch="resnet8", teacher_arch="resnet8x4")


def test_spec_defaults():
    spec = get_method("similarity")
    assert get_method("sp") is spec
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=3000.0)
    assert not spec.preact and not spec.needs_contrast


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "similarity")
