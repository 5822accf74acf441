"""MLKD: Ding, Yang, Hu, Krovi, Luo, "Multi-level Knowledge Distillation via Knowledge Alignment and
Correlation", arXiv:2012.00573 (reference: ifding/DLKD).

Every training image becomes four views (a shared flip, rotations by 0/90/180/270 degrees, each view
cropped on its own; :mod:`dataset.views`), both networks see all of them, and three terms on the pooled
features ``F[-1]`` replace the KD term:

* correlation (``-a``, DLKD's re-use of the KD slot): how each rotated view relates to every original
  view, the student's through an MLP head, matched to the teacher's by a KL divergence at T = 0.5;
* supervised contrastive (``-b``): both networks' embeddings, positives all views of the same class;
* alignment (``-d/--delta``): an MLP head maps the student's feature onto the teacher's direction.

Cross-entropy sees the original (unrotated) views only; evaluation uses plain test images, as DLKD.
Loss and head classes keep DLKD's names and constructors (``helper/losses.py``, ``models/mlp_head.py``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dataset.views import VIEWS, rotated_views
from distiller_zoo.registry import (
    DistillBatch,
    DistillMethod,
    LossFn,
    MethodContext,
    MethodSpec,
    Weights,
    flag_tag,
    register,
)
from models.util import Embed

__all__ = ["AlignLoss", "CorrLoss", "Embed", "MLKDMethod", "MLPHead", "SupConLoss"]

eps = 1e-7  # DLKD's, inside the contrastive log


class MLPHead(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear (BYOL's projection head, DLKD's ``models/mlp_head.py``)."""

    def __init__(self, in_channels: int, mlp_hidden_size: int, projection_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, mlp_hidden_size),
            nn.BatchNorm1d(mlp_hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(mlp_hidden_size, projection_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _original_rows(n: int, device: torch.device) -> Tensor:
    """Rows holding view 0 (the unrotated one) of a sample-major batch of ``n`` = 4B views."""
    if n % VIEWS:
        raise ValueError(f"MLKD needs {VIEWS} views per sample (a batch of 4B rows), got {n} rows")
    return torch.arange(n, device=device) % VIEWS == 0


class CorrLoss(nn.Module):
    """KL(softmax(S_t / T) || softmax(S_s / T)), batch-mean over the 3B rotated views.

    S[i, j] is the cosine similarity of rotated view i with original view j (3B x B), on the raw
    teacher features and on ``mlp(f_s)`` for the student (``mlp``: s_dim -> s_dim -> s_dim).
    """

    def __init__(self, opt: argparse.Namespace, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature
        self.mlp = MLPHead(in_channels=opt.s_dim, mlp_hidden_size=opt.s_dim, projection_size=opt.s_dim)

    @staticmethod
    def similarity(feat: Tensor) -> Tensor:
        """Cosine similarity of every rotated view (rows) with every original view (columns)."""
        original = _original_rows(feat.shape[0], feat.device)
        unit = F.normalize(feat, dim=1, eps=1e-8)  # F.cosine_similarity's eps
        return unit[~original] @ unit[original].T

    def forward(self, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        s_simi = self.similarity(self.mlp(feat_s))
        t_simi = self.similarity(feat_t).detach()
        log_p_s = F.log_softmax(s_simi / self.temperature, dim=1)
        p_t = F.softmax(t_simi / self.temperature, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="batchmean")


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020) over both networks' embeddings.

    Anchors are all 2N embeddings (N student rows, then N teacher rows); an anchor's positives are
    the other rows with its label (``labels``) or marked in ``mask`` (N x N, tiled to 2N x 2N), or only
    its counterpart in the other network when neither is given. The anchor itself is left out of its
    denominator. Loss: -(T / base_T) * mean over anchors of the mean log-probability of its positives.
    """

    def __init__(self, opt: argparse.Namespace, temperature: float = 0.07, contrast_mode: str = "all",
                 base_temperature: float = 0.07):
        super().__init__()
        if contrast_mode != "all":
            raise ValueError(f"SupConLoss supports contrast_mode 'all' only (as DLKD), got '{contrast_mode}'")
        self.temperature, self.contrast_mode, self.base_temperature = temperature, contrast_mode, base_temperature
        self.embed_s = Embed(opt.s_dim, opt.feat_dim)
        self.embed_t = Embed(opt.t_dim, opt.feat_dim)

    def forward(self, feat_s: Tensor, feat_t: Tensor, labels: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        n = feat_s.shape[0]
        if labels is not None and mask is not None:
            raise ValueError("give SupConLoss labels or a mask, not both")
        if labels is not None:
            if labels.numel() != n:
                raise ValueError(f"{labels.numel()} labels for {n} features")
            mask = labels.reshape(-1, 1) == labels.reshape(1, -1)
        elif mask is None:
            mask = torch.eye(n, dtype=torch.bool, device=feat_s.device)
        anchors = torch.cat([self.embed_s(feat_s), self.embed_t(feat_t)])
        logits = anchors @ anchors.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # for stability
        others = ~torch.eye(2 * n, dtype=torch.bool, device=feat_s.device)
        positives = mask.to(logits.dtype).repeat(2, 2) * others
        denominator = (logits.exp() * others).sum(1, keepdim=True)
        log_prob = logits - torch.log(denominator + eps)
        mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


class AlignLoss(nn.Module):
    """2 - 2 * mean cos(mlp(f_s), f_t): the student's feature, through an MLP (s_dim -> 16 t_dim -> t_dim),
    points where the teacher's does (BYOL's regression loss)."""

    def __init__(self, opt: argparse.Namespace, p: int = 2):
        super().__init__()
        self.p = p
        self.mlp = MLPHead(in_channels=opt.s_dim, mlp_hidden_size=16 * opt.t_dim, projection_size=opt.t_dim)

    def forward(self, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        feat_s = F.normalize(self.mlp(feat_s), dim=-1, p=self.p)
        feat_t = F.normalize(feat_t, dim=-1, p=self.p)
        return 2 - 2 * (feat_s * feat_t).sum(dim=-1).mean()


class MLKDMethod(DistillMethod):
    """Builds the four views per sample on the device, then CE on the originals plus the three terms.

    Terms: 'cls' (-r), 'div' the correlation (-a, DLKD's re-use of the KD slot), 'kd' the supervised
    contrastive term (-b), 'align' (-d). No Hinton KD term is computed.
    """

    def __init__(self, opt: argparse.Namespace, mean: tuple[float, ...], std: tuple[float, ...], delta: float):
        super().__init__()
        self.criterion_corr = CorrLoss(opt, temperature=0.5)
        self.criterion_kd = SupConLoss(opt, temperature=0.07)
        self.criterion_align = AlignLoss(opt)
        self.extra_weights = {"align": delta}
        # moved to the device with the method, not saved with it
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor]:
        """(img, target, ...) of B samples -> 4B views; per-sample fields repeated, sample-major."""
        views = rotated_views(batch[0], self.mean, self.std)
        return [views, *(t.repeat_interleave(VIEWS, dim=0) for t in batch[1:])]

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion_kd(batch.feat_s[-1], batch.feat_t[-1].detach(), batch.target)

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        f_s, f_t = batch.feat_s[-1], batch.feat_t[-1].detach()
        original = _original_rows(f_s.shape[0], f_s.device)
        logits = batch.logit_s[original]  # one row per loader sample, in its order
        return logits, {
            "cls": ce(logits, batch.target[original]),
            "div": self.criterion_corr(f_s, f_t),
            "kd": self(batch),
            "align": self.criterion_align(f_s, f_t),
        }


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-d", "--delta", type=float, default=20.0,
                       help="MLKD: weight of the alignment loss (DLKD's CIFAR scripts: 20; ImageNet: 10). "
                            "For mlkd -a weighs the correlation loss and -b the supervised contrastive one")


def build(ctx: MethodContext) -> MLKDMethod:
    opt = ctx.opt
    if opt.delta < 0:
        raise ValueError(f"-d/--delta must not be negative, got {opt.delta}")
    if ctx.feat_s[-1].dim() != 2 or ctx.feat_t[-1].dim() != 2:
        raise ValueError("mlkd needs pooled features F[-1] (batch x channels) from both networks")
    # DLKD writes s_dim and t_dim into opt; a copy leaves the caller's opt alone.
    dims = {"s_dim": ctx.feat_s[-1].shape[1], "t_dim": ctx.feat_t[-1].shape[1]}
    return MLKDMethod(argparse.Namespace(**{**vars(opt), **dims}), ctx.mean, ctx.std, opt.delta)


register(
    MethodSpec(
        name="mlkd",
        batch_local=False,
        build=build,
        # DLKD's scripts/run_cifar_mlkd.sh, every pair: -r 1 -a 50 -b 1 -d 20 (ImageNet: -a 20 -b 0.5 -d 10)
        weights=Weights(gamma=1.0, alpha=50.0, beta=1.0),
        train_augment=False,
        add_args=add_args,
        run_tag=flag_tag("delta", label="d"),  # a fourth weight: _r:_a:_b:_d:
        summary="multi-level KD: alignment, correlation and supervised contrast on four rotated views "
                "(Ding et al. 2020)",
    )
)
