"""scripts/run_cifar_mlkd.sh and scripts/run_imagenet_mlkd.sh issue DLKD's runs (its pairs, weights and
ImageNet recipe) under sh, dash, bash and ./, with a stand-in ``python`` on PATH recording its arguments;
every command they issue parses with train_student.py's own parser."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import after_prereq_check

import train_student

ROOT = Path(__file__).resolve().parents[1]
HOW = ["sh", "dash", "bash", "direct"]
# DLKD's scripts/run_cifar_mlkd.sh, (teacher, student) in its order
DLKD_PAIRS = [("vgg13", "vgg8"), ("wrn_40_2", "wrn_40_1"), ("wrn_40_2", "wrn_16_2"), ("resnet32x4", "resnet8x4"),
              ("resnet56", "resnet20"), ("resnet32x4", "ShuffleV2"), ("ResNet50", "MobileNetV2"),
              ("vgg13", "MobileNetV2"), ("wrn_40_2", "ShuffleV1"), ("resnet32x4", "ShuffleV1"), ("ResNet50", "vgg8")]
EXTRA = ["--epochs", "2", "--data_folder", "my data"]  # a space: extra arguments must stay whole

# Records its arguments (tab-separated, one call a line) in $CALLS_LOG; fails when one is $STANDIN_FAIL.
STANDIN = r"""#!/bin/sh
{ printf '%s' "${0##*/}"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$CALLS_LOG"
for a in "$@"; do
    if [ "$a" = "${STANDIN_FAIL:-}" ]; then exit 3; fi
done
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A checkout to run the scripts from: scripts/ linked, a recording ``python`` first on PATH."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STANDIN)
    (bin_dir / "python").chmod(0o755)
    return work


def run(how: str, tree: Path, script: str, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    if how == "direct":
        argv = [f"./{script}"]
    elif shutil.which(how) is None:
        pytest.skip(f"no {how} on this machine")
    else:
        argv = [how, script]
    log = tree.parent / "calls.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PATH_T", "STANDIN_FAIL", "GLOBAL_BATCH")}
    full_env = {**base, "PATH": f"{tree.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "CALLS_LOG": str(log),
                **env}
    proc = subprocess.run([*argv, *args], cwd=tree, env=full_env, capture_output=True, text=True, timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return proc, after_prereq_check(calls)


def cifar_call(teacher_file: str, student: str) -> list[str]:
    return ["python", "train_student.py", "--path_t", teacher_file, "--distill", "mlkd", "--model_s", student,
            "-r", "1", "-a", "50", "-b", "1", "-d", "20", "--trial", "1", *EXTRA]


@pytest.mark.parametrize("how", HOW)
def test_cifar_script_runs_dlkds_pairs_with_its_weights(tree, how):
    proc, calls = run(how, tree, "scripts/run_cifar_mlkd.sh", *EXTRA)
    assert proc.returncode == 0, proc.stderr
    assert calls == [cifar_call(f"./save/models/{t}_vanilla/ckpt_epoch_240.pth", s) for t, s in DLKD_PAIRS]
    # a teacher in DLKD's own format and place is preferred over RepDistiller's
    dlkd = tree / "save/models/resnet32x4_vanilla/resnet32x4.pth"
    dlkd.parent.mkdir(parents=True)
    dlkd.write_bytes(b"")
    proc, calls = run(how, tree, "scripts/run_cifar_mlkd.sh", *EXTRA)
    assert proc.returncode == 0, proc.stderr
    for (t, s), call in zip(DLKD_PAIRS, calls, strict=True):
        name = f"{t}.pth" if t == "resnet32x4" else "ckpt_epoch_240.pth"
        assert call == cifar_call(f"./save/models/{t}_vanilla/{name}", s)


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_cifar_script_stops_at_a_failing_run(tree, how):
    proc, calls = run(how, tree, "scripts/run_cifar_mlkd.sh", STANDIN_FAIL="wrn_16_2")
    assert proc.returncode != 0 and len(calls) == 3 and "wrn_16_2" in calls[-1]


def test_cifar_commands_parse_as_mlkd_with_dlkds_weights(tree):
    _, calls = run("sh", tree, "scripts/run_cifar_mlkd.sh")
    for call in calls:
        opt, spec = train_student.parse_option(call[2:])
        assert spec.name == "mlkd" and (opt.gamma, opt.alpha, opt.beta, opt.delta) == (1, 50, 1, 20)


TORCHRUN = ["python", "-m", "helper.torchrun", "--nnodes", "1", "--node_rank", "0", "--nproc_per_node", "8",
            "--master_addr", "127.0.0.1", "--master_port", "29500", "train_student.py"]


def imagenet_args(teacher: list[str], batch: str = "32", lr: str = "0.1", data: str = "./data/imagenet") -> list[str]:
    return [*teacher, "--model_t", "ResNet34", "--dataset", "imagenet", "--data_folder", data,
            "--model_s", "ResNet18", "--batch_size", batch, "--epochs", "120", "--learning_rate", lr,
            "--lr_decay_epochs", "30,60,90", "--lr_decay_rate", "0.1", "--weight_decay", "1e-4", "--momentum", "0.9",
            "--distill", "mlkd", "-r", "1", "-a", "20", "-b", "0.5", "-d", "10", "--trial", "1"]


@pytest.mark.parametrize("how", HOW)
def test_imagenet_script_runs_dlkds_recipe_through_torchrun(tree, how):
    proc, calls = run(how, tree, "scripts/run_imagenet_mlkd.sh", "--num_workers", "12")
    assert proc.returncode == 0, proc.stderr
    assert calls == [TORCHRUN + imagenet_args(["--teacher_weights", "torchvision"]) + ["--num_workers", "12"]]
    proc, calls = run(how, tree, "scripts/run_imagenet_mlkd.sh", PATH_T="/t/resnet34-333f7ec4.pth",
                      GLOBAL_BATCH="512", NPROC_PER_NODE="4", DATA="/data/my imagenet")
    assert proc.returncode == 0, proc.stderr
    [call] = calls
    assert call[call.index("--nproc_per_node") + 1] == "4"
    assert call[len(TORCHRUN):] == imagenet_args(["--path_t", "/t/resnet34-333f7ec4.pth"], batch="128", lr="0.2",
                                                 data="/data/my imagenet")


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_imagenet_script_refuses_a_batch_the_processes_do_not_divide(tree, how):
    proc, calls = run(how, tree, "scripts/run_imagenet_mlkd.sh", GLOBAL_BATCH="100")
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.strip() == "run_imagenet_mlkd.sh: GLOBAL_BATCH 100 is not a multiple of 8 processes"
    proc, calls = run(how, tree, "scripts/run_imagenet_mlkd.sh", STANDIN_FAIL="train_student.py")
    assert proc.returncode != 0 and len(calls) == 1


def test_imagenet_command_parses_as_mlkd_with_dlkds_weights(tree):
    _, [call] = run("sh", tree, "scripts/run_imagenet_mlkd.sh")
    opt, spec = train_student.parse_option(call[len(TORCHRUN):])
    assert spec.name == "mlkd" and (opt.gamma, opt.alpha, opt.beta, opt.delta) == (1, 20, 0.5, 10)
    assert (opt.epochs, opt.learning_rate, opt.weight_decay, opt.batch_size) == (120, 0.1, 1e-4, 32)
    assert list(opt.lr_decay_epochs) == [30, 60, 90]
