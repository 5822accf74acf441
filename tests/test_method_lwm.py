"""LwM: Grad-CAM against finite differences and loops, the taps, a real step (fp32, bf16), a run."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
from method_checks import build_method, check_e2e, nets, synthetic_ctx
from torch import nn

from distiller_zoo.LwM import LwM, grad_cam, middle_stage
from distiller_zoo.registry import Weights, get_method
from helper.compile import decide as compile_decision
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher, fold_batchnorms


class _Tiny(nn.Module):
    """conv -> tanh -> the tapped map (C=2) -> conv -> ReLU -> global pool -> linear, in float64."""

    def __init__(self, seed: int, stride: int):
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Conv2d(1, 2, 3, stride=stride, padding=1)
        self.tail = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(3, 4))
        self.double()

    def forward(self, x):
        fmap = torch.tanh(self.head(x))
        return fmap, self.tail(fmap)


def cams_by_hand(net: _Tiny, x: torch.Tensor, y: list[int], h: float = 1e-6) -> list[list[float]]:
    """Finite-difference gradients of the target logit w.r.t. each map value; weights and CAM by loops;
    ReLU, then L2-normalised."""
    with torch.no_grad():
        fmap, _ = net(x)
        out = []
        for b, label in enumerate(y):
            c_n, h_n, w_n = fmap.shape[1:]
            g = torch.zeros(c_n, h_n, w_n, dtype=torch.float64)
            for c in range(c_n):
                for i in range(h_n):
                    for j in range(w_n):
                        up, down = fmap[b : b + 1].clone(), fmap[b : b + 1].clone()
                        up[0, c, i, j] += h
                        down[0, c, i, j] -= h
                        g[c, i, j] = (net.tail(up)[0, label] - net.tail(down)[0, label]) / (2 * h)
            weights = [sum(g[c, i, j].item() for i in range(h_n) for j in range(w_n)) / (h_n * w_n)
                       for c in range(c_n)]
            cam = [max(sum(weights[c] * g[c, i, j].item() for c in range(c_n)), 0.0)
                   for i in range(h_n) for j in range(w_n)]
            norm = math.sqrt(sum(v * v for v in cam)) or 1.0
            out.append([v / norm for v in cam])
    return out


def _pool2(cam: list[float], side: int) -> list[float]:
    """2x2 average pooling of a flattened side x side map, by loops."""
    half = side // 2
    return [sum(cam[(2 * i + a) * side + 2 * j + b] for a in (0, 1) for b in (0, 1)) / 4
            for i in range(half) for j in range(half)]


def test_loss_matches_finite_difference_grad_cam_with_pooling():
    """Student 8x8 CAM (pooled to the teacher's 4x4), given as float copies of the maps, as the trainer does."""
    student, teacher = _Tiny(0, stride=1), _Tiny(1, stride=2)
    torch.manual_seed(2)
    x, y = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 3, 1])
    fm_s, out_s = student(x)
    fm_t, out_t = teacher(x)
    got = LwM()(out_s, fm_s.to(torch.float64, copy=True), out_t, fm_t.to(torch.float64, copy=True), y).item()

    cam_s, cam_t = cams_by_hand(student, x, y.tolist()), cams_by_hand(teacher, x, y.tolist())
    total = 0.0
    for s, t in zip(cam_s, cam_t, strict=True):
        pooled = _pool2(s, 8)
        norm = math.sqrt(sum(v * v for v in pooled)) or 1.0
        total += sum(abs(a / norm - b) for a, b in zip(pooled, t, strict=True))
    assert got > 0 and math.isclose(got, total / (3 * 16), rel_tol=1e-6)


def test_grad_cam_of_a_float_copy_is_that_of_the_map():
    net = _Tiny(0, stride=1)
    x, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 2])
    fmap, logits = net(x)
    direct = grad_cam(logits, fmap, y, create_graph=True)
    via_copy = grad_cam(logits, fmap.float(), y, create_graph=True)
    assert torch.allclose(direct.float(), via_copy) and direct.abs().sum() > 0


def test_middle_stage_taps():
    three = [torch.zeros(1)] * 5  # stem, 3 stages, pooled
    four = [torch.zeros(1)] * 6
    assert middle_stage(three) == 2 and middle_stage(four) == 3
    method = build_method("lwm", *nets("vgg8", "resnet20"), size=32)
    assert (method.tap_s, method.tap_t) == (3, 2)


def _objective(student, teacher, precision: str):
    spec = get_method("lwm")
    method = build_method("lwm", student, teacher, size=32)
    frozen = FrozenTeacher(fold_batchnorms(copy.deepcopy(teacher).eval().requires_grad_(False), False), False)
    autocast = nullcontext if precision == "fp32" else (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    return DistillObjective(student, frozen, method, spec, Weights(0, 0, 1), 4.0, autocast), method


@pytest.mark.parametrize(("precision", "arch_s"), [("fp32", "resnet8"), ("bf16", "resnet8"), ("fp32", "vgg8")])
def test_one_step_through_the_objective(precision, arch_s):
    """channels_last, real nets, the folded frozen teacher: gradient reaches the student only; in fp32
    the term equals LwM on the plain teacher's own maps."""
    student, teacher = nets(arch_s, "resnet20")
    teacher.eval().requires_grad_(False)
    objective, method = _objective(student, teacher, precision)
    objective.train_mode()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    _, terms, total = objective([x, y])
    total.backward()
    # the CAM depends on the layers after the tap, and on those before it through train-mode BatchNorm
    first = student.conv1 if arch_s == "resnet8" else student.block0[0]
    last = [m for m in student.modules() if isinstance(m, nn.Linear)][-1]
    for grad in (first.weight.grad, last.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    if precision == "fp32":
        x2 = x.clone().requires_grad_(True)
        feat_s, out_s = student(x2, is_feat=True)
        feat_t, out_t = teacher(x2, is_feat=True)
        expected = LwM()(out_s, feat_s[method.tap_s], out_t, feat_t[method.tap_t], y)
        assert torch.allclose(terms["kd"], expected, rtol=1e-4, atol=1e-6)
    else:
        assert math.isfinite(terms["kd"].item()) and terms["kd"].item() > 0


def test_spec_defaults_and_refusals():
    spec = get_method("lwm")
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=0.4)
    assert spec.teacher_graph and spec.uses_features and not spec.preact
    pooled = [torch.randn(2, 8, 4, 4), torch.randn(2, 8)]
    with pytest.raises(ValueError, match="LwM"):
        spec.build(synthetic_ctx(pooled, pooled))
    assert not spec.compilable  # double backward: --compile auto runs it eagerly, on refuses
    with pytest.raises(ValueError, match="lwm.*double backward.*--compile off"):
        compile_decision("on", torch.device("cpu"), 10**6, "lwm", spec.compilable)
    assert not compile_decision("auto", torch.device("cpu"), 10**6, "lwm", spec.compilable).compile


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "lwm", "-a", "0.5")
