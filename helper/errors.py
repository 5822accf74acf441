"""User-facing errors: one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the run stopped on a signal and can be resumed


class UserError(Exception):
    """Bad input or environment, explained in one line."""

    exit_code = EXIT_USAGE


class NonFiniteLoss(UserError):
    """A loss term went NaN or infinite; nothing was saved over the last good checkpoint."""

    exit_code = EXIT_NONFINITE


def speaks() -> bool:
    """Whether this process reports errors: always, except in the processes of a distributed run (torchrun's or
    the launcher's workers) other than each node's local rank 0. Those fail together with it, from the same
    inputs or by agreeing on one rank's error (helper.distributed.agree_on_errors), so one line per node says it."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


@contextmanager
def as_user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the given exception types, raised while setting a run up, into one-line UserErrors."""
    try:
        yield
    except kinds as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(message) from exc


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run ``main`` and exit with its code; UserErrors print ``error: ...`` (where this process speaks) and exit
    non-zero."""
    prog = sys.argv[0].rsplit("/", 1)[-1]
    try:
        code = main(argv)
    except UserError as exc:
        if speaks():
            print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if speaks():
            print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
