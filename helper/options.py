"""Command-line options: RepDistiller's flags and defaults, plus ours, validated in one place."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from helper.compile_flags import add_compile_args, compile_setting
from helper.config_file import parse_with_config
from helper.errors import EXIT_USAGE, speaks

# RepDistiller trains these students at lr 0.01 instead of 0.05.
LOW_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
# The data sets build_data knows (dataset.DATASETS, which a test keeps equal), for --help without importing them.
DATASET_NAMES = ("cifar100", "cifar10", "synthetic", "folder", "imagenet", "tinyimagenet", "stl10")
DEFAULT_URL = "tcp://127.0.0.1:23451"  # SemCKD's default
INSTALL_HINT = "pip install -r requirements-dali.txt (NVIDIA DALI, nvidia-dali-cuda120)"


def dali_installed() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` names each flag's default (``default: 240``), as ArgumentDefaultsHelpFormatter, but only
    where there is one to name: not for None (the help says what happens then), off-switches or help text
    that already gives it; flags without help get the default alone."""

    @staticmethod
    def _default_text(action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is argparse.SUPPRESS or default is False or not action.option_strings:
            return None
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return shown.replace("%", "%%")  # help strings are %-formatted

    def _format_action(self, action: argparse.Action) -> str:
        shown = self._default_text(action)
        if shown is not None and not action.help:
            action = copy.copy(action)
            action.help = f"default: {shown}"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text, shown = action.help or "", self._default_text(action)
        if shown is None or "default" in text.lower():
            return text
        return f"{text} (default: {shown})"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus error, takes every long flag
    with '-' or '_' between its words (SemCKD spells --path-t and --print-freq), listing one in --help,
    and names the defaults in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epilog", "Every --flag_name is also accepted as --flag-name (SemCKD's spelling).")
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if speaks():  # every process of a distributed run parses the same command line
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


def early_usage_check(build: Callable[[], argparse.ArgumentParser],
                      check: Callable[[argparse.Namespace, argparse.ArgumentParser], None],
                      argv: Sequence[str] | None = None) -> None:
    """Parse the flags ``build()``'s parser defines and ``check`` them, before a script's heavy imports: a
    usage error among them is then one line after a fraction of a second instead of after seconds of
    imports. Only exact spellings count here; other flags (the method registry's, abbreviations) and
    --help are left to the script's full parse, which repeats the same checks, so this refuses nothing
    that the full parse would accept."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = argv[:argv.index("--")] if "--" in argv else argv
    if any(arg == "-h" or (len(arg) > 2 and "--help".startswith(arg)) for arg in flags):
        return
    parser = build()
    parser.allow_abbrev = False
    check(parse_with_config(parser, argv, known_only=True), parser)


def list_choices(parser: argparse.ArgumentParser, dest: str, names: Sequence[str]) -> None:
    """Add 'one of: ...' to the help of ``dest``'s flag, for names known only after the heavy imports."""
    action = next(a for a in parser._actions if a.dest == dest)
    action.help = f"{action.help}; one of: {', '.join(names)}"


def _decay_epochs(text: str) -> list[int]:
    try:
        epochs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of epochs, e.g. 150,180,210") from None
    if any(e <= 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"'{text}': decay epochs must be positive")
    return epochs


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The data flags every training script shares."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="cifar100", help=f"one of {', '.join(DATASET_NAMES)}")
    group.add_argument("--data_folder", default="./data", help="where datasets live (and are downloaded to)")
    group.add_argument("--image_size", type=int, default=None,
                       help="folder/imagenet/tinyimagenet/stl10 input size (default: first image's / 224 / 64 / 96)")
    group.add_argument("--syn_classes", type=int, default=100, help="synthetic: number of classes")
    group.add_argument("--syn_train_size", type=int, default=5000, help="synthetic: training images")
    group.add_argument("--syn_val_size", type=int, default=1000, help="synthetic: validation images")
    group.add_argument("--syn_seed", type=int, default=0, help="synthetic: generator seed")
    group.add_argument("--num_workers", type=int, default=8, help="data loader worker processes")


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


def require_positive(opt: argparse.Namespace, parser: argparse.ArgumentParser, *names: str) -> None:
    """One usage line for the first of ``names`` (sizes, counts, rates) that is zero or negative; an
    option left at None (its default then decides) passes."""
    for name in names:
        value = getattr(opt, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")


def require_non_negative(opt: argparse.Namespace, parser: argparse.ArgumentParser, *names: str) -> None:
    """One usage line for the first of ``names`` that is negative; None passes."""
    for name in names:
        value = getattr(opt, name, None)
        if value is not None and value < 0:
            parser.error(f"--{name} must not be negative, got {value}")


def validate_data_args(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The data flags (add_data_args', and datafree_kd.py's of the same names) that cannot make a data set."""
    require_positive(opt, parser, "image_size", "syn_classes", "syn_train_size", "syn_val_size")
    require_non_negative(opt, parser, "syn_seed", "num_workers")


def default_learning_rate(model: str) -> float:
    """RepDistiller's: 0.05, or 0.01 for the light students."""
    return 0.01 if model in LOW_LR_MODELS else 0.05


def training_notes(opt: argparse.Namespace) -> None:
    """Lines about accepted flags that do nothing, once per run (the full parse's, not the early check's)."""
    if opt.tb_freq is not None and os.environ.get("RANK", "0") == "0":
        print("note: --tb_freq has no effect here (TensorBoard gets one point per epoch)", file=sys.stderr)


def validate_training_args(opt: argparse.Namespace, parser: argparse.ArgumentParser, model: str | None) -> None:
    """Refuse values that cannot train, in one line each; fill model-dependent defaults (``model`` None: not
    known yet, the caller fills them once it is)."""
    require_positive(opt, parser, "epochs", "batch_size", "save_freq", "print_freq")
    validate_data_args(opt, parser)
    if opt.learning_rate is None and model is not None:
        opt.learning_rate = default_learning_rate(model)
    require_positive(opt, parser, "learning_rate")
    require_non_negative(opt, parser, "lr_decay_rate", "weight_decay", "momentum")
    if opt.nesterov and opt.momentum <= 0:
        parser.error("--nesterov needs a positive --momentum")
    try:
        opt.compile = compile_setting(opt.compile)  # a --config file's value, or an older run's true/false
    except ValueError as exc:
        parser.error(str(exc))
    if opt.dali is not None and opt.loader == "memory":
        parser.error("--dali is a loader of its own: leave --loader memory out")
    if opt.dali is not None and not dali_installed():
        parser.error(f"--dali needs NVIDIA DALI, which is not installed: {INSTALL_HINT}")


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """SemCKD's launcher flags, with the node flags of PyTorch's ImageNet example for several machines."""
    g = parser.add_argument_group("SemCKD's launcher (instead of torchrun; see docs/distributed.md)")
    g.add_argument("--multiprocessing_distributed", action="store_true",
                   help="start one process per GPU of --gpu_id (on CPU: --nproc_per_node gloo processes) and "
                        "train data-parallel; --batch_size and --num_workers are then the node's, split over its "
                        "processes as SemCKD does (--batch_size 256 on 8 GPUs: 32 per process)")
    g.add_argument("--gpu_id", default=None,
                   help="GPUs to use, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES, as SemCKD; default: every visible "
                        "GPU). On a machine without GPUs the list only counts the CPU processes to start")
    g.add_argument("--nproc_per_node", type=int, default=None,
                   help="processes on this node under --multiprocessing_distributed (default: one per --gpu_id "
                        "entry, or per visible GPU; 1 on CPU without --gpu_id)")
    g.add_argument("--dist_url", default=DEFAULT_URL,
                   help="where process 0 listens: tcp://host:port (node 0's address), or env:// to read "
                        "MASTER_ADDR and MASTER_PORT")
    g.add_argument("--dist_backend", default=None, choices=["nccl", "gloo"],
                   help="accepted for SemCKD's command lines: the device decides (nccl on GPUs, gloo on CPU)")
    g.add_argument("--world_size", type=int, default=1, help="nodes (machines), each running the same command")
    g.add_argument("--rank", type=int, default=0, help="this node's rank, 0 .. --world_size - 1")
