"""A table of runs in one command: the runs of a script of ours, a YAML grid or a published table's preset,
on this machine's GPUs or CPU slots (--executor local) or a Slurm cluster (--executor slurm, submitit).
``python scripts/sweep.py --help``; the package is sweep/."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helper.errors import run_cli  # noqa: E402
from sweep.cli import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
