"""CRD's memory: two momentum-updated banks of embeddings that supply the negatives.

As RepDistiller's ``crd/memory.py`` in behaviour and state (``params``, ``memory_v1``,
``memory_v2`` buffers), but device-agnostic: everything follows the device the module is moved
to, and the frozen normalisers Z live in the ``params`` buffer so a resumed run keeps them.
Under torchrun every rank updates the banks with the whole global batch and freezes the same Z,
so the memory stays identical on every rank, as one process's memory on that global batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from helper.distributed import all_gather_cat, all_reduce_sum, group_info

# Slots of the ``params`` buffer, RepDistiller's layout: [K, T, Z_v1, Z_v2, momentum].
# Z < 0 means "not set yet"; it is set from the first batch and then frozen.
_T, _Z_V1, _Z_V2, _MOMENTUM = 1, 2, 3, 4

# Score against the whole bank when it is at most this many times the K+1 entries a row needs.
DENSE_MAX_RATIO = 16


def contrast_scores(bank: Tensor, v: Tensor, idx: Tensor) -> Tensor:
    """``[B, K+1]`` dot products ``bank[idx[b, j]] · v[b]``.

    RepDistiller gathers ``bank[idx]`` as a ``[B, K+1, D]`` tensor (537 MB per bank for CIFAR-100's
    defaults) and multiplies it by ``v``: the copy, not the arithmetic, is the cost. When the bank
    is not much larger than that, ``v @ bankᵀ`` (``[B, N]``) then picking the columns is the same
    sum in another order and far cheaper: measured on a 2-core AMX CPU, forward + backward with
    N = 50,000, K = 16,384, B = 64: 227 ms gathered, 13 ms dense (docs/benchmark.md). For banks
    far larger than K+1 (ImageNet) the gather is cheaper, and the ``[B, N]`` scores would be large.
    The dense product saves the bank for backward, so it gets a copy: the banks move in place next.
    """
    batch, dim = v.shape
    if bank.shape[0] <= DENSE_MAX_RATIO * idx.shape[1]:
        return (v @ bank.clone().T).gather(1, idx)
    weight = bank.index_select(0, idx.reshape(-1)).view(batch, -1, dim)
    return torch.bmm(weight, v.unsqueeze(2)).squeeze(2)


class ContrastMemory(nn.Module):
    """Banks ``memory_v1`` (student side) and ``memory_v2`` (teacher side), ``outputSize`` x ``inputSize``.

    ``forward(v1, v2, y, idx)`` scores each anchor against the other side's bank entries at
    ``idx`` (``[B, K+1]``, positive first) and returns ``(out_v1, out_v2)``, each ``[B, K+1, 1]``:
    ``out_v1 = exp(M_v2[idx]·v1 / T) / Z_v1`` (student anchor), ``out_v2 = exp(M_v1[idx]·v2 / T) / Z_v2``.
    Then the banks move towards the batch at its dataset indices ``y``.
    """

    def __init__(self, inputSize: int, outputSize: int, K: int, T: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.nLem = outputSize
        self.K = K
        self.multinomial = AliasMethod(torch.ones(outputSize))
        self.register_buffer("params", torch.tensor([K, T, -1, -1, momentum]))
        stdv = 1.0 / math.sqrt(inputSize / 3)
        self.register_buffer("memory_v1", torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_v2", torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv))

    def forward(self, v1: Tensor, v2: Tensor, y: Tensor, idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, dim = v1.shape
        y = y.to(self.memory_v1.device)
        if idx is None:
            # RepDistiller's fallback: K+1 unigram draws per anchor, slot 0 its own index.
            idx = self.multinomial.draw(batch * (self.K + 1)).view(batch, -1)
            idx[:, 0] = y
        idx = idx.to(self.memory_v1.device)
        v1, v2 = v1.to(self.memory_v1.dtype), v2.to(self.memory_v1.dtype)
        # Clones: the in-place Z update below must not touch tensors saved for backward.
        temperature = self.params[_T].clone()
        out_v1 = torch.exp(contrast_scores(self.memory_v2, v1, idx) / temperature).unsqueeze(2)
        out_v2 = torch.exp(contrast_scores(self.memory_v1, v2, idx) / temperature).unsqueeze(2)

        with torch.no_grad():
            # Z = mean(exp(score / T)) * N on the first batch, a constant afterwards. torch.where keeps
            # it on the device (no host sync) and leaves a Z that is set (or restored) untouched.
            # Under DDP the mean is the global batch's (ranks hold equal batches: DistributedSampler pads).
            info = group_info()
            means = all_reduce_sum(torch.stack([out_v1.mean(), out_v2.mean()]), info) / info.world_size
            first = means * self.nLem
            z = self.params[_Z_V1 : _Z_V2 + 1]
            z.copy_(torch.where(z < 0, first, z))
        z_v1, z_v2 = z.clone()
        out_v1 = (out_v1 / z_v1).contiguous()
        out_v2 = (out_v2 / z_v2).contiguous()

        with torch.no_grad():
            momentum = self.params[_MOMENTUM]
            y, v1, v2 = _gather_rows(y, v1, v2, info)
            for bank, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                mixed = bank[y] * momentum + v * (1 - momentum)
                bank.index_copy_(0, y, mixed / mixed.pow(2).sum(1, keepdim=True).sqrt())
        return out_v1, out_v2


def _gather_rows(y: Tensor, v1: Tensor, v2: Tensor, info) -> tuple[Tensor, Tensor, Tensor]:
    """The global batch's indices and embeddings in one all-gather: the int64 indices travel as the
    bits of two float32 columns beside the embeddings, and come back exactly."""
    if not info.enabled:
        return y, v1, v2
    dim = v1.shape[1]
    bits = y.reshape(-1, 1).view(v1.dtype)  # int64 -> (B, 8 // itemsize) columns of v1's dtype
    rows = all_gather_cat(torch.cat([bits, v1, v2], dim=1), info)
    bits, v1, v2 = rows.split([bits.shape[1], dim, dim], dim=1)
    return bits.contiguous().view(torch.int64).reshape(-1), v1, v2


class AliasMethod(nn.Module):
    """Walker's alias table for O(1) draws from a fixed discrete distribution ``probs``.

    The table is two non-persistent buffers, so it follows the module's device (RepDistiller
    moves it with an explicit ``.cuda()``) and is rebuilt, not saved: it is a function of ``probs``.
    """

    def __init__(self, probs: Tensor):
        super().__init__()
        scaled = (probs.double() / probs.double().sum() * probs.numel()).tolist()
        prob = [1.0] * len(scaled)
        alias = list(range(len(scaled)))
        small = [i for i, p in enumerate(scaled) if p < 1.0]
        large = [i for i, p in enumerate(scaled) if p >= 1.0]
        while small and large:
            lo, hi = small.pop(), large.pop()
            prob[lo], alias[lo] = scaled[lo], hi
            scaled[hi] -= 1.0 - scaled[lo]
            (small if scaled[hi] < 1.0 else large).append(hi)
        # Whatever is left is 1 up to rounding: those outcomes keep themselves.
        self.register_buffer("prob", torch.tensor(prob, dtype=torch.float32), persistent=False)
        self.register_buffer("alias", torch.tensor(alias, dtype=torch.long), persistent=False)

    def draw(self, N: int) -> Tensor:
        """``N`` independent outcomes, on the table's device."""
        kk = torch.randint(0, self.alias.numel(), (N,), device=self.alias.device)
        keep = torch.bernoulli(self.prob[kk]).bool()
        return torch.where(keep, kk, self.alias[kk])
