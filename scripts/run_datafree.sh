#!/bin/sh
# POSIX sh: runs the same under sh (dash), bash and ./; data-free distillation (datafree_kd.py) on CIFAR-100
# with Fast-DFKD's settings, the lines of zju-vipa/Fast-Datafree scripts/fast_cifar.sh: Fast-2, Fast-5 and
# Fast-10 (--g_steps 2/5/10 with their --lr_z/--lr_g) for resnet34 -> resnet18, vgg11 -> resnet18 and
# wrn40_2 -> wrn16_1 / wrn40_1 / wrn16_2. BASELINES=1 adds its DeepInversion line (scripts/deepinv_cifar.sh,
# on CIFAR-100) and its two CMI lines (scripts/cmi_cifar.sh: CMI on CIFAR-10 with the reference's
# checkpoints/pretrained/cifar10_wrn40_2.pth, and its "tuned fast" CIFAR-100 line, --cr 0, which the
# reference's own code cannot run: it then never computes the features its memory bank stores). Reference names map onto ours (wrn40_2 = wrn_40_2, ...; resnet18/34 are DAFL's CIFAR ResNets).
# Teachers: the reference's checkpoints/pretrained/cifar100_<teacher>.pth ({'state_dict'}, from its Dropbox)
# where present; for wrn40_2 otherwise RepDistiller's save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth
# (scripts/fetch_pretrained_teachers.sh). Extra arguments go to every run, e.g. --device cuda:1.
# A failing run stops the script (set -e).
#
# DEMO=1 sh scripts/run_datafree.sh: offline, a few minutes on 2 CPU cores: train a resnet20 teacher on the
# synthetic set, distil a resnet8 from it with no data (fast_meta, then DeepInversion with the reference's
# "tuned fast" settings, 10 steps per batch), print the test accuracies.
set -eu
cd "$(dirname "$0")/.."

