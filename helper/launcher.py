"""SemCKD's own launcher flags: ``--multiprocessing-distributed`` starts one process per GPU of
``--gpu_id`` with torch.multiprocessing instead of torchrun.

There is one distributed implementation, helper/distributed.py, which joins the process group that
the environment describes. This module only writes that environment in each process it starts, as
torchrun does for its workers (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), and then runs the script's ordinary ``main`` there.

As in SemCKD, ``--batch_size`` and ``--num_workers`` are then the node's: each process takes
``batch_size // processes`` images per step and ``ceil(num_workers / processes)`` loader workers.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
import torch.multiprocessing as mp

from helper.errors import UserError

WORKER_ENV = "KD_LAUNCHER_WORKER"  # set in the processes this launcher starts
SPLIT_OPTIONS = ("batch_size", "num_workers")  # per node on the command line, per process in a worker
# When a worker fails, the others get this long to finish on their own (a checkpoint being written, or the
# error line of the worker that failed first, while a peer's crash because of it arrived sooner) before SIGTERM.
GRACE_SECONDS = 30


def gpu_list(text: str | None) -> list[int]:
    """``"0,1,2"`` as ``[0, 1, 2]``; ``[]`` when not given."""
    if text is None:
        return []
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpu_id '{text}' is not a comma-separated list of GPU numbers, e.g. 0,1,2,3") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--gpu_id '{text}' must list distinct GPU numbers, e.g. 0,1,2,3")
    return ids


def master_address(url: str) -> tuple[str, int]:
    """Host and port of process 0 from ``--dist_url``."""
    if url == "env://":
        try:
            return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        except (KeyError, ValueError):
            raise UserError("--dist_url env:// needs MASTER_ADDR and MASTER_PORT in the environment") from None
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "tcp" or not parsed.hostname or port is None:
        raise UserError(f"--dist_url '{url}' must be tcp://host:port (or env://)")
    return parsed.hostname, port


def check_launcher_args(opt: argparse.Namespace) -> None:
    """Refuse launcher values that cannot start, in one line each (raises UserError)."""
    gpu_list(opt.gpu_id)
    if opt.world_size < 1:
        raise UserError(f"--world_size (nodes) must be at least 1, got {opt.world_size}")
    if not 0 <= opt.rank < opt.world_size:
        raise UserError(f"--rank (this node's) must be in 0 .. {opt.world_size - 1}, got {opt.rank}")
    if opt.nproc_per_node is not None and opt.nproc_per_node < 1:
        raise UserError(f"--nproc_per_node must be at least 1, got {opt.nproc_per_node}")
    if not opt.multiprocessing_distributed:
        for flag, given in (("--world_size", opt.world_size != 1), ("--rank", opt.rank != 0),
                            ("--nproc_per_node", opt.nproc_per_node is not None)):
            if given:
                raise UserError(f"{flag} starts processes only with --multiprocessing_distributed (or use torchrun)")
        return
    if "TORCHELASTIC_RUN_ID" in os.environ and WORKER_ENV not in os.environ:
        raise UserError("--multiprocessing_distributed starts its own processes: run the script with python, "
                        "not under torchrun (or leave the flag out)")
    master_address(opt.dist_url)


@dataclass(frozen=True)
class LaunchPlan:
    """The processes of this node and where they meet."""

    nproc: int
    nodes: int
    node_rank: int
    addr: str
    port: int
    on_gpu: bool

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc


def plan_launch(opt: argparse.Namespace, gpus_here: int) -> LaunchPlan:
    """How many processes this node starts: one per --gpu_id entry (or per visible GPU), as SemCKD;
    on CPU (``--device cpu``, or no GPU here) --nproc_per_node, else one per --gpu_id entry, else one."""
    ids = gpu_list(opt.gpu_id)
    on_gpu = opt.device != "cpu" and gpus_here > 0
    if opt.dist_backend == "nccl" and not on_gpu:
        raise UserError("--dist_backend nccl needs GPUs; on CPU the processes use gloo")
    if opt.dist_backend == "gloo" and on_gpu:
        raise UserError("--dist_backend gloo: processes on GPUs use nccl here (leave --dist_backend out)")
    if on_gpu:
        available = len(ids) or gpus_here
        nproc = opt.nproc_per_node or available
        if nproc > available:
            raise UserError(f"--nproc_per_node {nproc}: only {available} GPU(s) to give the processes")
    else:
        nproc = opt.nproc_per_node or len(ids) or 1
    addr, port = master_address(opt.dist_url)
    return LaunchPlan(nproc, opt.world_size, opt.rank, addr, port, on_gpu)


def check_port_free(plan: LaunchPlan) -> None:
    """On node 0, where process 0 will listen: refuse a port another program (an earlier run) holds, in one
    line, before any process starts (they would fail in the process group's store, one traceback each)."""
    if plan.node_rank != 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in plan.addr else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the store: a closing port is free
        try:
            sock.bind(("", plan.port))
        except OSError as exc:
            raise UserError(f"--dist_url: process 0 cannot listen on port {plan.port} here ({exc.strerror}; another "
                            f"run may hold it): pass a free port, e.g. --dist_url tcp://{plan.addr}:{plan.port + 1}"
                            ) from None


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` while the block runs (the processes started in it inherit them)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker(local_rank: int, entry: Callable, argv: list[str] | None, plan: LaunchPlan) -> None:
    """One process: torchrun's worker environment, then the script's ordinary main. A crash prints its
    traceback here, on this worker's stderr, and exits 1 (as under torchrun)."""
    from helper.errors import run_cli

    os.environ.update({"RANK": str(plan.node_rank * plan.nproc + local_rank), "LOCAL_RANK": str(local_rank)})
    try:
        run_cli(entry, argv)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


def exit_status(codes: list[int | None]) -> int:
    """The launcher's status from its workers': a worker's own status (2 a one-line error, 3 a non-finite
    loss, 75 stopped by a signal, ...) before the crashes that follow it on other ranks (1: a peer went
    away) and before the workers stopped for it (killed by a signal), the lowest rank first."""
    failed = [code for code in codes if code]
    for wanted in (lambda c: c > 1, lambda c: c == 1):
        chosen = [code for code in failed if wanted(code)]
        if chosen:
            return chosen[0]
    return 128 - min(failed) if failed else 0


def _forward_sigterm(processes: list) -> Callable:
    def handler(signum: int, frame) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
    return handler


def launch(opt: argparse.Namespace, entry: Callable[[list[str] | None], object], argv: list[str] | None) -> bool:
    """Start this node's processes when ``--multiprocessing_distributed`` asks for them and wait for them;
    True when they ran (the caller has nothing left to do), False when this process is to train itself.

    ``--gpu_id`` sets CUDA_VISIBLE_DEVICES first, as SemCKD does, so under torchrun too the local
    ranks take the listed GPUs in order. A SIGTERM to this process reaches every worker (they stop
    together and checkpoint, as under torchrun); Ctrl-C reaches them from the terminal. The launcher
    exits with the workers' status.
    """
    if WORKER_ENV in os.environ:
        return False
    check_launcher_args(opt)
    ids = gpu_list(opt.gpu_id)
    visible = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))} if ids else {}
    if not opt.multiprocessing_distributed:
        if len(ids) > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            raise UserError(f"--gpu_id lists {len(ids)} GPUs: add --multiprocessing_distributed to train on all "
                            "of them (one process each), or list one")
        os.environ.update(visible)
        return False
    gpus_here = torch.cuda.device_count() if opt.device != "cpu" else 0
    plan = plan_launch(opt, gpus_here)
    if opt.batch_size < plan.nproc:
        raise UserError(f"--batch_size {opt.batch_size} is the node's under --multiprocessing_distributed: at least "
                        f"one image for each of its {plan.nproc} processes")
    if plan.on_gpu and ids and "CUDA_VISIBLE_DEVICES" not in os.environ and max(ids) >= gpus_here:
        raise UserError(f"--gpu_id {opt.gpu_id}: this machine has {gpus_here} GPU(s) (0 .. {gpus_here - 1})")
    check_port_free(plan)
    env = {**visible, WORKER_ENV: "1", "WORLD_SIZE": str(plan.world_size), "LOCAL_WORLD_SIZE": str(plan.nproc),
           "MASTER_ADDR": plan.addr, "MASTER_PORT": str(plan.port)}
    if "OMP_NUM_THREADS" not in os.environ and plan.nproc > 1:
        env["OMP_NUM_THREADS"] = "1"  # torchrun's default, so that the processes do not oversubscribe the cores
    where = "GPU" if plan.on_gpu else "CPU (gloo)"
    print(f"starting {plan.nproc} {where} processes on node {plan.node_rank} of {plan.nodes}, "
          f"{plan.world_size} in all, meeting at {plan.addr}:{plan.port}", flush=True)
    with patched_environ(env):
        context = mp.start_processes(_worker, args=(entry, argv, plan), nprocs=plan.nproc, join=False,
                                     start_method="spawn")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _forward_sigterm(context.processes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the workers themselves
    try:
        while not context.join(grace_period=GRACE_SECONDS):
            pass
    except mp.ProcessExitedException:  # join has stopped the others
        raise SystemExit(exit_status([process.exitcode for process in context.processes])) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return True


@dataclass(frozen=True)
class ProcessShare:
    """The node-wide values the command line gave, by option name, for the run's record: a run repeated
    from its config.json splits them again."""

    typed: dict[str, int]

    def recorded(self, opt: argparse.Namespace) -> argparse.Namespace:
        return argparse.Namespace(**{**vars(opt), **self.typed})


def take_process_share(opt: argparse.Namespace) -> ProcessShare:
    """In a process this launcher started: its share of the node's --batch_size and --num_workers,
    as SemCKD (``int(batch_size / gpus)`` and ``ceil(num_workers / gpus)``). Elsewhere nothing changes."""
    typed = {name: getattr(opt, name) for name in SPLIT_OPTIONS}
    if not opt.multiprocessing_distributed or WORKER_ENV not in os.environ:
        return ProcessShare(typed)
    nproc = int(os.environ["LOCAL_WORLD_SIZE"])
    if opt.batch_size % nproc and os.environ.get("RANK") == "0":
        print(f"note: --batch_size {opt.batch_size} does not split evenly over {nproc} processes; each takes "
              f"{opt.batch_size // nproc}", file=sys.stderr)
    opt.batch_size //= nproc
    opt.num_workers = math.ceil(opt.num_workers / nproc)
    return ProcessShare(typed)
