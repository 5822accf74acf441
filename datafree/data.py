"""What data-free distillation takes from a data set: its classes, image size and normalisation, and the
test split to evaluate on. No training image is read: CIFAR's test batch is read by itself (torchvision's
CIFAR classes check every file, training batches included, before giving either split).
"""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass

import numpy as np
from torchvision import datasets
from torchvision.datasets import utils as tv_utils

from dataset import DatasetUnavailable, build_data, cifar10, cifar100
from dataset.base import Stats

CIFAR = {
    "cifar10": (datasets.CIFAR10, 10, cifar10.MEAN, cifar10.STD),
    "cifar100": (datasets.CIFAR100, 100, cifar100.MEAN, cifar100.STD),
}
DATASETS = (*CIFAR, "synthetic")


@dataclass
class TestData:
    num_classes: int
    image_size: int
    mean: Stats
    std: Stats
    images: np.ndarray  # uint8 N×H×W×3
    labels: np.ndarray  # int64 N


def _cifar_test_split(cls: type[datasets.CIFAR10], root: str) -> tuple[np.ndarray, np.ndarray]:
    """The test batch of torchvision's CIFAR layout, checked against its md5; the archive is downloaded
    (as train_student.py does) only when the test batch is missing."""
    (name, md5), = cls.test_list
    path = os.path.join(root, cls.base_folder, name)
    if not os.path.isfile(path):
        cifar10._download(cls, root)
    if not tv_utils.check_integrity(path, md5):
        raise DatasetUnavailable(f"{path} is corrupted (md5 mismatch); {cifar10._where(cls, root)}")
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
    return np.ascontiguousarray(images), labels


def load_test_data(opt: argparse.Namespace) -> TestData:
    """``--dataset`` cifar10, cifar100 or synthetic; ``--mean``/``--std`` override the normalisation (it
    must be the one the teacher was trained with).

    The synthetic set's normalisation is measured on its generated training split, as train_student.py
    measures it; those images give the two constants and are dropped.
    """
    if opt.dataset in CIFAR:
        cls, num_classes, mean, std = CIFAR[opt.dataset]
        images, labels = _cifar_test_split(cls, opt.data_folder)
        size = 32
    elif opt.dataset == "synthetic":
        bundle = build_data(opt)
        (images, labels), num_classes, size = bundle.val_array, bundle.num_classes, bundle.image_size
        mean, std = bundle.mean, bundle.std
    else:
        raise ValueError(f"data-free distillation takes --dataset {', '.join(DATASETS)} (CIFAR-shaped), "
                         f"not {opt.dataset!r}")
    mean = tuple(opt.mean) if opt.mean is not None else tuple(mean)
    std = tuple(opt.std) if opt.std is not None else tuple(std)
    return TestData(num_classes, size, mean, std, images, labels)
