"""Sobolev / Jacobian matching: Czarnecki et al., "Sobolev Training for Neural Networks", NeurIPS 2017
(arXiv:1706.04859); Srinivas & Fleuret, "Knowledge Transfer with Jacobian Matching", ICML 2018
(arXiv:1803.00443). Loss as Knowledge-Distillation-Zoo's ``kd_losses/sobolev.py``.

The student matches the direction of the teacher's input gradient of the ground-truth logit. The
student's gradient is taken with ``create_graph=True``, so the loss back-propagates through it
(second-order gradients through the student). The teacher's pass keeps its graph
(``MethodSpec.teacher_graph``), so its gradient needs no second teacher forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register


def target_logit_grad(logits: Tensor, image: Tensor, target: Tensor, create_graph: bool) -> Tensor:
    """d(sum_b z[b, y_b]) / d image, flattened per sample and L2-normalised."""
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), image, create_graph=create_graph)
    return F.normalize(grad.float().reshape(grad.shape[0], -1), p=2, dim=1)


class Sobolev(nn.Module):
    """mean((g_s - g_t)^2) over the normalised input gradients of the target logit (KD-Zoo's signature).

    ``out_s`` and ``out_t`` must both be differentiable with respect to ``img``; the teacher's
    gradient is treated as a constant.
    """

    def forward(self, out_s: Tensor, out_t: Tensor, img: Tensor, target: Tensor) -> Tensor:
        # KD-Zoo builds the teacher's gradient with create_graph=True and detaches it: same value.
        grad_t = target_logit_grad(out_t, img, target, create_graph=False)
        grad_s = target_logit_grad(out_s, img, target, create_graph=True)
        return F.mse_loss(grad_s, grad_t)


class SobolevMethod(DistillMethod):
    """:class:`Sobolev` on the batch's image, the student's logits and the teacher's attached logits."""

    def __init__(self):
        super().__init__()
        self.criterion = Sobolev()

    def forward(self, batch: DistillBatch) -> Tensor:
        _, logit_t = batch.graph_t
        return self.criterion(batch.logit_s, logit_t, batch.image, batch.target)


def build(ctx: MethodContext) -> SobolevMethod:
    return SobolevMethod()


register(
    MethodSpec(
        name="sobolev",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=20.0),
        uses_features=False,
        input_grad=True,
        teacher_graph=True,
        compilable=False,  # the student's input gradient is back-propagated (double backward)
        summary="Jacobian matching of the target logit w.r.t. the input (Czarnecki et al. 2017)",
    )
)
