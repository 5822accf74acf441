"""torch.distributed under torchrun: one process per device, rank 0 writes, metrics summed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from helper.errors import UserError


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
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        except dist.DistNetworkError as exc:  # the store's address: its port taken, or unreachable
            reason = str(exc).rpartition("message: ")[2].strip().splitlines()[0]
            raise UserError(f"cannot meet the other processes at {os.environ.get('MASTER_ADDR')}:"
                            f"{os.environ.get('MASTER_PORT')}: {reason}") from None
    return info, device


def group_info() -> DistInfo:
    """This process's place in the process group, for code that is not handed a Runtime (CRD's memory)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def quiet_non_main(info: DistInfo) -> None:
    """Non-zero ranks print nothing to stdout, whose lines would repeat rank 0's; stderr stays (a crash's
    traceback; one-line errors are said once per node, helper.errors.speaks)."""
    if not info.is_main:
        sys.stdout = open(os.devnull, "w")  # held for the life of the process


@dataclass(frozen=True)
class Outcome:
    """How one rank's part of a block ended, as the other ranks learn it: its error line and exit status, and
    whether it was a one-line error (UserError) rather than a crash, whose traceback that rank prints itself."""

    message: str
    exit_code: int
    user_error: bool


def agree(error: Exception | None, info: DistInfo) -> None:
    """One collective that every rank joins, failed or not: when some rank failed, every rank raises the
    lowest such rank's error (the rank that crashed re-raises its own exception, with its traceback; the
    others exit with status 1 in silence), so all ranks stop together and with the same status, and none is
    left waiting in a collective that the failed rank never reaches (gloo's "Connection closed by peer")."""
    if not info.enabled:
        if error is not None:
            raise error
        return
    mine = None
    if error is not None:
        user = isinstance(error, UserError)
        mine = Outcome(str(error), error.exit_code if user else 1, user)
    outcomes: list[Outcome | None] = [None] * info.world_size
    dist.all_gather_object(outcomes, mine)
    failed = [outcome for outcome in outcomes if outcome is not None]
    if not failed:
        return
    if error is not None and failed[0] == mine:
        raise error
    if not failed[0].user_error:
        raise SystemExit(1)
    agreed = UserError(failed[0].message)
    agreed.exit_code = failed[0].exit_code
    raise agreed


@contextmanager
def agree_on_errors(info: DistInfo) -> Iterator[None]:
    """Run the block on every rank, then :func:`agree` on how it ended: for blocks where one rank may fail
    alone (rank 0 writing the run folder, downloading the data). The block itself holds no collective."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure is agreed on, then raised again
        agree(exc, info)
    else:
        agree(None, info)


@contextmanager
def rank_zero_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the block before the other ranks do, so that what it downloads into a shared folder
    (CIFAR, torchvision's weights) is fetched once, and the others find it on disk. Both waits are
    agreements (:func:`agree`): when rank 0 fails (no data, no teacher file) the others stop with its
    error before trying, and when another rank then fails, rank 0 stops with it too."""
    if info.enabled and not info.is_main:
        agree(None, info)  # rank 0's outcome
    with agree_on_errors(info):
        yield
    if info.enabled and info.is_main:
        agree(None, info)  # the other ranks' outcomes


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
