"""Logits (mimic learning): the loss by hand, gradients, defaults, a run combined with KD."""

from __future__ import annotations

import math

import pytest
import torch
from method_checks import check_e2e, check_one_step

from distiller_zoo.Logits import Logits
from distiller_zoo.registry import get_method


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    z_s, z_t = torch.randn(3, 5), torch.randn(3, 5) * 4
    total = 0.0
    for b in range(3):
        for k in range(5):
            total += (z_s[b, k].item() - z_t[b, k].item()) ** 2
    assert math.isclose(Logits()(z_s, z_t).item(), total / 15, rel_tol=1e-6)
    # bf16 logits are scored in float32
    assert Logits()(z_s.bfloat16(), z_t.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize(("student", "teacher"), [("resnet8", "resnet20"), ("wrn_16_2", "wrn_40_2")])
def test_gradients_reach_student_not_teacher(student, teacher):
    check_one_step("logits", student, teacher)


def test_spec_defaults():
    spec = get_method("logits")
    assert spec.name == "logits" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 0.1)
    assert not spec.uses_features and not spec.preact


def test_end_to_end_with_kd(run_student, tmp_path):
    rows = check_e2e(run_student, tmp_path, "logits", "-a", "0.5")
    assert rows[-1]["loss_div"] > 0 and rows[-1]["loss_kd"] > 0
