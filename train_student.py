"""Distil a teacher into a student with any registered method.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \\
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
"""

from __future__ import annotations

import argparse
import itertools
from functools import partial
from pathlib import Path

import torch

from dataset import DatasetUnavailable, build_data
from distiller_zoo.registry import (
    DistillMethod,
    MethodContext,
    MethodSpec,
    Weights,
    add_method_args,
    get_method,
    method_names,
)
from helper.checkpoint import load_strict, safe_load, state_dict_of
from helper.compile import plan_compile
from helper.config_file import parse_with_config
from helper.distributed import broadcast_state, gradient_averager, rank_zero_first
from helper.dot import DELTA, DELTA_IMAGENET, NO_FP16, DistillationOrientedTrainer, dot_momenta
from helper.engine import validate
from helper.errors import UserError, as_user_errors, run_cli
from helper.launcher import add_launcher_args, launch, take_process_share
from helper.naming import arch_from_path, student_run_name
from helper.objectives import DistillObjective, InitObjective
from helper.options import OneLineParser, add_training_args, validate_training_args
from helper.peer import TrainedPeer
from helper.pretrained import hub_file, torchvision_state_dict
from helper.runconfig import save_run_config
from helper.setup import Runtime, build_train_loader, build_val_loader, place_model, setup_runtime, wrap_ddp
from helper.teacher import FrozenTeacher, freeze_teacher
from helper.trainer import RunOutputs, Stage, Trainer, prepare_outputs
from helper.util import lr_at_epoch
from models import IMAGENET_MODELS, build_model, model_dict


def parse_option(argv: list[str] | None = None) -> tuple[argparse.Namespace, MethodSpec]:
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
    parser.add_argument("--model_s", default="resnet8", help=f"one of: {', '.join(model_dict)}")
    parser.add_argument("--init_s", default=None,
                        help="student initialisation: a checkpoint ({'model': state_dict} or a bare state_dict) "
                             "loaded strictly before training, e.g. a baseline's (train_teacher.py --save_init)")
    parser.add_argument("--distill", default="kd", help=f"one of: {', '.join(method_names())}")
    parser.add_argument("--trial", default="1", help="experiment id, part of the run folder name")
    w = parser.add_argument_group("loss weights (default: the method's, as RepDistiller's scripts)")
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
    add_method_args(parser)
    add_training_args(parser)
    add_launcher_args(parser)
    opt = parse_with_config(parser, argv)

    try:
        spec = get_method(opt.distill)
    except ValueError as exc:
        parser.error(str(exc))
    opt.distill = spec.name
    if opt.model_s not in model_dict:
        parser.error(f"unknown --model_s '{opt.model_s}'; choose one of: {', '.join(model_dict)}")
    if opt.model_t is not None and opt.model_t not in model_dict:
        parser.error(f"unknown --model_t '{opt.model_t}'; choose one of: {', '.join(model_dict)}")
    if opt.teacher_weights is not None:
        if opt.path_t is not None:
            parser.error("give either --path_t or --teacher_weights, not both")
        if opt.model_t is None:
            parser.error("--teacher_weights torchvision needs --model_t (the teacher's architecture)")
    elif opt.path_t is None and not spec.trains_peer:
        parser.error("--path_t is required: the teacher checkpoint to distil from (or --teacher_weights torchvision)")
    if spec.trains_peer and opt.path_t is None and opt.model_t is None:
        parser.error(f"--distill {spec.name} trains a peer network beside the student: name it with --model_t "
                     "(--path_t optionally initialises it)")
    validate_training_args(opt, parser, opt.model_s)
    for flag, value in (("-r", opt.gamma), ("-a", opt.alpha), ("-b", opt.beta)):
        if value is not None and value < 0:
            parser.error(f"{flag} must not be negative, got {value}")
    defaults = spec.weights
    if opt.gamma is None:  # RepDistiller's -r default is the integer 1: its run folders say r:1, and so do ours
        opt.gamma = 1 if defaults.gamma == 1 else defaults.gamma
    opt.alpha = defaults.alpha if opt.alpha is None else opt.alpha
    opt.beta = defaults.beta if opt.beta is None else opt.beta
    for name in ("kd_T", "nce_k", "nce_t", "feat_dim"):
        if getattr(opt, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(opt, name)}")
    if opt.init_epochs < 0:
        parser.error(f"--init_epochs must not be negative, got {opt.init_epochs}")
    if not 0 <= opt.nce_m <= 1:
        parser.error(f"--nce_m must be in [0, 1], got {opt.nce_m}")
    validate_optimizer(opt, parser)
    opt.model_path = "./save/student_model"
    opt.tb_path = "./save/student_tensorboards"
    return opt, spec


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


