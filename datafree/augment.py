"""Augmentations of synthetic batches on the device, differentiable where synthesis needs them.

The crop and flip are those of :mod:`dataset.memory` (one gather per batch, zero padding, as
torchvision's and kornia's RandomCrop(32, padding=4) + RandomHorizontalFlip); here they also run on
float images in [0, 1] with gradients flowing back to the generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


def random_resized_crop_flip(x: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.25, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Per image: a crop of a uniform fraction ``scale`` of the area with a log-uniform aspect ``ratio`` (clipped
    to the image), resized back bilinearly (corners on corners), mirrored with probability ½: kornia's
    RandomResizedCrop + RandomHorizontalFlip, CMI's "local view". One affine resampling; gradients flow to ``x``.
    """
    n, _, h, w = x.shape
    draws = torch.rand(n, 5, generator=generator, device=x.device)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[:, 1])
    crop_w = torch.sqrt(area * aspect).round().clamp(1, w)
    crop_h = torch.sqrt(area / aspect).round().clamp(1, h)
    x0 = torch.floor(draws[:, 2] * (w - crop_w + 1))
    y0 = torch.floor(draws[:, 3] * (h - crop_h + 1))
    sign = torch.where(draws[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device)
    # pixel p is -1 + 2p / (size - 1) in align_corners coordinates; the crop spans [x0, x0 + crop_w - 1]
    theta[:, 0, 0] = sign * (crop_w - 1) / max(w - 1, 1)
    theta[:, 0, 2] = -1 + (2 * x0 + crop_w - 1) / max(w - 1, 1)
    theta[:, 1, 1] = (crop_h - 1) / max(h - 1, 1)
    theta[:, 1, 2] = -1 + (2 * y0 + crop_h - 1) / max(h - 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


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
