"""EGA: Pearson correlations and the graph loss by hand, argument order, the one-line error for
unequal sizes, the optional projection, gradients, defaults, real runs."""

from __future__ import annotations

import math

import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo import EGA
from distiller_zoo.EGA import PCC
from distiller_zoo.registry import get_method


def pearson_by_hand(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (n - 1)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x) / (n - 1))
    sy = math.sqrt(sum((b - my) ** 2 for b in y) / (n - 1))
    return cov / (sx * sy)


def ega_by_hand(f_t: list[list[float]], f_s: list[list[float]]) -> float:
    b = len(f_t)
    node = edge = 0.0
    for i in range(b):
        for j in range(b):
            node += (pearson_by_hand(f_t[i], f_s[j]) - (1.0 if i == j else 0.0)) ** 2
            edge += (pearson_by_hand(f_t[i], f_t[j]) - pearson_by_hand(f_s[i], f_s[j])) ** 2
    return math.sqrt(node) + 0.3 * math.sqrt(edge)


def test_pearson_matrix_matches_hand_computation():
    torch.manual_seed(0)
    m = torch.randn(5, 7, dtype=torch.float64)
    c = PCC(m)
    for i in range(5):
        for j in range(5):
            assert math.isclose(c[i, j].item(), pearson_by_hand(m[i].tolist(), m[j].tolist()), rel_tol=1e-10)


def test_loss_matches_hand_computation_and_is_symmetric_in_its_arguments():
    torch.manual_seed(0)
    f_t, f_s = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    loss = EGA()
    assert (loss.node_weight, loss.edge_weight) == (1, 0.3)
    expected = ega_by_hand(f_t.tolist(), f_s.tolist())
    assert math.isclose(loss(f_t, f_s).item(), expected, rel_tol=1e-10)
    # the distillers repository passes (student, teacher) to forward(ft, fs): the same value
    assert math.isclose(loss(f_s, f_t).item(), expected, rel_tol=1e-10)


def test_constant_row_stays_finite():
    f_s = torch.randn(3, 6)
    f_s[1] = 0.0  # all-zero pooled features: the reference divides by a zero std
    assert math.isfinite(EGA()(torch.randn(3, 6), f_s).item())


def test_unequal_sizes_are_a_one_line_error_unless_projected():
    student, teacher = nets("resnet8x4", "resnet20")  # 256 vs 64
    with pytest.raises(ValueError, match="ega_proj") as err:
        build_method("ega", student, teacher)
    assert "\n" not in str(err.value) and "256" in str(err.value) and "64" in str(err.value)
    method = build_method("ega", student, teacher, ega_proj=True)
    assert (method.proj.in_features, method.proj.out_features) == (256, 64)


def test_gradients_reach_student_and_projection_not_teacher():
    check_one_step("ega", student_arch="resnet8x4", teacher_arch="resnet20", ega_proj=True)
    assert not list(build_method("ega", *nets()).parameters())  # no modules without --ega_proj


def test_spec_defaults():
    spec = get_method("ega")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    assert spec.aliases == () and not spec.needs_contrast and not spec.preact


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "ega")


def test_cli_error_for_unequal_sizes_is_one_line(run_student):
    proc = run_student("--distill", "ega", "--model_s", "resnet8x4", check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "--ega_proj" in err, err
