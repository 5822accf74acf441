"""scripts/sweep.py: a table of runs, from a script of ours, a YAML grid or a preset, on this machine or Slurm.

    python scripts/sweep.py --from-script scripts/run_cifar_distill.sh --dry-run
    python scripts/sweep.py --from-script scripts/run_cifar_distill.sh --executor local --gpus 0,1,2,3
    python scripts/sweep.py --grid my_table.yaml --executor local --slots 2 -- --epochs 240
    python scripts/sweep.py --preset crd-cifar100 --trials 3 --executor slurm --partition gpu --timeout-min 720
    python scripts/sweep.py --preset crd-cifar100 --trials 3 --report

Arguments after ``--`` go to every run (a script's "$@"). Done runs are skipped, stopped ones resumed
(--resume), failed ones reported with their last line (--retry-failed starts them again); a run that reads
another's output (a student's --path_t) waits for it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helper.errors import UserError
from helper.options import OneLineParser
from sweep.grid import grid_calls, read_grid, words
from sweep.plan import plan, table
from sweep.presets import PRESETS, REPORT, preset_calls
from sweep.record import Record
from sweep.runs import ROOT, Run, describe, link
from sweep.script import script_calls


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = OneLineParser(prog="sweep.py", description=__doc__.split("\n\n")[0], epilog=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-script", type=Path, help="a script of ours (scripts/run_*.sh): its python lines")
    src.add_argument("--grid", type=Path, help="a YAML grid: methods x pairs x trials x datasets (sweep/grid.py)")
    src.add_argument("--preset", choices=PRESETS, help="a published table")
    p.add_argument("--trials", type=int, default=None, help="trials per cell (presets: default 1; grids: override)")
    p.add_argument("--name", help="the sweep's name (its logs: save/sweeps/<name>/); default from the source")
    p.add_argument("--workdir", type=Path, default=ROOT,
                   help="where grid and preset runs run and write save/ (default: the repository, as the scripts)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, their folders and states; run nothing")
    p.add_argument("--report", action="store_true", help="only the table of the sweep's runs (scripts/summarize.py) "
                                                         "with the published figures, marking cells off them")
    p.add_argument("--retry-failed", action="store_true", help="start failed runs again (resumed where they can be)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    loc = p.add_argument_group("--executor local")
    loc.add_argument("--gpus", help="GPU ids, e.g. 0,1,2,3: one run per GPU (CUDA_VISIBLE_DEVICES)")
    loc.add_argument("--per-gpu", type=int, default=1, help="runs sharing each GPU (small runs)")
    loc.add_argument("--slots", type=int, default=None, help="CPU slots without --gpus (default 1)")
    loc.add_argument("--threads", type=int, default=None,
                     help="OMP_NUM_THREADS of each run (default: the cores over the slots)")
    slurm = p.add_argument_group("--executor slurm (submitit: pip install -r requirements-slurm.txt)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-node", type=int, default=1)
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="per job; a run past it is requeued")
    slurm.add_argument("--mem", help="memory per node, e.g. 32G")
    slurm.add_argument("--cpus-per-task", type=int, default=None)
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--constraint")
    slurm.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. --slurm exclude=node7 (repeatable)")
    slurm.add_argument("--array-parallelism", type=int, default=256, help="runs of the array running at once")
    slurm.add_argument("--cluster", choices=["slurm", "local", "debug"], default="slurm",
                       help=argparse.SUPPRESS)  # submitit's local/debug executors, for tests
    return p.parse_args(argv), extra


def collect(args: argparse.Namespace, extra: list[str]) -> tuple[str, list[Run]]:
    """The sweep's name and its runs, each described by its entry point's parser."""
    workdir = args.workdir.resolve()
    if args.from_script:
        name = args.from_script.stem
        calls = script_calls(args.from_script, extra)
        where = str(args.from_script)
    elif args.grid:
        spec = read_grid(args.grid)
        name = str(spec.pop("name"))
        if args.trials is not None:
            spec["trials"] = args.trials
        spec["args"] = [*words(spec.get("args"), "grid args"), *extra]
        calls = grid_calls(spec, workdir)
        where = str(args.grid)
    else:
        name = args.preset
        calls = preset_calls(args.preset, args.trials or 1, extra, workdir)
        where = f"--preset {args.preset}"
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    if not calls:
        raise UserError(f"{where}: no runs")
    runs = [describe(call, cwd, f"{where}, run {i + 1}") for i, (cwd, call) in enumerate(calls)]
    folders = [r.folder for r in runs if r.folder]
    twice = {f for f in folders if folders.count(f) > 1}
    if twice:
        raise UserError(f"{where}: two runs would write the same run folder {sorted(twice)[0]}")
    link(runs)
    return args.name or name, runs


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    name, runs = collect(args, extra)
    record = Record(args.workdir.resolve() / "save" / "sweeps" / name)
    items = plan(runs, record, args.retry_failed)
    if args.report:
        from sweep.report import report

        source, layout = REPORT.get(args.preset or "", (None, "flat"))
        return report([r.folder for r in runs if r.folder], source, layout, args.workdir.resolve())
    if args.executor == "slurm":
        from sweep.slurm import run_slurm

        return run_slurm(items, record, args, name)
    from sweep.local import run_local, slot_envs

    envs = slot_envs(args.gpus, args.per_gpu, args.slots, args.threads)
    if args.dry_run:
        print(table(items))
        print(f"executor local: {len(envs)} slot(s); logs in {record.logs}")
        return 0
    return run_local(items, record, envs)

