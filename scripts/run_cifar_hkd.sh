#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; SemCKD's HKD on CIFAR-100, its two passes.
# 1. The auxiliary network resnet8x4_double learns from the resnet32x4 teacher with PKT (-r 1 -a 1 -b 30000).
# 2. The student resnet8x4 learns from pass 1's best checkpoint with HKD (-r 1 -a 1 -b 1,
#    --hkd_initial_weight 100), as SemCKD's scripts/run_cifar_distill.sh runs them.
# Pass 2 reads pass 1's run folder, named as train_student.py names it (flags are floats, so r:1.0):
#   save/student_model/S:resnet8x4_double_T:resnet32x4_cifar100_pkt_r:1.0_a:1.0_b:30000.0_<trial>/
# TRIAL=<id> sets both runs' --trial (default 1). Extra arguments go to both passes, e.g.
#   scripts/run_cifar_hkd.sh --epochs 240 --device cuda
# except --trial and --dataset, which would rename pass 1's folder. The teacher comes from
# scripts/fetch_pretrained_teachers.sh. A failing pass stops the script (set -e).
set -eu
cd "$(dirname "$0")/.."

for arg in "$@"; do
    case $arg in
        --trial | --trial=* | --dataset | --dataset=*)
            echo "run_cifar_hkd.sh: $arg would rename pass 1's folder that pass 2 reads; set TRIAL=<id> instead of --trial (CIFAR-100 only)" >&2
            exit 2
            ;;
    esac
done
TRIAL=${TRIAL:-1}
TEACHER=./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth
AUXILIARY=./save/student_model/S:resnet8x4_double_T:resnet32x4_cifar100_pkt_r:1.0_a:1.0_b:30000.0_$TRIAL/resnet8x4_double_best.pth

# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_cifar_hkd.sh --dataset cifar100 --teacher "$TEACHER" -- "$@" || exit 2

# pass 1: PKT, teacher -> auxiliary network
python train_student.py --path_t "$TEACHER" --distill pkt --model_s resnet8x4_double -r 1 -a 1 -b 30000 --trial "$TRIAL" "$@"
# pass 2: HKD, auxiliary network -> student
python train_student.py --path_t "$AUXILIARY" --distill hkd --model_s resnet8x4 -r 1 -a 1 -b 1 --trial "$TRIAL" "$@"
