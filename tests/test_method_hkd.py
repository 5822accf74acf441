"""HKD: the kernels and the divergence against a loop-by-loop computation, gradients, defaults, and both
passes (PKT into resnet8x4_double, then HKD from it) through train_student.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_one_step, nets

from distiller_zoo.HKD import HKDLoss, cosine_pairwise_similarities, pairwise_distances
from distiller_zoo.registry import get_method
from models import model_dict

EPS = 1e-6


def rows_of(f: np.ndarray) -> list[list[float]]:
    return [list(map(float, r)) for r in f.reshape(f.shape[0], -1)]


def normalise_rows(kernel: list[list[float]]) -> list[list[float]]:
    return [[k / sum(row) for k in row] for row in kernel]


def cosine_by_hand(f: np.ndarray) -> list[list[float]]:
    rows = rows_of(f)
    unit = [[v / (math.sqrt(sum(x * x for x in r)) + EPS) for v in r] for r in rows]
    return normalise_rows([[(sum(x * y for x, y in zip(a, b, strict=True)) + 1) / 2 for b in unit] for a in unit])


def distance_by_hand(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) + EPS)


def student_t_by_hand(f: np.ndarray) -> list[list[float]]:
    rows = rows_of(f)
    return normalise_rows([[1 / (1 + distance_by_hand(a, b)) for b in rows] for a in rows])


def jeffreys_by_hand(p_t: list[list[float]], p_s: list[list[float]]) -> float:
    n = len(p_t)
    return sum((p_t[i][j] - p_s[i][j]) * (math.log(p_t[i][j]) - math.log(p_s[i][j]))
               for i in range(n) for j in range(n)) / (n * n)


def hkd_by_hand(f_s: list[np.ndarray], f_t: list[np.ndarray], init_weight: float) -> float:
    total = 0.0
    for layer, (s, t) in enumerate(zip(f_s, f_t, strict=False)):
        term = (jeffreys_by_hand(cosine_by_hand(t), cosine_by_hand(s))
                + jeffreys_by_hand(student_t_by_hand(t), student_t_by_hand(s)))
        total += (init_weight if layer == 0 else 1.0) * term
    return total


def test_kernels_match_direct_computation():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 7))
    got = pairwise_distances(torch.from_numpy(f)).numpy()
    rows = rows_of(f)
    np.testing.assert_allclose(got, [[distance_by_hand(a, b) for b in rows] for a in rows], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cosine_pairwise_similarities(torch.from_numpy(f)).numpy(), cosine_by_hand(f),
                               rtol=1e-9)


@pytest.mark.parametrize("init_weight", [100.0, 3.0])
def test_loss_matches_hand_computation(init_weight):
    """Three student stages and two teacher stages (zip pairs two), maps of different widths and sizes."""
    rng = np.random.default_rng(1)
    f_s = [np.abs(rng.normal(size=(4, 2, 2, 2))), np.abs(rng.normal(size=(4, 3, 1, 1))), rng.normal(size=(4, 5))]
    f_t = [np.abs(rng.normal(size=(4, 4, 2, 2))), np.abs(rng.normal(size=(4, 2, 2, 2)))]
    got = HKDLoss(init_weight=init_weight)([torch.from_numpy(f) for f in f_s], [torch.from_numpy(f) for f in f_t])
    assert math.isclose(got.item(), hkd_by_hand(f_s, f_t, init_weight), rel_tol=1e-9)
    # channels_last maps, as the trainer passes them: the layout changes nothing (float64), and float32 stays
    # within its rounding (2.5e-4 relative for init_weight 3 on an AMD EPYC, which 1e-4 refused)
    by_hand = hkd_by_hand(f_s[:2], f_t, init_weight)
    for dtype, rel_tol in ((torch.float64, 1e-9), (torch.float32, 1e-3)):
        maps = [torch.from_numpy(f).to(dtype).contiguous(memory_format=torch.channels_last) for f in f_s[:2]]
        got_cl = HKDLoss(init_weight=init_weight)(maps, [torch.from_numpy(f).to(dtype) for f in f_t])
        assert math.isclose(got_cl.item(), by_hand, rel_tol=rel_tol), dtype


def test_identical_features_give_zero_and_decay_is_not_applied():
    f = [torch.rand(6, 3, 2, 2) for _ in range(3)]
    assert abs(HKDLoss()(f, f).item()) < 1e-12
    g = [torch.rand(6, 3, 2, 2) for _ in range(3)]
    # SemCKD's code keeps a decay (0.7) that it never applies: stages after the first weigh 1
    assert math.isclose(HKDLoss(decay=0.7)(f, g).item(), HKDLoss(decay=0.1)(f, g).item(), rel_tol=1e-12)


def test_gradients_reach_student_not_teacher():
    check_one_step("hkd", batch=6)


def test_spec_defaults_and_initial_weight_flag():
    spec = get_method("hkd")
    assert spec.name == "hkd" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 1.0, 1.0)
    assert not spec.preact and spec.uses_features and not spec.needs_contrast
    assert build_method("hkd", *nets()).criterion.init_weight == 100
    assert build_method("hkd", *nets(), hkd_initial_weight=7.5).criterion.init_weight == 7.5
    with pytest.raises(ValueError, match="--hkd_initial_weight must not be negative"):
        build_method("hkd", *nets(), hkd_initial_weight=-1.0)


def test_both_passes_end_to_end(run_student, tmp_path):
    """Pass 1: PKT from the resnet20 teacher into resnet8x4_double; pass 2: HKD from its best checkpoint
    into resnet8, the teacher's architecture read from the S:resnet8x4_double_T:... folder name."""
    tiny = ["--syn_train_size", "16", "--syn_val_size", "8", "--batch_size", "8"]
    run_student("--distill", "pkt", "--model_s", "resnet8x4_double", "-r", "1", "-a", "1", "-b", "30000", *tiny)
    pass_1 = "S:resnet8x4_double_T:resnet20_synthetic_pkt_r:1.0_a:1.0_b:30000.0_1"
    auxiliary = tmp_path / "save" / "student_model" / pass_1 / "resnet8x4_double_best.pth"
    assert auxiliary.is_file()
    proc = run_student("--path_t", str(auxiliary), "--distill", "hkd", "-r", "1", "-a", "1", "-b", "1", *tiny)
    assert "teacher accuracy" in proc.stdout
    folder = tmp_path / "save" / "student_model" / "S:resnet8_T:resnet8x4_double_synthetic_hkd_r:1.0_a:1.0_b:1.0_1"
    (row,) = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(row["loss_kd"]) and row["loss_kd"] > 0
    assert (folder / "resnet8_best.pth").is_file()
    assert "resnet8x4_double" in model_dict
