"""ReviewKD: HCL and one ABF by hand, the layout derived for any pair against mdistiller's and the authors'
hand-written ones, each network's own taps (the teacher's pre-activation maps, the student's STU_PREACT ones),
the warm-up, gradients into the student and the ABFs (never the teacher), defaults, a real run."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, check_one_step, make_opt, nets, synthetic_ctx

import train_student
from distiller_zoo.registry import DistillBatch, Weights, get_method
from distiller_zoo.ReviewKD import ABF, ReviewKD, hcl_loss, review_layout
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher
from models import IMAGENET_MODELS, build_model, model_dict
from models.mobilenetv2 import MobileNetV2
from models.mobilenetv2_imagenet import MobileNetV2 as MobileNetV2Imagenet
from models.mobilenetv2_tinyimagenet import MobileNetV2TinyImageNet
from models.wrn import WideResNet

# one model per family (class) of models.model_dict
FAMILIES = ["resnet8", "ResNet50", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18",
            "MobileNetV1", "MobileNetV2_Imagenet", "ShuffleV2_Imagenet", "mobilenetv2_tinyimagenet"]


def features(name: str, size: int = 32, preact: bool = True, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(name, 100).eval()
    with torch.no_grad():
        return list(model(torch.randn(2, 3, size, size), is_feat=True, preact=preact)[0])


def layout(teacher: str, student: str, size: int = 32) -> tuple[list[int], list[int], list[int], list[int]]:
    lay = review_layout(features(student, size), features(teacher, size))
    return lay.in_channels, lay.out_channels, lay.shapes, lay.out_shapes


# ----- the layout ---------------------------------------------------------------------------------


def test_layout_is_mdistillers_cifar_configuration():
    """mdistiller's configs/cifar100/reviewkd.yaml (its cfg.py defaults) for resnet32x4 -> resnet8x4."""
    assert layout("resnet32x4", "resnet8x4") == ([64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32],
                                                 [1, 8, 16, 32])
    method = build_method("reviewkd", *nets("resnet8x4", "resnet32x4"), size=32)
    assert sum(p.numel() for p in method.parameters()) == 1_808_774  # methods.md §2.34, measured on mdistiller
    assert [abf.conv1[0].out_channels for abf in method.abfs] == [256] * 4  # mid = min(512, last in-channel)
    assert method.abfs[0].att_conv is None and all(abf.att_conv is not None for abf in method.abfs[1:])


def test_layout_is_mdistillers_imagenet_configuration():
    """configs/imagenet/r34_r18/reviewkd.yaml and r50_mv1/reviewkd.yaml (224 px)."""
    assert layout("ResNet34", "ResNet18", 224) == ([64, 128, 256, 512, 512], [64, 128, 256, 512, 512],
                                                   [1, 7, 14, 28, 56], [1, 7, 14, 28, 56])
    assert layout("ResNet50_Imagenet", "MobileNetV1", 224) == ([128, 256, 512, 1024, 1024],
                                                               [256, 512, 1024, 2048, 2048],
                                                               [1, 7, 14, 28, 56], [1, 7, 14, 28, 56])


@pytest.mark.parametrize("teacher, student, expected", [
    # the authors' CIFAR-100/model/reviewkd.py build_review_kd, per student family and teacher
    ("resnet56", "resnet20", ([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32], [1, 8, 16, 32])),
    ("wrn_40_2", "wrn_16_2", ([32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32], [1, 8, 16, 32])),
    ("vgg13", "vgg8", ([128, 256, 512, 512, 512], [128, 256, 512, 512, 512], [1, 4, 4, 8, 16], [1, 4, 4, 8, 16])),
    ("ResNet50", "MobileNetV2", ([12, 16, 48, 160, 1280], [256, 512, 1024, 2048, 2048], [1, 2, 4, 8, 16],
                                 [1, 4, 8, 16, 32])),
    ("vgg13", "MobileNetV2", ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512], [1, 2, 4, 8, 16],
                              [1, 4, 4, 8, 16])),
    ("resnet32x4", "ShuffleV1", ([240, 480, 960, 960], [64, 128, 256, 256], [1, 4, 8, 16], [1, 8, 16, 32])),
    ("wrn_40_2", "ShuffleV1", ([240, 480, 960, 960], [32, 64, 128, 128], [1, 4, 8, 16], [1, 8, 16, 32])),
    ("resnet32x4", "ShuffleV2", ([116, 232, 464, 1024], [64, 128, 256, 256], [1, 4, 8, 16], [1, 8, 16, 32])),
])
def test_layout_is_the_authors_for_their_pairs(teacher, student, expected):
    assert layout(teacher, student) == expected


