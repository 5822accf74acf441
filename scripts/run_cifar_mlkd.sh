#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; MLKD on CIFAR-100 for DLKD's pairs (ifding/DLKD
# scripts/run_cifar_mlkd.sh, every pair with -r 1 -a 50 -b 1 -d 20; for mlkd -a weighs the correlation
# term, -b the supervised contrastive one, -d the alignment). DLKD leaves one pair active
# (resnet32x4 -> ShuffleV2); this script runs them all in DLKD's order.
# Teachers: DLKD's files save/models/<T>_vanilla/<T>.pth ({'state_dict': ...}) where present, else
# RepDistiller's save/models/<T>_vanilla/ckpt_epoch_240.pth from scripts/fetch_pretrained_teachers.sh.
# Extra arguments are passed to every run, e.g.
#   scripts/run_cifar_mlkd.sh --epochs 240 --device cuda
# A failing run stops the script (set -e).
set -eu
cd "$(dirname "$0")/.."

teacher() {
    if [ -f "./save/models/$1_vanilla/$1.pth" ]; then
        echo "./save/models/$1_vanilla/$1.pth"
    else
        echo "./save/models/$1_vanilla/ckpt_epoch_240.pth"
    fi
}

# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_cifar_mlkd.sh --dataset cifar100 --teacher "$(teacher vgg13)" \
    --teacher "$(teacher wrn_40_2)" --teacher "$(teacher resnet32x4)" --teacher "$(teacher resnet56)" \
    --teacher "$(teacher ResNet50)" -- "$@" || exit 2
python train_student.py --path_t "$(teacher vgg13)" --distill mlkd --model_s vgg8 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher wrn_40_2)" --distill mlkd --model_s wrn_40_1 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher wrn_40_2)" --distill mlkd --model_s wrn_16_2 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher resnet32x4)" --distill mlkd --model_s resnet8x4 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher resnet56)" --distill mlkd --model_s resnet20 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher resnet32x4)" --distill mlkd --model_s ShuffleV2 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher ResNet50)" --distill mlkd --model_s MobileNetV2 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher vgg13)" --distill mlkd --model_s MobileNetV2 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher wrn_40_2)" --distill mlkd --model_s ShuffleV1 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher resnet32x4)" --distill mlkd --model_s ShuffleV1 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
python train_student.py --path_t "$(teacher ResNet50)" --distill mlkd --model_s vgg8 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
