"""SemCKD: the attention and the loss by hand, module sizes and keys as SemCKD's, gradients, the skipped
partial batches (and why every DDP rank skips the same ones), the one-line errors, a real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_one_step, make_opt, nets
from torch.utils.data import DataLoader

from dataset.memory import MemoryLoader
from distiller_zoo.registry import DistillBatch, MethodContext, get_method
from distiller_zoo.SemCKD import SelfA, SemCKDLoss, SemCKDMethod, check_batch_fits, is_full_batch
from helper.sampler import ResumableSampler
from models.util import AAEmbed

# --- hand computations (float64 numpy, explicit loops) ------------------------------------------------


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def conv_by_hand(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Stride 1, zero padding k // 2, no bias."""
    b, c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    pad = k // 2
    out = np.zeros((b, c_out, h, wd))
    for n in range(b):
        for o in range(c_out):
            for y in range(h):
                for z in range(wd):
                    for c in range(c_in):
                        for dy in range(k):
                            for dz in range(k):
                                yy, zz = y + dy - pad, z + dz - pad
                                if 0 <= yy < h and 0 <= zz < wd:
                                    out[n, o, y, z] += w[o, c, dy, dz] * x[n, c, yy, zz]
    return out


def bn_train_by_hand(x: np.ndarray, bn: torch.nn.BatchNorm2d) -> np.ndarray:
    """Training-mode BatchNorm: each channel normalised by its batch mean and biased variance."""
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c]
        mean = values.sum() / values.size
        var = ((values - mean) ** 2).sum() / values.size
        out[:, c] = (values - mean) / math.sqrt(var + bn.eps) * bn.weight[c].item() + bn.bias[c].item()
    return out


def regressor_by_hand(x: np.ndarray, reg: AAEmbed) -> np.ndarray:
    r = reg.regressor
    x = np.maximum(bn_train_by_hand(conv_by_hand(x, np_(r[0].weight)), r[1]), 0)
    x = np.maximum(bn_train_by_hand(conv_by_hand(x, np_(r[3].weight)), r[4]), 0)
    return conv_by_hand(x, np_(r[6].weight))


def pool_by_hand(x: np.ndarray, size: int) -> np.ndarray:
    """Average over the (H / size) x (W / size) blocks."""
    b, c, h, _ = x.shape
    k = h // size
    out = np.zeros((b, c, size, size))
    for y in range(size):
        for z in range(size):
            out[:, :, y, z] = x[:, :, y * k:(y + 1) * k, z * k:(z + 1) * k].mean(axis=(2, 3))
    return out


def embed_by_hand(rows: np.ndarray, mlp) -> np.ndarray:
    """MLPEmbed on each row: Linear, ReLU, Linear, divide by the L2 norm."""
    w1, b1, w2, b2 = (np_(t) for t in (mlp.linear1.weight, mlp.linear1.bias, mlp.linear2.weight, mlp.linear2.bias))
    out = []
    for row in rows:
        hidden = [max(sum(w1[o, i] * row[i] for i in range(len(row))) + b1[o], 0.0) for o in range(len(b1))]
        emb = [sum(w2[o, i] * hidden[i] for i in range(len(hidden))) + b2[o] for o in range(len(b2))]
        norm = math.sqrt(sum(e * e for e in emb))
        out.append([e / norm for e in emb])
    return np.array(out)


