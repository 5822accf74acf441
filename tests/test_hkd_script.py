"""scripts/run_cifar_hkd.sh under sh (dash), bash and ./: SemCKD's two HKD passes, the second reading the
first's best checkpoint from the folder train_student.py gives that first run. A stand-in ``python`` first
on PATH records its arguments instead of training."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, after_prereq_check

from helper.naming import arch_from_path, student_run_name
from models import model_dict

SCRIPT = ROOT / "scripts" / "run_cifar_hkd.sh"
EXTRA = ["--epochs", "2", "--data_folder", "my data"]  # a space: the extra arguments must stay whole

# One call a line, arguments tab-separated; exits 3 when one of its arguments is $STANDIN_FAIL.
STANDIN = r"""#!/bin/sh
{ printf '%s' "${0##*/}"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$CALLS_LOG"
for a in "$@"; do
    if [ "$a" = "${STANDIN_FAIL:-}" ]; then exit 3; fi
done
"""


def run(tmp_path: Path, how: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(STANDIN)
    (bin_dir / "python").chmod(0o755)
    log.unlink(missing_ok=True)
    if how == "direct":
        argv = [str(SCRIPT)]
    else:
        shell = shutil.which(how)
        if shell is None:
            pytest.skip(f"no {how} on this machine")
        argv = [shell, str(SCRIPT)]
    base = {k: v for k, v in os.environ.items() if k not in ("TRIAL", "STANDIN_FAIL")}
    full_env = {**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS_LOG": str(log), **env}
    proc = subprocess.run([*argv, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return proc, after_prereq_check(calls)


def pass_1_folder(call: list[str]) -> str:
    """The run folder train_student.py names for this call (its teacher's architecture from the path)."""
    import train_student

    opt, _ = train_student.parse_option(call[2:])
    opt.model_t = arch_from_path(opt.path_t, list(model_dict))
    return student_run_name(opt)


@pytest.mark.parametrize("how", ["sh", "dash", "bash", "direct"])
def test_two_passes_second_reads_the_first(tmp_path, how):
    proc, calls = run(tmp_path, how, *EXTRA, TRIAL="7")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2
    pass_1, pass_2 = calls
    assert pass_1 == ["python", "train_student.py", "--path_t", "./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth",
                      "--distill", "pkt", "--model_s", "resnet8x4_double", "-r", "1", "-a", "1", "-b", "30000",
                      "--trial", "7", *EXTRA]
    folder = pass_1_folder(pass_1)
    assert folder == "S:resnet8x4_double_T:resnet32x4_cifar100_pkt_r:1.0_a:1.0_b:30000.0_7"
    auxiliary = f"./save/student_model/{folder}/resnet8x4_double_best.pth"
    assert pass_2 == ["python", "train_student.py", "--path_t", auxiliary, "--distill", "hkd", "--model_s", "resnet8x4",
                      "-r", "1", "-a", "1", "-b", "1", "--trial", "7", *EXTRA]
    assert arch_from_path(pass_2[3], list(model_dict)) == "resnet8x4_double"  # pass 2's teacher architecture


def test_default_trial_is_1(tmp_path):
    proc, calls = run(tmp_path, "sh")
    assert proc.returncode == 0, proc.stderr
    assert [c[c.index("--trial") + 1] for c in calls] == ["1", "1"]
    assert calls[1][3].endswith("_b:30000.0_1/resnet8x4_double_best.pth")


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_a_failing_first_pass_stops_the_script(tmp_path, how):
    proc, calls = run(tmp_path, how, STANDIN_FAIL="pkt")
    assert proc.returncode != 0 and len(calls) == 1


@pytest.mark.parametrize("arg", ["--trial", "--trial=3", "--dataset"])
def test_arguments_that_would_rename_pass_1_are_refused(tmp_path, arg):
    proc, calls = run(tmp_path, "sh", arg, "3")
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.startswith(f"run_cifar_hkd.sh: {arg} would rename") and len(proc.stderr.splitlines()) == 1
