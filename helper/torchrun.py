"""torchrun whose failures read as the run's own: ``python -m helper.torchrun`` takes torchrun's flags.

When a run fails, its processes agree on the error and each node's local rank 0 prints it in one line
(helper.distributed.agree_on_errors); torchrun would then add its own report of the failed processes (a
traceback and some 25 lines, naming whichever rank it saw exit first) and exit 1. Here that report and its
log lines are left out, and the exit status is the processes' own (2 for a one-line error, 3 for a
non-finite loss, 75 for a stop that can be resumed), chosen as the launcher chooses it. A process that
crashed has printed its traceback itself. Everything else is torchrun's.
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from helper.launcher import exit_status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.disable(logging.ERROR)  # this process's (the agent's) log lines: its failure report among them
    try:
        run(args)
    except ChildFailedError as failure:
        return exit_status([process.exitcode for process in failure.failures.values()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
