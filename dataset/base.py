"""Types shared by every dataset builder, plus the in-memory dataset and the CIFAR-style transforms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

Stats = tuple[float, float, float]
Arrays = tuple[np.ndarray, np.ndarray]


class DatasetUnavailable(Exception):
    """The data is not on disk and cannot be fetched; the message says which files to put where."""


@dataclass
class DataBundle:
    """Everything a training script needs to know about a dataset, independent of where it came from."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    image_size: int
    mean: Stats
    std: Stats
    train_array: Arrays | None = None  # (uint8 N×H×W×3, int64 N): lets callers skip PIL for speed
    val_array: Arrays | None = None


class ArrayDataset(Dataset):
    """uint8 N×H×W×3 images in memory, served as PIL images so torchvision transforms apply unchanged."""

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform: Callable | None = None) -> None:
        if len(data) != len(targets):
            raise ValueError(f"{len(data)} images but {len(targets)} targets")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.data[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def crop_flip_transforms(size: int, mean: Stats, std: Stats, fit: bool = False
                         ) -> tuple[transforms.Compose, transforms.Compose]:
    """RD's small-image pipeline: pad-and-crop plus flip for training, normalisation only for testing.

    ``fit`` first resizes and centre-crops to ``size``, for folders whose images are not all that size.
    """
    fit_ops = [transforms.Resize(size), transforms.CenterCrop(size)] if fit else []
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train = transforms.Compose([*fit_ops, transforms.RandomCrop(size, padding=size // 8),
                                transforms.RandomHorizontalFlip(), *tail])
    return train, transforms.Compose([*fit_ops, *tail])


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[Stats, Stats]:
    """Per-channel mean and std, in [0, 1] units, of uint8 N×H×W×3 images (chunked to bound memory)."""
    total, total_sq = np.zeros(3), np.zeros(3)
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
    count = max(images.size // 3, 1)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
