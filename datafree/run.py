"""The data-free distillation loop: synthesis rounds and KD steps, evaluation, checkpoints, resuming.

Each epoch runs ``ep_steps // kd_steps`` rounds of [synthesise one batch into the pool; from epoch
``warmup`` (0-indexed) on, ``kd_steps`` KD steps on batches of the pool], then evaluates the student on
the test set and, after the warm-up, steps the cosine schedule (the reference's ``datafree_kd.py``).

The loop is written here rather than in :class:`helper.trainer.Trainer`, whose epochs are passes over
a data loader; it reuses that module's run-folder checks, stop requests and file names, and the
project's checkpoint, RNG, metrics, TensorBoard and progress helpers. A run stops cleanly (SIGTERM,
Ctrl-C) after the KD step or synthesis round in progress and resumes there bit-identically in a
deterministic setting: every random draw of a round or a KD step comes from (seed, round, step).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from datafree.augment import Normalizer, to_uint8
from datafree.cmi import BANK_FILE, BANK_SIZE, CMISynthesizer, feature_modules
from datafree.criterions import KLDiv
from datafree.data import TestData, load_test_data
from datafree.generator import Generator
from datafree.models import build_network, load_teacher
from datafree.options import GENERATIVE, parse_option
from datafree.pool import POOL_FILE, ImagePool, kd_batch, read_owner
from datafree.synthesis import DeepInvSyntheiszer, FastMetaSynthesizer, FastSynthesizer, GenerativeSynthesizer
from dataset import DatasetUnavailable
from dataset.memory import MemoryLoader, batch_seed
from helper.checkpoint import atomic_save, atomic_text, safe_load, state_dict_of
from helper.engine import read_step, validate
from helper.errors import EXIT_PREEMPTED, UserError, as_user_errors
from helper.folder_lock import lock_folders
from helper.rng import capture_rng, restore_rng
from helper.runconfig import save_run_config
from helper.runlog import MetricsLog, Progress, TensorBoard
from helper.setup import Runtime, place_model, setup_runtime
from helper.teacher import freeze_teacher
from helper.trainer import (
    METRICS_FILE,
    RESULTS_FILE,
    RESUME_FILE,
    RunOutputs,
    StopRequest,
    prepare_outputs,
    refuse_reuse,
)

FORMAT = "datafree-1"
COSINE_EPOCHS, COSINE_MIN_LR = 200, 2e-4  # the reference's CosineAnnealingLR(optimizer, 200, eta_min=2e-4)


@dataclass
class Totals:
    """Sums over the epoch so far (kept in a checkpoint, so a resumed epoch reports whole)."""

    kd_samples: int = 0
    kd_loss: float = 0.0
    kd_agree: float = 0.0
    kd_seconds: float = 0.0
    rounds: int = 0
    images: int = 0
    syn_seconds: float = 0.0
    syn_terms: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        row = {"synthesis_time": self.syn_seconds, "kd_time": self.kd_seconds,
               "images_per_s": self.images / self.syn_seconds if self.syn_seconds else 0.0}
        if self.kd_samples:
            row.update(loss=self.kd_loss / self.kd_samples, train_acc=100.0 * self.kd_agree / self.kd_samples)
        row.update({k: v / max(self.rounds, 1) for k, v in self.syn_terms.items()})
        return row


@dataclass
class Position:
    """Epoch ``epoch`` (1-indexed) is done when ``complete``; else round ``round`` (0-indexed) of it has been
    synthesised and ``step`` of its KD steps are done."""

    epoch: int
    complete: bool
    round: int = 0
    step: int = 0


class DataFreeRun:
    """One data-free run: the frozen teacher, the student, the synthesiser, the pool, their optimizers."""

    def __init__(self, opt: argparse.Namespace, rt: Runtime, data: TestData, teacher_net: torch.nn.Module,
                 student: torch.nn.Module, out: RunOutputs):
        self.opt, self.rt, self.data, self.out = opt, rt, data, out
        self.device = rt.device
        self.seed = opt.seed
        self.teacher = freeze_teacher(teacher_net, rt, preact=False, fold_bn=False)  # BN layers kept for the hooks
        self.student = place_model(student, rt)
        self.normalizer = Normalizer(data.mean, data.std, self.device)
        self.mean = torch.tensor(data.mean, device=self.device)
        self.std = torch.tensor(data.std, device=self.device)
        self.val_loader = MemoryLoader(data.images, data.labels, data.mean, data.std, device=self.device,
                                       batch_size=opt.batch_size, train=False, channels_last=rt.channels_last)
        self.rounds = opt.ep_steps // opt.kd_steps
        self.generative = opt.method in GENERATIVE
        # The student's loss: KL at --T; for the online-generator baselines the reference replaces it with L1 on
        # the logits (dfad) or KL at T = 1, whatever --T says, and so does this.
        self.criterion = nn.L1Loss() if opt.method == "dfad" else KLDiv(T=1.0 if self.generative else opt.T)
        self.save_dir = image_folder(opt, out.folder)
        # images the schedule synthesises: the pool (and CMI's bank) need no more room
        self.schedule = opt.epochs * self.rounds * opt.synthesis_batch_size
        self.synth = self._synthesizer()
        # The online generators keep no pool: it holds their latest batch, for the sample grids.
        capacity = opt.synthesis_batch_size if self.generative else min(opt.pool_size, self.schedule)
        self.pool = ImagePool(capacity, (data.image_size, data.image_size, 3), self.device, self.save_dir / POOL_FILE)
        if opt.cmi_init:
            self.pool.load_fixed(opt.cmi_init)
        self.optimizer = torch.optim.SGD(self.student.parameters(), opt.lr, momentum=opt.momentum,
                                         weight_decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, COSINE_EPOCHS,
                                                                    eta_min=COSINE_MIN_LR)
        self.scaler = rt.grad_scaler()
        self.stop = StopRequest(rt.info)
        self.best_acc, self.last_acc, self.time_cost = 0.0, 0.0, 0.0

    def _synthesizer(self) -> FastSynthesizer | DeepInvSyntheiszer | GenerativeSynthesizer | CMISynthesizer:
        opt, size = self.opt, (3, self.data.image_size, self.data.image_size)
        # The reference synthesises in fp32 whatever --fp16 says; bf16 needs no loss scaling, so it is used.
        autocast = self.rt.autocast if self.rt.precision == "bf16" else nullcontext
        common = dict(num_classes=self.data.num_classes, img_size=size, iterations=opt.g_steps, lr_g=opt.lr_g,
                      synthesis_batch_size=opt.synthesis_batch_size, adv=opt.adv, bn=opt.bn, oh=opt.oh,
                      normalizer=self.normalizer, autocast=autocast, channels_last=self.rt.channels_last)
        if opt.method == "deepinv":
            return DeepInvSyntheiszer(self.teacher, self.student, **common)
        generator = place_model(Generator(nz=opt.nz, ngf=opt.ngf, img_size=self.data.image_size, nc=3), self.rt)
        if self.generative:
            return GenerativeSynthesizer(self.teacher, self.student, generator, opt.nz, size, iterations=opt.g_steps,
                                         lr_g=opt.lr_g, synthesis_batch_size=opt.synthesis_batch_size,
                                         sample_batch_size=opt.batch_size, adv=opt.adv, bn=opt.bn, oh=opt.oh,
                                         act=opt.act, balance=opt.balance, criterion=self.criterion,
                                         normalizer=self.normalizer, autocast=autocast,
                                         channels_last=self.rt.channels_last)
        if opt.method == "cmi":
            return CMISynthesizer(self.teacher, self.student, generator, opt.nz,
                                  feature_layers=feature_modules(self.teacher.network, opt.teacher),
                                  bank_path=self.save_dir / BANK_FILE, bank_size=min(BANK_SIZE, self.schedule),
                                  cr=opt.cr, cr_T=opt.cr_T, **common)
        kind = FastMetaSynthesizer if opt.method == "fast_meta" else FastSynthesizer
        extra = {"is_maml": opt.is_maml} if opt.method == "fast_meta" else {}
        return kind(self.teacher, self.student, generator, opt.nz, lr_z=opt.lr_z, warmup=opt.warmup,
                    reset_l0=opt.reset_l0, bn_mmt=opt.bn_mmt, **common, **extra)

    # ----- checkpoints ----------------------------------------------------------------------------
    def _save_resume(self, position: Position, totals: Totals) -> None:
        state = {
            "format": FORMAT, "arch": self.out.arch, "opt": vars(self.opt), "position": asdict(position),
            "student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "synthesizer": self.synth.state_dict(), "pool": self.pool.state(), "totals": asdict(totals),
            "best_acc": self.best_acc, "last_acc": self.last_acc, "time_cost": self.time_cost,
            "rng": capture_rng(self.device),
        }
        atomic_save(state, self.out.path(RESUME_FILE))
        self.pool.flush()  # only now: the checkpoint holds the journal a kill in between would need
        self.synth.flush()

    def _load_resume(self, path: Path) -> tuple[Position, Totals]:
        state = safe_load(path)
        if state.get("format") != FORMAT:
            return self._warm_start(state, path), Totals()
        if state["arch"] != self.out.arch or state["opt"]["method"] != self.opt.method:
            raise UserError(f"{path} is a {state['opt']['method']} run of '{state['arch']}', not "
                            f"{self.opt.method} of '{self.out.arch}'")
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.synth.load_state_dict(state["synthesizer"], self.device)
        self.pool.load(state["pool"])
        self.best_acc, self.last_acc, self.time_cost = state["best_acc"], state["last_acc"], state["time_cost"]
        self.seed = state["opt"]["seed"]  # the position-seeded draws must continue the same streams
        restore_rng(state["rng"], self.device)
        totals = Totals(**state["totals"])
        return Position(**state["position"]), totals

    def _warm_start(self, state: dict, path: Path) -> Position:
        """The reference's --resume: its file holds the student, optimizer, scheduler and epoch only, so the
        generator and the pool start afresh (as they do there)."""
        if "epoch" not in state:
            raise UserError(f"{path} is neither a ckpt_last.pth of this script nor the reference's checkpoint")
        self.student.load_state_dict(state_dict_of(state, path))
        for key, target in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            if key in state:
                target.load_state_dict(state[key])
        self.best_acc = float(state.get("best_acc1", 0.0))
        claim_image_folder(self.save_dir, self.out.folder, self.opt)
        self.create_files()
        print(f"=> warm start from the reference-format {path}: student, optimizer and scheduler at epoch "
              f"{state['epoch']}; the generator and the image pool start afresh")
        return Position(int(state["epoch"]), complete=True)

    def create_files(self) -> None:
        """A fresh run's pool file (and the synthesiser's), owned by this run folder."""
        run = str(self.out.folder.resolve())
        self.pool.create_file(run)
        self.synth.create_files(run)

    def _stop_now(self, position: Position, totals: Totals) -> None:
        self._save_resume(position, totals)
        where = (f"after epoch {position.epoch}" if position.complete else
                 f"at epoch {position.epoch}, round {position.round + 1}, KD step {position.step}")
        print(f"stopped by {self.stop.reason} {where}; checkpoint saved to {self.out.path(RESUME_FILE)}. Resume "
              f"with: {self.out.command} --resume auto", flush=True)
        sys.exit(EXIT_PREEMPTED)

    def _save_model_file(self, name: str, payload: dict) -> None:
        """RepDistiller's keys ('model', 'best_acc') and the reference's ('state_dict', 'best_acc1'), one set of
        weights (torch.save stores tensors shared by two keys once)."""
        weights = self.student.state_dict()
        atomic_save({**payload, "model": weights, "state_dict": weights, "arch": self.out.arch}, self.out.path(name))

    # ----- the loop -------------------------------------------------------------------------------
    def fit(self, resume_from: Path | None) -> None:
        position, totals = Position(self.opt.start_epoch, complete=True), Totals()
        if resume_from is not None:
            position, totals = self._load_resume(resume_from)
            print(f"=> resumed from {resume_from} (epoch {position.epoch}"
                  + (", complete)" if position.complete else f", round {position.round + 1}, step {position.step})"))
        else:
            self.create_files()
        done = position.epoch if position.complete else position.epoch - 1
        resume_at = ("main", done) if resume_from is not None else None
        metrics, tb = MetricsLog(self.out.path(METRICS_FILE), resume_at), TensorBoard(self.out.tb_folder, resume_at)
        try:
            for epoch in range(done + 1, self.opt.epochs + 1):
                mid = not position.complete and epoch == position.epoch
                self._epoch(epoch, position if mid else None, totals if mid else Totals(), metrics, tb)
        finally:
            tb.close()
            self.synth.remove_hooks()
        self._finish()

    def _epoch(self, epoch: int, position: Position | None, totals: Totals, metrics: MetricsLog,
               tb: TensorBoard) -> None:
        start = time.time()
        distil = epoch - 1 >= self.opt.warmup  # the reference's 0-indexed `epoch >= args.warmup`
        freq = 10 if self.opt.print_freq == -1 else max(self.opt.print_freq, 1)
        progress = Progress(f"Epoch: [{epoch}]", self.rounds * self.opt.kd_steps, freq,
                            enabled=distil and (self.opt.print_freq != 0 or sys.stdout.isatty()))
        if not distil:
            print(f"==> epoch {epoch}: warm-up, synthesis only")
        lr = self.optimizer.param_groups[0]["lr"]
        first_round = position.round if position is not None else 0
        for r in range(first_round, self.rounds):
            first_step = position.step if position is not None and r == position.round else None
            if first_step is None:
                self.synthesize_round(epoch, r, totals)
                first_step = 0
                if self.stop.agree(self.device):
                    self._stop_now(Position(epoch, False, r, 0), totals)
            if distil:
                self.distil_round(epoch, r, first_step, totals, progress)
        row = {"stage": "main", "epoch": epoch, "lr": lr, **totals.row()}
        self._end_epoch(epoch, row, start)
        metrics.append(row)
        tb.log("main", epoch, {k: v for k, v in row.items() if k not in ("stage", "epoch")})
        self._save_resume(Position(epoch, True), Totals())
        if self.stop.agree(self.device):
            self._stop_now(Position(epoch, True), Totals())

    def synthesize_round(self, epoch: int, r: int, totals: Totals) -> None:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(batch_seed(self.seed, 1, self.synth.ep + 1, 0))
        self.synth.where = f"epoch {epoch}, round {r + 1}"
        result = self.synth.synthesize(generator)
        self.pool.add(to_uint8(result.images))
        self.time_cost += result.seconds
        totals.rounds += 1
        totals.images += result.images.shape[0]
        totals.syn_seconds += result.seconds
        for key, value in result.terms.items():
            totals.syn_terms[key] = totals.syn_terms.get(key, 0.0) + value

    def distil_round(self, epoch: int, r: int, first_step: int, totals: Totals, progress: Progress) -> None:
        """KD steps: T²·KL(teacher ‖ student) at T = --T on pool batches, no labels (online generators: see
        ``self.criterion``)."""
        self.student.train()
        start = time.perf_counter()
        for step in range(first_step, self.opt.kd_steps):
            images = self._kd_images(step)
            with self.rt.autocast():
                t_out = self.teacher(images)
                s_out = self.student(images)
            loss = self.criterion(s_out.float(), t_out)
            agree = (s_out.argmax(1) == t_out.argmax(1)).sum()
            value, _, correct = read_step({"div": loss}, loss, agree, f"epoch {epoch}, round {r + 1}, KD step {step}",
                                          self.stop)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n = images.shape[0]
            totals.kd_samples += n
            totals.kd_loss += value * n
            totals.kd_agree += correct
            progress.update(r * self.opt.kd_steps + step, totals.kd_loss / totals.kd_samples,
                            100.0 * totals.kd_agree / totals.kd_samples)
            if self.stop.stop:
                totals.kd_seconds += time.perf_counter() - start
                self._stop_now(Position(epoch, False, r, step + 1), totals)
        totals.kd_seconds += time.perf_counter() - start

    def _kd_images(self, step: int) -> torch.Tensor:
        """Step ``step`` of the current round's KD: a batch of the pool, or fresh images of an online generator."""
        if not self.generative:
            return kd_batch(self.pool, self.seed, self.synth.ep, step, self.opt.batch_size, self.mean, self.std,
                            self.rt.channels_last)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(batch_seed(self.seed, 4, self.synth.ep, step))
        return self.synth.sample(generator)

    def _end_epoch(self, epoch: int, row: dict, start: float) -> None:
        if self.opt.save_images:
            grid = self.pool.newest(self.opt.save_images).permute(0, 3, 1, 2).float().div(255)
            self.save_dir.mkdir(parents=True, exist_ok=True)
            save_image(grid, self.save_dir / f"synthetic_{epoch:03d}.png", nrow=math.ceil(math.sqrt(len(grid))))
        result = validate(self.student, self.val_loader, self.device, self.rt.channels_last, self.rt.autocast,
                          self.rt.info)
        row.update(result, pool=min(self.pool.count, self.pool.capacity), epoch_time=time.time() - start)
        print(f"[Eval] Epoch={epoch - 1} Acc@1={result['test_acc']:.4f} Acc@5={result['test_acc_top5']:.4f} "
              f"Loss={result['test_loss']:.4f} Lr={row['lr']:.4f}")
        print(f"epoch {epoch}, total time {row['epoch_time']:.2f}, synthesis {row['synthesis_time']:.2f} s "
              f"({row['images_per_s']:.1f} images/s), pool {row['pool']}")
        self.last_acc = result["test_acc"]
        if self.last_acc > self.best_acc:
            self.best_acc = self.last_acc
            self._save_model_file(f"{self.out.arch}_best.pth", {
                "epoch": epoch, "best_acc": torch.tensor(self.best_acc, dtype=torch.float32),
                "best_acc1": self.best_acc, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()})
        if epoch - 1 >= self.opt.warmup:
            self.scheduler.step()

    def _finish(self) -> None:
        self._save_model_file(f"{self.out.arch}_last.pth", {"opt": vars(self.opt)})
        if hasattr(self.synth, "generator"):
            atomic_save({"state_dict": self.synth.generator.state_dict(), "nz": self.opt.nz, "ngf": self.opt.ngf},
                        self.out.path("generator.pth"))
        results = {"best_acc": self.best_acc, "last_acc": self.last_acc, "epochs": self.opt.epochs,
                   "synthesis_hours": self.time_cost / 3600}
        atomic_text(self.out.path(RESULTS_FILE), json.dumps(results, indent=1) + "\n")
        print(f"Best: {self.best_acc:.4f}")
        print(f"Generation Cost: {self.time_cost / 3600:1.3f}")
        print(f"best accuracy: {self.best_acc:.2f}")
        print(f"last accuracy: {self.last_acc:.2f}")


