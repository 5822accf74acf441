"""The epoch driver both scripts share: stages, checkpoints, resuming, signals, reporting."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from helper.checkpoint import atomic_save, atomic_text, safe_load
from helper.distributed import DistInfo, agree_on_errors, gather_objects
from helper.engine import EpochTotals, StepVerdict, train_epoch, validate
from helper.errors import EXIT_PREEMPTED, NonFiniteLoss, UserError
from helper.rng import capture_rng, restore_rng
from helper.runlog import MetricsLog, Progress, TensorBoard
from helper.runs import FAILED_FILE
from helper.setup import Runtime, compile_clock

if TYPE_CHECKING:
    from distiller_zoo.registry import PeerNetwork

RESUME_FILE = "ckpt_last.pth"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class Stage:
    """One phase of training with its own optimizer: a method's init stage, or the main stage."""

    name: str
    epochs: int
    objective: object
    optimizer: torch.optim.Optimizer
    lr_for_epoch: Callable[[int], float]
    evaluate: bool
    #: after each backward: averages, under DDP, the gradients of what this stage trains outside
    #: DistributedDataParallel (a method's modules; an init stage's student trunk)
    after_backward: Callable[[], None] | None = None


@dataclass
class Position:
    """Where a run stands: the stage and epoch it is in, and steps done in that epoch (None: all)."""

    stage: str
    epoch: int
    step: int | None = None


@dataclass
class RunOutputs:
    """Where a run writes, and what RepDistiller's checkpoint files are called there."""

    folder: Path
    tb_folder: Path
    arch: str
    save_optimizer: bool  # RepDistiller's teacher files carry the optimizer; its student files do not
    command: str = field(default_factory=lambda: " ".join(sys.argv))

    def path(self, name: str) -> Path:
        return self.folder / name


def refuse_reuse(folder: Path, holds: str, opt: argparse.Namespace,
                 remedy: str = "pass --resume to continue it or --overwrite to start over") -> None:
    """A folder that holds another run's work (``holds`` says what) is reused only with ``--overwrite``."""
    if not opt.overwrite:
        raise UserError(f"{folder} already holds {holds}; {remedy}")


def prepare_outputs(out: RunOutputs, opt: argparse.Namespace, info: DistInfo) -> Path | None:
    """Check the run folder before anything trains; returns the checkpoint to resume from, if any.

    A folder that holds a run is never overwritten silently: it takes ``--resume`` or ``--overwrite``.
    Rank 0 alone creates the folder, so the ranks agree on the outcome (one rank's error stops them all).
    """
    with agree_on_errors(info):
        return _prepare_outputs(out, opt, info)


def _prepare_outputs(out: RunOutputs, opt: argparse.Namespace, info: DistInfo) -> Path | None:
    resume_file = out.path(RESUME_FILE)
    if opt.resume is not None:
        path = resume_file if opt.resume == "auto" else Path(opt.resume)
        if not path.is_file():
            raise UserError(f"--resume: no checkpoint at {path} (nothing to resume)")
        return path
    held = [name for name in (RESULTS_FILE, RESUME_FILE) if out.path(name).exists()]
    if held:
        refuse_reuse(out.folder, "a finished run" if RESULTS_FILE in held else "an unfinished run", opt)
    if info.is_main:
        try:
            out.folder.mkdir(parents=True, exist_ok=True)
            out.tb_folder.mkdir(parents=True, exist_ok=True)
            probe = out.folder / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write to the run folder {out.folder}: {exc.strerror or exc}") from exc
        if held:  # --overwrite: the old run's files go, so its curves and rows do not mix with the new
            for name in (RESULTS_FILE, RESUME_FILE, METRICS_FILE, FAILED_FILE):
                out.path(name).unlink(missing_ok=True)
            for event in out.tb_folder.rglob("events.out.tfevents.*"):
                event.unlink()
    return None


def as_rd_tensor(value: float) -> torch.Tensor:
    """RepDistiller's best/periodic files hold accuracies as 0-dim float32 tensors (its users call .item())."""
    return torch.tensor(value, dtype=torch.float32)


class StopRequest(StepVerdict):
    """SIGTERM/SIGINT set this rank's flag; every rank finishes the step at which the flag is agreed,
    checkpoints and exits (a preempted node's ranks and the others alike)."""

    def __init__(self, info: DistInfo):
        super().__init__(info)
        self.signal_name: str | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal_name = signal.Signals(signum).name
        self.local_stop = True

    @property
    def reason(self) -> str:
        return self.signal_name or "a signal to another process"


