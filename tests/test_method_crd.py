"""CRD: Eq. 18 by hand, the memory (Z, update, save/load, CPU), gradients, the sampler, real runs."""

from __future__ import annotations

import argparse
import copy
import io
import math
import time

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, nets
from scipy.stats import chisquare

import crd.memory
from crd.criterion import ContrastLoss, CRDLoss
from crd.memory import AliasMethod, ContrastMemory
from crd.sampling import _first_occurrence, draw_contrast_indices
from distiller_zoo.registry import DistillBatch, get_method

# --- loss and memory -------------------------------------------------------------------------------


def eq18_by_hand(x: np.ndarray, n_data: int) -> float:
    """-(1/B) [sum_b log(P(D=1|pos)) + sum_b sum_k log(P(D=0|neg_k))], m = K, P_n = 1/N, eps 1e-7."""
    batch, cols = x.shape
    m, pn, eps = cols - 1, 1.0 / n_data, 1e-7
    total = 0.0
    for b in range(batch):
        total += math.log(x[b, 0] / (x[b, 0] + m * pn + eps))
        for k in range(1, cols):
            total += math.log(m * pn / (x[b, k] + m * pn + eps))
    return -total / batch


def test_contrast_loss_matches_eq18():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.01, 3.0, size=(5, 8))
    got = ContrastLoss(n_data=40)(torch.from_numpy(x))
    assert got.dim() == 0
    assert math.isclose(got.item(), eq18_by_hand(x, 40), rel_tol=1e-12)
    # The memory's [B, K+1, 1] output shape gives the same value.
    assert math.isclose(ContrastLoss(40)(torch.from_numpy(x)[..., None]).item(), got.item(), rel_tol=1e-12)


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def memory(n_data: int = 20, dim: int = 6, k: int = 4, T: float = 0.5) -> ContrastMemory:
    torch.manual_seed(0)
    return ContrastMemory(dim, n_data, k, T=T, momentum=0.5).double()


@pytest.fixture(params=["gathered", "dense"])
def score_path(request, monkeypatch):
    """Run a test once with each way of scoring against the bank (the rows gathered, or the whole bank)."""
    monkeypatch.setattr(crd.memory, "DENSE_MAX_RATIO", 0 if request.param == "gathered" else 10**9)
    return request.param


def test_scores_use_the_other_sides_bank_and_z_is_frozen_after_the_first_batch(score_path):
    mem = memory()
    m1, m2 = mem.memory_v1.clone(), mem.memory_v2.clone()
    v1, v2 = unit_rows(3, 6, 1), unit_rows(3, 6, 2)
    y = torch.tensor([0, 5, 9])
    idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [9, 10, 11, 12, 13]])
    out_v1, out_v2 = mem(v1, v2, y, idx)
    assert out_v1.shape == (3, 5, 1)
    raw_v1 = np.array([[math.exp(float(m2[j] @ v1[b]) / 0.5) for j in idx[b]] for b in range(3)])
    raw_v2 = np.array([[math.exp(float(m1[j] @ v2[b]) / 0.5) for j in idx[b]] for b in range(3)])
    z1, z2 = raw_v1.mean() * 20, raw_v2.mean() * 20
    assert np.allclose(out_v1[..., 0].numpy(), raw_v1 / z1, rtol=1e-6)
    assert np.allclose(out_v2[..., 0].numpy(), raw_v2 / z2, rtol=1e-6)
    assert np.allclose(mem.params[2:4].numpy(), [z1, z2], rtol=1e-6)

    # Second batch: Z stays, scores are divided by the first batch's Z.
    m2_now = mem.memory_v2.clone()
    out_v1, _ = mem(v2, v1, torch.tensor([1, 2, 3]), idx)
    assert np.allclose(mem.params[2:4].numpy(), [z1, z2], rtol=1e-6)
    raw = np.array([[math.exp(float(m2_now[j] @ v2[b]) / 0.5) for j in idx[b]] for b in range(3)])
    assert np.allclose(out_v1[..., 0].numpy(), raw / z1, rtol=1e-6)


def test_gathered_and_dense_scores_agree_with_their_gradients(monkeypatch):
    bank = torch.randn(50, 8, dtype=torch.float64)
    idx = torch.randint(0, 50, (4, 7))
    results = []
    for ratio in (0, 10**9):
        monkeypatch.setattr(crd.memory, "DENSE_MAX_RATIO", ratio)
        v = unit_rows(4, 8, 3).requires_grad_(True)
        scores = crd.memory.contrast_scores(bank, v, idx)
        (scores.exp() * torch.arange(7.0, dtype=torch.float64)).sum().backward()
        results.append((scores.detach(), v.grad))
    expected = torch.stack([bank[idx[b]] @ unit_rows(4, 8, 3)[b] for b in range(4)])
    for scores, grad in results:
        assert torch.allclose(scores, expected)
        assert torch.allclose(grad, results[0][1])


