"""``config.json`` in every run folder: the resolved options and what ran them, readable and re-runnable.

``--config <run>/config.json`` repeats a run (its ``options`` section is read); ``scripts/summarize.py``
reads the rest (teacher accuracy, code version, device).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torchvision

from helper.checkpoint import atomic_text
from helper.setup import Runtime

CONFIG_FILE = "config.json"
# Where a run writes, derived from the options rather than given: kept apart from them.
RUN_PATH_KEYS = ("model_path", "tb_path", "model_name", "save_folder", "tb_folder")
ROOT = Path(__file__).resolve().parents[1]


def code_version(root: Path = ROOT) -> dict[str, Any] | None:
    """The git commit of this checkout and whether tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=20).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"git_commit": commit, "dirty": dirty}


def run_config(opt: argparse.Namespace, *, device: str, precision: str, world_size: int,
               teacher: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that decides a run's outcome, as plain JSON data."""
    values = vars(opt)
    return {
        "options": {k: v for k, v in values.items() if k not in RUN_PATH_KEYS and k != "config"},
        "run": {k: values[k] for k in RUN_PATH_KEYS if k in values} | {"config_file": values.get("config")},
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "code": code_version(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__},
        "device": device, "precision": precision, "world_size": world_size,
        "teacher": teacher,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256: which teacher a run learnt from, whatever its file is called or wherever it moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_run_config(opt: argparse.Namespace, rt: Runtime, folder: Path, resumed: bool,
                    teacher: dict[str, Any] | None = None, teacher_file: str | Path | None = None) -> None:
    """Rank 0 writes it when a run starts; a resumed run keeps the record of its start (older folders gain one).
    ``teacher_file`` (the weights the teacher was loaded from) is recorded with its SHA-256, hashed here, once
    per run, by the one process that writes the record."""
    path = Path(folder) / CONFIG_FILE
    if not rt.info.is_main or (resumed and path.exists()):
        return
    if teacher is not None and teacher_file is not None:
        teacher = {**teacher, "file": str(teacher_file), "sha256": file_sha256(teacher_file)}
    record = run_config(opt, device=str(rt.device), precision=rt.precision, world_size=rt.info.world_size,
                        teacher=teacher)
    atomic_text(path, json.dumps(record, indent=1, default=str) + "\n")
