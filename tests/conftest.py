"""Shared fixtures: a RepDistiller-format teacher checkpoint and a runner for the real CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several test processes sharing the cores: one thread each
    torch.set_num_threads(1)

# A tiny synthetic run: small enough for a CPU test, shaped exactly like a real one.
TINY_DATA = [
    "--dataset", "synthetic", "--syn_classes", "10", "--syn_train_size", "128", "--syn_val_size", "64",
    "--num_workers", "0", "--device", "cpu", "--precision", "fp32", "--batch_size", "32",
]


def run_cli(script: str, args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python <script> args`` from ``cwd`` (outputs go to ``cwd/save``), capturing output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def write_teacher(folder: Path, arch: str, num_classes: int = 10) -> Path:
    """A randomly initialised teacher saved as RepDistiller's published teachers are."""
    from models import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes)
    path = folder / "save" / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(1.0)}, path)
    return path


@pytest.fixture
def teacher_ckpt(tmp_path: Path) -> Path:
    """resnet20 teacher (10 classes) at tmp_path/save/models/resnet20_vanilla/ckpt_epoch_240.pth."""
    return write_teacher(tmp_path, "resnet20")


@pytest.fixture
def run_student(tmp_path: Path, teacher_ckpt: Path):
    """Run train_student.py on the tiny synthetic set with the resnet20 teacher, one epoch by default."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        base = [*TINY_DATA, "--path_t", str(teacher_ckpt), "--model_s", "resnet8", "--epochs", "1"]
        return run_cli("train_student.py", [*base, *args], tmp_path, check=check)

    return run


def after_prereq_check(calls: list[list[str]]) -> list[list[str]]:
    """A run script's recorded calls (each [program, *args]) after its prerequisite check, which, when the
    script got that far, is its first call and its only one."""
    checks = [i for i, call in enumerate(calls) if call[1:2] == ["scripts/check_prereqs.py"]]
    assert checks in ([], [0]), calls
    return calls[len(checks):]
