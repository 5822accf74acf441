"""mymethod: what is specific to it. What every method must do (one step on two model families, gradients,
checkpoints, run folders, compiling, torchrun) runs for it in tests/test_conformance.py."""

from __future__ import annotations

import pytest
import torch
from method_checks import setup_method

from distiller_zoo.registry import get_method


def test_the_view_term_is_both_networks_on_the_flipped_batch():
    # TODO: when the maths changes, compute the new terms here another way (a loop, the paper's equation)
    setup = setup_method("mymethod", train=False, mymethod_T=2.0)
    x = setup.batch(8)[0]
    terms = setup.step().terms
    with torch.no_grad():
        s, t = setup.student(x.flip(3)), setup.teacher(x.flip(3))
    p_s, p_t = (s / 2).softmax(1), (t / 2).softmax(1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * 4
    assert terms["view"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert setup.objective.weights["view"] == 1.0  # --mymethod_view_weight's default


def test_spec_defaults():
    spec = get_method("mymethod")
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (1.0, 0.0, 1.0)


def test_end_to_end(run_student, tmp_path):
    from method_checks import check_e2e

    rows = check_e2e(run_student, tmp_path, "mymethod")
    assert rows[-1]["loss_view"] > 0  # the extra term is logged beside the others
