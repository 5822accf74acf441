"""DataLoaders for a DataBundle: the train set wrapped for the method's needs, the val set as is."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .base import DataBundle
from .sampling import ContrastSampleDataset, InstanceDataset

# variant -> how the train set is wrapped; 'crd' receives nce_k, mode and percent.
VARIANTS: dict[str, Callable[..., Dataset]] = {
    "plain": lambda ds, **_: ds,
    "instance": lambda ds, **_: InstanceDataset(ds),
    "crd": lambda ds, k, mode, percent: ContrastSampleDataset(ds, k=k, mode=mode, percent=percent),
}


def _loader_options(num_workers: int) -> dict[str, Any]:
    return {"num_workers": num_workers, "pin_memory": torch.cuda.is_available(),
            "persistent_workers": num_workers > 0}


def unaugmented_train(bundle: DataBundle) -> Dataset:
    """The training set through the evaluation transform (no random crop or flip), for a method that
    draws its own augmentations per batch on the device; ``bundle.train`` itself is left as it is."""
    if not hasattr(bundle.train, "transform"):
        raise ValueError(f"{bundle.name}'s training set has no transform to replace; it cannot be served un-augmented")
    train = copy.copy(bundle.train)
    train.transform = bundle.val.transform
    return train


def make_train_loader(bundle: DataBundle, variant: str, batch_size: int, num_workers: int, *,
                      nce_k: int = 16384, mode: str = "exact", percent: float = 1.0,
                      sampler: Sampler | None = None, generator: torch.Generator | None = None,
                      drop_last: bool = False, augment: bool = True,
                      wrap: Callable[[Dataset], Dataset] | None = None) -> DataLoader:
    """Shuffled train loader yielding (img, y), (img, y, index) or (img, y, index, contrast_idx).

    Pass a ``sampler`` (e.g. DistributedSampler) to replace shuffling, a ``generator`` to make it
    reproducible, ``augment=False`` for the images without the training augmentation (see
    :func:`unaugmented_train`).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown loader variant {variant!r}; choose from {sorted(VARIANTS)}")
    train = bundle.train if augment else unaugmented_train(bundle)
    dataset = VARIANTS[variant](train, k=nce_k, mode=mode, percent=percent)
    if wrap is not None:  # e.g. per-item seeding, with a sampler that yields what the wrapper reads
        dataset = wrap(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      generator=generator, drop_last=drop_last, **_loader_options(num_workers))


def make_val_loader(bundle: DataBundle, batch_size: int, num_workers: int,
                    sampler: Sampler | None = None) -> DataLoader:
    """Unshuffled val loader yielding (img, y). RD evaluates with half the train batch size."""
    return DataLoader(bundle.val, batch_size=batch_size, shuffle=False, sampler=sampler,
                      **_loader_options(num_workers))