if [ "${DEMO:-0}" = 1 ]; then
    if [ -z "${PY:-}" ]; then  # PY=python to use your own environment
        PY=$(sh scripts/setup_env.sh)
    fi
    # the data set for every run, then any extra arguments (last: they win)
    set -- --dataset synthetic --syn_classes 10 --syn_train_size 2000 --syn_val_size 500 --num_workers 0 \
        --seed 0 "$@"
    "$PY" train_teacher.py --model resnet20 --epochs 12 --lr_decay_epochs 8,10 --trial datafree_demo --overwrite "$@"
    teacher=save/models/resnet20_synthetic_lr_0.05_decay_0.0005_trial_datafree_demo/resnet20_best.pth
    "$PY" datafree_kd.py --method fast_meta --teacher_ckpt "$teacher" --student resnet8 --batch_size 64 --lr 0.1 \
        --kd_steps 40 --ep_steps 40 --warmup 2 --epochs 12 --T 20 --bn 10 --oh 0.4 --adv 1.1 --bn_mmt 0.9 \
        --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --ngf 32 --log_tag demo --overwrite "$@"
    # DeepInversion with the reference's "tuned fast" settings (scripts/deepinv_cifar.sh: 10 steps, lr_g 1)
    "$PY" datafree_kd.py --method deepinv --teacher_ckpt "$teacher" --student resnet8 --batch_size 64 --lr 0.1 \
        --kd_steps 40 --ep_steps 40 --warmup 2 --epochs 12 --T 20 --bn 10 --oh 1 --adv 1 \
        --g_steps 10 --lr_g 1 --log_tag demo --overwrite "$@"
    acc() { "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%.2f (best %.2f)" % (r["last_acc"], r["best_acc"]))' "$1"; }
    echo
    echo "test accuracy on synthetic (10 classes), no training image given to the student:"
    echo "  teacher resnet20:                  $(acc "${teacher%/*}/results.json")"
    echo "  resnet8, fast_meta:                $(acc save/datafree/fast_meta-synthetic-resnet20-resnet8-demo/results.json)"
    echo "  resnet8, deepinv (10 steps):       $(acc save/datafree/deepinv-synthetic-resnet20-resnet8-demo/results.json)"
    exit 0
fi

teacher() {  # $1: the reference's name; $2: RepDistiller's teacher of the same network, if there is one
    if [ -f "checkpoints/pretrained/cifar100_$1.pth" ] || [ -z "${2:-}" ]; then
        echo "checkpoints/pretrained/cifar100_$1.pth"
    else
        echo "$2"
    fi
}
R34=$(teacher resnet34)
VGG=$(teacher vgg11)
WRN=$(teacher wrn40_2 ./save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth)
# Prerequisites (python, data, teachers), checked before the first run: one line per missing item, exit 2.
python scripts/check_prereqs.py --prog run_datafree.sh --dataset cifar100 --teacher "$R34" --teacher "$VGG" \
    --teacher "$WRN" -- "$@" || exit 2

python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.33 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 2 --lr_z 0.015 --lr_g 5e-3 --teacher resnet34 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/r34-2 --log_tag r34-2 --teacher_ckpt "$R34" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.33 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --teacher resnet34 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/r34-5 --log_tag r34-5 --teacher_ckpt "$R34" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.33 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --teacher resnet34 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/r34-10 --log_tag r34-10 --teacher_ckpt "$R34" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.0 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 2 --lr_z 0.015 --lr_g 5e-3 --teacher vgg11 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/vgg-2 --log_tag vgg-2 --teacher_ckpt "$VGG" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.0 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --teacher vgg11 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/vgg-5 --log_tag vgg-5 --teacher_ckpt "$VGG" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.0 --bn 10.0 --oh 0.5 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --teacher vgg11 --student resnet18 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/vgg-10 --log_tag vgg-10 --teacher_ckpt "$VGG" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 2 --lr_z 0.015 --lr_g 5e-3 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrn-2 --log_tag wrn-2 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrn-5 --log_tag wrn-5 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrn-10 --log_tag wrn-10 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 2 --lr_z 0.015 --lr_g 5e-3 --student wrn40_1 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS401-2 --log_tag wrnS401-2 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --student wrn40_1 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS401-5 --log_tag wrnS401-5 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --student wrn40_1 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS401-10 --log_tag wrnS401-10 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 2 --lr_z 0.015 --lr_g 5e-3 --student wrn16_2 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS162-2 --log_tag wrnS162-2 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 5 --lr_z 0.01 --lr_g 3e-3 --student wrn16_2 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS162-5 --log_tag wrnS162-5 --teacher_ckpt "$WRN" "$@"
python datafree_kd.py --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 --balance 0 --gpu 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 --method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --student wrn16_2 --is_maml 1 --reset_l0 1 --reset_bn 0 --save_dir run/wrnS162-10 --log_tag wrnS162-10 --teacher_ckpt "$WRN" "$@"

if [ "${BASELINES:-0}" = 1 ]; then
    python datafree_kd.py --method deepinv --dataset cifar100 --batch_size 256 --teacher wrn40_2 --student wrn16_1 --lr 0.1 --epochs 200 --kd_steps 400 --ep_steps 400 --g_steps 1000 --lr_g 0.1 --adv 1 --bn 10 --oh 1 --T 20 --act 0 --balance 0 --gpu 0 --seed 0 --save_dir run/deepinv --log_tag deepinv --teacher_ckpt "$WRN" "$@"
    python datafree_kd.py --method cmi --dataset cifar10 --batch_size 256 --teacher wrn40_2 --student wrn16_1 --lr 0.1 --kd_steps 400 --ep_steps 400 --g_steps 200 --lr_g 1e-3 --adv 0.5 --bn 1.0 --oh 1.0 --cr 0.8 --cr_T 0.2 --act 0 --balance 0 --gpu 0 --seed 0 --T 20 --save_dir run/cmi --log_tag cmi "$@"
    python datafree_kd.py --method cmi --dataset cifar100 --batch_size 256 --teacher wrn40_2 --student wrn16_1 --lr 0.1 --kd_steps 400 --ep_steps 400 --g_steps 5 --lr_g 1e-3 --adv 0.5 --bn 1.0 --oh 1.0 --cr 0 --cr_T 0.2 --act 0 --balance 0 --gpu 0 --seed 0 --T 20 --save_dir run/cmi_fast_cifar100_5 --log_tag cmi_fast_cifar100_5 --teacher_ckpt "$WRN" "$@"
fi
