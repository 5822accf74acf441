"""What a GPU or multi-node run would hit, checked on a CPU: RNG states across device counts, the
precision and CUDA settings chosen from the device, one host sync per training step, and the DDP
stop and non-finite verdicts agreed by every rank."""

from __future__ import annotations

import itertools

import torch
from conftest import ROOT, TINY_DATA
from test_distributed import metrics_of, torchrun
from torch.utils._python_dispatch import TorchDispatchMode

from dataset import memory
from helper import precision, rng, setup
from helper.errors import UserError

# --- RNG states saved on one device count, restored on another --------------------------------------


def _record_cuda_restores(monkeypatch) -> list[tuple[torch.Tensor, torch.device]]:
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((state, device)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: (_ for _ in ()).throw(AssertionError))
    return calls


def test_an_eight_gpu_checkpoint_restores_on_one_gpu(monkeypatch):
    old = rng.capture_rng(torch.device("cpu"))
    del old["cuda_device"]
    old["cuda"] = [torch.full((8,), i, dtype=torch.uint8) for i in range(8)]  # before per-device saving
    calls = _record_cuda_restores(monkeypatch)
    rng.restore_rng(old, torch.device("cuda", 0))
    rng.restore_rng(old, torch.device("cuda", 3))
    assert [int(state[0]) for state, _ in calls] == [0, 3]
    rng.restore_rng({**old, "cuda": old["cuda"][:2]}, torch.device("cuda", 5))  # that GPU's state is not there
    assert len(calls) == 2


def test_the_training_devices_state_is_saved_and_restored(monkeypatch):
    state = rng.capture_rng(torch.device("cpu"))
    assert state["cuda_device"] is None  # a CPU run saves no GPU state
    state["cuda_device"] = torch.arange(4, dtype=torch.uint8)
    calls = _record_cuda_restores(monkeypatch)
    rng.restore_rng(state, torch.device("cuda", 1))
    ((saved, device),) = calls
    assert torch.equal(saved, state["cuda_device"]) and device == torch.device("cuda", 1)
    rng.restore_rng(state, torch.device("cpu"))
    assert len(calls) == 1


def test_python_numpy_and_torch_generators_come_back():
    import random

    import numpy as np

    state = rng.capture_rng(torch.device("cpu"))
    expected = (random.random(), np.random.rand(), torch.rand(1))
    rng.restore_rng(state, torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


# --- precision, device and CUDA settings -------------------------------------------------------------


def test_auto_precision_on_cuda_follows_the_compute_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true even where emulated
    device = torch.device("cuda", 0)
    for capability, expected in [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16"),
                                 ((6, 1), "fp32")]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert precision.resolve_precision("auto", device) == expected, capability
    assert precision.resolve_precision("fp32", device) == "fp32"


def test_cuda_device_names_resolve_to_an_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert precision.resolve_device("cuda") == torch.device("cuda", 2)
    assert precision.resolve_device("auto") == torch.device("cuda", 2)
    assert precision.resolve_device("cuda:3") == torch.device("cuda", 3)
    try:
        precision.resolve_device("cuda:4")
    except UserError as exc:
        assert "only 4 CUDA GPU(s)" in str(exc)
    else:
        raise AssertionError("cuda:4 of 4 GPUs was accepted")


def test_a_cuda_run_selects_its_device_and_benchmarks_cudnn(monkeypatch):
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    setup.configure_cuda(torch.device("cpu"))
    assert selected == [] and torch.backends.cudnn.benchmark is False
    setup.configure_cuda(torch.device("cuda", 3))
    assert selected == [torch.device("cuda", 3)] and torch.backends.cudnn.benchmark is True


def test_the_memory_loader_copies_to_a_gpu_from_pinned_memory_without_blocking(monkeypatch):
    calls = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append((args, kwargs)) or self)
    values = torch.arange(5)
    memory.upload(values, torch.device("cuda", 1))  # no GPU here: the copy is recorded, not made
    assert calls == ["pin", ((torch.device("cuda", 1),), {"non_blocking": True})]
    monkeypatch.setattr(torch.Tensor, "to", to)
    calls.clear()
    assert memory.upload(values, torch.device("cpu")) is values and calls == []


