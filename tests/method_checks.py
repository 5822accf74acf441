"""Checks every registered method's tests share: build it as the trainer does, run one step."""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distiller_zoo.registry import (
    DistillBatch,
    DistillMethod,
    MethodContext,
    MethodSpec,
    Weights,
    add_method_args,
    get_method,
)

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


@dataclass
class Step:
    """One training step through the trainer's objective, before its backward."""

    terms: dict[str, torch.Tensor]
    total: torch.Tensor

    def own_terms(self) -> torch.Tensor:
        """The method's own terms: every one but the objective's cross-entropy and KD."""
        return sum((v for k, v in self.terms.items() if k not in ("cls", "div")), torch.zeros(()))


# Every term weighted 1, at the middle of a 100-epoch run (past any warm-up, before any decay ends).
ALL_TERMS = Weights(1.0, 1.0, 1.0)
MID_RUN = (50, 100)


@dataclass
class Setup:
    """A method built between two fresh networks as the trainer builds it, and the trainer's objective.

    The teacher runs with autograd ON and its parameters trainable until the caller freezes it, so a
    method that let gradient into it would show it."""

    spec: MethodSpec
    opt: argparse.Namespace
    student: nn.Module
    teacher: nn.Module
    method: DistillMethod
    objective: object
    size: int

    def batch(self, batch: int, seed: int = 0, part: slice = slice(None)) -> list[torch.Tensor]:
        """A seeded batch as the loader gives it (with indices and contrast indices when the method asks),
        or ``part`` of it (one rank's share)."""
        g = torch.Generator().manual_seed(seed)
        fields = [torch.randn(batch, 3, self.size, self.size, generator=g), torch.arange(batch) % 10]
        if self.spec.wants_contrast(self.opt):
            negatives = torch.randint(0, 64, (batch, self.opt.nce_k), generator=g)
            fields += [torch.arange(batch), torch.cat([torch.arange(batch)[:, None], negatives], 1)]
        fields = [f[part] for f in fields]
        fields[0] = fields[0].contiguous(memory_format=torch.channels_last)
        return fields

    def step(self, batch: int = 8, seed: int = 0, part: slice = slice(None)) -> Step:
        """The objective (every term weighted 1, mid-run) on a seeded batch of ``batch`` samples or ``part``."""
        result = self.objective(self.batch(batch, seed, part))
        assert result is not None, f"{self.spec.name} skipped a full batch"
        return Step(result[1], result[2])


def setup_method(name: str, student_arch: str = "resnet8", teacher_arch: str = "resnet20", size: int = 16,
                 train: bool = True, wrap=None, method_seed: int | None = None, **opt) -> Setup:
    """Build ``name`` for ``--batch_size`` 8 (or ``batch_size``); ``wrap`` wraps the student as the trainer does
    under torchrun, ``method_seed`` seeds the method's own initialisation apart from the networks'."""
    from helper.objectives import DistillObjective
    from helper.peer import TrainedPeer

    spec = get_method(name)
    student, teacher = nets(student_arch, teacher_arch)
    opt = {"batch_size": 8, "nce_k": 16, "epochs": MID_RUN[1], "model_s": student_arch, "model_t": teacher_arch,
           "gamma": 1.0, "alpha": 1.0, "beta": 1.0, **opt}
    if method_seed is not None:
        torch.manual_seed(method_seed)
    method = build_method(name, student, teacher, size=size, **opt)
    trained = wrap(student) if wrap is not None else student
    objective = DistillObjective(trained, TrainedPeer(teacher), method, spec, ALL_TERMS, 4.0, nullcontext)
    objective.set_epoch(*MID_RUN)
    for module in (student, method):
        module.train(train)
    teacher.train(train and spec.trains_peer)
    return Setup(spec, make_opt(**opt), student, teacher, method, objective, size)


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
