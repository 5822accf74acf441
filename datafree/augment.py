"""Augmentations of synthetic batches on the device, differentiable where synthesis needs them.

The crop and flip are those of :mod:`dataset.memory` (one gather per batch, zero padding, as
torchvision's and kornia's RandomCrop(32, padding=4) + RandomHorizontalFlip); here they also run on
float images in [0, 1] with gradients flowing back to the generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dataset.memory import crop_flip


class Normalizer:
    """(x − mean) / std per channel on NCHW images; ``reverse=True`` undoes it (the reference's name)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)

    def __call__(self, x: Tensor, reverse: bool = False) -> Tensor:
        return x * self.std + self.mean if reverse else (x - self.mean) / self.std

    def clip(self, x: Tensor) -> Tensor:
        """Clamp normalised images to what pixels in [0, 1] can give (the reference's ``clip_images``)."""
        return torch.maximum(torch.minimum(x, (1 - self.mean) / self.std), -self.mean / self.std)


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Per image: a random crop of the zero-padded image and a horizontal flip with probability ½.

    ``x`` is NCHW float; gradients flow to it. The output is channels_last in memory (a permuted NHWC gather).
    """
    n = x.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=x.device)
    flips = torch.rand(n, generator=generator, device=x.device) < 0.5
    index = torch.arange(n, device=x.device)
    return crop_flip(x.permute(0, 2, 3, 1), index, offsets, flips, padding).permute(0, 3, 1, 2)


def jitter_and_flip(x: Tensor, generator: torch.Generator, lim: float = 1.0 / 8.0) -> Tensor:
    """DeepInversion's augmentation: the whole batch rolled by random offsets of up to ``lim`` of each side,
    then mirrored with probability ½ (one draw for the batch, as the reference)."""
    lim_h, lim_w = int(x.shape[-2] * lim), int(x.shape[-1] * lim)
    draws = torch.rand(3, generator=generator, device=x.device).tolist()
    off_h = int(draws[0] * (2 * lim_h + 1)) - lim_h
    off_w = int(draws[1] * (2 * lim_w + 1)) - lim_w
    x = torch.roll(x, shifts=(off_h, off_w), dims=(2, 3))
    return torch.flip(x, dims=(3,)) if draws[2] > 0.5 else x


def to_uint8(images: Tensor) -> Tensor:
    """NCHW floats in [0, 1] to NHWC uint8, truncating as the reference's PNG writer does (``x·255`` cast)."""
    return (images.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
