"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing earlier lost."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import TINY_DATA, run_cli, write_teacher


def one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model_s", "resnet9"], "unknown --model_s 'resnet9'"),
        (["--model_t", "nope"], "unknown --model_t 'nope'"),
        (["--distill", "magic"], "unknown --distill 'magic'"),
        (["--dataset", "mnist"], "mnist"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--batch_size", "-1"], "--batch_size must be positive"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["-a", "-1"], "-a must not be negative"),
        (["-b", "-0.5"], "-b must not be negative"),
        (["-r", "-2"], "-r must not be negative"),
        (["--lr_decay_epochs", "150;180"], "150;180"),
        (["--distill", "hint", "--hint_layer", "9"], "hint_layer"),
        (["--distill", "crd", "--nce_k", "500"], "--nce_k 500"),
    ],
)
def test_bad_student_flags(run_student, args, fragment):
    one_line_error(run_student(*args, check=False), fragment)


def test_missing_path_t(tmp_path):
    one_line_error(run_cli("train_student.py", TINY_DATA, tmp_path, check=False), "--path_t")


def test_unknown_teacher_model(tmp_path):
    proc = run_cli("train_teacher.py", [*TINY_DATA, "--model", "resnet7"], tmp_path, check=False)
    one_line_error(proc, "unknown --model 'resnet7'")


def test_teacher_of_another_architecture_names_the_keys(tmp_path):
    path = write_teacher(tmp_path, "resnet8")
    wrong = tmp_path / "save/models/resnet20_vanilla/ckpt_epoch_240.pth"
    wrong.parent.mkdir(parents=True)
    path.rename(wrong)
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(wrong)], tmp_path, check=False)
    one_line_error(proc, "does not fit architecture 'resnet20'", "missing keys: layer1.1")


def test_teacher_with_another_number_of_classes(tmp_path):
    path = write_teacher(tmp_path, "resnet20", num_classes=100)
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(path)], tmp_path, check=False)
    one_line_error(proc, "shape mismatch", "fc.weight (100, 64) vs (10, 64)")


def test_truncated_checkpoint(tmp_path, teacher_ckpt):
    data = teacher_ckpt.read_bytes()
    teacher_ckpt.write_bytes(data[: len(data) // 2])
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(teacher_ckpt)], tmp_path, check=False)
    one_line_error(proc, "truncated or corrupt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "save/models/resnet20_vanilla/ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": {}, "payload": _RunsCode()}, path, pickle_module=pickle)
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(path)], tmp_path, check=False)
    one_line_error(proc, "refusing to load")
    assert not (tmp_path / "pwned").exists()


def test_missing_dataset_folder(tmp_path, teacher_ckpt):
    args = ["--dataset", "folder", "--data_folder", str(tmp_path / "nothing"), "--device", "cpu",
            "--path_t", str(teacher_ckpt)]
    one_line_error(run_cli("train_student.py", args, tmp_path, check=False), "nothing")


def test_unwritable_output_folder(tmp_path, teacher_ckpt):
    # A file where the output folder should be: unwritable even for root.
    (tmp_path / "save/student_model").write_text("not a folder")
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(teacher_ckpt)], tmp_path, check=False)
    one_line_error(proc, "cannot write")


def test_finished_run_is_not_overwritten(run_student, tmp_path):
    run_student("--distill", "kd")
    run = next((tmp_path / "save/student_model").iterdir())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    one_line_error(run_student("--distill", "kd", check=False), "already holds a finished run", "--overwrite")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    run_student("--distill", "kd", "--overwrite")
