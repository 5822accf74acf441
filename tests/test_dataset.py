"""dataset/: synthetic generator, index/CRD wrappers, loaders, and the CIFAR / folder / ImageNet readers
exercised offline on files laid out exactly like the real ones."""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
import torchvision.datasets.utils
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

import dataset.cifar10
from dataset import (
    DATASETS,
    ContrastSampleDataset,
    DatasetUnavailable,
    InstanceDataset,
    add_data_args,
    build_data,
    make_train_loader,
    make_val_loader,
)
from dataset.base import channel_stats
from dataset.cifar100 import (
    CIFAR100Instance,
    CIFAR100InstanceSample,
    get_cifar100_dataloaders,
    get_cifar100_dataloaders_sample,
)
from dataset.synthetic import generate


def data_opt(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    return parser.parse_args(list(args))


class Labelled(Dataset):
    """The smallest dataset the wrappers accept: items (index as a tensor, label) and ``.targets``."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets
        self.data = "forwarded"

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index)]), self.targets[index]


@pytest.fixture(scope="module")
def synthetic():
    return build_data(data_opt("--dataset", "synthetic", "--syn_classes", "10", "--syn_train_size", "120",
                               "--syn_val_size", "40"))


# --------------------------------------------------------------------------- synthetic

def test_synthetic_is_seeded_and_cifar_shaped():
    (x, y), (xv, yv) = generate(12, 90, 30, seed=3)
    (x2, y2), (xv2, yv2) = generate(12, 90, 30, seed=3)
    assert x.shape == (90, 32, 32, 3) and xv.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and set(y) == set(range(12))
    assert x.tobytes() == x2.tobytes() and xv.tobytes() == xv2.tobytes()
    assert np.array_equal(y, y2) and np.array_equal(yv, yv2)
    (x3, _), _ = generate(12, 90, 30, seed=4)
    assert not np.array_equal(x, x3)
    # val is a fresh draw from the same distribution, not a copy of train
    assert not any((xv[:, None] == x[None]).all(axis=(2, 3, 4)).any(axis=1))
    assert abs(x.mean() - xv.mean()) < 10
    # the val split does not depend on how many training images were asked for
    assert np.array_equal(generate(12, 50, 30, seed=3)[1][0], xv)


def test_synthetic_bundle(synthetic):
    assert synthetic.num_classes == 10 and synthetic.image_size == 32
    assert len(synthetic.train) == 120 and len(synthetic.val) == 40
    x, y = synthetic.train_array
    assert synthetic.val_array[0].shape == (40, 32, 32, 3)
    assert (synthetic.mean, synthetic.std) == channel_stats(x)
    img, target = synthetic.train[0]
    assert img.shape == (3, 32, 32) and target == y[0] and list(synthetic.train.targets) == list(y)
    val_img, _ = synthetic.val[0]  # test transform: normalisation only, so it inverts exactly
    mean, std = torch.tensor(synthetic.mean)[:, None, None], torch.tensor(synthetic.std)[:, None, None]
    raw = torch.from_numpy(synthetic.val_array[0][0]).permute(2, 0, 1).float() / 255
    assert torch.allclose(val_img * std + mean, raw, atol=1e-5)


# --------------------------------------------------------------------------- wrappers

def test_instance_dataset_returns_index_and_forwards():
    ds = InstanceDataset(Labelled([0, 1, 1, 2]))
    img, target, index = ds[2]
    assert index == 2 and target == 1 and img.item() == 2.0
    assert len(ds) == 4 and ds.targets == [0, 1, 1, 2] and ds.data == "forwarded"


def test_contrast_exact():
    labels = [i % 5 for i in range(100)]
    ds = ContrastSampleDataset(Labelled(labels), k=30, mode="exact")
    torch.manual_seed(0)
    for index in (0, 17, 99):
        img, target, got, idx = ds[index]
        assert got == index and idx.dtype == np.int64 and idx.shape == (31,)
        assert idx[0] == index
        assert all(labels[j] != target for j in idx[1:])
        assert len(set(idx[1:])) == 30  # without replacement: the pool (80) exceeds k
    assert [len(p) for p in ds.cls_positive] == [20] * 5
    drawn = set(np.concatenate([ds.contrast_indices(17)[1:] for _ in range(20)]))
    assert drawn == set(ds.cls_negative[labels[17]])  # every negative reachable
    torch.manual_seed(5)
    first = ds.contrast_indices(3)
    torch.manual_seed(5)
    assert np.array_equal(first, ds.contrast_indices(3))  # follows torch's seeding
    assert all(len(n) == 80 and set(np.asarray(labels)[n]) == set(range(5)) - {c}
               for c, n in enumerate(ds.cls_negative))


def test_contrast_relax_positive_is_same_class():
    labels = [i % 4 for i in range(40)]
    ds = ContrastSampleDataset(Labelled(labels), k=5, mode="relax")
    torch.manual_seed(0)
    positives = {int(ds[6][3][0]) for _ in range(50)}
    assert all(labels[p] == labels[6] for p in positives) and len(positives) > 1


def test_contrast_percent_limits_the_pool():
    labels = [i % 4 for i in range(80)]
    ds = ContrastSampleDataset(Labelled(labels), k=10, percent=0.25)
    assert [len(n) for n in ds.cls_negative] == [15] * 4
    torch.manual_seed(0)
    for index in range(0, 80, 7):
        idx = ds[index][3]
        assert idx[0] == index and set(idx[1:]) <= set(ds.cls_negative[labels[index]])
        assert len(set(idx[1:])) == 10


def test_contrast_unbalanced_classes():
    labels = [0] * 50 + [1] * 5 + [2] * 20
    ds = ContrastSampleDataset(Labelled(labels), k=30, mode="relax")
    assert [len(p) for p in ds.cls_positive] == [50, 5, 20]
    assert [len(n) for n in ds.cls_negative] == [25, 70, 55]
    torch.manual_seed(0)
    idx = ds[0][3]  # class 0: 25 negatives < k = 30, so drawn with replacement
    assert len(idx) == 31 and labels[idx[0]] == 0 and all(labels[j] != 0 for j in idx[1:])
    idx = ds[52][3]
    assert labels[idx[0]] == 1 and len(set(idx[1:])) == 30 and all(labels[j] != 1 for j in idx[1:])


def test_contrast_rejects_bad_settings():
    with pytest.raises(ValueError, match="k=100"):
        ContrastSampleDataset(Labelled([0, 1] * 50), k=100)
    with pytest.raises(ValueError, match="two classes"):
        ContrastSampleDataset(Labelled([3] * 10), k=2)
    with pytest.raises(ValueError, match="mode"):
        ContrastSampleDataset(Labelled([0, 1] * 5), k=2, mode="fuzzy")
    ContrastSampleDataset(Labelled([0, 1] * 5), k=100, is_sample=False)  # RD's plain-index mode needs no k


# --------------------------------------------------------------------------- loaders

@pytest.mark.parametrize("variant,width", [("plain", 2), ("instance", 3), ("crd", 4)])
def test_train_loader_variants(synthetic, variant, width):
    loader = make_train_loader(synthetic, variant, 16, 0, nce_k=20, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    assert len(batch) == width
    assert batch[0].shape == (16, 3, 32, 32) and batch[1].dtype == torch.int64
    if width > 2:
        assert torch.equal(batch[1], torch.tensor([synthetic.train.targets[i] for i in batch[2]]))
    if width == 4:
        assert batch[3].shape == (16, 21) and torch.equal(batch[3][:, 0], batch[2])


def test_loader_options(synthetic):
    loader = make_train_loader(synthetic, "crd", 8, 2, nce_k=10, sampler=range(24), drop_last=True)
    assert loader.persistent_workers and loader.sampler == range(24) and loader.drop_last
    batches = list(loader)  # through worker processes
    assert len(batches) == 3 and batches[0][3].shape == (8, 11)
    val = make_val_loader(synthetic, 25, 0)
    assert [len(b[0]) for b in val] == [25, 15] and not val.persistent_workers
    with pytest.raises(ValueError, match="plain"):
        make_train_loader(synthetic, "mixup", 8, 0)


def test_registry_and_flags():
    assert set(DATASETS) == {"cifar100", "cifar10", "synthetic", "folder", "imagenet", "tinyimagenet", "stl10"}
    opt = data_opt()
    assert (opt.dataset, opt.data_folder, opt.image_size, opt.num_workers) == ("cifar100", "./data", None, 8)
    assert (opt.syn_classes, opt.syn_train_size, opt.syn_val_size, opt.syn_seed) == (100, 5000, 1000, 0)
    with pytest.raises(ValueError, match="cifar100, cifar10, synthetic, folder, imagenet"):
        build_data(argparse.Namespace(dataset="mnist"))


# --------------------------------------------------------------------------- CIFAR

def write_fake_cifar(root: Path, cls: type[datasets.CIFAR10], per_file: int, classes: int) -> np.ndarray:
    """CIFAR's own pickle layout (rows of 3072 = R, G, B planes); returns the images as N×32×32×3."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "fine_labels" if cls is datasets.CIFAR100 else "labels"
    images = []
    for name, _ in cls.train_list + cls.test_list:
        hwc = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        entry = {"batch_label": name, "data": hwc.transpose(0, 3, 1, 2).reshape(per_file, 3072),
                 label_key: [i % classes for i in range(per_file)], "filenames": [f"{i}.png" for i in range(per_file)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        images.append(hwc)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(classes)]}, f, protocol=2)
    return np.concatenate(images)


