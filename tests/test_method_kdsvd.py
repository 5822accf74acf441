"""KDSVD (--distill kdsvd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, check_one_step, nets, synthetic_ctx

from distiller_zoo.KDSVD import KDSVD
from distiller_zoo.registry import Weights, get_method


def top_right_vectors(f: np.ndarray, n: int) -> list[np.ndarray]:
    """Per sample: the top-n right-singular vectors of the HW x C matrix, as a C x n array."""
    out = []
    for sample in f:
        x = sample.reshape(sample.shape[0], -1).T  # HW x C
        _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
        out.append(vt[:n].T)
    return out


def hand_kdsvd(g_s: list[np.ndarray], g_t: list[np.ndarray], flip: list[bool]) -> float:
    """The loss for k = 1, each teacher vector's sign chosen by ``flip`` (an SVD's signs are arbitrary).

    Student: of its top 4 vectors, the one with the largest |cosine| to the teacher's, sign-matched.
    The teacher's single normalised singular value is 1, so no scaling is left.
    """
    b = g_s[0].shape[0]
    total, prev = 0.0, None
    for pos, (f_s, f_t) in enumerate(zip(g_s, g_t, strict=True)):
        vs = []
        for v_t, v_s in zip(top_right_vectors(f_t, 1), top_right_vectors(f_s, 4), strict=True):
            t = v_t[:, 0] * (-1 if flip[pos] else 1)
            cos = [float(np.dot(v_s[:, j], t)) for j in range(4)]
            best = int(np.argmax(np.abs(cos)))
            vs.append((np.sign(cos[best]) * v_s[:, best], t))
        if prev is not None:
            for i in range(b):
                (s_i, t_i), (s_p, t_p) = vs[i], prev[i]
                for c in range(len(s_i)):
                    for d in range(len(s_p)):
                        r_s = np.exp(-((s_i[c] - s_p[d]) ** 2) / 8)
                        r_t = np.exp(-((t_i[c] - t_p[d]) ** 2) / 8)
                        total += (r_s - r_t) ** 2
        prev = vs
    return total / b


def test_loss_matches_hand_computation_up_to_svd_signs():
    rng = np.random.default_rng(0)
    g_s = [rng.random((3, 4, 4, 4)), rng.random((3, 6, 2, 2))]
    g_t = [rng.random((3, 4, 4, 4)), rng.random((3, 6, 2, 2))]
    losses = KDSVD()([torch.tensor(f, dtype=torch.float32) for f in g_s],
                     [torch.tensor(f, dtype=torch.float32) for f in g_t])
    assert len(losses) == 1  # one pair of consecutive positions
    # Only the relative sign of the two teacher vectors matters: the LAPACK in use picks one of these.
    candidates = [hand_kdsvd(g_s, g_t, [False, flip]) for flip in (False, True)]
    assert candidates[0] != pytest.approx(candidates[1], rel=1e-3)
    assert any(losses[0].item() == pytest.approx(c, rel=1e-4) for c in candidates), (losses, candidates)


def test_svd_vectors_are_normalised_and_sign_aligned():
    torch.manual_seed(0)
    f = torch.rand(2, 5, 3, 3)
    _, s, v = KDSVD().svd(f, 4)
    assert v.shape == (2, 5, 4) and s.shape == (2, 4)
    assert torch.allclose(v.norm(dim=1), torch.ones(2, 4), atol=1e-5)
    assert torch.allclose(s.norm(dim=1), torch.ones(2), atol=1e-5)
    aligned, target = KDSVD.align_rsv(v, -v[:, :, 2:3])
    assert torch.allclose(aligned, target, atol=1e-5)


def test_registered_method_uses_the_stage_maps_and_sums():
    rng = np.random.default_rng(2)
    shapes = [(2, 3, 4, 4), (2, 3, 4, 4), (2, 5, 2, 2), (2, 4, 2, 2)]
    feat_s = [torch.tensor(rng.random(s), dtype=torch.float32) for s in shapes] + [torch.rand(2, 4)]
    feat_t = [torch.tensor(rng.random(s), dtype=torch.float32) for s in shapes] + [torch.rand(2, 4)]
    method = get_method("kdsvd").build(synthetic_ctx(feat_s, feat_t))
    loss = method(batch_of(feat_s, feat_t))
    expected = sum(KDSVD()(feat_s[1:-1], feat_t[1:-1]))  # pairs (1, 2) and (2, 3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_channel_mismatch_is_a_value_error():
    student, teacher = nets("resnet8", "resnet8x4")
    with pytest.raises(ValueError, match="KDSVD needs equal student/teacher channels"):
        build_method("kdsvd", student, teacher)


def test_degenerate_map_gives_finite_gradients():
    """An all-zero sample has no defined singular vectors: its gradient is dropped, not NaN."""
    torch.manual_seed(0)
    g_s = [torch.rand(3, 4, 4, 4), torch.rand(3, 4, 4, 4)]
    g_s[1][0] = 0
    g_s = [f.requires_grad_(True) for f in g_s]
    g_t = [torch.rand(3, 4, 4, 4), torch.rand(3, 4, 4, 4)]
    loss = sum(KDSVD()(g_s, g_t))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(f.grad).all() for f in g_s)
    assert g_s[0].grad[1:].abs().sum() > 0


def test_gradients_reach_student_not_teacher():
    check_one_step("kdsvd", student_arch="resnet8", teacher_arch="resnet20")


def test_spec_defaults():
    spec = get_method("kdsvd")
    # No RepDistiller script line: mdistiller's weight 1 with CE 1 and no KD term.
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=1.0)
    assert not spec.preact and not spec.needs_contrast
    assert KDSVD().k == 1


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "kdsvd")
