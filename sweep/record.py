"""What a sweep remembers between invocations, in ``save/sweeps/<name>/``: a log per run (``logs/``) and the
exit code and last log line of each run's latest attempt (``attempts.json``), so a failed run is reported with
its last line by the next ``--dry-run`` too."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from sweep.runs import Run

EXIT_PREEMPTED = 75


class Record:
    def __init__(self, folder: Path):
        self.folder = folder
        self.logs = folder / "logs"
        self.file = folder / "attempts.json"
        try:
            self.attempts: dict[str, dict] = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.attempts = {}

    def log_path(self, index: int, run: Run) -> Path:
        slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", run.folder.name if run.folder else run.entry)
        return self.logs / f"{index:03d}_{slug}.log"

    def key(self, run: Run) -> str:
        return str(run.folder) if run.folder else " ".join(run.args)

    def finished(self, index: int, run: Run, code: int) -> str:
        """Store the attempt's exit code and last log line; returns that line."""
        last = last_line(self.log_path(index, run))
        self.attempts[self.key(run)] = {"exit": code, "last": last, "log": str(self.log_path(index, run))}
        self.save()
        return last

    def failure(self, run: Run) -> str | None:
        """The last line of the run's latest attempt when it failed, else None. Stopped to be resumed (exit 75)
        or killed by a signal (a lost machine) is not a failure: the next sweep resumes it."""
        attempt = self.attempts.get(self.key(run))
        if attempt and attempt["exit"] > 0 and attempt["exit"] != EXIT_PREEMPTED:
            return f"exit {attempt['exit']}: {attempt['last']}"
        return None

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.attempts, indent=1) + "\n")
        os.replace(tmp, self.file)


def last_line(path: Path) -> str:
    """The last non-empty line of a log (a progress bar's carriage returns split lines too)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return lines[-1] if lines else ""
