"""KamalEngine's examples/slim interface (the 10 methods on wrn_40_2 -> wrn_16_2): its spellings --t_model_path,
--r/--a/--b and --distill svd parse to our options, train.py runs as its README types it, scripts/run_cifar_wrn.sh
issues its train_distill.sh experiment, and its published table is in docs/published_results.csv."""

from __future__ import annotations

import csv
import shlex

import pytest
from conftest import ROOT, TINY_DATA, run_cli, write_teacher
from test_shell_scripts import run, script_lines, tree  # noqa: F401 - tree is a fixture

from train_student import parse_option

# KamalEngine examples/slim/train_distill.sh: (its --distill, its weights) in order.
KAMAL = [("kd", "-r 0.1 -a 0.9 -b 0"), ("hint", "-a 0 -b 100"), ("attention", "-a 0 -b 1000"), ("sp", "-a 0 -b 3000"),
         ("cc", "-a 0 -b 0.02"), ("vid", "-a 0 -b 1"), ("rkd", "-a 0 -b 1"), ("pkt", "-a 0 -b 30000"),
         ("nst", "-a 0 -b 50"), ("svd", "-a 0 -b 10")]
OURS = {"sp": "similarity", "cc": "correlation", "svd": "kdsvd"}
TABLE = {"kd": 75.2, "hint": 73.3, "attention": 73.4, "similarity": 74.3, "correlation": 73.1, "vid": 73.6,
         "rkd": 73.7, "pkt": 75.2, "nst": 73.7, "kdsvd": 73.5}


def options(argv: list[str]) -> dict:
    opt, spec = parse_option(argv)
    return {**vars(opt), "method": spec.name}


def test_kamalengine_spellings_parse_to_our_options():
    theirs = options(["--distill", "kd", "--t_model_path", "t.pth", "--r", "1", "--a", "0.9", "--b", "0"])
    ours = options(["--distill", "kd", "--path_t", "t.pth", "-r", "1", "-a", "0.9", "-b", "0"])
    assert theirs == ours and (ours["path_t"], ours["gamma"], ours["alpha"], ours["beta"]) == ("t.pth", 1, 0.9, 0)
    svd = options(["--distill", "svd", "--t_model_path", "t.pth", "-a", "0", "-b", "10"])
    assert svd == options(["--distill", "kdsvd", "--path_t", "t.pth", "-a", "0", "-b", "10"])
    assert svd["distill"] == "kdsvd"
    assert options(["--distill", "hint", "--path_t", "t.pth", "--a", "0", "--b", "100"])["beta"] == 100


def test_train_py_runs_kamalengines_readme_command(tmp_path):
    teacher = write_teacher(tmp_path, "wrn_40_2")
    run_cli("train.py", ["--distill", "svd", "--t_model_path", str(teacher), "--r", "1", "--a", "0", "--b", "10",
                         *TINY_DATA, "--syn_train_size", "32", "--epochs", "1"], tmp_path)
    folder = tmp_path / "save" / "student_model" / "S:wrn_16_2_T:wrn_40_2_synthetic_kdsvd_r:1.0_a:0.0_b:10.0_1"
    assert (folder / "results.json").exists()


@pytest.mark.parametrize("how", ["sh", "dash", "direct"])
def test_run_cifar_wrn_issues_kamalengines_experiment(tree, how):  # noqa: F811
    proc, calls = run(how, tree, "scripts/run_cifar_wrn.sh", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    teacher = "./save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth"
    lines = script_lines("scripts/run_cifar_wrn.sh", ["--epochs", "2"])
    assert calls == [[teacher if arg == "$T" else arg for arg in line] for line in lines]
    assert len(calls) == len(KAMAL)
    for call, (method, weights) in zip(calls, KAMAL, strict=True):
        assert call[:2] == ["python", "train_student.py"]
        opt = options(call[2:])
        assert (opt["path_t"], opt["model_t"], opt["model_s"], opt["distill"]) == (
            teacher, "wrn_40_2", "wrn_16_2", OURS.get(method, method))
        expected = options(["--path_t", teacher, "--model_t", "wrn_40_2", "--model_s", "wrn_16_2", "--distill", method,
                            *shlex.split(weights), "--trial", "1", "--epochs", "2"])
        assert opt == expected
    proc, calls = run("sh", tree, "scripts/run_cifar_wrn.sh", TEACHER="mine.pth")
    assert all(call[call.index("--path_t") + 1] == "mine.pth" for call in calls)


def test_published_table_is_in_the_results_file():
    rows = [r for r in csv.DictReader((ROOT / "docs" / "published_results.csv").open()) if r["source"] == "KamalEngine"]
    methods = {r["method"]: float(r["top1"]) for r in rows if r["method"] != "vanilla"}
    assert methods == TABLE
    assert {(r["student"], float(r["top1"])) for r in rows if r["method"] == "vanilla"} == {
        ("wrn_40_2", 75.61), ("wrn_16_2", 73.26)}
    assert all(r["teacher"] == "wrn_40_2" and r["student"] == "wrn_16_2" for r in rows if r["method"] != "vanilla")
    assert {r["kd_term"] for r in rows if r["method"] == "kd"} == {"yes"}
