"""What a run reports: console lines, a progress bar, TensorBoard events and a metrics file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from helper.checkpoint import atomic_text

STAGE_ORDER = {"init": 0, "main": 1}


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch, continued without duplicates on resume."""

    def __init__(self, path: Path, resume_at: tuple[str, int] | None = None):
        self.path = path
        if resume_at is None:
            self.path.write_text("")
        else:
            self._truncate(resume_at)

    def _truncate(self, resume_at: tuple[str, int]) -> None:
        """Drop rows the resumed run will write again (those at or after the resume point)."""
        stage, epoch = resume_at
        limit = (STAGE_ORDER[stage], epoch)
        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if (STAGE_ORDER[row["stage"]], row["epoch"]) <= limit:
                    kept.append(line)
        atomic_text(self.path, "".join(line + "\n" for line in kept))

    def append(self, row: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


class TensorBoard:
    """One event folder per stage, purged past the resume point so curves do not double back."""

    def __init__(self, folder: Path, resume_at: tuple[str, int] | None = None):
        self._settings: dict[str, tuple[str, int | None]] = {}
        for stage in STAGE_ORDER:
            purge = None
            if resume_at is not None:
                resumed_stage, epoch = resume_at
                if STAGE_ORDER[stage] > STAGE_ORDER[resumed_stage]:
                    purge = 0
                elif stage == resumed_stage:
                    purge = epoch + 1
            self._settings[stage] = (str(folder if stage == "main" else folder / stage), purge)
        self._writers: dict = {}

    def log(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        """Opened on first use, so a stage the run does not have leaves no folder."""
        if stage not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            log_dir, purge = self._settings[stage]
            self._writers[stage] = SummaryWriter(log_dir=log_dir, purge_step=purge)
        writer = self._writers[stage]
        for key, value in values.items():
            writer.add_scalar(key, value, epoch)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


class Progress:
    """A tqdm progress bar on a terminal; RepDistiller's every-N-steps lines otherwise (log parsers read them)."""

    def __init__(self, label: str, total: int, print_freq: int, enabled: bool = True):
        self.label = label
        self.total = total
        self.print_freq = print_freq
        self.enabled = enabled
        self.tty = sys.stdout.isatty()
        self._bar = None

    def update(self, step: int, loss: float, acc: float) -> None:
        """``step`` counts from 0; called after each step with running averages."""
        if not self.enabled:
            return
        if self.tty:
            if self._bar is None:  # opened at the first step seen, which is later than 0 for a resumed epoch
                self._bar = tqdm(total=self.total, initial=step, desc=self.label, file=sys.stdout,
                                 dynamic_ncols=True, leave=True)
            self._bar.set_postfix_str(f"loss {loss:.4f} acc@1 {acc:.2f}", refresh=False)
            self._bar.update(step + 1 - self._bar.n)
            if step + 1 >= self.total:
                self._bar.close()
        elif step % self.print_freq == 0:
            print(f"{self.label}[{step}/{self.total}]\tLoss {loss:.4f}\tAcc@1 {acc:.3f}", flush=True)
