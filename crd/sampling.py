"""Batched, on-device drawing of CRD's contrast indices (positive + K label-aware negatives).

RepDistiller's ``CIFAR100InstanceSample`` draws them per item with ``np.random.choice`` over a
49,500-entry list, which dominates data loading; this draws a whole batch with a few tensor ops
on whatever device holds the labels.
"""

from __future__ import annotations

import functools
import math
import weakref

import numpy as np
import torch
from torch import Tensor

MODES = ("exact", "relax")


def _uniform_below(high: Tensor, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
    """Integers uniform in ``[0, high)``, elementwise for a ``high`` broadcastable to ``shape``.

    A 62-bit draw reduced modulo ``high``: the modulo bias is below ``high / 2**62`` (< 1e-12 for
    any dataset), far under what any test or training run could detect.
    """
    raw = torch.randint(0, 2**62, shape, generator=generator, device=high.device)
    return raw % high


def _first_occurrence(values: Tensor, n: int) -> Tensor:
    """Per row, True where an entry's value (in ``[0, n)``) did not occur earlier (to its left) in the row.

    A per-row table of each value's first position when ``n`` is not much larger than the rows
    (O(n) per row, and far faster than sorting), else a stable sort of each row.
    """
    rows, width = values.shape
    pos = torch.arange(width, device=values.device).expand(rows, -1)
    if n <= 16 * width:
        table = torch.full((rows, n), width, dtype=torch.long, device=values.device)
        table.scatter_reduce_(1, values, pos, "amin")
        return table.gather(1, values) == pos
    sorted_vals, order = torch.sort(values, dim=1, stable=True)
    repeat = torch.zeros_like(values, dtype=torch.bool)
    repeat[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    return ~repeat.scatter(1, order, repeat)


_blocks_cache: tuple[weakref.ref, int, tuple[Tensor, Tensor, Tensor, list[int]]] | None = None


def _class_blocks(targets: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """Label-sorted order of the dataset, per-class counts and block starts in that order, and the
    counts once more on the host (to size the draws without reading the device every batch).

    Kept for the last labels tensor seen (until it is modified in place): the sort is most of a
    call's cost on ImageNet-sized label sets, and a data path passes the same tensor every batch.
    """
    global _blocks_cache
    if _blocks_cache is not None:
        ref, version, blocks = _blocks_cache
        if ref() is targets and version == targets._version:
            return blocks
    counts = torch.bincount(targets)
    blocks = (torch.argsort(targets, stable=True), counts, torch.cumsum(counts, 0) - counts, counts.tolist())
    _blocks_cache = (weakref.ref(targets), targets._version, blocks)
    return blocks


@functools.lru_cache(maxsize=64)
def _draws_for_distinct(pool: int, k: int) -> int:
    """How many i.i.d. uniform draws from ``pool`` items hold ``k`` distinct ones but with a
    vanishing probability.

    The wait for the (i+1)-th new item is geometric with success ``(pool - i) / pool``; this is
    the mean of the total wait plus eight standard deviations and a few draws more (simulated
    tails: no row in 20,000 went past five standard deviations at CIFAR's sizes).
    """
    left = (pool - np.arange(k, dtype=np.float64)) / pool
    mean, var = float((1 / left).sum()), float(((1 - left) / left**2).sum())
    return math.ceil(mean + 8 * math.sqrt(var)) + 16


def draw_contrast_indices(
    index: Tensor, targets_device: Tensor, k: int, mode: str, generator: torch.Generator | None = None
) -> Tensor:
    """``[B, k+1]`` contrast indices: column 0 the positive, columns 1..k negatives of other classes.

    Same distribution as RepDistiller's per-item ``np.random.choice``: the positive is the item
    itself (``exact``) or uniform over its class, itself included (``relax``); the negatives are a
    uniform draw without replacement from the samples of every other class (with replacement
    when ``k`` exceeds that pool, as RepDistiller does).

    How: with the dataset sorted by label, a row of class ``c`` owns the pool of all positions
    outside class ``c``'s block, so an integer ``r`` uniform in ``[0, N - n_c)`` maps to a
    uniform pool member by skipping the block (``r + n_c`` once ``r`` reaches its start).
    Without replacement: each row draws a stream of i.i.d. pool members and keeps the first
    ``k`` distinct ones in stream order. Skipping repeats makes each kept item uniform over the
    members not yet kept, which is sequential sampling without replacement, the same law as
    ``np.random.choice(pool, k, replace=False)`` (ordered tuple included). The stream is sized
    from the host-side class counts so that it holds k distinct members but with a vanishing
    probability (about 1.3 k draws for k = 16384 of 49,500); finding the repeats costs one pass
    over a per-row table (or one sort of the stream when the dataset is much larger than it).
    Nothing is read back from the device: the batch's draw is queued without a host sync.
    """
    if mode not in MODES:
        raise ValueError(f"contrast mode '{mode}' is unknown; use one of: {', '.join(MODES)}")
    if k < 0:
        raise ValueError(f"number of negatives must be >= 0, got {k}")
    device = targets_device.device
    index = index.to(device=device, dtype=torch.long)
    n = targets_device.numel()
    order, counts, starts, host_counts = _class_blocks(targets_device)
    pools = [n - c for c in host_counts if c > 0]  # per class present, on the host: no device read
    if min(pools) == 0:
        raise ValueError("contrastive sampling needs at least two classes in the dataset")

    cls = targets_device[index]
    n_cls, start = counts[cls], starts[cls]
    pool = n - n_cls

    if mode == "exact":
        positive = index
    else:
        positive = order[start + _uniform_below(n_cls, n_cls.shape, generator)]

    def draw(width: int) -> Tensor:
        """``width`` pool members per row, as positions in the label-sorted order."""
        r = _uniform_below(pool[:, None], (index.numel(), width), generator)
        return r + (r >= start[:, None]) * n_cls[:, None]

    large = [p for p in pools if p >= k]
    picks = None
    if large and k > 0:
        stream = draw(_draws_for_distinct(min(large), k))
        first = _first_occurrence(stream, n)
        rank = first.cumsum(1)
        # Each row's first k distinct members go to columns 0..k-1 in stream order; the rest to a spare
        # column k. A row short of k (never seen: see _draws_for_distinct) keeps stream members there.
        slot = torch.where(first & (rank <= k), rank - 1, k)
        picks = stream[:, : k + 1].scatter(1, slot, stream)[:, :k]
    if len(large) < len(pools):
        # A pool smaller than k is drawn with replacement (RepDistiller's replace=True).
        replaced = draw(k)
        picks = replaced if picks is None else torch.where((pool < k)[:, None], replaced, picks)
    if picks is None:  # k == 0
        picks = index.new_empty((index.numel(), 0))
    return torch.cat([positive.unsqueeze(1), order[picks]], dim=1)
