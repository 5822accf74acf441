"""torch.compile where it pays and works: ``--compile auto|on|off``, inductor's on-disk caches, and a
fallback to the eager network when compiling fails.

Compiling fuses the elementwise passes (BatchNorm, ReLU, residual adds) that dominate a small CIFAR
network's step once the convolutions are fast, but costs tens of seconds per run on a CPU, so
``auto`` compiles only runs planned long enough to win that back (docs/benchmark.md has the
figures behind :data:`PAYS_FROM_STEPS`). A second run of the same configuration reads its kernels
from inductor's FX-graph and AOTAutograd caches instead of compiling them again.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from helper.compile_flags import PAYS_FROM_STEPS, compile_setting
from helper.errors import UserError


@dataclass(frozen=True)
class Decision:
    """Whether to compile, and the one line that says why."""

    compile: bool
    reason: str


def cpu_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with, or None (then nothing compiles on CPU)."""
    import torch._inductor.config

    configured = getattr(torch._inductor.config.cpp, "cxx", (None,))
    names = [name for name in (*configured, "g++", "clang++", "c++") if name]
    return next((path for path in map(shutil.which, names) if path), None)


def decide(setting: str, device: torch.device, planned_steps: int, method: str | None = None,
           compilable: bool = True) -> Decision:
    """``--compile`` resolved for one run: ``on`` and ``off`` as asked; ``auto`` compiles where it
    works (a method without double backward, a supported device, a C++ compiler on CPU) and the
    run's ``planned_steps`` reach :data:`PAYS_FROM_STEPS` for the device type.

    Raises ValueError for ``on`` with a method that cannot run compiled."""
    import torch._dynamo

    setting = compile_setting(setting)
    if not compilable:
        why = (f"--distill {method} back-propagates through gradients (double backward), which torch.compile "
               "does not support")
        if setting == "on":
            raise ValueError(f"{why}: use --compile off (or auto)")
        return Decision(False, f"off ({why})" if setting == "auto" else "off")
    if setting != "auto":
        return Decision(setting == "on", setting)
    threshold = PAYS_FROM_STEPS.get(device.type)
    if threshold is None or not torch._dynamo.is_dynamo_supported():
        return Decision(False, f"off (auto: torch.compile is not set up for {device.type} here)")
    if device.type == "cpu" and cpu_compiler() is None:
        return Decision(False, "off (auto: no C++ compiler on PATH, which torch.compile needs on CPU)")
    if planned_steps < threshold:
        return Decision(False, f"off (auto: {planned_steps:,} steps planned; compiling pays from about "
                               f"{threshold:,} on {device.type}; --compile on forces it)")
    return Decision(True, f"on (auto: {planned_steps:,} steps planned; kernels cached in {cache_dir()})")


def cache_dir() -> str:
    """Where inductor keeps its compiled kernels and graphs (TORCHINDUCTOR_CACHE_DIR, else its default)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir

    return inductor_cache_dir()


def configure_compiler() -> None:
    """Cache compiled graphs on disk across runs, and compile each backward with its forward, so a
    compile failure surfaces in the forward call that :class:`EagerFallback` guards. Inductor's C++ build
    looks for a CUDA toolkit even for CPU kernels; without a GPU that search's warning ("No CUDA runtime is
    found") says nothing about the run, so it is not shown."""
    import torch._functorch.config
    import torch._inductor.config

    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True
    torch._functorch.config.force_non_lazy_backward_lowering = True


class EagerFallback:
    """A module's compiled call that, the first time compiling fails, prints one line and runs the same
    call eagerly, and stays eager for the rest of the run.

    Dynamo and inductor fail before the compiled graph runs (and the backward is compiled with the
    forward, see :func:`configure_compiler`), so the eager call starts from the state the compiled one
    found. An error the eager call raises too is the module's own and propagates unchanged."""

    def __init__(self, module: nn.Module, name: str, compiled: Callable):
        self.module, self.name, self.compiled = module, name, compiled

    def __call__(self, *args, **kwargs):
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled call: try the eager one
            out = self.module._call_impl(*args, **kwargs)
            self.module._compiled_call_impl = None
            print(f"compile: {self.name} failed to compile ({_root_cause(exc)}); running it eagerly", file=sys.stderr,
                  flush=True)
            return out


def _root_cause(exc: BaseException) -> str:
    """The innermost error behind dynamo's wrappers (BackendCompilerFailed's compiler error), on one line."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def compile_module(module: nn.Module, name: str, mode: str = "default", backend: str | Callable = "inductor") -> None:
    """Compile ``module`` in place, as ``nn.Module.compile`` (its state_dict keys stay its own), with
    :class:`EagerFallback` around the compiled call. Shapes as torch.compile's default: the first batch
    size gets a static graph, a second one (an epoch's last batch, BSS's attacked samples) one graph with
    a symbolic batch size for all the others, not a compile per size."""
    configure_compiler()
    options = {"mode": mode} if backend == "inductor" and mode != "default" else {}
    compiled = torch.compile(module._call_impl, backend=backend, **options)
    module._compiled_call_impl = EagerFallback(module, name, compiled)


def plan_compile(opt: argparse.Namespace, rt, planned_steps: int, spec=None) -> Decision:
    """Decide ``--compile`` for a run of ``planned_steps`` training steps (every stage's), set
    ``rt.compile`` and say so in one line; every rank decides alike from the same numbers.

    ``spec`` is the run's MethodSpec (a distillation run), whose ``compilable`` may rule compiling out."""
    name, compilable = (spec.name, spec.compilable) if spec is not None else (None, True)
    try:
        decision = decide(opt.compile, rt.device, planned_steps, name, compilable)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    rt.compile = decision.compile
    if rt.info.is_main and compile_setting(opt.compile) != "off":
        print(f"compile: {decision.reason}")
    return decision
