"""BatchNorm-statistics hooks (DeepInversion's feature regulariser, with Fast-DFKD's momentum)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class DeepInversionHook:
    """A forward hook on one BatchNorm2d: from the batch it normalises (the BN's **input**), the
    per-channel mean μ and biased variance σ², and

        r_feature = ‖running_var − σ̃²‖₂ + ‖running_mean − μ̃‖₂,

    where σ̃² = σ² and μ̃ = μ until :meth:`update_mmt` has run once; afterwards
    μ̃ = (1 − m)·μ + m·μ_mmt (σ̃² likewise), m = ``mmt_rate`` (``--bn_mmt``).

    Computes only while ``active`` (synthesis), so the teacher's and student's other passes pay nothing.
    """

    def __init__(self, module: nn.BatchNorm2d, mmt_rate: float):
        self.module = module
        self.mmt_rate = mmt_rate
        self.mmt: tuple[Tensor, Tensor] | None = None
        self.tmp_val: tuple[Tensor, Tensor] | None = None
        self.r_feature: Tensor | None = None
        self.active = False
        self.hook = module.register_forward_hook(self.hook_fn)

    def hook_fn(self, module: nn.BatchNorm2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not self.active:
            return
        var, mean = torch.var_mean(inputs[0].float(), dim=(0, 2, 3), unbiased=False)
        self.tmp_val = (mean.detach(), var.detach())
        if self.mmt is not None:
            mean_mmt, var_mmt = self.mmt
            mean = (1 - self.mmt_rate) * mean + self.mmt_rate * mean_mmt
            var = (1 - self.mmt_rate) * var + self.mmt_rate * var_mmt
        self.r_feature = torch.norm(module.running_var.float() - var, 2) + torch.norm(
            module.running_mean.float() - mean, 2)

    def update_mmt(self) -> None:
        """Fold the last batch's statistics into the momentum estimate (the first time: take them)."""
        mean, var = self.tmp_val
        if self.mmt is None:
            self.mmt = (mean, var)
        else:
            mean_mmt, var_mmt = self.mmt
            self.mmt = (self.mmt_rate * mean_mmt + (1 - self.mmt_rate) * mean,
                        self.mmt_rate * var_mmt + (1 - self.mmt_rate) * var)

    def remove(self) -> None:
        self.hook.remove()


class BNStatHooks:
    """One :class:`DeepInversionHook` per BatchNorm2d of a network, switched on together."""

    def __init__(self, network: nn.Module, mmt_rate: float = 0.0):
        self.hooks = [DeepInversionHook(m, mmt_rate) for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.hooks:
            raise ValueError(f"{type(network).__name__} has no BatchNorm2d layer: the BN-statistics loss needs one")

    def activate(self, on: bool) -> None:
        for h in self.hooks:
            h.active = on
            h.r_feature = None

    def loss(self) -> Tensor:
        """Σ r_feature over the hooked layers, from the last forward pass while active."""
        return sum(h.r_feature for h in self.hooks)

    def update_mmt(self) -> None:
        for h in self.hooks:
            h.update_mmt()

    def state(self) -> list[list[Tensor] | None]:
        return [None if h.mmt is None else [h.mmt[0], h.mmt[1]] for h in self.hooks]

    def load_state(self, state: Iterable[list[Tensor] | None], device: torch.device) -> None:
        for h, mmt in zip(self.hooks, state, strict=True):
            h.mmt = None if mmt is None else (mmt[0].to(device), mmt[1].to(device))

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
