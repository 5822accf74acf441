"""KamalEngine's examples/slim command line, ``python train.py --distill kd --t_model_path PATH --r 1 --a 0.9 --b 0``:
train_student.py itself, with that example's pair (wrn_40_2 -> wrn_16_2) as defaults the command line overrides.
The teacher's architecture is, as in train_student.py, --model_t, else the one the checkpoint records, else its
folder's name; wrn_40_2 only when none of them gives one."""

import sys
from functools import partial

from helper.errors import run_cli
from train_student import main

if __name__ == "__main__":
    run_cli(partial(main, teacher_fallback="wrn_40_2"), ["--model_s", "wrn_16_2", *sys.argv[1:]])
