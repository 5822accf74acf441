"""CRD's loss: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020
(arXiv:1910.10699), with RepDistiller's class names and constructor signatures.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from crd.memory import ContrastMemory
from models.util import Embed  # Linear then L2 normalisation, the same head as RepDistiller's copy here

__all__ = ["CRDLoss", "ContrastLoss", "Embed", "eps"]

eps = 1e-7


class CRDLoss(nn.Module):
    """Both directions of CRD: student anchor against the teacher bank, and teacher anchor against
    the student bank, on embeddings ``embed_s(f_s)``, ``embed_t(f_t)`` of the pooled features.

    ``opt`` provides ``s_dim``, ``t_dim`` (feature sizes), ``feat_dim`` (embedding size),
    ``n_data`` (bank rows = training-set size), ``nce_k`` (negatives), ``nce_t`` (temperature)
    and ``nce_m`` (bank momentum), as in RepDistiller.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.embed_s = Embed(opt.s_dim, opt.feat_dim)
        self.embed_t = Embed(opt.t_dim, opt.feat_dim)
        self.contrast = ContrastMemory(opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m)
        self.criterion_t = ContrastLoss(opt.n_data)
        self.criterion_s = ContrastLoss(opt.n_data)

    def forward(self, f_s: Tensor, f_t: Tensor, idx: Tensor, contrast_idx: Tensor | None = None) -> Tensor:
        """``idx``: the batch's dataset indices ``[B]``; ``contrast_idx``: ``[B, K+1]``, positive first
        (drawn by the memory's sampler when None)."""
        # exp(score / 0.07) reaches 1.6e6: past float16's range, so never under autocast.
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s = self.embed_s(f_s.float())
            v_t = self.embed_t(f_t.float())
            out_s, out_t = self.contrast(v_s, v_t, idx, contrast_idx)
            return self.criterion_s(out_s) + self.criterion_t(out_t)


class ContrastLoss(nn.Module):
    """NCE loss of Eq. (18) with noise ``P_n = 1/n_data`` and ``m = K`` noise samples per positive.

    For scores ``x`` of shape ``[B, K+1]`` (or ``[B, K+1, 1]``), positive in column 0:
    ``-(1/B) [sum_b log(x_b0 / (x_b0 + m P_n + eps)) + sum_b sum_k log(m P_n / (x_bk + m P_n + eps))]``.
    Returns a 0-d tensor (RepDistiller's has shape ``[1]``; both behave alike in arithmetic).
    """

    def __init__(self, n_data: int):
        super().__init__()
        self.n_data = n_data

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        noise = (x.shape[1] - 1) / float(self.n_data)
        log_d1 = torch.log(x[:, 0] / (x[:, 0] + noise + eps))
        log_d0 = torch.log(noise / (x[:, 1:] + noise + eps))
        return -(log_d1.sum() + log_d0.sum()) / x.shape[0]
