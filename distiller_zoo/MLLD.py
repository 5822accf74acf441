"""MLLD: Jin, Wang, Lin, "Multi-Level Logit Distillation", CVPR 2023; reference
Jin-Ying/Multi-Level-Logit-Distillation (``mdistiller/distillers/KD_ours.py``, its ``AugTrainer`` and
strong-augmentation loaders, ``configs/cifar100/ours``). Named ``mlld`` here: ``mlkd`` is Ding et al.'s.

Logits are aligned at three levels, each at several temperatures (the paper's "prediction augmentation"):

* instance: KD's KL of each sample's softmax (``kd_loss``);
* batch: the B x B Gram matrix of the batch's softmaxes, ``p p^T`` (``bc_loss``, input correlation);
* class: the K x K Gram matrix ``p^T p`` (``cc_loss``, category correlation).

Each image is seen twice, weakly and strongly augmented (:mod:`dataset.strong_views`); the student and
the teacher run on each view apart, as the official trainer does. What the official loss computes, kept
as it is (its published numbers come from it):

* the temperatures are the base one (KD's 4 on CIFAR, 1 on ImageNet) and 3, 5, 2, 6;
* weak view: instance and batch terms times the fraction of samples whose teacher confidence is at most
  the batch median, class terms times the fraction of classes whose summed teacher probability is at
  most the median (the code multiplies these masks into already-averaged losses, so only their
  fractions, about 1/2, act);
* strong view: instance terms at the base temperature, 3 and 5 on the strong logits, and at 2 and 6 on
  the weak logits again (as the code has it); its class and batch terms are computed there but never
  added, so not here;
* cross-entropy on both views; the official weights CE 0.1 and 0.9 for the rest (``-r 0.1 -b 0.9``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dataset.strong_views import weak_and_strong
from distiller_zoo._common import given_flags_tag, imagenet_recipe
from distiller_zoo.logit_std import standardized_if, wants_standardization
from distiller_zoo.registry import DistillBatch, DistillMethod, LossFn, MethodContext, MethodSpec, Weights, register

__all__ = ["MLLD", "MLLDLoss", "bc_loss", "cc_loss", "kd_loss"]

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # after the base temperature, in the official order
STRONG_ON_STRONG = 3  # the strong view's instance terms at the first three temperatures use the strong logits; the
# official code computes those at the last two (2 and 6) on the weak logits
CIFAR_T, IMAGENET_T = 4.0, 1.0  # mdistiller's KD.TEMPERATURE default; MLLD's configs/imagenet/r34_r18/kd_ours.yaml


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float, reduce: bool = True) -> Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) per sample, or its batch mean."""
    log_p_s = F.log_softmax(logits_student.float() / temperature, dim=1)
    p_t = F.softmax(logits_teacher.float() / temperature, dim=1)
    per_sample = F.kl_div(log_p_s, p_t, reduction="none").sum(1) * temperature**2
    return per_sample.mean() if reduce else per_sample


def _gram_gap(p_s: Tensor, p_t: Tensor) -> Tensor:
    return (p_t @ p_t.T - p_s @ p_s.T) ** 2


def cc_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float, reduce: bool = True) -> Tensor:
    """Class correlation: squared differences of the K x K matrices ``p^T p``, summed (or not) and divided by K."""
    p_s = F.softmax(logits_student.float() / temperature, dim=1)
    p_t = F.softmax(logits_teacher.float() / temperature, dim=1)
    gap = _gram_gap(p_s.T, p_t.T) / p_s.shape[1]
    return gap.sum() if reduce else gap


def bc_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float, reduce: bool = True) -> Tensor:
    """Batch correlation: squared differences of the B x B matrices ``p p^T``, summed (or not) and divided by B."""
    p_s = F.softmax(logits_student.float() / temperature, dim=1)
    p_t = F.softmax(logits_teacher.float() / temperature, dim=1)
    gap = _gram_gap(p_s, p_t) / p_s.shape[0]
    return gap.sum() if reduce else gap


def _fraction_at_most_median(values: Tensor) -> Tensor:
    """The fraction of ``values`` <= their median (``np.percentile(., 50)``: linear interpolation)."""
    return (values <= torch.quantile(values, 0.5)).float().mean()


