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
from contextlib import AbstractContextManager
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
    #: how the loaders normalise the images (per-channel mean and std, in [0, 1] units), for a method
    #: that augments them on the device (MLKD pads its crops with normalised black, as torchvision pads)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


class Networks:
    """Forward passes beyond the one the objective ran: a method's extra views, attacks, Grad-CAMs.

    Outputs are float32 as in :class:`DistillBatch`; the networks run under the run's autocast.
    ``student`` is the network being trained (unwrapped from DDP: an extra pass joins the same
    backward, and DDP's hooks see each parameter's gradient once). ``teacher(x, input_grad=True)``
    keeps autograd on through the frozen teacher, for gradients with respect to its input; its
    parameters never receive any.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, autocast: Callable[[], AbstractContextManager]):
        self.student_network, self.teacher_network, self.autocast = student, teacher, autocast

    def student(self, x: Tensor, is_feat: bool = False, preact: bool = False):
        with self.autocast():
            out = self.student_network(x, is_feat=is_feat, preact=preact) if is_feat else self.student_network(x)
        return _float_outputs(out)

    def teacher(self, x: Tensor, is_feat: bool = False, preact: bool = False, input_grad: bool = False):
        with self.autocast():
            if is_feat:
                out = self.teacher_network(x, is_feat=True, preact=preact, input_grad=input_grad)
            else:
                out = self.teacher_network(x, input_grad=input_grad)
        return _float_outputs(out)


def _float_outputs(out):
    if isinstance(out, tuple):
        feats, logits = out
        return [f.float() for f in feats], logits.float()
    return out.float()


@dataclass
class DistillBatch:
    """One batch as a method sees it. Features and logits are float32 whatever the precision.

    ``image`` is the input both networks saw (after :meth:`DistillMethod.prepare_batch`), ``nets``
    runs further passes, and ``epoch``/``epochs`` place the step in the stage (1-based) for methods
    with a schedule (warm-ups, decaying weights).
    """

    feat_s: list[Tensor]
    feat_t: list[Tensor]
    logit_s: Tensor
    logit_t: Tensor
    target: Tensor
    index: Tensor | None = None
    contrast_idx: Tensor | None = None
    image: Tensor | None = None
    nets: Networks | None = None
    epoch: int = 1
    epochs: int = 1
    #: the teacher's (features, logits) still attached to its graph when the spec asks for ``teacher_graph``;
    #: ``feat_t``/``logit_t`` are then their detached views, so no other term back-propagates into the teacher
    graph_t: tuple[list[Tensor], Tensor] | None = None


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


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class PeerNetwork:
    """A network a method trains beside the student (DML's peer): evaluated, logged and saved as it is.

    ``name`` prefixes its metrics and console lines; its files are ``<arch>_<name>_best.pth`` and
    ``_last.pth``, so they never clash with the student's, even when both have the same architecture.
    """

    name: str
    arch: str
    module: nn.Module


class DistillMethod(nn.Module):
    """A built method: its loss on a batch, its trainable modules, its optional init stage.

    Parameters that require grad are trained with the student in the main stage; buffers (a
    memory bank, say) are saved and restored with the run. Most methods only define
    :meth:`forward` (the ``-b`` term); the other hooks let a method change what a step computes
    without the trainer knowing which method it runs.
    """

    #: weights of the terms :meth:`loss_terms` adds beyond 'cls', 'div' and 'kd' (MLKD's ``-d``, say)
    extra_weights: dict[str, float] = {}

    def forward(self, batch: DistillBatch) -> Tensor:
        raise NotImplementedError

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor] | None:
        """The batch (image, target, index, ...) on the device before both networks see it.

        Return a changed batch (extra views, say) or None to skip this step (SemCKD skips batches
        smaller than ``--batch_size``); the trainer counts skipped steps.
        """
        return batch

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits for the training accuracy and the unweighted loss terms.

        The logits are one row per sample of the batch as the loader gave it (before
        :meth:`prepare_batch`), in its order, since the trainer scores them against its labels.

        'cls', 'div' and 'kd' are weighted by ``-r``, ``-a`` and ``-b``; any other name by
        :attr:`extra_weights`. ``ce`` is the cross-entropy and ``kd`` the run's KD criterion.
        """
        return batch.logit_s, {
            "cls": ce(batch.logit_s, batch.target),
            "div": kd(batch.logit_s, batch.logit_t),
            "kd": self(batch),
        }

    def eval_model(self, student: nn.Module) -> nn.Module:
        """The network that is evaluated each epoch: the student itself unless the method adds a head."""
        return student

    def model_file_extras(self) -> dict:
        """Entries merged into the student's best/last/periodic files beside its 'model' weights: what
        evaluating the student alone needs when :meth:`eval_model` adds a head (SimKD's projector and
        teacher classifier). Plain tensors and containers only, as the files load with weights_only."""
        return {}

    def init_stage(self, student: nn.Module) -> InitStage | None:
        """The method's pre-training stage, or None when it has none."""
        return None

    def main_parameters(self) -> Iterable[nn.Parameter]:
        """What the main-stage optimizer trains besides the student."""
        return (p for p in self.parameters() if p.requires_grad)

    def peer_networks(self) -> list[PeerNetwork]:
        """Networks the method trains beside the student (its submodules), which the trainer evaluates,
        logs and saves as it does the student; none unless the spec ``trains_peer``."""
        return []


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
    #: both networks' features taken before their last ReLU (RepDistiller's ``preact``)
    preact: bool = False
    #: the student's taps when they differ from ``preact`` (None: the same); a function of the options when a
    #: flag decides it (ReviewKD's --reviewkd_stu_preact, mdistiller's STU_PREACT). Read it through
    #: :meth:`preact_student`.
    student_preact: bool | Callable[[argparse.Namespace], bool] | None = None
    uses_features: bool = True
    #: the loader supplies each sample's index and CRD contrast indices; a function of the options
    #: when a flag decides it (RRD's --memory_type momentum): read it through :meth:`wants_contrast`
    needs_contrast: bool | Callable[[argparse.Namespace], bool] = False
    #: the images require grad before the forward (input-gradient methods: Sobolev, LwM)
    input_grad: bool = False
    #: the teacher's own pass keeps its graph (implies ``input_grad``): ``DistillBatch.graph_t`` then
    #: holds its outputs attached to the image, so Jacobians and Grad-CAMs need no second teacher pass
    teacher_graph: bool = False
    #: no frozen teacher: the method trains a --model_t peer beside the student (initialised from --path_t
    #: when given, else from scratch), handed to it as ``ctx.teacher`` and listed in ``peer_networks()``
    trains_peer: bool = False
    #: False: the training loader gives the images without its random crop and flip, and the method draws
    #: its own augmentation per batch on the device in ``prepare_batch`` (MLKD's rotated views)
    train_augment: bool = True
    #: False: the method back-propagates through gradients (double backward: Sobolev's input Jacobians, LwM's
    #: Grad-CAMs), which torch.compile does not support, so ``--compile auto`` runs it eagerly and ``on`` refuses
    compilable: bool = True
    #: False: the loss couples the samples of a batch (relations between samples, batch statistics, a memory
    #: or queue of other samples, a choice among the batch's samples), so under torchrun the average of the
    #: ranks' gradients is not the gradient on the global batch; True (a mean of per-sample terms) is checked
    #: against one process on the doubled batch by tests/test_conformance.py
    batch_local: bool = True
    #: adds the method's own flags to its argument group of train_student.py
    add_args: Callable[[argparse._ArgumentGroup], None] | None = None
    #: text the run folder name gains after the weights, so that variants of one method chosen by its
    #: own flags (``--memory_type``, MLKD's ``-d``) do not share a folder; see :func:`flag_tag`
    run_tag: Callable[[argparse.Namespace], str] | None = None

    def preact_student(self, opt: argparse.Namespace) -> bool:
        """Whether this run's student features are its pre-activation ones (the teacher's are ``preact``)."""
        if self.student_preact is None:
            return self.preact
        return bool(self.student_preact(opt)) if callable(self.student_preact) else self.student_preact

    def wants_contrast(self, opt: argparse.Namespace) -> bool:
        """Whether this run's loader must supply indices and contrast indices (the "crd" variant)."""
        return bool(self.needs_contrast(opt)) if callable(self.needs_contrast) else self.needs_contrast


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


def flag_tag(flag: str, default: object | None = None, label: str | None = None) -> Callable[[argparse.Namespace], str]:
    """A ``run_tag`` naming ``--flag``'s value (``_label:value``, the label defaulting to the flag's name):
    always, or only when it is not ``default``, so the default variant keeps RepDistiller's folder name."""

    def tag(opt: argparse.Namespace) -> str:
        value = getattr(opt, flag, default)
        return "" if default is not None and value == default else f"_{label or flag}:{value}"

    return tag


def run_tag(opt: argparse.Namespace) -> str:
    """The run folder's method-specific part for ``opt.distill`` ('' for methods without one)."""
    load_methods()
    spec = _METHODS.get(_ALIASES.get(opt.distill, opt.distill))
    return spec.run_tag(opt) if spec is not None and spec.run_tag is not None else ""


def add_method_args(parser: argparse.ArgumentParser) -> None:
    """Every method's own flags, one group per method that has any."""
    load_methods()
    for spec in _METHODS.values():
        if spec.add_args is not None:
            spec.add_args(parser.add_argument_group(f"{spec.name}: {spec.summary}"))


def weights_summary() -> str:
    """Each method's default -r/-a/-b, compactly, for --help: ``abound=1/0/1, afd=1/0/500, ...``."""
    load_methods()
    return ", ".join(f"{name}={w.gamma:g}/{w.alpha:g}/{w.beta:g}"
                     for name, w in sorted((spec.name, spec.weights) for spec in _METHODS.values()))


def get_method(name: str) -> MethodSpec:
    """The spec for ``--distill name`` (aliases such as ``fitnet`` or ``at`` accepted)."""
    load_methods()
    key = _ALIASES.get(name, name)
    if key not in _METHODS:
        raise ValueError(f"unknown --distill '{name}'; choose one of: {', '.join(method_names())}")
    return _METHODS[key]

