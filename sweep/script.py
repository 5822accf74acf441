"""The runs of one of our shell scripts, without training anything: the script runs under ``sh`` with a
stand-in ``python`` first on PATH that records each call's arguments and working directory, so the script's
own variables, loops and functions expand exactly as they would (the way tests/test_shell_scripts.py
checks the scripts)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from helper.errors import UserError

# The scripts' own prerequisite check (scripts/check_prereqs.py): not a run; the sweep runs teachers first itself
PREREQ_CHECK = "check_prereqs.py"
# Each call: its directory, then its arguments, each followed by RS (\036); the call ends with GS (\035).
_STANDIN = r"""#!/bin/sh
{ printf '%s\036' "$PWD"; for a in "$@"; do printf '%s\036' "$a"; done; printf '\035'; } >> "$SWEEP_CALLS"
"""


def script_calls(script: Path, extra: list[str], env: dict[str, str] | None = None) -> list[tuple[Path, list[str]]]:
    """(directory, arguments after ``python``) of each python call ``script`` makes with ``extra`` as its "$@"."""
    if not script.is_file():
        raise UserError(f"--from-script: no such file: {script}")
    with tempfile.TemporaryDirectory(prefix="sweep_standin_") as tmp:
        bin_dir, calls = Path(tmp, "bin"), Path(tmp, "calls")
        bin_dir.mkdir()
        for name in ("python", "python3"):
            (bin_dir / name).write_text(_STANDIN)
            (bin_dir / name).chmod(0o755)
        standin = str(bin_dir / "python")
        full_env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "SWEEP_CALLS": str(calls), "PYTHON": standin, "PY": standin}
        shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
        proc = subprocess.run([shell, str(script), *extra], env=full_env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise UserError(f"{script} stopped (exit {proc.returncode}) before listing its runs: "
                            f"{lines[-1] if lines else 'no message'}")
        text = calls.read_text() if calls.exists() else ""
    found = []
    for call in text.split("\035")[:-1]:
        cwd, *args = call.split("\036")[:-1]
        if not (args and Path(args[0]).name == PREREQ_CHECK):
            found.append((Path(cwd), args))
    return found
