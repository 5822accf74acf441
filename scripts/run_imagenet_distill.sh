#!/usr/bin/env bash
# bash (arrays): started by another shell (sh = dash), it re-executes itself under bash first.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
# ImageNet distillation ResNet34 -> ResNet18 with SemCKD's recipe (its README): global batch 256,
# 90 epochs, lr 0.1 x0.1 after epochs 30 and 60, weight decay 1e-4, SGD momentum 0.9, one process per
# GPU under torchrun (helper.torchrun: a failed run shows its one-line error alone). --batch_size is
# per process, so it is GLOBAL_BATCH / (NNODES * NPROC_PER_NODE): SemCKD's 256 over 8 GPUs is 32 per GPU.
# --learning_rate is used as given (see docs/distributed.md).
#
# Loss weights are those of the reference that reports the method on ImageNet (methods.md 2.39):
# SemCKD runs every method with -r 1 -a 1 (KD; FitNet -b 100 --hint_layer 1); mdistiller's CRD is
# CE 1 + 0.8 CRD and its AT CE 1 + 1000 AT (mdistiller trains those 100 epochs, AT at batch 512, lr 0.2;
# here every run takes SemCKD's recipe so they compare with each other).
#
# The teacher is torchvision's ResNet34 (V1 weights, 73.3% top-1) from the torch hub cache; offline, put
# resnet34-b627a593.pth in ~/.cache/torch/hub/checkpoints/. PATH_T=<checkpoint> uses a teacher file instead.
#
# One node, 8 GPUs:     DATA=/data/imagenet sh scripts/run_imagenet_distill.sh
# Two nodes, 8 GPUs each (run on both, NODE_RANK 0 on the node at MASTER_ADDR, 1 on the other):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 DATA=/data/imagenet sh scripts/run_imagenet_distill.sh
# Extra arguments are passed to every run, e.g. --num_workers 16. A failing run stops the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NPROC_PER_NODE=${NPROC_PER_NODE:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}
DATA=${DATA:-./data/imagenet}
PYTHON=${PYTHON:-python}

PROCESSES=$((NNODES * NPROC_PER_NODE))
if ((GLOBAL_BATCH % PROCESSES != 0)); then
    echo "run_imagenet_distill.sh: GLOBAL_BATCH $GLOBAL_BATCH is not a multiple of $PROCESSES processes" >&2
    exit 2
fi
if [[ -n ${PATH_T:-} ]]; then
    TEACHER=(--path_t "$PATH_T" --model_t ResNet34)
else
    TEACHER=(--teacher_weights torchvision --model_t ResNet34)
fi
# shellcheck disable=SC2054  # 30,60 is one argument, --lr_decay_epochs' list
SEMCKD_RECIPE=(--dataset imagenet --data_folder "$DATA" --model_s ResNet18 --batch_size $((GLOBAL_BATCH / PROCESSES))
               --epochs 90 --learning_rate 0.1 --lr_decay_epochs 30,60 --lr_decay_rate 0.1 --weight_decay 1e-4
               --momentum 0.9)
EXTRA=("$@")
# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
"$PYTHON" scripts/check_prereqs.py --prog run_imagenet_distill.sh -- "${TEACHER[@]}" "${SEMCKD_RECIPE[@]}" \
    ${EXTRA[@]+"${EXTRA[@]}"} || exit 2

distill() {
    "$PYTHON" -m helper.torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" \
        --nproc_per_node "$NPROC_PER_NODE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
        train_student.py "${TEACHER[@]}" "${SEMCKD_RECIPE[@]}" "$@" ${EXTRA[@]+"${EXTRA[@]}"}
}

# KD (SemCKD: -r 1 -a 1, T 4)
distill --distill kd -r 1 -a 1 -b 0 --trial 1
# FitNet (SemCKD: -b 100 on the first stage's output)
distill --distill hint -r 1 -a 1 -b 100 --hint_layer 1 --trial 1
# AT (mdistiller: CE 1, AT 1000)
distill --distill attention -r 1 -a 0 -b 1000 --trial 1
# CRD (mdistiller: CE 1, CRD 0.8) and CRD+KD (the CRD paper's combination)
distill --distill crd -r 1 -a 0 -b 0.8 --trial 1
distill --distill crd -r 1 -a 1 -b 0.8 --trial 1
