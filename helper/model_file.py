"""Model files as the training scripts write them, read back into networks for evaluation and plots.

A path may be a file or a run folder; the architecture comes from the file's 'arch', else from the
folder's name (as for teachers), and the number of classes from the classifier's weights. A SimKD
student file carries its projector and the teacher's classifier, and comes back as the network
SimKD deploys (:class:`distiller_zoo.SimKD.SimKDStudent`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from dataset import DataBundle
from helper.checkpoint import load_strict, safe_load, state_dict_of
from helper.errors import UserError
from helper.naming import arch_from_path
from helper.trainer import RESUME_FILE
from models import build_model, model_dict
from models.classifier import classifier_of, input_size

_PERIODIC = re.compile(r"^ckpt_epoch_(\d+)\.pth$")


def resolve_model_file(path: str | Path) -> Path:
    """``path`` itself when it is a file; in a run folder the final model, else the best, else the
    latest periodic file (``<arch>_last.pth``, ``<arch>_best.pth``, ``ckpt_epoch_<N>.pth``)."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise UserError(f"no model file or run folder at {path}")
        return path
    for pattern in ("*_last.pth", "*_best.pth"):
        found = sorted(p for p in path.glob(pattern) if p.name != RESUME_FILE)
        if found:
            return found[0]
    periodic = [(int(m.group(1)), p) for p in path.glob("ckpt_epoch_*.pth") if (m := _PERIODIC.match(p.name))]
    if periodic:
        return max(periodic)[1]
    raise UserError(f"{path} holds no model file (<arch>_last.pth, <arch>_best.pth or ckpt_epoch_<N>.pth)")


def model_arch(arch: str | None, checkpoint: dict, path: str | Path) -> str:
    """``arch`` when given, else the file's 'arch', else the run folder's name."""
    arch = arch or checkpoint.get("arch") or arch_from_path(path, list(model_dict))
    if arch is None:
        raise UserError(f"cannot tell the architecture of {path}; pass it (--model_s / --model_t)")
    if arch not in model_dict:
        raise UserError(f"{path} names architecture '{arch}', which is not a known model")
    return arch


def checkpoint_classes(state: dict, arch: str, path: str | Path) -> int:
    """The number of classes the file's classifier was trained for."""
    key = classifier_of(build_model(arch, 10), input_size(arch)) + ".weight"
    if key not in state:
        raise UserError(f"{path} has no classifier weights '{key}' for architecture '{arch}'")
    return int(state[key].shape[0])


def load_model_file(path: str | Path, arch: str | None = None, head: bool = True) -> tuple[nn.Module, str, dict]:
    """(network, architecture, checkpoint) from a model file or run folder, weights loaded strictly.

    ``head``: return a SimKD student with its projector and teacher classifier when the file carries
    them; False gives the bare student network.
    """
    path = resolve_model_file(path)
    checkpoint = safe_load(path)
    arch = model_arch(arch, checkpoint, path)
    state = state_dict_of(checkpoint, path)
    model = build_model(arch, checkpoint_classes(state, arch, path))
    load_strict(model, state, path, arch)
    if head and "simkd" in checkpoint:
        from distiller_zoo.SimKD import simkd_student

        try:
            model = simkd_student(model, checkpoint["simkd"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise UserError(f"{path}: its 'simkd' entry does not rebuild the SimKD head ({exc})") from exc
    return model, arch, checkpoint


def check_classes(model: nn.Module, bundle: DataBundle, path: str | Path) -> None:
    """Raise unless the network outputs one logit per class of the data set."""
    model.eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, bundle.image_size, bundle.image_size)).shape[1]
    if outputs != bundle.num_classes:
        raise UserError(f"{path} classifies {outputs} classes, {bundle.name} has {bundle.num_classes}")
