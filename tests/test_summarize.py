"""scripts/summarize.py on generated run folders: ours, an older one, RepDistiller's, unfinished and failed."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from helper.naming import student_run_name, teacher_run_name
from helper.runs import read_run

spec = importlib.util.spec_from_file_location("summarize", ROOT / "scripts" / "summarize.py")
summarize = sys.modules["summarize"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(summarize)

PAIR = {"model_t": "resnet32x4", "model_s": "resnet8x4", "dataset": "cifar100"}


def student_opt(method: str, weights: tuple, trial: str, **extra) -> dict:
    r, a, b = weights
    return {**PAIR, "distill": method, "gamma": r, "alpha": a, "beta": b, "trial": trial, "epochs": 3,
            "path_t": None, "kd_T": 4, **extra}


def write_ours(root: Path, opt: dict, test_accs: list[float], *, finished: bool = True, config: bool = True,
               teacher_acc: float | None = 79.0, epoch_time: float = 2.0, folder: Path | None = None) -> Path:
    """A run folder as train_student.py / train_teacher.py write it (without the model files)."""
    ns = argparse.Namespace(**opt)
    student = "model_s" in opt
    folder = folder or root / ("student_model" if student else "models") / (
        student_run_name(ns) if student else teacher_run_name(ns))
    folder.mkdir(parents=True)
    rows = [{"stage": "main", "epoch": i + 1, "lr": 0.05, "loss": 1.0 / (i + 1), "loss_cls": 0.5, "train_acc": 50.0,
             "test_acc": acc, "epoch_time": epoch_time} for i, acc in enumerate(test_accs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (folder / "results.json").write_text(json.dumps(
            {"best_acc": max(test_accs), "last_acc": test_accs[-1], "epochs": len(test_accs)}))
    if config:
        (folder / "config.json").write_text(json.dumps({
            "options": opt, "command": "python train_student.py", "run": {},
            "teacher": {"arch": opt.get("model_t"), "test_acc": teacher_acc} if student else None}))
    return folder


def write_repdistiller(root: Path, opt: dict, accs: list[float], save_freq: int = 1, finished: bool = True) -> Path:
    """RepDistiller's student folder: only checkpoints, accuracies as tensors, 'opt' as a Namespace."""
    folder = root / "student_model" / student_run_name(argparse.Namespace(**opt))
    folder.mkdir(parents=True)
    weights = {"w": torch.zeros(2)}
    best = max(accs)
    torch.save({"epoch": accs.index(best) + 1, "model": weights, "best_acc": torch.tensor(best)},
               folder / f"{opt['model_s']}_best.pth")
    for epoch, acc in enumerate(accs, 1):
        if epoch % save_freq == 0:
            torch.save({"epoch": epoch, "model": weights, "accuracy": torch.tensor(acc)},
                       folder / f"ckpt_epoch_{epoch}.pth")
    if finished:
        torch.save({"opt": argparse.Namespace(**opt), "model": weights}, folder / f"{opt['model_s']}_last.pth")
    return folder


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch) -> None:
    """Run from tmp_path, so summarize's default --baselines (save/models) is the test's own."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def save(tmp_path: Path) -> Path:
    root = tmp_path / "save"
    kd = (0.1, 0.9, 0.0)
    for trial, accs in (("1", [60.0, 71.0, 70.0]), ("2", [61.0, 73.0, 72.0]), ("3", [62.0, 74.5, 74.0])):
        write_ours(root, student_opt("kd", kd, trial), accs)
    write_ours(root, student_opt("crd", (1, 0.0, 0.8), "1"), [70.0, 75.0, 75.0], teacher_acc=79.5)
    write_ours(root, student_opt("crd", (1, 1.0, 0.8), "1"), [70.0, 76.0, 76.0], teacher_acc=79.5)
    # Left apart: one still running (no results.json), one that failed (non-finite accuracy).
    write_ours(root, student_opt("kd", kd, "4"), [50.0], finished=False)
    failed = write_ours(root, student_opt("kd", kd, "5"), [10.0, 20.0, 30.0])
    (failed / "results.json").write_text('{"best_acc": NaN, "last_acc": NaN, "epochs": 3}')
    # The student alone: train_teacher.py runs of resnet8x4 on CIFAR-100.
    for trial, accs in (("0", [70.0, 71.0, 72.0]), ("1", [70.0, 71.0, 73.0])):
        write_ours(root, {"model": "resnet8x4", "dataset": "cifar100", "learning_rate": 0.05, "weight_decay": 5e-4,
                          "trial": trial, "epochs": 3}, accs)
    return root


def run_summarize(args: list[str], capsys) -> str:
    assert summarize.main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_groups_average_trials_and_keep_unfinished_and_failed_apart(save, tmp_path, capsys):
    out = run_summarize([save, "--json", tmp_path / "t.json", "--csv", tmp_path / "t.csv"], capsys)
    data = json.loads((tmp_path / "t.json").read_text())
    kd = next(g for g in data["groups"] if g["method"] == "kd")
    # last: 70, 72, 74 -> mean 72, sample std 2; best: 71, 73, 74.5
    assert kd["n"] == 3 and kd["last_mean"] == pytest.approx(72.0) and kd["last_std"] == pytest.approx(2.0)
    assert kd["best_mean"] == pytest.approx((71 + 73 + 74.5) / 3)
    assert kd["best_std"] == pytest.approx(math.sqrt(((71 - 72.8333) ** 2 + (73 - 72.8333) ** 2
                                                       + (74.5 - 72.8333) ** 2) / 2), abs=1e-3)
    assert kd["teacher_acc"] == pytest.approx(79.0) and kd["seconds_per_epoch"] == pytest.approx(2.0)
    assert kd["student_alone"] == pytest.approx(72.5) and kd["student_alone_n"] == 2  # last of 72 and 73
    assert "72.00 ± 2.00 (3)" in out
    left = {Path(r["folder"]).name.rsplit("_", 1)[1]: r for r in data["left_out"]}
    assert set(left) == {"4", "5"}
    assert data["left_out"] and left["4"]["epochs_done"] == 1
    assert "Not averaged in" in out and "unfinished" in out and "failed" in out
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert {r["method"] for r in rows} == {"kd", "crd", "vanilla"}
    assert next(r for r in rows if r["method"] == "kd")["weights"] == "0.1/0.9/0"


def test_published_numbers_are_joined_by_pair_method_and_kd_term(save, tmp_path, capsys):
    run_summarize([save, "--json", tmp_path / "t.json"], capsys)
    groups = json.loads((tmp_path / "t.json").read_text())["groups"]
    kd = next(g for g in groups if g["method"] == "kd")
    crd = next(g for g in groups if g["method"] == "crd" and g["weights"][1] == 0)
    crd_kd = next(g for g in groups if g["method"] == "crd" and g["weights"][1] == 1)
    # RepDistiller's README (CRD Table 1): KD 73.33, CRD 75.51; the CRD paper's CRD+KD: 75.46 (last epoch).
    assert (kd["published"], kd["published_source"], kd["published_metric"]) == (73.33, "CRD", "last")
    assert kd["published_diff"] == pytest.approx(72.0 - 73.33)
    assert crd["published"] == 75.51 and crd["published_diff"] == pytest.approx(75.0 - 75.51)
    assert crd_kd["published"] == 75.46 and crd_kd["published_label"] == "CRD+KD"
    vanilla = next(g for g in groups if g["method"] == "vanilla")
    assert vanilla["published"] == 72.50  # resnet8x4 alone on CIFAR-100
    run_summarize([save, "--json", tmp_path / "s.json", "--source", "SimKD"], capsys)
    kd = next(g for g in json.loads((tmp_path / "s.json").read_text())["groups"] if g["method"] == "kd")
    assert kd["published"] == 74.42 and kd["published_source"] == "SimKD"


def test_crd_layout_puts_methods_down_and_pairs_across(save, tmp_path, capsys):
    out = run_summarize([save, "--layout", "crd", "--latex", tmp_path / "t.tex"], capsys)
    table, left_out = out.split("Not averaged in")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0] == "|  | resnet32x4 → resnet8x4 |"
    first_cells = [line.split("|")[1].strip() for line in lines[2:]]
    # crd has two weight settings, so its rows carry them; kd has one.
    assert first_cells == ["Teacher", "Student alone", "crd (r:1 a:0 b:0.8)", "crd (r:1 a:1 b:0.8)", "kd"]
    kd_row = next(line for line in lines if line.startswith("| kd |"))
    assert "72.00 ± 2.00 (3) [73.33]" in kd_row
    assert "79.20 [79.42]" in lines[2]  # the teacher's accuracy over the pair's five runs (79.0 x3, 79.5 x2)
    assert "72.50 ± 0.71 (2) [72.50]" in lines[3]
    tex = (tmp_path / "t.tex").read_text()
    assert "\\begin{tabular}{lc}" in tex and "72.00 $\\pm$ 2.00 (3)" in tex and "$\\rightarrow$" in tex


def test_repdistiller_and_older_folders_are_read_as_far_as_they_go(tmp_path, capsys):
    root = tmp_path / "save"
    opt = {**student_opt("kd", (0.1, 0.9, 0.0), "1"), "epochs": 4}
    rd = write_repdistiller(root, opt, [60.0, 70.0, 69.0, 68.5], save_freq=2)
    run = read_run(rd)
    assert run.source == "RepDistiller checkpoints" and run.status == "finished"
    assert (run.best_acc, run.last_acc, run.epochs_done) == (70.0, 68.5, 4)
    assert (run.teacher, run.model, run.dataset, run.method, run.weights) == (
        "resnet32x4", "resnet8x4", "cifar100", "kd", (0.1, 0.9, 0.0))
    unfinished = write_repdistiller(root, {**opt, "trial": "2"}, [60.0, 65.0], save_freq=2, finished=False)
    assert read_run(unfinished).status == "unfinished"
    older = write_ours(root, {**opt, "trial": "3"}, [60.0, 66.0, 67.0, 68.5], config=False)
    assert read_run(older).source == "ours (no config.json)" and read_run(older).last_acc == 68.5
    # The teacher's accuracy from RepDistiller's teacher checkpoint ('accuracy' as a tensor).
    teacher = tmp_path / "resnet32x4_vanilla" / "ckpt_epoch_240.pth"
    teacher.parent.mkdir()
    torch.save({"epoch": 240, "model": {}, "accuracy": torch.tensor(79.42)}, teacher)
    with_teacher = write_repdistiller(root, {**opt, "trial": "4", "path_t": str(teacher)}, [60.0, 70.0, 69.0, 68.5])
    assert read_run(with_teacher).teacher_acc == pytest.approx(79.42, abs=1e-4)
    out = run_summarize([root, "--no-published"], capsys)
    assert "68.50 ± 0.00 (2)" in out  # the RepDistiller runs: one set-up, read from their checkpoints' opt
    assert "| not recorded | 68.50 (1) |" in out  # the older run's set-up is unknown: never averaged in
    assert "published" not in out.splitlines()[2]


def test_published_results_file_is_well_formed():
    from distiller_zoo.registry import method_names

    rows = list(csv.DictReader((ROOT / "docs" / "published_results.csv").open()))
    assert len(rows) > 300
    # Published methods this project does not implement, or whose modules are still being added.
    not_here = {"dkd", "srrl", "simkd", "dcd", "rrd", "dml", "semckd"}
    from datafree.options import METHODS as DATAFREE_METHODS

    ours = set(method_names())
    assert {r["method"] for r in rows if r["source"] == "CRD"} - {"vanilla"} <= ours  # RepDistiller's 12 + CRD
    for row in rows:
        assert row["source"] and row["reference"] and row["label"]
        assert 0 < float(row["top1"]) < 100 and row["metric"] in ("last", "best", "unknown")
        assert row["dataset"] in ("cifar100", "cifar10", "imagenet", "tinyimagenet")
        assert row["kd_term"] in ("", "yes", "no")
        assert row["variant"] in ("", "optimizer:dot", "ls:True")  # what summarize.published_variant gives
        method = row["method"]
        assert method == "vanilla" or summarize.canonical_method(method) in ours | not_here or (
            method in DATAFREE_METHODS and row["source"] == "Fast-Datafree"), method
    # 13 methods x 7 same-architecture pairs (less FSP's missing one) and 12 x 6 cross-architecture pairs.
    crd = [r for r in rows if r["source"] == "CRD" and r["method"] != "vanilla"]
    assert len(crd) == 13 * 7 - 1 + 12 * 6
    assert {(r["teacher"], r["student"], r["top1"]) for r in crd if r["label"] == "CRD"} >= {
        ("resnet32x4", "resnet8x4", "75.51"), ("wrn_40_2", "ShuffleV1", "76.05")}


def test_variants_are_grouped_apart_and_joined_to_their_published_rows(tmp_path, capsys):
    """DOT and logit standardisation name themselves in the run folder: never averaged with plain KD, and
    compared with the published rows of the same variant (mdistiller's KD+DOT, the LS authors' KD+LS)."""
    root = tmp_path / "save"
    kd = (0.1, 0.9, 0.0)
    write_ours(root, student_opt("kd", kd, "1"), [70.0, 73.0])
    write_ours(root, student_opt("kd", kd, "2", optimizer="dot"), [70.0, 75.0])
    write_ours(root, student_opt("kd", (0.1, 9.0, 0.0), "3", logit_standardization=True), [70.0, 76.0])
    write_ours(root, student_opt("rrd", (1.0, 0.0, 1.0), "4", memory_type="momentum"), [70.0, 74.0])
    out = run_summarize([root, "--json", tmp_path / "t.json"], capsys)
    groups = {(g["method"], g["variant"]): g for g in json.loads((tmp_path / "t.json").read_text())["groups"]}
    assert set(groups) == {("kd", ""), ("kd", "optimizer:dot"), ("kd", "ls:True"), ("rrd", "memory_type:momentum")}
    assert all(g["n"] == 1 for g in groups.values())
    assert groups["kd", ""]["published"] == 73.33  # RepDistiller's KD row, not a DOT or LS one
    assert (groups["kd", "optimizer:dot"]["published"], groups["kd", "optimizer:dot"]["published_label"]) == (
        75.12, "KD+DOT")
    assert (groups["kd", "ls:True"]["published"], groups["kd", "ls:True"]["published_label"]) == (76.62, "KD+LS")
    assert "kd [optimizer:dot]" in out and "kd [ls:True]" in out
    assert summarize.published_variant("memory_type:momentum_optimizer:dot_ls:True") == "optimizer:dot_ls:True"


# ----- set-ups: grouped by every setting that changes the result, trials by nothing else ----------------
SMALL = {"dataset": "synthetic", "syn_classes": 10, "epochs": 2, "learning_rate": 0.05, "weight_decay": 5e-4}
LARGE = {**SMALL, "syn_classes": 100, "epochs": 30}


def alone_opt(trial: str, **extra) -> dict:
    return {"model": "resnet8x4", "trial": trial, **extra}


def test_set_ups_are_grouped_apart_with_their_differences_shown(tmp_path, capsys):
    """Runs on 10 and 100 synthetic classes for 2 and 30 epochs, and with another kd_T: never averaged;
    each row names its settings, and its teacher and student-alone figures come from its own set-up."""
    root = tmp_path / "save"
    kd = (0.1, 0.9, 0.0)
    write_ours(root, student_opt("kd", kd, "1", **SMALL), [30.0, 40.0], teacher_acc=50.0)
    write_ours(root, student_opt("kd", kd, "2", **LARGE), [50.0, 60.0], teacher_acc=70.0)
    write_ours(root, student_opt("kd", kd, "3", **LARGE), [50.0, 62.0], teacher_acc=70.0)
    write_ours(root, student_opt("kd", kd, "4", **{**LARGE, "kd_T": 8}), [50.0, 64.0], teacher_acc=70.0)
    write_ours(root, alone_opt("0", **SMALL), [20.0, 25.0])
    write_ours(root, alone_opt("1", **LARGE), [40.0, 45.0])
    # A cross-architecture pair at its own lr (RepDistiller's 0.01 for MobileNetV2) joins the table as a column.
    low_lr = {**LARGE, "learning_rate": 0.01}
    write_ours(root, {**student_opt("kd", kd, "5", **low_lr), "model_s": "MobileNetV2"}, [50.0, 58.0])
    write_ours(root, {**alone_opt("2", **low_lr), "model": "MobileNetV2"}, [40.0, 44.0])
    out = run_summarize([root, "--json", tmp_path / "t.json", "--no-published"], capsys)
    groups = {g["setup"]: g for g in json.loads((tmp_path / "t.json").read_text())["groups"]
              if g["method"] == "kd" and g["student"] == "resnet8x4"}
    assert {s: (g["n"], g["last_mean"], g["teacher_acc"], g["student_alone"]) for s, g in groups.items()} == {
        "epochs:2 kd_T:4 syn_classes:10": (1, 40.0, 50.0, 25.0),
        "epochs:30 kd_T:4 syn_classes:100": (2, 61.0, 70.0, 45.0),
        "epochs:30 kd_T:8 syn_classes:100": (1, 64.0, 70.0, 45.0)}
    assert "| epochs:30 kd_T:4 syn_classes:100 | 61.00 ± 1.41 (2) |" in out
    assert "| epochs:2 syn_classes:10 | 25.00 (1) |" in out  # the student-alone runs, told apart too

    out = run_summarize([root, "--layout", "crd", "--no-published"], capsys)
    small, large = out.split("synthetic (epochs:")[1:]  # one table per data set and schedule
    assert small.startswith("2 syn_classes:10)") and large.startswith("30 syn_classes:100)")
    assert "| Teacher | 50.00 |" in small and "| Student alone | 25.00 (1) |" in small and "| kd | 40.00 (1) |" in small
    assert "| resnet32x4 → MobileNetV2 | resnet32x4 → resnet8x4 |" in large
    assert "| Teacher | 79.00 | 70.00 |" in large and "| Student alone | 44.00 (1) | 45.00 (1) |" in large
    assert "| kd [kd_T:4] | 58.00 (1) | 61.00 ± 1.41 (2) |" in large and "| kd [kd_T:8] |  | 64.00 (1) |" in large


def test_runs_that_differ_only_in_trial_seed_and_bookkeeping_are_trials_of_one_group(tmp_path, capsys):
    root = tmp_path / "save"
    kd = (0.1, 0.9, 0.0)
    for trial, seed, workers, device, path_t, accs in (("1", 1, 0, "cpu", "a.pth", [70.0]),
                                                        ("2", 2, 8, "cuda", "b.pth", [72.0]),
                                                        ("3", 3, 4, "cuda:1", "c.pth", [74.0])):
        write_ours(root, student_opt("kd", kd, trial, seed=seed, num_workers=workers, device=device, path_t=path_t,
                                     print_freq=trial, weight_decay=5e-4), accs)
    write_ours(root, student_opt("kd", kd, "4", weight_decay=1e-4), [60.0])
    run_summarize([root, "--json", tmp_path / "t.json"], capsys)
    groups = {g["setup"]: g for g in json.loads((tmp_path / "t.json").read_text())["groups"]}
    assert {s: (g["n"], g["last_mean"]) for s, g in groups.items()} == {
        "weight_decay:0.0005": (3, 72.0), "weight_decay:0.0001": (1, 60.0)}


# ----- folders summarize must survive ----------------------------------------------------------------
def test_corrupt_run_folders_are_each_named_in_one_line_and_skipped(tmp_path, capsys):
    root = tmp_path / "save"
    kd = (0.1, 0.9, 0.0)
    write_ours(root, student_opt("kd", kd, "ok"), [70.0, 71.0])

    def corrupt(trial: str, name: str, content: bytes) -> Path:
        folder = write_ours(root, student_opt("kd", kd, trial), [60.0])
        (folder / name).write_bytes(content)
        return folder

    options = json.dumps(student_opt("kd", kd, "x"))
    bad = [
        corrupt("binary", "metrics.jsonl", b"\xff\xfe\x00\x9c\x81binary\n"),
        corrupt("rows", "metrics.jsonl", b"[1, 2]\n3\n"),
        corrupt("noepoch", "metrics.jsonl", b'{"stage": "main", "test_acc": 60.0}\n'),
        corrupt("options", "config.json", b'{"options": [1, 2], "teacher": null}'),
        corrupt("teacher", "config.json", b'{"options": ' + options.encode() + b', "teacher": "resnet32x4"}'),
        corrupt("list", "config.json", b"[1]"),
    ]
    assert summarize.main([str(root), "--no-published"]) == 0
    out, err = capsys.readouterr()
    assert "| kd | r:0.1 a:0.9 b:0 | 71.00 (1) |" in out  # the readable run is still tabled
    lines = err.strip().splitlines()
    assert len(lines) == len(bad), err
    for folder in bad:
        assert sum(str(folder) in line and "skipped" in line for line in lines) == 1, (folder, err)


def test_transfer_runs_are_tabled_as_linear_probes(save, tmp_path, capsys):
    opt = {"path_s": "save/student_model/S/resnet8x4_last.pth", "model_s": "resnet8x4", "dataset": "cifar100",
           "trial": "1", "epochs": 3, "learning_rate": 0.05, "weight_decay": 5e-4}
    write_ours(save, opt, [40.0, 50.0, 55.0], teacher_acc=None,
               folder=save / "ft" / "models" / "resnet8x4_cifar100_lr_0.05_decay_0.0005_trial_1")
    out = run_summarize([save / "ft"], capsys)
    assert "| – | resnet8x4 | cifar100 | linear probe | – | 55.00 (1) |" in out
    run_summarize([save, "--json", tmp_path / "t.json"], capsys)
    kd = next(g for g in json.loads((tmp_path / "t.json").read_text())["groups"] if g["method"] == "kd")
    assert kd["student_alone_n"] == 2  # a linear probe is no student-alone baseline
    assert "Linear probes" in run_summarize([save, "--layout", "crd"], capsys)


def test_a_run_stopped_by_a_non_finite_loss_is_failed_until_it_is_run_again(tmp_path, run_student, capsys):
    assert run_student("--learning_rate", "1e30", check=False).returncode == 3
    run_summarize([tmp_path / "save" / "student_model", "--json", tmp_path / "t.json"], capsys)
    (left,) = json.loads((tmp_path / "t.json").read_text())["left_out"]
    assert left["status"] == "failed" and "loss is" in left["note"], left
    run_student()  # the same folder, a sane lr: its record of the failure goes
    run_summarize([tmp_path / "save" / "student_model", "--json", tmp_path / "t.json"], capsys)
    data = json.loads((tmp_path / "t.json").read_text())
    assert not data["left_out"] and data["groups"][0]["n"] == 1


def test_crd_layout_finds_the_student_alone_where_train_teacher_writes_it(save, capsys):
    students = sorted((save / "student_model").glob("S:*_kd_*"))
    out = run_summarize([*students, "--layout", "crd"], capsys)
    assert "| Student alone | 72.50 ± 0.71 (2) [72.50] |" in out
    out = run_summarize([*students, "--layout", "crd", "--baselines", save / "nowhere"], capsys)
    assert "| Student alone | – [72.50] |" in out


def test_help_shows_the_description_once_and_a_bad_flag_one_line(capsys):
    with pytest.raises(SystemExit) as exit_help:
        summarize.main(["--help"])
    assert exit_help.value.code == 0
    assert capsys.readouterr().out.count("Tables across runs") == 1
    with pytest.raises(SystemExit) as exit_bad:
        summarize.main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_bad.value.code == 2 and len(err.strip().splitlines()) == 1 and "--no-such-flag" in err, err
