"""The whole (CIFAR-sized) data set as one uint8 tensor on the training device, augmented per batch.

RepDistiller's loader crops, flips and normalises every image in Python in worker processes, and
for CRD ships 16,385 int64 contrast indices per image through them. A CIFAR-sized set fits on the
device, where a batch takes a few tensor ops: one gather does the padded crop and the flip, one
fused expression the normalisation, and CRD's indices are drawn for the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from crd.sampling import draw_contrast_indices
from helper.sampler import ResumableSampler

VARIANTS = ("plain", "instance", "crd")


def batch_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """The augmentation seed of one batch: a function of where it is, not of what ran before, so a
    run resumed mid-epoch draws what the uninterrupted run drew (and ranks draw independently)."""
    words = [value & 0xFFFF_FFFF_FFFF_FFFF for value in (seed, rank, epoch, batch)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def crop_flip(images: Tensor, index: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """``images[index]`` (uint8 NHWC) cropped from their zero-padded versions and mirrored, in one gather.

    ``offsets`` (row, column) is the crop's corner in the padded image, in ``[0, 2 * padding]``;
    where ``flips`` the crop is mirrored left-right, as torchvision's RandomCrop then
    RandomHorizontalFlip. Pixels that fall in the padding are 0, torchvision's fill.
    """
    _, h, w, _ = images.shape
    rows = offsets[:, :1] - padding + torch.arange(h, device=images.device)
    across = torch.arange(w, device=images.device)
    cols = offsets[:, 1:] - padding + torch.where(flips[:, None], w - 1 - across, across)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    pixels = images[index[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return pixels * inside[..., None]


def normalise(pixels: Tensor, mean: Tensor, std: Tensor, channels_last: bool) -> Tensor:
    """uint8 NHWC to float32 NCHW, as ToTensor then Normalize (the same float32 operations, in order).

    The permuted NHWC buffer already has channels_last strides; NCHW proper takes one copy.
    """
    x = pixels.float().div_(255).sub_(mean).div_(std).permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def upload(values: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory and without blocking the host, so the
    copy of an epoch's order queues behind the steps still running instead of waiting for them."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


class PositionedBatches:
    """What the on-the-fly loaders (this one and DALI's) share: batches per epoch, and the position
    (epoch, first batch) the next iteration draws from, which is how a run resumes mid-epoch. A loader
    sets ``sampler``, ``shard`` (its evaluation indices), ``batch_size`` and ``train``."""

    sampler: ResumableSampler
    shard: Sequence[int] | Tensor
    batch_size: int
    train: bool
    epoch: int = 0
    start_batch: int = 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        """The epoch to draw (its order and augmentations) and the batch to start from."""
        self.epoch, self.start_batch = epoch, start_batch
        self.sampler.set_position(epoch, start_batch * self.batch_size)

    def __len__(self) -> int:
        """Batches in a whole epoch, wherever it starts."""
        samples = self.sampler.num_samples if self.train else len(self.shard)
        return math.ceil(samples / self.batch_size)


class MemoryLoader(PositionedBatches):
    """Batches ``[x, y]`` (+ ``index`` for 'instance', + ``contrast_idx`` for 'crd') from device tensors.

    Training: the order of :class:`ResumableSampler` with the same seed, epoch, rank and world size
    (so this and the torchvision loader see the same batches, sharded the same way under DDP), a
    random crop with zero padding and a horizontal flip per image, seeded per batch by
    :func:`batch_seed` (with ``augment=False`` the images as stored, for a method that draws its own
    augmentations on the device, MLKD's rotated views). Evaluation (``train=False``): sequential, no
    augmentation, a strided shard per rank. The last partial batch is kept, as RepDistiller's loaders.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, mean: Sequence[float], std: Sequence[float], *,
                 device: torch.device, batch_size: int = 64, train: bool = True, variant: str = "plain",
                 channels_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 nce_k: int = 16384, mode: str = "exact", augment: bool = True):
        if variant not in VARIANTS:
            raise ValueError(f"unknown loader variant '{variant}'; use one of: {', '.join(VARIANTS)}")
        self.device = torch.device(device)
        self.images = upload(torch.as_tensor(images, dtype=torch.uint8), self.device)
        self.targets = upload(torch.as_tensor(targets, dtype=torch.long), self.device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.batch_size, self.train, self.variant, self.augment = batch_size, train, variant, augment
        self.channels_last, self.nce_k, self.mode = channels_last, nce_k, mode
        self.sampler = ResumableSampler(range(len(self.targets)), num_replicas=world_size, rank=rank, seed=seed)
        self.shard = torch.arange(rank, len(self.targets), world_size, device=self.device)
        self.generator = torch.Generator(device=self.device)

    def __iter__(self) -> Iterator[list[Tensor]]:
        if self.train:
            order = upload(torch.as_tensor(list(self.sampler), dtype=torch.long), self.device)
            first = self.start_batch
        else:
            order, first = self.shard, 0
        for number, index in enumerate(order.split(self.batch_size), start=first):
            yield self._batch(index, number)

    def _batch(self, index: Tensor, number: int) -> list[Tensor]:
        if not self.train:
            return [normalise(self.images[index], self.mean, self.std, self.channels_last), self.targets[index]]
        n, padding = index.numel(), self.images.shape[1] // 8  # RD's RandomCrop(32, padding=4)
        self.generator.manual_seed(batch_seed(self.sampler.seed, self.sampler.rank, self.epoch, number))
        if self.augment:
            offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=self.generator, device=self.device)
            flips = torch.rand(n, generator=self.generator, device=self.device) < 0.5
            pixels = crop_flip(self.images, index, offsets, flips, padding)
        else:
            pixels = self.images[index]
        batch = [normalise(pixels, self.mean, self.std, self.channels_last), self.targets[index]]
        if self.variant != "plain":
            batch.append(index)
        if self.variant == "crd":
            batch.append(draw_contrast_indices(index, self.targets, self.nce_k, self.mode, self.generator))
        return batch
