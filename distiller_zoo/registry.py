"""The method registry: every distillation method declares itself here, once.

``train_student.py`` never names a method: it looks the ``--distill`` name up in this registry,
builds the method from the networks' feature shapes, and trains whatever the method returns.
A new method is one module in ``distiller_zoo/`` that calls :func:`register` at import time;
:func:`load_methods` imports every module of the package, so nothing else needs editing.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class Weights:
    """Loss weights: ``-r`` (cross-entropy), ``-a`` (KD), ``-b`` (the method's own loss)."""

    gamma: float
    alpha: float
    beta: float


@dataclass
class MethodContext:
    """What a method needs to build its modules: both networks and their feature shapes.

    ``feat_s``/``feat_t`` come from one forward of a dummy batch in eval mode (as RepDistiller
    does), with ``preact`` as the method asked; only their shapes should be used.
    """

    student: nn.Module
    teacher: nn.Module
    feat_s: list[Tensor]
    feat_t: list[Tensor]
    logit_s: Tensor
    logit_t: Tensor
    opt: argparse.Namespace
    n_data: int
    num_classes: int


@dataclass
class DistillBatch:
    """One batch as a method sees it. Features and logits are float32 whatever the precision."""

    feat_s: list[Tensor]
    feat_t: list[Tensor]
    logit_s: Tensor
    logit_t: Tensor
    target: Tensor
    index: Tensor | None = None
    contrast_idx: Tensor | None = None


@dataclass
class InitStage:
    """A pre-training stage run before distillation (AB, FSP, FT), as RepDistiller's ``init``.

    ``modules`` are trained with a fresh SGD at ``lr`` on ``loss`` alone for ``--init_epochs``;
    ``student_trunk`` says whether the student's feature modules train too (its BN then runs in
    train mode while the rest of the student stays in eval).
    """

    modules: list[nn.Module]
    loss: Callable[[DistillBatch], Tensor]
    lr: float
    student_trunk: bool = False


class DistillMethod(nn.Module):
    """A built method: its loss on a batch, its trainable modules, its optional init stage.

    Parameters that require grad are trained with the student in the main stage; buffers (a
    memory bank, say) are saved and restored with the run.
    """

    def forward(self, batch: DistillBatch) -> Tensor:
        raise NotImplementedError

    def init_stage(self, student: nn.Module) -> InitStage | None:
        """The method's pre-training stage, or None when it has none."""
        return None

    def main_parameters(self) -> Iterable[nn.Parameter]:
        """What the main-stage optimizer trains besides the student."""
        return (p for p in self.parameters() if p.requires_grad)


class NoMethodLoss(DistillMethod):
    """The method term of methods whose main stage adds nothing (KD alone, AB and FSP after init)."""

    def forward(self, batch: DistillBatch) -> Tensor:
        return batch.logit_s.new_zeros(())


@dataclass(frozen=True)
class MethodSpec:
    """How to build one method and how to feed it."""

    name: str
    build: Callable[[MethodContext], DistillMethod]
    weights: Weights
    summary: str
    aliases: tuple[str, ...] = ()
    preact: bool = False
    uses_features: bool = True
    needs_contrast: bool = False


_METHODS: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method; its name and aliases must be new."""
    for key in (spec.name, *spec.aliases):
        if key in _METHODS or key in _ALIASES:
            raise ValueError(f"distillation method name '{key}' is registered twice")
    _METHODS[spec.name] = spec
    for alias in spec.aliases:
        _ALIASES[alias] = spec.name
    return spec


def load_methods() -> None:
    """Import every module of the package so each method registers itself."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("distiller_zoo")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "registry":
            importlib.import_module(f"distiller_zoo.{info.name}")
    _loaded = True


def method_names() -> list[str]:
    load_methods()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The spec for ``--distill name`` (aliases such as ``fitnet`` or ``at`` accepted)."""
    load_methods()
    key = _ALIASES.get(name, name)
    if key not in _METHODS:
        raise ValueError(f"unknown --distill '{name}'; choose one of: {', '.join(method_names())}")
    return _METHODS[key]

