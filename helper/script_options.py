"""The training scripts' command lines, built and checked without torch.

Each script checks its flags here before its heavy imports (``early_usage_check``), so that a usage error
costs a fraction of a second instead of seconds of imports, and again in its ``parse_option``, which adds
what needs those imports: the method registry's flags, the lists of models and methods in --help, the
checks against them. Both parses use the same definitions below.
"""

from __future__ import annotations

import argparse

from helper.options import (
    OneLineParser,
    add_launcher_args,
    add_training_args,
    require_non_negative,
    require_positive,
    validate_training_args,
)

#: mdistiller's DOT DELTA: cfg.py and its CIFAR-100 and Tiny-ImageNet configs; its ImageNet configs use 0.09
DELTA = 0.075
DELTA_IMAGENET = 0.09
#: one loss scale (fp16's GradScaler) cannot serve two backward passes and the one unscale a step allows
NO_FP16 = ("--optimizer dot does not run under fp16 loss scaling (its two backward passes would each need "
           "one); use --precision bf16 or fp32")
WEIGHTS_GROUP = "loss weights (default: the method's, as RepDistiller's scripts)"
TRANSFER_DATASETS = ("stl10", "tinyimagenet", "folder", "cifar10", "cifar100", "synthetic")


# ----- train_teacher.py -----

def teacher_parser() -> OneLineParser:
    parser = OneLineParser(prog="train_teacher.py", description="train a network on the labels alone")
    parser.add_argument("--model", default="resnet110", help="architecture")
    parser.add_argument("-t", "--trial", default="0", help="experiment id, part of the run folder name")
    parser.add_argument("--save_init", default=None,
                        help="also write the freshly initialised model here ({'model': state_dict, 'arch'}), "
                             "for students that start from the same weights (train_student.py --init_s)")
    add_training_args(parser)
    add_launcher_args(parser)
    return parser


