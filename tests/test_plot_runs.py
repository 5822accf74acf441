"""scripts/plot_runs.py: one figure per quantity, every run overlaid, PNG and SVG; each figure readable alone
(human titles naming the data set, a step lr drawn as steps, whole epochs, unfinished runs marked), read back
from the saved SVG."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_summarize import student_opt, write_ours

spec = importlib.util.spec_from_file_location("plot_runs", ROOT / "scripts" / "plot_runs.py")
plot_runs = sys.modules["plot_runs"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_runs)


def test_writes_one_nonempty_image_per_quantity_and_format(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (requirements-plot.txt)")
    root = tmp_path / "save"
    for method, weights in (("kd", (0.1, 0.9, 0.0)), ("crd", (1, 0.0, 0.8))):
        for trial in ("1", "2"):
            write_ours(root, student_opt(method, weights, trial), [50.0, 60.0, 65.0])
    out = tmp_path / "plots"
    assert plot_runs.main([str(root), "--out", str(out)]) == 0
    quantities = {"test_acc", "loss", "loss_cls", "lr", "train_acc", "epoch_time"}
    for quantity in quantities:
        for fmt in ("png", "svg"):
            path = out / f"{quantity}.{fmt}"
            assert path.stat().st_size > 1000, path
    assert (out / "test_acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "test_acc.svg").read_text()
    assert svg.count("crd r:1 a:0 b:0.8") == 2 and svg.count("kd r:0.1 a:0.9 b:0") == 2  # four runs in the legend
    assert "4 runs, 12 files" in capsys.readouterr().out


def test_series_groups_values_by_quantity_and_stage(tmp_path):
    run = plot_runs.Run(folder=tmp_path, kind="student", source="ours", method="abound", rows=[
        {"stage": "init", "epoch": 1, "loss_init": 3.0},
        {"stage": "main", "epoch": 1, "loss": 2.0, "test_acc": 10.0},
        {"stage": "main", "epoch": 2, "loss": 1.0, "test_acc": float("nan")}])
    data = plot_runs.series([run])
    assert data["init_loss_init"][0] == ([1], [3.0])
    assert data["loss"][0] == ([1, 2], [2.0, 1.0]) and data["test_acc"][0] == ([1], [10.0])


def test_missing_matplotlib_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plot_runs.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "plot_runs.py needs matplotlib: pip install -r requirements-plot.txt"


def svg_texts(svg: str) -> list[str]:
    """Every text matplotlib drew (it writes each before its glyphs as an XML comment)."""
    return re.findall(r"<!-- (.*?) -->", svg)


def x_tick_labels(svg: str) -> list[str]:
    return re.findall(r'<g id="xtick_\d+">.*?<!-- (.*?) -->', svg, re.S)


def line_paths(svg: str, colour: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """(style, vertices) of every stroked path in ``colour`` (the runs' lines and their legend samples)."""
    out = []
    for d, style in re.findall(r'<path d="([^"]*)"[^>]*style="([^"]*)"', svg):
        if f"stroke: {colour}" in style:
            out.append((style, [(float(x), float(y)) for x, y in re.findall(r"[ML] ([\d.-]+) ([\d.-]+)", d)]))
    return out


def three_epoch_run(root: Path, trial: str, lrs: list[float], finished: bool = True, **extra) -> Path:
    """A 3-epoch kd run whose metrics.jsonl holds ``lrs`` (one per epoch done)."""
    folder = write_ours(root, student_opt("kd", (0.1, 0.9, 0.0), trial, **extra), [50.0, 60.0, 65.0][:len(lrs)],
                        finished=finished)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    rows = [{**row, "lr": lr} for row, lr in zip(rows, lrs, strict=True)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_figures_name_quantity_and_data_set_step_lr_whole_epochs_unfinished_marked(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (requirements-plot.txt)")
    root, out = tmp_path / "save", tmp_path / "plots"
    three_epoch_run(root, "1", [0.05, 0.05, 0.005])
    three_epoch_run(root, "2", [0.05, 0.05], finished=False)
    assert plot_runs.main([str(root), "--out", str(out), "--format", "svg"]) == 0
    acc = (out / "test_acc.svg").read_text()
    texts = svg_texts(acc)
    assert "Test accuracy (%)" in texts and "cifar100" in texts and "test_acc" not in texts  # human title, data set
    assert "epoch" in texts
    assert x_tick_labels(acc) and all(t.lstrip("−-").isdigit() for t in x_tick_labels(acc))  # no 1.25 on 3 epochs
    assert "kd r:0.1 a:0.9 b:0 #1" in texts and "kd r:0.1 a:0.9 b:0 #2 (unfinished, epoch 2/3)" in texts
    styles = [style for style, _ in line_paths(acc, "#1f77b4")]  # both runs are kd: one colour
    assert sum("stroke-dasharray" in s for s in styles) == 2  # the unfinished run's line and its legend sample
    lr = (out / "lr.svg").read_text()
    assert "Learning rate" in svg_texts(lr)
    finished = max((v for _, v in line_paths(lr, "#1f77b4")), key=len)  # the 3-epoch run: the longest line
    verticals = [(a, b) for a, b in itertools.pairwise(finished) if a[0] == b[0] and a[1] != b[1]]
    assert len(verticals) == 1  # one drop, drawn where epoch 2 ends, not a ramp from epoch 2 to 3


def test_runs_of_different_data_sets_are_drawn_apart(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (requirements-plot.txt)")
    root, out = tmp_path / "save", tmp_path / "plots"
    three_epoch_run(root, "1", [0.05] * 3, dataset="synthetic", syn_classes=10, syn_train_size=200, syn_val_size=50)
    three_epoch_run(root, "2", [0.05] * 3, dataset="synthetic", syn_classes=100, syn_train_size=200, syn_val_size=50)
    assert plot_runs.main([str(root), "--out", str(out), "--format", "svg", "--only", "test_acc"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["test_acc_synthetic-10-classes-200-train-50-test-images.svg",
                     "test_acc_synthetic-100-classes-200-train-50-test-images.svg"]
    for name, classes, trial in ((files[0], 10, "#1"), (files[1], 100, "#2")):
        texts = svg_texts((out / name).read_text())
        assert f"synthetic, {classes} classes, 200 train / 50 test images" in texts
        assert [t for t in texts if t.startswith("kd ")] == [f"kd r:0.1 a:0.9 b:0 {trial}"]  # its own run alone
    assert "2 data sets, each in figures of its own" in capsys.readouterr().out


def test_quantity_names_fall_back_to_spelled_out_keys():
    from helper.figures import quantity_name

    assert quantity_name("lr") == "Learning rate" and quantity_name("test_acc") == "Test accuracy (%)"
    assert quantity_name("init_loss_init") == "Loss, init stage"
    assert quantity_name("init_lr") == "Learning rate, init stage" and quantity_name("loss_xyz") == "Loss xyz"


def test_a_corrupt_run_folder_is_skipped_in_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is optional (requirements-plot.txt)")
    root = tmp_path / "save"
    write_ours(root, student_opt("kd", (0.1, 0.9, 0.0), "1"), [50.0, 60.0])
    broken = write_ours(root, student_opt("kd", (0.1, 0.9, 0.0), "2"), [50.0, 60.0])
    (Path(broken) / "metrics.jsonl").write_bytes(b"\x00\xff\xfe binary")
    assert plot_runs.main([str(root), "--out", str(tmp_path / "plots")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plot_runs.py: skipped ") and "_2" in err[0]
    assert (tmp_path / "plots" / "test_acc.svg").is_file()
