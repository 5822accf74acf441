"""ReviewKD: Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021
(arXiv:2104.09044); reference megvii-research/mdistiller (``mdistiller/distillers/ReviewKD.py``,
``configs/cifar100/reviewkd.yaml``), checked against the authors' dvlab-research/ReviewKD.

Each student level is matched not to the teacher's level alone but through a "review": working from
the deepest level (the pooled vector, as a 1x1 map) to the shallowest, an attention-based fusion (ABF)
module mixes the student's map with the fused result from the level below it, and its output is
compared with the teacher's pre-activation map of that level by the hierarchical context loss (HCL):
MSE at full resolution plus MSE of 4x4, 2x2 and 1x1 average pools.

mdistiller writes each pair's channel and size lists by hand (one CIFAR pair). Here
:func:`review_layout` derives them from the two networks' feature shapes, for any pair: the deepest
``n`` stage maps ``F[1:-1]`` of each network (``n`` the smaller count) plus the pooled vector.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import given_flags_tag, imagenet_recipe
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["ABF", "ReviewKD", "ReviewKDLayout", "hcl_loss", "review_layout"]

POOL_LEVELS = (4, 2, 1)  # HCL's pyramid, each used when smaller than the map
MAX_MID_CHANNEL = 512  # mdistiller's hard-coded cap (its MAX_MID_CHANNEL option is read but unused)


def hcl_loss(fstudent: list[Tensor], fteacher: list[Tensor]) -> Tensor:
    """Sum over levels of HCL: MSE of the maps plus MSE of their l x l average pools for l in (4, 2, 1)
    smaller than the map, weighted 1/2, 1/4, ... in the order used, divided by the total weight."""
    total = fstudent[0].new_zeros(())
    for fs, ft in zip(fstudent, fteacher, strict=True):
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for size in POOL_LEVELS:
            if size >= fs.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            weights += weight
        total = total + loss / weights
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student level with the fused map from the level below.

    ``x`` -> 1x1 conv + BN to ``mid_channel``; with ``fuse``, the residual ``y`` is upsampled (nearest) to
    ``shape`` and the two are mixed by per-pixel weights from a 1x1 conv + sigmoid on their concatenation;
    the result is resized (nearest) to ``out_shape`` when it differs and returned as the next residual,
    and a 3x3 conv + BN maps it to ``out_channel`` for the loss. mdistiller's constructor and forward.
    """

    def __init__(self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channel))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channel, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        for conv in (self.conv1[0], self.conv2[0]):
            nn.init.kaiming_uniform_(conv.weight, a=1)

    def forward(self, x: Tensor, y: Tensor | None = None, shape: int | None = None,
                out_shape: int | None = None) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, :1] + y * z[:, 1:]
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


@dataclass(frozen=True)
class ReviewKDLayout:
    """mdistiller's REVIEWKD lists: channels shallowest level first, sizes deepest (the pooled 1) first."""

    in_channels: list[int]
    out_channels: list[int]
    shapes: list[int]
    out_shapes: list[int]


def _levels(feats: list[Tensor], n: int) -> list[Tensor]:
    """The deepest ``n`` stage maps of ``F[1:-1]`` and the pooled vector ``F[-1]`` as a 1x1 map, shallowest first."""
    return [*feats[1:-1][len(feats) - 2 - n:], feats[-1].reshape(*feats[-1].shape, 1, 1)]


def review_layout(feat_s: list[Tensor], feat_t: list[Tensor]) -> ReviewKDLayout:
    """The lists for this pair, from the feature shapes of one forward of each network.

    Levels: the deepest ``n`` stage maps of each network (``n`` the smaller of their counts, so a
    4-stage net facing a 3-stage one drops its shallowest) and the pooled vectors. Raises ValueError
    when a network has no square 4-D stage map or no pooled vector.
    """
    for feats in (feat_s, feat_t):
        maps = feats[1:-1]
        if not maps or any(f.dim() != 4 or f.shape[2] != f.shape[3] for f in maps) or feats[-1].dim() != 2:
            raise ValueError("reviewkd needs square 4-D stage maps F[1:-1] and a pooled vector F[-1] from both "
                             "networks")
    n = min(len(feat_s), len(feat_t)) - 2
    levels_s, levels_t = _levels(feat_s, n), _levels(feat_t, n)
    return ReviewKDLayout(
        in_channels=[f.shape[1] for f in levels_s],
        out_channels=[f.shape[1] for f in levels_t],
        shapes=[f.shape[2] for f in reversed(levels_s)],
        out_shapes=[f.shape[2] for f in reversed(levels_t)],
    )


