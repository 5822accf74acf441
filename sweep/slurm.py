"""``--executor slurm``: the sweep as Slurm job arrays through submitit (requirements-slurm.txt), one array per
dependency level (teachers, then their students, each array waiting on the one before with afterok).

Each array task runs one run as a child process. On preemption or near the time limit Slurm signals the job;
submitit calls ``checkpoint``: the run gets SIGTERM (it checkpoints and exits 75) and the task is requeued; the
requeued task starts the run with ``--resume``. A multi-GPU run is its own command line (our torchrun path),
given ``--gpus-per-node`` GPUs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from helper.errors import UserError
from sweep.plan import Item
from sweep.record import Record
from sweep.runs import ROOT, Run, resume_args, state

INSTALL = "--executor slurm needs submitit: pip install -r requirements-slurm.txt"
_GRACE_S = 120  # how long a run may take to checkpoint after SIGTERM


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(INSTALL) from None
    return submitit


class SweepTask:
    """One run as a submitit task; checkpointable: submitit's preemption/timeout hook stops the run at a
    checkpoint and requeues this same task, which then resumes it."""

    def __init__(self, run: Run, log: Path, env: dict[str, str]):
        self.run, self.log, self.env = run, log, env
        self.process: subprocess.Popen | None = None

    def __call__(self) -> int:
        status, _ = state(self.run)
        args = resume_args(self.run, status, retry_failed=True)
        if args is None:
            return 0
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            log.write(f"# {'resume' if status == 'partial' else 'start'}: {sys.executable} {' '.join(args)}\n")
            log.flush()
            self.process = subprocess.Popen([sys.executable, *args], cwd=self.run.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, env={**os.environ, **self.env})
            code = self.process.wait()
        if code != 0:
            raise RuntimeError(f"{self.run.name}: exit {code} (log {self.log})")
        return code

    def checkpoint(self, *args, **kwargs):
        """Stop the run at a checkpoint (SIGTERM: it saves and exits 75), then requeue this task."""
        submitit = _submitit()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return submitit.helpers.DelayedSubmission(SweepTask(self.run, self.log, self.env))


def slurm_parameters(args: argparse.Namespace) -> dict:
    """submitit's parameters for the flags given (``--slurm key=value`` as additional sbatch options)."""
    extra = {}
    for pair in args.slurm:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--slurm '{pair}': expected KEY=VALUE, e.g. --slurm exclude=node7")
        extra[key.strip().replace("-", "_")] = value
    params = {"slurm_partition": args.partition, "gpus_per_node": args.gpus_per_node,
              "timeout_min": args.timeout_min, "cpus_per_task": args.cpus_per_task, "slurm_account": args.account,
              "slurm_qos": args.qos, "slurm_constraint": args.constraint, "slurm_mem": args.mem,
              "slurm_array_parallelism": args.array_parallelism, "slurm_additional_parameters": extra}
    return {k: v for k, v in params.items() if v not in (None, {})}


def make_executor(folder: Path, args: argparse.Namespace, name: str):
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=args.cluster)
    params = slurm_parameters(args)
    if args.cluster != "slurm":  # submitit's local/debug executors know only the generic parameters
        params = {k: v for k, v in params.items() if k in ("timeout_min", "gpus_per_node", "cpus_per_task")}
    executor.update_parameters(name=f"sweep_{name}", **params)
    return executor


def sbatch_text(args: argparse.Namespace, name: str, folder: Path, runs: int = 1) -> str:
    """The sbatch script the flags make (for --dry-run and the tests), without submitting anything."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor writes, without needing srun here

    params = {("time" if k == "timeout_min" else k.removeprefix("slurm_")): v
              for k, v in slurm_parameters(args).items()}
    return _make_sbatch_string("python -u -m submitit.core._submit", folder / "%j", job_name=f"sweep_{name}",
                               map_count=runs, **params)


def levels(items: list[Item]) -> list[list[Item]]:
    """The runs to start, by dependency level: a run after every run it needs."""
    depth: dict[int, int] = {}

    def level(i: int) -> int:
        if i not in depth:
            depth[i] = 1 + max((level(j) for j in items[i].run.needs), default=-1)
        return depth[i]

    out: dict[int, list[Item]] = {}
    for item in items:
        if item.args is not None:
            out.setdefault(level(item.index), []).append(item)
    return [out[k] for k in sorted(out)]


def run_slurm(items: list[Item], record: Record, args: argparse.Namespace, name: str) -> int:
    folder = record.folder / "slurm"
    waves = levels(items)
    if args.dry_run:
        from sweep.plan import table

        print(table(items))
        print(f"executor slurm: {sum(map(len, waves))} runs in {len(waves)} job array(s); sbatch script:\n")
        print(sbatch_text(args, name, folder, len(waves[0]) if waves else 1))
        return 0
    if not waves:
        print("sweep: every run is done or failed; nothing to submit")
        return 0
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    executor = make_executor(folder, args, name)
    env = {"OMP_NUM_THREADS": str(args.cpus_per_task or 1)}
    previous = None
    jobs = []
    for wave in waves:
        if previous is not None:
            if args.cluster == "slurm":
                executor.update_parameters(slurm_dependency="afterok:" + ":".join(j.job_id for j in previous))
            else:  # submitit's local executors have no dependencies: wait for the level before
                _wait(previous)
        with executor.batch():
            previous = [executor.submit(SweepTask(i.run, record.log_path(i.index, i.run), env)) for i in wave]
        jobs += previous
        print(f"submitted {len(wave)} run(s) as job array {previous[0].job_id.split('_')[0]}; "
              f"logs in {record.logs}, submitit's in {folder}")
    if args.cluster != "slurm":
        return 0 if _wait(jobs) else 1
    return 0


def _wait(jobs) -> bool:
    ok = True
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # submitit re-raises the task's failure
            print(f"FAILED job {job.job_id}: {str(exc).strip().splitlines()[-1]}")
            ok = False
    return ok
