"""DKD: TCKD and NCKD by hand, the warm-up, mdistiller's per-pair settings and the flags over them,
gradients, the defaults through the trainer's objective, a real run."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from method_checks import build_method, check_e2e, nets

import train_student
from distiller_zoo.DKD import DKD, DKD_CONFIGS, DKDConfig, dkd_config, dkd_loss
from distiller_zoo.registry import DistillBatch, Weights, get_method
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher


def softmax_by_hand(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl_by_hand(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def tckd_nckd_by_hand(z_s: list[list[float]], z_t: list[list[float]], y: list[int], t: float) -> tuple[float, float]:
    """The paper's definitions: binary [p_y, 1 - p_y] and the non-target classes renormalised."""
    tckd = nckd = 0.0
    for zs, zt, label in zip(z_s, z_t, y, strict=True):
        p_s, p_t = softmax_by_hand(zs, t), softmax_by_hand(zt, t)
        tckd += kl_by_hand([p_t[label], 1 - p_t[label]], [p_s[label], 1 - p_s[label]])
        rest_s = [p / (1 - p_s[label]) for k, p in enumerate(p_s) if k != label]
        rest_t = [p / (1 - p_t[label]) for k, p in enumerate(p_t) if k != label]
        nckd += kl_by_hand(rest_t, rest_s)
    return t * t * tckd / len(y), t * t * nckd / len(y)


def logits(seed: int = 0, n: int = 6, k: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    z_t = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    return z_s, z_t, torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_tckd_and_nckd_match_hand_computation(t):
    z_s, z_t, y = logits()
    tckd, nckd = tckd_nckd_by_hand(z_s.tolist(), z_t.tolist(), y.tolist(), t)
    assert math.isclose(dkd_loss(z_s, z_t, y, 1.0, 0.0, t).item(), tckd, rel_tol=1e-5)
    assert math.isclose(dkd_loss(z_s, z_t, y, 0.0, 1.0, t).item(), nckd, rel_tol=1e-5)
    assert math.isclose(dkd_loss(z_s, z_t, y, 2.0, 8.0, t).item(), 2 * tckd + 8 * nckd, rel_tol=1e-5)


def test_kd_decomposes_into_tckd_and_weighted_nckd():
    """The paper's Eq. (5): per sample, KD = TCKD + (1 - p_t of the label) * NCKD."""
    z_s, z_t, y = logits(1, n=1, k=7)
    t = 2.0
    p_s, p_t = softmax_by_hand(z_s[0].tolist(), t), softmax_by_hand(z_t[0].tolist(), t)
    kd = t * t * kl_by_hand(p_t, p_s)
    tckd = dkd_loss(z_s, z_t, y, 1.0, 0.0, t).item()
    nckd = dkd_loss(z_s, z_t, y, 0.0, 1.0, t).item()
    assert math.isclose(kd, tckd + (1 - p_t[y.item()]) * nckd, rel_tol=1e-5)


def test_float32_and_bf16_logits_stay_finite():
    z_s, z_t, y = logits(2, n=8, k=100)
    z_s = (z_s * 10).bfloat16()
    loss = dkd_loss(z_s, (z_t * 10).float(), y, 1.0, 8.0, 4.0)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_linear_warm_up_on_the_one_based_epoch():
    z_s, z_t, y = logits(3)
    method = DKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=20)
    full = dkd_loss(z_s, z_t, y, 1.0, 8.0, 4.0).item()
    for epoch, ramp in ((1, 1 / 20), (10, 0.5), (20, 1.0), (240, 1.0)):
        batch = DistillBatch([], [], z_s, z_t, y, epoch=epoch, epochs=240)
        assert math.isclose(method(batch).item(), ramp * full, rel_tol=1e-6)
    no_warmup = DKD(warmup=0)(DistillBatch([], [], z_s, z_t, y, epoch=1))
    assert math.isclose(no_warmup.item(), full, rel_tol=1e-6)


