"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing earlier lost."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli, write_teacher

import train_student
from helper.options import early_usage_check
from helper.script_options import check_student, student_parser
from models import build_model


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
        (["--distill", "crd", "--nce_k", "500"], "--nce_k 500 must be smaller than the training set (128 samples): "
                                                 "pass --nce_k 64"),
    ],
)
def test_bad_student_flags(run_student, args, fragment):
    one_line_error(run_student(*args, check=False), fragment)


def test_missing_path_t(tmp_path):
    one_line_error(run_cli("train_student.py", TINY_DATA, tmp_path, check=False), "--path_t")


def test_unknown_teacher_model(tmp_path):
    proc = run_cli("train_teacher.py", [*TINY_DATA, "--model", "resnet7"], tmp_path, check=False)
    one_line_error(proc, "unknown --model 'resnet7'")


def test_teacher_of_no_known_architecture_names_the_keys(tmp_path):
    path = write_teacher(tmp_path, "resnet8")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["model"]["fc.bias"]  # weights that fit no model: the keys are all there is to say
    wrong = tmp_path / "save/models/resnet20_vanilla/ckpt_epoch_240.pth"
    wrong.parent.mkdir(parents=True)
    torch.save(checkpoint, wrong)
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


# ----- sizes and counts that cannot make a data set, on every entry point (issue 22, item 13) -----
BAD_DATA_FLAGS = [
    (["--image_size", "0"], "--image_size must be positive, got 0"),
    (["--image_size", "-1"], "--image_size must be positive, got -1"),
    (["--syn_train_size", "0"], "--syn_train_size must be positive, got 0"),
    (["--syn_val_size", "0"], "--syn_val_size must be positive, got 0"),
    (["--syn_classes", "0"], "--syn_classes must be positive, got 0"),
    (["--syn_seed", "-1"], "--syn_seed must not be negative, got -1"),
]


@pytest.mark.parametrize(("script", "base"), [
    ("train_student.py", ["--path_t", "t.pth"]),
    ("train_teacher.py", []),
    ("transfer_student.py", ["--path_s", "s.pth", "--dataset", "synthetic"]),
])
@pytest.mark.parametrize(("args", "message"), BAD_DATA_FLAGS)
def test_bad_data_sizes_are_one_usage_line(tmp_path, script, base, args, message):
    proc = run_cli(script, [*TINY_DATA, *base, "--epochs", "1", *args], tmp_path, check=False)
    assert proc.returncode == 2
    one_line_error(proc, message)


@pytest.mark.parametrize(("args", "message"), [(a, m) for a, m in BAD_DATA_FLAGS if a[0] != "--image_size"])
def test_datafree_bad_data_sizes_are_one_usage_line(capsys, args, message):
    from datafree.options import parse_option

    with pytest.raises(SystemExit) as exit_info:
        parse_option(["--dataset", "synthetic", "--bn", "1", *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1, err


# ----- usage errors before the heavy imports (issue 22, item 16) -----
NO_TORCH = """
import runpy, sys
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    print(exc.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(("script", "args", "message"), [
    ("train_student.py", ["--epochs", "-1"], "--epochs must be positive, got -1"),
    ("train_student.py", ["--path_t", "t.pth", "--nce_k", "0"], "--nce_k must be positive"),
    ("train_student.py", ["--lr_decay_epochs", "a"], "argument --lr_decay_epochs: 'a' is not a comma-separated"),
    ("train_teacher.py", ["--batch_size", "0"], "--batch_size must be positive, got 0"),
    ("transfer_student.py", ["--path_s", "s.pth", "--image_size", "0"], "--image_size must be positive, got 0"),
])
def test_usage_errors_come_before_torch_is_imported(tmp_path, script, args, message):
    code = NO_TORCH.format(script=str(ROOT / script), args=args)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.split() == ["2", "False"], (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{script}: error: {message}"), err


def test_early_check_leaves_method_flags_and_abbreviations_to_the_full_parse(tmp_path):
    """A registry flag (MLKD's -d), a config key of one and an abbreviation pass the early check untouched;
    the full parse still reads them (and refuses what it always refused)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"memory_type": "momentum"}))
    args = ["--path_t", "t.pth", "--distill", "mlkd", "-d", "2", "--config", str(cfg), "--epo", "3"]
    early_usage_check(student_parser, check_student, args)  # no SystemExit
    opt, _ = train_student.parse_option(args)
    assert (opt.epochs, opt.memory_type) == (3, "momentum")
    with pytest.raises(SystemExit):
        early_usage_check(student_parser, check_student, ["--epochs", "0", "-d", "2"])


# ----- --help names the defaults, -r/-a/-b each method's (issue 22, item 16) -----
def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_student.parse_option(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert exit_info.value.code == 0
    for shown in ("--epochs EPOCHS default: 240", "(default: 64)", "e.g. 150,180,210 (default: 150,180,210)",
                  "temperature for KD (default: 4)", "negatives per sample (default: 16384)",
                  "kd=0.1/0.9/0", "crd=1/0/0.8", "dkd=1/0/1", "--seed SEED random seed (default: drawn once"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: False)" not in text


def test_nce_k_message_names_a_value_that_fits():
    assert train_student.nce_k_too_large(16384, 2000) == (
        "--nce_k 16384 must be smaller than the training set (2000 samples): pass --nce_k 1024 "
        "(or another N below 2000)")
    assert "pass --nce_k 64 " in train_student.nce_k_too_large(500, 128)
    assert "pass --nce_k 128 " in train_student.nce_k_too_large(500, 129)


# ----- train.py reads the teacher's architecture as train_student.py does (issue 22, item 15) -----
def test_train_py_takes_the_architecture_the_checkpoint_records(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teachers" / "cifar_teacher.pth"  # a folder name that names no architecture
    path.parent.mkdir()
    torch.save({"model": build_model("resnet8", 10).state_dict(), "arch": "resnet8"}, path)
    run_cli("train.py", [*TINY_DATA, "--t_model_path", str(path), "--model_s", "resnet8", "--epochs", "1"], tmp_path)
    run = tmp_path / "save/student_model/S:resnet8_T:resnet8_synthetic_kd_r:0.1_a:0.9_b:0.0_1"
    assert json.loads((run / "config.json").read_text())["teacher"]["arch"] == "resnet8"


def test_teacher_that_fits_another_architecture_names_the_flag(tmp_path):
    path = write_teacher(tmp_path, "resnet8")
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(path), "--model_t", "resnet20"], tmp_path,
                   check=False)
    err = one_line_error(proc, "holds resnet8 weights, which do not fit --model_t resnet20: pass --model_t resnet8")
    assert len(err) < 250, err
