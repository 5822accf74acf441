"""FT (--distill factor / ft): factor loss and reconstruction by hand, paraphraser init stage,
frozen paraphraser and trainable translator in the main stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from init_stage_checks import assert_init_gradients, check_two_stage_e2e, init_step
from method_checks import batch_of, build_method, check_one_step, nets

from distiller_zoo import FactorTransfer, get_method


def factor_loss_by_hand(f_s: torch.Tensor, f_t: torch.Tensor) -> float:
    """Average-pool the larger map to the smaller one's size; per sample, mean over channels of f^2 at
    every position, divided by that map's L2 norm; mean |difference| over samples and positions."""
    f_s, f_t = f_s.double().numpy(), f_t.double().numpy()

    def pool(f: np.ndarray, size: int) -> np.ndarray:
        k = f.shape[2] // size
        out = np.zeros(f.shape[:2] + (size, size))
        for i in range(size):
            for j in range(size):
                out[:, :, i, j] = f[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k].mean(axis=(2, 3))
        return out

    size = min(f_s.shape[2], f_t.shape[2])
    f_s, f_t = pool(f_s, size), pool(f_t, size)
    total, count = 0.0, 0
    for b in range(f_s.shape[0]):
        a_s = np.array([[np.mean(f_s[b, :, i, j] ** 2) for j in range(size)] for i in range(size)]).ravel()
        a_t = np.array([[np.mean(f_t[b, :, i, j] ** 2) for j in range(size)] for i in range(size)]).ravel()
        a_s, a_t = a_s / np.sqrt(np.sum(a_s**2)), a_t / np.sqrt(np.sum(a_t**2))
        total += np.abs(a_s - a_t).sum()
        count += a_s.size
    return total / count


def test_factor_loss_matches_hand_computation():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4)
    crit = FactorTransfer()
    assert crit(f_s, f_t).item() == pytest.approx(factor_loss_by_hand(f_s, f_t), rel=1e-5)
    assert crit(f_t, f_s).item() == pytest.approx(factor_loss_by_hand(f_t, f_s), rel=1e-5)


def test_init_stage_reconstructs_teacher_map_with_paraphraser_only():
    step = init_step("factor", "resnet8", "resnet14", model_s="resnet8")
    assert step.stage.modules == [step.method.paraphraser]
    assert step.stage.student_trunk is False
    f_t = step.batch.feat_t[-2].detach()
    with torch.no_grad():
        rec = step.method.paraphraser.decoder(step.method.paraphraser.encoder(f_t))
    expected = ((rec.double() - f_t.double()) ** 2).sum().item() / f_t.numel()
    assert step.loss.item() == pytest.approx(expected, rel=1e-5)
    assert_init_gradients(step)
    assert all(p.grad is None for p in step.method.translator.parameters())


@pytest.mark.parametrize(
    ("student_arch", "learning_rate", "init_lr"),
    [("resnet8", 0.05, 0.01), ("wrn_16_1", 0.05, 0.01), ("vgg8", 0.07, 0.07), ("MobileNetV2", 0.02, 0.02)],
)
def test_init_lr_as_repdistiller(student_arch, learning_rate, init_lr):
    student, teacher = nets(student_arch, "resnet14")
    method = build_method("factor", student, teacher, learning_rate=learning_rate, model_s=student_arch)
    assert method.init_stage(student).lr == init_lr


def test_main_stage_trains_translator_only_and_freezes_paraphraser():
    method = build_method("factor", *nets("resnet8", "resnet14"), model_s="resnet8")
    params = list(method.main_parameters())
    assert {id(p) for p in params} == {id(p) for p in method.translator.parameters()}
    method.train()
    assert method.translator.training and not method.paraphraser.training
    f_s, f_t = torch.randn(2, 64, 4, 4), torch.randn(2, 64, 4, 4)
    method(batch_of([f_s, f_s.mean((2, 3))], [f_t, f_t.mean((2, 3))]))
    assert all(not p.requires_grad for p in method.paraphraser.parameters())


def test_main_gradients_reach_translator_not_teacher():
    check_one_step("factor", "resnet8", "resnet14", model_s="resnet8")


def test_main_loss_value_by_hand():
    method = build_method("factor", *nets("resnet8", "resnet14"), model_s="resnet8")
    method.eval()
    torch.manual_seed(1)
    f_s, f_t = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 4, 4)
    got = method(batch_of([f_s, f_s.mean((2, 3))], [f_t, f_t.mean((2, 3))]))
    with torch.no_grad():
        expected = factor_loss_by_hand(method.translator(f_s), method.paraphraser.encoder(f_t))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert all(p.grad is None for p in method.paraphraser.parameters())
    assert all(p.grad is not None for p in method.translator.parameters())


def test_spec_defaults():
    spec = get_method("factor")
    assert get_method("ft") is spec
    assert spec.preact is False
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 200.0)


def test_end_to_end(run_student, tmp_path):
    [main] = check_two_stage_e2e(run_student, tmp_path, "factor", init_lr=0.01)  # resnet8 student: 0.01
    assert main["loss_kd"] > 0.0
