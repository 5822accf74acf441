"""KDSVD: Lee, Kim & Song, "Self-supervised Knowledge Distillation Using Singular Value
Decomposition", ECCV 2018 (arXiv:1807.06819).

Compresses each stage map to its dominant right-singular vectors (one per map for the teacher),
then transfers the RBF correlation between the vectors of consecutive stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import SummedGroupLoss, stage_maps
from distiller_zoo.registry import MethodContext, MethodSpec, Weights, register


class KDSVD(nn.Module):
    """Per consecutive pair of positions (i-1, i): sum of (R_s - R_t)^2 / B, with
    R = exp(-(v_i[:, :, None] - v_{i-1}[:, None, :])^2 / 8) between the channels of the two
    positions' singular vectors (the teacher's top ``k``, the student's top ``k + 3`` aligned to
    them), both scaled by the teacher's normalised singular values. Needs C_s = C_t per position.
    """

    def __init__(self, k: int = 1):
        super().__init__()
        self.k = k

    def forward(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        losses = []
        prev_s = prev_t = None
        for f_s, f_t in zip(g_s, g_t, strict=False):
            _, s_t, v_t = self.svd(f_t, self.k)
            _, _, v_s = self.svd(f_s, self.k + 3)
            v_s, v_t = self.align_rsv(v_s, v_t)
            s_t = s_t.unsqueeze(1)
            v_t, v_s = v_t * s_t, v_s * s_t
            if prev_s is not None:
                rbf_s = torch.exp(-(v_s.unsqueeze(2) - prev_s.unsqueeze(1)).pow(2) / 8)
                rbf_t = torch.exp(-(v_t.unsqueeze(2) - prev_t.unsqueeze(1)).pow(2) / 8)
                losses.append(self.removenan((rbf_s - rbf_t.detach()).pow(2)).sum())
            prev_s, prev_t = v_s, v_t
        bsz = g_s[0].shape[0]
        return [loss / bsz for loss in losses]

    def svd(self, feat: Tensor, n: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """Top-``n`` U (B x HW x n), S (B x n), V (B x C x n) of the B x HW x C map, columns and S
        L2-normalised, non-finite values zeroed (as the paper's code and RepDistiller).

        H*W is used where RepDistiller writes H*H: identical on the square maps it supports.
        """
        if feat.dim() != 4:
            raise ValueError(f"KDSVD needs B x C x H x W maps, got shape {tuple(feat.shape)}")
        x = feat.flatten(2).transpose(1, 2)
        if x.requires_grad:
            x.register_hook(self.removenan)
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        u, s, v = self.removenan(u), self.removenan(s), self.removenan(vh.mH)
        if n > 0:
            u = F.normalize(u[:, :, :n], dim=1)
            s = F.normalize(s[:, :n], dim=1)
            v = F.normalize(v[:, :, :n], dim=1)
        return u, s, v

    @staticmethod
    def removenan(x: Tensor) -> Tensor:
        """Non-finite entries to 0. Also hooked on the SVD input's gradient: SVD's backward divides
        by gaps between singular values, so a degenerate map (all zeros, rank < k + 3) would send
        NaN into the student. RepDistiller lets it through; the paper's code guards its SVD gradient
        against such gaps, and we zero what is left non-finite.
        """
        return torch.where(torch.isfinite(x), x, torch.zeros_like(x))

    @staticmethod
    def align_rsv(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """For each column of ``b``, the column(s) of ``a`` with the largest |cosine|, sign-corrected."""
        cosine = a.transpose(-2, -1) @ b
        max_abs = cosine.abs().max(dim=1, keepdim=True).values
        mask = torch.where(max_abs == cosine.abs(), torch.sign(cosine), torch.zeros_like(cosine))
        return a @ mask, b


def build(ctx: MethodContext) -> SummedGroupLoss:
    maps_s, maps_t = stage_maps(ctx.feat_s, ctx.feat_t, "KDSVD")
    channels_s = [f.shape[1] for f in maps_s]
    channels_t = [f.shape[1] for f in maps_t]
    if channels_s != channels_t:
        raise ValueError(
            f"KDSVD needs equal student/teacher channels at every stage map, got student {channels_s} "
            f"and teacher {channels_t}; pick a pair of the same width (e.g. resnet32 -> resnet8)"
        )
    return SummedGroupLoss(KDSVD(), taps=slice(1, -1))


# No RepDistiller script line for KDSVD: beta 1 is mdistiller's weight, with CE 1 and no KD term.
register(
    MethodSpec(
        name="kdsvd",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="SVD-based self-supervised KD on consecutive stage maps (Lee et al. 2018)",
        aliases=("svd",),  # KamalEngine's --distill svd
    )
)