def image_folder(opt: argparse.Namespace, run_folder: Path) -> Path:
    """Where the pool file and the sample grids go: --save_dir, else the run folder."""
    return Path(opt.save_dir) if opt.save_dir else run_folder


def claim_image_folder(save_dir: Path, run_folder: Path, opt: argparse.Namespace) -> None:
    """Before a run creates its pool: another run's pool there is replaced only with --overwrite (its grids go
    too, so the two runs' images do not mix)."""
    holder = read_owner(save_dir / POOL_FILE)
    if holder is not None and holder.get("run") != str(run_folder.resolve()):
        refuse_reuse(save_dir, f"the image pool of the run in {holder.get('run') or 'another folder'}", opt,
                     "pass --overwrite to start over there (that pool is lost) or give this run another --save_dir")
    if opt.overwrite:
        for grid in save_dir.glob("synthetic_*.png"):
            grid.unlink()


def run_name(opt: argparse.Namespace) -> str:
    """The reference's ``<method>``, ``<dataset>-<teacher>-<student>`` and ``-<log_tag>``, in one folder name."""
    tag = f"-{opt.log_tag}" if opt.log_tag else ""
    return f"{opt.method}-{opt.dataset}-{opt.teacher}-{opt.student}{tag}"


def evaluate_only(opt: argparse.Namespace, rt: Runtime, data: TestData) -> None:
    """The reference's --evaluate_only: the student of a checkpoint (ours, RepDistiller's or the reference's)."""
    student = place_model(build_network(opt.student, data.num_classes), rt)
    checkpoint = safe_load(opt.resume)
    weights = checkpoint["student"] if checkpoint.get("format") == FORMAT else state_dict_of(checkpoint, opt.resume)
    student.load_state_dict(weights)
    loader = MemoryLoader(data.images, data.labels, data.mean, data.std, device=rt.device, batch_size=opt.batch_size,
                          train=False, channels_last=rt.channels_last)
    result = validate(student, loader, rt.device, rt.channels_last, rt.autocast, rt.info)
    print(f"[Eval] Acc={result['test_acc']:.4f}")


