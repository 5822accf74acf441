"""--dali: DALI's CPU pipeline on real JPEG files against the torchvision path (same labels, same order, images
close), resumable and sharded like the other loaders, through train_student; without DALI, one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, write_teacher
from PIL import Image
from torchvision.transforms import functional as TF

import train_student
from dataset.dali import DaliLoader, crop_window, dali_loader, item_draw
from dataset.imagenet import build_imagenet
from helper.errors import UserError
from helper.options import dali_installed
from helper.sampler import ResumableSampler

needs_dali = pytest.mark.skipif(not dali_installed(), reason="NVIDIA DALI is not installed "
                                "(pip install -r requirements-dali.txt; requirements-dev.txt includes it)")
SIZE = 72  # above 64 px: ImageNet's transforms (resized crops), small enough for a CPU test
SIZES = [(120, 90), (90, 130), (100, 100), (140, 80), (96, 110), (130, 97)]


def jpeg_folder(root: Path) -> Path:
    """``root/{train,val}/c{0,1}/*.jpg``: 3 images a class of different sizes, each a distinct colour with a
    gradient (so a crop's place, a flip and a mix-up of images all show)."""
    for split in ("train", "val"):
        for cls in range(2):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i in range(3):
                k = 3 * cls + i
                width, height = SIZES[k]
                base = np.array([40 + 30 * k, 215 - 32 * k, 60 + (53 * k) % 150], dtype=float)
                across = np.linspace(-1, 1, width)[None, :, None] * 25
                down = np.linspace(-1, 1, height)[:, None, None] * np.array([15, -15, 8])
                pixels = np.clip(base + across + down, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = jpeg_folder(tmp_path_factory.mktemp("jpegs"))
    return build_imagenet(argparse.Namespace(data_folder=str(folder), image_size=SIZE))


def loader(bundle, train: bool = True, **kw) -> DaliLoader:
    split = bundle.train if train else bundle.val
    options = {"device": torch.device("cpu"), "image_size": SIZE, "batch_size": 4, "train": train, "num_threads": 1,
               "seed": 7, **kw}
    return DaliLoader(split.samples, bundle.mean, bundle.std, **options)


def batches(dali: DaliLoader, epoch: int = 0, start: int = 0) -> list[list[torch.Tensor]]:
    dali.set_position(epoch, start)
    return list(dali)


def reference_crop(path: str, window, flip: bool, bundle) -> torch.Tensor:
    """torchvision's resized crop of the same window (bilinear, antialiased), flip and normalisation."""
    x, y, w, h = window
    with Image.open(path) as image:
        crop = TF.resized_crop(image.convert("RGB"), y, x, h, w, [SIZE, SIZE])
    crop = TF.hflip(crop) if flip else crop
    return TF.normalize(TF.to_tensor(crop), bundle.mean, bundle.std)


@needs_dali
def test_test_images_match_the_torchvision_pipeline(bundle):
    """Resize (shorter side 82 for 72, as 256 for 224) and centre crop: DALI's triangular filter on its own
    decoder against PIL's: labels equal, pixels within 0.03 on average (normalised units; measured 0.004,
    a flipped or misplaced image is off by 0.2 and more, another image by 0.9)."""
    dali = loader(bundle, train=False)
    got = batches(dali)
    assert [len(b[1]) for b in got] == [4, 2] and len(dali) == 2
    images, labels = torch.cat([b[0] for b in got]), torch.cat([b[1] for b in got])
    expected = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])
    assert labels.tolist() == bundle.val.targets
    assert images.shape == expected.shape == (6, 3, SIZE, SIZE) and images.dtype == torch.float32
    per_image = (images - expected).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < 0.03, per_image
    assert (images.mean(dim=(2, 3)) - expected.mean(dim=(2, 3))).abs().max() < 0.03


@needs_dali
def test_training_batches_follow_the_sampler_and_crop_the_drawn_windows(bundle):
    """The torchvision path's order (ResumableSampler: seed, epoch, shard), its labels, indices for 'instance',
    and each image the torchvision resized crop of its own drawn window and flip."""
    dali = loader(bundle, variant="instance")
    got = batches(dali, epoch=3)
    order = _order(3)
    index = torch.cat([b[2] for b in got])
    assert index.tolist() == order and [len(b[1]) for b in got] == [4, 2] and len(dali) == 2
    assert torch.cat([b[1] for b in got]).tolist() == [bundle.train.targets[i] for i in order]
    flips = []
    for position, (i, image) in enumerate(zip(order, torch.cat([b[0] for b in got]), strict=True)):
        path = bundle.train.samples[i][0]
        with Image.open(path) as file:
            window, flip = item_draw(7, 0, 3, position, *file.size)
        flips.append(flip)
        difference = (image - reference_crop(path, window, flip, bundle)).abs().mean()
        assert difference < 0.01, (position, difference)  # measured 0.002 at most; 8 px aside: 0.05, flipped: 0.16
    assert 0 < sum(flips) < len(flips)  # both ways occur in this epoch, so the flip was checked


def _order(epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    sampler = ResumableSampler(range(6), num_replicas=world, rank=rank, seed=7)
    sampler.set_position(epoch, 0)
    return list(sampler)


@needs_dali
def test_resume_mid_epoch_and_shards(bundle):
    """From batch 1 on, the same batches as the whole epoch's (images, labels, indices); rank 1 of 2 takes the
    sampler's shard; another epoch is another order and other crops."""
    whole = batches(loader(bundle, variant="instance"), epoch=1)
    resumed = batches(loader(bundle, variant="instance"), epoch=1, start=1)
    assert len(resumed) == len(whole) - 1
    for a, b in zip(whole[1:], resumed, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    shard = batches(loader(bundle, variant="instance", rank=1, world_size=2), epoch=1)
    assert torch.cat([b[2] for b in shard]).tolist() == _order(1, rank=1, world=2)
    other = batches(loader(bundle, variant="instance"), epoch=2)
    assert not torch.equal(torch.cat([b[0] for b in other]), torch.cat([b[0] for b in whole]))


@needs_dali
def test_crd_variant_and_unaugmented_training_images(bundle):
    dali = loader(bundle, variant="crd", nce_k=2)
    for _, target, index, contrast in batches(dali):
        assert contrast.shape == (len(index), 3) and torch.equal(contrast[:, 0], index)  # exact: itself first
        for row, own in zip(contrast[:, 1:], target, strict=True):  # negatives from the other class
            assert all(bundle.train.targets[j] != own for j in row.tolist())
    plain = torch.cat([b[0] for b in batches(loader(bundle, augment=False))])
    expected = torch.stack([bundle.val.transform(Image.open(bundle.train.samples[i][0]).convert("RGB"))
                            for i in _order(0)])
    assert (plain - expected).abs().mean(dim=(1, 2, 3)).max() < 0.03


def test_crop_window_law():
    """Windows inside the image, areas and aspect ratios within SemCKD's ranges; a strip too thin for any of
    them falls back to a centre crop at the nearest allowed ratio."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        x, y, w, h = crop_window(120, 90, rng)
        assert 0 <= x and x + w <= 120 and 0 <= y and y + h <= 90
        assert 0.1 - 0.02 <= w * h / (120 * 90) <= 1 and 0.8 - 0.05 <= w / h <= 1.25 + 0.05
    assert crop_window(400, 10, rng, attempts=0) == (194, 0, 12, 10)  # 12 = round(10 * 1.25)
    assert item_draw(7, 0, 3, 5, 120, 90) == item_draw(7, 0, 3, 5, 120, 90) != item_draw(7, 0, 3, 6, 120, 90)


def test_without_dali_the_flag_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # as if not installed
    assert not dali_installed()
    with pytest.raises(SystemExit) as stop:
        train_student.parse_option(["--path_t", "t.pth", "--dataset", "imagenet", "--dali", "cpu"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert "--dali needs NVIDIA DALI" in err and "pip install -r requirements-dali.txt" in err


def test_dali_gpu_without_a_gpu_and_small_images_are_one_line(bundle):
    opt = argparse.Namespace(dali="gpu", batch_size=4, num_workers=1, seed=0)
    with pytest.raises(UserError, match="--dali gpu decodes on a GPU and this run has none: use --dali cpu"):
        dali_loader(opt, bundle, torch.device("cpu"), 0, 1, train=True)
    small = build_imagenet(argparse.Namespace(data_folder=str(Path(bundle.train.root).parent), image_size=32))
    with pytest.raises(UserError, match="more than 64 px"):
        dali_loader(opt, small, torch.device("cpu"), 0, 1, train=True)


@needs_dali
def test_train_student_with_dali_cpu(tmp_path, bundle):
    """One epoch of KD through train_student.py with --dali cpu: DALI's batches in the ordinary loop."""
    teacher = write_teacher(tmp_path, "ResNet18", num_classes=2)
    proc = run_cli("train_student.py", [
        "--dataset", "imagenet", "--data_folder", str(Path(bundle.train.root).parent), "--image_size", str(SIZE),
        "--dali", "cpu", "--path_t", str(teacher), "--model_s", "ResNet18", "--distill", "kd", "--epochs", "1",
        "--batch_size", "4", "--num_workers", "1", "--device", "cpu", "--precision", "fp32", "--seed", "1"], tmp_path)
    assert "data: DALI (cpu) loader" in proc.stdout and "epoch 1, total time" in proc.stdout
    assert list(tmp_path.glob("save/student_model/*/ResNet18_last.pth"))
