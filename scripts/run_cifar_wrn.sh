#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; the ten methods of KamalEngine's examples/slim
# (zju-vipa/KamalEngine, train_distill.sh, its weights) on CIFAR-100, wrn_40_2 -> wrn_16_2. Its README runs
# `python train.py --distill kd --t_model_path PATH --r 1 --a 0.9 --b 0`; train.py here is train_student.py
# with that pair as defaults, and --t_model_path/--r/--a/--b/--distill svd are spellings of
# --path_t/-r/-a/-b/--distill kdsvd, so these lines run the same experiment with train_student.py.
# Its table (teacher 75.61, student 73.26, kd 75.2, ...) is in docs/published_results.csv (source KamalEngine).
# Differences: KamalEngine anneals the learning rate with a per-step cosine over the 240 epochs; this uses
# RepDistiller's steps (x0.1 at 150, 180, 210).
# Teacher: TEACHER=PATH, else RepDistiller's save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth
# (scripts/fetch_pretrained_teachers.sh). Extra arguments are passed to every run, e.g.
#   sh scripts/run_cifar_wrn.sh --epochs 240 --device cuda
# A failing run stops the script (set -e).
set -eu
cd "$(dirname "$0")/.."
T=${TEACHER:-./save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth}
# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_cifar_wrn.sh --dataset cifar100 --teacher "$T" -- "$@" || exit 2

python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill kd -r 0.1 -a 0.9 -b 0 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill hint -a 0 -b 100 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill attention -a 0 -b 1000 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill sp -a 0 -b 3000 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill cc -a 0 -b 0.02 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill vid -a 0 -b 1 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill rkd -a 0 -b 1 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill pkt -a 0 -b 30000 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill nst -a 0 -b 50 --trial 1 "$@"
python train_student.py --path_t "$T" --model_t wrn_40_2 --model_s wrn_16_2 --distill svd -a 0 -b 10 --trial 1 "$@"
