"""Synthetic CIFAR-shaped data: offline, seeded, generated in seconds, with class structure for KD to carry.

Classes come in superclasses of five (like CIFAR-100's 20 coarse labels). A superclass fixes an object
silhouette, a base colour, a contrast colour and one texture grating; each class perturbs those and adds a
grating of its own. Each image draws a random background, pose (shift, scale, rotation, mirror), colour
jitter, occluder and pixel noise, and blends in a little of a sibling class, so classes are graded in
similarity, which is what a teacher's soft labels encode. docs/datasets.md explains the choices.
"""

from __future__ import annotations

import argparse

import numpy as np

from .base import ArrayDataset, DataBundle, channel_stats, crop_flip_transforms

SIZE = 32
GROUP = 5                      # classes per superclass
HARMONICS = np.array([2, 3, 4])  # of the silhouette's radius, around the object's centre
FREQUENCY = (3.0, 8.0)         # texture gratings, cycles across the image
EDGE = 0.04                    # silhouette softness, in half-image units
SHIFT, SCALE, ROTATION = 0.3, 0.25, 0.25  # pose: ± half-image units, ± relative size, ± radians
SIBLING = 0.1                  # largest weight of the blended-in sibling class
BRIGHTNESS, TINT, NOISE = 0.1, 0.05, 0.02
OCCLUSION, OCCLUDER_PX = 0.2, (4, 9)  # probability and side range of a flat-coloured occluding box


