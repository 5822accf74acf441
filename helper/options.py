"""Command-line options: RepDistiller's flags and defaults, plus ours, validated in one place."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from dataset import add_data_args
from dataset.dali import INSTALL_HINT, dali_installed
from helper.compile import add_compile_args, compile_setting
from helper.errors import EXIT_USAGE

# RepDistiller trains these students at lr 0.01 instead of 0.05.
LOW_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus error, and takes every long flag
    with '-' or '_' between its words (SemCKD spells --path-t and --print-freq), listing one in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", "Every --flag_name is also accepted as --flag-name (SemCKD's spelling).")
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        cut = args.index("--") if "--" in args else len(args)  # what follows '--' is not a flag
        args = [self._registered_spelling(arg) for arg in args[:cut]] + args[cut:]
        return super().parse_known_args(args, namespace)

    def _registered_spelling(self, arg: str) -> str:
        """``--print-freq`` (or ``--print-freq=5``) as the flag is registered, ``--print_freq``; anything else as is."""
        flag, equals, value = arg.partition("=")
        if not flag.startswith("--") or flag in self._option_string_actions:
            return arg
        wanted = flag.replace("-", "_")
        matches = [known for known in self._option_string_actions if known.replace("-", "_") == wanted]
        return matches[0] + equals + value if len(matches) == 1 else arg


def _decay_epochs(text: str) -> list[int]:
    try:
        epochs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of epochs, e.g. 150,180,210") from None
    if any(e <= 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"'{text}': decay epochs must be positive")
    return epochs


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Flags both scripts share: schedule, data, speed, outputs, resuming."""
    g = parser.add_argument_group("schedule (RepDistiller's defaults)")
    g.add_argument("--print_freq", type=int, default=100, help="print every N steps (when not on a terminal)")
    g.add_argument("--save_freq", type=int, default=40, help="save ckpt_epoch_N.pth every N epochs")
    g.add_argument("--batch_size", type=int, default=64,
                   help="per-process batch size (train_student/train_teacher under --multiprocessing_distributed: "
                        "the node's, split over its processes, as SemCKD)")
    g.add_argument("--epochs", type=int, default=240)
    g.add_argument("--learning_rate", type=float, default=None,
                   help="default 0.05, or 0.01 for MobileNetV2/ShuffleV1/ShuffleV2 (as RepDistiller)")
    g.add_argument("--lr_decay_epochs", type=_decay_epochs, default=[150, 180, 210], help="e.g. 150,180,210")
    g.add_argument("--lr_decay_rate", type=float, default=0.1)
    g.add_argument("--weight_decay", type=float, default=5e-4)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (KD-Zoo's recipe; RepDistiller: off)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn once and stored)")
    add_data_args(parser)

    s = parser.add_argument_group("speed")
    s.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    s.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto: bf16 autocast where the hardware runs it fast, else fp32")
    s.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format for the networks")
    s.add_argument("--loader", default="auto", choices=["auto", "memory", "torchvision"],
                   help="memory: whole train set as a tensor, augmented per batch on the device; "
                        "torchvision: RepDistiller's per-image pipeline; auto: memory where the data set allows")
    s.add_argument("--dali", default=None, choices=["cpu", "gpu"],
                   help="ImageNet batches decoded and augmented by NVIDIA DALI (as SemCKD): gpu decodes on the GPU, "
                        "cpu on the CPU; needs " + INSTALL_HINT)
    add_compile_args(s)
    s.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm under torchrun")

    o = parser.add_argument_group("outputs and resuming")
    o.add_argument("--config", default=None, metavar="FILE",
                   help="YAML or JSON file of options (names as here, without dashes; a run's config.json "
                        "works too); flags on the command line override it")
    o.add_argument("--tb_freq", type=int, default=None,
                   help="accepted for RepDistiller's command lines; no effect (TensorBoard gets one point per epoch)")
    o.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: a ckpt_last.pth path, or 'auto' (this run folder's)")
    o.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds a run")


def validate_training_args(opt: argparse.Namespace, parser: argparse.ArgumentParser, model: str) -> None:
    """Refuse values that cannot train, in one line each; fill model-dependent defaults."""
    for name in ("epochs", "batch_size", "save_freq", "print_freq"):
        if getattr(opt, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(opt, name)}")
    if opt.learning_rate is None:
        opt.learning_rate = 0.01 if model in LOW_LR_MODELS else 0.05
    if opt.learning_rate <= 0:
        parser.error(f"--learning_rate must be positive, got {opt.learning_rate}")
    for name in ("lr_decay_rate", "weight_decay", "momentum"):
        if getattr(opt, name) < 0:
            parser.error(f"--{name} must not be negative, got {getattr(opt, name)}")
    if opt.nesterov and opt.momentum <= 0:
        parser.error("--nesterov needs a positive --momentum")
    if opt.num_workers < 0:
        parser.error(f"--num_workers must not be negative, got {opt.num_workers}")
    try:
        opt.compile = compile_setting(opt.compile)  # a --config file's value, or an older run's true/false
    except ValueError as exc:
        parser.error(str(exc))
    if opt.dali is not None and opt.loader == "memory":
        parser.error("--dali is a loader of its own: leave --loader memory out")
    if opt.dali is not None and not dali_installed():
        parser.error(f"--dali needs NVIDIA DALI, which is not installed: {INSTALL_HINT}")
    if opt.tb_freq is not None and os.environ.get("RANK", "0") == "0":
        print("note: --tb_freq has no effect here (TensorBoard gets one point per epoch)", file=sys.stderr)
