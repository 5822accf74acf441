"""LwM: Dhar et al., "Learning without Memorizing", CVPR 2019 (arXiv:1811.08051); only its Grad-CAM
attention distillation, as Knowledge-Distillation-Zoo's ``kd_losses/lwm.py``.

Tap: the middle stage map. KD-Zoo taps rb2 of its 3-stage ResNets: after the last stage the
Grad-CAM would be constant over H, W because global pooling follows. For our nets that is
``F[1 + n // 2]`` of the n stage maps ``F[1:-1]``: F[2] for 3 stages (KD-Zoo's rb2) and F[3] for
4 (VGG, ResNet50, MobileNetV2), i.e. the stage before the last in both cases. Each net uses its
own tap; maps of different size are compared after pooling the larger CAM to the smaller.

As KD-Zoo (and unlike the standard Grad-CAM), the channel weights multiply the gradients, not the
activations, and the CAM is that of the ground-truth class rather than of the teacher's prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge, get_gradient_edge

from distiller_zoo._common import pool_to_match, stage_maps
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register

_COPIES = ("ToCopyBackward0", "CloneBackward0")


def _source_edge(feature: Tensor) -> GradientEdge:
    """The graph edge of the map the network itself used, behind any float32 copies of it.

    Features reach the losses as float32 copies (autocast's bf16 maps, the frozen teacher's
    outputs) that the logits do not depend on; differentiating with respect to the copy would
    fail, so we differentiate with respect to the tensor it was copied from.
    """
    edge = get_gradient_edge(feature)
    while edge.node is not None and edge.node.name() in _COPIES:
        node, index = edge.node.next_functions[0]
        edge = GradientEdge(node, index)
    return edge


def grad_cam(logits: Tensor, feature: Tensor, target: Tensor, create_graph: bool) -> Tensor:
    """KD-Zoo's Grad-CAM, B x 1 x H x W: ReLU(sum_c GAP(g)_c * g_c), g = d(sum_b z[b, y_b]) / d feature."""
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), _source_edge(feature),
                                  create_graph=create_graph)
    grad = grad.float()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * grad).sum(dim=1, keepdim=True))


class LwM(nn.Module):
    """mean|cam_s - cam_t| over L2-normalised flattened Grad-CAMs (KD-Zoo's signature).

    ``fm_s``/``fm_t`` must be maps of the graphs that produced ``out_s``/``out_t``; the teacher's
    CAM is treated as a constant.
    """

    def forward(self, out_s: Tensor, fm_s: Tensor, out_t: Tensor, fm_t: Tensor, target: Tensor) -> Tensor:
        cam_t = grad_cam(out_t, fm_t, target, create_graph=False)
        cam_s = grad_cam(out_s, fm_s, target, create_graph=True)
        cam_s, cam_t = pool_to_match(cam_s, cam_t)
        return F.l1_loss(F.normalize(cam_s.flatten(1), dim=1), F.normalize(cam_t.flatten(1), dim=1))


def middle_stage(feats: list[Tensor]) -> int:
    """Index in ``feats`` of the middle stage map: F[2] of 3 stage maps, F[3] of 4."""
    return 1 + (len(feats) - 2) // 2


class LwMMethod(DistillMethod):
    """:class:`LwM` on each net's middle stage map; the teacher's map comes from its attached pass."""

    def __init__(self, tap_s: int, tap_t: int):
        super().__init__()
        self.tap_s, self.tap_t = tap_s, tap_t
        self.criterion = LwM()

    def forward(self, batch: DistillBatch) -> Tensor:
        feat_t, logit_t = batch.graph_t
        return self.criterion(batch.logit_s, batch.feat_s[self.tap_s], logit_t, feat_t[self.tap_t], batch.target)


def build(ctx: MethodContext) -> LwMMethod:
    stage_maps(ctx.feat_s, ctx.feat_t, "LwM")
    return LwMMethod(middle_stage(ctx.feat_s), middle_stage(ctx.feat_t))


register(
    MethodSpec(
        name="lwm",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=0.4),
        teacher_graph=True,  # the teacher's maps must be in a graph: its input requires grad
        compilable=False,  # the student's Grad-CAM gradients are back-propagated (double backward)
        summary="Grad-CAM attention on the middle stage map (Dhar et al. 2019, as KD-Zoo)",
    )
)
