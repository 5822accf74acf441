"""RRD: both memories' losses by hand, the FIFO queue's wrap-around, its state saved and restored
exactly (also across a killed run), the same queue on every rank under torchrun, the frozen teacher
projection, defaults, the options-dependent contrast loader, real runs.

This file is also the DDP worker: ``torchrun ... tests/test_method_rrd.py fifo <out>``.
"""

from __future__ import annotations

import argparse
import io
import math
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo import RRDLoss
from distiller_zoo.registry import DistillBatch, get_method
from distiller_zoo.RRD import RRD_FifoMemory_Loss, RRD_MomentumMemory_Loss


def rrd_opt(**kw) -> argparse.Namespace:
    base = {"s_dim": 5, "t_dim": 6, "feat_dim": 4, "nce_k": 8, "nce_t_s": 0.1, "nce_t_t": 0.02, "n_data": 30,
            "nce_t": 0.5, "nce_m": 0.5, "memory_type": "fifo"}
    return argparse.Namespace(**{**base, **kw})


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def embed_by_hand(linear: torch.nn.Linear, f: torch.Tensor) -> list[list[float]]:
    w, b = linear.weight.detach().double().tolist(), linear.bias.detach().double().tolist()
    return [unit([sum(wi * xi for wi, xi in zip(w[o], x, strict=True)) + b[o] for o in range(len(b))])
            for x in f.double().tolist()]


def relational_by_hand(scores_s: list[list[float]], scores_t: list[list[float]], t_s: float, t_t: float) -> float:
    """-(1/B) sum_b sum_k p_t[b,k] log p_s[b,k], p = softmax(score / t) over k."""
    total = 0.0
    for row_s, row_t in zip(scores_s, scores_t, strict=True):
        lse_s = math.log(sum(math.exp(x / t_s) for x in row_s))
        z_t = sum(math.exp(x / t_t) for x in row_t)
        total -= sum(math.exp(y / t_t) / z_t * (x / t_s - lse_s) for x, y in zip(row_s, row_t, strict=True))
    return total / len(scores_s)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- the FIFO memory -------------------------------------------------------------------------------


def test_fifo_loss_matches_hand_computation_with_the_batch_enqueued_first():
    torch.manual_seed(0)
    loss = RRD_FifoMemory_Loss(rrd_opt()).double()
    with torch.no_grad():
        loss.queue_ptr.fill_(2)
    queue = loss.queue.tolist()
    f_s, f_t = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    v_s, v_t = embed_by_hand(loss.embed_s, f_s), embed_by_hand(loss.embed_t, f_t)
    queue[2:5] = v_t  # written at the pointer before scoring
    expected = relational_by_hand([[dot(v, q) for q in queue] for v in v_s], [[dot(v, q) for q in queue] for v in v_t],
                                  0.1, 0.02)
    assert math.isclose(loss(f_s, f_t).item(), expected, rel_tol=1e-9)
    assert torch.allclose(loss.queue, torch.tensor(queue, dtype=torch.float64))
    assert loss.queue_ptr.item() == 5


def test_initial_queue_is_normalised_along_dim_0_as_the_reference():
    torch.manual_seed(0)
    queue = RRD_FifoMemory_Loss(rrd_opt(nce_k=16, feat_dim=3)).queue
    assert queue.shape == (16, 3)
    assert torch.allclose(queue.norm(dim=0), torch.ones(3))


@pytest.mark.parametrize("sizes", [[3, 3, 3], [8, 8], [5, 11, 2]])
def test_enqueue_wraps_around_like_writing_one_key_at_a_time(sizes):
    """Batches that do not divide nce_k (the reference asserts they do), one as large as the queue, one larger."""
    torch.manual_seed(0)
    loss = RRD_FifoMemory_Loss(rrd_opt())
    slots, ptr = loss.queue.clone(), 0
    for step, n in enumerate(sizes):
        keys = torch.randn(n, 4) + 10 * step
        for key in keys:  # the reference's semantics, one key at a time
            slots[ptr] = key
            ptr = (ptr + 1) % 8
        loss._dequeue_and_enqueue(keys)
        assert torch.equal(loss.queue, slots) and loss.queue_ptr.item() == ptr


def test_teacher_projection_is_frozen_and_the_student_side_trains():
    torch.manual_seed(0)
    loss = RRDLoss(rrd_opt())
    assert not any(p.requires_grad for p in loss.embed_t.parameters())
    f_t = torch.randn(4, 6, requires_grad=True)
    loss(torch.randn(4, 5), f_t).backward()
    assert loss.embed_s.weight.grad.abs().sum() > 0 and f_t.grad is None