def check_teacher(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every check that needs no model list."""
    validate_training_args(opt, parser, opt.model)


# ----- train_student.py -----

def student_parser() -> OneLineParser:
    parser = OneLineParser(prog="train_student.py", description="distil a teacher into a student")
    parser.add_argument("--path_t", "--t_model_path", dest="path_t", default=None,
                        help="teacher checkpoint ({'model': state_dict, ...}); --t_model_path: KamalEngine's spelling")
    parser.add_argument("--teacher_weights", default=None, choices=["torchvision"],
                        help="torchvision: the --model_t teacher with torchvision's ImageNet weights "
                             "(from the torch hub cache), instead of --path_t")
    parser.add_argument("--model_t", default=None,
                        help="teacher architecture (default: stored in the checkpoint or read from its folder)")
    parser.add_argument("--fold_teacher_bn", action=argparse.BooleanOptionalAction, default=True,
                        help="fold the frozen teacher's BatchNorms into its convolutions: the same outputs, "
                             "fewer passes (--no-fold_teacher_bn: run it unchanged, as RepDistiller)")
    parser.add_argument("--model_s", default="resnet8", help="student architecture")
    parser.add_argument("--init_s", default=None,
                        help="student initialisation: a checkpoint ({'model': state_dict} or a bare state_dict) "
                             "loaded strictly before training, e.g. a baseline's (train_teacher.py --save_init)")
    parser.add_argument("--distill", default="kd", help="distillation method")
    parser.add_argument("--trial", default="1", help="experiment id, part of the run folder name")
    w = parser.add_argument_group(WEIGHTS_GROUP)
    w.add_argument("-r", "--gamma", "--r", type=float, default=None, help="weight of the cross-entropy loss")
    w.add_argument("-a", "--alpha", "--a", type=float, default=None, help="weight of the KD loss")
    w.add_argument("-b", "--beta", "--b", type=float, default=None, help="weight of the method's own loss")
    m = parser.add_argument_group("method settings (RepDistiller's defaults)")
    m.add_argument("--kd_T", type=float, default=4, help="temperature for KD")
    m.add_argument("--logit_standardization", action="store_true",
                   help="z-score each sample's teacher and student logits before the temperature in the KD term "
                        "and in logit methods (Sun et al. 2024; its KD recipe: --kd_T 2 -a 9)")
    m.add_argument("--init_epochs", type=int, default=30, help="epochs of the init stage (AB, FSP, FT)")
    m.add_argument("--hint_layer", type=int, default=2, help="FitNet: index of the tapped feature")
    m.add_argument("--feat_dim", type=int, default=128, help="embedding size (CRD, CC)")
    m.add_argument("--mode", default="exact", choices=["exact", "relax"], help="CRD positive sampling")
    m.add_argument("--nce_k", type=int, default=16384, help="CRD: negatives per sample")
    m.add_argument("--nce_t", type=float, default=0.07, help="CRD: temperature")
    m.add_argument("--nce_m", type=float, default=0.5, help="CRD: memory momentum")
    o = parser.add_argument_group("optimizer of the distillation stage")
    o.add_argument("--optimizer", default="sgd", choices=["sgd", "dot"],
                   help="sgd; dot: mdistiller's distillation-oriented trainer (Zhao et al. 2023), task and "
                        "distillation gradients in momentum buffers of their own")
    o.add_argument("--dot_delta", type=float, default=None,
                   help=f"DOT: task momentum --momentum minus this, distillation momentum plus it (default "
                        f"{DELTA}, {DELTA_IMAGENET} on ImageNet, as mdistiller)")
    add_training_args(parser)
    add_launcher_args(parser)
    return parser


def check_student(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every check that needs no registry and no model list; fills --learning_rate and --dot_delta."""
    if opt.teacher_weights is not None:
        if opt.path_t is not None:
            parser.error("give either --path_t or --teacher_weights, not both")
        if opt.model_t is None:
            parser.error("--teacher_weights torchvision needs --model_t (the teacher's architecture)")
    validate_training_args(opt, parser, opt.model_s)
    for flag, value in (("-r", opt.gamma), ("-a", opt.alpha), ("-b", opt.beta)):
        if value is not None and value < 0:
            parser.error(f"{flag} must not be negative, got {value}")
    require_positive(opt, parser, "kd_T", "nce_k", "nce_t", "feat_dim")
    require_non_negative(opt, parser, "init_epochs")
    if not 0 <= opt.nce_m <= 1:
        parser.error(f"--nce_m must be in [0, 1], got {opt.nce_m}")
    validate_optimizer(opt, parser)


def validate_optimizer(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """DOT's delta (mdistiller's per data set when not given), in one line each when it cannot train."""
    if opt.optimizer != "dot":
        if opt.dot_delta is not None:
            parser.error("--dot_delta sets --optimizer dot's momenta; add --optimizer dot or leave it out")
        return
    if opt.dot_delta is None:
        opt.dot_delta = DELTA_IMAGENET if opt.dataset == "imagenet" else DELTA
    if not 0 <= opt.dot_delta <= opt.momentum:
        parser.error(f"--dot_delta must be in [0, --momentum {opt.momentum}], got {opt.dot_delta}")
    if opt.nesterov:
        parser.error("--optimizer dot has no Nesterov form (mdistiller's has none): leave --nesterov out")
    if opt.precision == "fp16":  # early; --precision auto is checked once resolved (main_optimizer)
        parser.error(NO_FP16)


# ----- transfer_student.py -----

def transfer_parser() -> OneLineParser:
    parser = OneLineParser(prog="transfer_student.py", description="linear probe of a frozen distilled student")
    parser.add_argument("--path_s", default=None, help="the student's model file, or its run folder")
    parser.add_argument("--model_s", default=None,
                        help="its architecture (default: stored in the file, or read from its folder)")
    parser.add_argument("-t", "--trial", default="0", help="experiment id, part of the run folder name")
    add_training_args(parser)
    add_launcher_args(parser)
    # the distillers' transfer_student.py schedule
    parser.set_defaults(dataset="stl10", epochs=120, lr_decay_epochs=[30, 60, 90], save_freq=50)
    next(a for a in parser._actions if a.dest == "dataset").help = f"one of {', '.join(TRANSFER_DATASETS)}"
    return parser


def check_transfer(opt: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The checks before the student file is read (--learning_rate's default waits for its architecture)."""
    if opt.path_s is None:
        parser.error("--path_s is required: the distilled student's model file (or its run folder)")
    if opt.dataset not in TRANSFER_DATASETS:
        parser.error(f"unknown --dataset '{opt.dataset}'; choose one of: {', '.join(TRANSFER_DATASETS)}")
    if opt.sync_bn:
        parser.error("--sync_bn does nothing here: the frozen backbone's BatchNorms stay in eval mode")
    validate_training_args(opt, parser, opt.model_s)
