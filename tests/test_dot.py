"""--optimizer dot: mdistiller's distillation-oriented trainer. Its update against the two momenta written
out by hand, the task/distillation split of the objective's terms, the checkpointed buffers, bit-identical
resume, DDP (both passes averaged), and the flags' one-line errors."""

from __future__ import annotations

import signal
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli
from method_checks import build_method, nets
from test_distributed import CPU_RUN, image_folder, torchrun, weights_of
from test_resume import STUDENT, _assert_identical, _final_weights, _metric_epochs, _popen, _reference, _wait_for
from torch import nn

import train_student
from distiller_zoo.registry import Weights, get_method
from helper.distributed import DistInfo
from helper.dot import DistillationOrientedTrainer, dot_momenta, task_and_distill_step
from helper.errors import UserError
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher

LR, MOMENTUM, DELTA, WD = 0.1, 0.9, 0.075, 5e-4


class ThreeParams(nn.Module):
    """``shared`` feeds both losses, ``task_only`` the task loss, ``kd_only`` the distillation loss."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.shared, self.task_only, self.kd_only = (nn.Parameter(torch.randn(3)) for _ in range(3))

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        task = ((self.shared * x).sum() + (self.task_only * x).sum()) ** 2
        distill = (self.shared * self.kd_only * x).sum().sin() + (self.shared**2).sum()
        return task, distill


class TermsObjective:
    """The engine's view of an objective: the student, and the weighted terms split in two."""

    def __init__(self, model: nn.Module):
        self.student = model

    def task_and_distill(self, terms):
        return terms["task"], terms["distill"]


def test_update_matches_two_momenta_by_hand():
    """Four steps through the engine's DOT step against buffers kept by hand from per-loss gradients
    (autograd.grad, one loss at a time): task m - delta, distillation m + delta, the mean momentum and the
    weight decay for a parameter one loss alone reaches, buffers starting at the first gradient."""
    model, hand = ThreeParams(), ThreeParams()
    m_task, m_kd = dot_momenta(MOMENTUM, DELTA)
    assert (m_task, m_kd) == pytest.approx((0.825, 0.975))
    optimizer = DistillationOrientedTrainer(model.parameters(), lr=LR, momentum=m_task, momentum_kd=m_kd,
                                            weight_decay=WD)
    step = task_and_distill_step(TermsObjective(model), optimizer, DistInfo(), None)
    buffers: dict[str, torch.Tensor] = {}
    for i in range(4):
        x = torch.linspace(-1.0, 1.0, 3) * (i + 1) / 2
        task, distill = model.losses(x)
        step({"task": task, "distill": distill}, task + distill)

        task, distill = hand.losses(x)
        g_task = dict(zip(("shared", "task_only"), torch.autograd.grad(task, [hand.shared, hand.task_only]),
                          strict=True))
        g_kd = dict(zip(("shared", "kd_only"), torch.autograd.grad(distill, [hand.shared, hand.kd_only]),
                        strict=True))
        with torch.no_grad():
            p = hand.shared
            d = g_task["shared"] + WD * p
            buffers["s_task"] = d.clone() if i == 0 else 0.825 * buffers["s_task"] + d
            buffers["s_kd"] = g_kd["shared"].clone() if i == 0 else 0.975 * buffers["s_kd"] + g_kd["shared"]
            p -= LR * buffers["s_task"]
            p -= LR * buffers["s_kd"]
            p = hand.task_only
            d = g_task["task_only"] + WD * p
            buffers["t"] = d.clone() if i == 0 else 0.9 * buffers["t"] + d
            p -= LR * buffers["t"]
            p = hand.kd_only  # the reference's first distillation-only buffer is the bare gradient
            buffers["k"] = g_kd["kd_only"].clone() if i == 0 else 0.9 * buffers["k"] + g_kd["kd_only"] + WD * p
            p -= LR * buffers["k"]
        for name in ("shared", "task_only", "kd_only"):
            torch.testing.assert_close(getattr(model, name), getattr(hand, name), rtol=1e-6, atol=1e-7, msg=name)
    state = optimizer.state
    torch.testing.assert_close(state[model.shared]["momentum_kd_buffer"], buffers["s_kd"])
    assert "momentum_kd_buffer" not in state[model.task_only] and "momentum_buffer" not in state[model.kd_only]


