"""A sampler whose order a resumed run can reproduce exactly, also mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info


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


_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: well-spread 64-bit outputs from consecutive inputs."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


class SeededSampler(Sampler):
    """A :class:`ResumableSampler` whose items carry their own augmentation seed: ``(index, seed)``.

    The seed is a function of the run's seed, the rank, the epoch and the item's position in the
    epoch only, so every image is augmented the same way whether the run was resumed mid-epoch or
    not, and however many (persistent) workers load it: a worker's own seed is drawn once when it
    starts, so it cannot follow a resume.
    """

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler
        self.epoch_seed = 0

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def rank(self) -> int:
        return self.sampler.rank

    @property
    def num_samples(self) -> int:
        return self.sampler.num_samples

    def set_position(self, epoch: int, start_sample: int) -> None:
        self.sampler.set_position(epoch, start_sample)
        self.epoch_seed = _mix64(_mix64(_mix64(self.seed & _MASK64) ^ self.rank) ^ epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler, start=self.sampler.start):
            yield index, _mix64(self.epoch_seed ^ position)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededItems(Dataset):
    """Reads ``dataset[index]`` with torch's generator seeded from the sampler's per-item seed.

    In a worker process the generator is the worker's own; in the main process (``num_workers 0``)
    its state is put back afterwards, so loading leaves the run's other draws alone.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        if get_worker_info() is not None:
            torch.manual_seed(seed)
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
