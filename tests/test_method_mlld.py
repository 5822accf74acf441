"""MLLD: the three alignments and the official loss by hand, the weak and strong views against PIL
(every RandAugment operation, Cutout, the crops), the two passes through the trainer's objective,
gradients, defaults, a real run."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, nets
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

import train_student
from dataset.strong_views import OPS, apply_op, crop_and_flip, cutout, rand_augment, weak_and_strong
from distiller_zoo.MLLD import MLLD, MLLDLoss, bc_loss, cc_loss, kd_loss
from distiller_zoo.registry import Weights, get_method
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


# ----- the losses by hand -------------------------------------------------------------------------


def softmax_rows(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kd_by_hand(z_s: np.ndarray, z_t: np.ndarray, t: float) -> float:
    p_s, p_t = softmax_rows(z_s, t), softmax_rows(z_t, t)
    return t * t * float(np.mean([sum(p_t[b, k] * math.log(p_t[b, k] / p_s[b, k]) for k in range(z_s.shape[1]))
                                  for b in range(z_s.shape[0])]))


def gram_by_hand(p: np.ndarray, over_batch: bool) -> np.ndarray:
    n, k = p.shape
    if over_batch:
        return np.array([[sum(p[i, c] * p[j, c] for c in range(k)) for j in range(n)] for i in range(n)])
    return np.array([[sum(p[b, i] * p[b, j] for b in range(n)) for j in range(k)] for i in range(k)])


def bc_by_hand(z_s: np.ndarray, z_t: np.ndarray, t: float) -> float:
    gap = gram_by_hand(softmax_rows(z_t, t), True) - gram_by_hand(softmax_rows(z_s, t), True)
    return float((gap**2).sum()) / z_s.shape[0]


def cc_by_hand(z_s: np.ndarray, z_t: np.ndarray, t: float) -> float:
    gap = gram_by_hand(softmax_rows(z_t, t), False) - gram_by_hand(softmax_rows(z_s, t), False)
    return float((gap**2).sum()) / z_s.shape[1]


def official_loss_by_hand(s_w: np.ndarray, t_w: np.ndarray, s_s: np.ndarray, t_s: np.ndarray, base: float) -> float:
    """KD_ours.forward_train's distillation terms, as it writes them: masks (NumPy percentiles) multiplied into
    the reduced losses and averaged; strong instance terms at base, 3, 5 on the strong logits, 2 and 6 on the weak."""
    p_t = softmax_rows(t_w, 1.0)
    confidence = p_t.max(1)
    mask = confidence <= np.percentile(confidence, 50)
    class_confidence = p_t.sum(0)
    class_mask = class_confidence <= np.percentile(class_confidence, 50)
    temps = (base, 3.0, 5.0, 2.0, 6.0)
    kd_weak = sum((kd_by_hand(s_w, t_w, t) * mask).mean() for t in temps)
    kd_strong = sum(kd_by_hand(s_s, t_s, t) for t in temps[:3]) + sum(kd_by_hand(s_w, t_w, t) for t in temps[3:])
    cc_weak = sum((cc_by_hand(s_w, t_w, t) * class_mask).mean() for t in temps)
    bc_weak = sum((bc_by_hand(s_w, t_w, t) * mask).mean() for t in temps)
    return kd_weak + kd_strong + cc_weak + bc_weak


def logits(seed: int, n: int = 6, k: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k)) * 2


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_alignments_match_hand_computation(t):
    z_s, z_t = logits(0), logits(1)
    s, q = torch.from_numpy(z_s), torch.from_numpy(z_t)
    assert math.isclose(kd_loss(s, q, t).item(), kd_by_hand(z_s, z_t, t), rel_tol=1e-5)
    assert math.isclose(bc_loss(s, q, t).item(), bc_by_hand(z_s, z_t, t), rel_tol=1e-4)
    assert math.isclose(cc_loss(s, q, t).item(), cc_by_hand(z_s, z_t, t), rel_tol=1e-4)
    assert kd_loss(s, q, t, reduce=False).shape == (6,) and bc_loss(s, q, t, reduce=False).shape == (6, 6)
    assert cc_loss(s, q, t, reduce=False).shape == (5, 5)


@pytest.mark.parametrize("n, base", [(6, 4.0), (7, 1.0)])
def test_loss_is_the_official_forward(n, base):
    s_w, t_w, s_s, t_s = (logits(seed, n, 5) for seed in range(4))
    got = MLLDLoss(base)(*(torch.from_numpy(z) for z in (s_w, t_w, s_s, t_s))).item()
    assert math.isclose(got, official_loss_by_hand(s_w, t_w, s_s, t_s, base), rel_tol=1e-4)


# ----- the views against PIL ----------------------------------------------------------------------


def pil_op(img: Image.Image, name: str, v: float) -> Image.Image:
    """The official code's operation ``name`` at magnitude ``v`` (its augment_list functions)."""
    w, h = img.size
    ops = {
        "autocontrast": lambda: ImageOps.autocontrast(img),
        "brightness": lambda: ImageEnhance.Brightness(img).enhance(v),
        "color": lambda: ImageEnhance.Color(img).enhance(v),
        "contrast": lambda: ImageEnhance.Contrast(img).enhance(v),
        "equalize": lambda: ImageOps.equalize(img),
        "identity": lambda: img,
        "posterize": lambda: ImageOps.posterize(img, max(1, int(v))),
        "rotate": lambda: img.rotate(v),
        "sharpness": lambda: ImageEnhance.Sharpness(img).enhance(v),
        "shear_x": lambda: img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0)),
        "shear_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0)),
        "solarize": lambda: ImageOps.solarize(img, v),
        "translate_x": lambda: img.transform(img.size, Image.AFFINE, (1, 0, v * w, 0, 1, 0)),
        "translate_y": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * h)),
    }
    return ops[name]()


