"""Datasets behind one interface: ``build_data(opt)`` returns a DataBundle for ``--dataset``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

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


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The data flags every training script shares."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="cifar100", help=f"one of {', '.join(DATASETS)}")
    group.add_argument("--data_folder", default="./data", help="where datasets live (and are downloaded to)")
    group.add_argument("--image_size", type=int, default=None,
                       help="folder/imagenet/tinyimagenet/stl10 input size (default: first image's / 224 / 64 / 96)")
    group.add_argument("--syn_classes", type=int, default=100, help="synthetic: number of classes")
    group.add_argument("--syn_train_size", type=int, default=5000, help="synthetic: training images")
    group.add_argument("--syn_val_size", type=int, default=1000, help="synthetic: validation images")
    group.add_argument("--syn_seed", type=int, default=0, help="synthetic: generator seed")
    group.add_argument("--num_workers", type=int, default=8, help="data loader worker processes")


def build_data(opt: argparse.Namespace) -> DataBundle:
    """The bundle for ``opt.dataset``; data flags missing from ``opt`` take add_data_args' defaults."""
    if opt.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {opt.dataset!r}; choose from {', '.join(DATASETS)}")
    defaults = argparse.ArgumentParser(add_help=False)
    add_data_args(defaults)
    full = argparse.Namespace(**{**vars(defaults.parse_args([])), **vars(opt)})
    return DATASETS[opt.dataset](full)
