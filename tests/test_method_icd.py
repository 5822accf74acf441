"""ICD (DCD): the loss by hand, the learnt scale's clamp, the inert bias, the fixed-temperature variant,
gradients, defaults and alias, the scalars saved and restored exactly, real runs."""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, nets

from distiller_zoo import DCDLoss, ICDLoss
from distiller_zoo.registry import DistillBatch, get_method


def icd_opt(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"s_dim": 5, "t_dim": 7, "feat_dim": 4, "nce_t": 0.07, **kw})


def embed_by_hand(linear: torch.nn.Linear, f: np.ndarray) -> list[list[float]]:
    w, b = linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()
    rows = []
    for x in f:
        y = [sum(w[o, i] * x[i] for i in range(len(x))) + b[o] for o in range(len(b))]
        norm = math.sqrt(sum(v * v for v in y))
        rows.append([v / norm for v in y])
    return rows


def icd_by_hand(loss: DCDLoss, f_s: np.ndarray, f_t: np.ndarray, scale: float, bias: float) -> float:
    """CE of each row against its own column, plus alpha * KL(column-softmax^T || row-softmax), batchmean."""
    v_s, v_t = embed_by_hand(loss.embed_s, f_s), embed_by_hand(loss.embed_t, f_t)
    n = len(v_s)
    logit = [[scale * sum(a * b for a, b in zip(v_s[i], v_t[j], strict=True)) + bias for j in range(n)]
             for i in range(n)]
    row_lse = [math.log(sum(math.exp(logit[i][j]) for j in range(n))) for i in range(n)]
    col_lse = [math.log(sum(math.exp(logit[i][j]) for i in range(n))) for j in range(n)]
    ce = sum(row_lse[i] - logit[i][i] for i in range(n)) / n
    kl = 0.0
    for i in range(n):
        for j in range(n):
            log_q = logit[j][i] - col_lse[i]  # column-softmax, transposed
            log_p = logit[i][j] - row_lse[i]
            kl += math.exp(log_q) * (log_q - log_p)
    return ce + loss.alpha * kl / n


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    loss = DCDLoss(icd_opt()).double()
    with torch.no_grad():
        loss.params.tau.fill_(0.7)
        loss.params.b.fill_(-0.3)
    f_s, f_t = torch.randn(5, 5, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    got = loss(f_s, f_t).item()
    assert math.isclose(got, icd_by_hand(loss, f_s.numpy(), f_t.numpy(), math.exp(0.7), -0.3), rel_tol=1e-10)


def test_scale_is_clamped_and_stops_learning_at_the_cap():
    torch.manual_seed(0)
    loss = DCDLoss(icd_opt(), init_tau=3.0).double()  # exp(3) = 20 > 10
    f_s, f_t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    value = loss(f_s, f_t)
    assert math.isclose(value.item(), icd_by_hand(loss, f_s.numpy(), f_t.numpy(), 10.0, 0.0), rel_tol=1e-10)
    value.backward()
    assert loss.params.tau.grad.item() == 0.0


def test_bias_shifts_every_logit_and_changes_nothing():
    torch.manual_seed(0)
    loss = DCDLoss(icd_opt()).double()
    f_s, f_t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    before = loss(f_s, f_t).item()
    with torch.no_grad():
        loss.params.b.fill_(4.0)
    after = loss(f_s, f_t)
    assert math.isclose(before, after.item(), rel_tol=1e-12)
    after.backward()
    assert abs(loss.params.b.grad.item()) < 1e-12
    assert loss.params.tau.grad.abs().item() > 0


def test_fixed_temperature_divides_by_nce_t():
    torch.manual_seed(0)
    loss = DCDLoss(icd_opt(nce_t=0.25), trainable=False).double()
    assert not loss.params.tau.requires_grad and not loss.params.b.requires_grad
    f_s, f_t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    expected = icd_by_hand(loss, f_s.numpy(), f_t.numpy(), 1 / 0.25, 0.0)
    assert math.isclose(loss(f_s, f_t).item(), expected, rel_tol=1e-10)


def test_both_reference_names_and_state_keys():
    assert issubclass(ICDLoss, DCDLoss)
    loss = ICDLoss(icd_opt(), max_tau=5.0, alpha=0.25, init_tau=0.5, init_b=0.1)
    assert (loss.max_tau, loss.alpha, loss.params.tau.item(), loss.params.b.item()) == (5.0, 0.25, 0.5,
                                                                                        pytest.approx(0.1))
    assert set(loss.state_dict()) == {"params.tau", "params.b", "embed_s.weight", "embed_s.bias",
                                      "embed_t.weight", "embed_t.bias"}


def test_trainable_embeddings_and_scalars():
    student, teacher = nets()
    method = build_method("icd", student, teacher, feat_dim=8)
    names = {n for n, p in method.named_parameters() if p.requires_grad}
    assert names == {"criterion.params.tau", "criterion.params.b"} | {
        f"criterion.embed_{s}.{p}" for s in "st" for p in ("weight", "bias")}
    assert method.criterion.embed_s.in_features == 64 and method.criterion.embed_s.out_features == 8


def test_trained_scalars_are_restored_exactly():
    torch.manual_seed(0)
    loss = DCDLoss(icd_opt())
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        loss(torch.randn(4, 5), torch.randn(4, 7)).backward()
        optimizer.step()
    assert loss.params.tau.item() != 1.0
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    restored = DCDLoss(icd_opt())
    restored.load_state_dict(torch.load(buffer))
    for key, value in loss.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    f_s, f_t = torch.randn(4, 5), torch.randn(4, 7)
    assert torch.equal(loss(f_s, f_t), restored(f_s, f_t))


def test_spec_defaults_and_alias():
    spec = get_method("icd")
    assert get_method("dcd") is spec and spec.aliases == ("dcd",)
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    assert not spec.preact and not spec.needs_contrast and spec.uses_features


def test_teacher_features_are_detached():
    student, teacher = nets()
    method = build_method("icd", student, teacher)
    f_t = torch.randn(4, 64, requires_grad=True)
    f_s = torch.randn(4, 64, requires_grad=True)
    logits = torch.zeros(4, 10)
    method(DistillBatch([f_s], [f_t], logits, logits, torch.zeros(4, dtype=torch.long))).backward()
    assert f_t.grad is None and f_s.grad is not None


def test_end_to_end_with_kd_and_the_scalars_are_saved_with_the_run(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "dcd", "-a", "1", "-b", "1")
    (last,) = (tmp_path / "save").rglob("ckpt_last.pth")
    assert "_icd_r:" in last.parent.name  # the alias resolves to icd
    extra = torch.load(last, weights_only=False)["extra"]
    assert extra["criterion.params.tau"].item() != 1.0  # trained, and saved for resume