def test_layout_of_networks_with_different_stage_counts_keeps_the_deepest():
    """vgg8 has four stage maps, resnet32x4 three: vgg8's shallowest is dropped, both ways round."""
    assert layout("resnet32x4", "vgg8") == ([256, 512, 512, 512], [64, 128, 256, 256], [1, 4, 4, 8], [1, 8, 16, 32])
    assert layout("vgg13", "resnet8x4") == ([64, 128, 256, 256], [256, 512, 512, 512], [1, 8, 16, 32], [1, 4, 4, 8])


def test_every_cifar_family_builds_and_runs():
    """One forward for a student of every CIFAR family against a 3-stage and a 4-stage teacher (shapes only)."""
    teachers = [features("resnet8x4"), features("vgg8")]
    for student in sorted(set(FAMILIES) - IMAGENET_MODELS):
        f_s = features(student)
        for f_t in teachers:
            lay = review_layout(f_s, f_t)
            method = ReviewKD(lay.in_channels, lay.out_channels, lay.shapes, lay.out_shapes).eval()
            out = method.review(method.student_levels(f_s))
            t_levels = [*f_t[1:-1][len(f_t) - 2 - (len(lay.shapes) - 1):], f_t[-1][:, :, None, None]]
            assert [o.shape for o in out] == [t.shape for t in t_levels], student


def test_unsupported_pair_is_one_line_error():
    flat = [torch.randn(2, 8), torch.randn(2, 8)]
    with pytest.raises(ValueError, match="square 4-D stage maps"):
        get_method("reviewkd").build(synthetic_ctx(flat, flat))


# ----- the student's taps -------------------------------------------------------------------------


def test_families_cover_the_model_zoo():
    assert {model_dict[n].__module__ for n in FAMILIES} == {f.__module__ for f in model_dict.values()}


@pytest.mark.parametrize("name", FAMILIES)
def test_relu_of_the_preact_maps_is_the_post_activation_map(name):
    """Why the student needs its own switch: only some networks' post-activation maps are the ReLU of their
    pre-activation ones (ShuffleV2: up to a fixed channel order). MobileNetV2s ignore ``preact``, and a
    WRN's pre-activation map is its residual sum through the next BatchNorm, not the sum mdistiller feeds."""
    size = 64 if name in IMAGENET_MODELS else 32
    pre, post = features(name, size, preact=True), features(name, size, preact=False)
    model = build_model(name, 10)
    for p, q in zip(pre[1:-1], post[1:-1], strict=True):
        if isinstance(model, (MobileNetV2, MobileNetV2Imagenet, MobileNetV2TinyImageNet)):
            assert torch.equal(p, q), name
        elif isinstance(model, WideResNet):
            assert not torch.allclose(torch.relu(p), q), name
        else:
            assert torch.allclose(torch.relu(p).sort(dim=1).values, q.sort(dim=1).values, atol=1e-6), name


def test_each_network_has_its_own_switch():
    """mdistiller: teacher taps pre-activation, the student STU_PREACT (False on CIFAR, True on ImageNet)."""
    spec = get_method("reviewkd")
    assert spec.preact
    assert spec.preact_student(make_opt()) is False
    assert spec.preact_student(make_opt(dataset="imagenet")) is True
    assert spec.preact_student(make_opt(reviewkd_stu_preact=True)) is True
    assert spec.preact_student(make_opt(dataset="imagenet", reviewkd_stu_preact=False)) is False
    assert get_method("kd").preact_student(make_opt()) is False and get_method("ofd").preact_student(make_opt())


