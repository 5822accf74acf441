"""Linear probe of a frozen distilled student on another data set (the distillers' transfer protocol).

    python transfer_student.py --path_s <student checkpoint> --model_s wrn_16_2 --dataset stl10 --trial 1

The student's classifier is replaced by a new Linear layer for the new classes, and only that layer
trains: 120 epochs, SGD lr 0.05 (0.01 for MobileNetV2/ShuffleNets), decayed x0.1 at 30, 60 and 90,
on images resized to the student's input size. The backbone stays in eval mode throughout, so its
BatchNorm statistics never move (the reference trains in train mode, where they drift).
"""

from __future__ import annotations

from helper.options import default_learning_rate, early_usage_check, list_choices, training_notes
from helper.script_options import check_transfer, transfer_parser

if __name__ == "__main__":  # a usage error in one line before the seconds of imports below
    early_usage_check(transfer_parser, check_transfer)

import argparse
from functools import partial
from pathlib import Path

import torch
from torch import nn

from dataset import DatasetUnavailable, build_data
from dataset.transfer import probe_bundle
from helper.compile import plan_compile
from helper.config_file import parse_with_config
from helper.distributed import rank_zero_first
from helper.errors import as_user_errors, run_cli
from helper.launcher import launch, take_process_share
from helper.model_file import load_model_file
from helper.naming import teacher_run_name
from helper.objectives import SupervisedObjective
from helper.runconfig import save_run_config
from helper.setup import build_train_loader, build_val_loader, place_model, setup_runtime, wrap_ddp
from helper.trainer import RunOutputs, Stage, Trainer, prepare_outputs
from helper.util import lr_at_epoch
from models import model_dict
from models.classifier import classifier_of, input_size, replace_module


def parse_option(argv: list[str] | None = None) -> tuple[argparse.Namespace, nn.Module]:
    """The options, and the student network read from --path_s (its architecture settles the defaults)."""
    parser = transfer_parser()
    list_choices(parser, "model_s", list(model_dict))
    opt = parse_with_config(parser, argv)
    check_transfer(opt, parser)
    training_notes(opt)
    if opt.model_s is not None and opt.model_s not in model_dict:
        parser.error(f"unknown --model_s '{opt.model_s}'; choose one of: {', '.join(model_dict)}")
    student, opt.model_s, _ = load_model_file(opt.path_s, opt.model_s, head=False)
    if opt.learning_rate is None:
        opt.learning_rate = default_learning_rate(opt.model_s)
    opt.model_path = "./save/ft/models"
    opt.tb_path = "./save/ft/tensorboard"
    opt.model_name = teacher_run_name(argparse.Namespace(**{**vars(opt), "model": opt.model_s}))
    opt.save_folder = str(Path(opt.model_path) / opt.model_name)
    opt.tb_folder = str(Path(opt.tb_path) / opt.model_name)
    return opt, student


def attach_probe(student: nn.Module, size: int, num_classes: int) -> nn.Linear:
    """Freeze ``student`` and put a new Linear head for ``num_classes`` where its classifier was (found by
    what it computes on ``size`` x ``size`` images, whatever its name); returns the head, initialised as the
    reference."""
    name = classifier_of(student, size)
    old = student.get_submodule(name)
    student.requires_grad_(False)
    head = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(head.weight, mean=0.0, std=0.01)
    nn.init.zeros_(head.bias)
    replace_module(student, name, head)
    return head


class ProbeObjective(SupervisedObjective):
    """Cross-entropy on the labels with the backbone in eval mode (running statistics fixed, dropout
    off) and only the head in train mode."""

    def __init__(self, model: nn.Module, head: nn.Module, autocast):
        super().__init__(model, autocast)
        self.head = head

    def train_mode(self) -> None:
        self.model.eval()
        self.head.train()


def main(argv: list[str] | None = None) -> None:
    opt, model = parse_option(argv)
    if launch(opt, main, argv):  # --multiprocessing_distributed: its processes have run main
        return
    share = take_process_share(opt)
    rt = setup_runtime(opt)
    size = opt.image_size or input_size(opt.model_s)
    opt.image_size = size
    with rank_zero_first(rt.info), as_user_errors(ValueError, DatasetUnavailable):
        bundle = probe_bundle(build_data(opt), size)
    print(f"transfer {opt.model_s} from {opt.path_s} to {bundle.name}: {bundle.num_classes} classes, "
          f"{len(bundle.train)} train / {len(bundle.val)} val images at {size}x{size}")
    head = attach_probe(model, size, bundle.num_classes)
    out = RunOutputs(Path(opt.save_folder), Path(opt.tb_folder), opt.model_s, save_optimizer=True)
    resume = prepare_outputs(out, opt, rt.info)
    save_run_config(share.recorded(opt), rt, out.folder, resumed=resume is not None)
    train_loader = build_train_loader(opt, bundle, "plain", rt)
    val_loader = build_val_loader(opt, bundle, rt)

    plan_compile(opt, rt, opt.epochs * len(train_loader))
    model = place_model(model, rt, "the student")
    optimizer = torch.optim.SGD(head.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                                weight_decay=opt.weight_decay)
    objective = ProbeObjective(wrap_ddp(model, rt, sync_bn=False), head, rt.autocast)
    stage = Stage("main", opt.epochs, objective, optimizer, partial(lr_at_epoch, opt=opt), evaluate=True)
    Trainer(opt=opt, out=out, model=model, extra_state=None, stages=[stage], train_loader=train_loader,
            val_loader=val_loader, eval_model=model, rt=rt, scaler=rt.grad_scaler()).fit(resume)


if __name__ == "__main__":
    run_cli(main)