# --- host syncs per training step --------------------------------------------------------------------

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item"}


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a scalar (item, bool, int),
    data-dependent shapes (boolean masks, nonzero), plus Tensor.tolist (patched by the test)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _syncs_per_step(tmp_path, monkeypatch, method: str, extra: list[str]) -> list[int]:
    """Build a run as train_student does and count host syncs in each of 4 training steps."""
    import train_student
    from dataset import build_data
    from helper.engine import EpochTotals, StepVerdict, train_epoch
    from helper.runlog import Progress
    from models import build_model

    monkeypatch.chdir(tmp_path)
    args = [*TINY_DATA, "--path_t", "random", "--model_t", "resnet20", "--model_s", "resnet8", "--distill", method,
            "--loader", "memory", "--seed", "1", *extra]
    opt, spec = train_student.parse_option(args)
    rt = setup.setup_runtime(opt)
    bundle = build_data(opt)
    teacher, student = build_model("resnet20", bundle.num_classes), build_model("resnet8", bundle.num_classes)
    method_module = train_student.build_method(spec, student, teacher, opt, bundle)
    loader = setup.build_train_loader(opt, bundle, "crd" if spec.needs_contrast else "instance", rt)
    teacher, student, method_module = train_student.place_networks(opt, spec, teacher, student, method_module, rt)
    stage = train_student.make_stages(opt, spec, student, student, teacher, method_module, rt)[-1]
    loader.set_position(1, 0)

    counter = _SyncCounter()
    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        counter.count += 1
        return tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    counts = []

    class PerStep:
        """Yields the loader's batches, noting the syncs of each step (the batch's drawing included)."""

        def __iter__(self):
            for batch in loader:
                counts.append(counter.count)
                yield batch
            counts.append(counter.count)

    with counter:
        train_epoch(stage.objective, PerStep(), stage.optimizer, rt.grad_scaler(), rt.device, rt.channels_last,
                    EpochTotals(), 0, Progress("", len(loader), 10**9, enabled=False), str, "", StepVerdict(rt.info))
    return [b - a for a, b in itertools.pairwise(counts)]


def test_one_host_sync_per_step_for_kd(tmp_path, monkeypatch):
    assert _syncs_per_step(tmp_path, monkeypatch, "kd", []) == [1, 1, 1, 1]


def test_one_host_sync_per_step_for_crd(tmp_path, monkeypatch):
    assert _syncs_per_step(tmp_path, monkeypatch, "crd", ["--nce_k", "16"]) == [1, 1, 1, 1]


# --- DDP: a signal or a non-finite loss on one rank only -------------------------------------------

# Loaded in each torchrun worker: on rank 1 only, at its 3rd training step, either a SIGTERM to itself
# or a NaN KD loss.
ONE_RANK_FAULT = """
import os
if os.environ.get("RANK") == "1":
    import signal
    from helper import objectives
    from distiller_zoo import KD
    _calls = {{"n": 0}}
    _step = objectives.DistillObjective.__call__
    _kd = KD.DistillKL.forward

    def _counting_step(self, batch):
        _calls["n"] += 1
        if {fault!r} == "sigterm" and _calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return _step(self, batch)

    def _nan_kd(self, y_s, y_t):
        loss = _kd(self, y_s, y_t)
        return loss * float("nan") if {fault!r} == "nan" and _calls["n"] == 3 else loss

    objectives.DistillObjective.__call__ = _counting_step
    KD.DistillKL.forward = _nan_kd
"""

DDP_RUN = [*TINY_DATA, "--syn_train_size", "256", "--batch_size", "16", "--model_s", "resnet8", "--distill", "kd",
           "--epochs", "2", "--seed", "3"]


def _fault_hooks(tmp_path, fault: str) -> str:
    hooks = tmp_path / f"hooks_{fault}"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(ONE_RANK_FAULT.format(fault=fault))
    return str(hooks)


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_resumes(tmp_path):
    from conftest import write_teacher

    teacher = write_teacher(tmp_path, "resnet20")
    args = [*DDP_RUN, "--path_t", str(teacher)]
    proc = torchrun(str(ROOT / "train_student.py"), args, tmp_path, (_fault_hooks(tmp_path, "sigterm"),),
                    check=False)
    assert proc.returncode != 0
    assert "stopped by a signal to another process in the main stage at epoch 1, step 3" in proc.stdout, \
        proc.stdout[-2000:] + proc.stderr[-2000:]
    (checkpoint,) = tmp_path.glob("save/student_model/*/ckpt_last.pth")
    state = torch.load(checkpoint, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 3)
    assert len(state["rng_ranks"]) == 2
    proc = torchrun(str(ROOT / "train_student.py"), [*args, "--resume", "auto"], tmp_path)
    assert "resumed from" in proc.stdout and "best accuracy" in proc.stdout
    assert [row["epoch"] for row in metrics_of(tmp_path)] == [1, 2]


def test_non_finite_loss_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    from conftest import write_teacher

    teacher = write_teacher(tmp_path, "resnet20")
    proc = torchrun(str(ROOT / "train_student.py"), [*DDP_RUN, "--path_t", str(teacher)], tmp_path,
                    (_fault_hooks(tmp_path, "nan"),), check=False, module="helper.torchrun")
    assert proc.returncode == 3  # every rank's status: a non-finite loss
    # rank 0 speaks for the node; rank 1, whose KD loss was NaN, stops with it in silence
    assert proc.stderr.splitlines() == ["train_student.py: error: KD loss is non-finite on another process at main "
                                        "epoch 1, step 2; stopped without saving over the last good checkpoint"], \
        proc.stderr[-3000:]
    assert not list(tmp_path.glob("save/student_model/*/ckpt_last.pth"))