def test_memory_update_at_dataset_indices():
    mem = memory()
    m1, m2 = mem.memory_v1.clone(), mem.memory_v2.clone()
    v1, v2 = unit_rows(3, 6, 3), unit_rows(3, 6, 4)
    y = torch.tensor([2, 7, 11])
    idx = torch.tensor([[15, 0, 1, 3, 4]] * 3)  # positives elsewhere: the update must follow y
    mem(v1, v2, y, idx)
    for bank, old, v in ((mem.memory_v1, m1, v1), (mem.memory_v2, m2, v2)):
        for b, i in enumerate(y.tolist()):
            mixed = 0.5 * old[i] + 0.5 * v[b]
            assert torch.allclose(bank[i], mixed / math.sqrt(float((mixed**2).sum())))
        untouched = [i for i in range(20) if i not in y.tolist()]
        assert torch.equal(bank[untouched], old[untouched])


def crd_opt(**kw) -> argparse.Namespace:
    base = {"s_dim": 10, "t_dim": 12, "feat_dim": 8, "n_data": 30, "nce_k": 5, "nce_t": 0.07, "nce_m": 0.5}
    return argparse.Namespace(**{**base, **kw})


def test_state_dict_round_trip_keeps_banks_and_z():
    torch.manual_seed(0)
    crd = CRDLoss(crd_opt())
    f_s, f_t = torch.randn(4, 10), torch.randn(4, 12)
    idx, cidx = torch.tensor([0, 1, 2, 3]), torch.randint(0, 30, (4, 6))
    crd(f_s, f_t, idx, cidx)
    assert (crd.contrast.params[2:4] > 0).all()
    assert set(crd.contrast.state_dict()) == {"params", "memory_v1", "memory_v2"}  # RepDistiller's keys

    buffer = io.BytesIO()
    torch.save(crd.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    restored = CRDLoss(crd_opt())
    restored.load_state_dict(torch.load(buffer))
    for key, value in crd.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    # Z comes back set, so the next batch is scored identically (not re-normalised).
    f_s, f_t = torch.randn(4, 10), torch.randn(4, 12)
    assert torch.equal(crd(f_s, f_t, idx + 4, cidx), restored(f_s, f_t, idx + 4, cidx))
    assert torch.equal(crd.contrast.memory_v1, restored.contrast.memory_v1)


def test_runs_on_cpu_without_contrast_indices():
    torch.manual_seed(0)
    crd = CRDLoss(crd_opt())
    assert crd.contrast.multinomial.alias.device.type == "cpu"
    loss = crd(torch.randn(4, 10), torch.randn(4, 12), torch.tensor([3, 4, 5, 6]))
    assert loss.dim() == 0 and math.isfinite(loss.item())


def test_alias_method_draws_its_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    draws = AliasMethod(probs).draw(40000)
    counts = torch.bincount(draws, minlength=5).numpy()
    assert counts[4] == 0
    assert chisquare(counts[:4], 40000 * probs[:4].numpy()).pvalue > 1e-3


# --- the registered method -------------------------------------------------------------------------


def test_gradients_reach_student_and_both_embeddings_not_teacher():
    student, teacher = nets()
    method = build_method("crd", student, teacher, feat_dim=8, nce_k=5, n_data=64)
    teacher_state = copy.deepcopy(teacher.state_dict())
    student.train()
    method.train()
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    feat_s, logit_s = student(x, is_feat=True)
    feat_t, logit_t = teacher(x, is_feat=True)  # autograd on: only the method may keep grads out
    index = torch.tensor([1, 2, 3, 4])
    batch = DistillBatch(feat_s, feat_t, logit_s, logit_t, torch.zeros(4, dtype=torch.long), index,
                         torch.randint(0, 64, (4, 6)))
    loss = method(batch)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    names = {n for n, _ in method.named_parameters()}
    assert names == {f"criterion.embed_{s}.linear.{p}" for s in "st" for p in ("weight", "bias")}
    for p in method.main_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    assert method.criterion.contrast.memory_v1.shape == (64, 8)


def test_bad_options_are_rejected():
    pair = nets()
    with pytest.raises(ValueError, match="nce_k"):
        build_method("crd", *pair, nce_k=64, n_data=64)
    with pytest.raises(ValueError, match="mode"):
        build_method("crd", *pair, mode="loose")
    method = build_method("crd", *pair, feat_dim=8)
    f, logits = [torch.randn(2, 64)], torch.zeros(2, 10)
    with pytest.raises(ValueError, match="indices"):
        method(DistillBatch(f, f, logits, logits, torch.zeros(2, dtype=torch.long)))


def test_spec_defaults():
    spec = get_method("crd")
    assert spec.needs_contrast and spec.aliases == () and not spec.preact
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 0.8)


