"""scripts/plot_corr.py and scripts/plot_tsne.py: the numbers against direct computations, the images written
from model files and run folders, different for different models, and one line when the libraries are missing."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from dataset import build_data
from helper.errors import UserError
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
