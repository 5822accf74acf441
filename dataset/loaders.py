"""DataLoaders for a DataBundle: the train set wrapped for the method's needs, the val set as is."""

from __future__ import annotations

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


def make_train_loader(bundle: DataBundle, variant: str, batch_size: int, num_workers: int, *,
                      nce_k: int = 16384, mode: str = "exact", percent: float = 1.0,
                      sampler: Sampler | None = None, generator: torch.Generator | None = None,
                      drop_last: bool = False) -> DataLoader:
    """Shuffled train loader yielding (img, y), (img, y, index) or (img, y, index, contrast_idx).

    Pass a ``sampler`` (e.g. DistributedSampler) to replace shuffling, a ``generator`` to make it
    reproducible.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown loader variant {variant!r}; choose from {sorted(VARIANTS)}")
    dataset = VARIANTS[variant](bundle.train, k=nce_k, mode=mode, percent=percent)
    return DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      generator=generator, drop_last=drop_last, **_loader_options(num_workers))


def make_val_loader(bundle: DataBundle, batch_size: int, num_workers: int,
                    sampler: Sampler | None = None) -> DataLoader:
    """Unshuffled val loader yielding (img, y). RD evaluates with half the train batch size."""
    return DataLoader(bundle.val, batch_size=batch_size, shuffle=False, sampler=sampler,
                      **_loader_options(num_workers))
