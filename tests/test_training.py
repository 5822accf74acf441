"""End to end through the real CLIs on the tiny synthetic set: outputs, formats, console lines."""

from __future__ import annotations

import json

import torch
from conftest import TINY_DATA, run_cli

from distiller_zoo import DistillKL
from distiller_zoo.registry import get_method


def test_teacher_then_student_end_to_end(tmp_path):
    proc = run_cli("train_teacher.py", [*TINY_DATA, "--model", "resnet8", "--epochs", "2", "--save_freq", "1"],
                   tmp_path)
    folder = tmp_path / "save/models/resnet8_synthetic_lr_0.05_decay_0.0005_trial_0"
    assert "epoch 1, total time" in proc.stdout and "epoch 2, total time" in proc.stdout
    assert "best accuracy:" in proc.stdout and "last accuracy:" in proc.stdout
    best = torch.load(folder / "resnet8_best.pth", weights_only=True)
    assert {"epoch", "model", "best_acc", "optimizer"} <= set(best)
    periodic = torch.load(folder / "ckpt_epoch_1.pth", weights_only=True)
    assert {"epoch", "model", "accuracy", "optimizer"} <= set(periodic) and periodic["epoch"] == 1
    last = torch.load(folder / "resnet8_last.pth", weights_only=True)
    assert {"opt", "model"} <= set(last)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"lr", "loss", "loss_cls", "train_acc", "test_acc", "test_acc_top5", "epoch_time"} <= set(rows[0])
    results = json.loads((folder / "results.json").read_text())
    assert results["last_acc"] == rows[-1]["test_acc"]
    assert results["best_acc"] == max(r["test_acc"] for r in rows)
    assert list((tmp_path / "save/tensorboard" / folder.name).glob("events.out.tfevents.*"))

    # The student finds the teacher's architecture from our own run folder name.
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(folder / "resnet8_best.pth"),
                                        "--model_s", "resnet8", "--epochs", "1"], tmp_path)
    assert "teacher accuracy:" in proc.stdout
    run = tmp_path / "save/student_model/S:resnet8_T:resnet8_synthetic_kd_r:0.1_a:0.9_b:0.0_1"
    assert (run / "resnet8_best.pth").exists() and (run / "resnet8_last.pth").exists()


def test_repdistiller_teacher_checkpoint_loads_and_weights_are_recorded(run_student, tmp_path):
    proc = run_student("--distill", "kd", "-r", "0.5", "-a", "0.5", "-b", "0")
    assert "epoch 1, total time" in proc.stdout
    run = tmp_path / "save/student_model/S:resnet8_T:resnet20_synthetic_kd_r:0.5_a:0.5_b:0.0_1"
    best = torch.load(run / "resnet8_best.pth", weights_only=True)
    assert {"epoch", "model", "best_acc"} <= set(best)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["loss"] == row["loss"]  # finite
    assert abs(row["loss"] - (0.5 * row["loss_cls"] + 0.5 * row["loss_div"])) < 1e-3 * max(1.0, row["loss"])


def test_omitted_weights_take_the_method_defaults(run_student, tmp_path):
    run_student("--distill", "kd")
    assert (tmp_path / "save/student_model/S:resnet8_T:resnet20_synthetic_kd_r:0.1_a:0.9_b:0.0_1").is_dir()
    assert get_method("st").name == "kd"


def test_distill_kl_matches_hand_computation():
    torch.manual_seed(0)
    y_s, y_t, T = torch.randn(3, 5), torch.randn(3, 5), 4.0
    expected = 0.0
    for b in range(3):
        p_t = torch.softmax(y_t[b] / T, 0)
        p_s = torch.softmax(y_s[b] / T, 0)
        expected += float((p_t * (p_t.log() - p_s.log())).sum())
    expected = expected / 3 * T * T
    assert abs(float(DistillKL(T)(y_s, y_t)) - expected) < 1e-5
