"""mymethod: what is specific to it. What every method must do (one step on two model families, gradients,
checkpoints, run folders, compiling, torchrun) runs for it in tests/test_conformance.py."""

from __future__ import annotations

import pytest
import torch
from method_checks import batch_of, build_method, check_e2e, nets

from distiller_zoo.registry import get_method


def test_loss_matches_hand_computation():
    # TODO: when the maths changes, compute the new loss here another way (a loop, the paper's equation)
    logit_s, logit_t = torch.randn(4, 10), torch.randn(4, 10)
    batch = batch_of([torch.zeros(4, 1)], [torch.zeros(4, 1)])
    batch.logit_s, batch.logit_t = logit_s, logit_t
    T = 2.0
    expected = 0.0
    for s, t in zip(logit_s, logit_t, strict=True):
        p_s, p_t = (s / T).softmax(0), (t / T).softmax(0)
        expected += (p_t * (p_t.log() - p_s.log())).sum() / 4 * T**2
    method = build_method("mymethod", *nets(), mymethod_T=T)
    assert method(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_spec_defaults():
    spec = get_method("mymethod")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)


def test_bad_temperature_is_a_value_error():
    with pytest.raises(ValueError, match="--mymethod_T must be positive"):
        build_method("mymethod", *nets(), mymethod_T=0.0)


def test_end_to_end(run_student, tmp_path):
    check_e2e(run_student, tmp_path, "mymethod")
