"""FitNet (--distill hint / fitnet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, check_one_step, nets, synthetic_ctx
from torch import nn

from distiller_zoo.FitNet import FitNetMethod, HintLoss
from distiller_zoo.registry import Weights, get_method


def maps(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """Feature list with the given map shapes followed by a pooled vector, as ``is_feat`` returns."""
    return [torch.rand(*s) for s in shapes] + [torch.rand(shapes[0][0], 8)]


def test_hint_loss_is_elementwise_mse():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    expected = sum((x - y) ** 2 for x, y in zip(a.ravel(), b.ravel(), strict=True)) / a.size
    got = HintLoss()(torch.tensor(a), torch.tensor(b))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_method_regresses_the_hint_layer_only():
    feat_s = maps((2, 3, 8, 8), (2, 4, 8, 8), (2, 5, 4, 4))
    feat_t = maps((2, 6, 8, 8), (2, 7, 8, 8), (2, 9, 2, 2))
    method = get_method("fitnet").build(synthetic_ctx(feat_s, feat_t, hint_layer=1))
    assert isinstance(method, FitNetMethod) and method.hint_layer == 1
    conv = method.regress_s.conv
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.out_channels == 7
    method.eval()
    with torch.no_grad():
        # eval BN with fresh statistics is the identity, so the regressor is relu(conv(x)).
        mapped = torch.relu(method.regress_s.conv(feat_s[1])).numpy()
        loss = method(batch_of(feat_s, feat_t)).item()
    assert loss == pytest.approx(((mapped - feat_t[1].numpy()) ** 2).mean(), rel=1e-5)


def test_regressor_follows_the_map_sizes():
    # student map twice the teacher's: 3x3 stride-2 conv; half: 4x4 stride-2 transposed conv
    down = get_method("hint").build(synthetic_ctx(maps((2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)),
                                                  maps((2, 5, 4, 4), (2, 5, 4, 4), (2, 5, 4, 4))))
    up = get_method("hint").build(synthetic_ctx(maps((2, 3, 4, 4), (2, 3, 4, 4), (2, 3, 4, 4)),
                                                maps((2, 5, 8, 8), (2, 5, 8, 8), (2, 5, 8, 8))))
    assert down.regress_s.conv.stride == (2, 2) and isinstance(up.regress_s.conv, nn.ConvTranspose2d)


@pytest.mark.parametrize("hint_layer", [-1, 3, 4, 7])
def test_hint_layer_out_of_range_is_a_value_error(hint_layer):
    feat = maps((2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))  # maps 0..2, then the pooled vector
    with pytest.raises(ValueError, match=f"--hint_layer {hint_layer} is out of range"):
        get_method("hint").build(synthetic_ctx(feat, feat, hint_layer=hint_layer))


def test_hint_layer_checked_against_the_shorter_network():
    student, teacher = nets("resnet8", "vgg8")  # 4 maps vs 5 maps
    build_method("hint", student, teacher, size=32, hint_layer=3)
    with pytest.raises(ValueError, match="out of range"):
        build_method("hint", student, teacher, size=32, hint_layer=4)


def test_unregressable_sizes_are_a_value_error():
    feat_s = maps((2, 3, 2, 2), (2, 3, 2, 2), (2, 3, 2, 2))
    feat_t = maps((2, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))
    with pytest.raises(ValueError):
        get_method("hint").build(synthetic_ctx(feat_s, feat_t))


def test_gradients_reach_student_and_regressor_not_teacher():
    check_one_step("hint", student_arch="resnet8", teacher_arch="resnet8x4")


def test_regressor_is_trained_in_the_main_stage():
    student, teacher = nets()
    method = build_method("hint", student, teacher)
    assert {id(p) for p in method.main_parameters()} == {id(p) for p in method.regress_s.parameters()}
    assert method.init_stage(student) is None


def test_spec_defaults():
    spec = get_method("hint")
    assert get_method("fitnet") is spec
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=100.0)
    assert not spec.preact and not spec.needs_contrast


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "fitnet", "--hint_layer", "2")
