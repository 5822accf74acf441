"""Checks shared by the AB, FT and FSP tests: one step of a method's init stage between two tiny nets,
and an end-to-end run with its init stage."""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from method_checks import build_method, nets
from torch import nn

from distiller_zoo.registry import DistillBatch, DistillMethod, InitStage, get_method


@dataclass
class InitStep:
    student: nn.Module
    teacher: nn.Module
    teacher_before: dict[str, torch.Tensor]
    method: DistillMethod
    stage: InitStage
    batch: DistillBatch
    loss: torch.Tensor


def init_step(name: str, student_arch: str, teacher_arch: str, size: int = 16, batch_size: int = 4,
              **opt) -> InitStep:
    """Backpropagate the init-stage loss once, with the modes RepDistiller's init uses (student eval,
    the stage's modules and, with ``student_trunk``, the student's feature modules in train). The
    teacher runs WITH autograd here, so a loss that forgot to cut its graph would leave gradients on it."""
    student, teacher = nets(student_arch, teacher_arch)
    method = build_method(name, student, teacher, size=size, **opt)
    stage = method.init_stage(student)
    assert stage is not None
    preact = get_method(name).preact
    before = copy.deepcopy(teacher.state_dict())
    student.eval()
    for module in stage.modules:
        module.train()
    if stage.student_trunk:
        student.get_feat_modules().train()
    x = torch.randn(batch_size, 3, size, size).to(memory_format=torch.channels_last)
    feat_s, logit_s = student(x, is_feat=True, preact=preact)
    feat_t, logit_t = teacher(x, is_feat=True, preact=preact)
    batch = DistillBatch(feat_s, feat_t, logit_s, logit_t, torch.randint(0, 10, (batch_size,)))
    loss = stage.loss(batch)
    loss.backward()
    return InitStep(student, teacher, before, method, stage, batch, loss)


def assert_init_gradients(step: InitStep) -> None:
    """The stage's modules (and the student's trunk when it trains) got gradient; the teacher none."""
    assert torch.isfinite(step.loss)
    assert all(p.grad is None for p in step.teacher.parameters())
    after = step.teacher.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in step.teacher_before.items())
    for module in step.stage.modules:
        for p in module.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    trunk = [p.grad for p in step.student.get_feat_modules().parameters()]
    if step.stage.student_trunk:
        stem = next(step.student.parameters()).grad  # the stem's first weight, whatever the model calls it
        assert stem is not None and stem.abs().sum() > 0
    else:
        assert all(g is None for g in trunk)


def assert_zero_main_term(method: DistillMethod, batch: DistillBatch) -> None:
    """RepDistiller's main stage adds nothing for this method and trains none of its modules."""
    term = method(batch)
    assert term.shape == () and term.item() == 0.0
    assert list(method.main_parameters()) == []


def check_two_stage_e2e(run_student, tmp_path: Path, name: str, init_lr: float) -> list[dict]:
    """``train_student.py --distill name --init_epochs 1``: exit 0, one init epoch at ``init_lr`` then
    one main epoch, finite losses in both, a best checkpoint. Returns the main-stage rows."""
    proc = run_student("--distill", name, "--init_epochs", "1")
    assert not re.search(r"\b(nan|inf)\b", proc.stdout.lower()), proc.stdout[-2000:]
    [log] = (tmp_path / "save").rglob("metrics.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    init = [row for row in rows if row["stage"] == "init"]
    main = [row for row in rows if row["stage"] == "main"]
    assert len(init) == 1 and len(main) == 1, rows
    assert init[0]["lr"] == pytest.approx(init_lr)
    assert math.isfinite(init[0]["loss_init"]) and init[0]["loss_init"] > 0
    for key in ("loss", "loss_cls", "loss_div", "loss_kd"):
        assert math.isfinite(main[0][key]), (key, main[0])
    assert (log.parent / "resnet8_best.pth").is_file()
    return main
