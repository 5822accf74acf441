"""MLLD's weak and strong views of each training image, drawn for a whole batch on the training device.

The official MLLD code (Jin-Ying/Multi-Level-Logit-Distillation, ``mdistiller/dataset/cifar100.py`` and
``imagenet.py``) gives every image two views: weak = the usual crop + horizontal flip; strong = another
crop + flip, then FixMatch's RandAugment(2, 10) on the PIL image: two operations drawn with replacement
from fourteen, each with a magnitude uniform in its range, then a Cutout of up to half the image side
filled with (125, 123, 114). Here the same draws are made from a batch of un-augmented normalised
images (``MethodSpec.train_augment = False``), so every loader feeds them; the operations work on
integer pixel values in [0, 255] as PIL's do on uint8 images (tests compare each with PIL's).

Within one RandAugment slot every image gets exactly one operation: all candidates are computed for the
whole batch and each image keeps its own (no host synchronisation, no per-image loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dataset.folder import SMALL
from dataset.views import padded_crops, resized_crop_boxes, resized_crops

# FixMatch's list as the official code has it: (name, low, high) of the magnitude
OPS: tuple[tuple[str, float, float], ...] = (
    ("autocontrast", 0, 1), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0, 1), ("identity", 0, 1), ("posterize", 4, 8), ("rotate", -30, 30), ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0, 256), ("translate_x", -0.3, 0.3),
    ("translate_y", -0.3, 0.3),
)
OP_INDEX = {name: i for i, (name, _, _) in enumerate(OPS)}
N_OPS = 2  # RandAugment(n=2, m=10); m is unused (FixMatch's "deprecated" magnitude)
CUTOUT_MAX = 0.5  # Cutout side, as a fraction of the width, uniform in [0, 0.5)
CUTOUT_FILL = (125.0, 123.0, 114.0)
GRAY = (19595, 38470, 7471)  # PIL's RGB -> L weights (x 2^16, rounded)
# current Pillow divides equalize's step by 255; older releases, which the official code may have run, by 256
EQUALIZE_DIVISOR = 255
SMOOTH = (1.0, 5.0, 13.0)  # PIL's ImageFilter.SMOOTH: 3x3 of ones, centre 5, divided by 13


def _per_channel(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device).reshape(1, -1, 1, 1)


def to_pixels(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Normalised images -> the uint8 values they were made from (float32 integers in [0, 255])."""
    return ((images.float() * _per_channel(std, images) + _per_channel(mean, images)) * 255).round().clamp(0, 255)


