"""Synthetic CIFAR-shaped data: offline, seeded, and structured so that distillation has something to carry.

Classes are grouped in superclasses of five (like CIFAR-100's 20 coarse labels). A superclass fixes an
object silhouette, a base colour and one texture grating; each class adds its own grating, colour shift
and shape perturbation. Every image draws a random background, pose (shift, scale, rotation, mirror),
colour jitter, occluder and pixel noise, and is blended with a sibling class of the same superclass by
a random weight, so class similarity is graded, which is exactly what a teacher's soft labels encode.
See docs/datasets.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from .base import ArrayDataset, DataBundle, channel_stats, crop_flip_transforms

SIZE = 32
GROUP = 5          # classes per superclass
MAX_SIBLING = 0.4  # largest blending weight of the sibling class
HARMONICS = np.arange(2, 5)  # silhouette radius harmonics


def _prototypes(rng: np.random.Generator, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class generative parameters; classes of one superclass share most of them."""
    sup = np.arange(num_classes) // GROUP
    n_sup = int(sup.max()) + 1

    def shared(shape, low, high, jitter):
        base = rng.uniform(low, high, (n_sup, *shape))[sup]
        return base + rng.normal(0.0, jitter, (num_classes, *shape))

    def grating(count):
        freq = rng.uniform(1.5, 4.0, count)
        angle = rng.uniform(0.0, np.pi, count)
        return np.stack([freq * np.cos(angle), freq * np.sin(angle)], axis=-1)

    return {
        "sup": sup,
        "colour": np.clip(shared((3,), 0.15, 0.85, 0.07), 0.0, 1.0),
        "contrast": rng.normal(0.0, 0.25, (num_classes, 3)),
        "radius": shared((), 0.45, 0.65, 0.03),
        "amp": shared((len(HARMONICS),), 0.0, 0.25, 0.04),
        "phase": shared((len(HARMONICS),), 0.0, 2 * np.pi, 0.3),
        "grating_sup": grating(n_sup)[sup],
        "grating_cls": grating(num_classes),
    }


def _siblings(rng: np.random.Generator, labels: np.ndarray, sup: np.ndarray) -> np.ndarray:
    """A random other class of the same superclass (the class itself when it has no sibling)."""
    first = sup[labels] * GROUP
    size = np.minimum(GROUP, len(sup) - first)
    offset = (labels - first + 1 + rng.integers(0, np.maximum(size - 1, 1))) % size
    return np.where(size > 1, first + offset, labels)


