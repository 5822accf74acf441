"""Wrappers that give any labelled dataset (anything with ``.targets``) what distillation losses need:
the sample's own index (memory banks) and, for CRD, the indices of one positive and k negatives.

Indices are kept grouped by class rather than as RD's per-class negative lists, so memory stays O(N) even
for ImageNet (1000 lists of 1.27M negatives would not fit), and unbalanced classes need no ragged arrays.
This is the per-item path of DataLoader workers; crd.sampling draws the same law for whole batches on the
training device. Per item, numpy's Generator is far cheaper (~1 ms vs ~50 ms for k=16384 on a CPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

MODES = ("exact", "relax")


class _Wrapper(Dataset):
    """Delegates length, ``.targets`` and any other attribute (``.data``, ``.classes``...) to ``base``."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    @property
    def targets(self) -> Any:
        return self.base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found normally; guard against lookups before __init__ ran (unpickling).
        if name.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.base, name)


class InstanceDataset(_Wrapper):
    """Items become ``(img, target, index)``: memory-bank methods update row ``index``."""

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        img, target = self.base[index]
        return img, target, index


class ContrastSampleDataset(_Wrapper):
    """Items become ``(img, target, index, contrast_idx)`` for CRD.

    ``contrast_idx`` (int64, length k+1) is ``[positive, k negatives]``: the positive is ``index`` itself
    ('exact') or a random sample of the same class ('relax'); negatives are drawn uniformly from the other
    classes, without replacement unless k exceeds that pool. ``percent`` < 1 keeps only that fraction of
    each class's negative pool, fixed at construction from ``seed``. With ``is_sample=False`` items are
    ``(img, target, index)``, as in RD.
    """

    def __init__(self, base: Dataset, k: int = 4096, mode: str = "exact", is_sample: bool = True,
                 percent: float = 1.0, *, seed: int = 0) -> None:
        super().__init__(base)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0 < percent <= 1:
            raise ValueError(f"percent must be in (0, 1], got {percent}")
        labels = np.asarray(base.targets, dtype=np.int64)
        if is_sample and not 0 <= k < len(labels):
            raise ValueError(f"k={k} negatives need a dataset larger than k; this one has {len(labels)} samples")
        self.k, self.mode, self.is_sample = k, mode, is_sample
        self._labels = labels
        self._order = np.argsort(labels, kind="stable")  # sample indices grouped by class
        self._count = np.bincount(labels, minlength=1)
        self._start = np.cumsum(self._count) - self._count
        self._pools = None
        if percent < 1:
            rng = np.random.default_rng(seed)
            self._pools = [rng.permutation(pool)[:int(len(pool) * percent)] for pool in self._complements()]
        if is_sample:
            self._check_pools()

    @property
    def cls_positive(self) -> list[np.ndarray]:
        """RD's per-class index lists (a list, since classes may differ in size)."""
        return [self._order[s:s + c] for s, c in zip(self._start, self._count, strict=True)]

    @property
    def cls_negative(self) -> list[np.ndarray]:
        """RD's per-class negative pools; built on demand unless ``percent`` < 1 (they hold ~C×N indices)."""
        return self._pools if self._pools is not None else self._complements()

    def _complements(self) -> list[np.ndarray]:
        return [np.delete(self._order, slice(s, s + c)) for s, c in zip(self._start, self._count, strict=True)]

    def _check_pools(self) -> None:
        empty = [int(c) for c in np.flatnonzero(self._count) if self._pool_size(c) == 0]
        if empty:
            raise ValueError(f"classes {empty[:5]} have no negatives: CRD needs at least two classes "
                             "(and a percent large enough to keep some)")

    def _pool_size(self, cls: int) -> int:
        return len(self._pools[cls]) if self._pools is not None else len(self._labels) - int(self._count[cls])

    def contrast_indices(self, index: int) -> np.ndarray:
        """``[positive, k negatives]`` for sample ``index``.

        The generator is seeded from torch's RNG, which DataLoader seeds per worker and per epoch: workers
        never repeat each other and a seeded run is reproducible.
        """
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        cls = int(self._labels[index])
        start, count = int(self._start[cls]), int(self._count[cls])
        positive = index if self.mode == "exact" else int(self._order[start + rng.integers(count)])
        size = self._pool_size(cls)
        picks = rng.choice(size, self.k, replace=self.k > size)
        if self._pools is not None:
            negatives = self._pools[cls][picks]
        else:  # a position among the other classes: step over this class's block of the grouped order
            negatives = self._order[picks + count * (picks >= start)]
        return np.concatenate(([positive], negatives)).astype(np.int64)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        img, target = self.base[index]
        if not self.is_sample:
            return img, target, index
        return img, target, index, self.contrast_indices(index)