@pytest.fixture
def skip_md5(monkeypatch):
    """Fake files cannot match CIFAR's md5s: accept any file that exists (a test-only patch)."""
    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.utils, "check_integrity", exists)


@pytest.fixture
def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise urllib.error.URLError("test: no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fail)


@pytest.fixture
def no_network(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("test: network used")

    monkeypatch.setattr(urllib.request, "urlopen", fail)


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_missing_cifar_fails_fast_in_one_line(tmp_path, no_download, name):
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable) as err:
        build_data(data_opt("--dataset", name, "--data_folder", str(tmp_path)))
    assert time.monotonic() - start < dataset.cifar10.PROBE_TIMEOUT_S + 5
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert ("cifar-100-python/{train,test,meta}" in message) == (name == "cifar100")
    assert ".tar.gz" in message


def test_cifar_without_download_names_the_files(tmp_path):
    with pytest.raises(DatasetUnavailable, match="not found.*cifar-100-python/{train,test,meta}"):
        CIFAR100Instance(str(tmp_path), download=False)


def test_corrupted_cifar_is_reported(tmp_path, no_download):
    write_fake_cifar(tmp_path, datasets.CIFAR100, 10, 100)
    with pytest.raises(DatasetUnavailable, match="corrupted"):
        build_data(data_opt("--dataset", "cifar100", "--data_folder", str(tmp_path)))


def test_fake_cifar100_loads_through_torchvision(tmp_path, skip_md5, no_download, monkeypatch):
    images = write_fake_cifar(tmp_path / "data", datasets.CIFAR100, 40, 100)
    bundle = build_data(data_opt("--dataset", "cifar100", "--data_folder", str(tmp_path / "data")))
    assert bundle.num_classes == 100 and len(bundle.train) == 40 and len(bundle.val) == 40
    assert np.array_equal(bundle.train_array[0], images[:40]) and np.array_equal(bundle.val_array[0], images[40:])
    assert bundle.train_array[1].dtype == np.int64 and bundle.train_array[1][:3].tolist() == [0, 1, 2]
    assert bundle.mean == (0.5071, 0.4867, 0.4408) and bundle.train[0][0].shape == (3, 32, 32)

    monkeypatch.chdir(tmp_path)  # RD's loaders read ./data/
    train, test = get_cifar100_dataloaders(batch_size=8, num_workers=0)
    assert len(next(iter(train))) == 2 and test.batch_size == 4
    train, test, n_data = get_cifar100_dataloaders(batch_size=8, num_workers=0, is_instance=True)
    assert len(next(iter(train))) == 3 and n_data == 40
    train, test, n_data = get_cifar100_dataloaders_sample(batch_size=8, num_workers=0, k=20, mode="relax")
    img, target, index, idx = next(iter(train))
    assert idx.shape == (8, 21) and n_data == 40
    sample = CIFAR100InstanceSample("./data", k=5, is_sample=False)
    assert len(sample[3]) == 3 and sample.data.shape == (40, 32, 32, 3)


def test_fake_cifar10_archive_is_unpacked(tmp_path, skip_md5, no_network):
    """A dropped-in cifar-10-python.tar.gz is unpacked without any network access."""
    staging = tmp_path / "staging"
    images = write_fake_cifar(staging, datasets.CIFAR10, 6, 10)
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / datasets.CIFAR10.filename, "w:gz") as tar:
        tar.add(staging / datasets.CIFAR10.base_folder, arcname=datasets.CIFAR10.base_folder)
    bundle = build_data(data_opt("--dataset", "cifar10", "--data_folder", str(data)))
    assert bundle.num_classes == 10 and len(bundle.train) == 30 and len(bundle.val) == 6
    assert np.array_equal(bundle.train_array[0], images[:30]) and bundle.std == (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------- folder / imagenet

def write_png_tree(root: Path, size: int, classes=("cat", "dog", "fox"), per_class: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")


def test_folder_small_images(tmp_path):
    write_png_tree(tmp_path, 40)
    bundle = build_data(data_opt("--dataset", "folder", "--data_folder", str(tmp_path)))
    assert bundle.num_classes == 3 and bundle.image_size == 40 and bundle.train_array is None
    assert abs(bundle.mean[0] - 0.5) < 0.05 and abs(bundle.std[0] - 0.29) < 0.03  # uniform noise
    assert bundle.train[0][0].shape == (3, 40, 40) and bundle.val[5][1] == 1
    loader = make_train_loader(bundle, "crd", 4, 0, nce_k=6)
    img, target, index, idx = next(iter(loader))
    assert img.shape == (4, 3, 40, 40) and idx.shape == (4, 7)


def test_folder_large_images_and_flag(tmp_path):
    write_png_tree(tmp_path, 40)
    bundle = build_data(data_opt("--dataset", "folder", "--data_folder", str(tmp_path), "--image_size", "96"))
    assert bundle.image_size == 96 and bundle.mean == (0.485, 0.456, 0.406)
    assert bundle.train[0][0].shape == (3, 96, 96) and bundle.val[0][0].shape == (3, 96, 96)


def test_imagenet_layout(tmp_path):
    write_png_tree(tmp_path, 40, classes=("n01440764", "n01443537"), per_class=2)
    bundle = build_data(data_opt("--dataset", "imagenet", "--data_folder", str(tmp_path)))
    assert bundle.num_classes == 2 and bundle.image_size == 224 and bundle.std == (0.229, 0.224, 0.225)
    assert bundle.train[0][0].shape == (3, 224, 224) and bundle.val[0][0].shape == (3, 224, 224)
    img, target, index = next(iter(make_train_loader(bundle, "instance", 4, 0)))
    assert img.shape == (4, 3, 224, 224) and torch.equal(target, torch.tensor(
        [bundle.train.targets[i] for i in index]))


@pytest.mark.parametrize("name", ["folder", "imagenet"])
def test_missing_or_mismatched_folders(tmp_path, name):
    with pytest.raises(DatasetUnavailable, match=r"no images found .*train.*\{train,val\}/<class>"):
        build_data(data_opt("--dataset", name, "--data_folder", str(tmp_path)))
    (tmp_path / "bare" / "train" / "cat").mkdir(parents=True)  # a class folder without images
    with pytest.raises(DatasetUnavailable, match="no images found"):
        build_data(data_opt("--dataset", name, "--data_folder", str(tmp_path / "bare")))
    write_png_tree(tmp_path / "odd", 8)
    shutil.rmtree(tmp_path / "odd" / "val" / "dog")
    with pytest.raises(DatasetUnavailable, match="same class folders"):
        build_data(data_opt("--dataset", name, "--data_folder", str(tmp_path / "odd")))


def test_help_names_the_data_sets_build_data_knows():
    """helper.options lists them for --help without importing the data sets (the early usage check)."""
    from dataset import DATASETS
    from helper.options import DATASET_NAMES

    assert tuple(DATASETS) == DATASET_NAMES
