#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; MLKD on ImageNet, ResNet34 -> ResNet18, with
# DLKD's recipe (ifding/DLKD scripts/run_imagenet_mlkd.sh and train_student_imagenet.py): -r 1 -a 20
# -b 0.5 -d 10, global batch 256, lr 0.1 x batch/256, weight decay 1e-4, SGD momentum 0.9, 120 epochs,
# lr x0.1 after epochs 30, 60 and 90. For mlkd -a weighs the correlation term, -b the supervised
# contrastive one, -d the alignment.
# One process per GPU under torchrun (helper.torchrun: a failed run shows its one-line error alone);
# --batch_size is per process: GLOBAL_BATCH / (NNODES * NPROC_PER_NODE), 32 on 8 GPUs (each image then
# gives 4 views, 128 per process). DLKD runs DataParallel, so its correlation and contrastive terms relate
# all 256 samples of a step; here each process relates its own 32 (docs/methods.md, MLKD).
# NPROC_PER_NODE=1 keeps the whole batch on one GPU.
#
# The teacher is torchvision's ResNet34 (V1 weights, DLKD's resnet34-333f7ec4.pth) from the torch hub
# cache; offline, put resnet34-b627a593.pth in ~/.cache/torch/hub/checkpoints/. PATH_T=<checkpoint> uses
# a teacher file instead (DLKD's resnet34-333f7ec4.pth loads as it is).
#
# One node, 8 GPUs:     DATA=/data/imagenet sh scripts/run_imagenet_mlkd.sh
# Two nodes, 8 GPUs each (run on both, NODE_RANK 0 on the node at MASTER_ADDR, 1 on the other):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 DATA=/data/imagenet sh scripts/run_imagenet_mlkd.sh
# Extra arguments are passed on, after the recipe (so they override it), e.g. --num_workers 12.
set -eu
cd "$(dirname "$0")/.."

NPROC_PER_NODE=${NPROC_PER_NODE:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}
DATA=${DATA:-./data/imagenet}
PYTHON=${PYTHON:-python}

PROCESSES=$((NNODES * NPROC_PER_NODE))
if [ $((GLOBAL_BATCH % PROCESSES)) -ne 0 ]; then
    echo "run_imagenet_mlkd.sh: GLOBAL_BATCH $GLOBAL_BATCH is not a multiple of $PROCESSES processes" >&2
    exit 2
fi
LR=$(awk "BEGIN { print 0.1 * $GLOBAL_BATCH / 256 }")

set -- --model_t ResNet34 --dataset imagenet --data_folder "$DATA" --model_s ResNet18 \
    --batch_size $((GLOBAL_BATCH / PROCESSES)) --epochs 120 --learning_rate "$LR" --lr_decay_epochs 30,60,90 \
    --lr_decay_rate 0.1 --weight_decay 1e-4 --momentum 0.9 \
    --distill mlkd -r 1 -a 20 -b 0.5 -d 10 --trial 1 "$@"
if [ -n "${PATH_T:-}" ]; then
    set -- --path_t "$PATH_T" "$@"
else
    set -- --teacher_weights torchvision "$@"
fi

# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
"$PYTHON" scripts/check_prereqs.py --prog run_imagenet_mlkd.sh -- "$@" || exit 2
"$PYTHON" -m helper.torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --nproc_per_node "$NPROC_PER_NODE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    train_student.py "$@"