def main(argv: list[str] | None = None) -> None:
    opt = parse_option(argv)
    rt = setup_runtime(opt)
    if rt.info.enabled:
        raise UserError("data-free distillation runs in one process: start it with python, not torchrun")
    with as_user_errors(ValueError, DatasetUnavailable):
        data = load_test_data(opt)
    if opt.evaluate_only:
        evaluate_only(opt, rt, data)
        return
    teacher_net, opt.teacher = load_teacher(opt.teacher_ckpt, opt.teacher, data.num_classes)
    opt.model_t = opt.teacher
    student = build_network(opt.student, data.num_classes)
    opt.model_name = run_name(opt)
    opt.save_folder = str(Path(opt.model_path) / opt.model_name)
    opt.tb_folder = str(Path(opt.tb_path) / opt.model_name)
    out = RunOutputs(Path(opt.save_folder), Path(opt.tb_folder), opt.student, save_optimizer=True)
    save_dir = image_folder(opt, out.folder)
    # one run at a time in its run folder and its image folder, from before the first look at either
    with lock_folders([(out.folder, "--log_tag"), (save_dir, "--save_dir")]):
        resume = prepare_outputs(out, opt, rt.info)
        if resume is None:
            claim_image_folder(save_dir, out.folder, opt)
        with as_user_errors(ValueError):
            run = DataFreeRun(opt, rt, data, teacher_net, student, out)
        teacher_acc = None
        if resume is None:
            teacher_acc = validate(run.teacher, run.val_loader, rt.device, rt.channels_last, rt.autocast,
                                   rt.info)["test_acc"]
            print(f"teacher accuracy: {teacher_acc:.2f}")
        save_run_config(opt, rt, out.folder, resumed=resume is not None,
                        teacher={"arch": opt.teacher, "test_acc": teacher_acc}, teacher_file=opt.teacher_ckpt)
        run.fit(resume)
