"""Checkpoints: atomic writes, safe reads, and strict loads that name what does not fit."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from helper.errors import UserError

# RepDistiller's *_last.pth files hold an argparse.Namespace: plain data, safe to allow.
torch.serialization.add_safe_globals([argparse.Namespace])


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write`` so that a kill at any instant leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a half-written file behind."""
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_text(path: str | Path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode()))


def require_file(path: str | Path) -> Path:
    """``path`` when it is a file; else one line (a distributed run checks its files before any process starts)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def safe_load(path: str | Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU, with one-line errors for every way it fails."""
    path = require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise UserError(
                f"refusing to load {path}: it holds pickled objects that could run code "
                "(only tensors and plain containers are loaded)"
            ) from exc
        raise UserError(f"cannot read checkpoint {path}: the file is corrupt ({exc})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({reason})") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a checkpoint dictionary (got {type(obj).__name__})")
    return obj


def state_dict_of(checkpoint: dict, path: str | Path) -> dict:
    """The weights in a checkpoint: RepDistiller's ``model``, or ``state_dict``/``net`` of other repos
    (KD-Zoo's ``net``, saved from DataParallel with its own ResNet key names: see :func:`kdzoo_resnet_keys`)."""
    for key in ("model", "state_dict", "net"):
        if isinstance(checkpoint.get(key), dict):
            state = checkpoint[key]
            break
    else:
        if checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
            state = checkpoint  # a bare state_dict, as torchvision publishes
        else:
            raise UserError(f"{path} has no 'model' state_dict (keys: {', '.join(map(str, checkpoint))})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from (Distributed)DataParallel
    return kdzoo_resnet_keys(state)


_KDZOO_STAGE = re.compile(r"^res(\d+)\.")


def kdzoo_resnet_keys(state: dict) -> dict:
    """Knowledge-Distillation-Zoo's CIFAR ResNets (its network.py: stages ``res1``-``res3``, shortcut ``ds``)
    under RepDistiller's names (``layer1``-``layer3``, ``downsample``): the same blocks in the same order, so
    its resnet20/resnet110 files load strictly into ours (other state dicts pass through unchanged)."""
    if not any(_KDZOO_STAGE.match(k) for k in state) or any(k.startswith("layer1.") for k in state):
        return state
    return {_KDZOO_STAGE.sub(r"layer\1.", k).replace(".ds.", ".downsample."): v for k, v in state.items()}


def _preview(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_strict(model: nn.Module, state: dict, path: str | Path, arch: str) -> None:
    """Load ``state`` into ``model`` exactly, or explain in one line which keys do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs model): {_preview(mismatched, 2)}")
    if problems:
        raise UserError(f"{path} does not fit architecture '{arch}': " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
