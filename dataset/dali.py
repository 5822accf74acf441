"""``--dali cpu|gpu``: NVIDIA DALI decodes and augments the ImageNet batches, as SemCKD's ImageNet runs do.

Optional (``pip install -r requirements-dali.txt``). What DALI does, after SemCKD's pipelines (which
follow NVIDIA's ResNet-50 example): a training image is decoded in a random window (area 0.1-1 of
the image, aspect ratio 0.8-1.25: SemCKD's values, where torchvision's RandomResizedCrop defaults
are 0.08-1 and 3/4-4/3), resized to the crop size with the triangular filter, mirrored with
probability 0.5 and normalised; a test image is resized (shorter side 256 for 224) and
centre-cropped. ``gpu`` decodes on the GPU (nvJPEG); ``cpu`` decodes and resizes on the CPU and
normalises on the GPU when the run has one (SemCKD's two variants).

What stays ours: the files, labels, order and random draws. Each epoch's batches are the indices
drawn by the same :class:`ResumableSampler` as the torchvision loader's (one permutation per epoch,
a shard per rank), read as encoded bytes and fed to DALI with each image's crop window and flip,
drawn on the host from the image's own seed (the run's seed, the rank, the epoch and the image's
position in the epoch). So the labels and shards are the torchvision path's, and a run resumed
mid-epoch gets the same images, windows and flips as an uninterrupted one. Test batches: a strided
shard per rank, each image once.
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from crd.sampling import draw_contrast_indices
from helper.errors import UserError
from helper.sampler import ResumableSampler

from .base import DataBundle
from .folder import SMALL
from .memory import VARIANTS, PositionedBatches, batch_seed

TRAIN_AREA = (0.1, 1.0)  # SemCKD's (NVIDIA's example's) random crop; torchvision's: (0.08, 1), (3/4, 4/3)
TRAIN_ASPECT = (0.8, 1.25)
ATTEMPTS = 100  # SemCKD's num_attempts; torchvision tries 10 times


def crop_window(width: int, height: int, rng: np.random.Generator, area: tuple[float, float] = TRAIN_AREA,
                aspect: tuple[float, float] = TRAIN_ASPECT, attempts: int = ATTEMPTS) -> tuple[int, int, int, int]:
    """A random resized crop's window ``(x, y, w, h)``: area uniform in ``area`` of the image, aspect ratio
    log-uniform in ``aspect``, position uniform; after ``attempts`` misses, the centre crop at the
    nearest allowed aspect ratio (RandomResizedCrop's law)."""
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(attempts):
        target = width * height * rng.uniform(*area)
        ratio = math.exp(rng.uniform(log_low, log_high))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    w, h = width, height
    if width / height < aspect[0]:
        h = round(width / aspect[0])
    elif width / height > aspect[1]:
        w = round(height * aspect[1])
    return (width - w) // 2, (height - h) // 2, w, h


def item_draw(seed: int, rank: int, epoch: int, position: int, width: int, height: int
              ) -> tuple[tuple[int, int, int, int], bool]:
    """The crop window and flip of the image at ``position`` in ``rank``'s epoch, from its own seed (a
    negative position in :func:`batch_seed`, apart from the batches' seeds that CRD's draws use)."""
    rng = np.random.default_rng(batch_seed(seed, rank, epoch, -1 - position))
    window = crop_window(width, height, rng)
    return window, bool(rng.random() < 0.5)


def check_dali_bundle(bundle: DataBundle) -> None:
    """DALI serves image folders with ImageNet's transforms (sizes above 64 px); anything else is one line."""
    if not hasattr(bundle.train, "samples") or bundle.image_size <= SMALL:
        raise UserError(f"--dali reads ImageNet-style image folders at more than {SMALL} px (RandomResizedCrop); "
                         f"{bundle.name} at {bundle.image_size} px is for the torchvision loader: leave --dali out")


class DaliLoader(PositionedBatches):
    """Batches ``[x, y]`` (+ ``index`` for 'instance', + ``contrast_idx`` for 'crd') decoded by DALI.

    The interface of :class:`dataset.memory.MemoryLoader`: ``set_position(epoch, start_batch)``,
    ``len()`` (batches in a whole epoch) and iteration. Training (``train=True``) follows the
    sampler; ``augment=False`` serves the training images through the test transform (a method that
    augments on the device). Evaluation: sequential over this rank's strided shard.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], mean: Sequence[float], std: Sequence[float], *,
                 device: torch.device, decoder: str = "cpu", image_size: int = 224, batch_size: int = 256,
                 train: bool = True, augment: bool = True, variant: str = "plain", num_threads: int = 4,
                 seed: int = 0, rank: int = 0, world_size: int = 1, nce_k: int = 16384, mode: str = "exact"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown loader variant '{variant}'; use one of: {', '.join(VARIANTS)}")
        if decoder not in ("cpu", "gpu"):
            raise ValueError(f"--dali takes cpu or gpu, not {decoder!r}")
        self.device = torch.device(device)
        if decoder == "gpu" and self.device.type != "cuda":
            raise ValueError("--dali gpu decodes on a GPU and this run has none: use --dali cpu")
        self.paths = [path for path, _ in samples]
        self.targets = torch.tensor([target for _, target in samples], dtype=torch.long)
        self.mean, self.std = [255 * m for m in mean], [255 * s for s in std]
        self.decoder, self.image_size, self.batch_size = decoder, image_size, batch_size
        self.train, self.augment, self.variant = train, augment, variant
        self.num_threads, self.nce_k, self.mode = max(num_threads, 1), nce_k, mode
        self.sampler = ResumableSampler(range(len(samples)), num_replicas=world_size, rank=rank, seed=seed)
        self.shard = list(range(rank, len(samples), world_size))
        self.generator = torch.Generator()

    def __iter__(self) -> Iterator[list[Tensor]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        order, first = (list(self.sampler), self.start_batch) if self.train else (self.shard, 0)
        if not order:
            return
        names = ["image", "index"]
        outputs = DALIGenericIterator(self._pipeline(self._encoded(order, first)), names,
                                      last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
        for number, (out,) in enumerate(outputs, start=first):
            index = out["index"].reshape(-1).long()
            batch = [out["image"], self.targets[index]]
            if self.train and self.variant != "plain":
                batch.append(index)
            if self.train and self.variant == "crd":
                self.generator.manual_seed(batch_seed(self.sampler.seed, self.sampler.rank, self.epoch, number))
                batch.append(draw_contrast_indices(index, self.targets, self.nce_k, self.mode, self.generator))
            yield batch

    def _encoded(self, order: list[int], first_batch: int) -> Iterator[tuple[np.ndarray, ...]]:
        """Per batch: the files' encoded bytes and dataset indices, and for training each image's crop
        window (x, y and w, h in pixels) and flip, drawn from the image's own seed (DALI pulls ahead)."""
        random = self.train and self.augment
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            data = [np.fromfile(self.paths[i], dtype=np.uint8) for i in batch]
            index = np.asarray(batch, dtype=np.int64)
            if not random:
                yield data, index
                continue
            windows, flips = [], []
            for offset, encoded in enumerate(data):
                position = first_batch * self.batch_size + start + offset  # the image's place in the epoch
                with Image.open(io.BytesIO(encoded.tobytes())) as image:  # reads the header only
                    window, flip = item_draw(self.sampler.seed, self.sampler.rank, self.epoch, position, *image.size)
                windows.append(window)
                flips.append(flip)
            windows = np.asarray(windows, dtype=np.int32)
            anchor, shape = np.ascontiguousarray(windows[:, :2]), np.ascontiguousarray(windows[:, 2:])
            yield data, index, anchor, shape, np.asarray(flips, dtype=np.int32)

    def _pipeline(self, source: Iterator):
        from nvidia.dali import fn, pipeline_def, types

        size, random = self.image_size, self.train and self.augment
        on_gpu = self.device.type == "cuda"
        decoder_device = "mixed" if self.decoder == "gpu" else "cpu"

        @pipeline_def
        def pipeline():
            if random:
                jpegs, index, anchor, shape, mirror = fn.external_source(
                    source=source, num_outputs=5, batch=True,
                    dtype=[types.UINT8, types.INT64, types.INT32, types.INT32, types.INT32])
                # EXIF orientation ignored, as PIL's loader for the torchvision path (and the window's pixels)
                images = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", device=decoder_device,
                                                 output_type=types.RGB, adjust_orientation=False)
                images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_TRIANGULAR)
            else:
                jpegs, index = fn.external_source(source=source, num_outputs=2, batch=True,
                                                  dtype=[types.UINT8, types.INT64])
                images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB,
                                           adjust_orientation=False)
                images = fn.resize(images, resize_shorter=round(size * 256 / 224), interp_type=types.INTERP_TRIANGULAR)
                mirror = 0
            if on_gpu and decoder_device == "cpu":
                images = images.gpu()  # SemCKD's cpu variant normalises on the GPU
            images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", crop=(size, size),
                                              mean=self.mean, std=self.std, mirror=mirror)
            return images, index

        pipe = pipeline(batch_size=self.batch_size, num_threads=self.num_threads,
                        device_id=self.device.index if on_gpu else None)
        pipe.build()
        return pipe


def dali_loader(opt: argparse.Namespace, bundle: DataBundle, device: torch.device, rank: int, world_size: int, *,
                train: bool, variant: str = "plain", augment: bool = True) -> DaliLoader:
    """The DALI loader for a run's options: training at ``--batch_size``, testing at half of it (as the others)."""
    check_dali_bundle(bundle)
    if opt.dali == "gpu" and device.type != "cuda":
        raise UserError("--dali gpu decodes on a GPU and this run has none: use --dali cpu")
    split = bundle.train if train else bundle.val
    batch_size = opt.batch_size if train else max(opt.batch_size // 2, 1)
    return DaliLoader(split.samples, bundle.mean, bundle.std, device=device, decoder=opt.dali,
                      image_size=bundle.image_size, batch_size=batch_size, train=train, augment=augment,
                      variant=variant, num_threads=opt.num_workers, seed=opt.seed, rank=rank, world_size=world_size,
                      nce_k=getattr(opt, "nce_k", 16384), mode=getattr(opt, "mode", "exact"))
