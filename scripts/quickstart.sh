#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./.
# Offline demo on the synthetic data set (nothing to download): train a teacher, distil a student
# with KD, train the same student without a teacher, and print the three test accuracies. The short
# budget is the regime where a teacher's soft labels help most (measured, README: resnet20 70.3 %,
# resnet8 with KD 59.6 %, resnet8 alone 26.1 %).
# A few minutes on 2 CPU cores. Everything goes to ./save (see README, "Outputs").
#   sh scripts/quickstart.sh      EPOCHS=10 sh scripts/quickstart.sh   (longer; docs/datasets.md has measured figures)
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then  # PY=python to use your own environment
    PY=$(sh scripts/setup_env.sh)
fi
EPOCHS=${EPOCHS:-6}
TEACHER=${TEACHER:-resnet20}
STUDENT=${STUDENT:-resnet8}
DECAY="$((EPOCHS >= 2 ? EPOCHS * 2 / 3 : 1)),$((EPOCHS >= 2 ? EPOCHS * 5 / 6 : 1))"  # lr / 10 at 2/3 and 5/6
# The arguments common to the three runs (this script takes none of its own).
set -- --dataset synthetic --syn_classes 100 --syn_train_size 5000 --syn_val_size 1000 --num_workers 0 \
    --epochs "$EPOCHS" --lr_decay_epochs "$DECAY" --save_freq "$EPOCHS" --seed 0 --trial quickstart

# Reruns start over in the same folders rather than stopping at the finished runs.
"$PY" train_teacher.py --model "$TEACHER" "$@" --overwrite
teacher_dir=save/models/${TEACHER}_synthetic_lr_0.05_decay_0.0005_trial_quickstart
"$PY" train_student.py --path_t "$teacher_dir/${TEACHER}_best.pth" --distill kd --model_s "$STUDENT" \
    "$@" --overwrite
"$PY" train_teacher.py --model "$STUDENT" "$@" --overwrite

acc() { "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.2f (best %.2f)" % (r["last_acc"], r["best_acc"]))' "$1"; }
teacher_acc=$(acc "$teacher_dir/results.json")
kd_acc=$(acc "save/student_model/S:${STUDENT}_T:${TEACHER}_synthetic_kd_r:0.1_a:0.9_b:0.0_quickstart/results.json")
alone_acc=$(acc "save/models/${STUDENT}_synthetic_lr_0.05_decay_0.0005_trial_quickstart/results.json")
echo
echo "test accuracy after $EPOCHS epochs on synthetic (100 classes):"
echo "  teacher $TEACHER:              $teacher_acc"
echo "  student $STUDENT with KD:      $kd_acc"
echo "  student $STUDENT alone:        $alone_acc"
