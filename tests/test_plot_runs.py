"""scripts/plot_runs.py: one figure per quantity, every run overlaid, PNG and SVG."""

from __future__ import annotations

import importlib.util
import sys

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
