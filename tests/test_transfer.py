"""transfer_student.py (the linear probe of a frozen student), the STL-10 and Tiny-ImageNet builders, and
scripts/get_tinyimagenet.sh, all offline on generated data laid out as the real sets are."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image
from torchvision import datasets, transforms

import transfer_student
from dataset.base import DatasetUnavailable
from dataset.stl10 import build_stl10
from dataset.tinyimagenet import build_tinyimagenet
from helper.checkpoint import safe_load
from models import build_model, model_dict

WNIDS = ("n01443537", "n01629819", "n01641577")
FAST = ["--num_workers", "0", "--device", "cpu", "--precision", "fp32", "--batch_size", "4", "--seed", "0"]
STUDENT_RUN = "S:resnet8_T:resnet32x4_cifar100_kd_r:0.1_a:0.9_b:0.0_1"


def write_tiny(root: Path, train_per: int = 4, val_per: int = 2) -> Path:
    """tiny-imagenet-200 as unzipped: train/<wnid>/images/*.JPEG (+ boxes), val/images + val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    lines = []
    for wnid in WNIDS:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(train_per):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for _ in range(val_per):
            lines.append(f"val_{len(lines)}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (base / "val" / "images").mkdir(parents=True)
    for line in lines:
        name = line.split("\t")[0]
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(base / "val" / "images" / name)
    (base / "val" / "val_annotations.txt").write_text("".join(reversed(lines)))  # not in class order
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    return base


def write_stl10(root: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """stl10_binary/ as torchvision reads it: column-major 3x96x96 uint8 images, labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    return folder


def write_student(root: Path, classes: int = 100) -> Path:
    """A resnet8 student saved as train_student.py saves one (no 'arch': the folder names it)."""
    torch.manual_seed(0)
    path = root / "save" / "student_model" / STUDENT_RUN / "resnet8_last.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": build_model("resnet8", classes).state_dict(), "epoch": 240}, path)
    return path


def opts(**kw) -> object:
    import argparse

    return argparse.Namespace(**{"data_folder": "./data", "image_size": None, **kw})


# ----- the probe --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(model_dict))
def test_probe_replaces_the_classifier_of_every_model(arch):
    torch.manual_seed(0)
    model = build_model(arch, 100).eval()
    head = transfer_student.attach_probe(model, 32, 7)
    assert [p for p in model.parameters() if p.requires_grad] == [head.weight, head.bias]
    assert head.bias.abs().sum() == 0 and 0.005 < head.weight.std().item() < 0.02  # N(0, 0.01), as the reference
    with torch.no_grad():
        feats, logits = model(torch.randn(2, 3, 32, 32), is_feat=True)
    assert logits.shape == (2, 7) and torch.allclose(head(feats[-1]), logits, atol=1e-5)


def test_probe_trains_the_head_only_and_backbone_statistics_stay():
    torch.manual_seed(0)
    model = build_model("resnet8", 100)
    head = transfer_student.attach_probe(model, 32, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    objective = transfer_student.ProbeObjective(model, head, contextlib.nullcontext)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    objective.train_mode()
    assert head.training and not model.training and not model.bn1.training
    for _ in range(3):
        x, y = torch.randn(8, 3, 32, 32) * 3 + 1, torch.randint(0, 5, (8,))
        _, _, loss = objective([x, y])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BN running statistics and counters included: nothing else moved
    model.train()  # what the reference does: its BatchNorms then drift on the new data
    model(torch.randn(8, 3, 32, 32) * 3 + 1)
    assert not torch.equal(model.bn1.running_mean, before["bn1.running_mean"])


# ----- the data sets ------------------------------------------------------------------------------------
def test_stl10_arrays_are_torchvisions_images_resized(tmp_path):
    folder = write_stl10(tmp_path)
    bundle = build_stl10(opts(data_folder=str(tmp_path), image_size=32))
    raw = np.fromfile(folder / "train_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    resize = transforms.Resize((32, 32))
    want = np.stack([np.asarray(resize(Image.fromarray(np.ascontiguousarray(img)))) for img in raw])
    images, labels = bundle.train_array
    assert np.array_equal(images, want) and labels.tolist() == [i % 10 for i in range(20)]
    assert bundle.val_array[0].shape == (10, 32, 32, 3) and bundle.num_classes == 10
    assert bundle.mean == (0.4467, 0.4398, 0.4066)
    large = build_stl10(opts(data_folder=str(tmp_path), image_size=96))  # larger than 64: resized per image
    assert large.train_array is None and np.array_equal(large.train.data, raw)
    assert large.train[0][0].shape == (3, 96, 96)


def test_stl10_truncated_or_offline_is_one_line(tmp_path, monkeypatch):
    folder = write_stl10(tmp_path / "cut")
    with open(folder / "test_X.bin", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(DatasetUnavailable, match="test_X.bin/test_y.bin are truncated or corrupt"):
        build_stl10(opts(data_folder=str(tmp_path / "cut")))
    monkeypatch.setattr(datasets.STL10, "url", "http://127.0.0.1:9/stl10_binary.tar.gz")
    with pytest.raises(DatasetUnavailable) as err:
        build_stl10(opts(data_folder=str(tmp_path / "none")))
    message = str(err.value)
    assert "\n" not in message and "STL10 download failed" in message
    assert "stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin}" in message


def test_tinyimagenet_layouts_give_the_same_samples(tmp_path):
    raw = write_tiny(tmp_path / "raw")
    arranged = shutil.copytree(raw, tmp_path / "arranged" / "tiny-imagenet-200")
    subprocess.run(["sh", str(ROOT / "scripts" / "get_tinyimagenet.sh"), str(arranged.parent)], check=True,
                   capture_output=True)
    bundles = [build_tinyimagenet(opts(data_folder=str(root))) for root in (tmp_path / "raw", arranged)]
    for split in ("train", "val"):
        a, b = (sorted((Path(p).name, t) for p, t in getattr(bundle, split).samples) for bundle in bundles)
        assert a == b
    assert bundles[0].num_classes == 3 and len(bundles[0].val) == 6 and bundles[0].image_size == 64
    x, y = bundles[0].val[0]
    assert x.shape == (3, 64, 64) and bundles[0].val.classes[y] in WNIDS
    with pytest.raises(DatasetUnavailable, match="get_tinyimagenet.sh"):
        build_tinyimagenet(opts(data_folder=str(tmp_path / "nothing")))


# ----- transfer_student.py ------------------------------------------------------------------------------
@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """Run transfer_student.main here, in tmp_path, and give the test session its signal handlers back
    (the trainer installs its own, to checkpoint on SIGTERM/SIGINT)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.chdir(tmp_path)
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_transfer_on_tinyimagenet_both_layouts_with_resume(tmp_path, in_process, capsys):
    student = write_student(tmp_path)
    raw = write_tiny(tmp_path / "raw")
    common = ["--path_s", str(student.parent), "--dataset", "tinyimagenet", "--trial", "1", *FAST]
    transfer_student.main([*common, "--data_folder", str(raw.parent), "--epochs", "1"])
    transfer_student.main([*common, "--data_folder", str(raw.parent), "--epochs", "2", "--resume"])
    assert "=> resumed from" in capsys.readouterr().out
    run = tmp_path / "save" / "ft" / "models" / "resnet8_tinyimagenet_lr_0.05_decay_0.0005_trial_1"
    resumed = rows_of(run)
    last = safe_load(run / "resnet8_last.pth")
    assert [row["epoch"] for row in resumed] == [1, 2] and "optimizer" in last and last["arch"] == "resnet8"
    assert list((tmp_path / "save" / "ft" / "tensorboard" / run.name).glob("events.out.tfevents.*"))
    assert json.loads((run / "config.json").read_text())["options"]["dataset"] == "tinyimagenet"
    original = safe_load(student)["model"]
    assert last["model"]["fc.weight"].shape == (3, 64)
    assert all(torch.equal(last["model"][k], v) for k, v in original.items() if not k.startswith("fc."))

    arranged = shutil.copytree(raw, tmp_path / "arranged" / "tiny-imagenet-200")
    subprocess.run(["sh", str(ROOT / "scripts" / "get_tinyimagenet.sh"), str(arranged.parent)], check=True,
                   capture_output=True)
    transfer_student.main([*common, "--data_folder", str(arranged.parent), "--epochs", "2", "--overwrite"])
    assert "3 classes, 12 train / 6 val images at 32x32" in capsys.readouterr().out
    straight = rows_of(run)
    for a, b in zip(resumed, straight, strict=True):  # same data in either layout; resuming changes nothing
        assert a["test_acc"] == b["test_acc"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert torch.allclose(safe_load(run / "resnet8_last.pth")["model"]["fc.weight"], last["model"]["fc.weight"])


def test_transfer_on_stl10_in_memory(tmp_path, in_process, capsys):
    student = write_student(tmp_path)
    write_stl10(tmp_path / "data")
    transfer_student.main(["--path_s", str(student), "--model_s", "resnet8", "--data_folder", "data",
                           "--epochs", "1", *FAST])
    out = capsys.readouterr().out
    assert "to stl10: 10 classes, 20 train / 10 val images at 32x32" in out and "data: memory loader" in out
    run = tmp_path / "save" / "ft" / "models" / "resnet8_stl10_lr_0.05_decay_0.0005_trial_0"
    assert safe_load(run / "resnet8_best.pth")["model"]["fc.weight"].shape == (10, 64)


@pytest.mark.parametrize(("args", "message"), [
    ([], "--path_s is required"),
    (["--path_s", "x.pth", "--dataset", "imagenet"], "unknown --dataset 'imagenet'"),
    (["--path_s", "x.pth", "--sync_bn"], "--sync_bn does nothing here"),
])
def test_option_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        transfer_student.parse_option(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


def test_schedule_defaults_are_the_references(tmp_path):
    student = write_student(tmp_path)
    opt, model = transfer_student.parse_option(["--path_s", str(student)])
    assert (opt.model_s, opt.dataset, opt.epochs, opt.lr_decay_epochs, opt.save_freq) == (
        "resnet8", "stl10", 120, [30, 60, 90], 50)
    assert (opt.learning_rate, opt.batch_size, opt.weight_decay, opt.momentum, opt.trial) == (0.05, 64, 5e-4, 0.9, "0")
    assert opt.save_folder == "save/ft/models/resnet8_stl10_lr_0.05_decay_0.0005_trial_0"
    torch.save({"model": build_model("ShuffleV2", 100).state_dict(), "arch": "ShuffleV2"}, tmp_path / "s.pth")
    assert transfer_student.parse_option(["--path_s", str(tmp_path / "s.pth")])[0].learning_rate == 0.01


# ----- scripts/get_tinyimagenet.sh ------------------------------------------------------------------------
def run_getter(shell: str, script: str, dest: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([shell, str(ROOT / script), str(dest)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def zip_of(tree: Path, archive: Path) -> dict[str, str]:
    """``tree`` zipped as the real archive is (one top folder); the size and md5 the getter should expect."""
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree.parent))
    data = archive.read_bytes()
    return {"TINYIMAGENET_SIZE": str(len(data)), "TINYIMAGENET_MD5": hashlib.md5(data).hexdigest()}


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("script", ["scripts/get_tinyimagenet.sh", "data/get_tinyimagenet.sh"])
def test_getter_checks_unpacks_and_arranges_an_archive(tmp_path, shell, script):
    checked = zip_of(write_tiny(tmp_path / "src"), tmp_path / "dest" / "tiny-imagenet-200.zip")
    proc = run_getter(shell, script, tmp_path / "dest", **checked)
    assert proc.returncode == 0, proc.stderr
    base = tmp_path / "dest" / "tiny-imagenet-200"
    assert proc.stdout.splitlines()[-1] == f"{base}: 3 classes, 12 train and 6 val images"
    for wnid in WNIDS:
        assert sorted(p.name for p in (base / "train" / wnid).iterdir()) == [f"{wnid}_{i}.JPEG" for i in range(4)]
        assert len(list((base / "val" / wnid).glob("*.JPEG"))) == 2
    assert not (base / "val" / "images").exists() and not (tmp_path / "dest" / "tiny-imagenet-200.unzip").exists()
    again = run_getter(shell, script, tmp_path / "dest", **checked)  # arranged already: nothing changes
    assert again.returncode == 0 and again.stdout == proc.stdout.splitlines()[-1] + "\n"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_getter_offline_or_bad_archive_is_one_line(tmp_path, shell):
    url = "http://127.0.0.1:9/tiny-imagenet-200.zip"  # nothing listens there: refused at once
    proc = run_getter(shell, "scripts/get_tinyimagenet.sh", tmp_path / "offline", TINYIMAGENET_URL=url)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"download of {url} failed" in proc.stderr
    assert f"put tiny-imagenet-200.zip (from {url}) in {tmp_path / 'offline'}/" in proc.stderr
    assert list((tmp_path / "offline").iterdir()) == []  # no partial file left
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tiny-imagenet-200.zip").write_bytes(b"not the archive")
    proc = run_getter(shell, "scripts/get_tinyimagenet.sh", tmp_path / "bad")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "is 15 bytes, expected 248100043" in proc.stderr
    checked = {"TINYIMAGENET_SIZE": "15", "TINYIMAGENET_MD5": "0" * 32}
    proc = run_getter(shell, "scripts/get_tinyimagenet.sh", tmp_path / "bad", **checked)
    assert proc.returncode == 1 and f"has md5 {hashlib.md5(b'not the archive').hexdigest()}" in proc.stderr


def test_semckd_launcher_flags_run_two_processes(tmp_path):
    """SemCKD's --multiprocessing-distributed, --gpu_id and --dist-url through the launcher train_student.py
    uses: two gloo processes on CPU share the node's --batch_size, only rank 0 prints, and the run records
    the node's batch and both processes."""
    from test_distributed import free_port

    student = write_student(tmp_path)
    write_stl10(tmp_path / "data")
    proc = run_cli("transfer_student.py", ["--path_s", str(student), "--model_s", "resnet8", "--data_folder", "data",
                                           "--epochs", "1", *FAST, "--batch_size", "8", "--multiprocessing-distributed",
                                           "--gpu_id", "0,1", "--dist-url", f"tcp://127.0.0.1:{free_port()}"],
                   tmp_path)
    assert "starting 2 CPU (gloo) processes" in proc.stdout and proc.stdout.count("best accuracy") == 1
    run = tmp_path / "save" / "ft" / "models" / "resnet8_stl10_lr_0.05_decay_0.0005_trial_0"
    record = json.loads((run / "config.json").read_text())
    assert (record["options"]["batch_size"], record["world_size"]) == (8, 2)
    assert [row["epoch"] for row in rows_of(run)] == [1]
