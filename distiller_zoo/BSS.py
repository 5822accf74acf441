"""BSS: Heo et al., "Knowledge Distillation with Adversarial Samples Supporting Decision Boundary",
AAAI 2019 (arXiv:1805.05532), as Knowledge-Distillation-Zoo's ``kd_losses/bss.py`` and ``train_bss.py``.

Each step: base samples are the ones both nets classify correctly (at most ``--bss_attack_size``,
those where the nets' softmax outputs differ most off the true class); each is attacked towards a
class drawn from the teacher's other classes by a targeted iterative attack on the teacher; the
student then matches the teacher's soft outputs on these boundary-supporting samples.

The weight follows KD-Zoo's schedule: 0 for the first ``--bss_warmup`` epochs, then
``max(1 - 1.25 (e - 1) / E, 0)`` (off after 80 % of training), times ``-b`` (KD-Zoo's lambda 2).
KD-Zoo's variant differs from the authors' code (bhheo/BSS_distillation), which also keeps a
clean-sample KD term, selects base samples by the teacher's correctness alone, attacks 64 samples
and decays the adversarial weight to 0 at 75 % of 80 epochs; KD-Zoo warns that its variant
occasionally derails training.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register


class BSS(nn.Module):
    """KL(softmax(z_t/T) || softmax(z_s/T)) on the adversarial samples, batch mean, without KD's T^2 (as KD-Zoo)."""

    def __init__(self, T: float):
        super().__init__()
        self.T = T

    def forward(self, attacked_out_s: Tensor, attacked_out_t: Tensor) -> Tensor:
        log_p_s = F.log_softmax(attacked_out_s.float() / self.T, dim=1)
        p_t = F.softmax(attacked_out_t.float() / self.T, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="batchmean")


class BSSAttacker:
    """Targeted iterative attack on a frozen network, in the normalised image space (KD-Zoo's).

    Each step raises ``p_attack - p_true``: samples still classified as their true class move along
    the input gradient, normalised to unit L2 norm per sample and scaled by
    ``step_alpha * (p_true - p_attack + eps)``; the images are clamped to [-2.5, 2.5]. The attack
    stops early once no sample is classified as its true class.
    """

    def __init__(self, step_alpha: float, num_steps: int, eps: float = 1e-4):
        self.step_alpha = step_alpha
        self.num_steps = num_steps
        self.eps = eps

    def attack(self, model: Callable[[Tensor], Tensor], img: Tensor, target: Tensor, attack_class: Tensor) -> Tensor:
        """Adversarial copies of ``img`` (detached). ``model(x)`` -> logits differentiable w.r.t. ``x``."""
        x = img.detach()
        for _ in range(self.num_steps):
            x = x.requires_grad_(True)
            logits = model(x).float()
            p = F.softmax(logits, dim=1)
            p_true, p_attack = p.gather(1, target[:, None]), p.gather(1, attack_class[:, None])
            (grad,) = torch.autograd.grad((p_attack - p_true).sum(), x)
            active = logits.argmax(1).eq(target)
            if not bool(active.any()):
                break
            scale = self.step_alpha * active[:, None] * (p_true - p_attack + self.eps)
            # KD-Zoo divides by the plain norm; the floor only matters where it would give 0/0 = NaN.
            norm = grad.float().flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)
            step = (scale / norm).reshape(-1, *([1] * (x.dim() - 1))) * grad
            x = (x.detach() + step).clamp(-2.5, 2.5)
        return x.detach()


def select_base_samples(logit_s: Tensor, logit_t: Tensor, target: Tensor, attack_size: int) -> Tensor:
    """Indices of the samples both nets classify correctly; if more than ``attack_size``, the
    ``attack_size`` with the largest sum over c != y of (p_t,c - p_s,c)^2."""
    correct = logit_s.argmax(1).eq(target) & logit_t.argmax(1).eq(target)
    index = correct.nonzero().flatten()
    if index.numel() <= attack_size:
        return index
    diff = (F.softmax(logit_t[index], dim=1) - F.softmax(logit_s[index], dim=1)).pow(2)
    score = diff.sum(1) - diff.gather(1, target[index, None]).squeeze(1)
    return index[score.sort(descending=True, stable=True).indices[:attack_size]]


