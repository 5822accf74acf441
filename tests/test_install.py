"""scripts/setup_env.sh for real: a fresh venv from the package index holds what training needs and none of
the test, figure or DALI packages (the quickstart must install on a laptop where DALI has no wheel).
It installs torch and its CUDA libraries, minutes of unpacking (226 s and 362 s on this project's 2 shared cores):
marked ``install``, so CI runs it and a quick local run can leave it out with -m 'not install'. pip's cache is
left on (a wheel fetched over the network is fetched once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"torch", "torchvision", "numpy", "scipy", "tensorboard", "pyyaml", "tqdm"}
NOT_IN_BASE = {"nvidia-dali-cuda120", "pytest", "matplotlib"}


@pytest.mark.install
def test_base_venv_has_the_training_packages_only(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup_env.sh", tmp_path / "scripts")
    for path in ROOT.glob("requirements*.txt"):
        shutil.copy(path, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PIP_NO_CACHE_DIR")}
    base_python = getattr(sys, "_base_executable", sys.executable)  # the interpreter, not this test's venv
    proc = subprocess.run(["sh", "scripts/setup_env.sh"], cwd=tmp_path, env={**env, "PYTHON": base_python},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    python = tmp_path / ".venv" / "bin" / "python"
    assert proc.stdout == f"{python}\n"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True, env=env)
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert NEEDED <= installed, NEEDED - installed
    assert not installed & NOT_IN_BASE
