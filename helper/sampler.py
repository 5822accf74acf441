"""A sampler whose order a resumed run can reproduce exactly, also mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler's order (a permutation drawn from seed + epoch, sharded by rank) that can
    start part-way through an epoch, so a run stopped mid-epoch continues with the same batches.

    With one process it is a plain per-epoch shuffle, as RepDistiller's ``shuffle=True`` loader.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_position(self, epoch: int, start_sample: int) -> None:
        self.set_epoch(epoch)
        self.start = start_sample

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start
