"""SRRL: the loss by hand, the teacher's classifier reused frozen (whatever its name), gradients, defaults, a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.registry import DistillBatch, get_method
from distiller_zoo.SRRL import SRRL


def srrl_by_hand(srrl: SRRL, cls_t: torch.nn.Linear, f_s: np.ndarray, f_t: np.ndarray, z_t: np.ndarray) -> float:
    """Loops: the 1x1 conv as a dot product per output channel, train-mode BN (batch mean, biased variance)."""
    w = srrl.transfer[0].weight.detach().double().numpy()[:, :, 0, 0]
    bn = srrl.transfer[1]
    gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    wc, bc = cls_t.weight.detach().double().numpy(), cls_t.bias.detach().double().numpy()
    b, t_n = f_s.shape[0], w.shape[0]
    pre = [[sum(w[c, k] * f_s[n, k] for k in range(f_s.shape[1])) for c in range(t_n)] for n in range(b)]
    h = [[0.0] * t_n for _ in range(b)]
    for c in range(t_n):
        mean = sum(pre[n][c] for n in range(b)) / b
        var = sum((pre[n][c] - mean) ** 2 for n in range(b)) / b
        for n in range(b):
            h[n][c] = max(gamma[c] * (pre[n][c] - mean) / math.sqrt(var + bn.eps) + beta[c], 0.0)
    feat = sum((h[n][c] - f_t[n, c]) ** 2 for n in range(b) for c in range(t_n)) / (b * t_n)
    k = wc.shape[0]
    logits = [[sum(wc[j, c] * h[n][c] for c in range(t_n)) + bc[j] for j in range(k)] for n in range(b)]
    soft = sum((logits[n][j] - z_t[n, j]) ** 2 for n in range(b) for j in range(k)) / (b * k)
    return feat + soft


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    student, teacher = nets()
    method = build_method("srrl", student, teacher)
    method.train()
    f_s, f_t, z_t = torch.randn(5, 64), torch.rand(5, 64), torch.randn(5, 10)
    batch = DistillBatch([f_s], [f_t], torch.zeros(5, 10), z_t, torch.zeros(5, dtype=torch.long))
    got = method(batch).item()
    want = srrl_by_hand(method.srrl, method.cls_t, f_s.double().numpy(), f_t.double().numpy(), z_t.double().numpy())
    assert math.isclose(got, want, rel_tol=1e-5)


def test_reference_module_signature():
    srrl = SRRL(s_n=3, t_n=5)
    cls_t = torch.nn.Linear(5, 7)
    trans, pred = srrl(torch.randn(4, 3), cls_t)
    assert trans.shape == (4, 5) and torch.allclose(pred, cls_t(trans))
    assert [type(m) for m in srrl.transfer] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    assert srrl.transfer[0].bias is None and srrl.transfer[0].kernel_size == (1, 1)


@pytest.mark.parametrize(("student", "teacher", "name"), [
    ("resnet8", "resnet20", "fc"), ("resnet8", "vgg8", "classifier"), ("vgg8", "MobileNetV2", "classifier.0")])
def test_teacher_classifier_is_a_frozen_copy(student, teacher, name):
    s, t = nets(student, teacher)
    method = build_method("srrl", s, t, size=32)
    original = t.get_submodule(name)
    assert method.cls_t is not original
    assert torch.equal(method.cls_t.weight, original.weight) and torch.equal(method.cls_t.bias, original.bias)
    assert not any(p.requires_grad for p in method.cls_t.parameters())
    trainable = {id(p) for p in method.main_parameters()}
    assert trainable == {id(p) for p in method.srrl.parameters()}
    assert method.srrl.transfer[0].in_channels == s(torch.randn(2, 3, 32, 32), is_feat=True)[0][-1].shape[1]


def test_gradients_reach_student_and_transfer_not_teacher():
    check_one_step("srrl")
    check_one_step("srrl", "vgg8", "resnet32x4", size=32)


def test_no_gradient_reaches_the_teacher_classifier_copy():
    student, teacher = nets()
    method = build_method("srrl", student, teacher)
    method.train()
    feats, logits = student(torch.randn(4, 3, 16, 16), is_feat=True)
    with torch.no_grad():
        feat_t, logit_t = teacher(torch.randn(4, 3, 16, 16), is_feat=True)
    method(DistillBatch(feats, feat_t, logits, logit_t, torch.zeros(4, dtype=torch.long))).backward()
    assert all(p.grad is None for p in method.cls_t.parameters())
    assert method.srrl.transfer[0].weight.grad.abs().sum() > 0


def test_a_batch_of_one_is_skipped():
    method = build_method("srrl", *nets())
    one, two = [torch.randn(1, 3, 16, 16), torch.tensor([3])], [torch.randn(2, 3, 16, 16), torch.tensor([3, 1])]
    assert method.prepare_batch(one) is None and method.prepare_batch(two) is two
    method.train()
    with pytest.raises(ValueError):  # what a batch of one would do to the transfer's BatchNorm
        method.srrl(torch.randn(1, 64), method.cls_t)


def test_spec_defaults():
    spec = get_method("srrl")
    assert spec.name == "srrl" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 1.0, 1.0)
    assert not spec.preact and spec.uses_features


def test_end_to_end(run_student, tmp_path):
    rows = check_e2e(run_student, tmp_path, "srrl")
    assert rows[0]["loss_kd"] > 0 and rows[0]["loss_div"] > 0
