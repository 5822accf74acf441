"""--compile auto|on|off: the flag and its older spellings, the auto decision, and the fallback to the eager
network when compiling fails (unit tests with dynamo's cheap backends; inductor runs in the end-to-end tests)."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli, write_teacher
from torch import nn

import train_student
from distiller_zoo.registry import get_method, method_names
from helper import compile as compiling
from helper.errors import EXIT_USAGE, UserError

STUDENT = ["--path_t", "t.pth", "--model_s", "resnet8"]
CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
PAYS = compiling.PAYS_FROM_STEPS["cpu"]


# --- the flag -------------------------------------------------------------------------------------


def test_flag_values_and_the_bare_flag():
    assert train_student.parse_option(STUDENT)[0].compile == "auto"
    assert train_student.parse_option([*STUDENT, "--compile"])[0].compile == "on"  # as before it took a value
    assert train_student.parse_option([*STUDENT, "--compile", "off"])[0].compile == "off"
    assert train_student.parse_option([*STUDENT, "--compile", "ON"])[0].compile == "on"
    opt = train_student.parse_option(["--compile", "--compile_mode", "max-autotune-no-cudagraphs", *STUDENT])[0]
    assert (opt.compile, opt.compile_mode, opt.model_s) == ("on", "max-autotune-no-cudagraphs", "resnet8")


def test_a_bad_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        train_student.parse_option([*STUDENT, "--compile", "sometimes"])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--compile takes auto, on or off, not 'sometimes'" in err


@pytest.mark.parametrize("stored, expected", [(False, "off"), (True, "on"), ("auto", "auto"), ("off", "off")])
def test_config_files_old_and_new(tmp_path, stored, expected):
    # run folders written before --compile took a value store true/false in config.json
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"command": "python train_student.py", "options": {"compile": stored}}))
    assert train_student.parse_option([*STUDENT, "--config", str(cfg)])[0].compile == expected


def test_setting_spellings():
    assert [compiling.compile_setting(v) for v in (True, False, "yes", "0", " Auto ")] == ["on", "off", "on", "off",
                                                                                         "auto"]
    with pytest.raises(ValueError, match="auto, on or off"):
        compiling.compile_setting("fast")


# --- the auto decision ----------------------------------------------------------------------------


def test_auto_compiles_runs_long_enough_to_pay(monkeypatch):
    monkeypatch.setattr(compiling, "cpu_compiler", lambda: "/usr/bin/g++")
    assert not compiling.decide("auto", CPU, PAYS - 1).compile
    assert compiling.decide("auto", CPU, PAYS).compile
    assert compiling.decide("auto", CPU, 240 * 782).compile  # RepDistiller's CIFAR-100 schedule
    assert not compiling.decide("auto", CPU, 4).compile  # the tests' one-epoch runs
    assert compiling.decide("auto", CUDA, 240 * 782).compile  # deciding needs no GPU
    assert not compiling.decide("auto", torch.device("mps"), 10**6).compile
    short = compiling.decide("auto", CPU, 474)
    assert short.reason == f"off (auto: 474 steps planned; compiling pays from about {PAYS:,} on cpu; " \
                           "--compile on forces it)"


def test_on_and_off_are_obeyed_whatever_the_length(monkeypatch):
    monkeypatch.setattr(compiling, "cpu_compiler", lambda: None)
    assert compiling.decide("on", CPU, 1).compile and not compiling.decide("off", CPU, 10**9).compile


def test_auto_stays_eager_without_a_cpu_compiler(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    decision = compiling.decide("auto", CPU, 10**6)
    assert not decision.compile and "no C++ compiler" in decision.reason
    assert compiling.decide("auto", CUDA, 10**6).compile  # a GPU compiles with Triton, not a C++ compiler


def test_methods_that_need_double_backward_run_eagerly():
    blocked = sorted(name for name in method_names() if not get_method(name).compilable)
    assert blocked == ["lwm", "sobolev"]
    assert not compiling.decide("auto", CPU, 10**6, "sobolev", compilable=False).compile
    with pytest.raises(ValueError, match="sobolev back-propagates through gradients"):
        compiling.decide("on", CPU, 10**6, "sobolev", compilable=False)
    assert not compiling.decide("off", CPU, 10**6, "sobolev", compilable=False).compile


def test_plan_compile_sets_the_runtime_and_prints_one_line(monkeypatch, capsys):
    monkeypatch.setattr(compiling, "cpu_compiler", lambda: "/usr/bin/g++")
    rt = SimpleNamespace(device=CPU, compile=False, info=SimpleNamespace(is_main=True))
    compiling.plan_compile(SimpleNamespace(compile="auto"), rt, 10**6, get_method("kd"))
    assert rt.compile and capsys.readouterr().out.startswith("compile: on (auto: 1,000,000 steps planned;")
    compiling.plan_compile(SimpleNamespace(compile="off"), rt, 10**6, get_method("kd"))
    assert not rt.compile and capsys.readouterr().out == ""
    with pytest.raises(UserError, match="lwm"):
        compiling.plan_compile(SimpleNamespace(compile="on"), rt, 10**6, get_method("lwm"))


def test_planned_steps_count_the_init_stage():
    opt = SimpleNamespace(epochs=240, init_epochs=30)
    with_init = SimpleNamespace(init_stage=lambda student: object())
    without = SimpleNamespace(init_stage=lambda student: None)
    assert train_student.planned_steps(opt, with_init, None, range(782)) == 270 * 782
    assert train_student.planned_steps(opt, without, None, range(782)) == 240 * 782


# --- compiling a module, and falling back when it fails ---------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)).relu().mean((2, 3))


def broken_backend(gm, example_inputs):
    raise RuntimeError("no kernels today\nsecond line")


def test_a_module_that_fails_to_compile_runs_eagerly_from_the_same_state(capsys):
    torch.manual_seed(0)
    net, twin = Net(), Net()
    twin.load_state_dict(net.state_dict())
    compiling.compile_module(net, "the student", backend=broken_backend)
    x = torch.randn(4, 3, 8, 8)
    out = net(x)
    expected = twin(x)
    assert torch.equal(out, expected)
    for name, value in twin.state_dict().items():  # BatchNorm's statistics moved once, as in the eager twin
        assert torch.equal(net.state_dict()[name], value), name
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "compile: the student failed to compile" in err and "no kernels today" in err
    assert "second line" not in err and err.strip().endswith("running it eagerly")
    assert net._compiled_call_impl is None  # eager for good: the next call does not try again
    out.sum().backward()
    assert net.conv.weight.grad is not None
    net(x)
    assert capsys.readouterr().err == ""


def test_an_error_of_the_network_itself_propagates(capsys):
    net = Net()
    compiling.compile_module(net, "the student", backend=broken_backend)
    with pytest.raises(RuntimeError, match="channels"):
        net(torch.randn(4, 5, 8, 8))  # wrong channel count: the eager call fails as well
    assert "running it eagerly" not in capsys.readouterr().err


def test_a_compiled_module_keeps_its_keys_and_outputs():
    torch.manual_seed(0)
    net, twin = Net().eval(), Net().eval()
    twin.load_state_dict(net.state_dict())
    compiling.compile_module(net, "the student", backend="eager")
    assert list(net.state_dict()) == list(twin.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(net(x), twin(x))
    assert isinstance(net._compiled_call_impl, compiling.EagerFallback)


def test_the_mode_reaches_torch_compile(monkeypatch):
    asked = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: asked.append(kwargs) or fn)
    compiling.compile_module(Net(), "the student", "max-autotune-no-cudagraphs")
    compiling.compile_module(Net(), "the student")
    assert [kwargs.get("mode") for kwargs in asked] == ["max-autotune-no-cudagraphs", None]


# --- end to end: inductor unusable, the run trains eagerly ------------------------------------------

BROKEN_INDUCTOR = """
import torch._inductor.compile_fx as compile_fx

