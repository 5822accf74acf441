"""``datafree_kd.py``'s command line: every flag of the reference's ``datafree_kd.py`` with its meaning and
default, the issue's ``--teacher_ckpt``, and this project's run flags (device, precision, run folders)."""

from __future__ import annotations

import argparse
import os
import sys

import torch

from datafree.data import DATASETS
from datafree.models import DEFAULT_TEACHER, FDF_NAMES, canonical_arch
from helper.config_file import parse_with_config
from helper.errors import UserError
from helper.options import OneLineParser, require_non_negative, require_positive, validate_data_args

GENERATIVE = ("dafl", "zskt", "dfad", "dfq")
METHODS = ("fast_meta", "fast", "deepinv", "cmi", *GENERATIVE)
# The reference's schedule produces epochs x (ep_steps // kd_steps) x 256 = 56,320 images (CIFAR, 220 epochs).
DEFAULT_POOL = 60000


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not three comma-separated numbers")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="datafree_kd.py", description="data-free knowledge distillation "
                           "(Fast-DFKD and its baselines; the reference's flags)")
    d = parser.add_argument_group("data-free synthesis (the reference's flags and defaults)")
    d.add_argument("--method", default="fast_meta", choices=METHODS,
                   help="fast_meta: meta-learned generator (Fast-DFKD); fast: the same without meta-learning; "
                        "deepinv: DeepInversion (pixels optimised); cmi: contrastive model inversion; "
                        "dafl, zskt, dfad, dfq: online generators")
    d.add_argument("--adv", default=0, type=float, help="scaling factor for adversarial distillation")
    d.add_argument("--bn", default=0, type=float, help="scaling factor for BN regularization")
    d.add_argument("--oh", default=0, type=float, help="scaling factor for one hot loss (cross entropy)")
    d.add_argument("--act", default=0, type=float, help="scaling factor for activation loss used in DAFL")
    d.add_argument("--balance", default=0, type=float, help="scaling factor for class balance")
    d.add_argument("--save_dir", default=None,
                   help="where the synthetic images go: the pool file and the sample grids (default: the run folder)")
    d.add_argument("--cr", default=1, type=float, help="scaling factor for contrastive model inversion (cmi)")
    d.add_argument("--cr_T", default=0.5, type=float, help="temperature for contrastive model inversion (cmi)")
    d.add_argument("--cmi_init", default=None, help="folder of pre-inverted images, added to the distillation set")
    d.add_argument("--lr_g", default=1e-3, type=float, help="initial learning rate for generator")
    d.add_argument("--lr_z", default=1e-3, type=float, help="initial learning rate for latent code")
    d.add_argument("--g_steps", default=1, type=int, metavar="N", help="number of iterations for generation")
    d.add_argument("--reset_l0", default=0, type=int, help="reset l0 in the generator during training")
    d.add_argument("--reset_bn", default=0, type=int, help="reset bn layers during training (unused, as the reference)")
    d.add_argument("--bn_mmt", default=0, type=float, help="momentum when fitting batchnorm statistics")
    d.add_argument("--is_maml", default=1, type=int, help="meta gradient: is maml (1) or reptile (0)")
    d.add_argument("--nz", default=None, type=int,
                   help="generator latent size (the reference's: 512 for dafl, else 256)")
    d.add_argument("--ngf", default=64, type=int, help="generator width (the reference's 64)")

    b = parser.add_argument_group("networks, distillation and schedule (the reference's flags and defaults)")
    b.add_argument("--data_root", dest="data_folder", default="./data", help="where the data sets live")
    b.add_argument("--data_folder", dest="data_folder", default=argparse.SUPPRESS, help="= --data_root")
    b.add_argument("--teacher", "--model_t", dest="teacher", default=None,
                   help="teacher architecture, reference or our name (default: stored in the checkpoint, else "
                        "its folder's name, else wrn40_2)")
    b.add_argument("--teacher_ckpt", "--path_t", dest="teacher_ckpt", default=None,
                   help="teacher checkpoint ({'model'} or {'state_dict'}; default: the reference's "
                        "checkpoints/pretrained/<dataset>_<teacher>.pth)")
    b.add_argument("--student", "--model_s", dest="student", default="wrn16_1", help="student architecture")
    b.add_argument("--dataset", default="cifar100", help=f"one of {', '.join(DATASETS)} (shape, classes, test set)")
    b.add_argument("--lr", "--learning_rate", dest="lr", default=0.1, type=float, help="initial learning rate for KD")
    b.add_argument("--T", "--kd_T", dest="T", default=1, type=float, help="KD temperature")
    b.add_argument("--epochs", default=200, type=int, metavar="N")
    b.add_argument("--kd_steps", default=400, type=int, metavar="N", help="KD iterations after each synthesis round")
    b.add_argument("--ep_steps", default=400, type=int, metavar="N",
                   help="KD iterations per epoch (an epoch has ep_steps // kd_steps rounds)")
    b.add_argument("--warmup", default=0, type=int, metavar="N", help="which epoch (0-indexed) to start KD")
    b.add_argument("--batch_size", default=128, type=int, metavar="N", help="KD batch (and test batch)")
    b.add_argument("--synthesis_batch_size", default=None, type=int, metavar="N",
                   help="images per synthesis round (default: --batch_size)")
    b.add_argument("--momentum", default=0.9, type=float)
    b.add_argument("--wd", "--weight_decay", dest="weight_decay", default=1e-4, type=float)
    b.add_argument("--seed", default=None, type=int, help="random seed (default: drawn once and stored)")
    b.add_argument("--start_epoch", default=0, type=int, metavar="N", help="manual epoch number (0-indexed)")
    b.add_argument("--log_tag", default="", help="suffix of the run folder's name")
    b.add_argument("-p", "--print_freq", default=0, type=int,
                   help="print every N KD steps (0: a progress bar on a terminal only; -1: every 10 steps)")
    b.add_argument("--evaluate_only", action="store_true", help="evaluate the --resume checkpoint's student")
    b.add_argument("--pretrained", action="store_true", help="accepted; no effect (as the reference)")

    r = parser.add_argument_group("device (the reference's flags)")
    r.add_argument("--gpu", default=None, type=int, help="GPU id to use (= --device cuda:N; CPU if there is none)")
    r.add_argument("--fp16", action="store_true", help="= --precision fp16")
    r.add_argument("-j", "--workers", "--num_workers", dest="num_workers", default=4, type=int,
                   help="accepted (the pool and the test set are batched on the device, without workers)")
    r.add_argument("--world_size", default=-1, type=int, help="accepted; one process only")
    r.add_argument("--rank", default=-1, type=int, help="accepted; one process only")
    r.add_argument("--dist_url", default="tcp://224.66.41.62:23456", help="accepted; one process only")
    r.add_argument("--dist_backend", default="nccl", help="accepted; one process only")
    r.add_argument("--multiprocessing_distributed", action="store_true", help="not supported (one process)")

    o = parser.add_argument_group("this project's flags")
    o.add_argument("--device", default="auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    o.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                   help="KD passes; synthesis runs in bf16 when this is bf16, else fp32 (as the reference)")
    o.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True)
    o.add_argument("--pool_size", default=DEFAULT_POOL, type=int,
                   help="most synthetic images kept (oldest dropped first); the reference keeps every one")
    o.add_argument("--save_images", default=64, type=int, metavar="N",
                   help="each epoch, a PNG grid of the N newest synthetic images in --save_dir (0: none)")
    o.add_argument("--mean", type=_floats, default=None, help="normalisation mean, e.g. 0.4914,0.4822,0.4465 "
                   "(default: the data set's; it must be the teacher's)")
    o.add_argument("--std", type=_floats, default=None, help="normalisation std (default: the data set's)")
    o.add_argument("--syn_classes", type=int, default=100, help="synthetic: number of classes")
    o.add_argument("--syn_train_size", type=int, default=5000,
                   help="synthetic: training images (generated for the normalisation only, as the teacher saw it)")
    o.add_argument("--syn_val_size", type=int, default=1000, help="synthetic: test images")
    o.add_argument("--syn_seed", type=int, default=0, help="synthetic: generator seed")
    o.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue a run: its ckpt_last.pth, or 'auto' (this run folder's); a file of the reference "
                        "format ({'state_dict', 'epoch', ...}) restarts from its student, optimizer and epoch")
    o.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds a run")
    o.add_argument("--config", default=None, metavar="FILE", help="YAML or JSON options (command line wins)")
    return parser