@pytest.mark.parametrize("student_arch", ["wrn_16_1", "resnet8"])
def test_the_objective_feeds_the_students_own_maps_and_the_teachers_preact_maps(student_arch):
    """Through the trainer's objective, a WRN student gives its raw residual sums (mdistiller's default for
    every pair; the old shared switch gave them through the next BatchNorm) and the teacher its
    pre-activation maps."""
    torch.manual_seed(0)
    student, teacher = nets(student_arch, "resnet20")
    method = build_method("reviewkd", student, teacher, size=16)
    spec = get_method("reviewkd")
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=True)
    objective = DistillObjective(student, frozen, method, spec, Weights(0, 0, 1), 4.0, nullcontext,
                                 student_preact=spec.preact_student(make_opt()))
    seen = {}
    original = method.forward

    def spy(batch):
        seen["feat_s"], seen["feat_t"] = batch.feat_s, batch.feat_t
        return original(batch)

    method.forward = spy
    x = torch.randn(2, 3, 16, 16)
    student.eval()
    method.eval()
    with torch.no_grad():
        own, _ = student(x, is_feat=True, preact=False)
        pre_t, _ = teacher(x, is_feat=True, preact=True)
        objective([x, torch.zeros(2, dtype=torch.long)])
    for got, want in zip(seen["feat_s"], own, strict=True):
        assert torch.allclose(got, want)
    for got, want in zip(seen["feat_t"], pre_t, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


# ----- the losses by hand -------------------------------------------------------------------------


def avg_pool_by_hand(m: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling of a (C, H, W) array to size x size (H divisible here)."""
    c, h, _ = m.shape
    k = h // size
    return np.array([[[m[ch, i * k:(i + 1) * k, j * k:(j + 1) * k].mean() for j in range(size)]
                      for i in range(size)] for ch in range(c)])


def hcl_by_hand(fs: list[np.ndarray], ft: list[np.ndarray]) -> float:
    total = 0.0
    for s, t in zip(fs, ft, strict=True):
        h = s.shape[2]
        terms = [(1.0, float(((s - t) ** 2).mean()))]
        for size in (4, 2, 1):
            if size < h:
                w = terms[-1][0] / 2
                ps = np.stack([avg_pool_by_hand(x, size) for x in s])
                pt = np.stack([avg_pool_by_hand(x, size) for x in t])
                terms.append((w, float(((ps - pt) ** 2).mean())))
        total += sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    return total


def test_hcl_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 8, 8), (2, 2, 4, 4), (2, 4, 1, 1)]  # pools 4,2,1 / 2,1 (weights 1/2, 1/4) / none
    fs = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    ft = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    expected = hcl_by_hand([f.numpy() for f in fs], [f.numpy() for f in ft])
    assert math.isclose(hcl_loss(fs, ft).item(), expected, rel_tol=1e-12)


def test_abf_fusion_matches_hand_computation():
    """Eval mode (BN with fresh statistics: x / sqrt(1 + eps)); 1x1 and 3x3 convs and nearest resizes by loops."""
    torch.manual_seed(0)
    abf = ABF(2, 3, 2, fuse=True).double().eval()
    for bn in (abf.conv1[1], abf.conv2[1]):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x, y = torch.randn(1, 2, 2, 2, dtype=torch.float64), torch.randn(1, 3, 1, 1, dtype=torch.float64)
    out, residual = abf(x, y, shape=2, out_shape=4)

    def bn(v: float, layer: torch.nn.BatchNorm2d, c: int) -> float:
        return v / math.sqrt(1 + layer.eps) * layer.weight[c].item() + layer.bias[c].item()

    w1 = abf.conv1[0].weight.detach()[:, :, 0, 0].numpy()
    wa, ba = abf.att_conv[0].weight.detach()[:, :, 0, 0].numpy(), abf.att_conv[0].bias.detach().numpy()
    fused = np.zeros((3, 2, 2))
    for i in range(2):
        for j in range(2):
            a = [bn(float(w1[c] @ x[0, :, i, j].numpy()), abf.conv1[1], c) for c in range(3)]
            b = [y[0, c, 0, 0].item() for c in range(3)]  # the 1x1 residual, upsampled by nearest
            z = [1 / (1 + math.exp(-(float(wa[k] @ np.array(a + b)) + ba[k]))) for k in range(2)]
            fused[:, i, j] = [a[c] * z[0] + b[c] * z[1] for c in range(3)]
    resized = fused.repeat(2, axis=1).repeat(2, axis=2)  # nearest 2x2 -> 4x4
    assert torch.allclose(residual[0], torch.from_numpy(resized), atol=1e-12)
    w2 = abf.conv2[0].weight.detach().numpy()
    padded = np.pad(resized, ((0, 0), (1, 1), (1, 1)))
    for o in range(2):
        for i in range(4):
            for j in range(4):
                v = sum(w2[o, c, di, dj] * padded[c, i + di, j + dj] for c in range(3) for di in range(3)
                        for dj in range(3))
                assert math.isclose(out[0, o, i, j].item(), bn(v, abf.conv2[1], o), rel_tol=1e-9, abs_tol=1e-12)


def test_method_is_warmed_up_hcl_of_the_review():
    torch.manual_seed(0)
    student, teacher = nets("resnet8", "resnet20")
    method = build_method("reviewkd", student, teacher, size=16).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        f_s, l_s = student.eval()(x, is_feat=True, preact=False)
        f_t, l_t = teacher.eval()(x, is_feat=True, preact=True)
        review = method.review([f_s[1], f_s[2], f_s[3], f_s[4][:, :, None, None]])
        full = hcl_loss(review, [f_t[1], f_t[2], f_t[3], f_t[4][:, :, None, None]]).item()
        for epoch, ramp in ((1, 0.05), (10, 0.5), (20, 1.0), (200, 1.0)):
            got = method(DistillBatch(f_s, f_t, l_s, l_t, torch.zeros(3, dtype=torch.long), epoch=epoch)).item()
            assert math.isclose(got, ramp * full, rel_tol=1e-5)


# ----- defaults, gradients, runs ------------------------------------------------------------------


def test_defaults_and_flags():
    opt, spec = train_student.parse_option(["--path_t", "t.pth", "--distill", "reviewkd"])
    assert (opt.gamma, opt.alpha, opt.beta) == (1, 0.0, 5.0) and spec.weights == Weights(1.0, 0.0, 5.0)
    assert spec.preact and spec.uses_features
    assert (opt.reviewkd_warmup, opt.reviewkd_stu_preact) == (None, None)
    student, teacher = nets()
    assert build_method("reviewkd", student, teacher).warmup_epochs == 20
    assert build_method("reviewkd", student, teacher, dataset="imagenet").warmup_epochs == 1
    assert build_method("reviewkd", student, teacher, dataset="imagenet", reviewkd_warmup=3).warmup_epochs == 3
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--distill", "reviewkd", "--reviewkd_stu_preact"])
    assert opt.reviewkd_stu_preact is True
    with pytest.raises(ValueError, match="reviewkd_warmup"):
        build_method("reviewkd", student, teacher, reviewkd_warmup=-1)


@pytest.mark.parametrize("student, teacher", [("resnet8", "resnet20"), ("vgg8", "resnet20"), ("wrn_16_1", "vgg8")])
def test_gradients_reach_student_and_fusion_modules_not_teacher(student, teacher):
    check_one_step("reviewkd", student, teacher, size=32)


def test_bf16_autocast_features():
    """Under bf16 autocast the features arrive in float32 (as the trainer gives them); the loss is float32."""
    student, teacher = nets("resnet8", "resnet20")
    method = build_method("reviewkd", student, teacher, size=16)
    x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f_s, l_s = student(x, is_feat=True, preact=False)
        f_t, l_t = teacher(x, is_feat=True, preact=True)
    f_s, f_t = [f.float() for f in f_s], [f.float() for f in f_t]
    loss = method(batch_of(f_s, f_t))
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "reviewkd", "-a", "1")
