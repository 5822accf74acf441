"""Knowledge-Distillation-Zoo's teacher files load (issue 26): train_base.py saves ``{'net': ...}`` from a
DataParallel network (``module.`` keys) whose ResNets name their stages ``res1``-``res3`` and shortcuts ``ds``.
A file written that way gives our resnet the same logits as the network it was saved from."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY_DATA, run_cli

from helper.checkpoint import load_strict, safe_load, state_dict_of
from models import build_model


def kdzoo_state(model: torch.nn.Module) -> dict:
    """``model``'s state dict under KD-Zoo's names, as DataParallel saves it."""
    return {"module." + re.sub(r"^layer(\d)\.", r"res\1.", k).replace(".downsample.", ".ds."): v
            for k, v in model.state_dict().items()}


def trained_looking(name: str, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics and affine values that are not the defaults
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


def write_kdzoo_file(path, model: torch.nn.Module) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 200, "net": kdzoo_state(model), "prec@1": 70.0, "prec@5": 90.0}, path)


@pytest.mark.parametrize("name", ["resnet20", "resnet110"])
def test_kdzoo_file_loads_strictly_with_the_same_logits(tmp_path, name):
    source = trained_looking(name)
    state = kdzoo_state(source)
    assert any(k.startswith("module.res2.0.ds.") for k in state)  # the layout really is KD-Zoo's
    path = tmp_path / "model_best.pth.tar"
    write_kdzoo_file(path, source)
    ours = build_model(name, 10).eval()
    load_strict(ours, state_dict_of(safe_load(path), path), path, name)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), source(x), rtol=1e-5, atol=1e-5)


def test_other_state_dicts_pass_unchanged():
    state = build_model("resnet20", 10).state_dict()
    assert list(state_dict_of({"model": state}, "x")) == list(state)
    wrn = build_model("wrn_16_1", 10).state_dict()
    assert list(state_dict_of({"net": wrn}, "x")) == list(wrn)


def test_train_student_takes_a_kdzoo_teacher(tmp_path):
    path = tmp_path / "results" / "base-c10-r20" / "model_best.pth.tar"
    write_kdzoo_file(path, trained_looking("resnet20"))
    out = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(path), "--model_t", "resnet20",
                                       "--model_s", "resnet8", "--epochs", "1"], tmp_path).stdout
    assert "best accuracy:" in out
