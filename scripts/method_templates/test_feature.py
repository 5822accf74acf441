"""mymethod: what is specific to it. What every method must do (one step on two model families, gradients,
checkpoints, run folders, compiling, torchrun) runs for it in tests/test_conformance.py."""

from __future__ import annotations

import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, nets, synthetic_ctx

from distiller_zoo.registry import get_method


def test_loss_matches_hand_computation():
    # TODO: when the maths changes, compute the new loss here another way (a loop, the paper's equation)
    method = build_method("mymethod", *nets("resnet8", "resnet8x4"))  # 64 -> 256 channels at F[-2]
    method.eval()
    f_s, f_t = torch.randn(2, 64, 4, 4), torch.randn(2, 256, 2, 2)
    feats = lambda last: [torch.zeros(2, 1, 1, 1), last, torch.zeros(2, 8)]  # noqa: E731 - F[-2] is `last`
    projected = torch.nn.functional.avg_pool2d(method.connector(f_s), 2)  # 4x4 meets 2x2
    expected = ((projected - f_t) ** 2).mean()
    assert method(batch_of(feats(f_s), feats(f_t))).item() == pytest.approx(expected.item(), rel=1e-5)


def test_connector_follows_the_map_widths_and_trains():
    method = build_method("mymethod", *nets("resnet8", "resnet8x4"))
    conv = method.connector[0]
    assert (conv.in_channels, conv.out_channels) == (64, 256)
    assert {id(p) for p in method.main_parameters()} == {id(p) for p in method.connector.parameters()}


def test_a_layer_that_is_no_map_is_a_value_error():
    with pytest.raises(ValueError, match="--mymethod_layer"):
        get_method("mymethod").build(synthetic_ctx([torch.zeros(2, 4, 2, 2), torch.zeros(2, 4)],
                                                   [torch.zeros(2, 4, 2, 2), torch.zeros(2, 4)], mymethod_layer=1))


def test_spec_defaults():
    spec = get_method("mymethod")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0) and spec.preact


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "mymethod")
