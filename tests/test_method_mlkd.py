"""MLKD: the four rotated views (DLKD's PIL pipeline, outcome by outcome), the three losses by hand,
the heads' sizes, gradients, defaults and flags, teachers in DLKD's format, real runs through both loaders."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, run_cli
from method_checks import build_method, nets
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

import train_student
from dataset.views import padded_crops, resized_crop_boxes, resized_crops, rotated_views
from distiller_zoo.MLKD import AlignLoss, CorrLoss, MLKDMethod, SupConLoss
from distiller_zoo.registry import DistillBatch, get_method
from helper.checkpoint import state_dict_of
from models import build_model

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def uint8_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def normalised(images: np.ndarray) -> torch.Tensor:
    """What the un-augmented loaders give: ToTensor + Normalize of each image."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return torch.stack([tf(Image.fromarray(img)) for img in images])


# ----- the four views --------------------------------------------------------------------------


def test_views_without_crop_are_the_rotations_of_one_flip():
    """4 px images have no padding (4 // 8 = 0): each view is exactly np.rot90 of the (flipped) image."""
    images = uint8_images(64, 4)
    torch.manual_seed(0)
    views = rotated_views(normalised(images), MEAN, STD)
    assert views.shape == (256, 3, 4, 4)
    flipped = []
    for b, img in enumerate(images):
        candidates = {flip: [normalised(np.rot90(img[:, ::-1] if flip else img, k).copy()[None])[0] for k in range(4)]
                      for flip in (False, True)}
        got = [views[4 * b + k] for k in range(4)]
        match = [flip for flip, rots in candidates.items()
                 if all(torch.equal(g, r) for g, r in zip(got, rots, strict=True))]
        assert match, f"sample {b}: the views are not the rotations of one (flipped) image"
        flipped.append(match[0])
    assert 16 < sum(flipped) < 48  # the shared flip is drawn per sample, about half the time


def dlkd_outcomes(img: np.ndarray) -> dict[tuple[bool, int], torch.Tensor]:
    """Every outcome of DLKD's per-image pipeline for one image, per (flip, rotation): np.rot90 of the
    (flipped) HWC array, then RandomCrop(32, padding=4) + ToTensor + Normalize; (F, 9 x 9, C, H, W)."""
    tail = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    outcomes = {}
    for flip in (False, True):
        for k in range(4):
            pil = TF.pad(Image.fromarray(np.rot90(img[:, ::-1] if flip else img, k).copy()), 4, fill=0)
            outcomes[flip, k] = torch.stack([tail(TF.crop(pil, r, c, 32, 32)) for r in range(9) for c in range(9)])
    return outcomes


def test_views_are_dlkds_crops_of_the_rotations_of_one_flip():
    """Each view is one of DLKD's outcomes for its rotation, all four from the same flip; the crop offsets
    are drawn per view (not shared) and cover every outcome."""
    images = uint8_images(12, 32, seed=1)
    torch.manual_seed(1)
    views = rotated_views(normalised(images), MEAN, STD)
    offsets, flips, shared = Counter(), [], 0
    for b, img in enumerate(images):
        outcomes = dlkd_outcomes(img)
        found = {}
        for flip in (False, True):
            hits = []
            for k in range(4):
                close = (outcomes[flip, k] - views[4 * b + k]).abs().amax(dim=(1, 2, 3)) < 1e-5
                hits.append(close.nonzero().flatten().tolist())
            if all(hits):
                found[flip] = [h[0] for h in hits]
        assert len(found) == 1, f"sample {b}: views are not crops of the rotations of one flip ({found})"
        (flip, picks), = found.items()
        flips.append(flip)
        offsets.update(picks)
        shared += len(set(picks)) == 1
    assert shared <= 1  # each view cropped on its own: four equal offsets are a 1 in 81^3 event
    assert 0 < sum(flips) < len(flips)
    assert len(offsets) > 25  # 48 draws spread over the 81 offsets (36 distinct expected)


def test_views_keep_the_memory_format():
    x = normalised(uint8_images(2, 32))
    assert rotated_views(x, MEAN, STD).is_contiguous()
    last = rotated_views(x.contiguous(memory_format=torch.channels_last), MEAN, STD)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()


