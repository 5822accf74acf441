"""AB (--distill abound / ab): margin loss by hand, init stage contents and gradients, zero main term."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from init_stage_checks import assert_init_gradients, assert_zero_main_term, check_two_stage_e2e, init_step
from method_checks import build_method, nets

from distiller_zoo import ABLoss, get_method


def ab_by_hand(g_s: list[torch.Tensor], g_t: list[torch.Tensor], margin: float = 1.0) -> list[float]:
    """Element by element: (s+m)^2 where the teacher is off and s > -m, (s-m)^2 where it is on and s <= m;
    position i of n weighted 2^(i-n+1), everything times 3 / (1000 B)."""
    n, bsz = len(g_s), g_s[0].shape[0]
    out = []
    for i, (s_map, t_map) in enumerate(zip(g_s, g_t, strict=True)):
        total = 0.0
        for s, t in zip(s_map.double().flatten().tolist(), t_map.double().flatten().tolist(), strict=True):
            if t <= 0 and s > -margin:
                total += (s + margin) ** 2
            if t > 0 and s <= margin:
                total += (s - margin) ** 2
        out.append(2.0 ** (i - n + 1) * total * 3 / (1000 * bsz))
    return out


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    g_s = [2 * torch.randn(3, 4, 4, 4), 2 * torch.randn(3, 6, 2, 2), 2 * torch.randn(3, 5, 1, 1)]
    g_t = [torch.randn_like(g) for g in g_s]
    g_t[0][0, 0, 0, 0] = 0.0  # a teacher exactly at zero counts as off
    for margin in (1.0, 2.0):
        got = ABLoss(len(g_s), margin=margin)(g_s, g_t)
        assert len(got) == 3
        np.testing.assert_allclose([v.item() for v in got], ab_by_hand(g_s, g_t, margin), rtol=1e-5)


def test_init_stage_trains_connector_and_trunk_at_learning_rate():
    student, teacher = nets("resnet8", "resnet8x4")
    method = build_method("abound", student, teacher, learning_rate=0.07)
    stage = method.init_stage(student)
    assert stage.modules == [method.connector]
    assert stage.lr == 0.07
    assert stage.student_trunk is True
    # resnet8 (16/32/64 ch) -> resnet8x4 (64/128/256 ch): one conv+BN connector per stage, no ReLU
    assert len(method.connector.connectors) == 3
    assert all(not getattr(c, "use_relu", True) for c in method.connector.connectors)


def test_identity_connector_and_init_loss_by_hand():
    step = init_step("abound", "resnet8", "resnet14")
    assert list(step.method.connector.parameters()) == []  # same widths and sizes: identity
    expected = sum(ab_by_hand(step.batch.feat_s[1:-1], step.batch.feat_t[1:-1]))
    assert step.loss.item() == pytest.approx(expected, rel=1e-5)


def test_init_gradients_reach_connector_and_trunk_not_teacher():
    step = init_step("abound", "resnet8", "resnet8x4")
    assert len(list(step.method.connector.parameters())) > 0
    assert_init_gradients(step)
    assert step.student.fc.weight.grad is None  # only the trunk, never the classifier


def test_main_stage_term_is_zero_and_trains_nothing():
    step = init_step("abound", "resnet8", "resnet14")
    assert_zero_main_term(step.method, step.batch)


def test_stage_count_mismatch_is_one_line_value_error():
    with pytest.raises(ValueError, match="stage") as info:
        build_method("abound", *nets("resnet8", "vgg8"))
    assert "\n" not in str(info.value)


def test_spec_defaults():
    spec = get_method("abound")
    assert get_method("ab") is spec
    assert spec.preact is True
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)


def test_end_to_end(run_student, tmp_path):
    [main] = check_two_stage_e2e(run_student, tmp_path, "abound", init_lr=0.05)
    assert main["loss_kd"] == 0.0
