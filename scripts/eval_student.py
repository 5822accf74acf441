"""Evaluate a saved network alone (no teacher): a student's or teacher's model file, or its run folder.

    python scripts/eval_student.py --path save/student_model/<run>/resnet8x4_last.pth

The data set is the run's own (its config.json beside the model file), unless data flags say otherwise.

A SimKD student is evaluated as SimKD deploys it, through the projector and teacher classifier its
file carries. Prints the run's evaluation line, `` * Acc@1 ... Acc@5 ...``, on the data set's test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataset import DATASETS, DatasetUnavailable, add_data_args, build_data  # noqa: E402
from helper.config_file import parse_with_run_data  # noqa: E402
from helper.engine import validate  # noqa: E402
from helper.errors import as_user_errors, run_cli  # noqa: E402
from helper.model_file import check_classes, load_model_file  # noqa: E402
from helper.options import OneLineParser  # noqa: E402
from helper.setup import build_val_loader, place_model, setup_runtime  # noqa: E402
from models import model_dict  # noqa: E402


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="eval_student.py", description="evaluate a saved network on a test split")
    parser.add_argument("--path", required=True, help="model file, or run folder (its last, else best model)")
    parser.add_argument("--model_s", default=None, help="architecture (default: stored in the file, or its folder's)")
    parser.add_argument("--batch_size", type=int, default=64, help="evaluated at half of it, as training evaluates")
    add_data_args(parser)
    s = parser.add_argument_group("speed")
    s.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    s.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    s.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--loader", default="auto", choices=["auto", "memory", "torchvision"])
    opt = parse_with_run_data(parser, argv, ("path",))
    if opt.dataset not in DATASETS:
        parser.error(f"unknown --dataset '{opt.dataset}'; choose one of: {', '.join(DATASETS)}")
    if opt.model_s is not None and opt.model_s not in model_dict:
        parser.error(f"unknown --model_s '{opt.model_s}'; choose one of: {', '.join(model_dict)}")
    if opt.batch_size <= 0:
        parser.error(f"--batch_size must be positive, got {opt.batch_size}")
    opt.seed, opt.sync_bn, opt.compile = 0, False, False  # evaluation draws nothing and trains nothing
    return opt


def main(argv: list[str] | None = None) -> None:
    opt = parse_option(argv)
    model, arch, _ = load_model_file(opt.path, opt.model_s)
    rt = setup_runtime(opt)
    with as_user_errors(ValueError, DatasetUnavailable):
        bundle = build_data(opt)
    check_classes(model, bundle, opt.path)
    loader = build_val_loader(opt, bundle, rt)
    result = validate(place_model(model, rt), loader, rt.device, rt.channels_last, rt.autocast, rt.info)
    print(f"{arch} on {bundle.name} ({len(bundle.val)} test images)")
    print(f" * Acc@1 {result['test_acc']:.3f} Acc@5 {result['test_acc_top5']:.3f}")


if __name__ == "__main__":
    run_cli(main)
