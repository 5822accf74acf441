"""AT (--distill attention / at)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_checks import batch_of, check_e2e, check_one_step, synthetic_ctx

from distiller_zoo.AT import Attention
from distiller_zoo.registry import Weights, get_method


def avg_pool(f: np.ndarray, out: int) -> np.ndarray:
    b, c, h, w = f.shape
    k = h // out
    pooled = np.zeros((b, c, out, out))
    for i in range(out):
        for j in range(out):
            pooled[:, :, i, j] = f[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k].mean(axis=(2, 3))
    return pooled


def attention_map(f: np.ndarray) -> np.ndarray:
    """Channel mean of F^2, flattened, divided by its L2 norm, sample by sample."""
    b = f.shape[0]
    a = (f ** 2).mean(axis=1).reshape(b, -1)
    return np.stack([row / np.sqrt((row ** 2).sum()) for row in a])


def hand_at(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> float:
    total = 0.0
    for f_s, f_t in zip(g_s, g_t, strict=True):
        size = min(f_s.shape[2], f_t.shape[2])
        a_s, a_t = attention_map(avg_pool(f_s, size)), attention_map(avg_pool(f_t, size))
        total += ((a_s - a_t) ** 2).sum() / a_s.size
    return total


def test_loss_matches_hand_computation_with_pooling_and_channel_mismatch():
    rng = np.random.default_rng(0)
    # position 1: student larger (pooled 4 -> 2); position 2: teacher larger; channels differ.
    g_s = [rng.random((3, 2, 4, 4)), rng.random((3, 4, 2, 2))]
    g_t = [rng.random((3, 5, 2, 2)), rng.random((3, 3, 4, 4))]
    losses = Attention()([torch.tensor(f, dtype=torch.float32) for f in g_s],
                         [torch.tensor(f, dtype=torch.float32) for f in g_t])
    assert len(losses) == 2
    assert sum(losses).item() == pytest.approx(hand_at(g_s, g_t), rel=1e-5)


def test_registered_method_sums_stage_maps_only():
    rng = np.random.default_rng(1)
    # F0, two stage maps, then a "pooled" entry: only F[1:-1] are compared.
    feats_s = [rng.random((2, 3, 4, 4)) for _ in range(4)]
    feats_t = [rng.random((2, 5, 2, 2)) for _ in range(4)]
    to_t = lambda fs: [torch.tensor(f, dtype=torch.float32) for f in fs]  # noqa: E731
    method = get_method("at").build(synthetic_ctx(to_t(feats_s), to_t(feats_t)))
    loss = method(batch_of(to_t(feats_s), to_t(feats_t)))
    assert loss.item() == pytest.approx(hand_at(feats_s[1:3], feats_t[1:3]), rel=1e-5)


def test_needs_stage_maps():
    flat = [torch.zeros(2, 8), torch.zeros(2, 8)]
    with pytest.raises(ValueError, match="AT needs 4-D stage feature maps"):
        get_method("attention").build(synthetic_ctx(flat, flat))


def test_cross_width_pair_builds_and_trains():
    check_one_step("at", student_arch="resnet8", teacher_arch="resnet8x4")


def test_spec_defaults():
    spec = get_method("attention")
    assert get_method("at") is spec
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=1000.0)
    assert not spec.preact and not spec.needs_contrast
    assert Attention().p == 2


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "attention")
