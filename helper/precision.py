"""Device and precision choice: bfloat16 autocast where the hardware runs it fast, else float32."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from helper.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def mps_available() -> bool:
    """Apple's Metal GPU (the ``mps`` backend of torch on Apple silicon)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the CUDA GPU, else Apple's ``mps``, else the CPU; an unavailable GPU is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device '{name}' is not a device (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "mps" and not mps_available():
        raise UserError(f"--device {name}: Apple's Metal (mps) backend is not available here (use --device cpu)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible here")
    return device


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: the CPU runs bfloat16 matrix work in hardware."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cuda_precision(capability: tuple[int, int]) -> str:
    """bf16 where the GPU runs it natively (Ampere, compute capability 8.0, and later); fp16 with the
    gradient scaler where it has fp16 tensor cores only (Volta, Turing: 7.x); fp32 on older GPUs.

    ``torch.cuda.is_bf16_supported()`` also answers true where bf16 is only emulated (V100, T4),
    which makes those runs slower, not faster, so the compute capability decides.
    """
    if capability >= (8, 0):
        return "bf16"
    if capability >= (7, 0):
        return "fp16"
    return "fp32"


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` becomes bf16 where it is fast, fp32 elsewhere (``mps`` included:
    nothing measured here says its autocast pays, and fp32 is what every reference trained in)."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return cuda_precision(torch.cuda.get_device_capability(device))
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast for the networks' forward passes (losses leave it and run in float32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling, needed by float16 only (bfloat16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
