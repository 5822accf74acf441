"""Runs survive kills and preemption: resumed runs end bit-identical to uninterrupted ones.

Deterministic settings used here: CPU, --precision fp32, a fixed --seed, one intra-op thread
(OMP_NUM_THREADS=1, set by conftest.run_cli), --num_workers 0 unless a test says otherwise. Under them the
resumed run replays the same batches, augmentations and updates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from conftest import ROOT, TINY_DATA, run_cli

STUDENT = [*TINY_DATA, "--syn_train_size", "256", "--model_s", "resnet8", "--seed", "7", "--save_freq", "100"]


def _popen(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train_student.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=240.0):
    """Until ``path`` exists (a checkpoint written), while the process still runs."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _final_weights(folder):
    return torch.load(next(folder.rglob("resnet8_last.pth")), weights_only=True)["model"]


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _metric_epochs(folder):
    rows = next(folder.rglob("metrics.jsonl")).read_text().splitlines()
    return [(json.loads(r)["stage"], json.loads(r)["epoch"]) for r in rows]


def _reference(tmp_path, teacher, args):
    ref = tmp_path / "reference"
    ref.mkdir()
    run_cli("train_student.py", [*STUDENT, "--path_t", str(teacher), *args], ref)
    return _final_weights(ref)


def sigkill_then_resume_is_bit_identical(tmp_path, teacher_ckpt, args: list[str]) -> list[tuple[str, int]]:
    """Kill a run (SIGSTOP, then SIGKILL) once it has written a checkpoint, resume it with --resume auto:
    its final weights equal an uninterrupted run's. Returns the resumed run's (stage, epoch) rows."""
    expected = _reference(tmp_path, teacher_ckpt, args)
    work = tmp_path / "killed"
    work.mkdir()
    proc = _popen([*STUDENT, "--path_t", str(teacher_ckpt), *args], work)
    _wait_for(work / "save/student_model", proc)
    ckpt = next((work / "save/student_model").iterdir()) / "ckpt_last.pth"
    _wait_for(ckpt, proc)
    proc.send_signal(signal.SIGSTOP)  # freeze wherever it is (mid-epoch, or mid-write), then kill
    proc.kill()
    proc.wait()
    torch.load(ckpt, weights_only=True)  # the last good checkpoint is readable
    run_cli("train_student.py", [*STUDENT, "--path_t", str(teacher_ckpt), *args, "--resume", "auto"], work)
    _assert_identical(_final_weights(work), expected)
    return _metric_epochs(work)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, teacher_ckpt):
    epochs = sigkill_then_resume_is_bit_identical(tmp_path, teacher_ckpt, ["--epochs", "6", "--distill", "kd"])
    assert epochs == [("main", e) for e in range(1, 7)]


def test_kill_and_resume_with_workers_is_bit_identical(tmp_path, teacher_ckpt):
    """Two persistent workers on the per-image path: each image's augmentation comes from its own seed
    (epoch and position), so the workers started by the resumed run draw what the first run's drew."""
    args = ["--epochs", "3", "--distill", "kd", "--loader", "torchvision", "--num_workers", "2"]
    expected = _reference(tmp_path, teacher_ckpt, args)
    work = tmp_path / "killed"
    work.mkdir()
    proc = _popen([*STUDENT, "--path_t", str(teacher_ckpt), *args], work)
    _wait_for(work / "save/student_model", proc)
    ckpt = next((work / "save/student_model").iterdir()) / "ckpt_last.pth"
    _wait_for(ckpt, proc)
    proc.send_signal(signal.SIGTERM)  # a mid-epoch stop in epoch 2, or at its end
    assert proc.wait(timeout=240) == 75
    run_cli("train_student.py", [*STUDENT, "--path_t", str(teacher_ckpt), *args, "--resume", "auto"], work)
    _assert_identical(_final_weights(work), expected)
    assert _metric_epochs(work) == [("main", e) for e in range(1, 4)]


def test_sigterm_checkpoints_mid_epoch_and_resume_is_bit_identical(tmp_path, teacher_ckpt):
    # FSP has an init stage: the resumed run must continue it and the main stage exactly.
    args = ["--epochs", "3", "--distill", "fsp", "--init_epochs", "2"]
    expected = _reference(tmp_path, teacher_ckpt, args)
    work = tmp_path / "stopped"
    work.mkdir()
    proc = _popen([*STUDENT, "--path_t", str(teacher_ckpt), *args], work)
    _wait_for(work / "save/student_model", proc)
    _wait_for(next((work / "save/student_model").iterdir()) / "ckpt_last.pth", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, (out, err)
    assert "stopped by SIGTERM" in out and "--resume auto" in out
    run_cli("train_student.py", [*STUDENT, "--path_t", str(teacher_ckpt), *args, "--resume", "auto"], work)
    _assert_identical(_final_weights(work), expected)
    assert _metric_epochs(work) == [("init", 1), ("init", 2), ("main", 1), ("main", 2), ("main", 3)]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, teacher_ckpt):
    base = [*STUDENT, "--path_t", str(teacher_ckpt), "--distill", "kd"]
    run_cli("train_student.py", [*base, "--epochs", "1"], tmp_path)
    ckpt = next((tmp_path / "save/student_model").iterdir()) / "ckpt_last.pth"
    before = ckpt.read_bytes()
    proc = run_cli("train_student.py", [*base, "--epochs", "3", "--resume", "auto", "--learning_rate", "1e30"],
                   tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "loss is nan" in err or "loss is inf" in err, err
    assert "main epoch 2, step" in err, err
    assert ckpt.read_bytes() == before