def _broken(*args, **kwargs):
    raise RuntimeError("simulated compiler failure")

compile_fx.compile_fx = _broken
"""


def test_a_run_whose_compiler_fails_at_the_first_call_trains_eagerly(tmp_path, teacher_ckpt):
    # The teacher fails at its first call (the teacher accuracy), the student at its first training step.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BROKEN_INDUCTOR)
    args = [*TINY_DATA, "--path_t", str(teacher_ckpt), "--model_s", "resnet8", "--epochs", "1", "--compile",
            "--syn_train_size", "64", "--syn_val_size", "32"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train_student.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("compile:")] == [
        f"compile: the {name} failed to compile (RuntimeError: simulated compiler failure); running it eagerly"
        for name in ("teacher", "student")]
    assert "teacher accuracy:" in proc.stdout and "best accuracy:" in proc.stdout


# --- end to end, compiled by inductor: an init stage and resume, several passes per step, DDP ----------

needs_compiler = pytest.mark.skipif(compiling.cpu_compiler() is None,
                                    reason="torch.compile on CPU needs a C++ compiler")


@pytest.fixture
def run_compiled(tmp_path):
    """train_student.py --compile on the tiny synthetic set, resnet8 -> resnet8 (the smallest graphs to compile)."""
    teacher = write_teacher(tmp_path, "resnet8")

    def run(*args: str) -> subprocess.CompletedProcess:
        base = [*TINY_DATA, "--path_t", str(teacher), "--model_s", "resnet8", "--epochs", "1", "--compile",
                "--syn_train_size", "64", "--syn_val_size", "32"]
        return run_cli("train_student.py", [*base, *args], tmp_path)

    return run


def finite_rows(tmp_path) -> list[dict]:
    (log,) = (tmp_path / "save").rglob("metrics.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(math.isfinite(value) for row in rows for key, value in row.items() if key.startswith("loss")), rows
    return rows


@needs_compiler
def test_an_init_stage_method_trains_compiled_and_resumes(run_compiled, tmp_path):
    # FSP: its init stage (student in eval mode, its trunk in train mode) then distillation; a second
    # process resumes the finished run for one more epoch, its graphs read from inductor's cache.
    first = run_compiled("--distill", "fsp", "--init_epochs", "1")
    assert "compile: on" in first.stdout and "compile time:" in first.stdout
    resumed = run_compiled("--distill", "fsp", "--init_epochs", "1", "--epochs", "2", "--resume")
    assert "resumed from" in resumed.stdout and "running it eagerly" not in first.stderr + resumed.stderr
    assert [(row["stage"], row["epoch"]) for row in finite_rows(tmp_path)] == [("init", 1), ("main", 1), ("main", 2)]


@needs_compiler
def test_ddp_with_two_student_passes_per_step_compiled_in_bf16(tmp_path):
    # MLLD runs the student twice per step (the weak view through DDP, the strong one through the network
    # itself), both in training mode before one backward, in bf16 autocast. The two ranks see different
    # images: unless DDP averages the compiled student's gradients, their students part ways.
    from test_distributed import RANK1_WEIGHTS, torchrun, weights_of

    teacher = write_teacher(tmp_path, "resnet8")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    rank1 = tmp_path / "rank1.pth"
    (hooks / "sitecustomize.py").write_text(RANK1_WEIGHTS.format(path=str(rank1)))
    args = [*TINY_DATA, "--path_t", str(teacher), "--model_s", "resnet8", "--epochs", "1", "--seed", "5",
            "--compile", "--syn_train_size", "128", "--syn_val_size", "32", "--distill", "mlld", "--precision", "bf16"]
    proc = torchrun(str(ROOT / "train_student.py"), args, tmp_path, (str(hooks),))
    assert "compile: on" in proc.stdout and "running it eagerly" not in proc.stderr
    rank0, other = weights_of(tmp_path, "resnet8"), torch.load(rank1, weights_only=True)
    assert other.keys() <= rank0.keys() and other
    for key, value in other.items():
        torch.testing.assert_close(value, rank0[key], rtol=1e-6, atol=1e-6, msg=key)
    assert finite_rows(tmp_path)[0]["loss_kd"] > 0


# --- every kind of method, traced compiled (dynamo and AOTAutograd, without inductor's C++: seconds) ------

KINDS = {
    "abound": ["--init_epochs", "1"],  # init stage: connectors and the student's trunk
    "factor": ["--init_epochs", "1"],  # init stage: the teacher's paraphraser
    "bss": ["--bss_warmup", "0"],  # the teacher differentiated w.r.t. its input, then both nets on attacked samples
    "mlkd": [],  # four rotated views: a 4x batch
    "semckd": ["--syn_train_size", "80"],  # the last batch (16 < 32) is skipped
    "dml": ["--model_t", "resnet20"],  # two trained networks, both compiled
}


@pytest.mark.parametrize("method", list(KINDS))
def test_every_kind_of_method_trains_compiled(method, tmp_path, teacher_ckpt, monkeypatch, capsys):
    import signal

    import torch._dynamo

    from helper import setup

    monkeypatch.setattr(setup, "compile_module", functools.partial(compiling.compile_module, backend="aot_eager"))
    monkeypatch.chdir(tmp_path)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    torch._dynamo.reset()
    try:
        train_student.main([*TINY_DATA, "--path_t", str(teacher_ckpt), "--model_s", "resnet8", "--epochs", "1",
                            "--distill", method, "--compile", "--syn_train_size", "64", "--syn_val_size", "32",
                            *KINDS[method]])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    out = capsys.readouterr()
    assert "compile: on" in out.out and "running it eagerly" not in out.err, out.err[-2000:]
    rows = finite_rows(tmp_path)
    assert rows[-1]["stage"] == "main" and math.isfinite(rows[-1]["test_acc"])
    if method == "semckd":
        assert rows[-1]["skipped_steps"] == 1


def test_no_cuda_toolkit_warning_on_a_machine_without_a_gpu(monkeypatch):
    import logging

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    monkeypatch.setattr(cpp_logger, "level", logging.NOTSET)
    compiling.configure_compiler()
    assert not cpp_logger.isEnabledFor(logging.WARNING)  # inductor's CPU build no longer prints it
