"""AFD: the SE attention and the weighted loss by hand, one attention per stage, gradient routing,
defaults, the equal-width requirement, one run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.AFD import AFD
from distiller_zoo.registry import get_method


def afd_by_hand(afd: AFD, s: np.ndarray, t: np.ndarray, eps: float = 1e-6) -> float:
    w1, b1 = afd.attention[0].weight.detach().double().numpy()[:, :, 0, 0], afd.attention[0].bias.detach().numpy()
    w2, b2 = afd.attention[2].weight.detach().double().numpy()[:, :, 0, 0], afd.attention[2].bias.detach().numpy()
    batch, channels = t.shape[:2]
    total = 0.0
    for n in range(batch):
        gap = np.array([t[n, c].mean() for c in range(channels)])
        hidden = np.maximum(w1 @ gap + b1, 0)
        gate = [1 / (1 + math.exp(-v)) for v in w2 @ hidden + b2]
        for c in range(channels):
            rho = gate[c] / sum(gate)
            s_unit = s[n, c] / (math.sqrt((s[n, c] ** 2).sum()) + eps)
            t_unit = t[n, c] / (math.sqrt((t[n, c] ** 2).sum()) + eps)
            total += rho * ((s_unit - t_unit) ** 2).mean()
    return total / batch


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    afd = AFD(3, 2.0)
    assert afd.attention[0].out_channels == 6
    with torch.no_grad():
        for conv in (afd.attention[0], afd.attention[2]):
            conv.bias.normal_()  # KD-Zoo starts them at 0; random here to test they are used
    s, t = torch.randn(2, 3, 3, 3), torch.relu(torch.randn(2, 3, 3, 3))
    assert math.isclose(afd(s, t).item(), afd_by_hand(afd, s.double().numpy(), t.double().numpy()), rel_tol=1e-5)


def test_fresh_attention_biases_zero_and_larger_map_pooled():
    afd = AFD(4, 1.0)
    assert all(afd.attention[i].bias.abs().sum() == 0 for i in (0, 2))
    s, t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)
    assert torch.allclose(afd(s, t), afd(torch.nn.functional.avg_pool2d(s, 2), t))


@pytest.mark.parametrize(("student", "teacher", "size"), [
    ("resnet8", "resnet20", 16),
    ("vgg8", "vgg13", 32),  # 4 stages
    ("wrn_16_2", "wrn_40_2", 16),
])
def test_gradients_reach_student_and_attention_not_teacher(student, teacher, size):
    check_one_step("afd", student, teacher, size=size)


def test_one_attention_per_stage():
    method = build_method("afd", *nets("resnet8x4", "resnet32x4"), att_f=0.5)
    assert [a.attention[0].in_channels for a in method.criterion] == [64, 128, 256]
    assert [a.attention[0].out_channels for a in method.criterion] == [32, 64, 128]


@pytest.mark.parametrize(("pair", "opt", "match"), [
    (("wrn_40_1", "wrn_40_2"), {}, "same stage widths"),
    (("resnet8", "resnet20"), {"att_f": 0.01}, "--att_f"),
])
def test_unsupported_pair_or_option_is_a_one_line_error(pair, opt, match):
    with pytest.raises(ValueError, match=match) as err:
        build_method("afd", *nets(*pair), **opt)
    assert "\n" not in str(err.value)


def test_spec_defaults():
    spec = get_method("afd")
    assert spec.name == "afd" and spec.aliases == () and not spec.preact
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 500.0)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "afd")
