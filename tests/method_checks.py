"""Checks every registered method's tests share: build it as the trainer does, run one step."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, add_method_args, get_method

# RepDistiller's defaults for the options methods read at build time.
DEFAULT_OPT = {"hint_layer": 2, "feat_dim": 128, "kd_T": 4.0, "nce_k": 16, "nce_t": 0.07, "nce_m": 0.5,
               "mode": "exact", "learning_rate": 0.05, "init_epochs": 30}


def method_flag_defaults() -> dict:
    """The defaults of every method's own flags (``MethodSpec.add_args``), as the CLI would set them."""
    parser = argparse.ArgumentParser()
    add_method_args(parser)
    return vars(parser.parse_args([]))


def make_opt(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{**DEFAULT_OPT, **method_flag_defaults(), **overrides})


def build_method(name: str, student: nn.Module, teacher: nn.Module, size: int = 16, n_data: int = 64,
                 num_classes: int = 10, **opt) -> DistillMethod:
    """As the trainer: one dummy forward of both nets in eval mode, then ``spec.build``."""
    spec, options = get_method(name), make_opt(**opt)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        dummy = torch.randn(2, 3, size, size)
        feat_s, logit_s = student(dummy, is_feat=True, preact=spec.preact_student(options))
        feat_t, logit_t = teacher(dummy, is_feat=True, preact=spec.preact)
    ctx = MethodContext(student, teacher, feat_s, feat_t, logit_s, logit_t, options, n_data, num_classes)
    return spec.build(ctx)


def synthetic_ctx(feat_s: list[torch.Tensor], feat_t: list[torch.Tensor], **opt) -> MethodContext:
    """A build context from given feature tensors alone (no networks), for shape-only checks."""
    logits = torch.zeros(feat_s[0].shape[0], 10)
    return MethodContext(nn.Identity(), nn.Identity(), feat_s, feat_t, logits, logits, make_opt(**opt), 64, 10)


def batch_of(feat_s: list[torch.Tensor], feat_t: list[torch.Tensor]) -> DistillBatch:
    logits = torch.zeros(feat_s[0].shape[0], 10)
    return DistillBatch(feat_s, feat_t, logits, logits, torch.zeros(feat_s[0].shape[0], dtype=torch.long))


def nets(student: str = "resnet8", teacher: str = "resnet20", num_classes: int = 10) -> tuple[nn.Module, nn.Module]:
    """A student/teacher pair in channels_last, the trainer's default memory format."""
    from models import build_model

    torch.manual_seed(0)
    pair = build_model(student, num_classes), build_model(teacher, num_classes)
    return tuple(m.to(memory_format=torch.channels_last) for m in pair)


def check_one_step(name: str, student_arch: str = "resnet8", teacher_arch: str = "resnet20", size: int = 16,
                   batch: int = 4, **opt) -> float:
    """One training step on the method loss alone.

    The teacher's forward runs *with* autograd on, so only the method itself can keep gradient out
    of it. Asserts: finite loss; gradient reaches the student's trunk and every trainable module
    of the method; the teacher gets no gradient and is unchanged after the step.
    """
    student, teacher = nets(student_arch, teacher_arch)
    method = build_method(name, student, teacher, size=size, **opt)
    teacher_state = copy.deepcopy(teacher.state_dict())
    spec = get_method(name)
    student.train()
    method.train()
    params = [*student.parameters(), *method.main_parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    feat_s, logit_s = student(x, is_feat=True, preact=spec.preact_student(make_opt(**opt)))
    feat_t, logit_t = teacher(x, is_feat=True, preact=spec.preact)
    loss = method(DistillBatch(feat_s, feat_t, logit_s, logit_t, torch.randint(0, 10, (batch,))))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    optimizer.zero_grad()
    loss.backward()
    trunk = next(student.parameters()).grad  # the stem's first weight, whatever the model calls it
    assert trunk is not None and torch.isfinite(trunk).all() and trunk.abs().sum() > 0
    for p in method.main_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    return loss.item()


def check_e2e(run_student, tmp_path: Path, name: str, *args: str) -> list[dict]:
    """``train_student.py --distill name`` for one tiny epoch: exit 0, finite losses, a best checkpoint."""
    proc = run_student("--distill", name, *args)
    assert not re.search(r"\b(nan|inf)\b", proc.stdout.lower()), proc.stdout[-2000:]
    logs = list((tmp_path / "save").rglob("metrics.jsonl"))
    assert len(logs) == 1, f"expected one metrics.jsonl under {tmp_path / 'save'}"
    rows = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    assert rows
    for row in rows:
        for key in ("loss", "loss_cls", "loss_div", "loss_kd"):
            assert math.isfinite(row[key]), (key, row)
    assert (logs[0].parent / "resnet8_best.pth").is_file()
    return rows
