"""Train a network from scratch on the labels alone (the teachers, and the no-distillation baselines).

    python train_teacher.py --model resnet32x4
"""

from __future__ import annotations

from helper.options import early_usage_check, list_choices, training_notes
from helper.script_options import check_teacher, teacher_parser

if __name__ == "__main__":  # a usage error in one line before the seconds of imports below
    early_usage_check(teacher_parser, check_teacher)

import argparse
from functools import partial
from pathlib import Path

import torch

from dataset import DatasetUnavailable, build_data
from helper.checkpoint import atomic_save
from helper.compile import plan_compile
from helper.config_file import parse_with_config
from helper.distributed import DistInfo, agree_on_errors, rank_zero_first
from helper.errors import UserError, as_user_errors, run_cli
from helper.launcher import launch, take_process_share
from helper.naming import teacher_run_name
from helper.objectives import SupervisedObjective
from helper.runconfig import save_run_config
from helper.setup import build_train_loader, build_val_loader, place_model, setup_runtime, wrap_ddp
from helper.trainer import RunOutputs, Stage, Trainer, prepare_outputs
from helper.util import lr_at_epoch
from models import build_model, model_dict


def parse_option(argv: list[str] | None = None) -> argparse.Namespace:
    parser = teacher_parser()
    list_choices(parser, "model", list(model_dict))
    opt = parse_with_config(parser, argv)
    check_teacher(opt, parser)
    training_notes(opt)
    if opt.model not in model_dict:
        parser.error(f"unknown --model '{opt.model}'; choose one of: {', '.join(model_dict)}")
    opt.model_path = "./save/models"
    opt.tb_path = "./save/tensorboard"
    opt.model_name = teacher_run_name(opt)
    opt.save_folder = str(Path(opt.model_path) / opt.model_name)
    opt.tb_folder = str(Path(opt.tb_path) / opt.model_name)
    return opt


def save_init(model: torch.nn.Module, opt: argparse.Namespace, info: DistInfo) -> None:
    """Rank 0's initial weights (DDP gives them to every rank), never silently over an earlier run's."""
    path = Path(opt.save_init)
    with agree_on_errors(info):  # rank 0's refusal stops every rank
        if not info.is_main:
            return
        if path.exists() and not opt.overwrite:
            raise UserError(f"--save_init: {path} exists (students may start from it); pass --overwrite to replace it")
        atomic_save({"model": model.state_dict(), "arch": opt.model}, path)
    print(f"initial weights saved to {path}")


def main(argv: list[str] | None = None) -> None:
    opt = parse_option(argv)
    if launch(opt, main, argv):  # --multiprocessing_distributed: its processes have run main
        return
    share = take_process_share(opt)
    rt = setup_runtime(opt)
    with rank_zero_first(rt.info), as_user_errors(ValueError, DatasetUnavailable):
        bundle = build_data(opt)
        model = build_model(opt.model, bundle.num_classes)
    out = RunOutputs(Path(opt.save_folder), Path(opt.tb_folder), opt.model, save_optimizer=True)
    resume = prepare_outputs(out, opt, rt.info)
    save_run_config(share.recorded(opt), rt, out.folder, resumed=resume is not None)
    if opt.save_init is not None and resume is None:
        save_init(model, opt, rt.info)
    train_loader = build_train_loader(opt, bundle, "plain", rt)
    val_loader = build_val_loader(opt, bundle, rt)

    plan_compile(opt, rt, opt.epochs * len(train_loader))
    model = place_model(model, rt, "the model")
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                                weight_decay=opt.weight_decay, nesterov=opt.nesterov)
    objective = SupervisedObjective(wrap_ddp(model, rt, opt.sync_bn), rt.autocast)
    stage = Stage("main", opt.epochs, objective, optimizer, partial(lr_at_epoch, opt=opt), evaluate=True)
    Trainer(opt=opt, out=out, model=model, extra_state=None, stages=[stage], train_loader=train_loader,
            val_loader=val_loader, eval_model=model, rt=rt, scaler=rt.grad_scaler()).fit(resume)


if __name__ == "__main__":
    run_cli(main)
