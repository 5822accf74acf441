"""IRG: Liu et al., "Knowledge Distillation via Instance Relationship Graph", CVPR 2019.

The teacher's knowledge is a graph over the samples of a batch: its vertices are the samples'
outputs, its edges their pairwise distances at a layer, and its transformation how far each
sample moves from one layer to the next. The student matches all three.

Two forms, as the two reference repositories implement it (``--irg_variant``):

* ``zoo`` (default), Knowledge-Distillation-Zoo's one-to-one form, class :class:`IRG`: vertices on
  the logits, edges on the last two stage maps and the pooled features, the transformation from
  the second-last to the last stage map.
* ``semckd``, SemCKD's form, class :class:`IRGLoss`: edges (and vertices when the shapes agree) on
  the pooled features, transformations between the pairs of layers ``--transform_layer_s/t`` name.
"""

from __future__ import annotations

import argparse

import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, flag_tag, register
from distiller_zoo.RKD import RKDLoss


def relation(x: Tensor, eps: float = 1e-12) -> Tensor:
    """The edges: B x B squared distances between flattened samples (>= eps, zero diagonal) over their max.

    Both references divide by the max (SemCKD adds 1e-12 to it); the max is floored at ``eps`` so a
    lone sample gives 0 rather than 0/0.
    """
    d = RKDLoss.pdist(x.reshape(x.shape[0], -1), squared=True, eps=eps)
    return d / d.max().clamp(min=eps)


def _average_channels(x: Tensor, channels: int) -> Tensor:
    """Average adjacent channels of ``x`` down to ``channels`` (adaptive pooling along the channel axis)."""
    b, c, h, w = x.shape
    if c == channels:
        return x
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    pooled = F.adaptive_avg_pool1d(rows, channels)
    return pooled.reshape(b, h, w, channels).permute(0, 3, 1, 2)


def transformation(fm1: Tensor, fm2: Tensor, eps: float = 1e-12) -> Tensor:
    """Per sample, the squared distance between a stage map and the next one (>= eps), over its batch max.

    KD-Zoo pools the earlier map to the later one's size and, when the later map has twice the
    channels, averages its adjacent channel pairs. For any pair of our models we pool the larger map
    and average the wider map's channels down to the narrower count: KD-Zoo's rule wherever it applies.
    """
    fm1, fm2 = pool_to_match(fm1, fm2)
    narrow = min(fm1.shape[1], fm2.shape[1])
    fm1, fm2 = _average_channels(fm1, narrow), _average_channels(fm2, narrow)
    d = (fm1 - fm2).pow(2).reshape(fm1.shape[0], -1).sum(dim=1).clamp(min=eps)
    return d / d.max()


class IRG(nn.Module):
    """KD-Zoo's one-to-one IRG: w_vert * L_vertex + w_edge * L_edge + w_tran * L_transformation.

    ``forward([fm1, fm2, feat, out] of the student, the same of the teacher)``: L_vertex =
    mse(out_s, out_t); L_edge = mean over (feat, fm1, fm2) of mse(relation_s, relation_t);
    L_transformation = mse(transformation_s(fm1, fm2), transformation_t(fm1, fm2)).
    """

    def __init__(self, w_irg_vert: float, w_irg_edge: float, w_irg_tran: float):
        super().__init__()
        self.w_irg_vert = w_irg_vert
        self.w_irg_edge = w_irg_edge
        self.w_irg_tran = w_irg_tran

    def forward(self, irg_s: list[Tensor], irg_t: list[Tensor]) -> Tensor:
        fm_s1, fm_s2, feat_s, out_s = irg_s
        fm_t1, fm_t2, feat_t, out_t = irg_t
        loss_vert = F.mse_loss(out_s, out_t)
        pairs = ((feat_s, feat_t), (fm_s1, fm_t1), (fm_s2, fm_t2))
        loss_edge = sum(F.mse_loss(relation(s), relation(t)) for s, t in pairs) / len(pairs)
        loss_tran = F.mse_loss(transformation(fm_s1, fm_s2), transformation(fm_t1, fm_t2))
        return self.w_irg_vert * loss_vert + self.w_irg_edge * loss_edge + self.w_irg_tran * loss_tran


class IRGLoss(nn.Module):
    """SemCKD's IRG: w_graph * (mse of the pooled features' relations [+ mse of the features when
    their shapes agree]) + w_transform * a term per pair of transform layers (first and second,
    third and fourth, ...): the squared difference between mse(relation(l1), relation(l2)) of
    student and teacher [+ the same on the raw maps when both nets' two maps share a shape].
    """

    def __init__(self, w_graph: float = 1, w_transform: float = 1):
        super().__init__()
        self.w_graph = w_graph
        self.w_transform = w_transform

    def forward(self, f_s: Tensor, f_t: Tensor, transform_s: list[Tensor], transform_t: list[Tensor],
                no_edge_transform: bool = False) -> Tensor:
        loss = F.mse_loss(relation(f_s), relation(f_t))
        if f_s.shape == f_t.shape:
            loss = loss + F.mse_loss(f_s, f_t)
        loss = self.w_graph * loss
        # as SemCKD, an unpaired trailing layer is ignored here (the CLI rejects such lists)
        layers = list(zip(transform_s, transform_t, strict=False))
        for (l1_s, l1_t), (l2_s, l2_t) in zip(layers[0::2], layers[1::2], strict=False):
            loss = loss + self.w_transform * self.transform_loss(l1_s, l2_s, l1_t, l2_t, not no_edge_transform)
        return loss

    @staticmethod
    def transform_loss(l1_s: Tensor, l2_s: Tensor, l1_t: Tensor, l2_t: Tensor, edge_transform: bool = True) -> Tensor:
        loss = l1_s.new_zeros(())
        if edge_transform:
            change_s = F.mse_loss(relation(l1_s), relation(l2_s))
            change_t = F.mse_loss(relation(l1_t), relation(l2_t))
            loss = loss + (change_s - change_t) ** 2
        if l1_s.shape == l2_s.shape and l1_t.shape == l2_t.shape:
            loss = loss + (F.mse_loss(l1_s, l2_s) - F.mse_loss(l1_t, l2_t)) ** 2
        return loss


