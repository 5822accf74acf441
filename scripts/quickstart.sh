#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Offline demo on the synthetic data set (nothing to download): train a teacher on 5,000 images, then the
# same small student on 1,000 images twice, with KD from the teacher and alone, and print the three test
# accuracies and what they mean. A student with little data is where a teacher's soft labels help most
# and most reliably: over 5 seeds, in bf16 and in fp32, the teacher is best and KD adds 22-68 points to
# the student alone (docs/quickstart.md has the table; shorter budgets on the full data swing with the
# seed and the CPU). 3 to 4.5 minutes on 2 CPU cores (bf16, fp32). Everything goes to ./save (README).
#   sh scripts/quickstart.sh     SEED=3 PRECISION=fp32 sh scripts/quickstart.sh     EPOCHS=30 (longer)
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then  # PY=python to use your own environment
    PY=$(sh scripts/setup_env.sh)
fi
EPOCHS=${EPOCHS:-15}  # the teacher's, over 5,000 images; each student gets twice as many over 1,000 images
TEACHER=${TEACHER:-resnet20}
STUDENT=${STUDENT:-resnet8}
SEED=${SEED:-0}
PRECISION=${PRECISION:-auto}  # auto: bf16 where the CPU runs it fast (AMX), else fp32
STUDENT_EPOCHS=$((EPOCHS * 2))
# lr / 10 at 3/4 and 9/10 of a run (at least epoch 1)
decay() { echo "$(($1 * 3 / 4 > 0 ? $1 * 3 / 4 : 1)),$(($1 * 9 / 10 > 0 ? $1 * 9 / 10 : 1))"; }
# The arguments common to the three runs (this script takes none of its own).
set -- --dataset synthetic --syn_classes 100 --syn_val_size 1000 --num_workers 0 --precision "$PRECISION" \
    --seed "$SEED" --trial quickstart
teacher_budget="--syn_train_size 5000 --epochs $EPOCHS --lr_decay_epochs $(decay "$EPOCHS") --save_freq $EPOCHS"
student_budget="--syn_train_size 1000 --epochs $STUDENT_EPOCHS --lr_decay_epochs $(decay "$STUDENT_EPOCHS")"
student_budget="$student_budget --save_freq $STUDENT_EPOCHS"

# Reruns start over in the same folders rather than stopping at the finished runs.
# shellcheck disable=SC2086  # the budgets are split into their flags on purpose
"$PY" train_teacher.py --model "$TEACHER" "$@" $teacher_budget --overwrite
teacher_dir=save/models/${TEACHER}_synthetic_lr_0.05_decay_0.0005_trial_quickstart
kd_dir=save/student_model/S:${STUDENT}_T:${TEACHER}_synthetic_kd_r:0.1_a:0.9_b:0.0_quickstart
alone_dir=save/models/${STUDENT}_synthetic_lr_0.05_decay_0.0005_trial_quickstart
# shellcheck disable=SC2086
"$PY" train_student.py --path_t "$teacher_dir/${TEACHER}_best.pth" --distill kd --model_s "$STUDENT" "$@" \
    $student_budget --overwrite
# shellcheck disable=SC2086
"$PY" train_teacher.py --model "$STUDENT" "$@" $student_budget --overwrite

"$PY" scripts/quickstart_summary.py "$teacher_dir" "$kd_dir" "$alone_dir"
