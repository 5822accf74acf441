"""scripts/: the run scripts issue RepDistiller's commands, and the teacher fetcher fails fast and
clearly offline, skips and checks files already present, and checks what it downloads."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, after_prereq_check, write_teacher

from distiller_zoo import get_method

SCRIPTS = ROOT / "scripts"
PUBLISHED = ["wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50"]
UNREACHABLE = "http://127.0.0.1:9/repo"  # the discard port: connection refused at once, no network needed


def fetch(cwd: Path, *names: str, url: str = UNREACHABLE) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEACHER_URL": url, "PYTHON": sys.executable, "CONNECT_TIMEOUT": "3",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["sh", str(SCRIPTS / "fetch_pretrained_teachers.sh"), *names], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def dest(root: Path, name: str) -> Path:
    return root / "save" / "models" / f"{name}_vanilla" / "ckpt_epoch_240.pth"


def fake_python_calls(tmp_path: Path, script: str, *args: str) -> list[list[str]]:
    """Run a run_*.sh script with a ``python`` on PATH that only records its arguments."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "$@" >> "$CALLS_LOG"\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS_LOG": str(log)}
    subprocess.run(["bash", str(SCRIPTS / script), *args], env=env, check=True, timeout=60, cwd=tmp_path)
    calls = [line.split() for line in log.read_text().splitlines()]
    return [call[1:] for call in after_prereq_check([["python", *call] for call in calls])]


def flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)


def test_fetch_fails_fast_with_one_line_per_file_when_offline(tmp_path):
    start = time.monotonic()
    proc = fetch(tmp_path)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(PUBLISHED), proc.stderr
    for name, line in zip(PUBLISHED, lines, strict=True):
        assert f": {name}: download of {UNREACHABLE}/{name}_vanilla/ckpt_epoch_240.pth failed" in line
    assert not [p for p in tmp_path.rglob("*") if p.is_file() or p.name.endswith("_vanilla")]  # nothing left


def test_fetch_skips_and_checks_a_file_already_present(tmp_path):
    path = write_teacher(tmp_path, "resnet56", num_classes=100)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    proc = fetch(tmp_path, "resnet56")
    assert proc.returncode == 0, proc.stderr
    assert "already present, loads into resnet56" in proc.stdout
    assert proc.stderr == ""
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_fetch_reports_a_present_file_that_does_not_load(tmp_path):
    wrong = write_teacher(tmp_path, "resnet20", num_classes=100)
    path = dest(tmp_path, "resnet56")
    path.parent.mkdir(parents=True)
    shutil.move(wrong, path)
    proc = fetch(tmp_path, "resnet56")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "resnet56" in line and "does not fit" in line and "remove it" in line
    assert path.is_file()  # the user's file is left alone


@pytest.mark.skipif(shutil.which("curl") is None, reason="file:// downloads need curl")
def test_fetch_checks_and_installs_a_download(tmp_path):
    mirror = tmp_path / "mirror"
    write_teacher(mirror, "resnet56", num_classes=100)
    work = tmp_path / "work"
    work.mkdir()
    proc = fetch(work, "resnet56", url=f"file://{mirror}/save/models")
    assert proc.returncode == 0, proc.stderr
    assert dest(work, "resnet56").read_bytes() == dest(mirror, "resnet56").read_bytes()
    assert not list(work.rglob("*.part"))


@pytest.mark.skipif(shutil.which("curl") is None, reason="file:// downloads need curl")
def test_fetch_removes_a_download_that_does_not_load(tmp_path):
    mirror = tmp_path / "mirror"
    wrong = write_teacher(mirror, "resnet20", num_classes=100)
    dest(mirror, "resnet56").parent.mkdir(parents=True)
    shutil.move(wrong, dest(mirror, "resnet56"))
    work = tmp_path / "work"
    work.mkdir()
    proc = fetch(work, "resnet56", url=f"file://{mirror}/save/models")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "does not load" in line and "does not fit" in line
    assert not dest(work, "resnet56").exists() and not list(work.rglob("*.part"))


def test_fetch_refuses_unknown_names(tmp_path):
    proc = fetch(tmp_path, "resnet8")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "not a published teacher" in line and "resnet32x4" in line


