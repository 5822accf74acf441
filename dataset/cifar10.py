"""CIFAR-10, plus the torchvision-CIFAR plumbing CIFAR-100 reuses (torchvision's CIFAR100 subclasses
CIFAR10): download when missing, fail fast and in one line when offline, and bundle both splits."""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np
from torchvision import datasets
from torchvision.datasets import utils as tv_utils

from .base import DataBundle, DatasetUnavailable, Stats, crop_flip_transforms

MEAN: Stats = (0.4914, 0.4822, 0.4465)
STD: Stats = (0.2470, 0.2435, 0.2616)
PROBE_TIMEOUT_S = 10  # urllib has no timeout in torchvision's download: without network it may hang


def _expected_files(cls: type[datasets.CIFAR10]) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _where(cls: type[datasets.CIFAR10], root: str) -> str:
    """Which files to put where, for the error message."""
    files = ",".join(_expected_files(cls))
    return (f"put {cls.filename} (from {cls.url}) or its unpacked {cls.base_folder}/{{{files}}} "
            f"in {os.path.abspath(root)}")


def _probe(cls: type[datasets.CIFAR10], root: str) -> None:
    """Raise OSError unless the archive is on disk or its server answers: no network fails in seconds."""
    if tv_utils.check_integrity(os.path.join(root, cls.filename), cls.tgz_md5):
        return
    try:
        urllib.request.urlopen(urllib.request.Request(cls.url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # the server answered: the download itself will tell


def _download(cls: type[datasets.CIFAR10], root: str) -> None:
    """Fetch and unpack the archive, after the short probe."""
    try:
        _probe(cls, root)
        tv_utils.download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError) as err:  # URLError, timeouts and md5 mismatch
        raise DatasetUnavailable(f"{cls.__name__} download failed ({err}); {_where(cls, root)}") from err


def _present(cls: type[datasets.CIFAR10], root: str) -> bool:
    folder = os.path.join(root, cls.base_folder)
    return all(os.path.isfile(os.path.join(folder, name)) for name in _expected_files(cls))


def cifar_unavailable(cls: type[datasets.CIFAR10], root: str) -> str | None:
    """None when the split's files are in ``root`` or can be downloaded now; else why not, in one line."""
    if _present(cls, root):
        return None
    try:
        _probe(cls, root)
    except OSError as err:
        return f"{cls.__name__} is not in {os.path.abspath(root)} and cannot be downloaded ({err}); {_where(cls, root)}"
    return None


def open_cifar(cls: type[datasets.CIFAR10], root: str, train: bool = True, transform: Callable | None = None,
               target_transform: Callable | None = None, download: bool = True) -> datasets.CIFAR10:
    """torchvision's CIFAR split from ``root``, downloaded first when its files are missing."""
    present = _present(cls, root)
    if download and not present:
        _download(cls, root)
    try:
        return cls(root, train=train, transform=transform, target_transform=target_transform)
    except RuntimeError as err:  # torchvision: "not found or corrupted" (md5)
        state = "corrupted (md5 mismatch)" if present else "not found"
        raise DatasetUnavailable(f"{cls.__name__} {state}: {_where(cls, root)}") from err


def cifar_bundle(cls: type[datasets.CIFAR10], name: str, root: str, mean: Stats, std: Stats) -> DataBundle:
    """Both splits with RD's transforms, and their arrays for the in-memory loader."""
    train_tf, test_tf = crop_flip_transforms(32, mean, std)
    train = open_cifar(cls, root, True, train_tf)
    val = open_cifar(cls, root, False, test_tf)
    return DataBundle(name=name, train=train, val=val, num_classes=len(train.classes), image_size=32,
                      mean=mean, std=std, train_array=(train.data, np.asarray(train.targets, dtype=np.int64)),
                      val_array=(val.data, np.asarray(val.targets, dtype=np.int64)))


def build_cifar10(opt: argparse.Namespace) -> DataBundle:
    return cifar_bundle(datasets.CIFAR10, "cifar10", opt.data_folder, MEAN, STD)