def from_pixels(pixels: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """ToTensor + Normalize of pixel values."""
    return (pixels / 255 - _per_channel(mean, pixels)) / _per_channel(std, pixels)


def crop_and_flip(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """The usual training augmentation of each image on its own: RandomCrop(S, padding S/8, black) for images
    up to SMALL px, RandomResizedCrop(S) above; then a horizontal flip with p 0.5."""
    n, size = images.shape[0], images.shape[-1]
    if size <= SMALL:
        black = -_per_channel(mean, images).reshape(-1) / _per_channel(std, images).reshape(-1)
        views = padded_crops(images, black, size // 8, generator)
    else:
        views = resized_crops(images, resized_crop_boxes(n, size, generator, images.device))
    flip = torch.rand(n, generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], views.flip(3), views)


# ----- the operations, on (N, C, H, W) integer pixel values with one magnitude per image (N,) -------------


def _lut(pixels: Tensor, table: Tensor) -> Tensor:
    """Apply a per-image, per-channel table (N, C, 256) to the pixels."""
    n, c, h, w = pixels.shape
    index = pixels.reshape(n, c, h * w).long()
    return table.to(pixels.dtype).gather(2, index).reshape(n, c, h, w)


def _histogram(pixels: Tensor) -> Tensor:
    """Per image and channel, the count of each value 0..255 (N, C, 256), in int64."""
    n, c, h, w = pixels.shape
    index = pixels.reshape(n, c, h * w).long()
    return torch.zeros(n, c, 256, dtype=torch.long, device=pixels.device).scatter_add_(2, index, torch.ones_like(index))


def autocontrast(pixels: Tensor) -> Tensor:
    """ImageOps.autocontrast (no cutoff): per channel, stretch [lo, hi] to [0, 255] by int(ix * scale + offset)."""
    hist = _histogram(pixels)
    levels = torch.arange(256, device=pixels.device)
    present = hist > 0
    lo = torch.where(present, levels, 256).amin(2, keepdim=True).double()
    hi = torch.where(present, levels, -1).amax(2, keepdim=True).double()
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp_min(1)  # a true division, as Python's (255.0 / t multiplies
    # by the reciprocal, one rounding more)
    table = (levels.double() * scale - lo * scale).trunc().clamp(0, 255)  # PIL: float64, int() truncates
    return _lut(pixels, torch.where(hi > lo, table, levels.double()))


def equalize(pixels: Tensor) -> Tensor:
    """ImageOps.equalize: per channel, table[i] = (step // 2 + count below i) // step with step = (total - the
    count of the highest value present) // EQUALIZE_DIVISOR (values above 255 clip); identity for one value or
    step 0."""
    hist = _histogram(pixels)
    levels = torch.arange(256, device=pixels.device)
    hi = torch.where(hist > 0, levels, -1).amax(2, keepdim=True)
    step = (hist.sum(2, keepdim=True) - hist.gather(2, hi)) // EQUALIZE_DIVISOR
    below = hist.cumsum(2) - hist
    table = ((step // 2 + below) // step.clamp_min(1)).clamp(max=255)
    keep = ((hist > 0).sum(2, keepdim=True) <= 1) | (step == 0)
    return _lut(pixels, torch.where(keep, levels, table))


def posterize(pixels: Tensor, bits: Tensor) -> Tensor:
    """ImageOps.posterize(max(1, int(v))): keep the top ``bits`` bits."""
    quantum = (2.0 ** (8 - bits.trunc().clamp(1, 8))).reshape(-1, 1, 1, 1)
    return torch.div(pixels, quantum, rounding_mode="floor") * quantum


def solarize(pixels: Tensor, threshold: Tensor) -> Tensor:
    """ImageOps.solarize: values at or above the threshold are inverted."""
    return torch.where(pixels < threshold.reshape(-1, 1, 1, 1), pixels, 255 - pixels)


def grayscale(pixels: Tensor) -> Tensor:
    """PIL's convert('L') of RGB: (19595 R + 38470 G + 7471 B + 2^15) >> 16, as (N, 1, H, W)."""
    r, g, b = pixels.long().unbind(1)
    return ((GRAY[0] * r + GRAY[1] * g + GRAY[2] * b + (1 << 15)) >> 16).unsqueeze(1).to(pixels.dtype)


def smooth(pixels: Tensor) -> Tensor:
    """PIL's ImageFilter.SMOOTH: the 3x3 kernel in float32, rounded (+0.5, truncated); the border pixels kept."""
    side, centre, divisor = SMOOTH
    kernel = torch.full((3, 3), side / divisor, dtype=torch.float32, device=pixels.device)
    kernel[1, 1] = centre / divisor
    c = pixels.shape[1]
    filtered = F.conv2d(pixels.float(), kernel.expand(c, 1, 3, 3), groups=c)
    out = pixels.clone()
    out[:, :, 1:-1, 1:-1] = (filtered + 0.5).trunc().clamp(0, 255)
    return out


def blend(degenerate: Tensor, pixels: Tensor, factor: Tensor) -> Tensor:
    """Image.blend(degenerate, image, factor) for a factor in [0, 1]: truncation of the float32 interpolation."""
    factor = factor.float().reshape(-1, 1, 1, 1)
    return (degenerate + factor * (pixels - degenerate)).trunc().clamp(0, 255)


def affine_matrices(op: Tensor, magnitude: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, 3) output-to-input pixel maps in float64 as PIL builds them for rotate (degrees, counter-clockwise
    about the centre), shear_x/_y (x += v y, y += v x) and translate_x/_y (v times the side); identity for the
    other operations."""
    v = magnitude.double()
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    theta = -torch.deg2rad(v)
    cos, sin = torch.cos(theta), torch.sin(theta)
    cx, cy = width / 2, height / 2
    rotate = torch.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], 1)
    choices = {
        "rotate": rotate,
        "shear_x": torch.stack([one, v, zero, zero, one, zero], 1),
        "shear_y": torch.stack([one, zero, zero, v, one, zero], 1),
        "translate_x": torch.stack([one, zero, v * width, zero, one, zero], 1),
        "translate_y": torch.stack([one, zero, zero, zero, one, v * height], 1),
    }
    matrix = torch.stack([one, zero, zero, zero, one, zero], 1)
    for name, m in choices.items():
        matrix = torch.where((op == OP_INDEX[name])[:, None], m, matrix)
    return matrix.reshape(-1, 2, 3)


def affine(pixels: Tensor, matrix: Tensor) -> Tensor:
    """PIL's AFFINE transform with NEAREST and black fill: output pixel (x, y) takes the input pixel holding
    ``matrix @ (x + 0.5, y + 0.5, 1)`` (floor; outside the image: 0)."""
    n, c, h, w = pixels.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=pixels.device, dtype=torch.float64) + 0.5,
                            torch.arange(w, device=pixels.device, dtype=torch.float64) + 0.5, indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], 0).reshape(3, h * w)
    source = (matrix @ grid).floor()  # (N, 2, H*W)
    sx, sy = source[:, 0].long(), source[:, 1].long()
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    flat = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1))[:, None, :].expand(n, c, h * w)
    out = pixels.reshape(n, c, h * w).gather(2, flat)
    return torch.where(inside[:, None, :], out, 0.0).reshape(n, c, h, w)


def apply_op(pixels: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
    """Each image through its own operation ``OPS[op]`` at its own magnitude."""
    picked = op.reshape(-1, 1, 1, 1)

    def where(name: str, result: Tensor, otherwise: Tensor) -> Tensor:
        return torch.where(picked == OP_INDEX[name], result, otherwise)

    gray = grayscale(pixels)
    mean_gray = gray.double().mean((2, 3), keepdim=True).add(0.5).trunc().to(pixels.dtype)  # ImageStat, int(m + 0.5)
    degenerate = where("color", gray.expand_as(pixels),
                       where("contrast", mean_gray.expand_as(pixels),
                             where("sharpness", smooth(pixels), torch.zeros_like(pixels))))
    is_blend = sum(picked == OP_INDEX[name] for name in ("brightness", "color", "contrast", "sharpness")).bool()
    out = torch.where(is_blend, blend(degenerate, pixels, magnitude), pixels)
    is_affine = sum(picked == OP_INDEX[name] for name in
                    ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")).bool()
    out = torch.where(is_affine, affine(pixels, affine_matrices(op, magnitude, *pixels.shape[2:])), out)
    out = where("autocontrast", autocontrast(pixels), out)
    out = where("equalize", equalize(pixels), out)
    out = where("posterize", posterize(pixels, magnitude), out)
    return where("solarize", solarize(pixels, magnitude), out)


def cutout(pixels: Tensor, side: Tensor, centre: Tensor) -> Tensor:
    """FixMatch's CutoutAbs: a square of ``side`` px (float) at the top-left ``int(max(0, centre - side / 2))``,
    its far edge ``min(size, start + side)``, both edges included as PIL's rectangle fills them."""
    n, _, h, w = pixels.shape
    x0 = (centre[:, 0] - side / 2).clamp_min(0).trunc()
    y0 = (centre[:, 1] - side / 2).clamp_min(0).trunc()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, w)).trunc()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, h)).trunc()
    cols = torch.arange(w, device=pixels.device, dtype=x0.dtype)
    rows = torch.arange(h, device=pixels.device, dtype=y0.dtype)
    in_x = (cols >= x0[:, None]) & (cols <= x1[:, None])
    in_y = (rows >= y0[:, None]) & (rows <= y1[:, None])
    box = (in_y[:, :, None] & in_x[:, None, :])[:, None] & (side > 0)[:, None, None, None]
    return torch.where(box, _per_channel(CUTOUT_FILL, pixels), pixels)


