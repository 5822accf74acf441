"""STL-10's labelled splits (5,000 train, 8,000 test images of 96x96, 10 classes) through torchvision,
downloaded when missing, resized to the network's input size (the distillers' transfer protocol).

torchvision checks the md5 of every file on each load, the 2.6 GB unlabelled split included; the
labelled files are checked here by their sizes instead (whole 96x96x3 images, one label each).
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
from torchvision import datasets, transforms
from torchvision.datasets import utils as tv_utils

from .base import ArrayDataset, DataBundle, DatasetUnavailable, Stats, crop_flip_transforms
from .cifar10 import PROBE_TIMEOUT_S
from .folder import SMALL

MEAN: Stats = (0.4467, 0.4398, 0.4066)
STD: Stats = (0.2603, 0.2566, 0.2712)
NATIVE = 96
IMAGE_BYTES = 3 * NATIVE * NATIVE
SPLIT_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}


class _LabelledSTL10(datasets.STL10):
    """torchvision's STL10 that trusts :func:`check_files` instead of hashing all five files."""

    def _check_integrity(self) -> bool:
        return True


def _where(root: str) -> str:
    files = ",".join(name for pair in SPLIT_FILES.values() for name in pair)
    return (f"put {datasets.STL10.filename} (from {datasets.STL10.url}) or its unpacked "
            f"{datasets.STL10.base_folder}/{{{files}}} in {os.path.abspath(root)}")


def check_files(root: str) -> bool:
    """Whether the labelled files are there; raises when one is there but cannot be whole."""
    folder = os.path.join(root, datasets.STL10.base_folder)
    paths = [os.path.join(folder, name) for pair in SPLIT_FILES.values() for name in pair]
    if not all(os.path.isfile(p) for p in paths):
        return False
    for images, labels in SPLIT_FILES.values():
        size = os.path.getsize(os.path.join(folder, images))
        count = os.path.getsize(os.path.join(folder, labels))
        if size == 0 or size % IMAGE_BYTES or size // IMAGE_BYTES != count:
            raise DatasetUnavailable(f"STL10 {images}/{labels} are truncated or corrupt ({size} bytes of images "
                                     f"for {count} labels); {_where(root)}")
    return True


def _download(root: str) -> None:
    """The archive, unpacked; a short probe first so that no network fails in seconds, not minutes."""
    cls = datasets.STL10
    try:
        try:
            urllib.request.urlopen(urllib.request.Request(cls.url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # the server answered: the download itself will tell
        tv_utils.download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError) as err:  # URLError, timeouts and md5 mismatch
        raise DatasetUnavailable(f"STL10 download failed ({err}); {_where(root)}") from err


def _arrays(root: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x size x size x 3 images (resized as torchvision's Resize((size, size)) does) and labels."""
    stl = _LabelledSTL10(root, split=split)
    images = stl.data.transpose(0, 2, 3, 1)  # torchvision keeps N x 3 x H x W
    if size != NATIVE:
        resize = transforms.Resize((size, size))
        images = np.stack([np.asarray(resize(Image.fromarray(img))) for img in images])
    return np.ascontiguousarray(images), stl.labels.astype(np.int64)


def build_stl10(opt: argparse.Namespace) -> DataBundle:
    """Train and test splits at ``--image_size`` (default 96); small sizes are held as arrays, so the
    in-memory loader crops and flips them on the device, larger ones are resized per image."""
    root = opt.data_folder
    if not check_files(root):
        _download(root)
        if not check_files(root):
            raise DatasetUnavailable(f"STL10 archive unpacked without its labelled files; {_where(root)}")
    size = opt.image_size or NATIVE
    small = size <= SMALL
    (train_x, train_y), (val_x, val_y) = (_arrays(root, split, size if small else NATIVE) for split in SPLIT_FILES)
    train_tf, val_tf = crop_flip_transforms(size, MEAN, STD, fit=not small)
    return DataBundle(name="stl10", train=ArrayDataset(train_x, train_y, train_tf),
                      val=ArrayDataset(val_x, val_y, val_tf), num_classes=10, image_size=size, mean=MEAN, std=STD,
                      train_array=(train_x, train_y) if small else None, val_array=(val_x, val_y) if small else None)
