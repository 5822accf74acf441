"""The user's own images in ImageFolder layout (``<data_folder>/{train,val}/<class>/*.png|jpg``), and the
helpers the ImageNet builder shares."""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image
from torchvision import datasets, transforms

from .base import DataBundle, DatasetUnavailable, Stats, channel_stats, crop_flip_transforms

IMAGENET_MEAN: Stats = (0.485, 0.456, 0.406)
IMAGENET_STD: Stats = (0.229, 0.224, 0.225)
SMALL = 64            # images up to this size get CIFAR's pad-and-crop, larger ones ImageNet's resized crops
STATS_SAMPLES = 2000  # images read to estimate a small dataset's mean/std


def open_image_folders(name: str, root: str) -> tuple[datasets.ImageFolder, datasets.ImageFolder]:
    """``root/train`` and ``root/val`` as ImageFolders with the same classes (transforms set later)."""
    splits = []
    for split in ("train", "val"):
        path = os.path.join(root, split)
        try:
            splits.append(datasets.ImageFolder(path))
        except FileNotFoundError as err:  # no folder, no class folders, or no images in them
            raise DatasetUnavailable(f"{name}: no images found in {os.path.abspath(path)}; expected "
                                     f"{os.path.abspath(root)}/{{train,val}}/<class>/<image>.png|jpg") from err
    train, val = splits
    if val.classes != train.classes:
        raise DatasetUnavailable(f"{name}: {os.path.abspath(root)}/val must have the same class folders as "
                                 f"train ({len(val.classes)} vs {len(train.classes)})")
    return train, val


def folder_bundle(name: str, train: datasets.ImageFolder, val: datasets.ImageFolder, size: int,
                  mean: Stats, std: Stats) -> DataBundle:
    """Attach the size-appropriate transforms and describe the pair; no arrays, images stay on disk."""
    if size <= SMALL:
        train.transform, val.transform = crop_flip_transforms(size, mean, std, fit=True)
    else:
        tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
        train.transform = transforms.Compose([transforms.RandomResizedCrop(size),
                                              transforms.RandomHorizontalFlip(), *tail])
        val.transform = transforms.Compose([transforms.Resize(round(size * 256 / 224)),
                                            transforms.CenterCrop(size), *tail])
    return DataBundle(name=name, train=train, val=val, num_classes=len(train.classes), image_size=size,
                      mean=mean, std=std)


def _estimate_stats(train: datasets.ImageFolder, size: int) -> tuple[Stats, Stats]:
    """Mean/std from up to STATS_SAMPLES evenly spaced training images, fitted to ``size``."""
    fit = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
    picks = np.linspace(0, len(train) - 1, min(len(train), STATS_SAMPLES)).round().astype(int)
    images = np.stack([np.asarray(fit(train.loader(train.samples[i][0]))) for i in picks])
    return channel_stats(images)


def build_folder(opt: argparse.Namespace) -> DataBundle:
    """Size from ``--image_size`` or the first image's shorter side; small images get their own stats."""
    train, val = open_image_folders("folder", opt.data_folder)
    size = opt.image_size
    if size is None:
        with Image.open(train.samples[0][0]) as first:
            size = min(first.size)
    mean, std = _estimate_stats(train, size) if size <= SMALL else (IMAGENET_MEAN, IMAGENET_STD)
    return folder_bundle("folder", train, val, size, mean, std)
