"""KD: Hinton et al., "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.logit_std import logit_standardize
from distiller_zoo.registry import MethodSpec, NoMethodLoss, Weights, register


class DistillKL(nn.Module):
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), summed over classes and averaged over the batch.

    RepDistiller's ``size_average=False`` sum divided by B; ``reduction='mean'`` would divide by B*K.
    With ``standardize`` both nets' logits are z-scored first (``--logit_standardization``, see
    :mod:`distiller_zoo.logit_std`); ``T`` given to :meth:`forward` (a tensor, CTKD's learnt temperature)
    replaces the fixed one.
    """

    def __init__(self, T: float, standardize: bool = False):
        super().__init__()
        self.T = T
        self.standardize = standardize

    def forward(self, y_s: Tensor, y_t: Tensor, T: float | Tensor | None = None) -> Tensor:
        T = self.T if T is None else T
        y_s, y_t = y_s.float(), y_t.float()
        if self.standardize:
            y_s, y_t = logit_standardize(y_s), logit_standardize(y_t)
        log_p_s = F.log_softmax(y_s / T, dim=1)
        p_t = F.softmax(y_t / T, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]


# KD's term is the -a weighted DistillKL every method gets; its own (-b) term is empty.
register(
    MethodSpec(
        name="kd",
        aliases=("st",),
        build=lambda ctx: NoMethodLoss(),
        weights=Weights(gamma=0.1, alpha=0.9, beta=0.0),
        uses_features=False,
        summary="soft targets at temperature --kd_T (Hinton et al. 2015)",
    )
)
