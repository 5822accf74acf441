"""scripts/sweep.py: runs listed from our scripts, YAML grids and presets, with their run folders and states;
the local executor on CPU slots (dependencies, skipping, resuming, failures); the report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_DATA
from test_shell_scripts import run as run_with_standin
from test_shell_scripts import tree  # noqa: F401  (the fixture: a checkout with stand-in pythons)

from sweep.cli import main
from sweep.grid import grid_calls
from sweep.presets import preset_calls
from sweep.report import off_published
from sweep.runs import describe
from sweep.script import script_calls

RUN_SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").glob("run_*.sh"))
TINY = [*TINY_DATA, "--epochs", "1", "--seed", "0"]


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_from_script_lists_the_scripts_own_python_calls(tree, script):  # noqa: F811
    """The same argument lists, in the same order, as the script gives python when it runs (extra args too),
    less the script's prerequisite check (scripts/check_prereqs.py), which is not a run."""
    extra = ["--epochs", "2", "--data_folder", "my data"]
    proc, calls = run_with_standin("sh", tree, script, *extra)
    assert proc.returncode == 0, proc.stderr
    python = [call[1:] for call in calls if call[0] in ("python", "python3")]
    expected = [args for args in python if Path(args[0]).name != "check_prereqs.py"]
    listed = [args for _, args in script_calls(ROOT / script, extra)]
    assert listed == expected and listed


