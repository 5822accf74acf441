"""What every registered method must do, checked for each name ``method_names()`` returns: a method that
registers is covered here without being named (as timm tests every registered model).

One training step through the trainer's objective (every term weighted 1) on two families, a 3-stage CIFAR
ResNet and a 4-stage MobileNetV2 pair; the method's state through a checkpoint; its run folder name; a
compiled step where its spec allows compiling; under torchrun, gradient averaging equal to one process on the
doubled batch where its spec says the loss is batch-local; kill and resume on one method of each shape.
Hand computations of each method's loss stay in its own ``test_method_<name>.py``.

This file is also the torchrun worker of the distributed check: ``torchrun ... tests/test_conformance.py ddp OUT``.
"""

from __future__ import annotations

import copy
import io
import math
import sys
from pathlib import Path

import pytest
import torch
from init_stage_checks import assert_init_gradients, init_step
from method_checks import Setup, Step, setup_method

from distiller_zoo.registry import get_method, method_names

METHODS = method_names()
# (student, teacher, image size): the cheapest pairs of each family that every method supports
FAMILIES = {
    "resnet-3-stage": ("resnet8", "resnet20", 16),
    "mobilenetv2-4-stage": ("MobileNetV2", "MobileNetV2", 16),
}
HOME = "resnet-3-stage"
DDP_BATCH = 8


def _finite(step: Step) -> None:
    assert math.isfinite(step.total.item()), step.terms
    for name, value in step.terms.items():
        assert value.dim() == 0 and math.isfinite(value.item()), (name, value)


def _teacher_params_not_the_methods(setup: Setup) -> list[torch.nn.Parameter]:
    """The teacher's parameters, less those the method holds itself (SimKD's and SRRL's reused classifier,
    which the trainer freezes with the teacher)."""
    held = {id(p) for p in setup.method.parameters()}
    return [p for p in setup.teacher.parameters() if id(p) not in held]


def _built(name: str, family: str) -> Setup:
    """The method on the family's pair. Every method builds on RepDistiller's 3-stage ResNets; on the other
    family a method may refuse the pair in build, with the one-line ValueError the command line prints
    (SimKD on a teacher with a head after its last map): the test then says so and skips."""
    student_arch, teacher_arch, size = FAMILIES[family]
    try:
        return setup_method(name, student_arch, teacher_arch, size)
    except ValueError as exc:
        if family == HOME:
            raise
        pytest.skip(f"{name} refuses {student_arch} <- {teacher_arch}: {exc}")


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name", METHODS)
def test_one_step_trains_the_student_and_the_method_never_the_teacher(name, family):
    student_arch, teacher_arch, size = FAMILIES[family]
    setup = _built(name, family)
    step = setup.step()
    _finite(step)
    peer = setup.spec.trains_peer
    own = step.own_terms()
    if not peer and own.requires_grad:  # the method's own terms, with the teacher's autograd on, reach none of it
        grads = torch.autograd.grad(own, _teacher_params_not_the_methods(setup), retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads), f"{name}'s own terms back-propagate into the teacher"
    step.total.backward()
    trunk = next(setup.student.parameters()).grad  # the stem's first weight
    assert trunk is not None and torch.isfinite(trunk).all() and trunk.abs().sum() > 0
    if not peer:
        setup.teacher.requires_grad_(False)  # as the trainer freezes it, before it asks for main_parameters()
    teacher_ids = {id(p) for p in setup.teacher.parameters()}
    params = list(setup.method.main_parameters())
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"a parameter of {name} got no gradient"
        assert peer or id(p) not in teacher_ids, f"{name} trains a teacher parameter"
    before = copy.deepcopy(setup.teacher.state_dict())
    torch.optim.SGD([*setup.student.parameters(), *params], lr=0.1).step()
    if not peer:
        for key, value in setup.teacher.state_dict().items():
            assert torch.equal(value, before[key]), f"{name} changed the teacher's {key}"
    if setup.method.init_stage(setup.student) is not None:
        assert_init_gradients(init_step(name, student_arch, teacher_arch, size=size, model_s=student_arch))


@pytest.mark.parametrize("name", METHODS)
def test_state_round_trips_through_a_checkpoint(name):
    """After one step (trained parameters, updated memories), the method's state_dict, saved and loaded
    (strictly) into the method built from another seed, gives the same next step: nothing the step
    depends on lives outside the state a checkpoint keeps."""
    first = setup_method(name)
    first.step().total.backward()
    torch.optim.SGD([*first.student.parameters(), *first.method.main_parameters()], lr=0.1).step()
    buffer = io.BytesIO()
    torch.save({"model": first.student.state_dict(), "extra": first.method.state_dict()}, buffer)
    second = setup_method(name, method_seed=1)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)  # as a resumed run loads ckpt_last.pth
    second.student.load_state_dict(state["model"])
    second.method.load_state_dict(state["extra"])
    steps = []
    for setup in (first, second):
        torch.manual_seed(2)  # the same draws for methods that draw (views, negatives, attacks)
        steps.append(setup.step(seed=3))
    for key, value in steps[0].terms.items():
        assert torch.equal(value, steps[1].terms[key]), f"{name}: '{key}' differs after a reload"