def test_state_dict_round_trip_restores_queue_and_pointer_exactly():
    torch.manual_seed(0)
    loss = RRDLoss(rrd_opt())
    for n in (3, 4, 2):
        loss(torch.randn(n, 5), torch.randn(n, 6))
    assert loss.memory.queue_ptr.item() == 1
    assert set(loss.state_dict()) == {"memory.queue", "memory.queue_ptr"} | {
        f"memory.embed_{s}.{p}" for s in "st" for p in ("weight", "bias")}  # the reference's keys
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    restored = RRDLoss(rrd_opt())
    restored.load_state_dict(torch.load(buffer))
    for key, value in loss.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    f_s, f_t = torch.randn(3, 5), torch.randn(3, 6)
    assert torch.equal(loss(f_s, f_t), restored(f_s, f_t))
    assert torch.equal(loss.memory.queue, restored.memory.queue)


# --- the momentum memory ---------------------------------------------------------------------------


def test_momentum_loss_matches_hand_computation_on_crds_memory():
    torch.manual_seed(0)
    loss = RRD_MomentumMemory_Loss(rrd_opt(nce_k=4))
    bank_s, bank_t = loss.contrast.memory_v1.double().tolist(), loss.contrast.memory_v2.double().tolist()
    f_s, f_t = torch.randn(3, 5), torch.randn(3, 6, requires_grad=True)
    idx = torch.tensor([3, 7, 11])
    contrast = torch.tensor([[3, 0, 1, 2, 4], [7, 8, 9, 10, 12], [11, 13, 14, 15, 16]])
    v_s, v_t = embed_by_hand(loss.embed_s, f_s), embed_by_hand(loss.embed_t, f_t)
    # the student anchor against the teacher bank, the teacher anchor against the student bank, exp(./T)/Z,
    # Z = mean of the first batch's exponentials times n_data
    raw_s = [[math.exp(dot(v_s[b], bank_t[j]) / 0.5) for j in contrast[b].tolist()] for b in range(3)]
    raw_t = [[math.exp(dot(v_t[b], bank_s[j]) / 0.5) for j in contrast[b].tolist()] for b in range(3)]
    z_s, z_t = (sum(map(sum, raw)) / 15 * 30 for raw in (raw_s, raw_t))
    expected = relational_by_hand([[x / z_s for x in row] for row in raw_s], [[x / z_t for x in row] for row in raw_t],
                                  0.1, 0.02)
    value = loss(f_s, f_t, idx, contrast)
    assert math.isclose(value.item(), expected, rel_tol=1e-5)
    value.backward()
    assert loss.embed_s.weight.grad.abs().sum() > 0 and f_t.grad is None and loss.embed_t.weight.grad is None
    # the teacher bank moved halfway (nce_m 0.5) to the teacher embeddings at the batch's dataset indices
    for b, i in enumerate(idx.tolist()):
        moved = unit([0.5 * old + 0.5 * new for old, new in zip(bank_t[i], v_t[b], strict=True)])
        assert torch.allclose(loss.contrast.memory_v2[i].double(), torch.tensor(moved, dtype=torch.float64))


def test_momentum_variant_needs_dataset_indices():
    method = build_method("rrd", *nets(), memory_type="momentum", nce_k=8, n_data=64)
    f, logits = [torch.randn(2, 64)], torch.zeros(2, 10)
    with pytest.raises(ValueError, match="indices"):
        method(DistillBatch(f, f, logits, logits, torch.zeros(2, dtype=torch.long)))


# --- the registered method -------------------------------------------------------------------------


def test_gradients_reach_student_and_student_embedding_not_teacher():
    check_one_step("rrd", nce_k=16)
    method = build_method("rrd", *nets(), nce_k=16)
    assert {n for n, p in method.named_parameters() if p.requires_grad} == {
        "criterion.memory.embed_s.weight", "criterion.memory.embed_s.bias"}


def test_spec_defaults_flags_and_contrast_loader():
    spec = get_method("rrd")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    assert spec.aliases == () and not spec.preact
    import train_student

    base = ["--path_t", "t.pth", "--distill", "rrd"]
    opt, _ = train_student.parse_option(base)
    assert (opt.memory_type, opt.nce_t_s, opt.nce_t_t, opt.nce_k, opt.feat_dim) == ("fifo", 0.1, 0.02, 16384, 128)
    assert not spec.wants_contrast(opt)
    opt, _ = train_student.parse_option([*base, "--memory_type", "momentum"])
    assert spec.wants_contrast(opt)
    # methods whose need is fixed answer the same for any options
    assert get_method("crd").wants_contrast(opt) and not get_method("kd").wants_contrast(opt)