def test_padding_is_normalised_black():
    x = torch.full((1, 3, 8, 8), 5.0)
    torch.manual_seed(0)
    for _ in range(20):
        crop = padded_crops(x, torch.tensor([-1.0, -2.0, -3.0]), padding=1)[0]
        border = crop != 5.0
        assert torch.equal(crop[border], torch.tensor([-1.0, -2.0, -3.0])[:, None, None].expand(3, 8, 8)[border])


def test_resized_crops_match_torchvisions_resized_crop():
    """Large images: each box resized back to full size as torchvision's bilinear resized_crop does."""
    x = torch.randn(5, 3, 80, 80)
    boxes = torch.tensor([[0, 0, 80, 80], [10, 5, 40, 60], [79, 79, 1, 1], [3, 30, 50, 20], [0, 40, 80, 40]])
    got = resized_crops(x, boxes.float())
    for img, (top, left, h, w), out in zip(x, boxes.tolist(), got, strict=True):
        expected = TF.resized_crop(img, top, left, h, w, [80, 80], antialias=False)
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)  # float32 grid round trips


def test_resized_crop_boxes_follow_torchvisions_law():
    torch.manual_seed(0)
    top, left, h, w = resized_crop_boxes(4000, 224).unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 224).all() and (left + w <= 224).all()
    fraction, ratio = h * w / 224**2, w / h
    assert fraction.min() > 0.07 and fraction.max() <= 1.0
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    torch.manual_seed(0)
    params = [transforms.RandomResizedCrop.get_params(torch.empty(3, 224, 224), [0.08, 1.0], [3 / 4, 4 / 3])
              for _ in range(4000)]
    reference = torch.tensor([p[2] * p[3] / 224**2 for p in params])
    assert abs(fraction.mean() - reference.mean()) < 0.02  # the same law of the crop's area


# ----- the losses, by hand ---------------------------------------------------------------------


def dims_opt(s_dim: int, t_dim: int, feat_dim: int = 3) -> argparse.Namespace:
    return argparse.Namespace(s_dim=s_dim, t_dim=t_dim, feat_dim=feat_dim)


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().double().tolist()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / max(math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)), 1e-16)


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def embed(linear: torch.nn.Linear, feats: list[list[float]]) -> list[list[float]]:
    w, b = linear.weight.double().tolist(), linear.bias.double().tolist()
    return [unit([sum(wi * fi for wi, fi in zip(row, f, strict=True)) + bi for row, bi in zip(w, b, strict=True)])
            for f in feats]


def supcon_by_hand(e: list[list[float]], positive, temperature: float = 0.07) -> float:
    """Mean over anchors i of -(1/|P(i)|) sum_{p in P(i)} log(exp(z_ip) / (sum_{a != i} exp(z_ia) + 1e-7)),
    z shifted by each row's maximum as the reference does (its eps then sits at that scale)."""
    n, total = len(e), 0.0
    for i in range(n):
        z = [sum(x * y for x, y in zip(e[i], e[j], strict=True)) / temperature for j in range(n)]
        top = max(z)
        z = [v - top for v in z]
        denominator = sum(math.exp(z[a]) for a in range(n) if a != i)
        pos = [p for p in range(n) if p != i and positive(i, p)]
        total += -sum(z[p] - math.log(denominator + 1e-7) for p in pos) / len(pos)
    return total / n


def test_supcon_matches_a_direct_computation():
    torch.manual_seed(0)
    loss = SupConLoss(dims_opt(5, 6, feat_dim=4)).double()
    f_s, f_t = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    e = embed(loss.embed_s.linear, rows(f_s)) + embed(loss.embed_t.linear, rows(f_t))
    y = labels.tolist() * 2
    expected = supcon_by_hand(e, lambda i, p: y[i] == y[p])
    assert math.isclose(loss(f_s, f_t, labels).item(), expected, rel_tol=1e-9)
    # without labels: the one positive of each anchor is its own row in the other network
    expected = supcon_by_hand(e, lambda i, p: i % 8 == p % 8)
    assert math.isclose(loss(f_s, f_t).item(), expected, rel_tol=1e-9)
    mixed = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0])
    ym = mixed.tolist() * 2
    assert math.isclose(loss(f_s, f_t, labels=mixed).item(), supcon_by_hand(e, lambda i, p: ym[i] == ym[p]),
                        rel_tol=1e-9)