def sample_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Full-range noise, narrow-range noise (autocontrast and equalize have work) and blocky images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[: n // 3] = images[: n // 3] // 3 + 40
    blocks = rng.integers(0, 256, (n // 3, size // 4, size // 4, 3), dtype=np.uint8)
    images[n // 3: 2 * (n // 3)] = blocks.repeat(4, 1).repeat(4, 2)
    return images


@pytest.mark.parametrize("index", range(len(OPS)))
def test_each_operation_is_pils(index):
    """Exactly PIL's output, but for rotations and shears, where PIL's fixed-point sampling puts a few
    boundary pixels one source pixel off (measured: under 0.1 % of pixels at 32 and 224 px)."""
    name, low, high = OPS[index]
    images = sample_images(18, 32, seed=index)
    magnitude = low + (high - low) * np.random.default_rng(100 + index).random(len(images))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    got = apply_op(pixels, torch.full((len(images),), index), torch.from_numpy(magnitude))
    got = got.permute(0, 2, 3, 1).numpy()
    assert got.min() >= 0 and got.max() <= 255 and np.array_equal(got, got.round())
    expected = np.stack([np.asarray(pil_op(Image.fromarray(img), name, float(v))) for img, v in zip(images, magnitude,
                                                                                                     strict=True)])
    wrong = (got.astype(np.int64) != expected).mean()
    assert wrong <= (0.003 if name in ("rotate", "shear_x", "shear_y") else 0.0), (name, wrong)


def test_operations_apply_per_image():
    images = sample_images(6, 16, seed=3)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    names = ["solarize", "identity", "rotate", "equalize", "brightness", "posterize"]
    values = [100.0, 0.5, 20.0, 0.5, 0.3, 5.0]
    op = torch.tensor([[n for n, _, _ in OPS].index(name) for name in names])
    got = apply_op(pixels, op, torch.tensor(values, dtype=torch.float64)).permute(0, 2, 3, 1).numpy()
    for b, (name, v) in enumerate(zip(names, values, strict=True)):
        assert np.array_equal(got[b], np.asarray(pil_op(Image.fromarray(images[b]), name, v))), name


def test_cutout_is_pils_rectangle():
    rng = np.random.default_rng(1)
    for _ in range(50):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        v, cx, cy = rng.random() * 16, 32 - 31 * rng.random(), 32 - 31 * rng.random()
        pil = Image.fromarray(img)
        x0, y0 = int(max(0, cx - v / 2)), int(max(0, cy - v / 2))
        ImageDraw.Draw(pil).rectangle((x0, y0, min(32, x0 + v), min(32, y0 + v)), (125, 123, 114))
        got = cutout(torch.from_numpy(img).permute(2, 0, 1)[None].float(), torch.tensor([v], dtype=torch.float64),
                     torch.tensor([[cx, cy]], dtype=torch.float64))
        assert np.array_equal(got[0].permute(1, 2, 0).numpy(), np.asarray(pil))


def test_rand_augment_draws_two_operations_per_image_and_a_cutout():
    torch.manual_seed(0)
    pixels = torch.from_numpy(sample_images(300, 16)).permute(0, 3, 1, 2).float()
    out = rand_augment(pixels)
    fill = torch.tensor([125.0, 123.0, 114.0]).reshape(1, 3, 1, 1)
    assert ((out == fill).all(1).flatten(1).any(1)).float().mean() > 0.95  # a Cutout almost always shows
    assert np.array_equal(out.numpy(), out.round().numpy()) and out.min() >= 0 and out.max() <= 255
    changed = (out != pixels).flatten(1).float().mean(1)
    assert (changed > 0.5).float().mean() > 0.3  # geometric, solarize, equalize... change most pixels of many


def crops_of(image: torch.Tensor, black: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every RandomCrop(S, padding) outcome of one normalised image, flipped or not."""
    c, s, _ = image.shape
    padded = black.reshape(c, 1, 1).expand(c, s + 2 * padding, s + 2 * padding).clone()
    padded[:, padding:padding + s, padding:padding + s] = image
    crops = [padded[:, r:r + s, q:q + s] for r in range(2 * padding + 1) for q in range(2 * padding + 1)]
    return crops + [crop.flip(2) for crop in crops]


def test_weak_and_strong_views():
    """The weak view is one crop-and-flip outcome of its image; the strong view starts from another and is
    RandAugmented: its pixels are whole uint8 values after denormalising; both keep channels_last."""
    images = torch.from_numpy(sample_images(8, 16, seed=5)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(MEAN).reshape(1, 3, 1, 1), torch.tensor(STD).reshape(1, 3, 1, 1)
    normalised = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(2)
    weak, strong = weak_and_strong(normalised, MEAN, STD)
    black = -mean.reshape(3) / std.reshape(3)
    for b in range(8):
        assert any(torch.equal(weak[b], crop) for crop in crops_of(normalised[b], black, 2)), b
    assert weak.is_contiguous(memory_format=torch.channels_last)
    assert strong.is_contiguous(memory_format=torch.channels_last)
    pixels = (strong * std + mean) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3)
    torch.manual_seed(2)
    assert torch.equal(crop_and_flip(normalised, MEAN, STD), weak)  # the weak view is drawn first


# ----- the method ---------------------------------------------------------------------------------


def objective_and_nets(**opt):
    spec = get_method("mlld")
    student, teacher = nets()
    method = build_method("mlld", student, teacher, **opt)
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    return DistillObjective(student, frozen, method, spec, spec.weights, 4.0, nullcontext), student, teacher, method


def test_objective_runs_both_views_through_both_networks():
    """-r 0.1 -a 0 -b 0.9: 0.1 (CE(weak) + CE(strong)) + 0.9 MLLDLoss, the student run on each view apart."""
    objective, student, teacher, method = objective_and_nets()
    x = torch.randn(8, 3, 16, 16)
    y = torch.tensor([0, 3, 7, 9, 1, 2, 3, 4])
    student.train()
    torch.manual_seed(7)
    logit_s, terms, total = objective([x, y])
    torch.manual_seed(7)
    weak, strong = weak_and_strong(x, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # build_method's context: no normalisation
    with torch.no_grad():
        s_w, s_s = student(weak), student(strong)  # train mode: each view normalised by its own batch
        t_w, t_s = teacher(weak), teacher(strong)
    assert torch.allclose(logit_s, s_w, atol=1e-5)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(terms["cls"], ce(s_w, y) + ce(s_s, y), atol=1e-5)
    expected_kd = MLLDLoss(4.0)(s_w, t_w, s_s, t_s)
    assert torch.allclose(terms["kd"], expected_kd, rtol=1e-4)
    assert torch.allclose(total, 0.1 * terms["cls"] + 0.9 * terms["kd"], rtol=1e-6)
    assert method._strong is None  # the strong view is used once


def test_gradients_reach_student_not_teacher():
    objective, student, teacher, method = objective_and_nets()
    student.train()
    _, _, total = objective([torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])])
    total.backward()
    first = next(student.parameters()).grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert not list(method.parameters())


def test_forward_needs_a_step():
    method = build_method("mlld", *nets())
    with pytest.raises(RuntimeError, match="strong view"):
        method(batch_of([torch.zeros(2, 4)], [torch.zeros(2, 4)]))


def test_defaults_and_flags():
    opt, spec = train_student.parse_option(["--path_t", "t.pth", "--distill", "mlld"])
    assert (opt.gamma, opt.alpha, opt.beta) == (0.1, 0.0, 0.9) and spec.weights == Weights(0.1, 0.0, 0.9)
    assert not spec.train_augment and not spec.uses_features and opt.mlld_T is None
    student, teacher = nets()
    assert build_method("mlld", student, teacher).criterion.temperatures == (4.0, 3.0, 5.0, 2.0, 6.0)
    assert build_method("mlld", student, teacher, dataset="imagenet").criterion.temperatures[0] == 1.0
    assert build_method("mlld", student, teacher, mlld_T=2.0).criterion.temperatures == (2.0, 3.0, 5.0, 2.0, 6.0)
    with pytest.raises(ValueError, match="mlld_T"):
        build_method("mlld", student, teacher, mlld_T=0.0)
    assert isinstance(build_method("mlld", student, teacher), MLLD)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "mlld", "-a", "0.5")
