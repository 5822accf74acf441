"""``--executor local``: a queue over this machine's GPUs (``--gpus 0,1 --per-gpu K``: CUDA_VISIBLE_DEVICES per
run) or CPU slots (``--slots N``: OMP_NUM_THREADS = cores / N each). A run starts once the runs it needs are
done; a run whose need failed is reported as blocked. Ctrl-C or SIGTERM is forwarded to every run as
SIGTERM (each checkpoints and exits 75); a second one kills them. The next sweep resumes what stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from helper.errors import UserError
from sweep.plan import Item
from sweep.record import EXIT_PREEMPTED, Record


def slot_envs(gpus: str | None, per_gpu: int, slots: int | None, threads: int | None = None) -> list[dict[str, str]]:
    """The environment of each slot: its GPU (or none) and its share of the CPU cores (or ``threads``)."""
    if per_gpu < 1 or (slots is not None and slots < 1) or (threads is not None and threads < 1):
        raise UserError("--per-gpu, --slots and --threads must be at least 1")
    if gpus:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            raise UserError(f"--gpus '{gpus}': expected GPU ids, e.g. 0,1,2,3")
        envs = [{"CUDA_VISIBLE_DEVICES": g} for g in ids for _ in range(per_gpu)]
    else:
        envs = [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(slots or 1)]
    share = str(threads or max(1, len(os.sched_getaffinity(0)) // len(envs)))
    for env in envs:
        env.update(OMP_NUM_THREADS=share, MKL_NUM_THREADS=share)
    return envs


@dataclass
class Running:
    item: Item
    process: subprocess.Popen
    log: TextIO
    started: float


class LocalExecutor:
    def __init__(self, items: list[Item], record: Record, envs: list[dict[str, str]], python: str = sys.executable,
                 out: TextIO | None = None, poll: float = 0.2):
        self.items, self.record, self.envs, self.python, self.poll = items, record, envs, python, poll
        self.out = out or sys.stdout
        self.queue = [item for item in items if item.args is not None]
        self.done = {item.index for item in items if item.status == "done"}
        self.failed = {item.index: item.note for item in items if item.args is None and item.status == "failed"}
        self.blocked: dict[int, str] = {}
        self.stopped: set[int] = set()
        self.running: dict[int, Running] = {}  # slot -> its run
        self.signals = 0

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Run the queue; 0 when every run is done, 75 when stopped by a signal, 1 when some failed."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.queue or self.running:
                if not self.signals:
                    self._start_ready()
                self._reap()
                if self.running:
                    time.sleep(self.poll)
                elif self.signals:
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._summary()
        if self.signals:
            return EXIT_PREEMPTED
        return 1 if self.failed or self.blocked else 0

    def _start_ready(self) -> None:
        for item in list(self.queue):
            unmet = [j for j in item.run.needs if j not in self.done]
            bad = [j for j in unmet if j in self.failed or j in self.blocked]
            if bad:
                self.queue.remove(item)
                self.blocked[item.index] = f"needs #{bad[0] + 1}, which failed"
                self._event(f"blocked #{item.index + 1} {item.run.name}: {self.blocked[item.index]}")
                continue
            free = [s for s in range(len(self.envs)) if s not in self.running]
            if not free:
                return
            if not unmet:
                self.queue.remove(item)
                self._start(item, free[0])

    def _start(self, item: Item, slot: int) -> None:
        path = self.record.log_path(item.index, item.run)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("a")
        command = [self.python, *item.args]
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} slot {slot} {self._slot_text(slot)}: "
                  f"{' '.join(command)}\n")
        log.flush()
        env = {**os.environ, **self.envs[slot], "PYTHONUNBUFFERED": "1"}
        try:  # its own session: a terminal's Ctrl-C reaches the sweep only, which forwards SIGTERM
            process = subprocess.Popen(command, cwd=item.run.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.close()
            raise UserError(f"cannot start {command[0]}: {exc.strerror or exc}") from None
        self.running[slot] = Running(item, process, log, time.monotonic())
        self._event(f"{item.action} #{item.index + 1} {item.run.name} on slot {slot} ({self._slot_text(slot)}), "
                    f"log {path}")

    def _reap(self) -> None:
        for slot, job in list(self.running.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self.running[slot]
            job.log.close()
            last = self.record.finished(job.item.index, job.item.run, code)
            seconds = time.monotonic() - job.started
            index = job.item.index
            if code == 0:
                self.done.add(index)
                self._event(f"done #{index + 1} {job.item.run.name} in {seconds:.1f} s")
            elif code == EXIT_PREEMPTED or code < 0:
                self.stopped.add(index)
                self._event(f"stopped #{index + 1} {job.item.run.name} (exit {code}): resumes on the next sweep")
            else:
                self.failed[index] = f"exit {code}: {last}"
                self._event(f"FAILED #{index + 1} {job.item.run.name}: {self.failed[index]}")

    def _on_signal(self, signum: int, _frame) -> None:
        self.signals += 1
        hard = self.signals > 1
        print(f"\nsweep: {signal.Signals(signum).name}: "
              f"{'killing the runs' if hard else 'stopping every run at a checkpoint (again: kill them)'}",
              file=self.out, flush=True)
        for job in self.running.values():
            try:
                if hard:
                    os.killpg(job.process.pid, signal.SIGKILL)
                else:
                    job.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    # ---- what it prints ----------------------------------------------------------------------------
    def _slot_text(self, slot: int) -> str:
        gpu = self.envs[slot]["CUDA_VISIBLE_DEVICES"]
        return f"GPU {gpu}" if gpu else f"CPU, {self.envs[slot]['OMP_NUM_THREADS']} threads"

    def _event(self, text: str) -> None:
        total = len(self.items)
        finished = len(self.done) + len(self.failed) + len(self.blocked)
        width = 20
        bar = "#" * (width * finished // max(total, 1))
        print(f"[{bar:<{width}}] {len(self.done)}/{total} done, {len(self.running)} running, "
              f"{len(self.queue)} queued, {len(self.failed)} failed | {text}", file=self.out, flush=True)

    def _summary(self) -> None:
        rows = []
        for item in self.items:
            i = item.index
            if i in self.done:
                state = "skipped (done)" if item.args is None else "done"
            elif i in self.failed:
                state = f"failed: {self.failed[i]}"
            elif i in self.blocked:
                state = f"blocked: {self.blocked[i]}"
            elif i in self.stopped:
                state = "stopped (resumes on the next sweep)"
            else:
                state = "not started"
            rows.append(f"#{i + 1:<3} {item.run.name}: {state}")
        print("\n".join(["", *rows]), file=self.out, flush=True)
        print(f"{len(self.done)} done, {len(self.failed)} failed, {len(self.blocked)} blocked, "
              f"{len(self.stopped)} stopped, {len(self.queue)} not started; logs in {self.record.logs}",
              file=self.out, flush=True)


def run_local(items: list[Item], record: Record, envs: list[dict[str, str]]) -> int:
    return LocalExecutor(items, record, envs).run()

