"""ITRD: both terms by hand (equal and different feature sizes), the official and the distillers
weightings, degenerate batches, gradients, defaults and flags, a real run."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo import ITLoss
from distiller_zoo.registry import get_method


def it_opt(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"s_dim": 4, "t_dim": 6, "n_data": 100, **kw})


def linear_by_hand(linear: torch.nn.Linear, f: list[list[float]]) -> list[list[float]]:
    w, b = linear.weight.detach().double().tolist(), linear.bias.detach().double().tolist()
    return [[sum(wi * xi for wi, xi in zip(w[o], x, strict=True)) + b[o] for o in range(len(b))] for x in f]


def columns_standardised(x: list[list[float]]) -> list[list[float]]:
    n, d = len(x), len(x[0])
    out = [[0.0] * d for _ in range(n)]
    for j in range(d):
        mean = sum(x[i][j] for i in range(n)) / n
        std = math.sqrt(sum((x[i][j] - mean) ** 2 for i in range(n)) / (n - 1))
        for i in range(n):
            out[i][j] = (x[i][j] - mean) / std
    return out


def correlation_by_hand(z: list[list[float]], f_t: list[list[float]], alpha: float) -> float:
    zs, ft = columns_standardised(z), columns_standardised(f_t)
    n, d = len(z), len(z[0])
    total = 0.0
    for j in range(d):
        c = sum(zs[i][j] * ft[i][j] for i in range(n)) / n
        total += (abs(c - 1) ** 2) ** alpha
    return math.log2(total)


def mutual_by_hand(f_s: list[list[float]], f_t: list[list[float]]) -> float:
    def gram(x):
        rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x]
        return [[sum(a * b for a, b in zip(p, q, strict=True)) for q in rows] for p in rows]

    g_s, g_t = gram(f_s), gram(f_t)
    n = len(f_s)
    g_st = [[g_s[i][j] * g_t[i][j] for j in range(n)] for i in range(n)]
    tr_s, tr_st = sum(g_s[i][i] for i in range(n)), sum(g_st[i][i] for i in range(n))
    return sum((g_s[i][j] / tr_s) ** 2 - (g_st[i][j] / tr_st) ** 2 for i in range(n) for j in range(n))


@pytest.mark.parametrize("s_dim", [4, 6])
def test_loss_matches_hand_computation(s_dim):
    """Sizes 4 -> 6: the mutual-information term sees embed(f_s); 6 -> 6: f_s itself."""
    torch.manual_seed(0)
    loss = ITLoss(it_opt(s_dim=s_dim, itrd_alpha=1.3, lambda_corr=2.0, lambda_mutual=0.7)).double()
    f_s, f_t = torch.randn(5, s_dim, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    z = linear_by_hand(loss.embed.linear, f_s.tolist())
    corr = correlation_by_hand(z, f_t.tolist(), 1.3)
    mutual = mutual_by_hand(z if s_dim != 6 else f_s.tolist(), f_t.tolist())
    assert math.isclose(loss.forward_correlation_it(f_s, f_t).item(), corr, rel_tol=1e-10)
    assert math.isclose(loss.forward_mutual_it(f_s, f_t).item(), mutual, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(loss(f_s, f_t).item(), 2.0 * corr + 0.7 * mutual, rel_tol=1e-9)


def test_official_defaults_and_the_distillers_variant():
    torch.manual_seed(0)
    official = ITLoss(it_opt())  # an opt without the flags, as the reference's callers pass
    assert (official.alpha_it, official.lambda_corr, official.lambda_mutual) == (1.01, 2.0, 1.0)
    f_s, f_t = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    variant = ITLoss(it_opt(itrd_alpha=1.5, lambda_corr=1.0, lambda_mutual=1.0)).double()
    z = linear_by_hand(variant.embed.linear, f_s.tolist())
    expected = correlation_by_hand(z, f_t.tolist(), 1.5) + mutual_by_hand(z, f_t.tolist())
    assert math.isclose(variant(f_s, f_t).item(), expected, rel_tol=1e-9)


def test_degenerate_batches_stay_finite():
    torch.manual_seed(0)
    loss = ITLoss(it_opt())
    assert loss(torch.randn(1, 4), torch.randn(1, 6)).item() == 0.0  # no batch statistics for one sample
    f_t = torch.randn(6, 6)
    f_t[:, 2] = 0.0  # a channel dead over the whole batch (std 0: NaN in the reference)
    value = loss(torch.randn(6, 4), f_t)
    assert math.isfinite(value.item())


def test_gradients_reach_student_and_projection_not_teacher():
    check_one_step("itrd", student_arch="resnet8x4", teacher_arch="resnet20")  # 256 -> 64
    method = build_method("itrd", *nets())
    assert {n for n, _ in method.named_parameters()} == {"criterion.embed.linear.weight", "criterion.embed.linear.bias"}


def test_spec_defaults_and_flags():
    spec = get_method("itrd")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    assert spec.aliases == () and not spec.needs_contrast and not spec.preact
    import train_student

    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "itrd"])
    assert (opt.itrd_alpha, opt.lambda_corr, opt.lambda_mutual) == (1.01, 2.0, 1.0)
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "itrd", "--alpha_it", "1.5"])
    assert opt.itrd_alpha == 1.5  # the official code's flag name


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="itrd_alpha"):
        build_method("itrd", *nets(), itrd_alpha=0.0)


def test_end_to_end_distillers_variant_with_kd(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "itrd", "--lambda_corr", "1", "--lambda_mutual", "1", "--itrd_alpha", "1.5",
              "-a", "1")
