"""Setting a run up: device, precision, seed, process group, loaders and networks on the device."""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dataset import DataBundle
from dataset.loaders import make_train_loader, make_val_loader
from helper.distributed import DistInfo, broadcast_int, init_distributed
from helper.precision import autocast, grad_scaler, resolve_device, resolve_precision
from helper.rng import seed_everything
from helper.sampler import ResumableSampler


@dataclass
class Runtime:
    device: torch.device
    precision: str
    info: DistInfo
    channels_last: bool

    def autocast(self):
        return autocast(self.device, self.precision)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return grad_scaler(self.device, self.precision)


def setup_runtime(opt: argparse.Namespace) -> Runtime:
    """Device, process group, precision and seed, chosen once for the whole run."""
    device = resolve_device(opt.device)
    info, device = init_distributed(device)
    if opt.seed is None:
        opt.seed = broadcast_int(random.SystemRandom().randrange(2**31), info, device)
    seed_everything(opt.seed + info.rank)
    precision = resolve_precision(opt.precision, device)
    runtime = Runtime(device, precision, info, opt.channels_last)
    if info.is_main:
        ranks = f", {info.world_size} processes" if info.enabled else ""
        print(f"device {device}, precision {precision}, channels_last {opt.channels_last}, seed {opt.seed}{ranks}")
    return runtime


class EpochLoader:
    """A DataLoader over a ResumableSampler: ``set_position`` picks the epoch and the first batch."""

    def __init__(self, loader: DataLoader, sampler: ResumableSampler, batch_size: int):
        self.loader, self.sampler, self.batch_size = loader, sampler, batch_size

    def set_position(self, epoch: int, start_batch: int) -> None:
        self.sampler.set_position(epoch, start_batch * self.batch_size)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        """Batches in a whole epoch, wherever it starts."""
        return math.ceil(self.sampler.num_samples / self.batch_size)


def build_train_loader(opt: argparse.Namespace, bundle: DataBundle, variant: str, rt: Runtime) -> EpochLoader:
    """The training batches: (img, target[, index[, contrast_idx]]) per ``variant``."""
    sampler = ResumableSampler(bundle.train, num_replicas=rt.info.world_size, rank=rt.info.rank, seed=opt.seed)
    loader = make_train_loader(bundle, variant, opt.batch_size, opt.num_workers, sampler=sampler,
                               nce_k=getattr(opt, "nce_k", 16384), mode=getattr(opt, "mode", "exact"))
    return EpochLoader(loader, sampler, opt.batch_size)


def build_val_loader(opt: argparse.Namespace, bundle: DataBundle, rt: Runtime) -> DataLoader:
    """Test batches at half the training batch size (as RepDistiller), each rank a strided shard."""
    shard = range(rt.info.rank, len(bundle.val), rt.info.world_size) if rt.info.enabled else None
    return make_val_loader(bundle, max(opt.batch_size // 2, 1), opt.num_workers, sampler=shard)


def place_model(model: nn.Module, rt: Runtime) -> nn.Module:
    """On the device, in channels_last when asked."""
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def wrap_ddp(model: nn.Module, rt: Runtime, sync_bn: bool, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel under torchrun (optionally with SyncBatchNorm); the model itself otherwise."""
    if not rt.info.enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused)