def test_zero_delta_on_shared_parameters_is_sgd():
    """Delta 0 with every parameter reached by both losses: the two buffers sum to SGD's buffer of the sum."""
    torch.manual_seed(1)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    dot = DistillationOrientedTrainer(a.parameters(), lr=LR, momentum=0.9, momentum_kd=0.9, weight_decay=WD)
    sgd = torch.optim.SGD(b.parameters(), lr=LR, momentum=0.9, weight_decay=WD)
    step = task_and_distill_step(TermsObjective(a), dot, DistInfo(), None)
    for _ in range(5):
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        out = a(x)
        step({"task": nn.functional.cross_entropy(out, y), "distill": out.pow(2).mean()}, out.sum())
        out = b(x)
        sgd.zero_grad()
        (nn.functional.cross_entropy(out, y) + out.pow(2).mean()).backward()
        sgd.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically_and_refuses_sgd_state():
    def run(model, optimizer, steps):
        step = task_and_distill_step(TermsObjective(model), optimizer, DistInfo(), None)
        for i in range(steps):
            task, distill = model.losses(torch.full((3,), 0.3 * (i + 1)))
            step({"task": task, "distill": distill}, task + distill)

    def dot(model):
        return DistillationOrientedTrainer(model.parameters(), lr=LR, momentum=0.825, momentum_kd=0.975,
                                           weight_decay=WD)

    straight, resumed = ThreeParams(), ThreeParams()
    opt_straight, opt_resumed = dot(straight), dot(resumed)
    run(straight, opt_straight, 3)
    run(resumed, opt_resumed, 3)
    saved_model, saved_opt = resumed.state_dict(), opt_resumed.state_dict()
    fresh = ThreeParams()
    fresh.load_state_dict(saved_model)
    opt_fresh = dot(fresh)
    opt_fresh.load_state_dict(saved_opt)
    run(straight, opt_straight, 2)
    run(fresh, opt_fresh, 2)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    sgd_state = torch.optim.SGD(fresh.parameters(), lr=LR, momentum=0.9).state_dict()
    with pytest.raises(UserError, match="not DOT's"):
        opt_fresh.load_state_dict(sgd_state)


def _objective(method_name: str, weights, **opt):
    student, teacher = nets()
    spec = get_method(method_name)
    method = build_method(method_name, student, teacher, **opt)
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    return DistillObjective(student, frozen, method, spec, weights, 4.0, nullcontext)


def test_objective_splits_task_and_distillation_terms():
    """'cls' (and a trained peer's '<name>_cls') is the task; every other term, weighted, is distillation."""
    objective = _objective("kd", Weights(0.1, 0.9, 2.0))
    objective.weights["peer_cls"] = 0.5
    objective.weights["peer_div"] = 3.0
    terms = {name: torch.tensor(value) for name, value in
             (("cls", 1.0), ("div", 2.0), ("kd", 3.0), ("peer_cls", 4.0), ("peer_div", 5.0))}
    task, distill = objective.task_and_distill(terms)
    assert task.item() == pytest.approx(0.1 * 1 + 0.5 * 4)
    assert distill.item() == pytest.approx(0.9 * 2 + 2.0 * 3 + 3.0 * 5)
    with pytest.raises(UserError, match="--optimizer dot needs a task"):
        objective.task_and_distill({"cls": torch.tensor(1.0)})


def test_a_real_step_gets_both_gradients_and_leaves_the_teacher_alone():
    """KD through the real objective: the student's classifier gets both gradients (both buffers), the
    teacher none."""
    objective = _objective("kd", Weights(0.1, 0.9, 0.0))
    student = objective.student
    optimizer = DistillationOrientedTrainer(student.parameters(), lr=LR, momentum=0.825, momentum_kd=0.975)
    step = task_and_distill_step(objective, optimizer, DistInfo(), None)
    objective.train_mode()
    _, terms, total = objective([torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])])
    step(terms, total)
    weight = student.fc.weight if hasattr(student, "fc") else list(student.parameters())[-2]
    assert {"momentum_buffer", "momentum_kd_buffer"} <= set(optimizer.state[weight])
    assert all(p.grad is None for p in objective.teacher.parameters())


