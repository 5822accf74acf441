#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; one python line per method, append new ones below.
# RepDistiller's CIFAR-100 distillation runs, resnet32x4 -> resnet8x4, with RD's loss weights
# (-r CE, -a KD, -b the method's own term). Extra arguments are passed to every run, e.g.
#   scripts/run_cifar_distill.sh --epochs 240 --device cuda
# The teacher comes from scripts/fetch_pretrained_teachers.sh. kdsvd has no line: RD publishes no weights for it.
# AB (abound), FT (factor) and FSP (fsp) first run --init_epochs (30) of their init stage; for AB and
# FSP -b has no effect, as in RD. A failing run stops the script (set -e).
# -r 1 is RD's default (its argparse), spelled out here because ours defaults to each method's own weights.
set -eu
cd "$(dirname "$0")/.."

# KD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1 "$@"
# FitNet
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill hint --model_s resnet8x4 -r 1 -a 0 -b 100 --trial 1 "$@"
# AT
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill attention --model_s resnet8x4 -r 1 -a 0 -b 1000 --trial 1 "$@"
# SP
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill similarity --model_s resnet8x4 -r 1 -a 0 -b 3000 --trial 1 "$@"
# CC
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill correlation --model_s resnet8x4 -r 1 -a 0 -b 0.02 --trial 1 "$@"
# VID
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill vid --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# RKD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill rkd --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# PKT
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill pkt --model_s resnet8x4 -r 1 -a 0 -b 30000 --trial 1 "$@"
# AB
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill abound --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# FT
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill factor --model_s resnet8x4 -r 1 -a 0 -b 200 --trial 1 "$@"
# FSP
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill fsp --model_s resnet8x4 -r 1 -a 0 -b 50 --trial 1 "$@"
# NST
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill nst --model_s resnet8x4 -r 1 -a 0 -b 50 --trial 1 "$@"
# CRD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill crd --model_s resnet8x4 -r 1 -a 0 -b 0.8 --trial 1 "$@"
# CRD+KD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill crd --model_s resnet8x4 -r 1 -a 1 -b 0.8 --trial 1 "$@"
