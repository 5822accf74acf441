"""scripts/new_method.py: each kind's scaffold, written into a copy of the repository, trains with
train_student.py and passes its own test and the conformance suite; bad or taken names are one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

KINDS = ("logit", "feature", "hooks")
CONFORMANCE_PER_METHOD = 4  # one step on each of the two families, the checkpoint round trip, the compiled step


def repository_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "save", "data", "runs", "__pycache__",
                                                              ".pytest_cache", ".ruff_cache"))
    return copy


@pytest.mark.slow
def test_each_kind_trains_and_passes_its_test_and_the_conformance_suite(tmp_path):
    copy = repository_copy(tmp_path)
    for kind in KINDS:
        out = run_cli("scripts/new_method.py", [f"demo_{kind}", "--kind", kind, "--root", str(copy)], tmp_path).stdout
        assert f"wrote {copy / 'distiller_zoo'}" in out and f"test_method_demo_{kind}.py" in out
    text = (copy / "distiller_zoo" / "DemoFeature.py").read_text()
    assert "class DemoFeature(DistillMethod)" in text and 'name="demo_feature"' in text and "mymethod" not in text
    # in the copy: the generated tests (each trains one tiny epoch with train_student.py --distill demo_<kind>)
    # and every conformance check parametrised by the new names (compiling included; not the torchrun one)
    tests = [f"tests/test_method_demo_{kind}.py" for kind in KINDS]
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", *tests,
                           "tests/test_conformance.py", "-k", "demo_"], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    passed = int(re.search(r"(\d+) passed", proc.stdout).group(1))
    generated = sum(1 for t in tests for line in (copy / t).read_text().splitlines() if line.startswith("def test_"))
    assert passed == generated + CONFORMANCE_PER_METHOD * len(KINDS), proc.stdout[-2000:]


@pytest.mark.parametrize(("name", "message"), [
    ("kd", "--distill kd is taken by the registered method 'kd'"),
    ("at", "--distill at is taken by the registered method 'attention'"),  # an alias
    ("My-KD", "'My-KD' is not a method name"),
])
def test_bad_or_taken_names_are_one_line(tmp_path, name, message):
    proc = run_cli("scripts/new_method.py", [name, "--root", str(tmp_path)], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.rglob("*.py"))


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "distiller_zoo").mkdir()
    (tmp_path / "tests").mkdir()
    mine = tmp_path / "tests" / "test_method_fresh.py"
    mine.write_text("# mine\n")
    proc = run_cli("scripts/new_method.py", ["fresh", "--kind", "feature", "--root", str(tmp_path)], tmp_path,
                   check=False)
    assert proc.returncode == 2 and "test_method_fresh.py exists already" in proc.stderr
    assert mine.read_text() == "# mine\n" and not (tmp_path / "distiller_zoo" / "Fresh.py").exists()
