"""FSP (--distill fsp): FSP matrices and loss by hand, channel checks, init stage on the student trunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from init_stage_checks import assert_init_gradients, assert_zero_main_term, check_two_stage_e2e, init_step
from method_checks import build_method, nets

from distiller_zoo import FSP, get_method


def fsp_matrix_by_hand(bot: np.ndarray, top: np.ndarray) -> np.ndarray:
    """G[b, k, j] = average over positions of bot[b, j] * top[b, k], the larger map average-pooled first."""
    size = min(bot.shape[2], top.shape[2])

    def pool(f: np.ndarray) -> np.ndarray:
        k = f.shape[2] // size
        return f.reshape(f.shape[0], f.shape[1], size, k, size, k).mean(axis=(3, 5))

    bot, top = pool(bot), pool(top)
    g = np.zeros((bot.shape[0], top.shape[1], bot.shape[1]))
    for b in range(bot.shape[0]):
        for k in range(top.shape[1]):
            for j in range(bot.shape[1]):
                g[b, k, j] = np.mean(bot[b, j] * top[b, k])
    return g


def fsp_by_hand(g_s: list[torch.Tensor], g_t: list[torch.Tensor]) -> list[float]:
    s = [f.detach().double().numpy() for f in g_s]
    t = [f.detach().double().numpy() for f in g_t]
    return [
        float(np.mean((fsp_matrix_by_hand(s[i], s[i + 1]) - fsp_matrix_by_hand(t[i], t[i + 1])) ** 2))
        for i in range(len(s) - 1)
    ]


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    g_s = [torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 5, 4, 4), torch.randn(2, 2, 2, 2)]
    g_t = [torch.randn(2, 3, 4, 4), torch.randn(2, 4, 8, 8), torch.randn(2, 5, 2, 2), torch.randn(2, 2, 2, 2)]
    crit = FSP([g.shape for g in g_s], [g.shape for g in g_t])
    got = crit(g_s, g_t)
    assert len(got) == 3
    np.testing.assert_allclose([v.item() for v in got], fsp_by_hand(g_s, g_t), rtol=1e-5)
    matrices = FSP.compute_fsp(g_s)
    np.testing.assert_allclose(
        matrices[1].numpy(), fsp_matrix_by_hand(g_s[1].double().numpy(), g_s[2].double().numpy()), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("s_shapes", "t_shapes", "match"),
    [
        ([(2, 16, 8, 8), (2, 32, 4, 4)], [(2, 16, 8, 8), (2, 64, 4, 4)], "channel"),
        ([(2, 16, 8, 8), (2, 32, 4, 4)], [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)], "one to one"),
    ],
)
def test_mismatched_maps_are_one_line_value_errors(s_shapes, t_shapes, match):
    with pytest.raises(ValueError, match=match) as info:
        FSP(s_shapes, t_shapes)
    assert "\n" not in str(info.value)


def test_build_refuses_different_widths():
    with pytest.raises(ValueError, match="channel") as info:
        build_method("fsp", *nets("resnet8", "resnet8x4"))
    assert "\n" not in str(info.value)


def test_init_stage_trains_student_trunk_only_at_learning_rate():
    step = init_step("fsp", "resnet8", "resnet14", learning_rate=0.07)
    assert step.stage.modules == []
    assert step.stage.student_trunk is True
    assert step.stage.lr == 0.07
    expected = sum(fsp_by_hand(step.batch.feat_s[:-1], step.batch.feat_t[:-1]))
    assert step.loss.item() == pytest.approx(expected, rel=1e-5)
    assert_init_gradients(step)
    assert step.student.fc.weight.grad is None


def test_main_stage_term_is_zero_and_trains_nothing():
    step = init_step("fsp", "resnet8", "resnet14")
    assert_zero_main_term(step.method, step.batch)


def test_spec_defaults():
    spec = get_method("fsp")
    assert spec.preact is False
    assert spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 50.0)


def test_end_to_end(run_student, tmp_path):
    [main] = check_two_stage_e2e(run_student, tmp_path, "fsp", init_lr=0.05)
    assert main["loss_kd"] == 0.0


def test_end_to_end_width_mismatch_is_one_line(run_student):
    proc = run_student("--distill", "fsp", "--model_s", "resnet8x4", check=False)
    assert proc.returncode == 2
    assert "channel" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
