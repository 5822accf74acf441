"""SRRL: Yang et al., "Knowledge Distillation via Softmax Regression Representation Learning", ICLR 2021.

The student's pooled feature is mapped into the teacher's feature space (1x1 conv + BN + ReLU on the
vector seen as a 1x1 map) and must match the teacher's pooled feature there (feature matching) and,
passed through the teacher's own frozen classifier, reproduce the teacher's logits (softmax
regression). Both terms are mean squared errors, summed, as the distillers reference
(``imagenet/``); the student's own classifier is still trained by ``-r``/``-a``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import frozen_teacher_classifier
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register


class SRRL(nn.Module):
    """The feature transfer ``h = ReLU(BN(conv1x1(f_s)))`` (``s_n`` -> ``t_n`` channels) and ``cls_t(h)``.

    ``forward(feat_s, cls_t)`` takes the pooled ``(B, s_n)`` student feature and the teacher's
    classifier and returns ``(h, cls_t(h))``, as the reference's module of the same name.
    """

    def __init__(self, *, s_n: int, t_n: int):
        super().__init__()
        self.transfer = nn.Sequential(
            nn.Conv2d(s_n, t_n, kernel_size=1, bias=False),
            nn.BatchNorm2d(t_n),
            nn.ReLU(),
        )

    def forward(self, feat_s: Tensor, cls_t: nn.Module) -> tuple[Tensor, Tensor]:
        trans_feat_s = self.transfer(feat_s.reshape(feat_s.shape[0], -1, 1, 1)).flatten(1)
        return trans_feat_s, cls_t(trans_feat_s)


class SRRLMethod(DistillMethod):
    """``mse(h, F_t[-1]) + mse(cls_t(h), z_t)`` with ``h`` the transferred ``F_s[-1]``; ``cls_t`` frozen."""

    def __init__(self, s_n: int, t_n: int, cls_t: nn.Linear):
        super().__init__()
        self.srrl = SRRL(s_n=s_n, t_n=t_n)
        self.cls_t = cls_t

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor] | None:
        """Skip a batch of one image (a data set's last, say): the transfer's BatchNorm then normalises a
        single 1x1 value per channel, which training-mode BatchNorm refuses."""
        return batch if batch[0].shape[0] > 1 else None

    def forward(self, batch: DistillBatch) -> Tensor:
        trans_feat_s, pred_feat_s = self.srrl(batch.feat_s[-1], self.cls_t)
        return F.mse_loss(trans_feat_s, batch.feat_t[-1].detach()) + F.mse_loss(pred_feat_s, batch.logit_t.detach())


def build(ctx: MethodContext) -> SRRLMethod:
    return SRRLMethod(ctx.feat_s[-1].shape[1], ctx.feat_t[-1].shape[1], frozen_teacher_classifier(ctx))


register(
    MethodSpec(
        name="srrl",
        build=build,
        # the reference's script: -c 1 -d 1 -b 1 (its cls/div/beta are our -r/-a/-b)
        weights=Weights(gamma=1.0, alpha=1.0, beta=1.0),
        summary="softmax regression representation learning through the teacher's classifier (Yang et al. 2021)",
    )
)
