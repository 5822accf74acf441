"""OFD: BatchNorm margins and both partial-L2 forms by hand, connectors and margins as built from the
teacher, pairs of any stage count, gradient routing, defaults, errors, one run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.OFD import OFD, bn_margin
from distiller_zoo.registry import get_method


def margin_by_hand(gamma: float, beta: float) -> float:
    std = abs(gamma)
    below = 0.5 * (1 + math.erf(-beta / std / math.sqrt(2)))
    if below > 0.001:
        return beta - std * math.exp(-((beta / std) ** 2) / 2) / math.sqrt(2 * math.pi) / below
    return -3 * std


def test_bn_margin_matches_hand_computation():
    bn = torch.nn.BatchNorm2d(5)
    gammas, betas = [1.0, -0.5, 2.0, 0.3, 1.5], [0.0, 0.2, -1.0, 2.0, 0.7]  # 0.3/2.0: P(x<0) < 0.001
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gammas))
        bn.bias.copy_(torch.tensor(betas))
    expected = [margin_by_hand(g, b) for g, b in zip(gammas, betas, strict=True)]
    assert np.allclose(bn_margin(bn).numpy(), expected, rtol=1e-6)
    assert math.isclose(expected[3], -0.9)
    assert all(m < 0 for m in expected)
    with torch.no_grad():
        bn.weight.zero_()  # a constant channel: margin finite (its value, or 0 when positive)
    assert torch.allclose(bn_margin(bn), torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0]), atol=1e-6)


def connector_by_hand(ofd: OFD, fm_s: np.ndarray) -> np.ndarray:
    """1x1 conv as a per-pixel matrix product, BN in eval mode with its fresh statistics (x / sqrt(1 + eps))."""
    w = ofd.connector[0].weight.detach().double().numpy()[:, :, 0, 0]
    out = np.einsum("oc,bchw->bohw", w, fm_s)
    return out / math.sqrt(1 + ofd.connector[1].eps)


def pool2(fm: np.ndarray) -> np.ndarray:
    b, c, h, w = fm.shape
    return np.array([[[[fm[n, k, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean() for x in range(w // 2)]
                       for y in range(h // 2)] for k in range(c)] for n in range(b)])


def partial_l2_by_hand(s: np.ndarray, t: np.ndarray, margin: list[float]) -> float:
    """The paper's three cases, element by element; summed, divided by the batch size."""
    total = 0.0
    for idx in np.ndindex(*s.shape):
        sv, tv, m = s[idx], t[idx], margin[idx[1]]
        if sv > m and tv <= m:
            total += (sv - m) ** 2
        elif sv > tv and m < tv <= 0:
            total += (sv - tv) ** 2
        elif tv > 0:
            total += (sv - tv) ** 2
    return total / s.shape[0]


def batch_margin_by_hand(s: np.ndarray, t: np.ndarray) -> float:
    """KD-Zoo's per-batch margin per channel, target max(t, m), skip s <= target <= 0, mean."""
    margins = []
    for c in range(t.shape[1]):
        negative = [v for v in t[:, c].ravel() if v < 0]
        margins.append(sum(negative) / (len(negative) + 1e-6))
    total = 0.0
    for idx in np.ndindex(*s.shape):
        target = max(t[idx], margins[idx[1]])
        if not (s[idx] <= target <= 0):
            total += (s[idx] - target) ** 2
    return total / s.size


def maps(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, 4, 4, 4, generator=g)


def test_bn_form_matches_hand_computation():
    margin = torch.tensor([-0.5, -1.2, -0.1, -0.8])
    ofd = OFD(2, 4, margin).eval()
    fm_s, fm_t = maps(0)
    s = connector_by_hand(ofd, fm_s.double().numpy())
    expected = partial_l2_by_hand(s, pool2(fm_t.double().numpy()), margin.tolist())
    assert math.isclose(ofd(fm_s, fm_t).item(), expected, rel_tol=1e-5)


def test_batch_form_matches_hand_computation():
    ofd = OFD(2, 4).eval()
    assert ofd.margin is None
    fm_s, fm_t = maps(1)
    s = connector_by_hand(ofd, fm_s.double().numpy())
    expected = batch_margin_by_hand(s, pool2(fm_t.double().numpy()))
    assert math.isclose(ofd(fm_s, fm_t).item(), expected, rel_tol=1e-5)


def randomise_bns(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.2)
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def test_margins_and_connectors_as_built_from_the_teacher():
    student, teacher = nets("vgg8", "resnet20")  # 4 student stages, 3 teacher stages: the last 3 pair up
    randomise_bns(teacher)
    method = build_method("ofd", student, teacher, size=32)
    bns = teacher.get_bn_before_relu()
    assert len(method.criterion) == 3
    for ofd, bn, (c_s, c_t) in zip(method.criterion, bns, [(256, 16), (512, 32), (512, 64)], strict=True):
        assert (ofd.connector[0].in_channels, ofd.connector[0].out_channels) == (c_s, c_t)
        expected = [margin_by_hand(g, b) for g, b in zip(bn.weight.tolist(), bn.bias.tolist(), strict=True)]
        assert np.allclose(ofd.margin.flatten().numpy(), expected, rtol=1e-5)
    assert method.position_weights == [0.25, 0.5, 1.0]
    assert "criterion.0.margin" in method.state_dict()
    batch = build_method("ofd", student, teacher, size=32, ofd_margin="batch")
    assert batch.position_weights == [1 / 3] * 3 and all(o.margin is None for o in batch.criterion)


@pytest.mark.parametrize(("student", "teacher", "size", "margin"), [
    ("resnet8", "resnet20", 16, "bn"),
    ("MobileNetV2", "vgg13", 32, "bn"),  # 4 stages each
    ("wrn_16_2", "wrn_40_2", 16, "bn"),
    ("resnet8", "ShuffleV1", 16, "batch"),
])
def test_gradients_reach_student_and_connectors_not_teacher(student, teacher, size, margin):
    check_one_step("ofd", student, teacher, size=size, ofd_margin=margin)


def test_teacher_without_bn_margins_is_a_one_line_error():
    with pytest.raises(ValueError, match="--ofd_margin batch") as err:
        build_method("ofd", *nets("resnet8", "ShuffleV2"))
    assert "\n" not in str(err.value)


def test_spec_defaults():
    spec = get_method("ofd")
    assert spec.name == "ofd" and spec.aliases == () and spec.preact
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 0.001)


def test_end_to_end(run_student, tmp_path):
    """The teacher's BatchNorms are folded for the run: the margins must come from the model before that."""
    check_e2e(run_student, tmp_path, "ofd")