def _check(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if opt.dataset not in DATASETS:
        parser.error(f"--dataset {opt.dataset}: data-free distillation takes {', '.join(DATASETS)}")
    if opt.nz is None:
        opt.nz = 512 if opt.method == "dafl" else 256
    require_positive(opt, parser, "epochs", "kd_steps", "ep_steps", "g_steps", "batch_size", "pool_size", "nz", "ngf")
    validate_data_args(opt, parser)
    if opt.ep_steps < opt.kd_steps:
        parser.error(f"--ep_steps ({opt.ep_steps}) must be at least --kd_steps ({opt.kd_steps}): an epoch has "
                     "ep_steps // kd_steps synthesis rounds")
    if opt.synthesis_batch_size is None:
        opt.synthesis_batch_size = opt.batch_size
    if opt.synthesis_batch_size <= 0 or opt.synthesis_batch_size > opt.pool_size:
        parser.error(f"--synthesis_batch_size must be in 1..--pool_size ({opt.pool_size}), got "
                     f"{opt.synthesis_batch_size}")
    require_positive(opt, parser, "lr", "T", "lr_g", "cr_T")
    require_non_negative(opt, parser, "adv", "bn", "oh", "cr", "lr_z", "weight_decay", "momentum", "warmup",
                         "start_epoch", "save_images")
    if not 0 <= opt.bn_mmt < 1:
        parser.error(f"--bn_mmt must be in [0, 1), got {opt.bn_mmt}")
    if opt.multiprocessing_distributed or opt.world_size > 1:
        parser.error("data-free distillation runs in one process (the reference's synthesis is not distributed "
                     "either): leave --multiprocessing_distributed and --world_size out")
    if opt.evaluate_only and opt.resume is None:
        parser.error("--evaluate_only needs --resume PATH (the student checkpoint to evaluate)")


def _device(opt: argparse.Namespace) -> None:
    """--gpu N is --device cuda:N; without CUDA the reference runs on the CPU ("this will be slow"), so here."""
    if opt.fp16:
        opt.precision = "fp16"
    if opt.gpu is not None and opt.device == "auto":
        if torch.cuda.is_available():
            opt.device = f"cuda:{opt.gpu}"
        else:
            print(f"note: --gpu {opt.gpu} but no CUDA GPU is available: using the CPU", file=sys.stderr)
            opt.device = "cpu"


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    opt = parse_with_config(parser, argv)
    _check(opt, parser)
    _device(opt)
    try:
        opt.student = canonical_arch(opt.student)
        opt.teacher = canonical_arch(opt.teacher) if opt.teacher is not None else None
    except UserError as exc:
        parser.error(str(exc))
    if opt.teacher_ckpt is None:  # the reference's fixed location
        name = opt.teacher or DEFAULT_TEACHER
        fdf_name = {ours: theirs for theirs, ours in FDF_NAMES.items()}.get(name, name)
        opt.teacher_ckpt = os.path.join("checkpoints", "pretrained", f"{opt.dataset}_{fdf_name}.pth")
    if opt.bn == 0 and opt.oh == 0 and opt.adv == 0 and (opt.method != "cmi" or opt.cr == 0):
        print("note: --bn, --oh and --adv are all 0 (the reference's defaults): the synthesis has nothing to "
              "fit; the paper's settings are in scripts/run_datafree.sh", file=sys.stderr)
    # what run folders and scripts/summarize.py read
    opt.model_s, opt.model_t, opt.distill, opt.trial = opt.student, opt.teacher, opt.method, opt.log_tag
    opt.sync_bn, opt.compile = False, False
    opt.model_path, opt.tb_path = "./save/datafree", "./save/datafree_tensorboards"
    return opt
