"""scripts/quickstart_summary.py: the quickstart's closing lines from given figures, and from run folders."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("quickstart_summary", ROOT / "scripts" / "quickstart_summary.py")
qs = sys.modules["quickstart_summary"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(qs)

TEACHER = qs.Run("resnet20", 5000, 15, 88.1, 88.3, "bf16")


def student(last: float, best: float | None = None) -> qs.Run:
    return qs.Run("resnet8", 1000, 40, last, last if best is None else best, "bf16")


def test_figures_what_they_mean_and_the_gaps():
    lines = qs.summary_lines(TEACHER, student(75.2, 75.4), student(31.7))
    assert lines == [
        "test accuracy on the synthetic set (100 classes, the same 1,000 test images, bf16):",
        "  teacher resnet20 (5,000 images, 15 epochs):          88.10 (best 88.30)",
        "  student resnet8 with KD (1,000 images, 40 epochs):   75.20 (best 75.40)",
        "  student resnet8 alone (1,000 images, 40 epochs):     31.70 (best 31.70)",
        "Both students saw the same 1,000 images; the KD one also matched the soft labels of a teacher that saw 5,000.",
        "KD gain: +43.50 points over the student alone; the teacher stays 12.90 ahead (ranges: docs/quickstart.md).",
    ]


@pytest.mark.parametrize(("teacher", "kd", "alone"), [
    (38.4, 32.7, 49.8),  # the 2-core EPYC run: the student alone beat both
    (70.0, 72.0, 30.0),  # the student with KD above its teacher
    (88.0, 40.0, 31.0),  # KD above alone, but by less than CLEAR_GAP (10 points)
])
def test_a_run_that_does_not_show_the_promise_says_so(teacher, kd, alone):
    lines = qs.summary_lines(qs.Run("resnet20", 5000, 15, teacher, teacher), student(kd), student(alone))
    assert lines[-1].startswith("Unexpected: the demo should show teacher > student with KD > student alone + 10")
    assert f"KD gain: {kd - alone:+.2f} points" in "\n".join(lines)


def test_same_images_one_epoch_and_no_precision_recorded():
    teacher = qs.Run("resnet20", 1000, 1, 90.0, 90.0)
    lines = qs.summary_lines(teacher, qs.Run("resnet8", 1000, 1, 60.0, 61.0), qs.Run("resnet8", 1000, 1, 20.0, 20.0))
    assert lines[0] == "test accuracy on the synthetic set (100 classes, the same 1,000 test images):"
    assert lines[1].startswith("  teacher resnet20 (1,000 images, 1 epoch):")
    assert lines[4].endswith("matched the soft labels of its teacher.")


def write_run(folder: Path, options: dict, last: float, best: float, epochs: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"best_acc": best, "last_acc": last, "epochs": epochs}))
    (folder / "config.json").write_text(json.dumps({"options": options, "precision": "fp32"}))
    return folder


def test_main_reads_the_three_run_folders(tmp_path, capsys):
    common = {"dataset": "synthetic", "syn_classes": 100}
    teacher = write_run(tmp_path / "t", {**common, "model": "resnet20", "syn_train_size": 5000, "epochs": 15},
                        86.5, 87.0, 15)
    kd = write_run(tmp_path / "kd", {**common, "model_s": "resnet8", "model_t": "resnet20", "syn_train_size": 1000,
                                     "epochs": 40}, 70.0, 71.0, 40)
    alone = write_run(tmp_path / "a", {**common, "model": "resnet8", "syn_train_size": 1000, "epochs": 40},
                      28.0, 29.5, 40)
    assert qs.read_run(kd) == qs.Run("resnet8", 1000, 40, 70.0, 71.0, "fp32")
    qs.main([str(teacher), str(kd), str(alone)])
    out = capsys.readouterr().out
    assert "  teacher resnet20 (5,000 images, 15 epochs):          86.50 (best 87.00)" in out
    assert "  student resnet8 alone (1,000 images, 40 epochs):     28.00 (best 29.50)" in out
    assert "KD gain: +42.00 points over the student alone; the teacher stays 16.50 ahead" in out
    assert "Unexpected" not in out
