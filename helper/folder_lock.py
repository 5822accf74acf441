"""One run per folder: an OS lock on ``<folder>/.lock`` held while the run lives.

``fcntl.flock`` locks belong to the open file, so the kernel drops them when the process ends however it
ends (kill -9 included): a killed run's folder is free to resume, while a live run's folder makes a second
run stop before it reads or writes anything there.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from helper.errors import UserError

LOCK_FILE = ".lock"


def ensure_folder(folder: Path, flag: str) -> None:
    """Create ``folder``; one line (exit 2) when it, or a folder above it, is a file or cannot be made."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder: give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {folder}: cannot create the folder ({exc.strerror or exc})") from exc


@contextmanager
def lock_folder(folder: Path, flag: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block; a UserError naming the owner's pid if another process
    holds it. ``flag`` names the option that chose the folder, for the messages."""
    ensure_folder(folder, flag)
    path = folder / LOCK_FILE
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open for the block: closing it releases the lock
    except OSError as exc:
        raise UserError(f"{flag} {folder}: cannot write its lock file ({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise UserError(f"{folder} is in use by a running process (pid {owner}); wait for it to end or "
                            f"stop it, or give this run another {flag}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@contextmanager
def lock_folders(folders: Iterable[tuple[Path, str]]) -> Iterator[None]:
    """:func:`lock_folder` on each (folder, flag), the same folder once."""
    with ExitStack() as stack:
        seen: set[Path] = set()
        for folder, flag in folders:
            key = Path(os.path.abspath(folder))
            if key not in seen:
                seen.add(key)
                stack.enter_context(lock_folder(folder, flag))
        yield
