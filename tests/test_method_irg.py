"""IRG: both forms (KD-Zoo's, SemCKD's) against loop-by-loop computations, taps on any pair,
gradient routing, flags and errors, one run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_checks import build_method, check_e2e, check_one_step, nets

from distiller_zoo.IRG import IRG, IRGLoss, IRGMethod, SemCKDIRGMethod, transformation
from distiller_zoo.registry import get_method


def relation_by_hand(x: np.ndarray) -> list[list[float]]:
    rows = x.reshape(len(x), -1)
    n = len(rows)
    d = [[0.0 if i == j else float(((rows[i] - rows[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    top = max(max(row) for row in d)
    return [[v / top for v in row] for row in d]


def mse(a, b) -> float:
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    return float(((a - b) ** 2).mean())


def transformation_by_hand(fm1: np.ndarray, fm2: np.ndarray) -> list[float]:
    """KD-Zoo's case: fm1 has twice fm2's size and half its channels. 2x2 block means of fm1,
    fm2's channels 2c and 2c+1 averaged."""
    b, c1, h, w = fm2.shape[0], fm1.shape[1], fm2.shape[2], fm2.shape[3]
    dists = []
    for n in range(b):
        total = 0.0
        for c in range(c1):
            for y in range(h):
                for x in range(w):
                    pooled = fm1[n, c, 2 * y : 2 * y + 2, 2 * x : 2 * x + 2].mean()
                    paired = (fm2[n, 2 * c, y, x] + fm2[n, 2 * c + 1, y, x]) / 2
                    total += (pooled - paired) ** 2
        dists.append(total)
    return [d / max(dists) for d in dists]


def zoo_by_hand(s: list[np.ndarray], t: list[np.ndarray], w=(0.1, 5.0, 5.0)) -> float:
    vert = mse(s[3], t[3])
    edge = sum(mse(relation_by_hand(s[i]), relation_by_hand(t[i])) for i in (2, 0, 1)) / 3
    tran = mse(transformation_by_hand(s[0], s[1]), transformation_by_hand(t[0], t[1]))
    return w[0] * vert + w[1] * edge + w[2] * tran


def taps(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 2, 4, 4), (4, 4, 2, 2), (4, 6), (4, 5)]
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes]


def test_zoo_loss_matches_hand_computation():
    s, t = taps(0), taps(1)
    t = [x * 3 for x in t]
    expected = zoo_by_hand([x.numpy() for x in s], [x.numpy() for x in t])
    assert math.isclose(IRG(0.1, 5.0, 5.0)(s, t).item(), expected, rel_tol=1e-9)
    expected = zoo_by_hand([x.numpy() for x in s], [x.numpy() for x in t], (1.0, 0.0, 2.0))
    assert math.isclose(IRG(1.0, 0.0, 2.0)(s, t).item(), expected, rel_tol=1e-9)


def test_transformation_averages_the_wider_map_down():
    """Beyond KD-Zoo's 2x case: 5 channels -> 2 by adaptive windows [0, 3) and [2, 5); either side may be wider."""
    g = torch.Generator().manual_seed(3)
    fm1, fm2 = torch.randn(3, 2, 1, 1, generator=g), torch.randn(3, 5, 1, 1, generator=g)
    windows = [fm2[:, 0:3].mean(1), fm2[:, 2:5].mean(1)]
    d = sum((fm1[:, c] - windows[c]) ** 2 for c in range(2)).flatten()
    assert torch.allclose(transformation(fm1, fm2), d / d.max(), atol=1e-6)
    assert torch.allclose(transformation(fm2, fm1), d / d.max(), atol=1e-6)


def semckd_by_hand(f_s, f_t, tr_s, tr_t, edge=True) -> float:
    loss = mse(relation_by_hand(f_s), relation_by_hand(f_t))
    if f_s.shape == f_t.shape:
        loss += mse(f_s, f_t)
    for k in range(0, len(tr_s) - 1, 2):
        l1_s, l2_s, l1_t, l2_t = tr_s[k], tr_s[k + 1], tr_t[k], tr_t[k + 1]
        if edge:
            change_s = mse(relation_by_hand(l1_s), relation_by_hand(l2_s))
            change_t = mse(relation_by_hand(l1_t), relation_by_hand(l2_t))
            loss += (change_s - change_t) ** 2
        if l1_s.shape == l2_s.shape and l1_t.shape == l2_t.shape:
            loss += (mse(l1_s, l2_s) - mse(l1_t, l2_t)) ** 2
    return loss