# --- draw_contrast_indices -------------------------------------------------------------------------

# Unbalanced classes: sizes 5, 10, 15, 30, shuffled.
LABELS = torch.tensor([0] * 5 + [1] * 10 + [2] * 15 + [3] * 30)
LABELS = LABELS[torch.randperm(60, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_sampler_positives_and_negatives(mode):
    g = torch.Generator().manual_seed(0)
    index = torch.arange(60)
    out = draw_contrast_indices(index, LABELS, 25, mode, g)
    assert out.shape == (60, 26) and out.dtype == torch.long
    if mode == "exact":
        assert torch.equal(out[:, 0], index)
    else:
        assert torch.equal(LABELS[out[:, 0]], LABELS)
    neg = out[:, 1:]
    assert (LABELS[neg] != LABELS[:, None]).all()
    assert all(row.unique().numel() == 25 for row in neg)  # every pool (30 to 55) allows 25 distinct


def test_sampler_draws_with_replacement_only_past_the_pool():
    g = torch.Generator().manual_seed(0)
    anchors = torch.nonzero(LABELS == 3).flatten()[:4]  # pool of 30 other-class samples
    out = draw_contrast_indices(anchors, LABELS, 40, "exact", g)
    assert (LABELS[out[:, 1:]] != 3).all()
    assert all(row.unique().numel() <= 30 for row in out[:, 1:])


def test_sampler_is_uniform_over_the_allowed_pool():
    g = torch.Generator().manual_seed(1)
    anchors = torch.nonzero(LABELS == 0).flatten()  # 5 anchors, pool of 55
    counts = torch.zeros(60, dtype=torch.long)
    positives = torch.zeros(60, dtype=torch.long)
    for _ in range(400):
        out = draw_contrast_indices(anchors, LABELS, 20, "relax", g)
        counts += torch.bincount(out[:, 1:].flatten(), minlength=60)
        positives += torch.bincount(out[:, 0], minlength=60)
    allowed = LABELS != 0
    assert counts[~allowed].sum() == 0
    assert chisquare(counts[allowed].numpy()).pvalue > 1e-3
    assert chisquare(positives[~allowed].numpy()).pvalue > 1e-3  # relax: uniform over the class


def test_sampler_orders_like_sampling_without_replacement():
    """Pool of 4, k = 2: each of the 12 ordered pairs of distinct members is equally likely."""
    labels = torch.tensor([0, 1, 1, 1, 1])
    g = torch.Generator().manual_seed(2)
    out = draw_contrast_indices(torch.zeros(3000, dtype=torch.long), labels, 2, "exact", g)[:, 1:]
    assert (out[:, 0] != out[:, 1]).all()
    pairs = torch.bincount((out[:, 0] - 1) * 4 + (out[:, 1] - 1), minlength=16).numpy()
    assert chisquare(pairs[pairs > 0]).pvalue > 1e-3 and (pairs > 0).sum() == 12


def test_repeat_detection_table_and_sort_agree():
    values = torch.randint(0, 50, (6, 40), generator=torch.Generator().manual_seed(0))
    by_hand = torch.tensor([[v not in row[:j].tolist() for j, v in enumerate(row.tolist())] for row in values])
    assert torch.equal(_first_occurrence(values, 50), by_hand)  # table: n <= 16 * width
    assert torch.equal(_first_occurrence(values, 10**6), by_hand)  # sort


def test_sampler_follows_labels_changed_in_place():
    labels = LABELS.clone()
    g = torch.Generator().manual_seed(0)
    draw_contrast_indices(torch.arange(4), labels, 10, "exact", g)
    labels.copy_((labels + 1) % 4)
    out = draw_contrast_indices(torch.arange(60), labels, 10, "exact", g)
    assert (labels[out[:, 1:]] != labels[:, None]).all()


def test_sampler_is_fast_at_cifar_scale():
    labels = torch.arange(50000) % 100
    g = torch.Generator().manual_seed(0)
    start = time.process_time()  # CPU time of all threads: steadier than wall time on a busy machine
    out = draw_contrast_indices(torch.arange(64) * 700, labels, 16384, "exact", g)
    assert time.process_time() - start < 1.5  # about 0.1 s (0.06 s wall) on two idle cores
    assert all(row.unique().numel() == 16384 for row in out[:, 1:])
    assert (labels[out[:, 1:]] != labels[out[:, :1]]).all()


# --- end to end ------------------------------------------------------------------------------------


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "crd", "--nce_k", "16")


def test_end_to_end_with_kd(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "crd", "--nce_k", "16", "-a", "1", "-b", "0.8")