def gram_by_hand(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    n = len(flat)
    return np.array([[sum(flat[a, k] * flat[b, k] for k in range(flat.shape[1])) for b in range(n)] for a in range(n)])


def attention_by_hand(sa: SelfA, feat_s: list[np.ndarray], feat_t: list[np.ndarray]) -> np.ndarray:
    queries = [embed_by_hand(gram_by_hand(f), getattr(sa, f"query_weight{i}")) for i, f in enumerate(feat_s)]
    keys = [embed_by_hand(gram_by_hand(f), getattr(sa, f"key_weight{j}")) for j, f in enumerate(feat_t)]
    b = feat_s[0].shape[0]
    att = np.zeros((b, len(feat_s), len(feat_t)))
    for n in range(b):
        for i, q in enumerate(queries):
            energy = [float(np.dot(q[n], k[n])) for k in keys]
            top = max(energy)
            exps = [math.exp(e - top) for e in energy]
            att[n, i] = [e / sum(exps) for e in exps]
    return att


def semckd_by_hand(sa: SelfA, feat_s: list[np.ndarray], feat_t: list[np.ndarray]) -> float:
    """sum_{b,i,j} att[b,i,j] * mean_chw (reg_ij(F_s^i) - F_t^j)^2 / (B * S); the larger map pooled first."""
    att = attention_by_hand(sa, feat_s, feat_t)
    b = feat_s[0].shape[0]
    total = 0.0
    for i, f_s in enumerate(feat_s):
        for j, f_t in enumerate(feat_t):
            size = min(f_s.shape[2], f_t.shape[2])
            pred = regressor_by_hand(pool_by_hand(f_s, size), getattr(sa, f"regressor{i}{j}"))
            target = pool_by_hand(f_t, size)
            for n in range(b):
                diff = (pred[n] - target[n]).ravel()
                total += att[n, i, j] * sum(d * d for d in diff) / len(diff)
    return total / (b * len(feat_s))


# --- the loss and the attention ---------------------------------------------------------------------


def small_case(batch: int = 8):
    """Two student stages (2x2 and 1x1 maps) and three teacher stages (2x2, 1x1, 1x1), post-ReLU."""
    torch.manual_seed(0)
    feat_s = [torch.randn(batch, 2, 2, 2).relu(), torch.randn(batch, 3, 1, 1).relu()]
    feat_t = [torch.randn(batch, c, h, h).relu() for c, h in ((3, 2), (2, 1), (4, 1))]
    return SelfA(2, 3, batch, [2, 3], [3, 2, 4]), feat_s, feat_t


def test_loss_matches_hand_computation():
    sa, feat_s, feat_t = small_case()
    got = SemCKDLoss()(*sa.train()(feat_s, feat_t)).item()
    expected = semckd_by_hand(sa, [np_(f) for f in feat_s], [np_(f) for f in feat_t])
    assert math.isclose(got, expected, rel_tol=1e-4)


def test_attention_matches_hand_computation():
    sa, feat_s, feat_t = small_case()
    _, _, attention = sa(feat_s, feat_t)
    assert attention.shape == (8, 2, 3)
    expected = attention_by_hand(sa, [np_(f) for f in feat_s], [np_(f) for f in feat_t])
    np.testing.assert_allclose(np_(attention), expected, rtol=1e-4, atol=1e-6)


def test_loss_on_given_values():
    """SemCKDLoss alone: weights x per-sample MSE, summed, over B * S, with explicit loops."""
    torch.manual_seed(1)
    b, s, t = 3, 2, 3
    values = [[torch.randn(b, 2, 2, 2) for _ in range(t)] for _ in range(s)]
    targets = [[torch.randn(b, 2, 2, 2) for _ in range(t)] for _ in range(s)]
    weight = torch.softmax(torch.randn(b, s, t), dim=-1)
    expected = 0.0
    for n in range(b):
        for i in range(s):
            for j in range(t):
                diff = (values[i][j][n] - targets[i][j][n]).flatten().tolist()
                expected += weight[n, i, j].item() * sum(d * d for d in diff) / len(diff)
    assert math.isclose(SemCKDLoss()(values, targets, weight).item(), expected / (b * s), rel_tol=1e-5)


def test_pairs_pool_the_larger_map_and_cover_every_stage_pair():
    sa, feat_s, feat_t = small_case()
    values_s, values_t, _ = sa(feat_s, feat_t)
    assert [[tuple(v.shape) for v in row] for row in values_s] == [[(8, 3, 2, 2), (8, 2, 1, 1), (8, 4, 1, 1)],
                                                                  [(8, 3, 1, 1), (8, 2, 1, 1), (8, 4, 1, 1)]]
    # the student 2x2 map is pooled before regressor01; the teacher 2x2 map is pooled for student stage 1
    torch.testing.assert_close(values_t[1][0], feat_t[0].mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(values_t[0][0], feat_t[0])


# --- modules as SemCKD's ----------------------------------------------------------------------------


def test_parameter_count_resnet32x4_to_resnet8x4_at_batch_64():
    method = build_method("semckd", *nets("resnet8x4", "resnet32x4"), batch_size=64)
    assert sum(p.numel() for p in method.parameters()) == 10_233_632  # methods.md 2.23, measured on SemCKD


def test_state_dict_keys_and_regressor_layout_as_semckd():
    sa = SelfA(3, 2, 8, [4, 8, 16], [8, 16])
    keys = set(sa.state_dict())
    assert {"key_weight0.linear1.weight", "key_weight1.linear2.bias", "query_weight2.linear1.weight",
            "regressor21.regressor.6.weight", "regressor00.regressor.1.running_mean"} <= keys
    assert not any(k.startswith(("key_weight2", "regressor3", "regressor02")) for k in keys)
    assert sa.key_weight0.linear1.in_features == 8 and sa.key_weight0.linear2.out_features == 2  # B -> B / 4
    reg = AAEmbed(4, 8)
    assert [type(m).__name__ for m in reg.regressor] == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d",
                                                        "ReLU", "Conv2d"]
    convs = [reg.regressor[i] for i in (0, 3, 6)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)] and all(c.bias is None for c in convs)
    assert [(c.in_channels, c.out_channels) for c in convs] == [(4, 16), (16, 16), (16, 8)]


def test_selfa_imports_as_in_semckd():
    from distiller_zoo.SemCKD import SelfA as FromMethod
    from models.util import SelfA as FromUtil

    assert FromUtil is FromMethod


def test_different_stage_counts_meet_every_pair():
    method = build_method("semckd", *nets("vgg8", "resnet20"), batch_size=8)
    assert sum(k.startswith("attention.regressor") and k.endswith("6.weight") for k in method.state_dict()) == 4 * 3


def test_gradients_reach_student_and_attention_not_teacher():
    check_one_step("semckd", batch=8, batch_size=8)