@pytest.mark.parametrize("edge", [True, False])
@pytest.mark.parametrize("width_t", [6, 8])
def test_semckd_loss_matches_hand_computation(edge, width_t):
    g = torch.Generator().manual_seed(width_t)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    f_s, f_t = r(4, 6), r(4, width_t)
    # pair 1 has equal shapes (raw-map term on), pair 2 does not
    tr_s = [r(4, 2, 2, 2), r(4, 2, 2, 2), r(4, 3, 2, 2), r(4, 5, 1, 1)]
    tr_t = [r(4, 2, 2, 2), r(4, 2, 2, 2), r(4, 3, 2, 2), r(4, 7, 1, 1)]
    got = IRGLoss()(f_s, f_t, tr_s, tr_t, no_edge_transform=not edge).item()
    expected = semckd_by_hand(*(x.numpy() for x in (f_s, f_t)), [x.numpy() for x in tr_s],
                              [x.numpy() for x in tr_t], edge)
    assert math.isclose(got, expected, rel_tol=1e-9)


def test_lone_sample_is_finite():
    s = [x[:1] for x in taps(0)]
    assert math.isfinite(IRG(0.1, 5, 5)(s, [x[:1] for x in taps(1)]).item())


@pytest.mark.parametrize(("student", "teacher", "size"), [
    ("resnet8", "resnet20", 16),
    ("vgg8", "vgg13", 32),  # 4 stages: rb2, rb3 = stages 3 and 4 (512 and 512 channels)
    ("MobileNetV2", "wrn_40_2", 32),  # student's last stages 48 and 160 channels: not KD-Zoo's 2x
    ("wrn_16_2", "wrn_40_2", 16),
    ("ShuffleV1", "resnet32x4", 16),
])
def test_gradients_reach_student_not_teacher(student, teacher, size):
    check_one_step("irg", student, teacher, size=size)


def test_semckd_variant_gradients():
    check_one_step("irg", "vgg8", "resnet20", size=32, irg_variant="semckd",
                   transform_layer_s=[1, 2, 2, 3], transform_layer_t=[1, 2, 2, 3])


def test_variants_build_their_own_loss():
    pair = nets()
    zoo = build_method("irg", *pair)
    assert isinstance(zoo, IRGMethod)
    assert (zoo.criterion.w_irg_vert, zoo.criterion.w_irg_edge, zoo.criterion.w_irg_tran) == (0.1, 5.0, 5.0)
    sem = build_method("irg", *pair, irg_variant="semckd", transform_layer_s=[1, -2], transform_layer_t=[1, 3],
                       no_edge_transform=True)
    assert isinstance(sem, SemCKDIRGMethod) and (sem.layers_s, sem.layers_t) == ([1, -2], [1, 3])
    assert not sem.edge_transform and (sem.criterion.w_graph, sem.criterion.w_transform) == (1, 1)


@pytest.mark.parametrize(("opt", "match"), [
    ({"transform_layer_s": [1, 2], "transform_layer_t": [1, 2]}, "semckd"),
    ({"irg_variant": "semckd", "transform_layer_s": [1, 2], "transform_layer_t": [1]}, "even"),
    ({"irg_variant": "semckd", "transform_layer_s": [1], "transform_layer_t": [1]}, "even"),
    ({"irg_variant": "semckd", "transform_layer_s": [1, 5], "transform_layer_t": [1, 2]}, "--transform_layer_s"),
])
def test_bad_options_are_one_line_errors(opt, match):
    with pytest.raises(ValueError, match=match) as err:
        build_method("irg", *nets(), **opt)
    assert "\n" not in str(err.value)


def test_spec_defaults():
    spec = get_method("irg")
    assert spec.name == "irg" and spec.aliases == () and not spec.preact
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "irg")
