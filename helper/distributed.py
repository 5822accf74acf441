"""torch.distributed under torchrun: one process per device, rank 0 writes, metrics summed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes in the environment (nccl on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def group_info() -> DistInfo:
    """This process's place in the process group, for code that is not handed a Runtime (CRD's memory)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def quiet_non_main(info: DistInfo) -> None:
    """Non-zero ranks print nothing to stdout, whose lines would repeat rank 0's; stderr stays, so an
    error on any rank is seen."""
    if not info.is_main:
        sys.stdout = open(os.devnull, "w")  # held for the life of the process


@contextmanager
def rank_zero_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block before the other ranks do, so that what it downloads into a shared folder
    (CIFAR, torchvision's weights) is fetched once, and the others find it on disk."""
    if info.enabled and not info.is_main:
        dist.barrier()
    yield
    if info.enabled and info.is_main:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over every rank (a no-op in a single process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_int(value: int, info: DistInfo, device: torch.device) -> int:
    """Rank 0's value on every rank (the seed, so every process draws the same)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order, the same on every rank; the
    tensor itself in a single process. One collective, no host sync: every rank must hold as many
    rows, which our samplers guarantee (DistributedSampler pads each rank's shard to the same
    length, so the ranks' batches, the last included, are equal)."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def gather_objects(obj: object, info: DistInfo) -> list[object] | None:
    """Every rank's picklable ``obj`` in rank order on rank 0 (None elsewhere); ``[obj]`` in one process."""
    if not info.enabled:
        return [obj]
    gathered = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_state(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers on every rank, for modules outside DistributedDataParallel
    (a method's embeddings and CRD's memory), which each rank initialised from its own seed."""
    if info.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gradient_averager(params: list[torch.nn.Parameter], info: DistInfo):
    """Average the gradients of modules trained outside DistributedDataParallel (a method's
    connectors and embeddings, whose forward takes a batch of features rather than images)."""
    if not info.enabled or not params:
        return None

    def average() -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= info.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    return average
