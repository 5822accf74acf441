"""DIST: Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
(arXiv:2205.10536); reference hunto/DIST_KD (loss: hunto/image_classification_sota
``lib/models/losses/dist_kd.py``; CIFAR recipe ``configs/strategies/distill/dist_cifar.yaml``).

Instead of matching the teacher's probabilities exactly (KL), the student matches their relations:
per sample, the Pearson correlation of its class probabilities with the teacher's (inter-class
relation), and per class, the correlation of its probabilities across the batch with the teacher's
(intra-class relation). A stronger teacher's sharper, differently scaled predictions then need only be
matched up to a linear map.
"""

from __future__ import annotations

import argparse

from torch import Tensor, nn

from distiller_zoo._common import given_flags_tag, imagenet_recipe
from distiller_zoo.logit_std import standardized_if, wants_standardization
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["DIST", "cosine_similarity", "inter_class_relation", "intra_class_relation", "pearson_correlation"]

CIFAR_TAU, IMAGENET_TAU = 4.0, 1.0  # the official CIFAR strategy's ``kd: dist_t4``; ImageNet's ``kd: dist``


def cosine_similarity(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise cosine similarity with ``eps`` added to the product of the norms (the official form)."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def pearson_correlation(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation: the cosine similarity of the rows centred on their means."""
    return cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), eps)


def inter_class_relation(y_s: Tensor, y_t: Tensor) -> Tensor:
    """1 - the mean over samples of the correlation between student and teacher class probabilities."""
    return 1 - pearson_correlation(y_s, y_t).mean()


def intra_class_relation(y_s: Tensor, y_t: Tensor) -> Tensor:
    """The inter-class relation of the transposes: per class, across the batch."""
    return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))


class DIST(nn.Module):
    """``tau^2 * (beta * inter + gamma * intra)`` on the softmaxes at temperature ``tau`` (the official
    constructor and defaults; its CIFAR runs use ``tau=4`` and weigh the loss by 2)."""

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0):
        super().__init__()
        self.beta, self.gamma, self.tau = beta, gamma, tau

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        y_s = (z_s.float() / self.tau).softmax(dim=1)
        y_t = (z_t.float() / self.tau).softmax(dim=1)
        scale = self.tau**2
        return scale * (self.beta * inter_class_relation(y_s, y_t) + self.gamma * intra_class_relation(y_s, y_t))


class DISTMethod(DistillMethod):
    """The method term is :class:`DIST` on the logits; ``-b`` is the official ``kd_loss_weight`` (2)."""

    def __init__(self, beta: float, gamma: float, tau: float, standardize: bool = False):
        super().__init__()
        self.criterion = DIST(beta=beta, gamma=gamma, tau=tau)
        self.standardize = standardize  # --logit_standardization: z-scored logits before the temperature

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(*standardized_if(self.standardize, batch.logit_s, batch.logit_t.detach()))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dist_beta", type=float, default=1.0, help="DIST: weight of the inter-class relation")
    group.add_argument("--dist_gamma", type=float, default=1.0, help="DIST: weight of the intra-class relation")
    group.add_argument("--dist_tau", type=float, default=None,
                       help=f"DIST: temperature (default: the official {CIFAR_TAU:g} on CIFAR-sized runs, "
                            f"{IMAGENET_TAU:g} with --dataset imagenet)")


def build(ctx: MethodContext) -> DISTMethod:
    opt = ctx.opt
    tau = opt.dist_tau if opt.dist_tau is not None else (IMAGENET_TAU if imagenet_recipe(opt) else CIFAR_TAU)
    if tau <= 0:
        raise ValueError(f"--dist_tau must be positive, got {tau}")
    if opt.dist_beta < 0 or opt.dist_gamma < 0:
        raise ValueError(f"--dist_beta and --dist_gamma must not be negative, got {opt.dist_beta} and "
                         f"{opt.dist_gamma}")
    return DISTMethod(opt.dist_beta, opt.dist_gamma, tau, wants_standardization(opt))


register(
    MethodSpec(
        name="dist",
        batch_local=False,
        build=build,
        # the official recipes: ori_loss_weight 1, kd_loss_weight 2 (CIFAR and ImageNet); no KD term
        weights=Weights(gamma=1.0, alpha=0.0, beta=2.0),
        uses_features=False,
        add_args=add_args,
        run_tag=given_flags_tag(dist_beta=1.0, dist_gamma=1.0, dist_tau=None),
        summary="inter- and intra-class Pearson correlations of the predictions (Huang et al. 2022)",
    )
)
