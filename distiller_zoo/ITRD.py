"""ITRD: Miles, Lopez-Rodriguez, Mikolajczyk, "Information Theoretic Representation Distillation",
BMVC 2022 (arXiv:2112.00459).

Two terms on the pooled features. Correlation: the per-dimension cross-correlation between the
linearly projected student and the teacher features (both standardised over the batch) is pushed to
1, through a Renyi-style ``log2 sum (|c - 1|^2)^alpha``. Mutual information: the student's Gram
matrix of normalised features is matched to its Hadamard product with the teacher's (the matrix-based
joint entropy), each normalised by its trace.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import opt_with_dims, standardize
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register
from models.util import LinearEmbed

__all__ = ["ITLoss"]

# The official code's README recipe (roymiles/ITRD): --lambda_corr 2.0 --lambda_mutual 1.0 --alpha_it 1.01.
DEFAULTS = {"itrd_alpha": 1.01, "lambda_corr": 2.0, "lambda_mutual": 1.0}


class ITLoss(nn.Module):
    """``lambda_corr * L_corr + lambda_mutual * L_mi`` (the official code's sum; see :meth:`forward`).

    ``opt`` provides ``s_dim`` and ``t_dim`` (pooled feature sizes) and, optionally, ``itrd_alpha``,
    ``lambda_corr`` and ``lambda_mutual`` (the official defaults otherwise). ``embed`` is a trainable
    Linear ``s_dim -> t_dim``; the mutual-information term uses it only when the sizes differ.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.s_dim = opt.s_dim
        self.t_dim = opt.t_dim
        self.embed = LinearEmbed(opt.s_dim, opt.t_dim)
        self.alpha_it = getattr(opt, "itrd_alpha", DEFAULTS["itrd_alpha"])
        self.lambda_corr = getattr(opt, "lambda_corr", DEFAULTS["lambda_corr"])
        self.lambda_mutual = getattr(opt, "lambda_mutual", DEFAULTS["lambda_mutual"])

    def forward_correlation_it(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        """``log2 sum_d (|c_d - 1|^2)^alpha``, ``c_d = (1/B) sum_b zhat_bd * fhat_bd``, z = embed(f_s),
        hats standardised over the batch (mean, unbiased std)."""
        z_s = self.embed(z_s)
        c = (standardize(z_s, 0) * standardize(z_t, 0)).sum(0) / z_s.shape[0]
        return torch.log2((c - 1).abs().pow(2).pow(self.alpha_it).sum())

    def forward_mutual_it(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        """``sum (G_s/tr G_s)^2 - (G_st/tr G_st)^2``, ``G = fhat fhat^T`` (rows L2-normalised), ``G_st = G_s * G_t``.

        The student side is ``embed(f_s)`` only when the feature sizes differ, as the official code."""
        if self.s_dim != self.t_dim:
            z_s = self.embed(z_s)
        f_s, f_t = F.normalize(z_s), F.normalize(z_t)
        g_s = f_s @ f_s.T
        g_st = g_s * (f_t @ f_t.T)
        return ((g_s / g_s.trace()).pow(2) - (g_st / g_st.trace()).pow(2)).sum()

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        """Both terms, weighted. The distillers repository adds them unweighted with alpha 1.5 (its
        lambda attributes are set and never read): ``--lambda_corr 1 --lambda_mutual 1 --itrd_alpha 1.5``.

        A batch of one has no batch statistics (its std is NaN in the reference): the loss is 0 then.
        """
        z_s, z_t = z_s.flatten(1), z_t.flatten(1)
        if z_s.shape[0] < 2:
            return z_s.new_zeros(())
        corr = self.forward_correlation_it(z_s, z_t)
        return self.lambda_corr * corr + self.lambda_mutual * self.forward_mutual_it(z_s, z_t)


class ITRDMethod(DistillMethod):
    """:class:`ITLoss` on the pooled features ``F[-1]``; the projection trains with the student."""

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.criterion = ITLoss(opt)

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1].detach())


def build(ctx: MethodContext) -> ITRDMethod:
    if ctx.opt.itrd_alpha <= 0 or ctx.opt.lambda_corr < 0 or ctx.opt.lambda_mutual < 0:
        raise ValueError("itrd needs --itrd_alpha > 0 and non-negative --lambda_corr and --lambda_mutual, got "
                         f"{ctx.opt.itrd_alpha}, {ctx.opt.lambda_corr} and {ctx.opt.lambda_mutual}")
    return ITRDMethod(opt_with_dims(ctx))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--itrd_alpha", "--alpha_it", dest="itrd_alpha", type=float, default=DEFAULTS["itrd_alpha"],
                       help="Renyi order alpha of the correlation term (the distillers repository: 1.5)")
    group.add_argument("--lambda_corr", type=float, default=DEFAULTS["lambda_corr"],
                       help="weight of the correlation term (the distillers repository: 1)")
    group.add_argument("--lambda_mutual", type=float, default=DEFAULTS["lambda_mutual"],
                       help="weight of the mutual-information term (the distillers repository: 1)")


register(
    MethodSpec(
        name="itrd",
        batch_local=False,
        build=build,
        # The official README: -r 1 -b 1 and no KD term.
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        add_args=add_args,
        summary="information-theoretic representation distillation: correlation and mutual information "
                "(Miles et al. 2022)",
    )
)