class IRGMethod(DistillMethod):
    """KD-Zoo's taps on our feature lists: rb2, rb3 = the last two stage maps ``F[-3]``, ``F[-2]``
    (of 3 or 4), feat = the pooled ``F[-1]``, out = the logits."""

    def __init__(self, criterion: IRG):
        super().__init__()
        self.criterion = criterion

    def forward(self, batch: DistillBatch) -> Tensor:
        taps_s = [*batch.feat_s[-3:], batch.logit_s]
        taps_t = [t.detach() for t in (*batch.feat_t[-3:], batch.logit_t)]
        return self.criterion(taps_s, taps_t)


class SemCKDIRGMethod(DistillMethod):
    """SemCKD's taps: the pooled ``F[-1]`` and the maps ``F[i]`` at the given transform indices."""

    def __init__(self, layers_s: list[int], layers_t: list[int], edge_transform: bool):
        super().__init__()
        self.criterion = IRGLoss()
        self.layers_s, self.layers_t, self.edge_transform = layers_s, layers_t, edge_transform

    def forward(self, batch: DistillBatch) -> Tensor:
        transform_s = [batch.feat_s[i] for i in self.layers_s]
        transform_t = [batch.feat_t[i].detach() for i in self.layers_t]
        return self.criterion(batch.feat_s[-1], batch.feat_t[-1].detach(), transform_s, transform_t,
                              not self.edge_transform)


def _check_layers(flag: str, layers: list[int], n_feats: int) -> None:
    if any(not -n_feats <= i < n_feats for i in layers):
        raise ValueError(f"{flag} {layers}: indices must lie in the {n_feats} entries of the feature list")


def build(ctx: MethodContext) -> DistillMethod:
    opt = ctx.opt
    transforms = opt.transform_layer_s or opt.transform_layer_t or opt.no_edge_transform
    if opt.irg_variant == "zoo":
        if transforms:
            raise ValueError("--transform_layer_s/t and --no_edge_transform belong to --irg_variant semckd")
        for feats in (ctx.feat_s, ctx.feat_t):
            if len(feats) < 4 or any(f.dim() != 4 for f in feats[-3:-1]):
                raise ValueError("irg (zoo) needs two 4-D stage maps F[-3], F[-2] from both networks")
        return IRGMethod(IRG(opt.w_irg_vert, opt.w_irg_edge, opt.w_irg_tran))
    if len(opt.transform_layer_s) != len(opt.transform_layer_t) or len(opt.transform_layer_s) % 2:
        raise ValueError("--transform_layer_s and --transform_layer_t need the same, even number of indices "
                         "(each two consecutive indices are one transformation)")
    _check_layers("--transform_layer_s", opt.transform_layer_s, len(ctx.feat_s))
    _check_layers("--transform_layer_t", opt.transform_layer_t, len(ctx.feat_t))
    return SemCKDIRGMethod(list(opt.transform_layer_s), list(opt.transform_layer_t), not opt.no_edge_transform)


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--irg_variant", default="zoo", choices=["zoo", "semckd"],
                       help="zoo: KD-Zoo's one-to-one IRG (default weights -r 1 -a 0 -b 1); "
                            "semckd: SemCKD's IRGLoss (its script: -r 1 -a 1 -b 0.005)")
    group.add_argument("--w_irg_vert", type=float, default=0.1, help="zoo: weight of the vertex (logits) term")
    group.add_argument("--w_irg_edge", type=float, default=5.0, help="zoo: weight of the edge terms")
    group.add_argument("--w_irg_tran", type=float, default=5.0, help="zoo: weight of the transformation term")
    group.add_argument("--transform_layer_s", nargs="+", type=int, default=[],
                       help="semckd: student feature indices, taken in pairs, for transformation terms")
    group.add_argument("--transform_layer_t", nargs="+", type=int, default=[],
                       help="semckd: teacher feature indices, paired with --transform_layer_s")
    group.add_argument("--no_edge_transform", action="store_true",
                       help="semckd: drop the relation part of the transformation terms")


register(
    MethodSpec(
        name="irg",
        batch_local=False,
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        summary="instance relationship graph: vertices, edges, transformations (Liu et al. 2019)",
        add_args=add_args,
        run_tag=flag_tag("irg_variant", "zoo"),
    )
)