class ReviewKD(DistillMethod):
    """mdistiller's ReviewKD distiller as this toolkit's method term: ``min(epoch / warmup, 1) * HCL``.

    The spec asks the teacher for its pre-activation features (mdistiller's teacher taps) and the student
    for the features mdistiller's ``STU_PREACT`` names: its own post-activation maps by default on CIFAR
    (for a WRN student the raw residual sums, which feed no ReLU of their own), the pre-activation maps
    with --dataset imagenet or ``--reviewkd_stu_preact``. Each network has its own switch
    (``MethodSpec.student_preact``), so the maps are the network's as mdistiller's are, for every pair.
    """

    def __init__(self, in_channels: list[int], out_channels: list[int], shapes: list[int], out_shapes: list[int],
                 warmup_epochs: int = 20):
        super().__init__()
        self.shapes, self.out_shapes = list(shapes), list(out_shapes)
        self.warmup_epochs = warmup_epochs
        mid_channel = min(MAX_MID_CHANNEL, in_channels[-1])
        last = len(in_channels) - 1
        abfs = [ABF(c_in, mid_channel, c_out, i < last) for i, (c_in, c_out) in
                enumerate(zip(in_channels, out_channels, strict=True))]
        self.abfs = nn.ModuleList(abfs[::-1])  # deepest (the pooled level, no fusion) first, as mdistiller

    def student_levels(self, feat_s: list[Tensor]) -> list[Tensor]:
        return _levels(feat_s, len(self.abfs) - 1)

    def review(self, levels: list[Tensor]) -> list[Tensor]:
        """The ABF outputs for the student's levels (shallowest first), fused from the deepest up."""
        deepest_first = levels[::-1]
        out, residual = self.abfs[0](deepest_first[0], out_shape=self.out_shapes[0])
        results = [out]
        for x, abf, shape, out_shape in zip(deepest_first[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:],
                                            strict=True):
            out, residual = abf(x, residual, shape, out_shape)
            results.insert(0, out)
        return results

    def forward(self, batch: DistillBatch) -> Tensor:
        results = self.review(self.student_levels(batch.feat_s))
        teacher = [f.detach() for f in _levels(batch.feat_t, len(self.abfs) - 1)]
        ramp = min(batch.epoch / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return ramp * hcl_loss(results, teacher)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--reviewkd_warmup", type=int, default=None,
                       help="ReviewKD: epochs of linear warm-up (default: mdistiller's 20, 1 with --dataset imagenet)")
    group.add_argument("--reviewkd_stu_preact", action=argparse.BooleanOptionalAction, default=None,
                       help="ReviewKD: feed the student's pre-activation stage maps to the fusion modules "
                            "(default: mdistiller's STU_PREACT, off on CIFAR, on with --dataset imagenet)")


def build(ctx: MethodContext) -> ReviewKD:
    opt = ctx.opt
    imagenet = imagenet_recipe(opt)
    warmup = opt.reviewkd_warmup if opt.reviewkd_warmup is not None else (1 if imagenet else 20)
    if warmup < 0:
        raise ValueError(f"--reviewkd_warmup must not be negative, got {warmup}")
    layout = review_layout(ctx.feat_s, ctx.feat_t)
    return ReviewKD(layout.in_channels, layout.out_channels, layout.shapes, layout.out_shapes, warmup_epochs=warmup)


def student_preact(opt: argparse.Namespace) -> bool:
    """mdistiller's STU_PREACT: off in its CIFAR configs, on in its ImageNet ones; the flag overrides."""
    return opt.reviewkd_stu_preact if opt.reviewkd_stu_preact is not None else imagenet_recipe(opt)


register(
    MethodSpec(
        name="reviewkd",
        build=build,
        # mdistiller configs/cifar100/reviewkd.yaml: CE 1, REVIEWKD_WEIGHT 5 (ImageNet R34 -> R18: 1, R50 -> MV1: 8)
        weights=Weights(gamma=1.0, alpha=0.0, beta=5.0),
        preact=True,
        student_preact=student_preact,
        add_args=add_args,
        run_tag=given_flags_tag(reviewkd_warmup=None, reviewkd_stu_preact=None),
        summary="knowledge review: attention-based fusion of the student's levels, hierarchical context loss "
                "(Chen et al. 2021)",
    )
)
