"""VID: the loss by hand (incl. pool-to-match), module sizes as RepDistiller, gradients, defaults, a run."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.registry import MethodContext, get_method
from distiller_zoo.VID import VIDLoss


def vid_by_hand(vid: VIDLoss, f_s: np.ndarray, f_t: np.ndarray) -> float:
    """Explicit loops: 1x1 convs as per-pixel matrix products, 2x2 average pooling of the student."""
    w1, w2, w3 = (vid.regressor[i].weight.detach().double().numpy()[:, :, 0, 0] for i in (0, 2, 4))
    var = [math.log1p(math.exp(r)) + vid.eps for r in vid.log_scale.detach().double().tolist()]
    b, _, h, w = f_t.shape
    total, count = 0.0, 0
    for n in range(b):
        for y in range(h):
            for x in range(w):
                pixel = f_s[n, :, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean(axis=(1, 2))
                mu = w3 @ np.maximum(w2 @ np.maximum(w1 @ pixel, 0), 0)
                for c in range(len(var)):
                    total += 0.5 * ((mu[c] - f_t[n, c, y, x]) ** 2 / var[c] + math.log(var[c]))
                    count += 1
    return total / count


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    vid = VIDLoss(3, 4, 2)
    with torch.no_grad():
        vid.log_scale.copy_(torch.tensor([0.3, -1.2]))
    f_s, f_t = torch.randn(2, 3, 4, 4), torch.randn(2, 2, 2, 2)
    got = vid(f_s, f_t).item()
    assert math.isclose(got, vid_by_hand(vid, f_s.double().numpy(), f_t.double().numpy()), rel_tol=1e-5)


def test_initial_variance_and_larger_teacher_map():
    vid = VIDLoss(2, 2, 3)
    var = torch.nn.functional.softplus(vid.log_scale) + vid.eps
    assert torch.allclose(var, torch.full((3,), 5.0))
    assert vid.regressor[0].bias is None and len(vid.regressor) == 5
    # the teacher map is pooled when it is the larger one
    f_s, f_t = torch.randn(2, 2, 2, 2), torch.randn(2, 3, 4, 4)
    pooled_t = torch.nn.functional.avg_pool2d(f_t, 2)
    assert torch.allclose(vid(f_s, f_t), vid(f_s, pooled_t))


def test_modules_match_repdistiller_sizes():
    method = build_method("vid", *nets("resnet8x4", "resnet32x4"))
    assert len(method.criterion) == 3
    assert sum(p.numel() for p in method.parameters()) == 258_496  # methods.md §2.7, measured on RD


def test_stage_lists_of_different_length_are_zipped():
    method = build_method("vid", *nets("vgg8", "resnet8"), size=32)
    assert [m.log_scale.numel() for m in method.criterion] == [16, 32, 64]


def test_missing_stage_maps_are_rejected():
    pooled = [torch.randn(2, 8, 4, 4), torch.randn(2, 8)]
    ctx = MethodContext(None, None, pooled, pooled, torch.randn(2, 10), torch.randn(2, 10),
                        argparse.Namespace(), 100, 10)
    with pytest.raises(ValueError, match="VID"):
        get_method("vid").build(ctx)


def test_gradients_reach_student_and_regressors_not_teacher():
    check_one_step("vid")


def test_spec_defaults():
    spec = get_method("vid")
    assert spec.name == "vid" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)
    assert not spec.preact


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "vid")