def kl_batchmean_by_hand(teacher: list[list[float]], student: list[list[float]], temperature: float) -> float:
    def softmax(row):
        ex = [math.exp(v / temperature) for v in row]
        return [v / sum(ex) for v in ex]

    total = 0.0
    for t_row, s_row in zip(teacher, student, strict=True):
        p, q = softmax(t_row), softmax(s_row)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return total / len(teacher)


def test_correlation_matches_a_direct_computation():
    """3B x B cosine similarities of rotated (rows) to original (columns) views; KL(teacher || student), T 0.5."""
    torch.manual_seed(1)
    loss = CorrLoss(dims_opt(5, 7)).double()
    f_s, f_t = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 7, dtype=torch.float64)
    head = rows(loss.mlp(f_s))
    teacher = rows(f_t)
    rotated = [i for i in range(12) if i % 4]
    originals = [i for i in range(12) if i % 4 == 0]
    s_sim = [[cosine(head[i], head[j]) for j in originals] for i in rotated]
    t_sim = [[cosine(teacher[i], teacher[j]) for j in originals] for i in rotated]
    assert math.isclose(loss(f_s, f_t).item(), kl_batchmean_by_hand(t_sim, s_sim, 0.5), rel_tol=1e-9)
    with pytest.raises(ValueError, match="4 views per sample"):
        loss(f_s[:10], f_t[:10])


def test_alignment_matches_a_direct_computation():
    torch.manual_seed(2)
    loss = AlignLoss(dims_opt(5, 3)).double()
    f_s, f_t = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    head = rows(loss.mlp(f_s))
    expected = 2 - 2 * sum(cosine(h, t) for h, t in zip(head, rows(f_t), strict=True)) / 8
    assert math.isclose(loss(f_s, f_t).item(), expected, rel_tol=1e-9)
    assert loss.mlp.net[0].out_features == 16 * 3


def test_heads_have_dlkds_sizes_for_resnet32x4_to_resnet8x4():
    method = build_method("mlkd", *nets("resnet8x4", "resnet32x4", 100), size=32, num_classes=100)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(method.criterion_corr.mlp) == 132_096
    assert count(method.criterion_align.mlp) == 2_109_696
    assert count(method.criterion_kd.embed_s) + count(method.criterion_kd.embed_t) == 65_792
    assert count(method) == 132_096 + 2_109_696 + 65_792  # nothing else trains


# ----- the step: terms, logits, gradients -------------------------------------------------------


def test_terms_and_logits_of_the_original_views():
    method = build_method("mlkd", *nets(), size=16)
    torch.manual_seed(3)
    n = 8
    feat_s, feat_t = [torch.randn(4 * n, 64)], [torch.randn(4 * n, 64)]
    logit_s = torch.randn(4 * n, 10)
    target = torch.arange(n).repeat_interleave(4) % 10
    batch = DistillBatch(feat_s, feat_t, logit_s, torch.randn(4 * n, 10), target)
    logits, terms = method.loss_terms(batch, torch.nn.CrossEntropyLoss(), lambda s, t: 1 / 0)
    assert torch.equal(logits, logit_s[0::4])  # one row per loader sample, in its order
    assert set(terms) == {"cls", "div", "kd", "align"}
    assert torch.allclose(terms["cls"], torch.nn.functional.cross_entropy(logit_s[0::4], target[0::4]))
    assert torch.allclose(terms["div"], method.criterion_corr(feat_s[0], feat_t[0]))
    assert torch.allclose(terms["kd"], method.criterion_kd(feat_s[0], feat_t[0], target))
    assert torch.allclose(terms["align"], method.criterion_align(feat_s[0], feat_t[0]))