def test_check_teacher_accepts_a_teacher_that_fits(tmp_path):
    good = write_teacher(tmp_path, "resnet8", num_classes=100)
    ok = subprocess.run([sys.executable, str(SCRIPTS / "check_teacher.py"), str(good), "resnet8"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_check_teacher_refuses_in_one_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("check_teacher", SCRIPTS / "check_teacher.py")
    check_teacher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_teacher)
    good = write_teacher(tmp_path, "resnet8", num_classes=100)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:1000])
    cases = [[str(bad), "resnet8"], [str(good), "resnet14"], [str(good), "resnet8", "--num_classes", "10"],
             [str(tmp_path / "absent.pth"), "resnet8"], [str(good), "no_such_net"]]
    for args in cases:
        assert check_teacher.main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("check_teacher: ") and len(err.strip().splitlines()) == 1, err


def test_run_cifar_distill_issues_repdistillers_runs(tmp_path):
    calls = fake_python_calls(tmp_path, "run_cifar_distill.sh", "--epochs", "2")
    methods = [flag(call, "--distill") for call in calls][:14]  # RD's 14 lines first; more may be appended
    assert methods == ["kd", "hint", "attention", "similarity", "correlation", "vid", "rkd", "pkt",
                       "abound", "factor", "fsp", "nst", "crd", "crd"]
    for call in calls:
        assert call[0] == "train_student.py" and call[-2:] == ["--epochs", "2"]
        if flag(call, "--distill") == "dml":  # DML trains its resnet32x4 peer instead of loading a teacher
            assert "--path_t" not in call and flag(call, "--model_t") == "resnet32x4"
        else:
            assert flag(call, "--path_t") == "./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth"
        assert flag(call, "--model_s") == "resnet8x4" and flag(call, "--trial") == "1"
    weights = [tuple(float(flag(call, f)) for f in ("-r", "-a", "-b")) for call in calls[:14]]
    for method, w in zip(methods[:-1], weights[:-1], strict=True):
        spec = get_method(method).weights
        assert w == (spec.gamma, spec.alpha, spec.beta), method
    assert weights[-1] == (1.0, 1.0, 0.8)  # CRD+KD


def test_run_cifar_vanilla_trains_the_published_teachers(tmp_path):
    calls = fake_python_calls(tmp_path, "run_cifar_vanilla.sh", "--trial", "3")
    assert [flag(call, "--model") for call in calls] == PUBLISHED
    for call in calls:
        assert call[0] == "train_teacher.py" and call[-2:] == ["--trial", "3"]
        assert flag(call, "--epochs") == "240" and flag(call, "--learning_rate") == "0.05"
        assert flag(call, "--lr_decay_epochs") == "150,180,210" and flag(call, "--batch_size") == "64"
        assert flag(call, "--weight_decay") == "5e-4"


def test_benchmark_measures_both_configurations_in_rounds(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "--pairs", "kd:resnet8:resnet8", "--images", "512",
         "--steps", "2", "--warmup", "1", "--repeats", "2", "--device", "cpu"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = re.findall(r"^kd:resnet8:resnet8\s+(fast|reference)\s+(bf16|fp32)\s+(?:yes|no)\s+([\d.]+)", proc.stdout,
                      re.M)
    assert [config for config, _, _ in rows] == ["fast", "reference", "fast", "reference"]
    assert all(float(rate) > 0 for _, _, rate in rows)
    assert re.search(r"fast / reference = [\d.]+x \(medians of 2 and 2", proc.stdout)


def test_quickstart_runs_and_prints_the_three_accuracies(tmp_path):
    # A tree of links to the project, so the script's ./save is tmp_path/save, not the checkout's.
    for name in ("train_teacher.py", "train_student.py", "models", "distiller_zoo", "crd", "dataset", "helper",
                 "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PY": sys.executable, "EPOCHS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["sh", str(tmp_path / "scripts" / "quickstart.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = proc.stdout[proc.stdout.index("test accuracy on the synthetic set"):]
    # EPOCHS=1: the teacher's epoch over 5,000 images, twice as many for the students' 1,000
    for who in ("teacher resnet20 (5,000 images, 1 epoch):", "student resnet8 with KD (1,000 images, 2 epochs):",
                "student resnet8 alone (1,000 images, 2 epochs):"):
        assert re.search(re.escape(who) + r"\s+\d+\.\d\d \(best \d+\.\d\d\)", summary), summary
    assert "KD gain:" in summary
    assert (tmp_path / "save" / "models").is_dir()
