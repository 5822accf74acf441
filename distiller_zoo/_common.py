"""Helpers shared by several distillation methods."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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
