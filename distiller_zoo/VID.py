"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019
(arXiv:1904.05835).

Maximises a variational lower bound on the mutual information between teacher and student maps:
the teacher map is modelled as a Gaussian whose mean a small 1x1-conv net predicts from the student
map and whose variance is a learnt per-channel constant; the loss is its negative log-likelihood.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match, stage_maps
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


class VIDLoss(nn.Module):
    """mean over B, C, H, W of 0.5 * ((mu(F_s) - F_t)^2 / var_c + log var_c), constant term dropped.

    mu = conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1 (no bias, no BN); var_c = softplus(log_scale_c)
    + eps, with ``log_scale`` set so that every var_c starts at ``init_pred_var``. Maps of different
    spatial size are average-pooled to the smaller one before the regressor.
    """

    def __init__(
        self,
        num_input_channels: int,
        num_mid_channel: int,
        num_target_channels: int,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.regressor = nn.Sequential(
            _conv1x1(num_input_channels, num_mid_channel),
            nn.ReLU(),
            _conv1x1(num_mid_channel, num_mid_channel),
            nn.ReLU(),
            _conv1x1(num_mid_channel, num_target_channels),
        )
        # inverse softplus of (init_pred_var - eps)
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((num_target_channels,), init))
        self.eps = eps

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input, target = pool_to_match(input, target)
        pred_mean = self.regressor(input)
        pred_var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        neg_log_prob = 0.5 * ((pred_mean - target) ** 2 / pred_var + torch.log(pred_var))
        return neg_log_prob.mean()


class VIDMethod(DistillMethod):
    """One :class:`VIDLoss` per stage map ``F[1:-1]``, paired position by position; losses summed.

    As RepDistiller, the hidden width is the teacher's channel count, and nets with different numbers
    of stages are paired by ``zip`` (the extra stages of the deeper list are ignored).
    """

    def __init__(self, channels_s: list[int], channels_t: list[int]):
        super().__init__()
        pairs = zip(channels_s, channels_t, strict=True)
        self.criterion = nn.ModuleList(VIDLoss(c_s, c_t, c_t) for c_s, c_t in pairs)

    def forward(self, batch: DistillBatch) -> Tensor:
        maps_s, maps_t = stage_maps(batch.feat_s, batch.feat_t, "VID")
        pairs = zip(maps_s, maps_t, self.criterion, strict=True)
        return sum(vid(f_s, f_t.detach()) for f_s, f_t, vid in pairs)


def build(ctx: MethodContext) -> VIDMethod:
    maps_s, maps_t = stage_maps(ctx.feat_s, ctx.feat_t, "VID")
    return VIDMethod([f.shape[1] for f in maps_s], [f.shape[1] for f in maps_t])


register(
    MethodSpec(
        name="vid",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="variational information distillation on the stage maps (Ahn et al. 2019)",
    )
)
