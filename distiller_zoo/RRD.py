"""RRD: Giakoumoglou & Stathaki, "Relational Representation Distillation", 2024 (arXiv:2407.12073).

The student's similarities to a large set of stored teacher embeddings, softened at ``--nce_t_s``,
must match the teacher's own similarities to that set, sharpened at ``--nce_t_t`` (a cross-entropy
between the two distributions). The set is a FIFO queue of past teacher embeddings
(``--memory_type fifo``, default) or CRD's momentum memory with its sampled contrast indices
(``--memory_type momentum``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crd.memory import ContrastMemory
from crd.sampling import MODES
from distiller_zoo._common import opt_with_dims
from distiller_zoo.registry import DistillBatch, DistillMethod, MethodContext, MethodSpec, Weights, flag_tag, register
from helper.distributed import all_gather_cat, group_info

__all__ = ["RRDLoss", "RRD_FifoMemory_Loss", "RRD_MomentumMemory_Loss"]

MEMORY_TYPES = ("fifo", "momentum")


def relational_loss(out_s: Tensor, out_t: Tensor, nce_t_s: float, nce_t_t: float) -> Tensor:
    """``-mean_b sum_k softmax(out_t / nce_t_t)_bk * log_softmax(out_s / nce_t_s)_bk``, teacher side detached.

    Scores are ``[B, K]`` (or ``[B, K, 1]``); the softmaxes run over the K stored embeddings.
    """
    out_s, out_t = out_s.reshape(out_s.shape[0], -1), out_t.reshape(out_t.shape[0], -1)
    target = F.softmax(out_t.detach() / nce_t_t, dim=1)
    return -(target * F.log_softmax(out_s / nce_t_s, dim=1)).sum(dim=1).mean()


def _embeddings(opt: argparse.Namespace) -> tuple[nn.Linear, nn.Linear]:
    """Student and teacher projections to ``feat_dim``.

    The loss detaches the teacher's side, so the teacher projection never receives a gradient (in
    the reference it sits in the optimizer and stays at its random initialisation); it is frozen
    here to say so. Its weights are saved with the run all the same.
    """
    return nn.Linear(opt.s_dim, opt.feat_dim), nn.Linear(opt.t_dim, opt.feat_dim).requires_grad_(False)


class RRD_FifoMemory_Loss(nn.Module):  # noqa: N801 (the reference's class name)
    """RRD against a FIFO queue of the last ``nce_k`` teacher embeddings (buffers ``queue``, ``queue_ptr``).

    Each step enqueues the batch's teacher embeddings first, then scores both sides against the
    whole queue, as the reference. The queue starts as Gaussian noise normalised along dim 0 (each
    of its 128 columns unit-norm, the reference's quirk), and is overwritten within ``nce_k / B`` steps.

    The reference asserts ``nce_k % B == 0`` and drops the loader's last partial batch; here a batch
    of any size is written at ``ptr, ptr+1, ...`` modulo ``nce_k`` (wrapping around the end, and
    keeping the newest ``nce_k`` when a batch is larger than the queue), which equals the reference
    whenever its assertion holds. Under torchrun every rank enqueues the whole global batch in rank
    order, so the queue and pointer stay identical on every rank.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.nce_k = opt.nce_k
        self.nce_t_s = opt.nce_t_s
        self.nce_t_t = opt.nce_t_t
        self.embed_s, self.embed_t = _embeddings(opt)
        self.register_buffer("queue", F.normalize(torch.randn(opt.nce_k, opt.feat_dim), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        v_s = F.normalize(self.embed_s(f_s), dim=1)
        v_t = F.normalize(self.embed_t(f_t), dim=1)
        self._dequeue_and_enqueue(v_t)
        # A copy: the next step's in-place enqueue must not touch the tensor saved for backward.
        queue = self.queue.clone()
        return relational_loss(v_s @ queue.T, v_t @ queue.T, self.nce_t_s, self.nce_t_t)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: Tensor) -> None:
        """Write the (globally gathered) keys at the pointer, wrapping around; advance the pointer.

        Positions are computed on the device, so the step needs no host synchronisation.
        """
        keys = all_gather_cat(keys, group_info()).to(self.queue.dtype)
        n, size = keys.shape[0], self.queue.shape[0]
        kept = min(n, size)  # a batch larger than the queue: only its newest `size` rows survive
        positions = (self.queue_ptr + torch.arange(n - kept, n, device=self.queue.device)) % size
        self.queue.index_copy_(0, positions, keys[n - kept :])
        self.queue_ptr.copy_((self.queue_ptr + n) % size)


class RRD_MomentumMemory_Loss(nn.Module):  # noqa: N801 (the reference's class name)
    """RRD against CRD's momentum memory (:class:`crd.memory.ContrastMemory`, ``n_data`` x ``feat_dim``
    banks at ``nce_t``/``nce_m``), scored at the ``[B, nce_k+1]`` contrast indices of each sample.

    As the reference, the two softmaxes are taken over the memory's outputs, which are already
    ``exp(score / nce_t) / Z``: a softmax of exponentiated scores, odd but what the code computes.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.embed_s, self.embed_t = _embeddings(opt)
        self.contrast = ContrastMemory(opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m)
        self.nce_t_t = opt.nce_t_t
        self.nce_t_s = opt.nce_t_s

    def forward(self, f_s: Tensor, f_t: Tensor, idx: Tensor, contrast_idx: Tensor | None = None) -> Tensor:
        # exp(score / 0.07) reaches 1.6e6: past float16's range, so never under autocast (as CRD).
        with torch.autocast(device_type=f_s.device.type, enabled=False):
            v_s = F.normalize(self.embed_s(f_s.float()), dim=1)
            v_t = F.normalize(self.embed_t(f_t.float()), dim=1)
            out_s, out_t = self.contrast(v_s, v_t, idx, contrast_idx)
            return relational_loss(out_s, out_t, self.nce_t_s, self.nce_t_t)


class RRDLoss(nn.Module):
    """The FIFO or the momentum variant, after ``opt.memory_type`` (``fifo`` when absent).

    ``opt`` provides ``s_dim``, ``t_dim``, ``feat_dim``, ``nce_k``, ``nce_t_s``, ``nce_t_t`` and, for
    the momentum memory, ``n_data``, ``nce_t`` and ``nce_m``.
    """

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.memory_type = getattr(opt, "memory_type", "fifo")
        if self.memory_type == "momentum":
            self.memory = RRD_MomentumMemory_Loss(opt)
        else:
            self.memory = RRD_FifoMemory_Loss(opt)

    def forward(self, f_s: Tensor, f_t: Tensor, idx: Tensor | None = None,
                contrast_idx: Tensor | None = None) -> Tensor:
        if self.memory_type == "momentum":
            return self.memory(f_s, f_t, idx, contrast_idx)
        return self.memory(f_s, f_t)

    @property
    def embed_s(self) -> nn.Linear:
        return self.memory.embed_s

    @property
    def embed_t(self) -> nn.Linear:
        return self.memory.embed_t


class RRDMethod(DistillMethod):
    """:class:`RRDLoss` on the pooled features ``F[-1]``; the queue or the banks are buffers saved with the run."""

    def __init__(self, opt: argparse.Namespace):
        super().__init__()
        self.criterion = RRDLoss(opt)

    def forward(self, batch: DistillBatch) -> Tensor:
        f_s, f_t = batch.feat_s[-1], batch.feat_t[-1].detach()
        if self.criterion.memory_type == "fifo":
            return self.criterion(f_s, f_t)
        if batch.index is None:
            raise ValueError("rrd --memory_type momentum needs each batch's dataset indices (a contrastive-sampling "
                             "data loader)")
        return self.criterion(f_s, f_t, batch.index, batch.contrast_idx)


def build(ctx: MethodContext) -> RRDMethod:
    opt = ctx.opt
    if opt.memory_type not in MEMORY_TYPES:
        raise ValueError(f"--memory_type '{opt.memory_type}' is unknown for rrd; use one of: {', '.join(MEMORY_TYPES)}")
    if opt.nce_t_s <= 0 or opt.nce_t_t <= 0:
        raise ValueError(f"rrd needs --nce_t_s > 0 and --nce_t_t > 0, got {opt.nce_t_s} and {opt.nce_t_t}")
    if opt.memory_type == "momentum":
        if opt.mode not in MODES:
            raise ValueError(f"--mode '{opt.mode}' is unknown for rrd; use one of: {', '.join(MODES)}")
        if not 0 < opt.nce_k < ctx.n_data:
            raise ValueError(f"--nce_k must be in [1, {ctx.n_data - 1}] for a training set of {ctx.n_data}")
    return RRDMethod(opt_with_dims(ctx))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--memory_type", default="fifo", choices=MEMORY_TYPES,
                       help="fifo: a queue of the last --nce_k teacher embeddings; momentum: CRD's memory banks "
                            "and contrast sampling (--nce_k negatives, --nce_t, --nce_m, --mode)")
    group.add_argument("--nce_t_s", type=float, default=0.1, help="student temperature")
    group.add_argument("--nce_t_t", type=float, default=0.02, help="teacher temperature (sharper)")


def uses_memory_bank(opt: argparse.Namespace) -> bool:
    """The momentum memory is indexed by dataset position: the loader must supply CRD's indices."""
    return opt.memory_type == "momentum"


register(
    MethodSpec(
        name="rrd",
        batch_local=False,
        build=build,
        # The distillers README/script: -a 0 -b 1 (RRD), -a 1 -b 1 (RRD+KD).
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        needs_contrast=uses_memory_bank,
        add_args=add_args,
        run_tag=flag_tag("memory_type", "fifo"),
        summary="relational representation distillation against a queue or memory of teacher embeddings "
                "(Giakoumoglou 2024)",
    )
)
