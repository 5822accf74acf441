"""DKD: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022 (arXiv:2203.08679);
reference megvii-research/mdistiller (``mdistiller/distillers/DKD.py``, ``configs/*/dkd``).

KD's loss splits into a target-class term (TCKD: the binary "label vs. the rest" distributions) and a
non-target term (NCKD: the distribution over the other classes, renormalised); DKD weighs them apart,
``alpha * TCKD + beta * NCKD``, and ramps the sum up linearly over the first ``warmup`` epochs.

mdistiller tunes ``beta`` (and on ImageNet the temperature and warm-up) per teacher/student pair; the
values of its configs are :data:`DKD_CONFIGS`, picked from ``--model_t``/``--model_s`` unless the
``--dkd_*`` flags say otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from distiller_zoo._common import given_flags_tag, imagenet_recipe
from distiller_zoo.logit_std import standardized_if, wants_standardization
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

__all__ = ["DKD", "DKDConfig", "DKD_CONFIGS", "dkd_config", "dkd_loss"]

NON_TARGET_SHIFT = 1000.0  # mdistiller removes the target class by lowering its scaled logit by this much


@dataclass(frozen=True)
class DKDConfig:
    """One mdistiller DKD setting: ``alpha`` (TCKD), ``beta`` (NCKD), temperature ``T``, ``warmup`` epochs."""

    alpha: float = 1.0
    beta: float = 8.0
    T: float = 4.0
    warmup: int = 20


CIFAR_DEFAULT = DKDConfig()  # mdistiller's cfg.py defaults, which its res32x4_res8x4.yaml keeps
IMAGENET_DEFAULT = DKDConfig(beta=0.5, T=1.0, warmup=1)  # configs/imagenet/r34_r18/dkd.yaml

# (teacher, student) -> setting, from mdistiller's configs/cifar100/dkd/*.yaml and configs/imagenet/*/dkd.yaml
DKD_CONFIGS: dict[tuple[str, str], DKDConfig] = {
    ("resnet32x4", "resnet8x4"): CIFAR_DEFAULT,
    ("resnet56", "resnet20"): DKDConfig(beta=2.0),
    ("resnet110", "resnet32"): DKDConfig(beta=2.0),
    ("vgg13", "vgg8"): DKDConfig(beta=6.0),
    ("vgg13", "MobileNetV2"): DKDConfig(beta=6.0),
    ("wrn_40_2", "wrn_16_2"): DKDConfig(beta=6.0),
    ("wrn_40_2", "wrn_40_1"): DKDConfig(beta=6.0),
    ("resnet32x4", "ShuffleV1"): CIFAR_DEFAULT,
    ("resnet32x4", "ShuffleV2"): CIFAR_DEFAULT,
    ("ResNet50", "MobileNetV2"): CIFAR_DEFAULT,
    ("wrn_40_2", "ShuffleV1"): CIFAR_DEFAULT,
    ("ResNet34", "ResNet18"): IMAGENET_DEFAULT,
    ("ResNet50_Imagenet", "MobileNetV1"): DKDConfig(beta=2.0, T=1.0, warmup=1),
}


def dkd_config(teacher: str | None, student: str | None, imagenet: bool) -> DKDConfig:
    """mdistiller's setting for the pair; an unlisted pair gets its CIFAR defaults, or on ImageNet its
    ResNet34 -> ResNet18 setting (its configs' common temperature and warm-up)."""
    return DKD_CONFIGS.get((teacher, student), IMAGENET_DEFAULT if imagenet else CIFAR_DEFAULT)


def _kl_sum(log_q: Tensor, p: Tensor) -> Tensor:
    """sum p * (log p - log q) over every element (0 where p is 0), as ``kl_div(..., reduction='sum')``."""
    return F.kl_div(log_q, p, reduction="sum")


def dkd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, alpha: float, beta: float,
             temperature: float) -> Tensor:
    """``alpha * TCKD + beta * NCKD``, each ``T^2 * (1/B) * sum_b KL(teacher || student)``.

    TCKD compares the binary distributions [p_target, sum of the other p] at temperature T (the log taken
    directly, no epsilon, as mdistiller); NCKD the softmaxes over the non-target classes, the target removed
    by shifting its scaled logit down by 1000 (exp(-1000) is 0 in float32).
    """
    z_s, z_t = logits_student.float() / temperature, logits_teacher.float() / temperature
    is_target = F.one_hot(target.reshape(-1), z_s.shape[1]).bool()
    p_s, p_t = z_s.softmax(dim=1), z_t.softmax(dim=1)

    def binary(p: Tensor) -> Tensor:  # [p of the label, summed p of the other classes]
        return torch.stack([(p * is_target).sum(1), (p * ~is_target).sum(1)], dim=1)

    scale = temperature**2 / target.shape[0]
    tckd = _kl_sum(binary(p_s).log(), binary(p_t)) * scale
    shift = NON_TARGET_SHIFT * is_target
    nckd = _kl_sum(F.log_softmax(z_s - shift, dim=1), F.softmax(z_t - shift, dim=1)) * scale
    return alpha * tckd + beta * nckd


