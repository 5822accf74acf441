"""Recipes in scripts/run_cifar_distill.sh checked against the numbers of each reference's own configs:
logit standardisation (sunshangquan/logit-standardization-KD tools/train.py: --base-temp 2, --kd-weight 9,
for DKD alpha and beta times the weight and DKD's T = the base temperature) and MLLD
(Jin-Ying/Multi-Level-Logit-Distillation configs/cifar100/ours/res32x4_res8x4.yaml: LR 0.025,
WEIGHT_DECAY 0.0005, CE 0.1, KD 0.9)."""

from __future__ import annotations

import pytest
from test_scripts import fake_python_calls

import train_student
from distiller_zoo.DKD import dkd_config

LS_BASE_TEMP, LS_KD_WEIGHT = 2.0, 9.0  # tools/train.py's --base-temp and --kd-weight defaults


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list:
    calls = fake_python_calls(tmp_path_factory.mktemp("recipes"), "run_cifar_distill.sh")
    return [train_student.parse_option(call[1:])[0] for call in calls if call[0] == "train_student.py"]


def one(runs: list, distill: str, **flags) -> object:
    found = [o for o in runs if o.distill == distill and all(getattr(o, k) == v for k, v in flags.items())]
    assert len(found) == 1, (distill, flags, len(found))
    return found[0]


def test_kd_with_logit_standardization_is_the_references(runs):
    opt = one(runs, "kd", logit_standardization=True)
    assert (opt.gamma, opt.alpha, opt.kd_T) == (0.1, LS_KD_WEIGHT, LS_BASE_TEMP)


def test_dkd_with_logit_standardization_is_the_references(runs):
    opt = one(runs, "dkd", logit_standardization=True)
    mdistiller = dkd_config(opt.model_t or "resnet32x4", opt.model_s, imagenet=False)
    assert (mdistiller.alpha, mdistiller.beta) == (1.0, 8.0)  # configs/cifar100/dkd/res32x4_res8x4.yaml
    assert opt.dkd_alpha == mdistiller.alpha * LS_KD_WEIGHT == 9
    assert opt.dkd_beta == mdistiller.beta * LS_KD_WEIGHT == 72
    assert opt.dkd_T == LS_BASE_TEMP
    assert (opt.gamma, opt.alpha, opt.beta) == (1.0, 0.0, 1.0)  # DKD's CE_WEIGHT 1; the term carries alpha/beta


def test_plain_dkd_keeps_mdistillers_pair_setting(runs):
    opt = one(runs, "dkd", logit_standardization=False)
    assert (opt.dkd_alpha, opt.dkd_beta, opt.dkd_T) == (None, None, None)


def test_mlld_is_the_official_cifar100_config(runs):
    opt = one(runs, "mlld")
    assert opt.learning_rate == 0.025 and opt.weight_decay == 5e-4 and opt.batch_size == 64
    assert opt.lr_decay_epochs == [150, 180, 210] and opt.epochs == 240 and opt.momentum == 0.9
    assert (opt.gamma, opt.alpha, opt.beta) == (0.1, 0.0, 0.9)
