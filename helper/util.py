"""RepDistiller's small training utilities, under their original names."""

from __future__ import annotations

import argparse

import torch
from torch import Tensor


class AverageMeter:
    """Running average of a scalar, weighted by batch size."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)


def accuracy(output: Tensor, target: Tensor, topk: tuple[int, ...] = (1,)) -> list[Tensor]:
    """Top-k accuracies in percent; k is capped at the number of classes."""
    with torch.no_grad():
        maxk = min(max(topk), output.shape[1])
        _, pred = output.topk(maxk, 1, True, True)
        correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
        return [correct[: min(k, maxk)].reshape(-1).float().sum().mul_(100.0 / target.shape[0]) for k in topk]


def lr_at_epoch(epoch: int, opt: argparse.Namespace) -> float:
    """Step decay: ``learning_rate * lr_decay_rate ** (#decay epochs strictly below epoch)``."""
    steps = sum(epoch > milestone for milestone in opt.lr_decay_epochs)
    return opt.learning_rate * (opt.lr_decay_rate**steps)


def adjust_learning_rate(epoch: int, opt: argparse.Namespace, optimizer: torch.optim.Optimizer) -> float:
    """Set the step-decayed learning rate for ``epoch`` (1-indexed, as RepDistiller)."""
    lr = lr_at_epoch(epoch, opt)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
