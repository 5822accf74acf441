"""Synthesis cost of Fast-DFKD (fast_meta) against DeepInversion (deepinv) and CMI (cmi) on the same teacher.

1. Images per second: each method synthesises the same number of images (--images, in rounds of
   --batch_size) with the reference's settings: fast_meta as Fast-10 (10 steps, lr_g 2e-3, lr_z 0.01,
   bn 10, oh 0.4, adv 1.1, bn_mmt 0.9; the reference's generator), deepinv as scripts/deepinv_cifar.sh
   (--deepinv_steps 1000 steps on the pixels, lr_g 0.1, bn 10, oh 1, adv 1), cmi as scripts/cmi_cifar.sh
   (--cmi_steps 200 steps of a re-drawn generator, lr_g 1e-3, bn 1, oh 1, adv 0.5, cr 0.8, cr_T 0.2).
   fast_meta is measured before and after the baselines (a shared machine's load drifts); reported:
   images/s and the ratio of their mean to each baseline's.
2. Accuracy after the same wall-clock budget: each method's whole loop (synthesis rounds, each followed by
   --kd_steps KD steps on the pool) runs from a fresh student and generator until the budget is spent; then
   the student's test accuracy. The baselines run first; a round is never cut, so when a baseline's first
   round alone outlasts --budget, fast_meta gets the longest time a baseline took instead.

The teacher: --teacher_ckpt, or (default) a resnet20 trained here on the synthetic set with train_teacher.py.
Everything runs through datafree.run.DataFreeRun, the loop datafree_kd.py runs. Outputs go to --work_dir.

    OMP_NUM_THREADS=1 python scripts/benchmark_datafree.py --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import train_teacher  # noqa: E402
from datafree.data import load_test_data  # noqa: E402
from datafree.models import build_network, load_teacher  # noqa: E402
from datafree.options import parse_option  # noqa: E402
from datafree.run import DataFreeRun, Totals  # noqa: E402
from helper.engine import validate  # noqa: E402
from helper.runlog import Progress  # noqa: E402
from helper.setup import setup_runtime  # noqa: E402
from helper.trainer import RunOutputs  # noqa: E402

SETTINGS = {
    "fast_meta": ["--g_steps", "10", "--lr_g", "2e-3", "--lr_z", "0.01", "--bn", "10", "--oh", "0.4", "--adv", "1.1",
                  "--bn_mmt", "0.9", "--is_maml", "1"],
    "deepinv": ["--lr_g", "0.1", "--bn", "10", "--oh", "1", "--adv", "1"],
    "cmi": ["--lr_g", "1e-3", "--bn", "1", "--oh", "1", "--adv", "0.5", "--cr", "0.8", "--cr_T", "0.2"],
}
BASELINES = ("deepinv", "cmi")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher_ckpt", default=None, help="default: train a resnet20 on the synthetic set here")
    parser.add_argument("--teacher_epochs", type=int, default=12)
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--batch_size", type=int, default=64, help="images per synthesis round and per KD step")
    parser.add_argument("--images", type=int, default=64, help="images each method synthesises in part 1")
    parser.add_argument("--deepinv_steps", type=int, default=1000, help="DeepInversion's steps per batch")
    parser.add_argument("--cmi_steps", type=int, default=200, help="CMI's steps per batch")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of each method's loop in part 2")
    parser.add_argument("--kd_steps", type=int, default=20, help="KD steps after each synthesis round in part 2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--work_dir", default="save/benchmark_datafree")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


DATA = ["--dataset", "synthetic", "--syn_classes", "10", "--syn_train_size", "2000", "--syn_val_size", "500"]


def teacher_checkpoint(args: argparse.Namespace) -> str:
    if args.teacher_ckpt:
        return args.teacher_ckpt
    train_teacher.main(["--model", "resnet20", *DATA, "--num_workers", "0", "--epochs", str(args.teacher_epochs),
                        "--device", args.device, "--precision", args.precision, "--seed", str(args.seed),
                        "--trial", "benchmark", "--overwrite"])
    return os.path.abspath("save/models/resnet20_synthetic_lr_0.05_decay_0.0005_trial_benchmark/resnet20_best.pth")


def make_run(args: argparse.Namespace, method: str, teacher_ckpt: str, tag: str) -> DataFreeRun:
    steps = {"deepinv": ["--g_steps", str(args.deepinv_steps)],
             "cmi": ["--g_steps", str(args.cmi_steps)]}.get(method, [])
    opt = parse_option([*DATA, "--method", method, *SETTINGS[method], *steps, "--teacher_ckpt", teacher_ckpt,
                        "--student", args.student, "--batch_size", str(args.batch_size), "--kd_steps",
                        str(args.kd_steps), "--ep_steps", str(args.kd_steps), "--T", "20", "--lr", "0.1",
                        "--device", args.device, "--precision", args.precision, "--seed", str(args.seed),
                        "--epochs", "1000", "--save_images", "0"])
    rt = setup_runtime(opt)
    data = load_test_data(opt)
    teacher, opt.teacher = load_teacher(opt.teacher_ckpt, None, data.num_classes)
    folder = Path("save") / "datafree" / f"benchmark-{method}-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    run = DataFreeRun(opt, rt, data, teacher, build_network(opt.student, data.num_classes),
                      RunOutputs(folder, folder / "tb", opt.student, save_optimizer=False))
    run.create_files()
    return run


def images_per_second(args: argparse.Namespace, method: str, teacher_ckpt: str) -> tuple[float, float]:
    run = make_run(args, method, teacher_ckpt, "speed")
    totals = Totals()
    rounds = -(-args.images // args.batch_size)
    for r in range(rounds):
        run.synthesize_round(1, r, totals)
        print(f"  {method} round {r + 1}/{rounds}: {totals.syn_seconds:.1f} s so far", flush=True)
    run.synth.remove_hooks()
    return totals.images / totals.syn_seconds, totals.syn_seconds


def accuracy_after_budget(args: argparse.Namespace, method: str, teacher_ckpt: str, budget: float) -> dict:
    run = make_run(args, method, teacher_ckpt, "budget")
    totals, start, r = Totals(), time.perf_counter(), 0
    progress = Progress("kd", args.kd_steps, args.kd_steps, enabled=False)
    while time.perf_counter() - start < budget:
        run.synthesize_round(1, r, totals)
        run.distil_round(1, r, 0, totals, progress)
        r += 1
    spent = time.perf_counter() - start
    result = validate(run.student, run.val_loader, run.device, run.rt.channels_last, run.rt.autocast, run.rt.info)
    run.synth.remove_hooks()
    return {"acc": result["test_acc"], "rounds": r, "images": totals.images, "seconds": spent,
            "synthesis": totals.syn_seconds}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.teacher_ckpt:
        args.teacher_ckpt = os.path.abspath(args.teacher_ckpt)  # before moving into the work folder
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.work_dir)
    teacher_ckpt = teacher_checkpoint(args)
    print(f"teacher: {teacher_ckpt}; torch threads {torch.get_num_threads()}")
    speed = [(m, images_per_second(args, m, teacher_ckpt)) for m in ("fast_meta", *BASELINES, "fast_meta")]
    budget = {m: accuracy_after_budget(args, m, teacher_ckpt, args.budget) for m in BASELINES}
    budget["fast_meta"] = accuracy_after_budget(args, "fast_meta", teacher_ckpt,
                                                max(args.budget, *(budget[m]["seconds"] for m in BASELINES)))
    print(f"\n1. synthesis of {args.images} images, batch {args.batch_size} (fast_meta 10 steps/round, "
          f"deepinv {args.deepinv_steps}, cmi {args.cmi_steps})")
    for method, (rate, seconds) in speed:
        print(f"   {method:9s} {rate:8.2f} images/s ({seconds:.1f} s)")
    fast = (speed[0][1][0] + speed[-1][1][0]) / 2
    for method, (rate, _) in speed[1:-1]:
        print(f"   fast_meta (mean of both) / {method}: {fast / rate:.1f}x")
    print(f"\n2. test accuracy after the same wall-clock time of synthesis + KD ({args.kd_steps} KD steps per round)")
    for method, row in budget.items():
        print(f"   {method:9s} {row['acc']:6.2f} %  ({row['rounds']} rounds, {row['images']} images, "
              f"synthesis {row['synthesis']:.0f} s of {row['seconds']:.0f} s)")
    for method in BASELINES:
        print(f"   fast_meta - {method}: {budget['fast_meta']['acc'] - budget[method]['acc']:+.2f} points")


if __name__ == "__main__":
    main()
