"""scripts/plot_corr.py and scripts/plot_tsne.py: the numbers against direct computations, the images written
from model files and run folders, different for different models, and one line when the libraries are missing;
the figures readable alone (title, labels, class key, colours visible on white, read back from the saved SVG),
and a run's own data set (its config.json) used without retyping it."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from dataset import build_data
from helper.errors import UserError
from helper.figures import CLASS_COLOURS, class_style, relative_luminance
from helper.plotting import class_mean_logits, correlation_difference, require, run_network
from models import build_model

DATA = ["--dataset", "synthetic", "--syn_classes", "10", "--syn_train_size", "16", "--syn_val_size", "80",
        "--num_workers", "0", "--device", "cpu", "--dpi", "40"]
PNG = b"\x89PNG\r\n\x1a\n"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_net(path: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": build_model(arch, 10).state_dict(), "arch": arch}, path)
    return path


def needs_plot_libraries() -> None:
    for module in ("matplotlib", "sklearn"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -r requirements-plot.txt)")


def test_class_mean_logits_by_loops():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(30, 5)) * 3, rng.choice([0, 1, 3, 4], size=30)  # class 2 has no image
    for standardize in (True, False):
        got = class_mean_logits(logits, labels, 5, standardize)
        for c in range(5):
            rows = []
            for z, y in zip(logits, labels, strict=True):
                if y == c:
                    if standardize:
                        mean = sum(z) / len(z)
                        std = (sum((v - mean) ** 2 for v in z) / (len(z) - 1)) ** 0.5
                        z = [(v - mean) / std for v in z]
                    rows.append(list(z))
            if rows:
                want = [sum(r[k] for r in rows) / len(rows) for k in range(5)]
                np.testing.assert_allclose(got[c], want, rtol=1e-12)
            else:
                assert np.isnan(got[c]).all()


def test_correlation_difference_by_loops():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    got = correlation_difference(t, s)
    for i in range(4):
        for j in range(4):
            assert got[i, j] == (0.0 if i == j else abs(s[i, j] - t[i, j]))


def test_run_network_returns_the_models_own_outputs():
    opt = argparse.Namespace(dataset="synthetic", syn_classes=10, syn_train_size=16, syn_val_size=40,
                             batch_size=16, num_workers=0, max_images=25)
    bundle = build_data(opt)
    torch.manual_seed(0)
    model = build_model("resnet8", 10).eval()
    feats, logits, labels = run_network(model, bundle, opt, torch.device("cpu"))
    picks = sorted(torch.randperm(40, generator=torch.Generator().manual_seed(0))[:25].tolist())
    x = torch.stack([bundle.val[i][0] for i in picks])
    with torch.no_grad():
        want_feats, want_logits = model(x, is_feat=True)
    assert feats.shape == (25, 64) and labels.tolist() == [bundle.val[i][1] for i in picks]
    np.testing.assert_allclose(feats, want_feats[-1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-5, atol=1e-6)


def test_missing_library_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if it were not installed
    with pytest.raises(UserError, match=r"^the figures need matplotlib, which is not installed: pip install -r "
                                        r"requirements-plot\.txt$"):
        require("matplotlib")


def png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 1000
    return data


def test_plot_corr_images(tmp_path, capsys):
    needs_plot_libraries()
    plot_corr = script("plot_corr")
    teacher = save_net(tmp_path / "save" / "models" / "resnet20_vanilla" / "ckpt_epoch_240.pth", "resnet20", 0)
    students = [save_net(tmp_path / f"s{seed}" / "resnet8_last.pth", "resnet8", seed) for seed in (1, 2)]
    images = []
    for student, name in ((students[0], "a.png"), (students[1], "b.png"), (students[0], "c.png")):
        plot_corr.main(["--path_t", str(teacher.parent), "--path_s", str(student), "--out", str(tmp_path / name),
                        *DATA])
        images.append(png(tmp_path / name))
    assert images[0] != images[1] and images[0] == images[2]  # drawn from the models' numbers alone
    assert "max difference" in capsys.readouterr().out
    plot_corr.main(["--path_t", str(teacher), "--path_s", str(students[0].parent), *DATA])  # default: run folder
    png(students[0].parent / "corr_synthetic.png")


def test_plot_tsne_images(tmp_path):
    needs_plot_libraries()
    plot_tsne = script("plot_tsne")
    nets = [save_net(tmp_path / f"n{seed}" / "resnet8_best.pth", "resnet8", seed) for seed in (1, 2)]
    images = []
    for net, name in ((nets[0], "a.png"), (nets[1], "b.png"), (nets[0], "c.png")):
        plot_tsne.main(["--path", str(net.parent), "--out", str(tmp_path / name), *DATA])
        images.append(png(tmp_path / name))
    assert images[0] != images[1] and images[0] == images[2]
    plot_tsne.main(["--path", str(nets[1]), "--features", "logits", "--max_images", "40", *DATA])
    png(nets[1].parent / "tsne_synthetic.png")
    with pytest.raises(UserError, match="classifies 10 classes, synthetic has 7"):
        plot_tsne.main(["--path", str(nets[0]), *DATA, "--syn_classes", "7"])


def svg_texts(path: Path) -> list[str]:
    """Every text matplotlib drew in an SVG (it writes each before its glyphs as an XML comment)."""
    return re.findall(r"<!-- (.*?) -->", path.read_text())


def run_folder(root: Path, name: str, arch: str, classes: int, seed: int, **data) -> Path:
    """A run folder as train_student/train_teacher leave it: a model file and config.json with the data set."""
    folder = root / name
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    torch.save({"model": build_model(arch, classes).state_dict(), "arch": arch}, folder / f"{arch}_last.pth")
    options = {"model_s": arch, "dataset": "synthetic", "syn_classes": classes, "num_workers": 8, **data}
    (folder / "config.json").write_text(json.dumps({"options": options, "command": "python train_student.py"}))
    return folder


RUN = "S:resnet8_T:resnet20_synthetic_kd_r:0.1_a:0.9_b:0.9_1"
SPEED = ["--num_workers", "0", "--device", "cpu"]


def test_palette_has_no_colour_near_white():
    assert all(relative_luminance(c) <= 0.5 for c in CLASS_COLOURS)  # white is 1; tab20c's greys reach 0.85
    styles = {class_style(c) for c in range(120)}
    assert len(styles) == 120  # colour and marker together tell 120 classes apart


def test_plot_tsne_reads_the_runs_data_set_and_labels_its_figure(tmp_path, capsys):
    needs_plot_libraries()
    plot_tsne = script("plot_tsne")
    folder = run_folder(tmp_path, RUN, "resnet8", 7, 1, syn_train_size=16, syn_val_size=70, syn_seed=3)
    out = tmp_path / "t.svg"
    plot_tsne.main(["--path", str(folder), "--out", str(out), *SPEED])  # no data flag: the run's own
    printed = capsys.readouterr().out
    assert (f"data set from {folder / 'config.json'}: --dataset synthetic --syn_classes 7 --syn_train_size 16 "
            f"--syn_val_size 70 --syn_seed 3\n") in printed
    texts = svg_texts(out)
    assert f"t-SNE of resnet8's penultimate features F[-1], run {RUN}" in texts
    assert "synthetic, 7 classes, 16 train / 70 test images, seed 3; 70 test images" in texts
    assert {"t-SNE dimension 1", "t-SNE dimension 2", "class"} <= set(texts)
    assert [t for t in texts if t.startswith("class ")] == [f"class {c}" for c in range(7)]  # the class key
    fills = set(re.findall(r"fill: (#[0-9a-f]{6})", out.read_text())) - {"#ffffff", "#000000"}
    assert fills == set(CLASS_COLOURS[:7])  # the points: no near-white colour
    plot_tsne.main(["--path", str(folder), "--out", str(out), "--max_images", "40", "--syn_val_size", "60", *SPEED])
    assert "--syn_val_size" not in capsys.readouterr().out  # a flag given wins over the run's
    assert "synthetic, 7 classes, 16 train / 60 test images, seed 3; 40 of 60 test images (a seeded subset)" in (
        svg_texts(out))


def test_plot_tsne_many_classes_stay_visible(tmp_path):
    needs_plot_libraries()
    plot_tsne = script("plot_tsne")
    folder = run_folder(tmp_path, "wide", "resnet8", 30, 2, syn_train_size=30, syn_val_size=90)
    out = tmp_path / "wide.svg"
    plot_tsne.main(["--path", str(folder), "--out", str(out), *SPEED])
    svg = out.read_text()
    fills = set(re.findall(r"fill: (#[0-9a-f]{6})", svg)) - {"#ffffff", "#000000"}
    assert fills and all(relative_luminance(c) <= 0.5 for c in fills)
    texts = svg_texts(out)
    assert not [t for t in texts if t.startswith("class ")]  # no 30-entry key; the caption says how to read it
    assert any(t.startswith("30 classes, each a colour and marker") for t in texts)


def test_plot_corr_reads_the_runs_data_set_and_labels_its_figure(tmp_path, capsys):
    needs_plot_libraries()
    plot_corr = script("plot_corr")
    teacher = run_folder(tmp_path, "resnet20_synthetic_lr_0.05_decay_0.0005_trial_0", "resnet20", 7, 0,
                         syn_train_size=16, syn_val_size=70, syn_seed=3)
    student = run_folder(tmp_path, RUN, "resnet8", 7, 1, syn_train_size=16, syn_val_size=70, syn_seed=3)
    out = tmp_path / "c.svg"
    plot_corr.main(["--path_t", str(teacher), "--path_s", str(student / "resnet8_last.pth"), "--out", str(out),
                    *SPEED])
    assert f"data set from {student / 'config.json'}: --dataset synthetic --syn_classes 7" in capsys.readouterr().out
    texts = svg_texts(out)
    assert "Class-correlation difference, student vs teacher" in texts
    assert f"student resnet8 (run {RUN})" in texts and f"teacher resnet20 (run {teacher.name})" in texts
    assert "synthetic, 7 classes, 16 train / 70 test images, seed 3; 70 test images" in texts
    assert {"logit of class j", "test images of class i"} <= set(texts)
    assert "|student − teacher| of the class-mean standardised logit (diagonal set to 0)" in texts  # colour bar


def test_another_dataset_on_the_command_line_takes_nothing_from_the_run(tmp_path, capsys):
    needs_plot_libraries()
    folder = run_folder(tmp_path, RUN, "resnet8", 10, 1, dataset="cifar10", syn_val_size=70)
    out = tmp_path / "t.svg"
    script("plot_tsne").main(["--path", str(folder), "--out", str(out), *DATA])
    assert "data set from" not in capsys.readouterr().out
    assert "synthetic, 10 classes, 16 train / 80 test images, seed 0; 80 test images" in svg_texts(out)
    with pytest.raises(SystemExit) as exit_info:
        script("plot_tsne").main(["--path", str(folder), "--out", str(tmp_path / "t.jpg"), *DATA])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