class DKD(DistillMethod):
    """mdistiller's DKD distiller as this toolkit's method term: ``min(epoch / warmup, 1) * dkd_loss``.

    The cross-entropy is the trainer's ``-r`` term (mdistiller's CE_WEIGHT 1); ``alpha`` and ``beta`` live
    here, so ``-b`` stays 1. ``epoch`` is the 1-based epoch of the main stage, as mdistiller's.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: int = 20,
                 standardize: bool = False):
        super().__init__()
        self.alpha, self.beta, self.temperature, self.warmup = alpha, beta, temperature, warmup
        self.standardize = standardize  # --logit_standardization: z-scored logits before the temperature

    def forward(self, batch: DistillBatch) -> Tensor:
        ramp = min(batch.epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0
        z_s, z_t = standardized_if(self.standardize, batch.logit_s, batch.logit_t.detach())
        return ramp * dkd_loss(z_s, z_t, batch.target, self.alpha, self.beta, self.temperature)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dkd_alpha", type=float, default=None,
                       help="DKD: weight of TCKD (default: mdistiller's for the pair, 1)")
    group.add_argument("--dkd_beta", type=float, default=None,
                       help="DKD: weight of NCKD (default: mdistiller's for the pair, e.g. 8 for resnet32x4 -> "
                            "resnet8x4, 2 for resnet56 -> resnet20, 6 for vgg13 -> vgg8)")
    group.add_argument("--dkd_T", type=float, default=None,
                       help="DKD: temperature (default: mdistiller's for the pair; 4 on CIFAR, 1 on ImageNet)")
    group.add_argument("--dkd_warmup", type=int, default=None,
                       help="DKD: epochs of linear warm-up (default: mdistiller's for the pair; 20 on CIFAR, "
                            "1 on ImageNet)")


def resolved_config(opt: argparse.Namespace) -> DKDConfig:
    """The pair's setting from the table, with each ``--dkd_*`` flag the user gave in its place."""
    config = dkd_config(getattr(opt, "model_t", None), getattr(opt, "model_s", None), imagenet_recipe(opt))
    given = {field: getattr(opt, flag, None) for field, flag in
             (("alpha", "dkd_alpha"), ("beta", "dkd_beta"), ("T", "dkd_T"), ("warmup", "dkd_warmup"))}
    return replace(config, **{k: v for k, v in given.items() if v is not None})


def build(ctx: MethodContext) -> DKD:
    config = resolved_config(ctx.opt)
    if config.alpha < 0 or config.beta < 0:
        raise ValueError(f"--dkd_alpha and --dkd_beta must not be negative, got {config.alpha} and {config.beta}")
    if config.T <= 0:
        raise ValueError(f"--dkd_T must be positive, got {config.T}")
    if config.warmup < 0:
        raise ValueError(f"--dkd_warmup must not be negative, got {config.warmup}")
    return DKD(config.alpha, config.beta, config.T, config.warmup, wants_standardization(ctx.opt))


register(
    MethodSpec(
        name="dkd",
        build=build,
        # mdistiller: CE 1 plus the warmed-up DKD loss, alpha and beta inside it; no KD term (-a adds one)
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        uses_features=False,
        add_args=add_args,
        run_tag=given_flags_tag(dkd_alpha=None, dkd_beta=None, dkd_T=None, dkd_warmup=None),
        summary="decoupled KD: target-class and non-target-class terms weighed apart, warm-up "
                "(Zhao et al. 2022)",
    )
)
