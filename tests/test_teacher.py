"""The frozen teacher: folded BatchNorms give the same outputs, outputs are usable by the losses."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_DATA, run_cli
from torch import nn

from helper.teacher import FrozenTeacher, fold_batchnorms
from models import build_model


def trained_looking(arch: str, seed: int = 0) -> nn.Module:
    """A model whose BatchNorms are far from the identity, as a trained teacher's are."""
    torch.manual_seed(seed)
    model = build_model(arch, 10).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.3, 3)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch,left", [("resnet8x4", 0), ("wrn_16_2", 7), ("ShuffleV2", 0)])
@pytest.mark.parametrize("preact", [False, True])
def test_folding_keeps_every_feature_and_the_logits(arch, left, preact):
    model = trained_looking(arch)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True, preact=preact)
        folded = fold_batchnorms(model, preact)
        feats_f, logits_f = folded(x, True, preact)
    # WRN's blocks are pre-activation: a BatchNorm that comes before its convolution stays.
    assert batchnorms(folded) == left
    with torch.no_grad():  # the model itself is left as it was
        assert torch.equal(model(x), logits) and batchnorms(model) > left
    for a, b in zip([*feats, logits], [*feats_f, logits_f], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_untraceable_model_is_kept_as_it_is():
    model = trained_looking("vgg8")  # its forward branches on the input's size
    assert fold_batchnorms(model, False) is model


def test_frozen_teacher_outputs_are_float32_tensors_a_loss_can_save():
    teacher = FrozenTeacher(fold_batchnorms(trained_looking("resnet8"), False), preact=False)
    x = torch.randn(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, logits = teacher(x, is_feat=True)
    assert logits.dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats)
    assert not logits.is_inference() and not any(f.is_inference() for f in feats)
    student_logits = torch.randn(4, 10, requires_grad=True)
    (student_logits * logits).sum().backward()  # mul saves the teacher's logits for backward
    assert torch.equal(student_logits.grad, logits)
    assert torch.equal(teacher(x), teacher(x, is_feat=True)[1])  # validation asks for the logits alone
    with pytest.raises(ValueError, match="preact"):
        teacher(x, is_feat=True, preact=True)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())


def test_student_run_is_the_same_with_and_without_folding(tmp_path):
    path = tmp_path / "save/models/resnet20_vanilla/ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": trained_looking("resnet20").state_dict()}, path)
    rows, teacher_lines = [], []
    for trial, flag in (("fold", "--fold_teacher_bn"), ("plain", "--no-fold_teacher_bn")):
        proc = run_cli("train_student.py", [*TINY_DATA, "--path_t", str(path), "--model_s", "resnet8", "--epochs",
                                            "1", "--distill", "kd", "--seed", "3", "--trial", trial, flag], tmp_path)
        teacher_lines.append(next(line for line in proc.stdout.splitlines() if line.startswith("teacher accuracy")))
        run = tmp_path / f"save/student_model/S:resnet8_T:resnet20_synthetic_kd_r:0.1_a:0.9_b:0.0_{trial}"
        rows.append(json.loads((run / "metrics.jsonl").read_text().splitlines()[0]))
    assert teacher_lines[0] == teacher_lines[1]
    assert rows[0]["loss_div"] == pytest.approx(rows[1]["loss_div"], rel=1e-4)