def teacher_arch(opt: argparse.Namespace, checkpoint: dict) -> str:
    """--model_t, else the checkpoint's 'arch', else the folder name (RepDistiller's convention)."""
    arch = opt.model_t or checkpoint.get("arch") or arch_from_path(opt.path_t, list(model_dict))
    if arch is None:
        raise UserError(f"cannot tell the teacher's architecture from {opt.path_t}; pass --model_t")
    if arch not in model_dict:
        raise UserError(f"the teacher checkpoint names architecture '{arch}', which is not a known model")
    return arch


def load_teacher(opt: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    if opt.path_t is None and opt.teacher_weights is None:  # a peer the method trains from scratch (DML)
        return build_model(opt.model_t, num_classes)
    if opt.teacher_weights == "torchvision":
        state, source = torchvision_state_dict(opt.model_t, num_classes), f"torchvision's {opt.model_t} weights"
    else:
        checkpoint = safe_load(opt.path_t)
        opt.model_t = teacher_arch(opt, checkpoint)
        state, source = state_dict_of(checkpoint, opt.path_t), opt.path_t
    teacher = build_model(opt.model_t, num_classes)
    load_strict(teacher, state, source, opt.model_t)
    return teacher


def teacher_file(opt: argparse.Namespace) -> str | Path | None:
    """The file the teacher's weights came from (torchvision's: its hub cache file); None for a fresh peer."""
    if opt.teacher_weights == "torchvision":
        return hub_file(opt.model_t)
    return opt.path_t


def build_method(spec: MethodSpec, student, teacher, opt: argparse.Namespace, bundle):
    """Build the method from both networks' feature shapes on a dummy batch, as RepDistiller."""
    size = bundle.image_size or (224 if opt.model_s in IMAGENET_MODELS else 32)
    data = torch.randn(2, 3, size, size)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        feat_s, logit_s = student(data, is_feat=True, preact=spec.preact_student(opt))
        feat_t, logit_t = teacher(data, is_feat=True, preact=spec.preact)
    ctx = MethodContext(student=student, teacher=teacher, feat_s=list(feat_s), feat_t=list(feat_t),
                        logit_s=logit_s, logit_t=logit_t, opt=opt, n_data=len(bundle.train),
                        num_classes=bundle.num_classes, mean=tuple(bundle.mean), std=tuple(bundle.std))
    with as_user_errors(ValueError):
        return spec.build(ctx)


def place_networks(opt: argparse.Namespace, spec: MethodSpec, teacher: torch.nn.Module, student: torch.nn.Module,
                   method: DistillMethod, rt: Runtime
                   ) -> tuple[FrozenTeacher | TrainedPeer, torch.nn.Module, DistillMethod]:
    """The frozen teacher, the student and the method's modules on the device, as a run trains them.

    A peer the method trains (``spec.trains_peer``) is placed as the student is, never frozen."""
    if spec.trains_peer:
        return TrainedPeer(place_model(teacher, rt, "the peer")), place_model(student, rt, "the student"), \
            method.to(rt.device)
    return (freeze_teacher(teacher, rt, spec.preact, opt.fold_teacher_bn), place_model(student, rt, "the student"),
            method.to(rt.device))


def main_optimizer(opt: argparse.Namespace, params: list[torch.nn.Parameter], rt: Runtime) -> torch.optim.Optimizer:
    """SGD, or DOT with --optimizer dot (the engine then takes the task and distillation gradients apart)."""
    if opt.optimizer == "dot":
        if rt.precision == "fp16":
            raise UserError(NO_FP16)
        task, distill = dot_momenta(opt.momentum, opt.dot_delta)
        return DistillationOrientedTrainer(params, lr=opt.learning_rate, momentum=task, momentum_kd=distill,
                                           weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.learning_rate, momentum=opt.momentum, weight_decay=opt.weight_decay,
                           nesterov=opt.nesterov)


def planned_steps(opt: argparse.Namespace, method: DistillMethod, student: torch.nn.Module, train_loader) -> int:
    """The training steps a run plans (its init stage's, when the method has one, and the main stage's):
    what ``--compile auto`` weighs against the compile time."""
    init_epochs = opt.init_epochs if method.init_stage(student) is not None else 0
    return (init_epochs + opt.epochs) * len(train_loader)


def make_stages(opt, spec: MethodSpec, student, train_student, teacher, method, rt: Runtime) -> list[Stage]:
    """The init stage when the method has one, then distillation."""
    stages = []
    init = method.init_stage(student)
    if init is not None and opt.init_epochs > 0:
        modules = list(init.modules) + ([student.get_feat_modules()] if init.student_trunk else [])
        params = [p for module in modules for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=init.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                                    nesterov=opt.nesterov)
        # The init stage trains the unwrapped student (its classifier is unused there, which DDP would need
        # find_unused_parameters for, on every later step too); its trunk is averaged with the modules.
        objective = InitObjective(student, teacher, spec, init, rt.autocast, spec.preact_student(opt))
        stages.append(Stage("init", opt.init_epochs, objective, optimizer, lambda epoch: init.lr, evaluate=False,
                            after_backward=gradient_averager(params, rt.info)))
    # One SGD for the student and the method's parameters (a peer's too): SGD updates each parameter from
    # its own gradient and momentum alone, so this is the same as one optimizer per network (KD-Zoo's DML).
    params = itertools.chain(student.parameters(), method.main_parameters())
    optimizer = main_optimizer(opt, list(params), rt)
    weights = Weights(opt.gamma, opt.alpha, opt.beta)
    objective = DistillObjective(train_student, teacher, method, spec, weights, opt.kd_T, rt.autocast,
                                 opt.logit_standardization, spec.preact_student(opt))
    stages.append(Stage("main", opt.epochs, objective, optimizer, partial(lr_at_epoch, opt=opt), evaluate=True,
                        after_backward=gradient_averager(list(method.main_parameters()), rt.info)))
    return stages


def main(argv: list[str] | None = None) -> None:
    opt, spec = parse_option(argv)
    if launch(opt, main, argv):  # --multiprocessing_distributed: its processes have run main
        return
    share = take_process_share(opt)
    rt = setup_runtime(opt)
    with as_user_errors(ValueError, DatasetUnavailable), rank_zero_first(rt.info):
        bundle = build_data(opt)
        teacher = load_teacher(opt, bundle.num_classes)
        student = build_model(opt.model_s, bundle.num_classes)
        if opt.init_s is not None:
            load_strict(student, state_dict_of(safe_load(opt.init_s), opt.init_s), opt.init_s, opt.model_s)
    contrast = spec.wants_contrast(opt)
    if contrast and opt.nce_k >= len(bundle.train):
        raise UserError(f"--nce_k {opt.nce_k} must be smaller than the training set ({len(bundle.train)} samples)")
    opt.model_name = student_run_name(opt)
    opt.save_folder = str(Path(opt.model_path) / opt.model_name)
    opt.tb_folder = str(Path(opt.tb_path) / opt.model_name)
    out = RunOutputs(Path(opt.save_folder), Path(opt.tb_folder), opt.model_s, save_optimizer=False)
    resume = prepare_outputs(out, opt, rt.info)
    method = build_method(spec, student, teacher, opt, bundle)

    train_loader = build_train_loader(opt, bundle, "crd" if contrast else "instance", rt, augment=spec.train_augment)
    val_loader = build_val_loader(opt, bundle, rt)
    plan_compile(opt, rt, planned_steps(opt, method, student, train_loader), spec)
    teacher, student, method = place_networks(opt, spec, teacher, student, method, rt)
    broadcast_state(method, rt.info)
    teacher_acc = None
    if resume is None and not spec.trains_peer:  # every rank: validate reduces each rank's shard
        teacher_acc = validate(teacher, val_loader, rt.device, rt.channels_last, rt.autocast, rt.info)["test_acc"]
        print(f"teacher accuracy: {teacher_acc:.2f}")
    save_run_config(share.recorded(opt), rt, out.folder, resumed=resume is not None,
                    teacher={"arch": opt.model_t, "test_acc": teacher_acc}, teacher_file=teacher_file(opt))

    train_student = wrap_ddp(student, rt, opt.sync_bn)
    stages = make_stages(opt, spec, student, train_student, teacher, method, rt)
    Trainer(opt=opt, out=out, model=student, extra_state=method, stages=stages, train_loader=train_loader,
            val_loader=val_loader, eval_model=method.eval_model(student), rt=rt, scaler=rt.grad_scaler(),
            method_label=f" ({spec.name})", peers=method.peer_networks()).fit(resume)


if __name__ == "__main__":
    run_cli(main)
