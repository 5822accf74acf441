#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Train RepDistiller's six published CIFAR-100 teachers with RD's recipe (SGD momentum 0.9, wd 5e-4,
# batch 64, lr 0.05, 240 epochs, lr x0.1 after epochs 150, 180 and 210; spelled out so a change of
# defaults cannot change these runs). Extra arguments are passed to every run and win over these.
# Runs are saved under save/models/<model>_cifar100_lr_..._trial_<t>/; the students' scripts expect the
# published layout save/models/<model>_vanilla/ckpt_epoch_240.pth. A failing run stops the script.
set -eu
cd "$(dirname "$0")/.."

# train_teacher <model> [extra arguments]: one run with RD's recipe
train_teacher() {
    model=$1
    shift
    python train_teacher.py --model "$model" --epochs 240 --batch_size 64 --learning_rate 0.05 \
        --lr_decay_epochs 150,180,210 --lr_decay_rate 0.1 --weight_decay 5e-4 --momentum 0.9 "$@"
}

# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_cifar_vanilla.sh --dataset cifar100 -- "$@" || exit 2
train_teacher wrn_40_2 "$@"
train_teacher resnet56 "$@"
train_teacher resnet110 "$@"
train_teacher resnet32x4 "$@"
train_teacher vgg13 "$@"
train_teacher ResNet50 "$@"
