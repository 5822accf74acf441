"""SemCKD: Chen et al., "Cross-Layer Distillation with Semantic Calibration", AAAI 2021 (arXiv:2012.03236).

Every student stage is regressed onto every teacher stage; per sample, an attention over the teacher
stages weighs those pair losses, so each student stage learns mostly from the teacher stages whose
view of the batch (their sample-similarity rows) resembles its own. Class names and constructors are
SemCKD's (``SemCKDLoss``, ``SelfA``; ``AAEmbed`` and ``MLPEmbed`` in models/util.py), as are the
submodule names, so its attention state loads here.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from distiller_zoo._common import pool_to_match
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, register
from helper.distributed import group_info
from models.util import AAEmbed, MLPEmbed

__all__ = ["SelfA", "SemCKDLoss", "SemCKDMethod", "check_batch_fits", "is_full_batch"]


def _batch_similarity(feat: Tensor) -> Tensor:
    """B x B inner products of the flattened samples (the rows the query/key embeddings read)."""
    flat = feat.reshape(feat.shape[0], -1)
    return flat @ flat.t()


class SelfA(nn.Module):
    """Cross-layer attention and the per-pair regressors.

    ``input_channel`` is the batch size: the query (per student stage) and key (per teacher stage)
    embeddings read a row of the B x B similarity matrix, so only full batches fit them.
    Returns the regressed student maps ``[i][j]``, the (pooled) teacher maps ``[i][j]`` and the
    attention ``B x S x T`` (softmax over teacher stages of query . key).
    """

    def __init__(self, s_len: int, t_len: int, input_channel: int, s_n: list[int], s_t: list[int],
                 factor: int = 4):
        super().__init__()
        self.s_len, self.t_len = s_len, t_len
        for j in range(t_len):
            setattr(self, f"key_weight{j}", MLPEmbed(input_channel, input_channel // factor))
        for i in range(s_len):
            setattr(self, f"query_weight{i}", MLPEmbed(input_channel, input_channel // factor))
        for i in range(s_len):
            for j in range(t_len):
                # SemCKD's key names ('regressor' + str(i) + str(j)), so its state dicts load.
                setattr(self, f"regressor{i}{j}", AAEmbed(s_n[i], s_t[j]))

    def forward(self, feat_s: list[Tensor], feat_t: list[Tensor]) -> tuple[list[list[Tensor]], list[list[Tensor]],
                                                                           Tensor]:
        keys = torch.stack([getattr(self, f"key_weight{j}")(_batch_similarity(f)) for j, f in enumerate(feat_t)],
                           dim=2)  # B x d x T
        queries = torch.stack([getattr(self, f"query_weight{i}")(_batch_similarity(f))
                               for i, f in enumerate(feat_s)], dim=1)  # B x S x d
        attention = F.softmax(torch.bmm(queries, keys), dim=-1)
        values_s: list[list[Tensor]] = []
        values_t: list[list[Tensor]] = []
        for i, f_s in enumerate(feat_s):
            row_s, row_t = [], []
            for j, f_t in enumerate(feat_t):
                # the larger map is pooled to the smaller one's size, the student before its regressor
                pooled_s, pooled_t = pool_to_match(f_s, f_t)
                row_s.append(getattr(self, f"regressor{i}{j}")(pooled_s))
                row_t.append(pooled_t)
            values_s.append(row_s)
            values_t.append(row_t)
        return values_s, values_t, attention


class SemCKDLoss(nn.Module):
    """sum over (b, i, j) of attention[b, i, j] * mean_chw (s_value[i][j] - f_target[i][j])^2, over B * S.

    The attention is not detached: the query and key embeddings learn through this loss.
    """

    def forward(self, s_value: list[list[Tensor]], f_target: list[list[Tensor]], weight: Tensor) -> Tensor:
        bsz, num_stu, num_tea = weight.shape
        per_pair = torch.stack([
            torch.stack([(s_value[i][j] - f_target[i][j]).pow(2).reshape(bsz, -1).mean(1) for j in range(num_tea)],
                        dim=1)
            for i in range(num_stu)
        ], dim=1)  # B x S x T
        return (weight * per_pair).sum() / (bsz * num_stu)


def is_full_batch(n: int, batch_size: int) -> bool:
    """Whether a training step of ``n`` samples is taken (SemCKD skips the smaller ones).

    Under DDP every rank decides alone and all decide alike: both training loaders draw from
    :class:`helper.sampler.ResumableSampler`, which pads the epoch so each rank gets exactly
    ``ceil(N / world)`` samples (also when resuming, which starts every rank at the same batch), and
    ``--batch_size`` is per process and checked equal on every rank in :func:`build`; so the k-th batch
    has the same length on every rank, and no rank skips a step that another takes (which would
    leave DDP's all-reduce waiting).
    """
    return n >= batch_size


class SemCKDMethod(DistillMethod):
    """:class:`SelfA` + :class:`SemCKDLoss` on the stage maps ``F[1:-1]`` of both nets (all of them:
    every student stage meets every teacher stage, whatever their numbers)."""

    def __init__(self, attention: SelfA, batch_size: int):
        super().__init__()
        self.attention = attention  # SemCKD's checkpoint key for this module
        self.criterion = SemCKDLoss()
        self.batch_size = batch_size

    def prepare_batch(self, batch: list[Tensor]) -> list[Tensor] | None:
        return batch if is_full_batch(batch[0].shape[0], self.batch_size) else None

    def forward(self, batch: DistillBatch) -> Tensor:
        maps_t = [f.detach() for f in batch.feat_t[1:-1]]
        return self.criterion(*self.attention(batch.feat_s[1:-1], maps_t))

    def model_file_extras(self) -> dict:
        """SemCKD's student files carry the attention's state under 'attention'; ours do too."""
        return {"attention": self.attention.state_dict()}


def _same_on_every_rank(batch_size: int) -> None:
    """Under DDP, every rank's --batch_size must be equal: the embeddings' widths, and so the
    parameters whose gradients are averaged, depend on it. One collective, at build time."""
    info = group_info()
    if not info.enabled:
        return
    sizes: list[int | None] = [None] * info.world_size
    dist.all_gather_object(sizes, batch_size)
    if len(set(sizes)) > 1:
        raise ValueError(f"semckd needs the same --batch_size on every process, got {', '.join(map(str, sizes))}")


def check_batch_fits(batch_size: int, n_data: int, world_size: int) -> None:
    """One full batch per process at least, or every step would be skipped: each rank's sampler yields
    ``ceil(n_data / world_size)`` samples an epoch."""
    per_process = math.ceil(n_data / world_size)
    if per_process < batch_size:
        where = f" (over {world_size} processes)" if world_size > 1 else ""
        raise ValueError(f"semckd skips batches smaller than --batch_size {batch_size}, and the training set of "
                         f"{n_data} images gives {per_process} per process{where}: every step would be skipped; "
                         f"use --batch_size {per_process} or less")


def build(ctx: MethodContext) -> SemCKDMethod:
    maps_s, maps_t = ctx.feat_s[1:-1], ctx.feat_t[1:-1]
    if not maps_s or not maps_t or any(f.dim() != 4 for f in (*maps_s, *maps_t)):
        raise ValueError("semckd needs 4-D stage feature maps F[1:-1] from both networks")
    batch_size = ctx.opt.batch_size
    _same_on_every_rank(batch_size)
    if batch_size < 4:
        raise ValueError(f"semckd's query/key embeddings are --batch_size / 4 wide: --batch_size must be at "
                         f"least 4, got {batch_size}")
    check_batch_fits(batch_size, ctx.n_data, group_info().world_size)
    attention = SelfA(len(maps_s), len(maps_t), batch_size, [f.shape[1] for f in maps_s],
                      [f.shape[1] for f in maps_t])
    return SemCKDMethod(attention, batch_size)


register(
    MethodSpec(
        name="semckd",
        batch_local=False,
        build=build,
        # SemCKD's script and README: -r 1 -a 1 -b 400 (CIFAR-100); -b 50 for ImageNet ResNet34 -> ResNet18.
        weights=Weights(gamma=1.0, alpha=1.0, beta=400.0),
        summary="semantic-calibrated cross-layer distillation, attention over stage pairs (Chen et al. 2021)",
    )
)
