"""mdistiller's Tiny-ImageNet setting (issue 26): the data set trains teachers and students with its pipeline,
its networks load its state dicts by name (ResNet18_cifar = its ResNet18 teacher = DAFL's CIFAR resnet18,
mobilenetv2_tinyimagenet its student), its recipe script, and STL-10 as a training set."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import run_cli, write_teacher
from test_scripts import fake_python_calls, flag
from test_transfer import write_stl10, write_tiny
from torchvision import transforms

import train_student
from dataset import DATASETS, build_data
from dataset.tinyimagenet import MEAN, STD
from helper.checkpoint import safe_load
from models import build_model
from models.classifier import classifier_of

FAST = ["--num_workers", "0", "--device", "cpu", "--precision", "fp32", "--batch_size", "4", "--epochs", "1",
        "--seed", "0", "--print_freq", "1"]


def test_both_are_training_data_sets():
    assert {"tinyimagenet", "stl10"} <= set(DATASETS)


def test_tinyimagenet_trains_with_mdistillers_pipeline(tmp_path):
    """mdistiller/dataset/tiny_imagenet.py: RandomRotation(20), flip 0.5, no crop; its mean and std."""
    write_tiny(tmp_path)
    bundle = build_data(argparse.Namespace(dataset="tinyimagenet", data_folder=str(tmp_path), image_size=None))
    train_ops, val_ops = bundle.train.transform.transforms, bundle.val.transform.transforms
    assert [type(op) for op in train_ops] == [transforms.RandomRotation, transforms.RandomHorizontalFlip,
                                              transforms.ToTensor, transforms.Normalize]
    assert train_ops[0].degrees == [-20.0, 20.0] and train_ops[1].p == 0.5
    assert [type(op) for op in val_ops] == [transforms.ToTensor, transforms.Normalize]
    assert (MEAN, STD) == ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
    assert tuple(train_ops[-1].std) == STD and (bundle.image_size, bundle.num_classes) == (64, 3)
    image, _ = bundle.val[0]
    assert image.shape == (3, 64, 64)


def test_mdistillers_networks_by_their_keys():
    """Key names and shapes of mdistiller's mv2_tinyimagenet.py and resnetv2.py ResNet18 (200 classes)."""
    mv2 = build_model("mobilenetv2_tinyimagenet", 200).state_dict()
    assert len(mv2) == 373 and sum(v.numel() for k, v in mv2.items() if "running" not in k and "num_batches" not in k
                                   ) == 2_497_480
    assert mv2["pre.0.weight"].shape == (32, 3, 1, 1) and "pre.0.bias" in mv2  # 1x1 stem, biased convolutions
    assert mv2["stage1.residual.0.weight"].shape == (32, 32, 1, 1)  # t=1: the expansion keeps 32 channels
    assert mv2["stage7.residual.6.weight"].shape == (320, 960, 1, 1)
    assert mv2["conv1.0.weight"].shape == (1280, 320, 1, 1) and mv2["conv2.weight"].shape == (200, 1280, 1, 1)
    r18 = build_model("ResNet18_cifar", 200).state_dict()
    assert len(r18) == 122 and r18["linear.weight"].shape == (200, 512)
    assert r18["layer2.0.shortcut.0.weight"].shape == (128, 64, 1, 1) and "layer1.0.shortcut.0.weight" not in r18
    assert r18["conv1.weight"].shape == (64, 3, 3, 3)  # 3x3 stem, no max-pool


def test_pointwise_classifier_is_found_and_computes_as_a_linear():
    torch.manual_seed(0)
    model = build_model("mobilenetv2_tinyimagenet", 7).eval()
    assert classifier_of(model, 64) == "conv2"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        by_conv = torch.nn.functional.conv2d(feats[-1][:, :, None, None], model.conv2.weight, model.conv2.bias)
    assert torch.allclose(logits, by_conv.flatten(1), atol=1e-5)


def test_teacher_and_student_train_on_tinyimagenet(tmp_path):
    write_tiny(tmp_path / "data")
    data = ["--dataset", "tinyimagenet", "--data_folder", str(tmp_path / "data"), *FAST]
    run_cli("train_teacher.py", ["--model", "resnet8", *data], tmp_path)
    teacher_run = tmp_path / "save" / "models" / "resnet8_tinyimagenet_lr_0.05_decay_0.0005_trial_0"
    assert (teacher_run / "resnet8_last.pth").is_file()
    teacher = write_teacher(tmp_path, "ResNet18_cifar", num_classes=3)
    out = run_cli("train_student.py", ["--path_t", str(teacher), "--model_s", "mobilenetv2_tinyimagenet",
                                       "--distill", "kd", *data], tmp_path).stdout
    name = "S:mobilenetv2_tinyimagenet_T:ResNet18_cifar_tinyimagenet_kd_r:0.1_a:0.9_b:0.0_1"
    run = tmp_path / "save" / "student_model" / name
    assert "best accuracy:" in out and (run / "mobilenetv2_tinyimagenet_last.pth").is_file()
    assert safe_load(run / "mobilenetv2_tinyimagenet_last.pth")["model"]["conv2.weight"].shape == (3, 1280, 1, 1)
    assert json.loads((run / "config.json").read_text())["options"]["dataset"] == "tinyimagenet"


def test_stl10_trains_a_teacher(tmp_path):
    write_stl10(tmp_path / "data")
    run_cli("train_teacher.py", ["--model", "resnet8", "--dataset", "stl10", "--data_folder", str(tmp_path / "data"),
                                 "--image_size", "32", *FAST], tmp_path)
    metrics = tmp_path / "save" / "models" / "resnet8_stl10_lr_0.05_decay_0.0005_trial_0" / "metrics.jsonl"
    assert json.loads(metrics.read_text().splitlines()[-1])["epoch"] == 1


def test_recipe_script_is_mdistillers(tmp_path):
    calls = [c for c in fake_python_calls(tmp_path, "run_tinyimagenet_distill.sh") if c[0] == "train_student.py"]
    assert [(flag(c, "--model_s"), "--optimizer" in c) for c in calls] == [
        ("mobilenetv2_tinyimagenet", False), ("mobilenetv2_tinyimagenet", True), ("ShuffleV2", False),
        ("ShuffleV2", True)]
    for call in calls:
        opt, _ = train_student.parse_option(call[1:])
        assert (opt.dataset, opt.model_t, opt.batch_size, opt.epochs, opt.learning_rate) == (
            "tinyimagenet", "ResNet18_cifar", 256, 200, 0.2)
        assert opt.lr_decay_epochs == [60, 120, 160] and opt.weight_decay == 5e-4
        assert (opt.gamma, opt.alpha, opt.beta, opt.kd_T) == (0.1, 0.9, 0.0, 4)
        if opt.optimizer == "dot":
            assert opt.dot_delta == 0.075


@pytest.mark.parametrize("fdf_name, ours", [("resnet18", "ResNet18_cifar"), ("resnet34", "ResNet34_cifar")])
def test_dafls_cifar_resnets_are_the_zoos(fdf_name, ours):
    from datafree.models import build_network, canonical_arch

    assert canonical_arch(fdf_name) == ours
    assert type(build_network(fdf_name, 10)) is type(build_model(ours, 10))
