"""Synthesisers: how each method makes one batch of images from the frozen teacher (a "round").

Class names, constructor arguments and the losses follow the reference (zju-vipa/Fast-Datafree,
``datafree/synthesis/``); every random draw of a round comes from the generator it is handed, so a
round can be replayed exactly, and nothing is tied to CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datafree.augment import Normalizer, jitter_and_flip, random_crop_flip
from datafree.criterions import jsdiv, kldiv
from datafree.generator import Generator, reset_l0
from datafree.hooks import BNStatHooks
from helper.errors import NonFiniteLoss
from helper.teacher import FrozenTeacher

# REPTILE's meta-gradient scale, as the reference's ``reptile_grad`` (alpha=67).
REPTILE_SCALE = 67.0
# Round (1-indexed, counted from the warm-up's end) at which ``--reset_l0`` re-draws the first layer.
RESET_ROUND = 120


@dataclass
class RoundResult:
    """The round's best batch (NCHW in [0, 1], the lowest total loss seen), its loss terms and its time."""

    images: Tensor
    terms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class _Synthesizer:
    """What every synthesiser shares: the frozen teacher with BN hooks, the student, the loss weights."""

    def __init__(self, teacher: FrozenTeacher, student: nn.Module, num_classes: int,
                 img_size: tuple[int, int, int], iterations: int, synthesis_batch_size: int,
                 adv: float, bn: float, oh: float, normalizer: Normalizer, bn_mmt: float = 0.0,
                 autocast: Callable[[], AbstractContextManager] = nullcontext, channels_last: bool = False):
        self.teacher, self.student = teacher, student
        self.num_classes, self.img_size, self.iterations = num_classes, img_size, iterations
        self.synthesis_batch_size = synthesis_batch_size
        self.adv, self.bn, self.oh, self.bn_mmt = adv, bn, oh, bn_mmt
        self.normalizer, self.autocast, self.channels_last = normalizer, autocast, channels_last
        self.hooks = BNStatHooks(teacher.network, bn_mmt)
        self.ep = 0  # rounds run (the reference's counter)
        self.where = ""  # set by the caller, for error messages

    def _format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _teacher_logits(self, x: Tensor) -> Tensor:
        with self.autocast():
            return self.teacher(self._format(x), input_grad=True)

    def _student_logits(self, x: Tensor) -> Tensor:
        with self.autocast():
            return self.student(self._format(x)).float()

    def _check(self, value: float, it: int) -> None:
        if value != value or value in (float("inf"), float("-inf")):
            raise NonFiniteLoss(f"synthesis loss is {value} at {self.where}, iteration {it}; stopped without "
                                "saving over the last good checkpoint")

    def synthesize(self, generator: torch.Generator) -> RoundResult:
        """One round: the method's iterations, hooks on, the student in eval mode and not differentiated."""
        self.ep += 1
        start = time.perf_counter()
        was_training = self.student.training
        self.student.eval()
        self.student.requires_grad_(False)
        self.hooks.activate(True)
        try:
            result = self._round(generator)
        finally:
            self.hooks.activate(False)
            self.student.requires_grad_(True)
            self.student.train(was_training)
        result.seconds = time.perf_counter() - start
        return result

    def _round(self, generator: torch.Generator) -> RoundResult:
        raise NotImplementedError

    def create_files(self, run_folder: str) -> None:
        """A fresh run's files beside the pool (CMI's memory bank); none for the others."""

    def flush(self) -> None:
        """After a checkpoint is on disk: write what it journals into those files."""

    def state_dict(self) -> dict:
        return {"ep": self.ep, "bn_mmt": self.hooks.state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.ep = state["ep"]
        self.hooks.load_state(state["bn_mmt"], device)

    def remove_hooks(self) -> None:
        self.hooks.remove()


class FastSynthesizer(_Synthesizer):
    """Fast-DFKD without meta-learning (``--method fast``): the generator itself and a fresh latent batch
    z are optimised for ``iterations`` steps each round (Adam, betas 0.5/0.999; lr_g and lr_z), on

        L = bn·Σ r_BN + oh·CE(teacher(aug(G(z))), y) + adv·L_adv,

    with y drawn uniformly, aug = random crop (pad 4) + flip + normalise, and once ``ep ≥ warmup``
    L_adv = −mean_b[1(argmax_s = argmax_t) · KL(p_t ‖ p_s)] (T = 1; the student in eval mode).
    After the round the BN momentum statistics take the last batch's (``--bn_mmt``).
    """

    def __init__(self, teacher: FrozenTeacher, student: nn.Module, generator: Generator, nz: int, num_classes: int,
                 img_size: tuple[int, int, int], iterations: int = 100, lr_g: float = 0.1,
                 synthesis_batch_size: int = 128, adv: float = 0.0, bn: float = 1, oh: float = 1,
                 normalizer: Normalizer | None = None, lr_z: float = 0.01, warmup: int = 10, reset_l0: int = 0,
                 bn_mmt: float = 0.0, autocast: Callable[[], AbstractContextManager] = nullcontext,
                 channels_last: bool = False):
        super().__init__(teacher, student, num_classes, img_size, iterations, synthesis_batch_size, adv, bn, oh,
                         normalizer, bn_mmt, autocast, channels_last)
        self.generator = generator.train()
        self.nz, self.lr_g, self.lr_z = nz, lr_g, lr_z
        self.ep_start, self.reset_l0 = warmup, reset_l0

    def _inversion_loss(self, inputs: Tensor, targets: Tensor, generator: torch.Generator
                        ) -> tuple[Tensor, dict[str, Tensor]]:
        inputs_aug = self.normalizer(random_crop_flip(inputs, generator))
        t_out = self._teacher_logits(inputs_aug)
        loss_bn = self.hooks.loss()
        loss_oh = F.cross_entropy(t_out, targets)
        if self.adv > 0 and self.ep >= self.ep_start:
            s_out = self._student_logits(inputs_aug)
            mask = (s_out.argmax(1) == t_out.argmax(1)).float()
            loss_adv = -(kldiv(s_out, t_out, reduction="none").sum(1) * mask).mean()
        else:
            loss_adv = loss_oh.new_zeros(())
        loss = self.bn * loss_bn + self.oh * loss_oh + self.adv * loss_adv
        return loss, {"bn": loss_bn, "oh": loss_oh, "adv": loss_adv}

    def _round_generator(self) -> Generator:
        return self.generator

    def _after_backward(self, fast: Generator, it: int) -> None:
        """Hook for the meta-learning variants (after each inner backward, before the inner step)."""

    def _after_round(self, fast: Generator) -> None:
        """Hook for the meta-learning variants (after the inner loop)."""

    def _round(self, generator: torch.Generator) -> RoundResult:
        device = next(self.generator.parameters()).device
        b = self.synthesis_batch_size
        z = torch.randn((b, self.nz), generator=generator, device=device).requires_grad_()
        targets = torch.randint(0, self.num_classes, (b,), generator=generator, device=device)
        fast = self._round_generator()
        optimizer = torch.optim.Adam([{"params": fast.parameters()}, {"params": [z], "lr": self.lr_z}],
                                     lr=self.lr_g, betas=(0.5, 0.999))
        best_cost, best_inputs, first_bn = float("inf"), None, None
        for it in range(self.iterations):
            with self.autocast():
                inputs = fast(z)
            inputs = inputs.float()
            loss, terms = self._inversion_loss(inputs, targets, generator)
            values = torch.stack([loss.detach(), *(t.detach().float() for t in terms.values())]).tolist()
            self._check(values[0], it)
            if best_inputs is None or values[0] < best_cost:
                best_cost, best_inputs = values[0], inputs.detach()
            first_bn = values[1] if first_bn is None else first_bn
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._after_backward(fast, it)
            optimizer.step()
        self._after_round(fast)
        if self.bn_mmt != 0:
            self.hooks.update_mmt()
        last = dict(zip(["loss", *terms], values, strict=True))
        return RoundResult(best_inputs, {**{f"syn_{k}": v for k, v in last.items()}, "syn_bn_first": first_bn})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        super().load_state_dict(state, device)
        self.generator.load_state_dict(state["generator"])


class FastMetaSynthesizer(FastSynthesizer):
    """Fast-DFKD (``--method fast_meta``): each round starts a "fast" generator from the meta-generator and
    runs the inner loop of :class:`FastSynthesizer` on it; the meta-generator learns to be a good start.

    ``is_maml=1`` (first-order MAML): after each inner backward the fast generator's gradients are **added**
    to the meta-generator's (zeroed at iteration 0); after the last one the meta optimizer (Adam,
    lr_g·iterations, betas 0.5/0.999) steps once. ``is_maml=0`` (REPTILE): after the round the
    meta-gradient is 67·(θ_meta − θ_fast) and the meta optimizer steps once.
    ``reset_l0``: at round 120 + warmup the meta-generator's first layer is re-drawn.
    """

    def __init__(self, *args, is_maml: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.ismaml = is_maml
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(), self.lr_g * self.iterations,
                                               betas=(0.5, 0.999))

    def _round_generator(self) -> Generator:
        if self.reset_l0 and self.ep == RESET_ROUND + self.ep_start:
            reset_l0(self.generator)
        return self.generator.clone()

    def _after_backward(self, fast: Generator, it: int) -> None:
        if not self.ismaml:
            return
        if it == 0:
            self.meta_optimizer.zero_grad(set_to_none=True)
        for meta, inner in zip(self.generator.parameters(), fast.parameters(), strict=True):
            meta.grad = inner.grad.clone() if meta.grad is None else meta.grad.add_(inner.grad)
        if it == self.iterations - 1:
            self.meta_optimizer.step()

    def _after_round(self, fast: Generator) -> None:
        if self.ismaml:
            return
        self.meta_optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for meta, inner in zip(self.generator.parameters(), fast.parameters(), strict=True):
                meta.grad = REPTILE_SCALE * (meta - inner)
        self.meta_optimizer.step()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        super().load_state_dict(state, device)
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])