def test_run_folder_names_are_distinct_and_name_the_method():
    """Every method's default run lands in a folder of its own, which the run readers parse back."""
    import train_student
    from helper.naming import student_run_name
    from helper.runs import STUDENT_FOLDER

    names = {}
    for name in METHODS:
        opt, _ = train_student.parse_option(["--path_t", "t.pth", "--model_t", "resnet20", "--distill", name])
        folder = student_run_name(opt)
        assert STUDENT_FOLDER.match(folder).group("method") == name, folder
        names[folder] = name
    assert len(names) == len(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in METHODS if get_method(n).compilable])
def test_a_compiled_student_traces_the_step(name, capsys):
    """``--compile`` where the spec allows it: the student compiled as the trainer compiles it (dynamo and
    AOTAutograd on the aot_eager backend, no C++ build), the step's forwards and backward run without the
    eager fallback."""
    import torch._dynamo

    from helper.compile import compile_module

    def compiled(student: torch.nn.Module) -> torch.nn.Module:
        compile_module(student, "the student", backend="aot_eager")
        return student

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    setup = setup_method(name, wrap=compiled)
    step = setup.step()
    step.total.backward()
    _finite(step)
    assert "running it eagerly" not in capsys.readouterr().err
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0


# One method of each shape that tests/test_resume.py (kd: logits only; fsp: an init stage) and
# test_method_dml.py (a trained peer) do not kill already: a run killed after its first checkpoint and
# resumed ends with the weights of an uninterrupted run. Each takes three runs (seconds each), so not all methods.
RESUME_SHAPES = {
    "vid": [],  # trainable connectors, in the optimizer beside the student
    "crd": ["--nce_k", "16"],  # a memory bank (buffers) and the contrast loader's indices
    "mlkd": [],  # prepare_batch draws views on the device: the random state must resume too
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RESUME_SHAPES))
def test_kill_and_resume_gives_the_same_weights(name, tmp_path, teacher_ckpt):
    from test_resume import sigkill_then_resume_is_bit_identical

    epochs = sigkill_then_resume_is_bit_identical(tmp_path, teacher_ckpt,
                                                  ["--epochs", "3", "--distill", name, *RESUME_SHAPES[name]])
    assert epochs == [("main", e) for e in range(1, 4)]


# --- torchrun: the ranks' average against one process on the doubled batch ----------------------------

def _gradients(setup: Setup) -> torch.Tensor:
    params = [*setup.student.parameters(), *setup.method.main_parameters()]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def _local_step(name: str, part: slice = slice(None), wrap=None, after_backward=None) -> tuple[torch.Tensor, float]:
    """Gradients and total of one step in eval mode (BatchNorm on running statistics, so that only the
    method can couple the samples; SyncBatchNorm is the trainer's answer for BatchNorm), on ``part`` of
    the batch, with ``--batch_size`` the share's size."""
    share = len(range(DDP_BATCH)[part])
    setup = setup_method(name, train=False, wrap=wrap, batch_size=share)
    step = setup.step(DDP_BATCH, part=part)
    step.total.backward()
    if after_backward is not None:
        after_backward(list(setup.method.main_parameters()))
    return _gradients(setup), step.total.item()


def _average(averager) -> None:
    if averager is not None:  # None: no parameters of its own, or one process
        averager()


def ddp_worker(out: Path) -> None:
    """Each batch-local method on this rank's half of the batch, its student under DDP and its own
    parameters averaged by the trainer's gradient_averager; rank 0 saves the averaged gradients."""
    import torch.distributed as dist

    from helper.distributed import gradient_averager, init_distributed, shutdown
    from helper.setup import Runtime, wrap_ddp

    info, device = init_distributed(torch.device("cpu"))
    rt = Runtime(device, "fp32", info, channels_last=True)
    share = DDP_BATCH // info.world_size
    results = {}
    for name in METHODS:
        if get_method(name).batch_local:
            grads, total = _local_step(name, slice(info.rank * share, (info.rank + 1) * share),
                                       wrap=lambda m: wrap_ddp(m, rt, False),
                                       after_backward=lambda params: _average(gradient_averager(params, info)))
            mean = torch.tensor([total / info.world_size])
            dist.all_reduce(mean)
            results[name] = {"grads": grads, "total": mean}
    if info.is_main:
        torch.save(results, out)
    shutdown(info)


@pytest.mark.slow
def test_two_processes_average_to_one_process_on_the_doubled_batch(tmp_path):
    from test_distributed import torchrun

    out = tmp_path / "ddp.pth"
    torchrun(str(Path(__file__).resolve()), ["ddp", str(out)], tmp_path)
    results = torch.load(out, weights_only=True)
    local = [name for name in METHODS if get_method(name).batch_local]
    assert sorted(results) == local
    for name in local:
        grads, total = _local_step(name)
        assert results[name]["total"].item() == pytest.approx(total, rel=1e-5), name
        torch.testing.assert_close(results[name]["grads"], grads, rtol=1e-4, atol=1e-6 * grads.abs().max().item(),
                                   msg=lambda m, name=name: f"{name} (batch_local=True): {m}")


if __name__ == "__main__" and sys.argv[1:2] == ["ddp"]:
    ddp_worker(Path(sys.argv[2]))
