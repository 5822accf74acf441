"""A network trained in the teacher's place (DML's peer), answering the calls a frozen teacher answers."""

from __future__ import annotations

from torch import Tensor, nn


class TrainedPeer(nn.Module):
    """The peer network behind the teacher's interface: ``peer(x)``, ``peer(x, is_feat=True, preact=...)``.

    Unlike :class:`helper.teacher.FrozenTeacher` it runs with autograd on (it is being trained, so
    ``input_grad`` changes nothing) and returns float32 views of its outputs for the losses. Its mode
    is left to the method that owns the network (train while training, eval in validation), so the
    trainer's ``teacher.eval()`` does not reach it.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def train(self, mode: bool = True) -> TrainedPeer:
        return self

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False,
                input_grad: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        if not is_feat:
            return self.network(x).float()
        feats, logits = self.network(x, is_feat=True, preact=preact)
        return [f.float() for f in feats], logits.float()