class DeepInvSyntheiszer(_Synthesizer):
    """DeepInversion (``--method deepinv``, Yin et al. 2020), the reference's class name: each round
    optimises a batch of pixels from N(0, 1) in normalised space (Adam, lr_g, betas 0.5/0.99) for
    ``iterations`` steps on

        L = bn·(Σ r_BN(teacher) − 0.001·Σ r_BN(student)) + oh·CE(teacher(x̃), y) − adv·JS_3(student, teacher),

    x̃ = the batch rolled by up to 1/8 of its size and mirrored (one draw per step), y sorted uniform labels;
    pixels clamped to the valid normalised range after each step (the reference's tv and l2 priors are
    0 in its script and are left out).

    Where the reference differs: it keeps ``best_inputs = inputs.data``, a view that later steps move, so it
    stores the last step's pixels; the lowest-loss batch is kept here, as the code intends. With adv = 0 the
    student is not run (the reference then uses ``loss_oh`` before assigning it), so its BN term is absent.
    """

    def __init__(self, teacher: FrozenTeacher, student: nn.Module, num_classes: int, img_size: tuple[int, int, int],
                 iterations: int = 1000, lr_g: float = 0.1, synthesis_batch_size: int = 128, adv: float = 0.0,
                 bn: float = 1, oh: float = 1, normalizer: Normalizer | None = None,
                 autocast: Callable[[], AbstractContextManager] = nullcontext, channels_last: bool = False):
        super().__init__(teacher, student, num_classes, img_size, iterations, synthesis_batch_size, adv, bn, oh,
                         normalizer, 0.0, autocast, channels_last)
        self.lr_g = lr_g
        self.s_hooks = BNStatHooks(student)

    def _round(self, generator: torch.Generator) -> RoundResult:
        device = self.normalizer.mean.device
        b = self.synthesis_batch_size
        inputs = torch.randn((b, *self.img_size), generator=generator, device=device).requires_grad_()
        targets = torch.randint(0, self.num_classes, (b,), generator=generator, device=device).sort()[0]
        optimizer = torch.optim.Adam([inputs], self.lr_g, betas=(0.5, 0.99))
        best_cost, best_inputs, first_bn = float("inf"), None, None
        self.s_hooks.activate(True)
        try:
            for it in range(self.iterations):
                inputs_aug = jitter_and_flip(inputs, generator)
                t_out = self._teacher_logits(inputs_aug)
                loss_oh = F.cross_entropy(t_out, targets)
                loss_bn = self.hooks.loss()
                if self.adv > 0:
                    s_out = self._student_logits(inputs_aug)
                    loss_adv = -jsdiv(s_out, t_out, T=3)
                    loss_bn = loss_bn - 0.001 * self.s_hooks.loss()
                else:
                    loss_adv = loss_oh.new_zeros(())
                loss = self.bn * loss_bn + self.oh * loss_oh + self.adv * loss_adv
                values = torch.stack([loss.detach(), loss_bn.detach(), loss_oh.detach(), loss_adv.detach()]).tolist()
                self._check(values[0], it)
                if best_inputs is None or values[0] < best_cost:
                    best_cost, best_inputs = values[0], inputs.detach().clone()
                first_bn = values[1] if first_bn is None else first_bn
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    inputs.copy_(self.normalizer.clip(inputs))
        finally:
            self.s_hooks.activate(False)
        last = dict(zip(["loss", "bn", "oh", "adv"], values, strict=True))
        images = self.normalizer(best_inputs, reverse=True)
        return RoundResult(images, {**{f"syn_{k}": v for k, v in last.items()}, "syn_bn_first": first_bn})

    def remove_hooks(self) -> None:
        super().remove_hooks()
        self.s_hooks.remove()


