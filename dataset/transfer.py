"""The transfer data sets (STL-10, Tiny-ImageNet-200) beside the training ones, and the linear probe's
input pipeline: every image resized to the network's input size, then padded-cropped and flipped."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from . import DATASETS, build_data
from .base import DataBundle, crop_flip_transforms
from .stl10 import build_stl10
from .tinyimagenet import build_tinyimagenet

EXTRA_DATASETS: dict[str, Callable[[argparse.Namespace], DataBundle]] = {
    "stl10": build_stl10,
    "tinyimagenet": build_tinyimagenet,
}
ALL_DATASETS = (*DATASETS, *EXTRA_DATASETS)


def build_any(opt: argparse.Namespace) -> DataBundle:
    """The bundle for ``opt.dataset``, a training data set or a transfer one."""
    if opt.dataset in EXTRA_DATASETS:
        return EXTRA_DATASETS[opt.dataset](opt)
    if opt.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {opt.dataset!r}; choose from {', '.join(ALL_DATASETS)}")
    return build_data(opt)


def probe_bundle(bundle: DataBundle, size: int) -> DataBundle:
    """``bundle`` at ``size`` x ``size`` with the distillers' transfer pipeline (Resize, RandomCrop with
    padding size/8, flip; Resize alone to test). Arrays already at ``size`` stay, for the in-memory
    loader, which crops and flips the same way on the device."""
    if bundle.train_array is not None and bundle.image_size == size:
        return bundle
    bundle.train.transform, bundle.val.transform = crop_flip_transforms(size, bundle.mean, bundle.std, fit=True)
    return dataclasses.replace(bundle, image_size=size, train_array=None, val_array=None)