def rand_augment(pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """FixMatch's RandAugment(2, 10) as the official MLLD code applies it to each image, then its Cutout.

    ``random.choices`` draws the two operations with replacement; each magnitude is low + (high - low) * U;
    the Cutout side is U * 0.5 * width and its centre ``np.random.uniform(size)``, which NumPy reads as
    low=size, high=1: uniform in (1, size], a quirk kept here.
    """
    n, _, h, w = pixels.shape
    device = pixels.device
    low = torch.tensor([lo for _, lo, _ in OPS], dtype=torch.float64, device=device)
    high = torch.tensor([hi for _, _, hi in OPS], dtype=torch.float64, device=device)
    for _ in range(N_OPS):
        op = torch.randint(0, len(OPS), (n,), generator=generator, device=device)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        pixels = apply_op(pixels, op, low[op] + (high[op] - low[op]) * u)
    side = torch.rand(n, generator=generator, device=device, dtype=torch.float64) * CUTOUT_MAX * w
    u = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    sizes = torch.tensor([w, h], dtype=torch.float64, device=device)
    return cutout(pixels, side, sizes + (1 - sizes) * u)


def weak_and_strong(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(B, C, S, S) un-augmented normalised images -> their weak and strong views, each (B, C, S, S),
    normalised, in the input's memory format."""
    weak = crop_and_flip(images, mean, std, generator)
    strong = crop_and_flip(images, mean, std, generator)
    strong = from_pixels(rand_augment(to_pixels(strong, mean, std), generator), mean, std).to(images.dtype)
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return weak.contiguous(memory_format=fmt), strong.contiguous(memory_format=fmt)

