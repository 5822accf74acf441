"""Tiny-ImageNet-200 (100,000 train and 10,000 val images of 64x64, 200 classes) from
``<data_folder>/tiny-imagenet-200`` (or ``<data_folder>`` itself), as unzipped or as arranged.

Unzipped, the train images sit in ``train/<wnid>/images/`` and the val images all in ``val/images/``,
their classes listed in ``val/val_annotations.txt``; ``scripts/get_tinyimagenet.sh`` arranges both
into ``<split>/<wnid>/`` class folders. Either layout gives the same samples and labels.

Training follows mdistiller's Tiny-ImageNet pipeline (``mdistiller/dataset/tiny_imagenet.py``, the one
its ResNet18 teacher was trained with): a random rotation of up to 20 degrees and a horizontal flip at
the native 64 px, no crop, normalised by its mean and std; testing normalises alone. transfer_student.py
replaces these transforms with the linear probe's (``dataset.transfer.probe_bundle``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.folder import default_loader

from .base import DataBundle, DatasetUnavailable, Stats
from .folder import open_image_folders

MEAN: Stats = (0.4802, 0.4481, 0.3975)  # mdistiller's normalisation, which its teachers expect
STD: Stats = (0.2302, 0.2265, 0.2262)
ROTATION_DEGREES = 20
NATIVE = 64
FOLDER = "tiny-imagenet-200"
ANNOTATIONS = "val_annotations.txt"


class AnnotatedImages(Dataset):
    """Images with their classes listed in a file instead of given by folders (the unarranged val split)."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None = None):
        self.samples, self.classes, self.transform = samples, classes, transform
        self.targets = [target for _, target in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        img = default_loader(path)
        return (self.transform(img) if self.transform is not None else img), target


def dataset_root(data_folder: str) -> str:
    """``<data_folder>/tiny-imagenet-200`` when there, else ``data_folder`` itself."""
    nested = os.path.join(data_folder, FOLDER)
    return nested if os.path.isdir(nested) else data_folder


def _unarranged_val(root: str, train: datasets.ImageFolder) -> AnnotatedImages:
    val = os.path.join(root, "val")
    samples = []
    with open(os.path.join(val, ANNOTATIONS)) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[1] not in train.class_to_idx:
                raise DatasetUnavailable(f"tinyimagenet: {os.path.join(val, ANNOTATIONS)} line {number} names no "
                                         f"class of {os.path.join(root, 'train')}")
            path = os.path.join(val, "images", fields[0])
            if not os.path.isfile(path):
                raise DatasetUnavailable(f"tinyimagenet: {path} is listed in {ANNOTATIONS} but missing")
            samples.append((path, train.class_to_idx[fields[1]]))
    return AnnotatedImages(samples, train.classes)


def where(data_folder: str) -> str:
    return (f"run `sh scripts/get_tinyimagenet.sh {data_folder}` (it downloads tiny-imagenet-200.zip from "
            f"http://cs231n.stanford.edu/) or unzip tiny-imagenet-200.zip into {os.path.abspath(data_folder)}/")


def mdistiller_transforms(size: int) -> tuple[transforms.Compose, transforms.Compose]:
    """mdistiller's train (rotation, flip) and test pipelines; resized first when ``size`` is not 64."""
    resize = [] if size == NATIVE else [transforms.Resize(size), transforms.CenterCrop(size)]
    tail = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    train = transforms.Compose([*resize, transforms.RandomRotation(ROTATION_DEGREES),
                                transforms.RandomHorizontalFlip(0.5), *tail])
    return train, transforms.Compose([*resize, *tail])


def build_tinyimagenet(opt: argparse.Namespace) -> DataBundle:
    """Both splits at ``--image_size`` (default 64), with mdistiller's pipeline."""
    root = dataset_root(opt.data_folder)
    unarranged = os.path.isfile(os.path.join(root, "val", ANNOTATIONS)) and os.path.isdir(
        os.path.join(root, "val", "images"))
    if not os.path.isdir(os.path.join(root, "train")):
        raise DatasetUnavailable(f"tinyimagenet: no train/ folder in {os.path.abspath(root)}; "
                                 + where(opt.data_folder))
    if unarranged:
        try:
            train = datasets.ImageFolder(os.path.join(root, "train"))
        except FileNotFoundError as err:  # no class folders, or no images in them
            raise DatasetUnavailable(f"tinyimagenet: {err}; {where(opt.data_folder)}") from err
        val = _unarranged_val(root, train)
    else:
        train, val = open_image_folders("tinyimagenet", root)
    size = opt.image_size or NATIVE
    train.transform, val.transform = mdistiller_transforms(size)
    return DataBundle(name="tinyimagenet", train=train, val=val, num_classes=len(train.classes), image_size=size,
                      mean=MEAN, std=STD)
