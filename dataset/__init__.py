"""Datasets behind one interface: ``build_data(opt)`` returns a DataBundle for ``--dataset``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from helper.options import add_data_args

from .base import ArrayDataset, DataBundle, DatasetUnavailable
from .cifar10 import build_cifar10
from .cifar100 import build_cifar100
from .folder import build_folder
from .imagenet import build_imagenet
from .loaders import make_train_loader, make_val_loader
from .sampling import ContrastSampleDataset, InstanceDataset
from .stl10 import build_stl10
from .synthetic import build_synthetic
from .tinyimagenet import build_tinyimagenet

DATASETS: dict[str, Callable[[argparse.Namespace], DataBundle]] = {
    "cifar100": build_cifar100,
    "cifar10": build_cifar10,
    "synthetic": build_synthetic,
    "folder": build_folder,
    "imagenet": build_imagenet,
    "tinyimagenet": build_tinyimagenet,  # mdistiller's Tiny-ImageNet distillation setting
    "stl10": build_stl10,  # the distillers' transfer set, trainable too
}

__all__ = ["DATASETS", "ArrayDataset", "ContrastSampleDataset", "DataBundle", "DatasetUnavailable",
           "InstanceDataset", "add_data_args", "build_data", "make_train_loader", "make_val_loader"]


def build_data(opt: argparse.Namespace) -> DataBundle:
    """The bundle for ``opt.dataset``; data flags missing from ``opt`` take add_data_args' defaults."""
    if opt.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {opt.dataset!r}; choose from {', '.join(DATASETS)}")
    defaults = argparse.ArgumentParser(add_help=False)
    add_data_args(defaults)
    full = argparse.Namespace(**{**vars(defaults.parse_args([])), **vars(opt)})
    return DATASETS[opt.dataset](full)
