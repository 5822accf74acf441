"""SimKD: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier", CVPR 2022 (arXiv:2203.14001).

A projector (1x1 -> 3x3 -> 1x1 convolutions with BN and ReLU, bottleneck width ``t_n / --factor``)
maps the student's last feature map onto the teacher's, trained by a mean squared error alone
(``-r 0 -a 0 -b 1``); the student then classifies with the teacher's own frozen classifier on the
pooled projection. So the network that is evaluated, saved and exported is the student plus the
projector plus the teacher's classifier (:class:`SimKDStudent`), and its training accuracy is
read from those logits, as the distillers reference (``imagenet/``) does.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import frozen_teacher_classifier, pool_to_match
from distiller_zoo.registry import DistillBatch, DistillMethod, LossFn, MethodContext, MethodSpec, Weights, register


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2, bias=False)


class SimKD(nn.Module):
    """The projector ``transfer`` and the prediction through the teacher's classifier.

    ``forward(feat_s, feat_t, cls_t)`` pools the larger of the two last maps to the other's size and
    returns ``(transfer(F_s), F_t, cls_t(GAP(transfer(F_s))))``, as the reference's module of the same name.
    """

    def __init__(self, *, s_n: int, t_n: int, factor: int = 2):
        super().__init__()
        mid = t_n // factor
        self.transfer = nn.Sequential(
            _conv(s_n, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv(mid, mid, 3), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv(mid, t_n, 1), nn.BatchNorm2d(t_n), nn.ReLU(),
        )

    def predict(self, trans_feat_s: Tensor, cls_t: nn.Module) -> Tensor:
        """The teacher classifier's logits on the globally pooled projection."""
        return cls_t(F.adaptive_avg_pool2d(trans_feat_s, 1).flatten(1))

    def forward(self, feat_s: Tensor, feat_t: Tensor, cls_t: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
        source, target = pool_to_match(feat_s, feat_t)
        trans_feat_s = self.transfer(source)
        return trans_feat_s, target, self.predict(trans_feat_s, cls_t)


class SimKDStudent(nn.Module):
    """The student as SimKD deploys it: ``cls_t(GAP(transfer(F_s[-2])))``, no teacher needed.

    ``target_hw`` is the teacher's last-map size seen in training: a larger student map is pooled to
    it first, as in training. ``forward(x, is_feat=True)`` answers like the models do, with the
    projection as the last map and its pooled vector as the feature.
    """

    def __init__(self, student: nn.Module, simkd: SimKD, cls_t: nn.Linear, target_hw: tuple[int, int]):
        super().__init__()
        self.student, self.simkd, self.cls_t = student, simkd, cls_t
        self.target_hw = tuple(target_hw)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False):
        feats, _ = self.student(x, is_feat=True, preact=preact)
        source = feats[-2]
        if source.shape[2] > self.target_hw[0]:
            source = F.adaptive_avg_pool2d(source, self.target_hw)
        trans = self.simkd.transfer(source)
        logits = self.simkd.predict(trans, self.cls_t)
        if not is_feat:
            return logits
        return [*feats[:-2], trans, F.adaptive_avg_pool2d(trans, 1).flatten(1)], logits


class SimKDMethod(DistillMethod):
    """``mse(transfer(F_s[-2]), F_t[-2])`` as the ``-b`` term; ``-r``/``-a`` act on the student's own
    logits (as the reference, which computes them before it replaces the logits); the reported
    logits are the teacher classifier's on the projection."""

    def __init__(self, s_n: int, t_n: int, factor: int, cls_t: nn.Linear, target_hw: tuple[int, int]):
        super().__init__()
        self.simkd = SimKD(s_n=s_n, t_n=t_n, factor=factor)
        self.cls_t = cls_t
        self.s_n, self.t_n, self.factor, self.target_hw = s_n, t_n, factor, tuple(target_hw)

    def _outputs(self, batch: DistillBatch) -> tuple[Tensor, Tensor]:
        trans_feat_s, trans_feat_t, logits = self.simkd(batch.feat_s[-2], batch.feat_t[-2].detach(), self.cls_t)
        return F.mse_loss(trans_feat_s, trans_feat_t), logits

    def forward(self, batch: DistillBatch) -> Tensor:
        return self._outputs(batch)[0]

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        loss, logits = self._outputs(batch)
        return logits, {"cls": ce(batch.logit_s, batch.target), "div": kd(batch.logit_s, batch.logit_t), "kd": loss}

    def eval_model(self, student: nn.Module) -> nn.Module:
        return SimKDStudent(student, self.simkd, self.cls_t, self.target_hw)

    def model_file_extras(self) -> dict:
        return {"simkd": {"s_n": self.s_n, "t_n": self.t_n, "factor": self.factor, "target_hw": list(self.target_hw),
                          "transfer": self.simkd.state_dict(), "cls_t": self.cls_t.state_dict()}}


def simkd_student(student: nn.Module, entry: dict) -> SimKDStudent:
    """The deployed SimKD student from a model file's ``'simkd'`` entry (:meth:`SimKDMethod.model_file_extras`)."""
    simkd = SimKD(s_n=entry["s_n"], t_n=entry["t_n"], factor=entry["factor"])
    simkd.load_state_dict(entry["transfer"])
    weight = entry["cls_t"]["weight"]
    cls_t = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in entry["cls_t"])
    cls_t.load_state_dict(entry["cls_t"])
    return SimKDStudent(student, simkd, cls_t.requires_grad_(False), tuple(entry["target_hw"]))


def build(ctx: MethodContext) -> SimKDMethod:
    f_s, f_t = ctx.feat_s[-2], ctx.feat_t[-2]
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError("SimKD needs a last feature map F[-2] (B, C, H, W) from both networks")
    if ctx.feat_t[-1].shape[1] != f_t.shape[1]:  # a head between the last map and the pool (MobileNetV2, ShuffleV2)
        raise ValueError(f"SimKD feeds the teacher's classifier a map shaped as the teacher's last one (F[-2], "
                         f"{f_t.shape[1]} channels), but this teacher's classifier reads {ctx.feat_t[-1].shape[1]} "
                         "features: choose a teacher whose classifier follows its last map (ResNets, WRNs, VGGs)")
    factor = int(ctx.opt.factor)
    if not 1 <= factor <= f_t.shape[1]:
        raise ValueError(f"--factor must be between 1 and the teacher's {f_t.shape[1]} channels, got {factor}")
    return SimKDMethod(f_s.shape[1], f_t.shape[1], factor, frozen_teacher_classifier(ctx), tuple(f_t.shape[2:]))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-f", "--factor", type=int, default=2,
                       help="SimKD: the projector's bottleneck is the teacher's channels / factor")


register(
    MethodSpec(
        name="simkd",
        build=build,
        # the reference's script: -c 0 -d 0 -b 1 (its cls/div/beta are our -r/-a/-b)
        weights=Weights(gamma=0.0, alpha=0.0, beta=1.0),
        summary="reused teacher classifier on a projected student map (Chen et al. 2022)",
        add_args=add_args,
    )
)
