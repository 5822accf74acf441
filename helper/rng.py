"""Every random number generator's state, as plain tensors that ``weights_only`` loading accepts."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> dict:
    """Python, NumPy and torch CPU generator states, and the training device's CUDA generator.

    Only the device this process trains on: a run saved on an 8-GPU node must resume on one GPU,
    and the other devices' generators are never drawn from by this process.
    """
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(state, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda_device": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng(state: dict, device: torch.device) -> None:
    """Restore what :func:`capture_rng` saved, on the device this process trains on now.

    Checkpoints from before per-device saving hold ``cuda``, one state per GPU that was visible;
    the training device's is taken where it exists, and none is forced on a GPU that is not there.
    """
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    cuda_state = state.get("cuda_device")
    if cuda_state is None and state.get("cuda"):
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda_state = state["cuda"][index] if index < len(state["cuda"]) else None
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