def _object(proto: dict[str, np.ndarray], cls: np.ndarray, x: np.ndarray, y: np.ndarray,
            phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask (N,H,W) and colour (N,H,W,3) of each class's object at object-frame coordinates."""
    rho, theta = np.hypot(x, y), np.arctan2(y, x)
    wobble = proto["amp"][cls][:, :, None, None] * np.cos(
        HARMONICS[None, :, None, None] * theta[:, None] + proto["phase"][cls][:, :, None, None])
    edge = proto["radius"][cls][:, None, None] * (1.0 + wobble.sum(axis=1))
    mask = 1.0 / (1.0 + np.exp((rho - edge) / 0.04))
    texture = 0.0
    for key, phase in zip(("grating_sup", "grating_cls"), phases.T, strict=True):
        f = proto[key][cls]
        texture = texture + 0.5 * np.cos(np.pi * (f[:, 0, None, None] * x + f[:, 1, None, None] * y)
                                         + phase[:, None, None])
    colour = proto["colour"][cls][:, None, None] + texture[..., None] * proto["contrast"][cls][:, None, None]
    return mask, colour


def _render(proto: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one image per label with random pose, background, sibling blend, occluder and noise."""
    n = len(labels)
    grid = np.linspace(-1.0, 1.0, SIZE)
    u, v = np.meshgrid(grid, grid)  # u: column (x), v: row (y)
    shift = rng.uniform(-0.3, 0.3, (n, 2))
    scale = rng.uniform(0.75, 1.25, n)
    angle = rng.uniform(-0.25, 0.25, n)
    mirror = rng.choice([-1.0, 1.0], n)
    cu, cv = (u - shift[:, 0, None, None]), (v - shift[:, 1, None, None])
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    x = mirror[:, None, None] * (cos * cu + sin * cv) / scale[:, None, None]
    y = (-sin * cu + cos * cv) / scale[:, None, None]

    phases = rng.uniform(0.0, 2 * np.pi, (n, 2))
    weight = rng.uniform(0.0, MAX_SIBLING, n)[:, None, None]
    mask_a, col_a = _object(proto, labels, x, y, phases)
    mask_b, col_b = _object(proto, _siblings(rng, labels, proto["sup"]), x, y, phases)
    mask = (1 - weight) * mask_a + weight * mask_b
    colour = (1 - weight[..., None]) * col_a + weight[..., None] * col_b

    bg_freq = rng.uniform(-1.5, 1.5, (n, 2))
    bg_wave = np.cos(np.pi * (bg_freq[:, 0, None, None] * u + bg_freq[:, 1, None, None] * v)
                     + rng.uniform(0, 2 * np.pi, n)[:, None, None])
    background = (rng.uniform(0.1, 0.9, (n, 1, 1, 3))
                  + 0.15 * bg_wave[..., None] * rng.normal(0.0, 1.0, (n, 1, 1, 3)))
    img = background * (1 - mask[..., None]) + colour * mask[..., None]

    img = img * rng.uniform(0.75, 1.25, (n, 1, 1, 1)) + rng.normal(0.0, 0.05, (n, 1, 1, 3))
    lo = rng.integers(0, SIZE, (n, 2))
    hi = lo + rng.integers(6, 14, (n, 2))
    rows, cols = np.arange(SIZE)[None, :, None], np.arange(SIZE)[None, None, :]
    occluded = ((rows >= lo[:, 0, None, None]) & (rows < hi[:, 0, None, None])
                & (cols >= lo[:, 1, None, None]) & (cols < hi[:, 1, None, None])
                & (rng.random(n) < 0.5)[:, None, None])
    img = np.where(occluded[..., None], rng.uniform(0.0, 1.0, (n, 1, 1, 3)), img)
    img = img + rng.normal(0.0, 0.05, img.shape)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _split(proto: dict[str, np.ndarray], size: int, seed: np.random.SeedSequence,
           chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """`size` images with near-balanced labels, rendered in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % len(proto["sup"])).astype(np.int64)
    images = [_render(proto, labels[i:i + chunk], rng) for i in range(0, size, chunk)]
    images = np.concatenate(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    return images, labels


def generate(num_classes: int = 100, train_size: int = 5000, val_size: int = 1000, seed: int = 0
             ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and val splits as (uint8 N×32×32×3, int64 N); independent streams per split."""
    proto_seed, train_seed, val_seed = np.random.SeedSequence(seed).spawn(3)
    proto = _prototypes(np.random.default_rng(proto_seed), num_classes)
    return _split(proto, train_size, train_seed), _split(proto, val_size, val_seed)


def build_synthetic(opt: argparse.Namespace) -> DataBundle:
    """CIFAR-shaped bundle; mean/std measured on the generated training images."""
    (train_x, train_y), (val_x, val_y) = generate(opt.syn_classes, opt.syn_train_size, opt.syn_val_size,
                                                  opt.syn_seed)
    mean, std = channel_stats(train_x)
    train_tf, test_tf = crop_flip_transforms(SIZE, mean, std)
    return DataBundle(name="synthetic", train=ArrayDataset(train_x, train_y, train_tf),
                      val=ArrayDataset(val_x, val_y, test_tf), num_classes=opt.syn_classes, image_size=SIZE,
                      mean=mean, std=std, train_array=(train_x, train_y), val_array=(val_x, val_y))