class Trainer:
    """Runs the stages epoch by epoch; writes checkpoints, metrics, TensorBoard and the results."""

    def __init__(self, *, opt: argparse.Namespace, out: RunOutputs, model: nn.Module, extra_state: nn.Module | None,
                 stages: list[Stage], train_loader, val_loader: Iterable, eval_model: nn.Module, rt: Runtime,
                 scaler: torch.amp.GradScaler, method_label: str = "",
                 peers: Iterable[PeerNetwork] = ()):
        self.opt, self.out, self.model, self.extra_state = opt, out, model, extra_state
        self.stages, self.train_loader, self.val_loader = stages, train_loader, val_loader
        self.eval_model = eval_model
        self.device, self.channels_last, self.autocast = rt.device, rt.channels_last, rt.autocast
        self.scaler, self.info, self.method_label = scaler, rt.info, method_label
        self.best_acc = 0.0
        self.last_acc = 0.0
        self.peers = list(peers)  # networks a method trains beside the model (DML): evaluated and saved too
        self.peer_acc = {peer.name: {"best": 0.0, "last": 0.0} for peer in self.peers}
        self.stop = StopRequest(rt.info)

    # ----- checkpoint state -------------------------------------------------------------------
    def _resume_state(self, stage: Stage, position: Position, totals: EpochTotals) -> dict:
        return {
            "format": 1, "arch": self.out.arch, "opt": vars(self.opt),
            "model": self.model.state_dict(),
            "extra": self.extra_state.state_dict() if self.extra_state is not None else None,
            "optimizer": stage.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "stage": position.stage, "epoch": position.epoch, "step": position.step,
            "totals": vars(totals), "best_acc": self.best_acc, "last_acc": self.last_acc,
            "peer_acc": self.peer_acc,
        }

    def _save_resume(self, stage: Stage, position: Position, totals: EpochTotals) -> None:
        # every rank's generators and running sums (a mid-epoch checkpoint's epoch row sums all ranks')
        ranks = gather_objects((capture_rng(self.device), vars(totals)), self.info)
        if self.info.is_main:
            state = self._resume_state(stage, position, totals)
            state.update(rng=ranks[0][0], rng_ranks=[rng for rng, _ in ranks],
                         totals_ranks=[sums for _, sums in ranks])
            atomic_save(state, self.out.path(RESUME_FILE))

    def _load_resume(self, path: Path) -> tuple[Position, EpochTotals, dict]:
        state = safe_load(path)
        if state.get("format") != 1 or "stage" not in state:
            raise UserError(f"{path} is not a resumable checkpoint (resume takes a ckpt_last.pth)")
        if state["arch"] != self.out.arch:
            raise UserError(f"{path} is a run of '{state['arch']}', not '{self.out.arch}'")
        names = [s.name for s in self.stages]
        if state["stage"] not in names:
            raise UserError(f"{path} stopped in stage '{state['stage']}', which this run does not have")
        self.model.load_state_dict(state["model"])
        if self.extra_state is not None and state["extra"] is not None:
            self.extra_state.load_state_dict(state["extra"])
        self.stages[names.index(state["stage"])].optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_acc, self.last_acc = state["best_acc"], state["last_acc"]
        self.peer_acc.update(state.get("peer_acc", {}))
        return Position(state["stage"], state["epoch"], state["step"]), self._restore_totals(state), state

    def _restore_totals(self, state: dict) -> EpochTotals:
        """This rank's running sums of the epoch, as saved, when the run resumes on as many processes (its row is
        then the uninterrupted run's, bit for bit). Otherwise the saved ranks' sums, added, go to rank 0 and the
        others start from zero: the epoch's reduced row is the same sum (a checkpoint from before per-rank sums
        holds rank 0's alone)."""
        ranks = state.get("totals_ranks")
        if ranks is not None and len(ranks) == self.info.world_size:
            return EpochTotals(**ranks[self.info.rank])
        if not self.info.is_main:
            return EpochTotals()
        if ranks is None:
            return EpochTotals(**state["totals"])
        merged = EpochTotals()
        for sums in ranks:
            merged.merge(EpochTotals(**sums))
        return merged

    def _restore_rng(self, state: dict) -> None:
        """Each rank's own generators, when the run resumes on as many processes as it was saved from.

        Otherwise (another world size, or a checkpoint from before per-rank states) rank 0 takes the
        saved generators and the other ranks keep their fresh seeds, so their augmentations differ.
        """
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.info.world_size:
            restore_rng(ranks[self.info.rank], self.device)
        elif self.info.is_main:
            restore_rng(state["rng"], self.device)

    def _clear_gradients(self) -> None:
        """No gradient left from an earlier stage (an init stage's paraphraser or connector): a stage's
        averaging and optimizer then only see what this stage computes."""
        for module in (self.model, self.extra_state):
            if module is not None:
                for parameter in module.parameters():
                    parameter.grad = None

    def _save_model_file(self, name: str, payload: dict, optimizer: torch.optim.Optimizer) -> None:
        """RepDistiller's best/periodic/last files (plus 'arch', which its loaders ignore, and the method's
        ``model_file_extras()``: what the student needs to be evaluated alone, e.g. SimKD's head)."""
        if not self.info.is_main:
            return
        extras = self.extra_state.model_file_extras() if hasattr(self.extra_state, "model_file_extras") else {}
        payload = {**payload, **extras, "model": self.model.state_dict(), "arch": self.out.arch}
        if self.out.save_optimizer:
            payload["optimizer"] = optimizer.state_dict()
        atomic_save(payload, self.out.path(name))

    # ----- the loop -----------------------------------------------------------------------------
    def fit(self, resume_from: Path | None) -> None:
        position, totals, state = Position(self.stages[0].name, 1, 0), EpochTotals(), None
        if resume_from is not None:
            position, totals, state = self._load_resume(resume_from)
            print(f"=> resumed from {resume_from} ({position.stage} stage, epoch {position.epoch}"
                  + (f", step {position.step}" if position.step is not None else ", complete") + ")")
        resume_at = (position.stage, position.epoch) if resume_from is not None else None
        if resume_from is not None and position.step is not None:
            resume_at = (position.stage, position.epoch - 1)
        metrics = MetricsLog(self.out.path(METRICS_FILE), resume_at) if self.info.is_main else None
        tb = TensorBoard(self.out.tb_folder, resume_at) if self.info.is_main else None
        if state is not None:
            self._restore_rng(state)

        start_index = [s.name for s in self.stages].index(position.stage)
        if self.info.is_main:
            self.out.path(FAILED_FILE).unlink(missing_ok=True)  # a resumed run is no longer the failed one
        try:
            for index in range(start_index, len(self.stages)):
                stage = self.stages[index]
                self._clear_gradients()
                first_epoch, first_step = 1, 0
                if index == start_index and resume_from is not None:
                    if position.step is None:
                        first_epoch = position.epoch + 1
                    else:
                        first_epoch, first_step = position.epoch, position.step
                for epoch in range(first_epoch, stage.epochs + 1):
                    if not (epoch == first_epoch and first_step):
                        totals = EpochTotals()
                    self._run_epoch(index, stage, epoch, first_step if epoch == first_epoch else 0, totals,
                                    metrics, tb)
        except NonFiniteLoss as exc:  # recorded, so summarize lists the run as failed, not as still running
            if self.info.is_main:
                record = {"error": str(exc), "exit_code": exc.exit_code}
                atomic_text(self.out.path(FAILED_FILE), json.dumps(record) + "\n")
            raise
        finally:
            if tb is not None:
                tb.close()
        self._finish()

    def _run_epoch(self, index: int, stage: Stage, epoch: int, first_step: int, totals: EpochTotals,
                   metrics: MetricsLog | None, tb: TensorBoard | None) -> None:
        lr = stage.lr_for_epoch(epoch)
        for group in stage.optimizer.param_groups:
            group["lr"] = lr
        self.train_loader.set_position(index * 100_000 + epoch, first_step)
        stage.objective.set_epoch(epoch, stage.epochs)
        label = f"Epoch: [{epoch}]" if stage.name == "main" else f"Init epoch: [{epoch}]"
        progress = Progress(label, len(self.train_loader), self.opt.print_freq, enabled=self.info.is_main)
        print("==> training..." if stage.name == "main" else f"==> {stage.name} stage...")
        compiled, time1 = compile_clock.seconds, time.time()
        step = train_epoch(
            stage.objective, self.train_loader, stage.optimizer, self.scaler, self.device, self.channels_last,
            totals, first_step, progress, lambda s: f"{stage.name} epoch {epoch}, step {s}",
            self.method_label, self.stop, stage.after_backward,
        )
        compile_time = compile_clock.seconds - compiled  # --compile: reported apart, not in the epoch's time
        epoch_time = time.time() - time1 - compile_time
        if self.stop.stop and step < len(self.train_loader):
            self._stop(stage, Position(stage.name, epoch, step), totals)
        if compile_time:
            print(f"compile time: {compile_time:.2f} s")
        row = {"stage": stage.name, "epoch": epoch, "lr": lr, **totals.reduced(self.info, self.device),
               "epoch_time": epoch_time}
        skipped = f", skipped {row['skipped_steps']} steps" if "skipped_steps" in row else ""
        print(f"epoch {epoch}, total time {epoch_time:.2f}{skipped}")
        if stage.evaluate:
            row.update(validate(self.eval_model, self.val_loader, self.device, self.channels_last,
                                self.autocast, self.info))
            print(f" * Acc@1 {row['test_acc']:.3f} Acc@5 {row['test_acc_top5']:.3f}")
            self.last_acc = row["test_acc"]
            if self._is_new_best(row["test_acc"], self.best_acc, f"{self.out.arch}_best.pth"):
                self.best_acc = row["test_acc"]
                print("saving the best model!")
                self._save_model_file(f"{self.out.arch}_best.pth",
                                      {"epoch": epoch, "best_acc": as_rd_tensor(self.best_acc)}, stage.optimizer)
            self._evaluate_peers(epoch, row)
            if epoch % self.opt.save_freq == 0:
                print("==> Saving...")
                self._save_model_file(f"ckpt_epoch_{epoch}.pth",
                                      {"epoch": epoch, "accuracy": as_rd_tensor(row["test_acc"])}, stage.optimizer)
        if metrics is not None:
            metrics.append(row)
            tb.log(stage.name, epoch, {k: v for k, v in row.items() if k not in ("stage", "epoch")})
        self._save_resume(stage, Position(stage.name, epoch), totals)
        if self.stop.agree(self.device):  # a signal during validation or saving, on any rank
            self._stop(stage, Position(stage.name, epoch), totals)

    def _evaluate_peers(self, epoch: int, row: dict) -> None:
        """Each peer as the model: its accuracies in the row (``<name>_test_acc``...), printed, its best file."""
        for peer in self.peers:
            result = validate(peer.module, self.val_loader, self.device, self.channels_last, self.autocast, self.info)
            row.update({f"{peer.name}_{key}": value for key, value in result.items()})
            print(f" * {peer.name} Acc@1 {result['test_acc']:.3f} Acc@5 {result['test_acc_top5']:.3f}")
            acc = self.peer_acc[peer.name]
            acc["last"] = result["test_acc"]
            if self._is_new_best(acc["last"], acc["best"], f"{peer.arch}_{peer.name}_best.pth"):
                acc["best"] = acc["last"]
                print(f"saving the best {peer.name} model!")
                self._save_peer_file(peer, "best", {"epoch": epoch, "best_acc": as_rd_tensor(acc["best"])})

    def _is_new_best(self, accuracy: float, best: float, best_file: str) -> bool:
        """RepDistiller's strict improvement, plus: the first evaluation always writes the best file, so a run
        whose accuracy stays at 0 (tiny or hard data) still leaves the ``_best.pth`` that later steps load."""
        return accuracy > best or not self.out.path(best_file).exists()

    def _save_peer_file(self, peer: PeerNetwork, kind: str, payload: dict) -> None:
        """``<arch>_<name>_best.pth`` / ``_last.pth``, in the student files' format."""
        if self.info.is_main:
            atomic_save({**payload, "model": peer.module.state_dict(), "arch": peer.arch},
                        self.out.path(f"{peer.arch}_{peer.name}_{kind}.pth"))

    def _stop(self, stage: Stage, position: Position, totals: EpochTotals) -> None:
        """Checkpoint where the signal found us (mid-epoch or after it) and exit saying how to go on."""
        self._save_resume(stage, position, totals)
        where = f"epoch {position.epoch}" + (f", step {position.step}" if position.step is not None else "")
        print(f"stopped by {self.stop.reason} in the {position.stage} stage at {where}; checkpoint "
              f"saved to {self.out.path(RESUME_FILE)}. Resume with: {self.out.command} --resume auto",
              flush=True)
        sys.exit(EXIT_PREEMPTED)

    def _finish(self) -> None:
        main = self.stages[-1]
        self._save_model_file(f"{self.out.arch}_last.pth", {"opt": vars(self.opt)}, main.optimizer)
        results = {"best_acc": self.best_acc, "last_acc": self.last_acc, "epochs": main.epochs}
        for peer in self.peers:
            self._save_peer_file(peer, "last", {"opt": vars(self.opt)})
            results.update({f"{peer.name}_{kind}_acc": value for kind, value in self.peer_acc[peer.name].items()})
        print(f"best accuracy: {self.best_acc:.2f}")
        if self.info.is_main:
            atomic_text(self.out.path(RESULTS_FILE), json.dumps(results, indent=1) + "\n")
        print(f"last accuracy: {self.last_acc:.2f}")
        for name, acc in self.peer_acc.items():
            print(f"{name} best accuracy: {acc['best']:.2f}, last accuracy: {acc['last']:.2f}")
