"""Contrastive model inversion (``--method cmi``; Fang et al., "Contrastive Model Inversion for Data-Free
Knowledge Distillation", IJCAI 2021), as Fast-Datafree computes it (``datafree/synthesis/contrastive.py``,
built by its ``datafree_kd.py`` with bank_size 40960, n_neg 4096, head_dim 256, feature_reuse False).

Each round re-draws the generator, optimises it and a fresh z (one Adam, ``--lr_g``, betas 0.5/0.999) for
``--g_steps`` steps on DeepInversion's loss plus a contrastive term, and keeps its lowest-loss batch; that
batch's features join a memory bank whose rows are the negatives of later rounds::

    L = bn·Σ r_BN + oh·CE(t(global), y) + adv·L_adv + cr·L_cr

* global = normalise(crop with padding 4 + flip), local = normalise(random resized crop (area 0.25-1) + flip),
  both of the same G(z); y sorted uniform labels; r_BN and L_adv as in ``--method fast`` (L_adv from the
  first round: CMI has no warm-up of it); the student in eval mode.
* f(view): the teacher's per-image spatial means of the input of every BatchNorm2d (of layer1...layer4 for
  the reference's resnet34 teacher), concatenated; the bank holds rows [f(local), f(global)].
* L_cr: h = MLP(d → d → 256, ReLU, L2-normalised) over [f(local); bank_local; f(global); bank_global] (the
  batch and up to 4,096 bank rows drawn without replacement), logits = h_local · h_globalᵀ / cr_T with the
  global side detached, cross-entropy against the diagonal, averaged over the batch rows and the bank rows
  separately and summed (one mean while the bank is empty). The head has its own Adam (``--lr_g``, kept
  across rounds) and learns only through the local side.

Where the reference differs: its bank returns no row in the round after exactly 40,960 rows were added
(``n_updates > max_size`` against a write pointer back at 0), making L_cr NaN (the mean of nothing) and
keeping that round's first batch; here the bank then samples its full rows. With ``--cr 0`` it fails on the
bank update (the local features are never computed); here the bank is then left unused. Its bank fills only
with synthesis batches that divide 40,960; here it is a ring. Every draw comes from the round's generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datafree.augment import Normalizer, random_crop_flip, random_resized_crop_flip
from datafree.criterions import kldiv
from datafree.generator import Generator
from datafree.pool import ImagePool
from datafree.synthesis import RoundResult, _Synthesizer
from helper.teacher import FrozenTeacher

HEAD_DIM, BANK_SIZE, N_NEG = 256, 40960, 4096  # the reference's datafree_kd.py
BANK_FILE = "bank.f32"


class MLPHead(nn.Module):
    """The contrastive projection: Linear(d, d) -> ReLU -> Linear(d, dim_feat), L2-normalised rows."""

    def __init__(self, dim_in: int, dim_feat: int = HEAD_DIM):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_feat))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(x), dim=1, p=2)


class InstanceMeans:
    """Forward hooks keeping, while active, each module's input averaged over H and W (N × C per module)."""

    def __init__(self, modules: Iterable[nn.Module]):
        self.means: list[Tensor | None] = []
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]
        self.means = [None] * len(self.handles)
        self.active = False

    def _hook(self, i: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if self.active:
                self.means[i] = inputs[0].float().mean(dim=(2, 3))
        return hook

    def features(self) -> Tensor:
        """The last pass's means, concatenated: N × Σ C."""
        return torch.cat(self.means, dim=1)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def feature_modules(network: nn.Module, arch: str) -> list[nn.Module]:
    """Whose inputs CMI compares: every BatchNorm2d, or the four stages of the reference's resnet34 teacher."""
    if arch == "ResNet34_cifar":  # the reference's resnet34
        return [network.layer1, network.layer2, network.layer3, network.layer4]
    return [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]


def contrastive_loss(head: nn.Module, local: Tensor, global_: Tensor, bank_local: Tensor, bank_global: Tensor,
                     temperature: float) -> Tensor:
    """CMI's instance discrimination: row i of [local; bank_local] must pick row i of [global; bank_global]."""
    proj = head(torch.cat([local, bank_local, global_, bank_global], dim=0))
    proj_local, proj_global = proj.chunk(2, dim=0)
    logits = proj_local @ proj_global.detach().T / temperature
    loss = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
    n = local.shape[0]
    return loss[:n].mean() + loss[n:].mean() if len(bank_local) else loss.mean()


@torch.no_grad()
def reset_generator(model: nn.Module, generator: torch.Generator) -> None:
    """The reference's ``reset_model``: Linear/Conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0
    (running statistics kept), drawn from ``generator``."""
    for m in model.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0 if isinstance(m, nn.BatchNorm2d) else 0.0, 0.02, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class CMISynthesizer(_Synthesizer):
    """``--method cmi`` (see the module's docstring)."""

    def __init__(self, teacher: FrozenTeacher, student: nn.Module, generator: Generator, nz: int, num_classes: int,
                 img_size: tuple[int, int, int], feature_layers: list[nn.Module], bank_path: Path,
                 iterations: int = 100, lr_g: float = 0.1, synthesis_batch_size: int = 128, adv: float = 0.0,
                 bn: float = 1, oh: float = 1, cr: float = 0.8, cr_T: float = 0.1,
                 normalizer: Normalizer | None = None, bank_size: int = BANK_SIZE, n_neg: int = N_NEG,
                 head_dim: int = HEAD_DIM, autocast: Callable[[], AbstractContextManager] = nullcontext,
                 channels_last: bool = False):
        super().__init__(teacher, student, num_classes, img_size, iterations, synthesis_batch_size, adv, bn, oh,
                         normalizer, 0.0, autocast, channels_last)
        self.generator = generator.train()
        self.nz, self.lr_g, self.cr, self.cr_T, self.n_neg = nz, lr_g, cr, cr_T, n_neg
        device = normalizer.mean.device
        self.means = InstanceMeans(feature_layers)
        self.means.active = True
        with torch.no_grad():
            self.teacher(torch.zeros(1, *img_size, device=device))
        dim = self.means.features().shape[1]
        self.means.active = False
        self.head = MLPHead(dim, head_dim).to(device).train()
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=lr_g)
        self.bank = ImagePool(bank_size, (2 * dim,), device, bank_path, dtype=torch.float32)

    def _negatives(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Up to n_neg bank rows, without replacement: (local, global) halves."""
        held = min(self.bank.count, self.bank.capacity)
        index = torch.randperm(held, generator=generator, device=self.bank.device)[:self.n_neg]
        return self.bank.gather(index).chunk(2, dim=1)

    def _round(self, generator: torch.Generator) -> RoundResult:
        device = next(self.generator.parameters()).device
        b = self.synthesis_batch_size
        z = torch.randn((b, self.nz), generator=generator, device=device).requires_grad_()
        targets = torch.randint(0, self.num_classes, (b,), generator=generator, device=device).sort()[0]
        reset_generator(self.generator, generator)
        optimizer = torch.optim.Adam([{"params": self.generator.parameters()}, {"params": [z]}], self.lr_g,
                                     betas=(0.5, 0.999))
        best_cost, best_inputs, best_features, first_bn = float("inf"), None, None, None
        self.means.active = True
        try:
            for it in range(self.iterations):
                with self.autocast():
                    inputs = self.generator(z)
                inputs = inputs.float()
                global_view = self.normalizer(random_crop_flip(inputs, generator))
                local_view = self.normalizer(random_resized_crop_flip(inputs, generator))
                t_out = self._teacher_logits(global_view).float()
                loss_bn = self.hooks.loss()
                loss_oh = F.cross_entropy(t_out, targets)
                if self.adv > 0:
                    s_out = self._student_logits(global_view)
                    mask = (s_out.argmax(1) == t_out.argmax(1)).float()
                    loss_adv = -(kldiv(s_out, t_out, reduction="none").sum(1) * mask).mean()
                else:
                    loss_adv = loss_oh.new_zeros(())
                features = None
                if self.cr > 0:
                    global_feature = self.means.features()
                    self._teacher_logits(local_view)
                    local_feature = self.means.features()
                    bank_local, bank_global = self._negatives(generator)
                    loss_cr = contrastive_loss(self.head, local_feature, global_feature, bank_local, bank_global,
                                               self.cr_T)
                    features = torch.cat([local_feature, global_feature], dim=1)
                else:
                    loss_cr = loss_oh.new_zeros(())
                loss = self.bn * loss_bn + self.oh * loss_oh + self.adv * loss_adv + self.cr * loss_cr
                terms = {"loss": loss, "bn": loss_bn, "oh": loss_oh, "adv": loss_adv, "cr": loss_cr}
                values = torch.stack([t.detach().float() for t in terms.values()]).tolist()
                self._check(values[0], it)
                if best_inputs is None or values[0] < best_cost:
                    best_cost, best_inputs = values[0], inputs.detach()
                    best_features = None if features is None else features.detach()
                first_bn = values[1] if first_bn is None else first_bn
                optimizer.zero_grad(set_to_none=True)
                self.head_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.head_optimizer.step()
        finally:
            self.means.active = False
        if best_features is not None:
            self.bank.add(best_features)
        last = dict(zip(terms, values, strict=True))
        return RoundResult(best_inputs, {**{f"syn_{k}": v for k, v in last.items()}, "syn_bn_first": first_bn})

    # ----- the bank's file and the state a checkpoint keeps ----------------------------------------------
    def create_files(self, run_folder: str) -> None:
        self.bank.create_file(run_folder)

    def flush(self) -> None:
        self.bank.flush()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.state_dict(), "head": self.head.state_dict(),
                "head_optimizer": self.head_optimizer.state_dict(), "bank": self.bank.state()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        super().load_state_dict(state, device)
        self.generator.load_state_dict(state["generator"])
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load(state["bank"])

    def remove_hooks(self) -> None:
        super().remove_hooks()
        self.means.remove()