def _prototypes(rng: np.random.Generator, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class generative parameters; classes of a superclass share a draw plus a small jitter."""
    sup = np.arange(num_classes) // GROUP
    n_sup = int(sup.max()) + 1

    def shared(shape: tuple[int, ...], low: float, high: float, jitter: float) -> np.ndarray:
        return rng.uniform(low, high, (n_sup, *shape))[sup] + rng.normal(0.0, jitter, (num_classes, *shape))

    def gratings(count: int) -> np.ndarray:
        freq, angle = rng.uniform(*FREQUENCY, count), rng.uniform(0.0, np.pi, count)
        return np.stack([freq * np.cos(angle), freq * np.sin(angle)], axis=-1)

    return {
        "sup": sup,
        "colour": np.clip(shared((3,), 0.15, 0.85, 0.07), 0.0, 1.0),
        "contrast": rng.normal(0.0, 0.25, (num_classes, 3)),
        "radius": shared((), 0.45, 0.65, 0.03),
        "amp": shared((len(HARMONICS),), 0.0, 0.25, 0.04),
        "phase": shared((len(HARMONICS),), 0.0, 2 * np.pi, 0.3),
        "gratings": np.stack([gratings(n_sup)[sup], gratings(num_classes)], axis=1),  # (C, 2, 2)
    }


def _siblings(rng: np.random.Generator, labels: np.ndarray, sup: np.ndarray) -> np.ndarray:
    """A random other class of the same superclass (the class itself when it has none)."""
    first = sup[labels] * GROUP
    size = np.minimum(GROUP, len(sup) - first)
    offset = (labels - first + 1 + rng.integers(0, np.maximum(size - 1, 1))) % size
    return np.where(size > 1, first + offset, labels)


def _object(proto: dict[str, np.ndarray], cls: np.ndarray, x: np.ndarray, y: np.ndarray,
            phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft mask (N,H,W) and colour (N,H,W,3) of each row's class object, at object-frame coordinates."""
    rho, theta = np.hypot(x, y), np.arctan2(y, x)
    wobble = proto["amp"][cls][:, :, None, None] * np.cos(
        HARMONICS[None, :, None, None] * theta[:, None] + proto["phase"][cls][:, :, None, None])
    edge = proto["radius"][cls][:, None, None] * (1.0 + wobble.sum(axis=1))
    mask = 1.0 / (1.0 + np.exp((rho - edge) / EDGE))
    f = proto["gratings"][cls]  # (N, 2 gratings, 2 coordinates)
    waves = np.cos(np.pi * (f[:, :, 0, None, None] * x[:, None] + f[:, :, 1, None, None] * y[:, None])
                   + phases[:, :, None, None])
    texture = 0.5 * waves.sum(axis=1)
    colour = proto["colour"][cls][:, None, None] + texture[..., None] * proto["contrast"][cls][:, None, None]
    return mask, colour


def _render(proto: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uint8 image per label, every nuisance drawn per image."""
    n = len(labels)
    u, v = np.meshgrid(np.linspace(-1.0, 1.0, SIZE), np.linspace(-1.0, 1.0, SIZE))  # columns, rows

    def per_image(values: np.ndarray) -> np.ndarray:
        return values.reshape(n, *([1] * 2), *values.shape[1:])  # broadcast over rows and columns

    # pose: the object frame is the image frame shifted, rotated, scaled and possibly mirrored
    shift = rng.uniform(-SHIFT, SHIFT, (n, 2))
    scale = per_image(rng.uniform(1 - SCALE, 1 + SCALE, n))
    angle = per_image(rng.uniform(-ROTATION, ROTATION, n))
    mirror = per_image(rng.choice([-1.0, 1.0], n))
    cu, cv = u - per_image(shift[:, 0]), v - per_image(shift[:, 1])
    x = mirror * (np.cos(angle) * cu + np.sin(angle) * cv) / scale
    y = (np.cos(angle) * cv - np.sin(angle) * cu) / scale

    # object: the class blended with a sibling, same pose and texture phases
    phases = rng.uniform(0.0, 2 * np.pi, (n, 2))
    weight = per_image(rng.uniform(0.0, SIBLING, n))
    mask_a, colour_a = _object(proto, labels, x, y, phases)
    mask_b, colour_b = _object(proto, _siblings(rng, labels, proto["sup"]), x, y, phases)
    mask = ((1 - weight) * mask_a + weight * mask_b)[..., None]
    colour = (1 - weight[..., None]) * colour_a + weight[..., None] * colour_b

    # background: a random colour with a faint random grating
    bg_freq = rng.uniform(-1.5, 1.5, (n, 2))
    bg_wave = np.cos(np.pi * (per_image(bg_freq[:, 0]) * u + per_image(bg_freq[:, 1]) * v)
                     + per_image(rng.uniform(0.0, 2 * np.pi, n)))
    background = rng.uniform(0.1, 0.9, (n, 1, 1, 3)) + 0.15 * bg_wave[..., None] * rng.normal(0, 1, (n, 1, 1, 3))
    img = background * (1 - mask) + colour * mask

    # photometric jitter, an occluding box, pixel noise
    img = img * rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS, (n, 1, 1, 1)) + rng.normal(0.0, TINT, (n, 1, 1, 3))
    top_left = rng.integers(0, SIZE, (n, 2))
    bottom_right = top_left + rng.integers(*OCCLUDER_PX, (n, 2))
    rows, cols = np.arange(SIZE)[:, None], np.arange(SIZE)[None, :]
    box = ((rows >= per_image(top_left[:, 0])) & (rows < per_image(bottom_right[:, 0]))
           & (cols >= per_image(top_left[:, 1])) & (cols < per_image(bottom_right[:, 1]))
           & per_image(rng.random(n) < OCCLUSION))
    img = np.where(box[..., None], rng.uniform(0.0, 1.0, (n, 1, 1, 3)), img)
    img = img + rng.normal(0.0, NOISE, img.shape)
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _split(proto: dict[str, np.ndarray], size: int, seed: np.random.SeedSequence,
           chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``size`` images with balanced labels in random order, rendered in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % len(proto["sup"])).astype(np.int64)
    images = [_render(proto, labels[i:i + chunk], rng) for i in range(0, size, chunk)]
    return (np.concatenate(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)), labels


def generate(num_classes: int = 100, train_size: int = 5000, val_size: int = 1000, seed: int = 0
             ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Train and val splits as (uint8 N×32×32×3, int64 N), from one set of class prototypes.

    The prototypes and each split have their own random stream, so a split does not change when the
    other's size does.
    """
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
