"""DML: Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018 (arXiv:1706.00384).

Two networks learn together from scratch, each from the labels and from the other's predictions on
the same batch. Here one is the student and the other a peer built from ``--model_t`` (initialised
from ``--path_t`` when given): the spec ``trains_peer``, so there is no frozen teacher. The peer is a
submodule of the method, hence optimised with it, saved in ``ckpt_last.pth``, restored on resume,
broadcast and gradient-averaged under DDP; the trainer evaluates and saves it beside the student.
"""

from __future__ import annotations

import argparse

from torch import Tensor, nn

from distiller_zoo.KD import DistillKL
from distiller_zoo.registry import (
    DistillBatch,
    DistillMethod,
    LossFn,
    MethodContext,
    MethodSpec,
    PeerNetwork,
    Weights,
    register,
)


class DML(DistillKL):
    """``DML()(out1, out2)``: KL(softmax(out2) || softmax(out1)), summed over classes, averaged over the batch.

    KD-Zoo's loss (``batchmean`` KL at temperature 1); ``out2`` is the other network's logits, which
    the caller detaches. ``T`` (default 1, KD-Zoo's and the paper's) softens both sides, times T^2 as
    in KD, so this is :class:`DistillKL` with the mutual-learning default.
    """

    def __init__(self, T: float = 1.0):
        super().__init__(T)


class MutualLearning(DistillMethod):
    """Both networks' losses from one forward of each (KD-Zoo avoids a second forward on purpose).

    Student: ``-r`` CE + ``-a`` KD(kd_T) + ``-b`` DML towards the detached peer; the peer the same
    towards the detached student (terms ``peer_cls``, ``peer_div``, ``peer_kd``, the same weights).
    Each term reaches one network only, so one backward of the sum gives each network the gradient
    of its own loss: KD-Zoo's two backward passes and two steps, in one.
    """

    def __init__(self, peer: nn.Module, peer_arch: str, T: float, weights: Weights):
        super().__init__()
        self.peer = peer
        self.peer_arch = peer_arch
        self.criterion = DML(T)
        self.extra_weights = {"peer_cls": weights.gamma, "peer_div": weights.alpha, "peer_kd": weights.beta}

    def forward(self, batch: DistillBatch) -> Tensor:
        """The student's mutual-learning term (``-b``)."""
        return self.criterion(batch.logit_s, batch.logit_t.detach())

    def loss_terms(self, batch: DistillBatch, ce: LossFn, kd: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        z_s, z_p, y = batch.logit_s, batch.logit_t, batch.target
        return z_s, {
            "cls": ce(z_s, y), "div": kd(z_s, z_p.detach()), "kd": self(batch),
            "peer_cls": ce(z_p, y), "peer_div": kd(z_p, z_s.detach()), "peer_kd": self.criterion(z_p, z_s.detach()),
        }

    def peer_networks(self) -> list[PeerNetwork]:
        return [PeerNetwork("peer", self.peer_arch, self.peer)]


def build(ctx: MethodContext) -> MutualLearning:
    opt = ctx.opt
    if opt.dml_T <= 0:
        raise ValueError(f"--dml_T must be positive, got {opt.dml_T}")
    return MutualLearning(ctx.teacher, opt.model_t, opt.dml_T, Weights(opt.gamma, opt.alpha, opt.beta))


def add_args(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--dml_T", type=float, default=1.0,
                       help="DML: temperature of the mutual KL (1: KD-Zoo and the paper)")


register(
    MethodSpec(
        name="dml",
        build=build,
        weights=Weights(gamma=1.0, alpha=0.0, beta=1.0),
        uses_features=False,
        trains_peer=True,
        add_args=add_args,
        summary="deep mutual learning: the student and a --model_t peer trained together (Zhang et al. 2018)",
    )
)