def test_bad_options_are_rejected():
    pair = nets()
    with pytest.raises(ValueError, match="nce_t_s"):
        build_method("rrd", *pair, nce_t_s=0.0)
    with pytest.raises(ValueError, match="nce_k"):
        build_method("rrd", *pair, memory_type="momentum", nce_k=64, n_data=64)
    build_method("rrd", *pair, nce_k=64, n_data=64)  # a queue may be as large as the data set


# --- under torchrun --------------------------------------------------------------------------------

WORLD = 2
DDP_SIZES = [(4, 4), (3, 3), (4, 4)]  # per-rank batches (equal, as the samplers pad): 8, 6, then past the end


def ddp_batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * step + rank)
    n = DDP_SIZES[step][rank]
    return torch.randn(n, 5, generator=g), torch.randn(n, 6, generator=g)


def fifo_worker(out: Path) -> None:
    """Each rank starts from its own seed, takes rank 0's state (as train_student), steps on its own batches."""
    from helper.distributed import all_gather_cat, broadcast_state, init_distributed, shutdown

    info, _ = init_distributed(torch.device("cpu"))
    torch.manual_seed(info.rank)
    loss = RRDLoss(rrd_opt())
    broadcast_state(loss, info)
    for step in range(len(DDP_SIZES)):
        loss(*ddp_batch(step, info.rank)).backward()
    state = loss.state_dict()
    flat = torch.cat([t.reshape(-1).double() for t in state.values()])
    every = all_gather_cat(flat[None], info)
    if info.is_main:
        torch.save({"identical": all(torch.equal(every[0], row) for row in every), "state": state}, out)
    shutdown(info)


def test_queue_is_identical_on_every_rank_and_equals_one_process_on_the_global_batch(tmp_path):
    from test_distributed import torchrun

    out = tmp_path / "rrd.pth"
    torchrun(str(Path(__file__).resolve()), ["fifo", str(out)], tmp_path)
    result = torch.load(out, weights_only=True)
    assert result["identical"], "the ranks' queues (or pointers) differ"
    torch.manual_seed(0)  # rank 0's initialisation, which every rank took
    reference = RRDLoss(rrd_opt())
    for step in range(len(DDP_SIZES)):
        parts = [ddp_batch(step, rank) for rank in range(WORLD)]
        reference(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))
    assert reference.memory.queue_ptr.item() == (8 + 6 + 8) % 8
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(result["state"][name], value, rtol=1e-6, atol=1e-6, msg=name)


# --- end to end ------------------------------------------------------------------------------------


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "rrd", "--nce_k", "48")  # 32-sample batches: wraps at step 2


def test_end_to_end_momentum_memory_with_kd(run_student, tmp_path):
    rows = check_e2e(run_student, tmp_path, "rrd", "--memory_type", "momentum", "--nce_k", "16", "-a", "1")
    assert rows[-1]["loss_div"] > 0
    (last,) = (tmp_path / "save").rglob("ckpt_last.pth")
    extra = torch.load(last, weights_only=True)["extra"]
    assert extra["criterion.memory.contrast.memory_v1"].shape == (128, 128)
    assert extra["criterion.memory.contrast.params"][2] > 0  # Z set, and saved for resume


def test_sigterm_then_resume_is_bit_identical_queue_included(tmp_path, teacher_ckpt):
    from test_resume import STUDENT, _assert_identical, _final_weights, _popen, _wait_for

    args = [*STUDENT, "--syn_train_size", "128", "--path_t", str(teacher_ckpt), "--epochs", "3", "--distill", "rrd",
            "--nce_k", "80"]
    reference = tmp_path / "reference"
    reference.mkdir()
    run_cli("train_student.py", args, reference)
    work = tmp_path / "stopped"
    work.mkdir()
    proc = _popen(args, work)
    _wait_for(work / "save/student_model", proc)
    _wait_for(next((work / "save/student_model").iterdir()) / "ckpt_last.pth", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, (out, err)
    run_cli("train_student.py", [*args, "--resume", "auto"], work)
    _assert_identical(_final_weights(work), _final_weights(reference))
    expected, got = (torch.load(next(d.rglob("ckpt_last.pth")), weights_only=True)["extra"] for d in (reference, work))
    _assert_identical(got, expected)  # queue, pointer and both embeddings
    assert got["criterion.memory.queue_ptr"].item() == 3 * 128 % 80  # wrapped around, 4 steps of 32 an epoch


if __name__ == "__main__" and sys.argv[1:2] == ["fifo"]:
    fifo_worker(Path(sys.argv[2]))