def test_from_script_dry_run_lists_the_44_runs_with_distinct_folders(capsys):
    assert main(["--from-script", str(ROOT / "scripts/run_cifar_distill.sh"), "--slots", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "44 runs: 0 done, 0 partial, 0 failed, 44 new" in out
    folders = [line.split()[3] for line in out.splitlines() if line.startswith("#")]
    assert len(folders) == len(set(folders)) == 44
    assert folders[0].endswith("save/student_model/S:resnet8x4_T:resnet32x4_cifar100_kd_r:0.1_a:0.9_b:0.0_1")


def test_a_bad_script_line_is_one_line_naming_it(tmp_path, capsys):
    script = tmp_path / "bad.sh"
    script.write_text("#!/bin/sh\npython train_student.py --distill nosuch --path_t t.pth\n")
    with pytest.raises(SystemExit) as exc:
        from helper.errors import run_cli

        run_cli(main, ["--from-script", str(script), "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.sh, run 1" in err and "nosuch" in err


def test_grid_expands_methods_pairs_trials_datasets_with_registry_weights(tmp_path):
    spec = {"datasets": ["cifar100", "cifar10"], "trials": 2, "args": "--epochs 3",
            "pairs": [{"teacher": "resnet32x4", "student": "resnet8x4",
                       "path_t": "./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth"},
                      {"teacher": "resnet56", "student": "resnet20"}],
            "methods": ["kd", {"distill": "crd", "r": 1, "a": 1, "b": 0.8, "args": ["--nce_k", "4096"]}]}
    calls = grid_calls(spec, tmp_path)
    assert len(calls) == 2 + 2 * 2 * 2 * 2  # a teacher per data set for the pair without path_t, then 16 students
    runs = [describe(args, cwd) for cwd, args in calls]
    assert [r.entry for r in runs[:2]] == ["train_teacher.py"] * 2
    names = [r.folder.name for r in runs[2:]]
    assert "S:resnet8x4_T:resnet32x4_cifar100_kd_r:0.1_a:0.9_b:0.0_2" in names  # the registry's KD weights
    assert "S:resnet20_T:resnet56_cifar10_crd_r:1.0_a:1.0_b:0.8_1" in names
    crd = next(args for _, args in calls if "crd" in args and "resnet56" in args)
    assert crd[crd.index("--nce_k") + 1] == "4096" and crd[crd.index("--epochs") + 1] == "3"
    teacher = runs[0].folder
    student = next(r for r in runs if r.folder.name.startswith("S:resnet20_T:resnet56_cifar100"))
    assert student.inputs == [teacher / "resnet56_last.pth"]


def test_presets_expand_to_the_published_pairs_and_weights(tmp_path):
    crd = [args for _, args in preset_calls("crd-cifar100", 2, [], tmp_path)]
    teachers = [a for a in crd if a[0] == "train_teacher.py"]
    assert {a[a.index("--model") + 1] for a in teachers} == {"wrn_40_2", "resnet56", "resnet110", "resnet32x4",
                                                             "vgg13", "ResNet50"}
    assert crd[:len(teachers)] == teachers  # teachers first

    def cell(teacher, student, distill, trial="1"):
        return [a for a in crd if a[0] == "train_student.py" and a[a.index("--model_t") + 1] == teacher
                and a[a.index("--model_s") + 1] == student and a[a.index("--distill") + 1] == distill
                and a[a.index("--trial") + 1] == trial]

    kd = cell("vgg13", "MobileNetV2", "kd", "2")
    assert len(kd) == 1 and kd[0][kd[0].index("-r") + 1:kd[0].index("-r") + 6] == ["0.1", "-a", "0.9", "-b", "0"]
    crd_cells = cell("resnet32x4", "resnet8x4", "crd")
    assert sorted(a[a.index("-a") + 1] for a in crd_cells) == ["0", "1"]  # CRD and CRD+KD, -b 0.8 both
    assert all(a[a.index("-b") + 1] == "0.8" for a in crd_cells)
    assert cell("resnet32x4", "resnet8x4", "attention")[0][-6:-2] == ["-a", "0", "-b", "1000"]
    assert not cell("wrn_40_2", "ShuffleV1", "fsp")  # RepDistiller reports no FSP across architectures
    md = [args for _, args in preset_calls("mdistiller-cifar100", 1, [], tmp_path)]
    students = [a for a in md if a[0] == "train_student.py"]
    assert len(students) == 12 * 4 and sum("dot" in a for a in students) == 12
    zoo = [args for _, args in preset_calls("kdzoo", 2, [], tmp_path)]
    assert len(zoo) == 2 * 46 and zoo[46][zoo[46].index("--trial") + 1] == "2"


def _sweep(capsys, workdir: Path, *args: str) -> tuple[int, str]:
    """sweep.py in this process (its runs are processes of their own): exit code and what it printed."""
    capsys.readouterr()
    code = main(["--workdir", str(workdir), *args])
    return code, capsys.readouterr().out


def _grid(tmp_path: Path, **extra) -> Path:
    import yaml

    spec = {"name": "t", "args": TINY, "teacher_args": ["--model", "resnet8"]} | extra
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_local_slots_teacher_first_failure_reported_done_skipped(tmp_path, capsys):
    """4 runs (a teacher, 3 students of it) on 2 slots; a rerun skips them. Then two runs whose teacher file
    is missing: both reported with their last line, neither stops the other."""
    grid = _grid(tmp_path, trials=3, pairs=[{"teacher": "resnet8", "student": "resnet8"}], methods=["kd"])
    work = tmp_path / "w"
    work.mkdir()
    code, out = _sweep(capsys, work, "--grid", str(grid), "--slots", "2")
    assert code == 0, out
    assert "4/4 done" in out
    events = [line.split("| ")[1] for line in out.splitlines() if "| " in line]
    assert events[0].startswith("start #1 resnet8_synthetic")  # the teacher alone first: its students need it
    assert events[1].startswith("done #1")
    assert _sweep(capsys, work, "--grid", str(grid), "--dry-run")[1].count("4 runs: 4 done, 0 partial") == 1
    code, out = _sweep(capsys, work, "--grid", str(grid), "--slots", "2")
    assert code == 0 and "start #" not in out and out.count("skipped (done)") == 4
    code, out = _sweep(capsys, work, "--grid", str(grid), "--report")
    assert code == 0 and "S:resnet8" not in out  # summarize's table: one group of 3 trials, not run folders
    row = next(line for line in out.splitlines() if line.startswith("| resnet8 | resnet8 | synthetic | kd"))
    assert "(3)" in row and "| published |" in out and "Against the published figures (0 of 2 cells have" in out

    bad = _grid(tmp_path, trials=["x"], methods=["kd", "attention"],
                pairs=[{"teacher": "resnet8", "student": "resnet8", "path_t": "missing/resnet8_last.pth"}])
    code, out = _sweep(capsys, work, "--grid", str(bad), "--name", "bad", "--slots", "2")
    assert code == 1
    assert out.count("FAILED") == 2 and "missing/resnet8_last.pth" in out
    out = _sweep(capsys, work, "--grid", str(bad), "--name", "bad", "--dry-run")[1]
    assert "2 failed" in out and "exit 2:" in out  # reported with its last line, not started again


def test_sigkilled_run_is_resumed_to_the_same_weights(tmp_path, capsys):
    """One intra-op thread each (--threads 1): what makes CPU runs repeat bit for bit."""
    grid = _grid(tmp_path, pairs=[{"teacher": "resnet8", "student": "resnet8"}], methods=["kd"],
                 args=[*TINY, "--epochs", "3"], teacher_args=["--model", "resnet8", "--epochs", "1"])
    reference, killed = tmp_path / "ref", tmp_path / "killed"
    for work in (reference, killed):
        work.mkdir()
    assert _sweep(capsys, reference, "--grid", str(grid), "--threads", "1")[0] == 0
    # the teacher, then the student's own command, SIGKILLed once it has written its first checkpoint
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    teacher_cmd, student_cmd = [_command(killed, grid, i) for i in (0, 1)]
    subprocess.run(teacher_cmd, cwd=killed, env=env, check=True, capture_output=True)
    proc = subprocess.Popen(student_cmd, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = describe(student_cmd[1:], killed).folder
    deadline = time.time() + 120
    while not (folder / "ckpt_last.pth").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "results.json").exists()
    assert "partial resume" in _sweep(capsys, killed, "--grid", str(grid), "--dry-run")[1]
    code, out = _sweep(capsys, killed, "--grid", str(grid), "--threads", "1")
    assert code == 0 and "resume #2" in out
    weights = [torch.load(next(w.glob("save/student_model/S:*/resnet8_last.pth")), weights_only=True)["model"]
               for w in (reference, killed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _command(workdir: Path, grid: Path, index: int) -> list[str]:
    from sweep.grid import read_grid

    spec = read_grid(grid)
    spec.pop("name")
    cwd, args = grid_calls(spec, workdir)[index]
    return describe(args, cwd).command()


SLURM_FLAGS = ["--partition", "gpu", "--gpus-per-node", "2", "--timeout-min", "600", "--mem", "32G",
               "--cpus-per-task", "8", "--account", "lab", "--qos", "high", "--constraint", "a100",
               "--slurm", "exclude=node7"]


def test_slurm_sbatch_script_carries_the_flags(tmp_path):
    pytest.importorskip("submitit")
    from sweep.cli import parse_args
    from sweep.slurm import sbatch_text

    args, _ = parse_args(["--preset", "kdzoo", "--executor", "slurm", *SLURM_FLAGS])
    text = sbatch_text(args, "kdzoo", tmp_path, runs=46)
    for line in ["--partition=gpu", "--gpus-per-node=2", "--time=600", "--mem=32G", "--cpus-per-task=8",
                 "--account=lab", "--qos=high", "--constraint=a100", "--exclude=node7", "--array=0-45%46",
                 "--signal=USR2@90", "--job-name=sweep_kdzoo"]:
        assert f"#SBATCH {line}\n" in text, line


def test_slurm_without_submitit_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    from helper.errors import run_cli

    with pytest.raises(SystemExit) as exc:
        run_cli(main, ["--from-script", str(ROOT / "scripts/run_cifar_hkd.sh"), "--executor", "slurm", "--dry-run"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("error: --executor slurm needs submitit: pip install -r requirements-slurm.txt")


def test_slurm_preempted_run_requeues_and_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch):
    """submitit's local executor: the student's job is signalled as Slurm signals a preempted job; its run
    stops at a checkpoint (exit 75), the task is requeued and resumes; the weights equal an uninterrupted run's."""
    submitit = pytest.importorskip("submitit")
    from sweep.cli import parse_args
    from sweep.slurm import SweepTask, make_executor

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(Path(submitit.__file__).parents[1])]))
    grid = _grid(tmp_path, pairs=[{"teacher": "resnet8", "student": "resnet8"}], methods=["kd"],
                 args=[*TINY, "--epochs", "3", "--syn_train_size", "1024"],
                 teacher_args=["--model", "resnet8", "--epochs", "1"])
    reference, preempted = tmp_path / "ref", tmp_path / "preempted"
    for work in (reference, preempted):
        work.mkdir()
    assert _sweep(capsys, reference, "--grid", str(grid), "--threads", "1")[0] == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    teacher_cmd, student_cmd = [_command(preempted, grid, i) for i in (0, 1)]
    subprocess.run(teacher_cmd, cwd=preempted, env=env, check=True, capture_output=True)
    run = describe(student_cmd[1:], preempted)
    args, _ = parse_args(["--grid", str(grid), "--executor", "slurm", "--cluster", "local", "--timeout-min", "30"])
    executor = make_executor(tmp_path / "slurm", args, "t")
    log = tmp_path / "student.log"
    job = executor.submit(SweepTask(run, log, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    deadline = time.time() + 180
    while not (run.folder / "ckpt_last.pth").exists():
        assert not job.done() and time.time() < deadline, job.stderr()
        time.sleep(0.05)
    # Slurm signals a job's tasks (--signal=USR2@90) on preemption or near its time limit; submitit's local
    # executor runs the task as a child of its controller process
    controller = job._process.pid
    task = int(Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0])
    os.kill(task, signal.SIGUSR2)
    job.result()
    text = log.read_text()
    assert "exit 75" in job.stderr() or "resume" in text, job.stderr()
    assert "# start:" in text and "# resume:" in text and text.index("# start:") < text.index("# resume:")
    weights = [torch.load(next(w.glob("save/student_model/S:*/resnet8_last.pth")), weights_only=True)["model"]
               for w in (reference, preempted)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_report_marks_cells_off_the_published_figure():
    one = {"n": 1, "published_diff": -1.5, "published_metric": "last", "last_std": None}
    assert off_published(one) == "-1.50 points with one trial"
    assert off_published(one | {"published_diff": 0.9}) is None
    three = {"n": 3, "published_diff": 0.8, "published_metric": "best", "best_std": 0.5, "last_std": 0.1}
    assert off_published(three) is None  # within 2 std of the best-epoch figure it is compared with
    assert off_published(three | {"published_diff": -1.2}) == "-1.20 points, 2.4 std"
    assert off_published({"n": 2, "published_diff": None}) is None
