"""--logit_standardization: the z-scored logits and the standardised KD by hand, the invariance it buys, the
KD criterion every method receives, the flag's path from the command line, and a run."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext

import pytest
import torch
from conftest import TINY_DATA
from method_checks import build_method, check_e2e, nets

import train_student
from distiller_zoo.KD import DistillKL
from distiller_zoo.logit_std import EPS, logit_standardize
from distiller_zoo.registry import Weights, get_method
from helper.objectives import DistillObjective
from helper.setup import setup_runtime
from helper.teacher import FrozenTeacher


def standardized_by_hand(row: list[float]) -> list[float]:
    n = len(row)
    mean = sum(row) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / (n - 1))  # unbiased, as torch.std
    return [(v - mean) / (std + EPS) for v in row]


def kd_by_hand(z_s: list[list[float]], z_t: list[list[float]], T: float) -> float:
    """T^2 * mean over rows of sum_k p_t (log p_t - log p_s) on standardised rows."""
    total = 0.0
    for row_s, row_t in zip(z_s, z_t, strict=True):
        row_s, row_t = standardized_by_hand(row_s), standardized_by_hand(row_t)
        norm_s = sum(math.exp(v / T) for v in row_s)
        norm_t = sum(math.exp(v / T) for v in row_t)
        for a, b in zip(row_s, row_t, strict=True):
            p_s, p_t = math.exp(a / T) / norm_s, math.exp(b / T) / norm_t
            total += p_t * (math.log(p_t) - math.log(p_s))
    return T * T * total / len(z_s)


def test_standardized_logits_match_hand_computation():
    torch.manual_seed(0)
    z = torch.randn(4, 7) * 3 + 2
    got = logit_standardize(z)
    for row_got, row in zip(got.tolist(), z.tolist(), strict=True):
        assert row_got == pytest.approx(standardized_by_hand(row), rel=1e-5, abs=1e-6)
    assert logit_standardize(z.to(torch.bfloat16)).dtype == torch.float32
    assert torch.isfinite(logit_standardize(torch.ones(2, 5))).all()  # a constant row: zeros, not NaN


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_standardized_kd_matches_hand_computation_and_ignores_logit_scale(T):
    torch.manual_seed(1)
    z_s, z_t = torch.randn(3, 6) * 4, torch.randn(3, 6) * 2
    kd = DistillKL(T, standardize=True)
    assert kd(z_s, z_t).item() == pytest.approx(kd_by_hand(z_s.tolist(), z_t.tolist(), T), rel=1e-5)
    # what standardisation is for: the student's logit scale and shift no longer matter (per row)
    scale, shift = torch.tensor([[0.5], [3.0], [10.0]]), torch.tensor([[1.0], [-4.0], [7.0]])
    assert kd(z_s * scale + shift, z_t).item() == pytest.approx(kd(z_s, z_t).item(), rel=1e-4)
    assert DistillKL(T)(z_s * 3.0, z_t).item() != pytest.approx(DistillKL(T)(z_s, z_t).item(), rel=1e-3)


def test_every_method_gets_the_standardised_kd_criterion():
    """The objective's KD criterion, handed to each method as ``kd`` and used for the -a term, standardises."""
    student, teacher = nets()
    spec = get_method("kd")
    method = build_method("kd", student, teacher)
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    objective = DistillObjective(student, frozen, method, spec, Weights(0.0, 1.0, 0.0), 2.0, nullcontext,
                                 logit_standardization=True)
    assert objective.criterion_div.standardize and objective.criterion_div.T == 2.0
    x = torch.randn(4, 3, 16, 16)
    student.train()
    logit_s, _, total = objective([x, torch.tensor([0, 1, 2, 3])])
    with torch.no_grad():
        logit_t = teacher(x)
    assert total.item() == pytest.approx(kd_by_hand(logit_s.tolist(), logit_t.tolist(), 2.0), rel=1e-5)


def test_flag_reaches_the_objective(tmp_path, monkeypatch):
    from dataset import build_data
    from models import build_model

    monkeypatch.chdir(tmp_path)
    opt, spec = train_student.parse_option([*TINY_DATA, "--path_t", "t.pth", "--model_t", "resnet20",
                                            "--logit_standardization"])
    rt = setup_runtime(opt)
    bundle = build_data(opt)
    student, teacher = build_model("resnet8", 10), build_model("resnet20", 10)
    method = train_student.build_method(spec, student, teacher, opt, bundle)
    stage = train_student.make_stages(opt, spec, student, student, teacher, method, rt)[-1]
    assert stage.objective.criterion_div.standardize
    opt, _ = train_student.parse_option([*TINY_DATA, "--path_t", "t.pth", "--model_t", "resnet20"])
    assert opt.logit_standardization is False


def test_end_to_end(run_student, tmp_path):
    """The reference's KD recipe with standardisation: CE 0.1, KD 9, base temperature 2."""
    check_e2e(run_student, tmp_path, "kd", "--logit_standardization", "-r", "0.1", "-a", "9", "--kd_T", "2")
    (config,) = (tmp_path / "save").rglob("config.json")
    assert json.loads(config.read_text())["options"]["logit_standardization"] is True


@pytest.mark.parametrize("name", ["dkd", "dist"])
def test_logit_methods_read_the_flag_and_become_scale_and_shift_invariant(name):
    """With the flag, DKD's and DIST's terms see z-scored logits: rescaling and shifting each student row
    leaves them unchanged (without it, they change)."""
    from distiller_zoo.registry import DistillBatch

    student, teacher = nets()
    on = build_method(name, student, teacher, logit_standardization=True)
    off = build_method(name, student, teacher, logit_standardization=False)
    torch.manual_seed(0)
    z_s, z_t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    scale, shift = torch.rand(6, 1) * 3 + 0.5, torch.randn(6, 1) * 5
    batch = lambda s, t=z_t: DistillBatch([], [], s, t, y, epoch=100, epochs=100)  # noqa: E731
    assert on(batch(z_s)).item() == pytest.approx(on(batch(z_s * scale + shift)).item(), rel=1e-4)
    by_hand = off(batch(logit_standardize(z_s), logit_standardize(z_t))).item()
    assert on(batch(z_s)).item() == pytest.approx(by_hand, rel=1e-5)
    assert off(batch(z_s)).item() != pytest.approx(off(batch(z_s * scale + shift)).item(), rel=1e-3)


def test_mlld_reads_the_flag():
    student, teacher = nets()
    assert build_method("mlld", student, teacher, logit_standardization=True).standardize
    assert not build_method("mlld", student, teacher).standardize