def _parse(*extra: str):
    return train_student.parse_option([*TINY_DATA, "--path_t", "t.pth", "--model_t", "resnet20", *extra])


def test_flags_defaults_and_one_line_errors(capsys):
    opt, _ = _parse()
    assert opt.optimizer == "sgd" and opt.dot_delta is None
    opt, _ = _parse("--optimizer", "dot")
    assert opt.dot_delta == 0.075
    opt, _ = _parse("--optimizer", "dot", "--dataset", "imagenet", "--data_folder", "x")
    assert opt.dot_delta == 0.09  # mdistiller's ImageNet configs
    for args, message in ((["--dot_delta", "0.1"], "--dot_delta sets --optimizer dot"),
                          (["--optimizer", "dot", "--dot_delta", "0.95"], "--dot_delta must be in [0, --momentum"),
                          (["--optimizer", "dot", "--nesterov"], "no Nesterov form")):
        with pytest.raises(SystemExit):
            _parse(*args)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    rt = SimpleNamespace(precision="fp16")
    opt, _ = _parse("--optimizer", "dot")
    with pytest.raises(UserError, match="fp16"):
        train_student.main_optimizer(opt, list(nn.Linear(2, 2).parameters()), rt)
    rt.precision = "bf16"
    built = train_student.main_optimizer(opt, list(nn.Linear(2, 2).parameters()), rt)
    group = built.param_groups[0]
    assert isinstance(built, DistillationOrientedTrainer)
    assert (group["momentum"], group["momentum_kd"]) == pytest.approx((0.825, 0.975))


def test_end_to_end_with_a_distillation_only_module(run_student, tmp_path):
    """CTKD's temperature is reached by the distillation loss alone: DOT's mean-momentum branch in a run."""
    proc = run_student("--distill", "ctkd", "--optimizer", "dot", "--epochs", "2")
    assert "best accuracy" in proc.stdout
    (last,) = (tmp_path / "save").rglob("ckpt_last.pth")
    state = torch.load(last, weights_only=False)
    assert state["optimizer"]["param_groups"][0]["momentum_kd"] == pytest.approx(0.975)
    assert any("momentum_kd_buffer" in s for s in state["optimizer"]["state"].values())


def test_sigterm_mid_run_then_resume_is_bit_identical(tmp_path, teacher_ckpt):
    args = ["--epochs", "3", "--distill", "kd", "--optimizer", "dot"]
    expected = _reference(tmp_path, teacher_ckpt, args)
    work = tmp_path / "stopped"
    work.mkdir()
    proc = _popen([*STUDENT, "--path_t", str(teacher_ckpt), *args], work)
    _wait_for(work / "save/student_model", proc)
    _wait_for(next((work / "save/student_model").iterdir()) / "ckpt_last.pth", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=240) == 75, proc.communicate()
    run_cli("train_student.py", [*STUDENT, "--path_t", str(teacher_ckpt), *args, "--resume", "auto"], work)
    _assert_identical(_final_weights(work), expected)
    assert _metric_epochs(work) == [("main", e) for e in range(1, 4)]


def test_two_processes_average_both_passes(tmp_path):
    """2 processes x batch 4 against 1 process x batch 8 with DOT (see test_distributed's DDP test for the
    identical-image set-up and the tolerances). DDP reduces once per forward, in the distillation pass; the
    task pass is averaged by the step (without it the ranks' task gradients differ and so do the weights)."""
    data = image_folder(tmp_path / "data", {"train": 8, "val": 4})
    from conftest import write_teacher

    teacher = write_teacher(tmp_path / "teacher", "resnet20", num_classes=2)
    common = ["--dataset", "imagenet", "--image_size", "32", "--data_folder", str(data), *CPU_RUN,
              "--path_t", str(teacher), "--model_s", "resnet8", "--distill", "kd", "--optimizer", "dot",
              "--epochs", "2", "--no-channels_last"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_cli("train_student.py", [*common, "--batch_size", "8"], one)
    torchrun(str(ROOT / "train_student.py"), [*common, "--batch_size", "4"], two)
    expected, got = weights_of(one, "resnet8"), weights_of(two, "resnet8")
    for key, value in expected.items():
        tol = 1e-2 if key.endswith("running_var") else 1e-5
        torch.testing.assert_close(got[key], value, rtol=tol, atol=tol, msg=key)
