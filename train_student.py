"""Distil a teacher into a student with any registered method.

    python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \\
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
"""

from __future__ import annotations

from helper.options import early_usage_check, list_choices, training_notes
from helper.script_options import NO_FP16, WEIGHTS_GROUP, check_student, student_parser

if __name__ == "__main__":  # a usage error of the common flags in one line before the seconds of imports below
    early_usage_check(student_parser, check_student)

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
    weights_summary,
)
from helper.checkpoint import load_strict, require_file, safe_load, state_dict_of
from helper.compile import plan_compile
from helper.config_file import parse_with_config
from helper.distributed import broadcast_state, gradient_averager, rank_zero_first
from helper.dot import DistillationOrientedTrainer, dot_momenta
from helper.engine import validate
from helper.errors import UserError, as_user_errors, run_cli
from helper.launcher import launch, take_process_share
from helper.naming import arch_from_path, student_run_name
from helper.objectives import DistillObjective, InitObjective
from helper.peer import TrainedPeer
from helper.pretrained import hub_file, torchvision_state_dict
from helper.runconfig import save_run_config
from helper.setup import Runtime, build_train_loader, build_val_loader, place_model, setup_runtime, wrap_ddp
from helper.teacher import FrozenTeacher, freeze_teacher
from helper.trainer import RunOutputs, Stage, Trainer, prepare_outputs
from helper.util import lr_at_epoch
from models import IMAGENET_MODELS, build_model, model_dict, model_fitting


def parse_option(argv: list[str] | None = None) -> tuple[argparse.Namespace, MethodSpec]:
    """The options (helper.script_options' flags and checks, then the registry's), and the method's spec."""
    parser = student_parser()
    add_method_args(parser)
    list_choices(parser, "model_s", list(model_dict))
    list_choices(parser, "distill", method_names())
    next(g for g in parser._action_groups if g.title == WEIGHTS_GROUP).description = \
        f"-r/-a/-b by default: {weights_summary()}"
    opt = parse_with_config(parser, argv)
    check_student(opt, parser)
    training_notes(opt)
    try:
        spec = get_method(opt.distill)
    except ValueError as exc:
        parser.error(str(exc))
    opt.distill = spec.name
    if opt.model_s not in model_dict:
        parser.error(f"unknown --model_s '{opt.model_s}'; choose one of: {', '.join(model_dict)}")
    if opt.model_t is not None and opt.model_t not in model_dict:
        parser.error(f"unknown --model_t '{opt.model_t}'; choose one of: {', '.join(model_dict)}")
    if opt.teacher_weights is None and opt.path_t is None and not spec.trains_peer:
        parser.error("--path_t is required: the teacher checkpoint to distil from (or --teacher_weights torchvision)")
    if spec.trains_peer and opt.path_t is None and opt.model_t is None:
        parser.error(f"--distill {spec.name} trains a peer network beside the student: name it with --model_t "
                     "(--path_t optionally initialises it)")
    defaults = spec.weights
    if opt.gamma is None:  # RepDistiller's -r default is the integer 1: its run folders say r:1, and so do ours
        opt.gamma = 1 if defaults.gamma == 1 else defaults.gamma
    opt.alpha = defaults.alpha if opt.alpha is None else opt.alpha
    opt.beta = defaults.beta if opt.beta is None else opt.beta
    opt.model_path = "./save/student_model"
    opt.tb_path = "./save/student_tensorboards"
    return opt, spec


def nce_k_too_large(nce_k: int, n_train: int) -> str:
    """Why --nce_k cannot be drawn from a training set of ``n_train`` samples, and a value that can."""
    if n_train < 2:
        return f"--nce_k needs a training set of at least 2 samples to draw negatives from, not {n_train}"
    fits = 1 << ((n_train - 1).bit_length() - 1)  # the largest power of two below n_train, as 16384 is
    return (f"--nce_k {nce_k} must be smaller than the training set ({n_train} samples): pass --nce_k {fits} "
            f"(or another N below {n_train})")


def teacher_arch(opt: argparse.Namespace, checkpoint: dict, fallback: str | None = None) -> str:
    """--model_t, else the checkpoint's 'arch', else the folder name (RepDistiller's convention), else
    ``fallback`` (train.py's: KamalEngine's example teacher)."""
    arch = opt.model_t or checkpoint.get("arch") or arch_from_path(opt.path_t, list(model_dict)) or fallback
    if arch is None:
        raise UserError(f"cannot tell the teacher's architecture from {opt.path_t}; pass --model_t")
    if arch not in model_dict:
        raise UserError(f"the teacher checkpoint names architecture '{arch}', which is not a known model")
    return arch


def load_teacher(opt: argparse.Namespace, num_classes: int, fallback: str | None = None) -> torch.nn.Module:
    """The teacher (or a peer's start), its architecture settled as :func:`teacher_arch` says."""
    if opt.path_t is None and opt.teacher_weights is None:  # a peer the method trains from scratch (DML)
        return build_model(opt.model_t, num_classes)
    if opt.teacher_weights == "torchvision":
        state, source = torchvision_state_dict(opt.model_t, num_classes), f"torchvision's {opt.model_t} weights"
    else:
        checkpoint = safe_load(opt.path_t)
        opt.model_t = teacher_arch(opt, checkpoint, fallback)
        state, source = state_dict_of(checkpoint, opt.path_t), opt.path_t
    teacher = build_model(opt.model_t, num_classes)
    try:
        load_strict(teacher, state, source, opt.model_t)
    except UserError:
        fit = model_fitting(state, num_classes)
        if fit is None:
            raise
        raise UserError(f"{source} holds {fit} weights, which do not fit --model_t {opt.model_t}: "
                        f"pass --model_t {fit}") from None
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


def main(argv: list[str] | None = None, teacher_fallback: str | None = None) -> None:
    """``teacher_fallback``: the teacher's architecture when neither --model_t, the checkpoint nor its folder
    name gives it (train.py's)."""
    opt, spec = parse_option(argv)
    for path in (opt.path_t, opt.init_s):  # before any process starts (under the launcher or torchrun)
        if path is not None:
            require_file(path)
    if launch(opt, partial(main, teacher_fallback=teacher_fallback), argv):  # --multiprocessing_distributed
        return
    share = take_process_share(opt)
    rt = setup_runtime(opt)
    with rank_zero_first(rt.info), as_user_errors(ValueError, DatasetUnavailable):
        bundle = build_data(opt)
        teacher = load_teacher(opt, bundle.num_classes, teacher_fallback)
        student = build_model(opt.model_s, bundle.num_classes)
        if opt.init_s is not None:
            load_strict(student, state_dict_of(safe_load(opt.init_s), opt.init_s), opt.init_s, opt.model_s)
    contrast = spec.wants_contrast(opt)
    if contrast and opt.nce_k >= len(bundle.train):
        raise UserError(nce_k_too_large(opt.nce_k, len(bundle.train)))
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
