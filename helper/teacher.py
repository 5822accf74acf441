"""The frozen teacher: eval mode, inference mode, BatchNorms folded into their convolutions.

A teacher is never stepped and always in eval mode, so each BatchNorm is a fixed per-channel
affine map; folding it into the convolution before it gives the same outputs (up to float
rounding) and skips a full pass over every activation (measured in docs/benchmark.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch.fx.experimental.optimization import fuse

from helper.setup import Runtime, place_model


class FrozenTeacher(nn.Module):
    """Answers ``teacher(x)`` and ``teacher(x, is_feat=True, preact=...)`` as the model does.

    Runs the network under ``torch.inference_mode`` and returns float32 copies: ordinary tensors
    that the losses may save for backward (inference tensors may not be), in the precision the
    losses run in. ``preact`` is fixed when the teacher is frozen (a method always asks the same).
    """

    def __init__(self, network: nn.Module, preact: bool):
        super().__init__()
        self.network = network
        self.preact = preact

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Always eval: the teacher's BatchNorms keep their running statistics whatever a caller asks."""
        return super().train(False)

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False,
                input_grad: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        """``input_grad``: keep autograd on, so outputs can be differentiated with respect to ``x``
        (adversarial samples, Jacobians, Grad-CAM); the parameters still never require grad."""
        if is_feat and preact != self.preact:
            raise ValueError(f"this teacher was frozen for preact={self.preact}, asked for preact={preact}")
        with torch.enable_grad() if input_grad else torch.inference_mode():
            feats, logits = self.network(x, True, self.preact)  # positional: tracing renames the keywords
        logits = logits.to(torch.float32, copy=True)
        if not is_feat:
            return logits
        return [f.to(torch.float32, copy=True) for f in feats], logits


def fold_batchnorms(model: nn.Module, preact: bool) -> nn.Module:
    """The eval-mode model with each BatchNorm that only follows a convolution folded into it.

    Traces the forward with ``is_feat=True`` and the given ``preact``; a BatchNorm is folded only
    where the convolution's output feeds nothing else, so every feature the methods tap is
    unchanged. A model whose forward cannot be traced (shape-dependent branches) is returned
    as it is: folding is a speed-up, never a change in what the teacher computes.
    """
    try:
        traced = fx.symbolic_trace(model.eval(), concrete_args={"is_feat": True, "preact": preact})
    except Exception:  # noqa: BLE001 - any tracing failure means: keep the model unfolded
        return model
    return fuse(traced, inplace=True, no_trace=True)


def freeze_teacher(model: nn.Module, rt: Runtime, preact: bool, fold_bn: bool) -> FrozenTeacher:
    """Eval mode, no gradients, BatchNorms folded when ``fold_bn``, placed as the student is."""
    model = model.eval().requires_grad_(False)
    network = fold_batchnorms(model, preact) if fold_bn else model
    return FrozenTeacher(place_model(network, rt, "the teacher"), preact).eval()