class MLLDLoss(nn.Module):
    """The official distillation terms (everything but the cross-entropy), unweighted; see the module notes."""

    def __init__(self, temperature: float = CIFAR_T):
        super().__init__()
        self.temperature = temperature
        self.temperatures = (temperature, *EXTRA_TEMPERATURES)

    def forward(self, s_weak: Tensor, t_weak: Tensor, s_strong: Tensor, t_strong: Tensor) -> Tensor:
        t_weak, t_strong = t_weak.detach().float(), t_strong.detach().float()
        with torch.no_grad():
            p_t = F.softmax(t_weak, dim=1)
            samples = _fraction_at_most_median(p_t.amax(dim=1))  # the confidence mask's share
            classes = _fraction_at_most_median(p_t.sum(dim=0))  # the class-confidence mask's share
        weak = sum(kd_loss(s_weak, t_weak, t) * samples + bc_loss(s_weak, t_weak, t) * samples
                   + cc_loss(s_weak, t_weak, t) * classes for t in self.temperatures)
        strong = sum(kd_loss(s_strong, t_strong, t) for t in self.temperatures[:STRONG_ON_STRONG])
        strong = strong + sum(kd_loss(s_weak, t_weak, t) for t in self.temperatures[STRONG_ON_STRONG:])
        return weak + strong


class MLLD(DistillMethod):
    """Draws both views on the device, runs the strong one through both networks, weighs the official terms.

    ``prepare_batch`` hands the trainer the weak view (its networks' main pass) and keeps the strong view
    for this step's :meth:`loss_terms`/:meth:`forward`, which run it through the student (a second
    training-mode pass, as the official trainer's) and the frozen teacher. Terms: 'cls' the cross-entropy of
    both views (``-r``), 'div' the run's KD on the weak view (``-a``, 0 by default), 'kd' :class:`MLLDLoss`
    (``-b``). The training accuracy is the weak view's, as the official trainer reports.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], temperature: float = CIFAR_T,
                 standardize: bool = False):
        super().__init__()
        self.criterion = MLLDLoss(temperature)
        self.standardize = standardize  # --logit_standardization: every logit z-scored before the temperatures
        # moved to the device with the method, not saved with it
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self._strong: Tensor | None = None

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor]:
        weak, self._strong = weak_and_strong(batch[0], self.mean, self.std)
        return [weak, *batch[1:]]

    def strong_logits(self, batch: DistillBatch) -> tuple[Tensor, Tensor]:
        """The student's and the teacher's logits on this step's strong view (drawn by :meth:`prepare_batch`)."""
        if self._strong is None or batch.nets is None:
            raise RuntimeError("mlld needs the strong view of prepare_batch and the networks of the step")
        strong, self._strong = self._strong, None
        return batch.nets.student(strong), batch.nets.teacher(strong)

    def mlld_loss(self, s_weak: Tensor, t_weak: Tensor, s_strong: Tensor, t_strong: Tensor) -> Tensor:
        return self.criterion(*standardized_if(self.standardize, s_weak, t_weak, s_strong, t_strong))

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.mlld_loss(batch.logit_s, batch.logit_t, *self.strong_logits(batch))

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        s_strong, t_strong = self.strong_logits(batch)
        return batch.logit_s, {
            "cls": ce(batch.logit_s, batch.target) + ce(s_strong, batch.target),
            "div": kd(batch.logit_s, batch.logit_t),
            "kd": self.mlld_loss(batch.logit_s, batch.logit_t, s_strong, t_strong),
        }


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mlld_T", type=float, default=None,
                       help=f"MLLD: base temperature, used with 3, 5, 2 and 6 (default: the official {CIFAR_T:g}, "
                            f"{IMAGENET_T:g} with --dataset imagenet)")


def build(ctx: MethodContext) -> MLLD:
    opt = ctx.opt
    temperature = opt.mlld_T if opt.mlld_T is not None else (IMAGENET_T if imagenet_recipe(opt) else CIFAR_T)
    if temperature <= 0:
        raise ValueError(f"--mlld_T must be positive, got {temperature}")
    return MLLD(ctx.mean, ctx.std, temperature, wants_standardization(opt))


register(
    MethodSpec(
        name="mlld",
        batch_local=False,
        build=build,
        # the official CIFAR configs keep mdistiller's KD weights: CE 0.1, the rest 0.9 (ImageNet: 0.5 / 0.5)
        weights=Weights(gamma=0.1, alpha=0.0, beta=0.9),
        uses_features=False,
        train_augment=False,
        add_args=add_args,
        run_tag=given_flags_tag(mlld_T=None),
        summary="multi-level logit distillation: instance, batch and class alignment at several temperatures "
                "on weak and strong views (Jin et al. 2023)",
    )
)