def test_prepare_batch_repeats_per_sample_fields_sample_major():
    method = build_method("mlkd", *nets(), size=16)
    x, y, index = torch.randn(3, 3, 16, 16), torch.tensor([7, 1, 4]), torch.tensor([10, 20, 30])
    views, y4, index4 = method.prepare_batch([x, y, index])
    assert views.shape == (12, 3, 16, 16)
    assert y4.tolist() == [7] * 4 + [1] * 4 + [4] * 4 and index4.tolist() == [10] * 4 + [20] * 4 + [30] * 4


def test_gradients_reach_the_student_and_every_head_never_the_teacher():
    student, teacher = nets()
    method = build_method("mlkd", student, teacher, size=16)
    teacher_state = copy.deepcopy(teacher.state_dict())
    student.train()
    method.train()
    optimizer = torch.optim.SGD([*student.parameters(), *method.main_parameters()], lr=0.1)
    torch.manual_seed(4)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    views, y4 = method.prepare_batch([x, y])
    feat_s, logit_s = student(views, is_feat=True)
    feat_t, logit_t = teacher(views, is_feat=True)  # autograd on: only the method may keep gradient out
    logits, terms = method.loss_terms(DistillBatch(feat_s, feat_t, logit_s, logit_t, y4),
                                      torch.nn.CrossEntropyLoss(), lambda s, t: 1 / 0)
    weights = {"cls": 1.0, "div": 50.0, "kd": 1.0, **method.extra_weights}
    total = sum(weights[k] * v for k, v in terms.items())
    assert logits.shape == (6, 10) and all(math.isfinite(v.item()) for v in terms.values())
    optimizer.zero_grad()
    total.backward()
    assert student.conv1.weight.grad.abs().sum() > 0
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key


# ----- defaults, flags, teachers ----------------------------------------------------------------


def test_defaults_are_dlkds_cifar_weights():
    spec = get_method("mlkd")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 50.0, 1.0)
    assert spec.train_augment is False and spec.uses_features
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "mlkd"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.delta) == (1.0, 50.0, 1.0, 20.0)
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "mlkd",
                                         "-r", "1", "-a", "20", "-b", "0.5", "-d", "10"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.delta) == (1.0, 20.0, 0.5, 10.0)
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "mlkd", "--delta", "3"])
    assert opt.delta == 3.0
    method = build_method("mlkd", *nets(), size=16, delta=7.5)
    assert isinstance(method, MLKDMethod) and method.extra_weights == {"align": 7.5}


def test_negative_delta_is_refused():
    with pytest.raises(ValueError, match="-d/--delta must not be negative"):
        build_method("mlkd", *nets(), size=16, delta=-1.0)


def test_a_dlkd_state_dict_file_gives_its_weights():
    state = build_model("resnet8", 10).state_dict()
    got = state_dict_of({"state_dict": state, "epoch": 240}, "resnet8.pth")
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def write_dlkd_teacher(folder, arch: str = "resnet20"):
    """A teacher saved as DLKD's loader expects: {'state_dict': ...} at save/models/<arch>_vanilla/<arch>.pth."""
    torch.manual_seed(0)
    path = folder / "save" / "models" / f"{arch}_vanilla" / f"{arch}.pth"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": build_model(arch, 10).state_dict()}, path)
    return path


@pytest.mark.parametrize("loader", ["memory", "torchvision"])
def test_end_to_end_with_a_dlkd_teacher(tmp_path, loader):
    teacher = write_dlkd_teacher(tmp_path)
    proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(teacher.relative_to(tmp_path)), "--distill",
                                        "mlkd", "--model_s", "resnet8", "--epochs", "1", "--loader", loader],
                   tmp_path)
    assert f"data: {loader} loader" in proc.stdout and "teacher accuracy" in proc.stdout
    assert not re.search(r"\b(nan|inf)\b", proc.stdout.lower())
    [folder] = (tmp_path / "save/student_model").glob("S:resnet8_T:resnet20_synthetic_mlkd_*")
    [row] = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss_cls", "loss_div", "loss_kd", "loss_align"):
        assert math.isfinite(row[key]), key
    assert math.isclose(row["loss"], row["loss_cls"] + 50 * row["loss_div"] + row["loss_kd"] + 20 * row["loss_align"],
                        rel_tol=1e-4)
    assert (folder / "resnet8_best.pth").is_file()
