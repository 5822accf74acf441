"""Whether a data set is there, or will be fetched by the run, before a script starts a series of runs."""

from __future__ import annotations

import os

from torchvision import datasets

from . import tinyimagenet
from .cifar10 import cifar_unavailable

CIFAR = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
IMAGE_FOLDERS = ("imagenet", "folder")  # <data_folder>/{train,val}/<class>/


def data_unavailable(name: str, folder: str) -> str | None:
    """None when ``--dataset name --data_folder folder`` can start (the synthetic set always can); else why not,
    in one line. CIFAR may be missing where it can be downloaded; folder data sets must be in place."""
    if name in CIFAR:
        return cifar_unavailable(CIFAR[name], folder)
    if name == "tinyimagenet":
        root = tinyimagenet.dataset_root(folder)
        if not os.path.isdir(os.path.join(root, "train")):
            return f"tinyimagenet: no train/ folder in {os.path.abspath(root)}; {tinyimagenet.where(folder)}"
        return None
    if name in IMAGE_FOLDERS:
        missing = [split for split in ("train", "val") if not os.path.isdir(os.path.join(folder, split))]
        if missing:
            return (f"{name}: no {' or '.join(missing)} folder in {os.path.abspath(folder)} "
                    f"(expected {{train,val}}/<class>/<image>)")
    return None