def test_spec_defaults():
    spec = get_method("semckd")
    assert spec.name == "semckd" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 1.0, 400.0)
    assert not spec.preact and spec.uses_features and not spec.needs_contrast


# --- skipped partial batches ------------------------------------------------------------------------


def test_partial_batches_are_skipped():
    method = build_method("semckd", *nets(), batch_size=8, n_data=100)
    full = [torch.zeros(8, 3, 16, 16), torch.zeros(8, dtype=torch.long)]
    assert method.prepare_batch(full) is full
    assert method.prepare_batch([t[:7] for t in full]) is None
    assert is_full_batch(8, 8) and not is_full_batch(7, 8)


def lengths(batches) -> list[int]:
    """Samples per batch: a DataLoader over indices yields tensors, the memory loader [x, y, ...] lists."""
    return [b[0].shape[0] if isinstance(b, list) else len(b) for b in batches]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_sees_the_same_batch_lengths(world):
    """What makes the skip decision the same on every rank without a collective: for every data-set size,
    batch size, epoch and resume point, the k-th batch of each rank's sampler has one length."""
    for n in range(1, 30):
        for batch_size in range(1, 8):
            per_rank = None
            for rank in range(world):
                sampler = ResumableSampler(range(n), num_replicas=world, rank=rank, seed=3)
                got = []
                for start in range(math.ceil(sampler.num_samples / batch_size)):
                    sampler.set_position(epoch=2, start_sample=start * batch_size)
                    got.append(lengths(DataLoader(range(n), batch_size=batch_size, sampler=sampler)))
                assert per_rank is None or got == per_rank, (n, batch_size, rank)
                per_rank = got


def test_memory_loader_ranks_see_the_same_batch_lengths():
    images, targets = np.zeros((37, 8, 8, 3), np.uint8), np.arange(37) % 3
    seen = []
    for rank in range(2):
        loader = MemoryLoader(images, targets, [0.5] * 3, [0.5] * 3, device=torch.device("cpu"), batch_size=8,
                              rank=rank, world_size=2, variant="instance")
        loader.set_position(1, 0)
        seen.append(lengths(loader))
    assert seen[0] == seen[1] == [8, 8, 3]  # 19 per rank (padded): each rank skips its last step


def test_a_data_set_smaller_than_one_batch_is_one_line():
    with pytest.raises(ValueError, match=r"^semckd skips batches smaller than --batch_size 32, .* 20 per process"):
        build_method("semckd", *nets(), batch_size=32, n_data=20)
    # under DDP each process gets ceil(N / world) samples
    with pytest.raises(ValueError, match=r"gives 30 per process \(over 2 processes\).*--batch_size 30 or less$"):
        check_batch_fits(32, 60, 2)
    check_batch_fits(32, 64, 2)
    with pytest.raises(ValueError, match="at least 4"):
        build_method("semckd", *nets(), batch_size=2)


def test_missing_stage_maps_are_rejected():
    pooled = [torch.randn(2, 8, 4, 4), torch.randn(2, 8)]
    ctx = MethodContext(None, None, pooled, pooled, torch.randn(2, 10), torch.randn(2, 10), make_opt(batch_size=8),
                        100, 10)
    with pytest.raises(ValueError, match="semckd needs 4-D stage feature maps"):
        get_method("semckd").build(ctx)


def test_method_forward_is_the_loss_on_the_stage_maps():
    sa, feat_s, feat_t = small_case()
    method = SemCKDMethod(sa, 8)
    pooled = torch.zeros(8, 4)
    batch = DistillBatch([feat_s[0], *feat_s, pooled], [feat_t[0], *feat_t, pooled], pooled, pooled,
                         torch.zeros(8, dtype=torch.long))
    expected = semckd_by_hand(sa, [np_(f) for f in feat_s], [np_(f) for f in feat_t])
    assert math.isclose(method(batch).item(), expected, rel_tol=1e-4)


# --- end to end -------------------------------------------------------------------------------------


def test_end_to_end_skips_the_last_partial_batch(run_student, tmp_path):
    """100 images at batch 32: steps of 32, 32, 32 and 4; the last is skipped, counted and reported."""
    proc = run_student("--distill", "semckd", "--syn_train_size", "100")
    assert "epoch 1, total time" in proc.stdout and ", skipped 1 steps" in proc.stdout, proc.stdout
    (log,) = (tmp_path / "save").rglob("metrics.jsonl")
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["skipped_steps"] == 1 and math.isfinite(row["loss_kd"]) and row["loss_kd"] > 0
    assert "_synthetic_semckd_" in log.parent.name and log.parent.name.endswith("_b:400.0_1")  # its default -b
    best = torch.load(log.parent / "resnet8_best.pth", map_location="cpu", weights_only=True)
    assert "attention.key_weight0.linear1.weight" not in best["attention"]  # SemCKD's keys, unprefixed
    assert best["attention"]["key_weight0.linear1.weight"].shape == (16, 32)  # B = 32 -> 2 * 32 / 4


def test_end_to_end_data_set_smaller_than_one_batch_is_one_line(run_student):
    proc = run_student("--distill", "semckd", "--syn_train_size", "20", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "semckd skips batches smaller than --batch_size 32" in lines[0], proc.stderr
