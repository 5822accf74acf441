"""CIFAR-100 with RepDistiller's public API (``get_cifar100_dataloaders``, ``CIFAR100Instance``...), built
from the generic pieces and torchvision's current ``data``/``targets`` attributes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from torch.utils.data import DataLoader
from torchvision import datasets

from .base import DataBundle, Stats
from .cifar10 import cifar_bundle, open_cifar
from .loaders import make_train_loader, make_val_loader
from .sampling import ContrastSampleDataset, InstanceDataset

MEAN: Stats = (0.5071, 0.4867, 0.4408)
STD: Stats = (0.2675, 0.2565, 0.2761)


def build_cifar100(opt: argparse.Namespace) -> DataBundle:
    return cifar_bundle(datasets.CIFAR100, "cifar100", opt.data_folder, MEAN, STD)


def get_data_folder() -> str:
    """RD's data root (its lab's hostnames aside): ./data/, created if missing."""
    folder = "./data/"
    os.makedirs(folder, exist_ok=True)
    return folder


class CIFAR100Instance(InstanceDataset):
    """RD's CIFAR-100 whose items are ``(img, target, index)``."""

    def __init__(self, root: str, train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False) -> None:
        super().__init__(open_cifar(datasets.CIFAR100, root, train, transform, target_transform, download))


class CIFAR100InstanceSample(ContrastSampleDataset):
    """RD's CIFAR-100 whose items are ``(img, target, index, contrast_idx)`` (see ContrastSampleDataset)."""

    def __init__(self, root: str, train: bool = True, transform: Callable | None = None,
                 target_transform: Callable | None = None, download: bool = False, k: int = 4096,
                 mode: str = "exact", is_sample: bool = True, percent: float = 1.0) -> None:
        base = open_cifar(datasets.CIFAR100, root, train, transform, target_transform, download)
        super().__init__(base, k=k, mode=mode, is_sample=is_sample, percent=percent)


def _rd_loaders(variant: str, batch_size: int, num_workers: int, **crd: object) -> tuple[DataLoader, DataLoader]:
    """RD's pair: shuffled train loader, test loader at half the batch size and half the workers."""
    bundle = build_cifar100(argparse.Namespace(data_folder=get_data_folder()))
    return (make_train_loader(bundle, variant, batch_size, num_workers, **crd),
            make_val_loader(bundle, batch_size // 2, num_workers // 2))


def get_cifar100_dataloaders(batch_size: int = 128, num_workers: int = 8, is_instance: bool = False
                             ) -> tuple[DataLoader, DataLoader] | tuple[DataLoader, DataLoader, int]:
    """(train, test) loaders, or (train, test, n_data) with ``(img, target, index)`` items if is_instance."""
    train, test = _rd_loaders("instance" if is_instance else "plain", batch_size, num_workers)
    return (train, test, len(train.dataset)) if is_instance else (train, test)


def get_cifar100_dataloaders_sample(batch_size: int = 128, num_workers: int = 8, k: int = 4096,
                                    mode: str = "exact", is_sample: bool = True, percent: float = 1.0
                                    ) -> tuple[DataLoader, DataLoader, int]:
    """(train, test, n_data) with CRD items ``(img, target, index, contrast_idx)`` (without the last if
    not is_sample)."""
    variant = "crd" if is_sample else "instance"
    train, test = _rd_loaders(variant, batch_size, num_workers, nce_k=k, mode=mode, percent=percent)
    return train, test, len(train.dataset)
