"""The reference's divergences (``datafree/criterions.py``), same names and signatures, in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kldiv(logits: Tensor, targets: Tensor, T: float = 1.0, reduction: str = "batchmean") -> Tensor:
    """T² · KL(softmax(targets / T) ‖ softmax(logits / T)): the student's logits first, the teacher's second.

    The targets enter as log-probabilities (``log_target``): the reference passes probabilities, whose
    gradient is NaN where one underflows to 0 (a confident teacher), and synthesis differentiates through them.
    """
    q = F.log_softmax(logits.float() / T, dim=1)
    log_p = F.log_softmax(targets.float() / T, dim=1)
    return F.kl_div(q, log_p, reduction=reduction, log_target=True) * (T * T)


class KLDiv(nn.Module):
    """:func:`kldiv` as a module (the student's KD loss, T = ``--T``)."""

    def __init__(self, T: float = 1.0, reduction: str = "batchmean"):
        super().__init__()
        self.T = T
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return kldiv(logits, targets, T=self.T, reduction=self.reduction)


def jsdiv(logits: Tensor, targets: Tensor, T: float = 1.0, reduction: str = "batchmean") -> Tensor:
    """Jensen-Shannon divergence between the two softmaxes at T, with every probability clamped to
    [0.01, 0.99] before the logarithms, as the reference (DeepInversion's adversarial term)."""
    p = F.softmax(logits.float() / T, dim=1)
    q = F.softmax(targets.float() / T, dim=1)
    m = torch.clamp(0.5 * (p + q), 0.01, 0.99)
    p, q = torch.clamp(p, 0.01, 0.99), torch.clamp(q, 0.01, 0.99)
    return 0.5 * F.kl_div(torch.log(p), m, reduction=reduction) + 0.5 * F.kl_div(torch.log(q), m, reduction=reduction)


def class_balance_loss(logits: Tensor) -> Tensor:
    """Σ_k p̄_k log p̄_k of the batch-mean softmax (DAFL's information-entropy term, minimised)."""
    avg = torch.softmax(logits.float(), dim=1).mean(dim=0)
    return (avg * torch.log(avg)).sum()
