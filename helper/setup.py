"""Setting a run up: device, precision, seed, process group, loaders and networks on the device."""

from __future__ import annotations

import argparse
import atexit
import math
import random
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dataset import DataBundle
from dataset.dali import DaliLoader, dali_loader
from dataset.loaders import make_train_loader, make_val_loader
from dataset.memory import MemoryLoader
from helper.compile import compile_module, compile_setting
from helper.distributed import DistInfo, broadcast_int, init_distributed, quiet_non_main, shutdown
from helper.errors import UserError
from helper.precision import autocast, grad_scaler, resolve_device, resolve_precision
from helper.rng import seed_everything
from helper.sampler import ResumableSampler, SeededItems, SeededSampler


@dataclass
class Runtime:
    device: torch.device
    precision: str
    info: DistInfo
    channels_last: bool
    compile: bool = False  # --compile on; auto is decided per run by helper.compile.plan_compile
    compile_mode: str = "default"

    def autocast(self):
        return autocast(self.device, self.precision)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return grad_scaler(self.device, self.precision)


def configure_cuda(device: torch.device) -> None:
    """On a GPU: make it this process's current device (pinned-memory threads, capability queries and
    new tensors otherwise open a context on GPU 0), and let cuDNN pick the fastest convolution
    algorithms, as RepDistiller does: every batch but an epoch's last has the same shape."""
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True


def setup_runtime(opt: argparse.Namespace) -> Runtime:
    """Device, process group, precision and seed, chosen once for the whole run."""
    device = resolve_device(opt.device)
    info, device = init_distributed(device)
    atexit.register(shutdown, info)
    quiet_non_main(info)
    configure_cuda(device)
    if opt.sync_bn and info.enabled and device.type == "cpu":
        raise UserError("--sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU (gloo)")
    if opt.seed is None:
        opt.seed = broadcast_int(random.SystemRandom().randrange(2**31), info, device)
    seed_everything(opt.seed + info.rank)
    precision = resolve_precision(opt.precision, device)
    runtime = Runtime(device, precision, info, opt.channels_last, compile_setting(opt.compile) == "on",
                      getattr(opt, "compile_mode", "default"))
    if info.is_main:
        ranks = f", {info.world_size} processes" if info.enabled else ""
        print(f"device {device}, precision {precision}, channels_last {opt.channels_last}, seed {opt.seed}{ranks}")
    return runtime


class EpochLoader:
    """A DataLoader over a :class:`SeededSampler`: ``set_position`` picks the epoch and the first batch.

    Each item is augmented from its own seed (epoch and position), so a run resumed mid-epoch, with
    or without workers, draws the same augmentations as the original.
    """

    def __init__(self, loader: DataLoader, sampler: SeededSampler, batch_size: int):
        self.loader, self.sampler, self.batch_size = loader, sampler, batch_size

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.sampler.set_position(epoch, start_batch * self.batch_size)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        """Batches in a whole epoch, wherever it starts."""
        return math.ceil(self.sampler.num_samples / self.batch_size)


def loader_kind(opt: argparse.Namespace, bundle: DataBundle) -> str:
    """``--loader auto``: the in-memory path where the data set comes as arrays, torchvision's otherwise."""
    if opt.loader == "auto":
        return "memory" if bundle.train_array is not None else "torchvision"
    if opt.loader == "memory" and bundle.train_array is None:
        raise UserError(f"--loader memory needs a data set held in memory (CIFAR, synthetic); {bundle.name} is "
                        "read from files: use --loader torchvision")
    return opt.loader


def build_train_loader(opt: argparse.Namespace, bundle: DataBundle, variant: str,
                       rt: Runtime, augment: bool = True) -> EpochLoader | MemoryLoader | DaliLoader:
    """The training batches: (img, target[, index[, contrast_idx]]) per ``variant``; ``augment=False``
    gives the images without the random crop and flip (a method that augments on the device)."""
    nce_k, mode = getattr(opt, "nce_k", 16384), getattr(opt, "mode", "exact")
    if getattr(opt, "dali", None):
        print(f"data: DALI ({opt.dali}) loader")
        return dali_loader(opt, bundle, rt.device, rt.info.rank, rt.info.world_size, train=True, variant=variant,
                           augment=augment)
    kind = loader_kind(opt, bundle)
    print(f"data: {kind} loader")
    if kind == "memory":
        return MemoryLoader(*bundle.train_array, bundle.mean, bundle.std, device=rt.device,
                            batch_size=opt.batch_size, variant=variant, channels_last=rt.channels_last,
                            seed=opt.seed, rank=rt.info.rank, world_size=rt.info.world_size, nce_k=nce_k, mode=mode,
                            augment=augment)
    sampler = SeededSampler(ResumableSampler(bundle.train, num_replicas=rt.info.world_size, rank=rt.info.rank,
                                             seed=opt.seed))
    loader = make_train_loader(bundle, variant, opt.batch_size, opt.num_workers, sampler=sampler, nce_k=nce_k,
                               mode=mode, augment=augment, wrap=SeededItems)
    return EpochLoader(loader, sampler, opt.batch_size)


def build_val_loader(opt: argparse.Namespace, bundle: DataBundle,
                     rt: Runtime) -> DataLoader | MemoryLoader | DaliLoader:
    """Test batches at half the training batch size (as RepDistiller), each rank a strided shard."""
    batch_size = max(opt.batch_size // 2, 1)
    if getattr(opt, "dali", None):
        return dali_loader(opt, bundle, rt.device, rt.info.rank, rt.info.world_size, train=False)
    if loader_kind(opt, bundle) == "memory" and bundle.val_array is not None:
        return MemoryLoader(*bundle.val_array, bundle.mean, bundle.std, device=rt.device, batch_size=batch_size,
                            train=False, channels_last=rt.channels_last, rank=rt.info.rank,
                            world_size=rt.info.world_size)
    shard = range(rt.info.rank, len(bundle.val), rt.info.world_size) if rt.info.enabled else None
    return make_val_loader(bundle, batch_size, opt.num_workers, sampler=shard)


class CompileClock:
    """Wall seconds torch.compile has spent compiling, from dynamo's compile start/end callbacks (they
    cover traced frames and backward graphs compiled lazily at the first backward), so the epoch
    times can leave compilation out and report it apart."""

    def __init__(self):
        self.seconds = 0.0
        self._started: float | None = None
        self._watching = False

    def watch(self) -> None:
        if not self._watching:
            torch._dynamo.callback_handler.register_start_callback(self._start)
            torch._dynamo.callback_handler.register_end_callback(self._end)
            self._watching = True

    def _start(self, _args) -> None:
        self._started = time.perf_counter()

    def _end(self, _args) -> None:
        self.seconds += time.perf_counter() - self._started


compile_clock = CompileClock()


def place_model(model: nn.Module, rt: Runtime, name: str = "the network") -> nn.Module:
    """On the device, in channels_last when asked, compiled in place when ``rt.compile`` (the module
    stays itself, so its state_dict keys and RepDistiller's checkpoint files do not change; ``name``
    labels it in the line printed if compiling fails and it runs eagerly)."""
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.compile:
        compile_clock.watch()
        compile_module(model, name, rt.compile_mode)
    return model


class ModelDDP(DistributedDataParallel):
    """DistributedDataParallel that still answers the model's own helpers (``get_feat_modules``, which an
    init stage calls to put the student's trunk in train mode)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def wrap_ddp(model: nn.Module, rt: Runtime, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel under torchrun (optionally with SyncBatchNorm); the model itself otherwise."""
    if not rt.info.enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return ModelDDP(model, device_ids=device_ids)
