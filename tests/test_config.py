"""--config FILE (file < command line), config.json in every run folder, and RepDistiller's drop-in details:
r:1 for an omitted -r, accuracies as tensors in checkpoints, --tb_freq accepted."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from conftest import run_cli

import train_student
import train_teacher
from helper.errors import EXIT_USAGE
from helper.naming import student_run_name

STUDENT = ["--path_t", "t.pth", "--model_s", "resnet8"]


def write(path, text: str):
    path.write_text(text)
    return str(path)


def test_config_file_sets_options_and_the_command_line_wins(tmp_path):
    cfg = write(tmp_path / "c.json", json.dumps({"epochs": 7, "learning_rate": 0.2, "distill": "crd",
                                                 "lr_decay_epochs": [3, 5], "channels_last": False}))
    opt, spec = train_student.parse_option([*STUDENT, "--config", cfg, "--epochs", "3"])
    assert (opt.epochs, opt.learning_rate, opt.distill, opt.lr_decay_epochs) == (3, 0.2, "crd", [3, 5])
    assert opt.channels_last is False and spec.name == "crd"
    opt, _ = train_student.parse_option([*STUDENT, "--config", cfg, "--channels_last", "--learning_rate", "0.1"])
    assert opt.channels_last is True and opt.learning_rate == 0.1


def test_yaml_config_for_both_scripts(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is in requirements.txt")
    cfg = write(tmp_path / "c.yaml", "model: resnet8\nepochs: 2\nweight_decay: 1e-4\nlr_decay_epochs: 1,2\n"
                                     "precision: fp32\ntrial: 3\n")
    opt = train_teacher.parse_option(["--config", cfg])
    assert (opt.model, opt.epochs, opt.weight_decay, opt.lr_decay_epochs, opt.precision, opt.trial) == (
        "resnet8", 2, 1e-4, [1, 2], "fp32", "3")
    assert opt.model_name == "resnet8_cifar100_lr_0.05_decay_0.0001_trial_3"


@pytest.mark.parametrize("content, message", [
    ('{"learning_rte": 0.1}', "unknown option 'learning_rte' (did you mean 'learning_rate'?)"),
    ('{"epochs": "ten"}', "option 'epochs': 'ten' is not a valid value"),
    ('{"precision": "bf17"}', "option 'precision': 'bf17' is not one of auto, bf16, fp16, fp32"),
    ('{"channels_last": "yes"}', "option 'channels_last' is a switch: give true or false"),
    ('[1, 2]', "must hold a mapping of option names to values"),
    ('{"epochs": ', "is not valid JSON"),
])
def test_bad_config_is_one_line(tmp_path, capsys, content, message):
    cfg = write(tmp_path / "c.json", content)
    with pytest.raises(SystemExit) as exc:
        train_student.parse_option([*STUDENT, "--config", cfg])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and err.startswith(f"train_student.py: error: --config {cfg}: ")


def test_omitted_r_is_repdistillers_integer_one():
    opt, _ = train_student.parse_option([*STUDENT, "--distill", "crd", "-a", "0", "-b", "0.8"])
    assert opt.gamma == 1 and isinstance(opt.gamma, int)
    assert student_run_name(opt) == "S:resnet8_T:None_cifar100_crd_r:1_a:0.0_b:0.8_1"
    opt, _ = train_student.parse_option([*STUDENT, "--distill", "crd", "-r", "1", "-a", "0", "-b", "0.8"])
    assert "_crd_r:1.0_a:0.0_b:0.8_" in student_run_name(opt)  # argparse makes an explicit -r 1 a float, as RD's
    opt, _ = train_student.parse_option([*STUDENT, "--distill", "kd"])
    assert "_kd_r:0.1_a:0.9_b:0.0_" in student_run_name(opt)  # a method default other than 1 stays as it is


def test_tb_freq_is_accepted_with_one_line(capsys):
    opt = train_teacher.parse_option(["--tb_freq", "500"])
    assert opt.tb_freq == 500
    assert capsys.readouterr().err.strip() == (
        "note: --tb_freq has no effect here (TensorBoard gets one point per epoch)")
    train_student.parse_option([*STUDENT, "--tb_freq", "100"])
    assert "--tb_freq has no effect" in capsys.readouterr().err


def test_run_folder_records_its_configuration_and_repeats_from_it(run_student, tmp_path):
    cfg = write(tmp_path / "c.json", json.dumps({"learning_rate": 0.02, "save_freq": 1}))
    proc = run_student("--distill", "crd", "-a", "0", "-b", "0.8", "--nce_k", "16", "--config", cfg,
                       "--tb_freq", "10", "--seed", "5")
    assert "--tb_freq has no effect" in proc.stderr
    run = tmp_path / "save/student_model/S:resnet8_T:resnet20_synthetic_crd_r:1_a:0.0_b:0.8_1"
    record = json.loads((run / "config.json").read_text())
    opts = record["options"]
    assert (opts["learning_rate"], opts["save_freq"], opts["gamma"], opts["seed"], opts["epochs"]) == (
        0.02, 1, 1, 5, 1)
    assert opts["nce_k"] == 16 and opts["model_t"] == "resnet20" and "model_name" not in opts
    assert record["run"]["model_name"] == run.name and record["run"]["config_file"] == cfg
    assert "train_student.py" in record["command"] and "--config" in record["command"]
    assert record["versions"]["torch"] == torch.__version__ and record["device"] == "cpu"
    assert record["precision"] == "fp32" and record["world_size"] == 1
    assert record["code"] is None or len(record["code"]["git_commit"]) == 40
    teacher_line = next(line for line in proc.stdout.splitlines() if line.startswith("teacher accuracy:"))
    assert f"{record['teacher']['test_acc']:.2f}" == teacher_line.split()[-1]
    teacher_file = record["options"]["path_t"]  # the file's own hash: a table can tell teachers apart by it
    assert record["teacher"]["file"] == teacher_file
    assert record["teacher"]["sha256"] == hashlib.sha256((tmp_path / teacher_file).read_bytes()).hexdigest()
    # RepDistiller's checkpoint fields are tensors (its users call .item()).
    best = torch.load(run / "resnet8_best.pth", weights_only=True)
    periodic = torch.load(run / "ckpt_epoch_1.pth", weights_only=True)
    results = json.loads((run / "results.json").read_text())
    assert torch.is_tensor(best["best_acc"]) and best["best_acc"].dim() == 0
    assert best["best_acc"].item() == pytest.approx(results["best_acc"], abs=1e-4)
    assert torch.is_tensor(periodic["accuracy"]) and periodic["accuracy"].item() == pytest.approx(
        results["last_acc"], abs=1e-4)
    # The same run again from its config.json: same options, same folder name (r:1), same result.
    again = run_cli("train_student.py", ["--config", str(run / "config.json"), "--trial", "2"], tmp_path)
    assert "best accuracy" in again.stdout
    run2 = run.with_name(run.name[:-1] + "2")
    record2 = json.loads((run2 / "config.json").read_text())
    assert {k: v for k, v in record2["options"].items() if k != "trial"} == {
        k: v for k, v in opts.items() if k != "trial"}
    assert json.loads((run2 / "results.json").read_text()) == results


def test_resume_keeps_the_record_of_the_start(run_student, tmp_path):
    run_student("--epochs", "1", "--seed", "3")
    run = next((tmp_path / "save/student_model").iterdir())
    first = (run / "config.json").read_text()
    run_student("--epochs", "2", "--resume", "--seed", "3")
    assert (run / "config.json").read_text() == first


# ----- config files that held a null, bytes or a non-string key (issue 22, item 13) -----
BAD_FILES = [
    ("null.json", b'{"epochs": null}', "option 'epochs' is null: give a value, or leave it out for its default"),
    ("null.yaml", b"batch_size: null\n", "option 'batch_size' is null"),
    ("bytes.yaml", bytes(range(256)), "is not a text file (byte 128 is not UTF-8)"),
    ("bytes.json", b'{"epochs": "\xff"}', "is not a text file"),
    ("key.yaml", b"1: 2\n", "option names are words such as 'epochs', not 1 (int)"),
    ("key.json.yaml", b"{[1, 2]: 3}\n", "is not valid YAML"),
]


def one_config_line(err: str, script: str, name: str, message: str) -> None:
    assert len(err.strip().splitlines()) == 1, (name, err)
    assert err.startswith(f"{script}: error: --config {name}: ") and message in err, (name, err)


@pytest.mark.parametrize("script, base", [
    ("train_student.py", ["--path_t", "t.pth"]),
    ("transfer_student.py", ["--path_s", "s.pth"]),
])
def test_bad_config_file_is_one_usage_line(tmp_path, script, base):
    pytest.importorskip("yaml", reason="PyYAML is in requirements.txt")
    for name, content, message in BAD_FILES:
        (tmp_path / name).write_bytes(content)
        proc = run_cli(script, [*base, "--config", name], tmp_path, check=False)
        assert proc.returncode == EXIT_USAGE, (name, proc.stderr)
        one_config_line(proc.stderr, script, name, message)


def test_bad_config_file_is_one_usage_line_for_datafree(tmp_path, monkeypatch, capsys):
    pytest.importorskip("yaml", reason="PyYAML is in requirements.txt")
    from datafree.options import parse_option

    monkeypatch.chdir(tmp_path)
    for name, content, message in BAD_FILES:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit) as exit_info:
            parse_option(["--bn", "1", "--config", name])
        assert exit_info.value.code == EXIT_USAGE
        one_config_line(capsys.readouterr().err, "datafree_kd.py", name, message)
    proc = run_cli("datafree_kd.py", ["--bn", "1", "--config", "bytes.yaml"], tmp_path, check=False)
    assert proc.returncode == EXIT_USAGE
    one_config_line(proc.stderr, "datafree_kd.py", "bytes.yaml", "is not a text file")


def test_null_is_the_default_where_the_default_is_none(tmp_path):
    cfg = write(tmp_path / "c.json", json.dumps({"seed": None, "learning_rate": None, "dot_delta": None}))
    opt, _ = train_student.parse_option([*STUDENT, "--config", cfg])
    assert opt.seed is None and opt.learning_rate == 0.05 and opt.dot_delta is None
