"""Logits: Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014 (arXiv:1312.6184).

Mimic learning: the student regresses the teacher's logits (the pre-softmax values, which keep the
information a softmax squashes) with a mean squared error, as Knowledge-Distillation-Zoo's ``logits``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodSpec, Weights, register


class Logits(nn.Module):
    """mean over B x K of (z_s - z_t)^2: KD-Zoo's class and constructor (no arguments)."""

    def forward(self, out_s: Tensor, out_t: Tensor) -> Tensor:
        return F.mse_loss(out_s.float(), out_t.float())


class LogitsMethod(DistillMethod):
    """:class:`Logits` on the logits of both nets; no trainable modules."""

    def __init__(self):
        super().__init__()
        self.criterion = Logits()

    def forward(self, batch: DistillBatch) -> Tensor:
        return self.criterion(batch.logit_s, batch.logit_t.detach())


# KD-Zoo's recipe is CE + lambda * L with lambda 0.1 for logits (example_train_script.sh).
register(
    MethodSpec(
        name="logits",
        build=lambda ctx: LogitsMethod(),
        weights=Weights(gamma=1.0, alpha=0.0, beta=0.1),
        uses_features=False,
        summary="mimic learning: MSE between student and teacher logits (Ba & Caruana 2014)",
    )
)
