"""Data-free knowledge distillation (Fast-DFKD, Fang et al., AAAI 2022, and its baselines), with the
reference's command line (zju-vipa/Fast-Datafree ``datafree_kd.py``):

    python datafree_kd.py --method fast_meta --dataset cifar100 --batch_size 256 --lr 0.2 --kd_steps 400 \\
        --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 \\
        --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --student wrn16_2 --is_maml 1 --reset_l0 1 --reset_bn 0 \\
        --teacher_ckpt save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth
"""

from datafree.run import main
from helper.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