def sample_attack_classes(logit_t: Tensor) -> Tensor:
    """One class per row, drawn from the teacher's non-top-1 classes with probability proportional to
    their softmax scores (inverse CDF over the sorted scores, torch's generator on the logits' device)."""
    scores, classes = F.softmax(logit_t.float(), dim=1).sort(dim=1, descending=True)
    scores, classes = scores[:, 1:], classes[:, 1:]
    threshold = scores.sum(1, keepdim=True) * torch.rand(scores.shape[0], 1, device=scores.device)
    pick = (scores.cumsum(1) < threshold).sum(1, keepdim=True)
    pick = pick.masked_fill(pick >= scores.shape[1], 0)  # rounding left no class: KD-Zoo keeps the 2nd best
    return classes.gather(1, pick).squeeze(1)


def bss_schedule(epoch: int, epochs: int, warmup: int) -> float:
    """KD-Zoo's factor on the BSS weight: 0 during the warm-up, then linear to 0 at 80 % of ``epochs``."""
    if epoch <= warmup:
        return 0.0
    return max(1.0 - 1.25 * (epoch - 1) / epochs, 0.0)


def _like(x: Tensor, ref: Tensor) -> Tensor:
    """``x`` in ``ref``'s memory format (indexing a channels_last batch need not keep it)."""
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class BSSMethod(DistillMethod):
    """Selects, attacks and distils on boundary-supporting samples; the term is the schedule times :class:`BSS`."""

    def __init__(self, T: float, attack_size: int, warmup: int):
        super().__init__()
        self.attack_size, self.warmup = attack_size, warmup
        self.criterion = BSS(T)
        self.attacker = BSSAttacker(step_alpha=0.3, num_steps=10, eps=1e-4)

    def forward(self, batch: DistillBatch) -> Tensor:
        factor = bss_schedule(batch.epoch, batch.epochs, self.warmup)
        zero = batch.logit_s.new_zeros(())
        if factor == 0.0:  # no attack at all, as KD-Zoo
            return zero
        index = select_base_samples(batch.logit_s.detach(), batch.logit_t, batch.target, self.attack_size)
        if index.numel() == 0:
            return zero
        target = batch.target[index]
        attack_class = sample_attack_classes(batch.logit_t[index])
        image = _like(batch.image.detach()[index], batch.image)
        attacked = self.attacker.attack(lambda x: batch.nets.teacher(x, input_grad=True), image, target, attack_class)
        return factor * self.criterion(batch.nets.student(attacked), batch.nets.teacher(attacked))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--bss_attack_size", type=int, default=32, help="at most this many base samples per batch")
    group.add_argument("--bss_T", type=float, default=3.0, help="temperature of the BSS loss (no T^2 factor)")
    group.add_argument("--bss_warmup", type=int, default=10, help="epochs without BSS at the start (KD-Zoo's 10)")


def build(ctx: MethodContext) -> BSSMethod:
    opt = ctx.opt
    if opt.bss_attack_size < 1 or opt.bss_T <= 0 or opt.bss_warmup < 0:
        raise ValueError("bss needs --bss_attack_size >= 1, --bss_T > 0 and --bss_warmup >= 0")
    return BSSMethod(opt.bss_T, opt.bss_attack_size, opt.bss_warmup)


register(
    MethodSpec(
        name="bss",
        batch_local=False,
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=2.0),
        uses_features=False,
        add_args=add_args,
        summary="boundary-supporting adversarial samples, KD-Zoo's schedule (Heo et al. 2019)",
    )
)
