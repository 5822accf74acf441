"""MLKD's four rotated views of each training image, drawn for a whole batch on the training device.

DLKD (ifding/DLKD ``dataset/cifar.py``, ``dataset/imagenet.py``) builds them per image in PIL: a
horizontal flip shared by the four views (p 0.5), rotations by 0, 90, 180 and 270 degrees
(``np.rot90``), then each rotated copy augmented on its own: RandomCrop(32, padding 4) on CIFAR,
RandomResizedCrop(224) + RandomHorizontalFlip on ImageNet. Here the same draws are made from a batch of
un-augmented normalised images (``MethodSpec.train_augment = False``), so every loader feeds it, the
in-memory one included. Small images (CIFAR-sized, up to ``dataset.folder.SMALL``) get the padded crop,
larger ones the resized crop, as the data sets' own training transforms choose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dataset.folder import SMALL

VIEWS = 4
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop defaults
ATTEMPTS = 10  # torchvision's tries before it falls back to the whole (ratio-clamped) image


def _black(mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """The normalised value of a black pixel, per channel: torchvision's padding fill after Normalize."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=like.device)
    std = torch.as_tensor(std, dtype=torch.float32, device=like.device)
    return (0 - mean) / std


def rotations(images: Tensor, flips: Tensor) -> Tensor:
    """(B, C, S, S) -> (4B, C, S, S): each image mirrored where ``flips``, then rotated counter-clockwise
    by k * 90 degrees as ``np.rot90(img, k)`` on HWC arrays; view k of image b at row 4b + k."""
    b, c, h, w = images.shape
    if h != w:
        raise ValueError(f"rotated views need square images, got {h}x{w}")
    mirrored = torch.where(flips[:, None, None, None], images.flip(3), images)
    return torch.stack([torch.rot90(mirrored, k, dims=(2, 3)) for k in range(VIEWS)], dim=1).reshape(VIEWS * b, c, h, w)


def padded_crops(images: Tensor, black: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """RandomCrop(S, padding) of every image on its own, the padding black (as torchvision pads PIL images).

    The pixels are copied, not recomputed, so a crop holds exactly the values of the image it came from.
    """
    n, c, h, w = images.shape
    padded = black.reshape(1, c, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = images
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)
    index = torch.arange(n, device=images.device)[:, None, None]
    return padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # gathered as (n, h, w, c)


def resized_crop_boxes(n: int, size: int, generator: torch.Generator | None = None,
                       device: torch.device | None = None) -> Tensor:
    """(n, 4) boxes (top, left, height, width) drawn as torchvision's RandomResizedCrop draws them on a
    square ``size`` image: area fraction in SCALE, log-uniform aspect ratio in RATIO, the first of
    ATTEMPTS tries that fits, else the whole image (a square's ratio-clamped centre crop)."""
    area = size * size
    fraction = torch.empty(n, ATTEMPTS, device=device).uniform_(*SCALE, generator=generator)
    log_ratio = torch.empty(n, ATTEMPTS, device=device).uniform_(math.log(RATIO[0]), math.log(RATIO[1]),
                                                                  generator=generator)
    ratio = log_ratio.exp()
    w = torch.round(torch.sqrt(area * fraction * ratio))
    h = torch.round(torch.sqrt(area * fraction / ratio))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = torch.where(fits.any(1), fits.int().argmax(1), -1)
    pick = first.clamp_min(0)[:, None]
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], float(size))
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], float(size))
    top = torch.floor(torch.rand(n, generator=generator, device=device) * (size - h + 1))
    left = torch.floor(torch.rand(n, generator=generator, device=device) * (size - w + 1))
    return torch.stack([top, left, h, w], dim=1)


def resized_crops(images: Tensor, boxes: Tensor) -> Tensor:
    """Each image's box resized back to the full size: bilinear, pixel centres at half-integers, sampling
    clamped to the box (as torchvision crops first, then resizes)."""
    n, _, size, _ = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    centres = (torch.arange(size, dtype=images.dtype, device=images.device) + 0.5) / size

    def source(start: Tensor, length: Tensor) -> Tensor:  # (n, size) pixel coordinates in the image
        inside = (centres * length[:, None] - 0.5).clamp_min(0)
        return start[:, None] + torch.minimum(inside, (length - 1)[:, None])

    xs, ys = (2 * source(left, w) + 1) / size - 1, (2 * source(top, h) + 1) / size - 1  # grid_sample's [-1, 1]
    grid = torch.stack([xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rotated_views(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """(B, C, S, S) un-augmented normalised images -> (4B, C, S, S) MLKD views, sample-major.

    The output keeps the input's memory format (channels_last when the networks run in it).
    """
    n, size = images.shape[0], images.shape[-1]
    flips = torch.rand(n, generator=generator, device=images.device) < 0.5
    views = rotations(images, flips)
    if size <= SMALL:
        views = padded_crops(views, _black(mean, std, images), size // 8, generator)
    else:
        views = resized_crops(views, resized_crop_boxes(views.shape[0], size, generator, images.device))
        mirror = torch.rand(views.shape[0], generator=generator, device=images.device) < 0.5
        views = torch.where(mirror[:, None, None, None], views.flip(3), views)
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    return views.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
