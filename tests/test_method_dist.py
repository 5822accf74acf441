"""DIST: the inter- and intra-class correlations by hand, the temperature, the official defaults (tau 4,
weight 2 on CIFAR; tau 1 on ImageNet), gradients, a real run."""

from __future__ import annotations

import math

import pytest
import torch
from method_checks import build_method, check_e2e, nets

import train_student
from distiller_zoo.DIST import DIST, pearson_correlation
from distiller_zoo.registry import Weights, get_method


def softmax_rows(z: list[list[float]], t: float) -> list[list[float]]:
    out = []
    for row in z:
        e = [math.exp(v / t) for v in row]
        out.append([v / sum(e) for v in e])
    return out


def pearson_by_hand(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return cov / (sx * sy)


def dist_by_hand(z_s: list[list[float]], z_t: list[list[float]], beta: float, gamma: float, t: float) -> float:
    p_s, p_t = softmax_rows(z_s, t), softmax_rows(z_t, t)
    n, k = len(p_s), len(p_s[0])
    inter = 1 - sum(pearson_by_hand(p_s[i], p_t[i]) for i in range(n)) / n
    columns = [([p_s[i][c] for i in range(n)], [p_t[i][c] for i in range(n)]) for c in range(k)]
    intra = 1 - sum(pearson_by_hand(s, q) for s, q in columns) / k
    return t * t * (beta * inter + gamma * intra)


def logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64) * 3


@pytest.mark.parametrize("beta, gamma, tau", [(1.0, 1.0, 1.0), (1.0, 1.0, 4.0), (2.0, 0.5, 3.0)])
def test_loss_matches_hand_computation(beta, gamma, tau):
    z_s, z_t = logits()
    expected = dist_by_hand(z_s.tolist(), z_t.tolist(), beta, gamma, tau)
    assert math.isclose(DIST(beta, gamma, tau)(z_s, z_t).item(), expected, rel_tol=1e-5)


def test_relations_ignore_affine_changes_and_vanish_on_a_match():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(4, 10, generator=g), torch.rand(4, 10, generator=g)
    assert torch.allclose(pearson_correlation(3 * a + 0.2, b), pearson_correlation(a, b), atol=1e-6)
    z = torch.randn(8, 10, generator=g)
    assert abs(DIST(tau=4.0)(z, z).item()) < 1e-3  # float32 rounding of nearly uniform rows
    assert DIST(tau=4.0)(z, -z).item() > 1.0  # anti-correlated predictions cost


def test_official_constructor_defaults():
    loss = DIST()
    assert (loss.beta, loss.gamma, loss.tau) == (1.0, 1.0, 1.0)


def test_defaults_and_flags():
    opt, spec = train_student.parse_option(["--path_t", "t.pth", "--distill", "dist"])
    assert (opt.gamma, opt.alpha, opt.beta) == (1, 0.0, 2.0)
    assert (opt.dist_beta, opt.dist_gamma, opt.dist_tau) == (1.0, 1.0, None)
    assert get_method("dist").weights == Weights(1.0, 0.0, 2.0) and not spec.uses_features
    student, teacher = nets()
    criterion = build_method("dist", student, teacher).criterion
    assert (criterion.beta, criterion.gamma, criterion.tau) == (1.0, 1.0, 4.0)
    assert build_method("dist", student, teacher, dataset="imagenet").criterion.tau == 1.0
    criterion = build_method("dist", student, teacher, dist_tau=2.0, dist_beta=0.5, dist_gamma=3.0).criterion
    assert (criterion.beta, criterion.gamma, criterion.tau) == (0.5, 3.0, 2.0)
    with pytest.raises(ValueError, match="dist_tau"):
        build_method("dist", student, teacher, dist_tau=0.0)


def test_nothing_to_train():  # the one step every method takes: tests/test_conformance.py
    assert not list(build_method("dist", *nets()).parameters())


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "dist", "-a", "0.5")