class GenerativeSynthesizer(_Synthesizer):
    """The online-generator baselines (``--method dafl``, ``zskt``, ``dfad``, ``dfq``), the reference's class:
    each round trains the generator for ``iterations`` steps (Adam, lr_g, betas 0.5/0.999, kept across rounds)
    on a fresh z each step, and the KD steps after it draw fresh generator images (:meth:`sample`), no pool:

        L = bn·Σ r_BN + oh·CE(t, argmax t) + act·(−mean|f_t|) + balance·Σ p̄ log p̄ − adv·D(student, teacher),

    x = normalise(G(z)) unaugmented, f_t the teacher's pooled feature, p̄ the batch-mean teacher softmax,
    D the student's KD criterion (L1 on logits for dfad, KL at T = 1 otherwise).

    Where the reference differs: ``datafree_kd.py`` builds this synthesiser with ``student=teacher``, so its
    adversarial term compares the teacher with itself and is 0; here it is the student, as the papers have it.
    """

    def __init__(self, teacher: FrozenTeacher, student: nn.Module, generator: Generator, nz: int,
                 img_size: tuple[int, int, int], iterations: int = 1, lr_g: float = 1e-3,
                 synthesis_batch_size: int = 128, sample_batch_size: int = 128, adv: float = 0, bn: float = 0,
                 oh: float = 0, act: float = 0, balance: float = 0,
                 criterion: Callable[[Tensor, Tensor], Tensor] | None = None, normalizer: Normalizer | None = None,
                 autocast: Callable[[], AbstractContextManager] = nullcontext, channels_last: bool = False):
        super().__init__(teacher, student, 0, img_size, iterations, synthesis_batch_size, adv, bn, oh, normalizer,
                         0.0, autocast, channels_last)
        self.generator = generator.train()
        self.nz, self.sample_batch_size, self.act, self.balance = nz, sample_batch_size, act, balance
        self.criterion = criterion if criterion is not None else kldiv
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr_g, betas=(0.5, 0.999))

    def _generate(self, n: int, generator: torch.Generator) -> Tensor:
        device = next(self.generator.parameters()).device
        z = torch.randn((n, self.nz), generator=generator, device=device)
        with self.autocast():
            return self.normalizer(self.generator(z).float())

    def _round(self, generator: torch.Generator) -> RoundResult:
        self.generator.train()
        first_bn = None
        for it in range(self.iterations):
            inputs = self._generate(self.synthesis_batch_size, generator)
            with self.autocast():
                feats, t_out = self.teacher(self._format(inputs), is_feat=True, input_grad=True)
            loss_bn = self.hooks.loss()
            loss_oh = F.cross_entropy(t_out, t_out.argmax(1))
            loss_act = -feats[-1].abs().mean()
            p = F.softmax(t_out, dim=1).mean(0)
            loss_balance = (p * torch.log(p)).sum()
            loss_adv = -self.criterion(self._student_logits(inputs), t_out) if self.adv > 0 else loss_oh.new_zeros(())
            loss = (self.bn * loss_bn + self.oh * loss_oh + self.adv * loss_adv + self.balance * loss_balance
                    + self.act * loss_act)
            terms = {"loss": loss, "bn": loss_bn, "oh": loss_oh, "adv": loss_adv, "act": loss_act,
                     "balance": loss_balance}
            values = torch.stack([t.detach().float() for t in terms.values()]).tolist()
            self._check(values[0], it)
            first_bn = values[1] if first_bn is None else first_bn
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        last = dict(zip(terms, values, strict=True))
        images = self.normalizer(inputs.detach(), reverse=True)
        return RoundResult(images, {**{f"syn_{k}": v for k, v in last.items()}, "syn_bn_first": first_bn})

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> Tensor:
        """A fresh normalised batch for one KD step (the generator in train mode, as the reference samples it)."""
        return self._format(self._generate(self.sample_batch_size, generator))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        super().load_state_dict(state, device)
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