def test_mdistiller_pair_table():
    assert dkd_config("resnet32x4", "resnet8x4", False) == DKDConfig(1.0, 8.0, 4.0, 20)
    for pair, beta in ((("resnet56", "resnet20"), 2.0), (("resnet110", "resnet32"), 2.0), (("vgg13", "vgg8"), 6.0),
                       (("vgg13", "MobileNetV2"), 6.0), (("wrn_40_2", "wrn_16_2"), 6.0),
                       (("wrn_40_2", "wrn_40_1"), 6.0), (("resnet32x4", "ShuffleV1"), 8.0),
                       (("resnet32x4", "ShuffleV2"), 8.0), (("ResNet50", "MobileNetV2"), 8.0),
                       (("wrn_40_2", "ShuffleV1"), 8.0)):
        assert dkd_config(*pair, False) == DKDConfig(1.0, beta, 4.0, 20), pair
    assert dkd_config("ResNet34", "ResNet18", True) == DKDConfig(1.0, 0.5, 1.0, 1)
    assert dkd_config("ResNet50_Imagenet", "MobileNetV1", True) == DKDConfig(1.0, 2.0, 1.0, 1)
    # unlisted pairs: mdistiller's cfg defaults, or its ImageNet setting on ImageNet
    assert dkd_config("resnet20", "resnet8", False) == DKDConfig(1.0, 8.0, 4.0, 20)
    assert dkd_config("ResNet50_Imagenet", "ResNet18", True) == DKDConfig(1.0, 0.5, 1.0, 1)
    assert len(DKD_CONFIGS) == 13


def test_build_picks_the_pair_and_flags_override():
    student, teacher = nets()
    method = build_method("dkd", student, teacher, model_t="resnet56", model_s="resnet20")
    assert (method.alpha, method.beta, method.temperature, method.warmup) == (1.0, 2.0, 4.0, 20)
    method = build_method("dkd", student, teacher, model_t="resnet56", model_s="resnet20", dkd_beta=3.0, dkd_T=2.0)
    assert (method.alpha, method.beta, method.temperature, method.warmup) == (1.0, 3.0, 2.0, 20)
    method = build_method("dkd", student, teacher, model_t="ResNet34", model_s="ResNet18", dataset="imagenet",
                          dkd_warmup=5)
    assert (method.alpha, method.beta, method.temperature, method.warmup) == (1.0, 0.5, 1.0, 5)
    with pytest.raises(ValueError, match="dkd_beta"):
        build_method("dkd", student, teacher, dkd_beta=-1.0)
    with pytest.raises(ValueError, match="dkd_T"):
        build_method("dkd", student, teacher, dkd_T=0.0)


def test_cli_defaults():
    opt, spec = train_student.parse_option(["--path_t", "t.pth", "--distill", "dkd"])
    assert (opt.gamma, opt.alpha, opt.beta) == (1, 0.0, 1.0)
    assert (opt.dkd_alpha, opt.dkd_beta, opt.dkd_T, opt.dkd_warmup) == (None, None, None, None)
    assert spec.weights == Weights(1.0, 0.0, 1.0) and not spec.uses_features


def test_objective_total_is_mdistillers_loss():
    """-r 1 -a 0 -b 1: the trainer's total is CE + warm-up * dkd_loss, mdistiller's forward_train."""
    spec = get_method("dkd")
    student, teacher = nets()
    method = build_method("dkd", student, teacher, model_t="resnet56", model_s="resnet20")
    objective = DistillObjective(student, FrozenTeacher(teacher.eval().requires_grad_(False), preact=False), method,
                                 spec, spec.weights, 4.0, nullcontext)
    objective.set_epoch(5, 240)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 7, 9])
    student.train()
    logit_s, _, total = objective([x, y])
    with torch.no_grad():
        logit_t = teacher(x)
    expected = torch.nn.functional.cross_entropy(logit_s, y) + 5 / 20 * dkd_loss(logit_s, logit_t, y, 1.0, 2.0, 4.0)
    assert torch.allclose(total, expected, rtol=1e-6)


def test_nothing_to_train():  # the one step every method takes: tests/test_conformance.py
    assert not list(build_method("dkd", *nets()).parameters())


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "dkd", "-a", "1", "--dkd_warmup", "2")


def test_run_folder_names_the_flags_given():
    from helper.naming import student_run_name

    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "dkd", "--model_s", "resnet8x4"])
    assert student_run_name(opt).endswith("_dkd_r:1_a:0.0_b:1.0_1")
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "dkd", "--dkd_beta", "2", "--dkd_T", "3"])
    assert student_run_name(opt).endswith("_b:1.0_dkd_beta:2.0_dkd_T:3.0_1")
