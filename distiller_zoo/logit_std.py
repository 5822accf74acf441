"""Logit standardisation: Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024;
reference sunshangquan/logit-standardization-KD (``normalize`` in ``mdistiller/distillers/KD.py``).

Before the temperature, each sample's logits become their z-score over the classes, so the student
matches the shape of the teacher's logits (their ranking and relative gaps) rather than their scale.
``--logit_standardization`` turns it on for the run's KD term (``DistillKL``, which every method's ``-a``
term and the ``kd`` criterion a method receives use) and for logit methods that read the flag.
"""

from __future__ import annotations

from torch import Tensor

#: added to the standard deviation, as the reference (its CTKD copy omits it; a constant row then divides 0 by 0)
EPS = 1e-7


def logit_standardize(logits: Tensor, eps: float = EPS) -> Tensor:
    """``(z - mean(z)) / (std(z) + eps)`` over the last dim, with the unbiased std (``torch.std``'s), as the
    reference; in float32 whatever the input."""
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + eps)


def standardized_if(on: bool, *logits: Tensor) -> tuple[Tensor, ...]:
    """The logits z-scored when ``on`` (a method built with ``--logit_standardization``), else as they are:
    how DKD, DIST and MLLD apply the option before their own temperatures."""
    return tuple(logit_standardize(z) for z in logits) if on else logits


def wants_standardization(opt) -> bool:
    return bool(getattr(opt, "logit_standardization", False))
