#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; one python line per method, append new ones below.
# RepDistiller's CIFAR-100 distillation runs, resnet32x4 -> resnet8x4, with RD's loss weights
# (-r CE, -a KD, -b the method's own term). Extra arguments are passed to every run, e.g.
#   scripts/run_cifar_distill.sh --epochs 240 --device cuda
# The teacher comes from scripts/fetch_pretrained_teachers.sh. RD's own lines come first; every other
# method follows with its reference's weights (kdsvd, for which RD publishes none, with mdistiller's).
# AB (abound), FT (factor) and FSP (fsp) first run --init_epochs (30) of their init stage; for AB and
# FSP -b has no effect, as in RD. A failing run stops the script (set -e).
# -r 1 is RD's default (its argparse), spelled out here because ours defaults to each method's own weights.
set -eu
cd "$(dirname "$0")/.."
# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_cifar_distill.sh --dataset cifar100 \
    --teacher ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth -- "$@" || exit 2

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

# ---- Beyond RepDistiller's script: every other method, resnet32x4 -> resnet8x4, with its own repository's weights
# KDSVD (RD has no script line; mdistiller's weight)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kdsvd --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# Knowledge-Distillation-Zoo methods (KD-Zoo: CE + lambda * L)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill logits --model_s resnet8x4 -r 1 -a 0 -b 0.1 --trial 1 "$@"
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill irg --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# IRG, SemCKD's form and weights
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill irg --irg_variant semckd --model_s resnet8x4 -r 1 -a 1 -b 0.005 --trial 1 "$@"
# OFD: paper/mdistiller margins (default) / KD-Zoo's per-batch margin
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ofd --model_s resnet8x4 -r 1 -a 0 -b 0.001 --trial 1 "$@"
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ofd --ofd_margin batch --model_s resnet8x4 -r 1 -a 0 -b 0.5 --trial 1 "$@"
# AFD (needs equal stage widths: resnet32x4 -> resnet8x4 qualifies)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill afd --model_s resnet8x4 -r 1 -a 0 -b 500 --trial 1 "$@"
# MLKD (DLKD: no KD term; -a weighs its correlation loss, -b its supervised contrastive loss, -d its alignment loss)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill mlkd --model_s resnet8x4 -r 1 -a 50 -b 1 -d 20 --trial 1 "$@"
# SemCKD (SemCKD's -r 1 -a 1 -b 400)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill semckd --model_s resnet8x4 -r 1 -a 1 -b 400 --trial 1 "$@"
# HKD: two passes (PKT into resnet8x4_double, then HKD from it): sh scripts/run_cifar_hkd.sh
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill sobolev --model_s resnet8x4 -r 1 -a 0 -b 20 --trial 1 "$@"
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill lwm --model_s resnet8x4 -r 1 -a 0 -b 0.4 --trial 1 "$@"
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill bss --model_s resnet8x4 -r 1 -a 0 -b 2 --trial 1 "$@"
# ICD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill icd --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# ICD+KD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill icd --model_s resnet8x4 -r 1 -a 1 -b 1 --trial 1 "$@"
# RRD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill rrd --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# RRD+KD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill rrd --model_s resnet8x4 -r 1 -a 1 -b 1 --trial 1 "$@"
# ITRD (official weights; the distillers repository has no line)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill itrd --model_s resnet8x4 -r 1 -a 0 -b 1 --lambda_corr 2.0 --lambda_mutual 1.0 --itrd_alpha 1.01 --trial 1 "$@"
# EGA (equal pooled sizes: resnet32x4 256 -> resnet8x4 256)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ega --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# WSLD (CE + 2.5 * weighted soft labels at T 2)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill wsld --model_s resnet8x4 -r 1 -a 0 -b 2.5 --trial 1 "$@"
# SRRL
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill srrl --model_s resnet8x4 -r 1 -a 1 -b 1 --trial 1 "$@"
# SimKD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill simkd --model_s resnet8x4 -r 0 -a 0 -b 1 --trial 1 "$@"
# CTKD: KD at a learnt, curriculum temperature (Li et al. 2023)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ctkd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1 "$@"
# KD with logit standardisation (Sun et al. 2024): the reference's CE 0.1, KD 9, base temperature 2
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kd --model_s resnet8x4 -r 0.1 -a 9 -b 0 --kd_T 2 --logit_standardization --trial 1 "$@"
# KD trained with DOT (Zhao et al. 2023), delta 0.075
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --optimizer dot --trial 1 "$@"
# DKD (mdistiller's beta 8, T 4, warm-up 20 picked from the pair)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill dkd --model_s resnet8x4 -r 1 -a 0 -b 1 --trial 1 "$@"
# DKD with logit standardisation (Sun et al. 2024): the reference's alpha and beta x9, DKD's T = base temperature 2
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill dkd --model_s resnet8x4 -r 1 -a 0 -b 1 --dkd_alpha 9 --dkd_beta 72 --dkd_T 2 --logit_standardization --trial 1 "$@"
# ReviewKD
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill reviewkd --model_s resnet8x4 -r 1 -a 0 -b 5 --trial 1 "$@"
# DIST
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill dist --model_s resnet8x4 -r 1 -a 0 -b 2 --trial 1 "$@"
# MLLD (official recipe: lr 0.025; weight decay 5e-4, the default)
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill mlld --model_s resnet8x4 -r 0.1 -a 0 -b 0.9 --learning_rate 0.025 --trial 1 "$@"
# DML (no teacher: resnet8x4 and a resnet32x4 peer trained together from scratch)
python train_student.py --distill dml --model_s resnet8x4 --model_t resnet32x4 -r 1 -a 0 -b 1 --trial 1 "$@"
