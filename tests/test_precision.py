"""Precision choice: bf16 only where the hardware runs it fast, fp32 otherwise; every precision trains."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from helper import precision
from helper.errors import UserError
from helper.precision import cpu_has_fast_bf16, resolve_precision
from helper.setup import setup_runtime

CPU = torch.device("cpu")
CAPABILITY_CHECKS = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """torch.cpu reports neither AMX nor AVX512-BF16, as on an older CPU."""
    for name in CAPABILITY_CHECKS:
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)


def test_capability_check_reads_both_instruction_sets(cpu_without_bf16, monkeypatch):
    assert not cpu_has_fast_bf16()
    for name in CAPABILITY_CHECKS:
        with monkeypatch.context() as patch:
            patch.setattr(torch.cpu, name, lambda: True, raising=False)
            assert cpu_has_fast_bf16()


def test_auto_is_bf16_only_where_fast(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert [resolve_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


def test_run_setup_falls_back_to_fp32(cpu_without_bf16, capsys):
    opt = argparse.Namespace(device="cpu", precision="auto", sync_bn=False, seed=0, channels_last=True, compile=False)
    rt = setup_runtime(opt)
    assert rt.precision == "fp32" and "precision fp32" in capsys.readouterr().out
    assert not rt.grad_scaler().is_enabled()


@pytest.mark.parametrize("name, method", [("fp32", ["--distill", "kd"]), ("fp16", ["--distill", "kd"]),
                                          ("bf16", ["--distill", "crd", "--nce_k", "8"])])
def test_each_precision_trains_with_finite_losses(run_student, tmp_path, name, method):
    # Two steps of 8: float16 convolution backward has no fast CPU kernel (about 100x float32's time).
    proc = run_student("--precision", name, "--syn_train_size", "16", "--batch_size", "8", *method)
    assert f"precision {name}" in proc.stdout and "data: memory loader" in proc.stdout
    [metrics] = (tmp_path / "save/student_model").glob("*/metrics.jsonl")
    [row] = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(math.isfinite(row[key]) for key in ("loss", "loss_cls", "loss_div", "loss_kd", "test_loss"))


@pytest.fixture
def apple_gpu(monkeypatch):
    """A Mac with Apple silicon: no CUDA, torch's mps backend available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


def test_auto_device_is_mps_on_a_mac_and_trains_in_fp32(apple_gpu, monkeypatch):
    assert precision.resolve_device("auto") == torch.device("mps")
    assert precision.resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # a fast CPU does not decide mps's precision
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("bf16", torch.device("mps")) == "bf16"  # asked for explicitly: as asked


def test_auto_prefers_cuda_and_falls_back_to_cpu_without_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert precision.resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert precision.resolve_device("auto") == CPU


def test_mps_where_there_is_none_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"--device mps: Apple's Metal \(mps\) backend is not available here"):
        precision.resolve_device("mps")
    with pytest.raises(UserError, match="use auto, cpu, cuda, cuda:N or mps"):
        precision.resolve_device("tpu")
