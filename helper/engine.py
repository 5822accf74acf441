"""The inner loops: one training epoch and one evaluation pass."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helper.distributed import DistInfo, all_reduce_sum
from helper.dot import DistillationOrientedTrainer, task_and_distill_step
from helper.errors import NonFiniteLoss
from helper.runlog import Progress
from helper.util import accuracy

TERM_LABELS = {"cls": "CE", "div": "KD", "kd": "method", "init": "init-stage"}


@dataclass
class EpochTotals:
    """Running sums of an epoch, kept in a checkpoint so a run resumed mid-epoch reports it whole."""

    samples: int = 0
    correct: float = 0.0
    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    skipped: int = 0  # steps the method declined (SemCKD's batches smaller than --batch_size)

    def add(self, n: int, correct: float, loss: float, terms: dict[str, float]) -> None:
        self.samples += n
        self.correct += correct
        self.loss += loss * n
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + value * n

    def merge(self, other: EpochTotals) -> None:
        """Add another rank's sums to these."""
        self.samples += other.samples
        self.correct += other.correct
        self.loss += other.loss
        self.skipped += other.skipped
        for name, value in other.terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + value

    def reduced(self, info: DistInfo, device: torch.device) -> dict[str, float]:
        """Averages over every rank's samples."""
        names = sorted(self.terms)
        local = torch.tensor([self.samples, self.correct, self.loss, self.skipped, *(self.terms[n] for n in names)],
                             dtype=torch.float64, device=device)
        total = all_reduce_sum(local, info).tolist()
        n = max(total[0], 1.0)
        row = {"train_acc": 100.0 * total[1] / n, "loss": total[2] / n}
        if total[3]:
            row["skipped_steps"] = int(total[3])
        row.update({f"loss_{name}": value / n for name, value in zip(names, total[4:], strict=True)})
        return row


def to_device(batch: Iterable, device: torch.device, channels_last: bool) -> list[Tensor]:
    """Move a batch to the device; images in channels_last when the networks are."""
    out = [torch.as_tensor(t).to(device, non_blocking=True) for t in batch]
    if channels_last and out[0].dim() == 4:
        out[0] = out[0].contiguous(memory_format=torch.channels_last)
    return out


class StepVerdict:
    """What every rank agrees on after a step: stop now (a signal reached some rank), or the loss
    went non-finite on some rank. Agreed in the step's one host sync, so no rank waits on another."""

    def __init__(self, info: DistInfo):
        self.info = info
        self.local_stop = False  # set by a signal handler on this rank
        self.stop = False  # agreed: some rank was asked to stop

    def agree(self, device: torch.device) -> bool:
        """Agree on the stop flag alone (steps with nothing else to read, and the end of an epoch)."""
        flag = torch.tensor([float(self.local_stop)], device=device)
        self.stop = self.stop or all_reduce_sum(flag, self.info).item() > 0
        return self.stop


def read_step(terms: dict[str, Tensor], total: Tensor, correct: Tensor, where: str, verdict: StepVerdict,
              extra: str = "") -> tuple[float, list[float], float]:
    """The total's and the terms' values and the correct count, in one device sync per step, together
    with the agreed stop flag; a NaN or inf on any rank stops every rank, naming the term."""
    values = torch.stack([total.detach().float(), correct.float(),
                          *(t.detach().float() for t in terms.values())])
    losses = torch.cat([values[2:], values[:1]])  # the terms, then the total
    flags = torch.cat([(~torch.isfinite(losses)).float(),
                       torch.tensor([float(verdict.local_stop)], device=values.device)])
    if verdict.info.enabled:
        flags = all_reduce_sum(flags, verdict.info)
    read = torch.cat([values, flags]).tolist()
    n = len(terms)
    total_value, correct_value, term_values = read[0], read[1], read[2:2 + n]
    bad, stop = read[2 + n:-1], read[-1]
    verdict.stop = verdict.stop or stop > 0
    for name, value, flagged in zip([*terms, None], [*term_values, total_value], bad, strict=True):
        if flagged:
            shown = value if not math.isfinite(value) else "non-finite on another process"
            label = "total" if name is None else TERM_LABELS.get(name, name) + (extra if name == "kd" else "")
            raise NonFiniteLoss(f"{label} loss is {shown} at {where}; stopped without saving over the last "
                                "good checkpoint")
    return total_value, term_values, correct_value


def gradient_step(objective, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, info: DistInfo,
                  after_backward: Callable[[], None] | None) -> Callable[[dict[str, Tensor], Tensor], None]:
    """How a step's losses become an update, the one place every method goes through: one backward of the
    weighted total and the (loss-scaled) optimizer step, or with DOT the task and distillation terms'
    gradients taken apart (see :mod:`helper.dot`)."""
    if isinstance(optimizer, DistillationOrientedTrainer):
        return task_and_distill_step(objective, optimizer, info, after_backward)

    def step(terms: dict[str, Tensor], total: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if after_backward is not None:
            after_backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def train_epoch(objective, loader: Iterable, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                device: torch.device, channels_last: bool, totals: EpochTotals, first_step: int,
                progress: Progress, where: Callable[[int], str], method_label: str,
                verdict: StepVerdict, after_backward: Callable[[], None] | None = None) -> int:
    """Train until the loader ends or a stop is agreed; returns the next step's index."""
    objective.train_mode()
    apply_gradients = gradient_step(objective, optimizer, scaler, verdict.info, after_backward)
    step = first_step
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        result = objective(batch)
        if result is None:  # the method skipped this batch
            totals.skipped += 1
            step += 1
            if verdict.agree(device):
                break
            continue
        logits, terms, total = result
        correct = logits.detach().argmax(1).eq(batch[1]).sum()
        total_value, values, correct_value = read_step(terms, total, correct, where(step), verdict, method_label)
        apply_gradients(terms, total)
        totals.add(batch[1].shape[0], correct_value, total_value, dict(zip(terms, values, strict=True)))
        progress.update(step, totals.loss / totals.samples, 100.0 * totals.correct / totals.samples)
        step += 1
        if verdict.stop:
            break
    return step


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable, device: torch.device, channels_last: bool, autocast,
             info: DistInfo) -> dict[str, float]:
    """Top-1, top-5 and CE over the loader (each rank's shard, summed over ranks), read once at the end."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for batch in loader:
        x, y = to_device(batch, device, channels_last)[:2]
        with autocast():
            logits = model(x)
        logits = logits.float()
        top1, top5 = accuracy(logits, y, topk=(1, 5))
        n = y.shape[0]
        # Summed on the device: no host sync per batch.
        sums += torch.stack([torch.full_like(top1, n), top1 * n / 100.0, top5 * n / 100.0,
                             F.cross_entropy(logits, y, reduction="sum")]).double()
    n, c1, c5, loss = all_reduce_sum(sums, info).tolist()
    n = max(n, 1.0)
    return {"test_acc": 100.0 * c1 / n, "test_acc_top5": 100.0 * c5 / n, "test_loss": loss / n}
