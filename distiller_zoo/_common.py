"""Helpers shared by several distillation methods."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext
from models.classifier import find_classifier


def pool_to_match(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the spatially larger of two maps down to the other's size.

    As RepDistiller, the heights decide which map is larger; the target is the smaller map's
    (H, W), which equals RepDistiller's square (H, H) target on square maps.
    """
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, f_t.shape[2:])
    elif h_s < h_t:
        f_t = F.adaptive_avg_pool2d(f_t, f_s.shape[2:])
    return f_s, f_t


def opt_with_dims(ctx: MethodContext) -> argparse.Namespace:
    """A copy of the options plus ``s_dim``/``t_dim`` (pooled feature sizes) and ``n_data``, as the
    ``opt`` that RepDistiller-style losses (CRD and its descendants) read; the caller's opt is left alone."""
    dims = {"s_dim": ctx.feat_s[-1].shape[1], "t_dim": ctx.feat_t[-1].shape[1], "n_data": ctx.n_data}
    return argparse.Namespace(**{**vars(ctx.opt), **dims})


def imagenet_recipe(opt: argparse.Namespace) -> bool:
    """Whether a method takes its reference's ImageNet settings rather than its CIFAR ones (mdistiller's DKD and
    ReviewKD warm-ups and temperatures, DIST's and MLLD's temperatures): a ``--dataset imagenet`` run."""
    return getattr(opt, "dataset", None) == "imagenet"


def given_flags_tag(**defaults: object) -> Callable[[argparse.Namespace], str]:
    """A ``run_tag`` naming each of the method's flags whose value is not its default (``None``: not given,
    the setting then coming from the reference's table), so those variants do not share a run folder."""

    def tag(opt: argparse.Namespace) -> str:
        return "".join(f"_{flag}:{getattr(opt, flag)}" for flag, default in defaults.items()
                       if getattr(opt, flag, default) != default)

    return tag


def standardize(x: Tensor, dim: int, eps: float = 1e-12) -> Tensor:
    """``(x - mean) / std`` along ``dim`` with the unbiased std, as ``torch.std`` computes it.

    A constant slice (std 0) becomes zeros instead of NaN: its centred values are exactly 0, so
    flooring the std at ``eps`` changes nothing else.
    """
    centred = x - x.mean(dim, keepdim=True)
    return centred / x.std(dim, keepdim=True).clamp_min(eps)


def stage_maps(feat_s: list[Tensor], feat_t: list[Tensor], method: str) -> tuple[list[Tensor], list[Tensor]]:
    """The paired stage maps ``F[1:-1]`` of both nets (``zip`` pairing, as RepDistiller).

    Raises ValueError when either net has no 4-D stage map to tap.
    """
    maps_s, maps_t = feat_s[1:-1], feat_t[1:-1]
    if not maps_s or not maps_t or any(f.dim() != 4 for f in (*maps_s, *maps_t)):
        raise ValueError(f"{method} needs 4-D stage feature maps F[1:-1] from both networks")
    n = min(len(maps_s), len(maps_t))
    return maps_s[:n], maps_t[:n]


class SummedGroupLoss(DistillMethod):
    """Feeds the maps ``F[taps]`` of both nets to a RepDistiller-style group criterion
    (lists of maps in, list of per-position losses out) and sums the losses, as RepDistiller's loop.

    The teacher's maps are detached here so no criterion can send gradient into the teacher.
    """

    def __init__(self, criterion: nn.Module, taps: slice):
        super().__init__()
        self.criterion = criterion
        self.taps = taps

    def forward(self, batch: DistillBatch) -> Tensor:
        g_s = batch.feat_s[self.taps]
        g_t = [f.detach() for f in batch.feat_t[self.taps]]
        return sum(self.criterion(g_s, g_t), batch.logit_s.new_zeros(()))


def frozen_teacher_classifier(ctx: MethodContext) -> nn.Linear:
    """A frozen copy of the teacher's classifier (SRRL, SimKD reuse it): held by the method, so it moves,
    saves and exports with it; it never trains, and the teacher's own weights get no gradient through it."""
    name = find_classifier(ctx.teacher, ctx.feat_t[-1], ctx.logit_t)
    return copy.deepcopy(ctx.teacher.get_submodule(name)).requires_grad_(False)
