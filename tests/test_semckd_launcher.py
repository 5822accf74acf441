"""SemCKD's ImageNet command line: hyphenated flags, --multiprocessing-distributed on the torchrun code path
(two gloo processes on CPU), the node's --batch_size split per process, and one-line launcher errors."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli, write_teacher
from PIL import Image
from test_distributed import CPU_RUN, free_port, metrics_of, torchrun, weights_of
from test_model_transform import load_script

import train_student
import train_teacher
from helper import options
from helper.errors import UserError
from helper.launcher import exit_status, gpu_list, launch, master_address, plan_launch

# SemCKD's README command for ImageNet, as typed.
SEED = shlex.split(
    "--path-t ./save/models/ResNet34_vanilla/resnet34_transformed.pth --batch_size 256 --epochs 90 "
    "--dataset imagenet --gpu_id 0,1,2,3,4,5,6,7 --dist-url tcp://127.0.0.1:23333 --print-freq 100 "
    "--num_workers 32 --distill semckd --model_s ResNet18 -r 1 -a 1 -b 50 --trial 0 --multiprocessing-distributed "
    "--learning_rate 0.1 --lr_decay_epochs 30,60 --weight_decay 1e-4 --dali gpu")


def replaced(args: list[str], values: dict[str, str | None]) -> list[str]:
    """``args`` with each flag's value replaced (``None``: the flag and its value dropped); new flags appended."""
    out = list(args)
    for flag, value in values.items():
        if flag in out:
            at = out.index(flag)
            out[at:at + 2] = [] if value is None else [flag, value]
        elif value is not None:
            out += [flag, value]
    return out


# --- the command line --------------------------------------------------------------------------------


def test_seed_command_parses_as_typed(monkeypatch):
    monkeypatch.setattr(options, "dali_installed", lambda: True)  # parsing does not need DALI itself
    opt, spec = train_student.parse_option(SEED)
    assert spec.name == "semckd"
    assert opt.path_t == "./save/models/ResNet34_vanilla/resnet34_transformed.pth"
    assert (opt.batch_size, opt.epochs, opt.num_workers, opt.print_freq) == (256, 90, 32, 100)
    assert (opt.gpu_id, opt.dist_url, opt.multiprocessing_distributed) == ("0,1,2,3,4,5,6,7", "tcp://127.0.0.1:23333",
                                                                             True)
    assert (opt.gamma, opt.alpha, opt.beta, opt.trial) == (1, 1, 50, "0")
    assert (opt.learning_rate, opt.lr_decay_epochs, opt.weight_decay, opt.dali) == (0.1, [30, 60], 1e-4, "gpu")
    assert (opt.world_size, opt.rank) == (1, 0)
    plan = plan_launch(opt, gpus_here=8)
    assert (plan.nproc, plan.world_size, plan.addr, plan.port, plan.on_gpu) == (8, 8, "127.0.0.1", 23333, True)


def test_every_long_flag_takes_both_spellings_and_help_lists_one():
    parser = options.OneLineParser(prog="t")
    parser.add_argument("--path_t")
    options.add_training_args(parser)
    options.add_launcher_args(parser)
    opt = parser.parse_args(["--path-t", "x", "--print-freq", "7", "--lr-decay-epochs", "3,4", "--no-channels-last",
                             "--multiprocessing-distributed", "--world-size", "2", "--gpu-id", "0,1", "--num-workers",
                             "3", "--dist_url", "tcp://h:1"])
    assert (opt.path_t, opt.print_freq, opt.lr_decay_epochs, opt.channels_last) == ("x", 7, [3, 4], False)
    assert (opt.multiprocessing_distributed, opt.world_size, opt.gpu_id, opt.num_workers) == (True, 2, "0,1", 3)
    assert parser.parse_args(["--channels-last"]).channels_last is True
    assert parser.parse_args(["--print", "5"]).print_freq == 5  # an abbreviation is not "ambiguous" with itself
    invocations = [re.split(r"\s{2,}", line.strip())[0] for line in parser.format_help().splitlines()
                   if line.startswith("  -")]  # "--dist_url DIST_URL", "--channels_last, --no-channels_last"
    listed = [word for text in invocations for word in text.replace(",", " ").split() if word.startswith("--")]
    assert "--path_t" in listed and "--print_freq" in listed and "--dist_url" in listed
    assert not [flag for flag in listed if "-" in flag[2:] and not flag.startswith("--no-")], listed
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("script", [train_student, train_teacher])
def test_both_scripts_take_semckd_spellings(script, monkeypatch):
    monkeypatch.setattr(options, "dali_installed", lambda: True)
    args = ["--print-freq", "9", "--multiprocessing-distributed", "--dist-url", "tcp://127.0.0.1:1", "--dali", "cpu"]
    args += ["--path-t", "t.pth"] if script is train_student else ["--model", "resnet8"]
    parsed = script.parse_option(args)
    opt = parsed[0] if isinstance(parsed, tuple) else parsed
    assert (opt.print_freq, opt.multiprocessing_distributed, opt.dali) == (9, True, "cpu")


def test_process_counts_and_addresses():
    def opt(**kw):
        base = {"gpu_id": None, "device": "auto", "dist_backend": None, "nproc_per_node": None, "world_size": 1,
                "rank": 0, "dist_url": "tcp://10.0.0.1:29500"}
        return type("Opt", (), {**base, **kw})

    assert plan_launch(opt(gpu_id="2,3"), gpus_here=4).nproc == 2  # one per listed GPU (SemCKD)
    assert plan_launch(opt(), gpus_here=4).nproc == 4  # every visible GPU
    assert plan_launch(opt(gpu_id="0,1,2"), gpus_here=0).nproc == 3  # no GPU: the list counts CPU processes
    assert plan_launch(opt(gpu_id="0,1,2", nproc_per_node=2), gpus_here=0).nproc == 2
    assert plan_launch(opt(), gpus_here=0).nproc == 1
    two_nodes = plan_launch(opt(gpu_id="0,1,2,3", world_size=2, rank=1), gpus_here=8)
    assert (two_nodes.world_size, two_nodes.node_rank, two_nodes.addr, two_nodes.port) == (8, 1, "10.0.0.1", 29500)
    assert not plan_launch(opt(device="cpu"), gpus_here=8).on_gpu
    assert gpu_list("0, 1,3") == [0, 1, 3] and gpu_list(None) == []
    assert master_address("tcp://[::1]:23333") == ("::1", 23333)
    assert exit_status([0, 1, 2, -15]) == 2 and exit_status([1, -15]) == 1 and exit_status([-15, 0]) == 143


@pytest.mark.parametrize(("args", "message"), [
    (["--multiprocessing-distributed", "--dist-url", "http://h:1"], "must be tcp://host:port"),
    (["--multiprocessing-distributed", "--gpu_id", "0,x"], "is not a comma-separated list of GPU numbers"),
    (["--world-size", "2"], "--world_size starts processes only with --multiprocessing_distributed"),
    (["--multiprocessing-distributed", "--world-size", "2", "--rank", "2"], "--rank (this node's) must be in 0 .. 1"),
    (["--gpu_id", "0,1"], "--gpu_id lists 2 GPUs: add --multiprocessing_distributed"),
    (["--multiprocessing-distributed", "--dist-backend", "nccl", "--device", "cpu"], "nccl needs GPUs"),
    (["--multiprocessing-distributed", "--nproc_per_node", "4", "--device", "cpu", "--batch_size", "2"],
     "--batch_size 2 is the node's under --multiprocessing_distributed: at least one image for each of its 4"),
])
def test_launcher_mistakes_stop_before_any_process_starts(args, message):
    """One line each (run_cli prints a UserError as ``train_student.py: error: ...``), nothing started."""
    opt, _ = train_student.parse_option(["--path_t", "t.pth", *args])
    with pytest.raises(UserError, match=re.escape(message)) as error:
        launch(opt, train_student.main, None)
    assert "\n" not in str(error.value)


def test_multiprocessing_distributed_under_torchrun_is_one_line(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")  # what torchrun sets in its workers
    opt, _ = train_student.parse_option(["--path_t", "t.pth", "--multiprocessing-distributed"])
    with pytest.raises(UserError, match="run the script with python, not under torchrun"):
        launch(opt, train_student.main, None)


# --- two gloo processes, as torchrun's ------------------------------------------------------------------


def seed_setup(folder: Path) -> None:
    """What the seed command expects in its folder: ./data as a tiny 2-class ImageNet, and the teacher file
    that scripts/model_transform.py makes from torchvision's resnet34 file (torchvision's untrained network)."""
    import torchvision

    source = folder / "save" / "models" / "ResNet34_vanilla" / "resnet34-333f7ec4.pth"
    source.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet34(num_classes=2).state_dict(), source)
    assert load_script().main([str(source)]) == 0
    for split, count in (("train", 4), ("val", 1)):
        for cls in range(2):
            (folder / "data" / split / f"n0{cls}").mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 30), (90 * cls, 50 * i, 70)).save(folder / "data" / split / f"n0{cls}" /
                                                                         f"{i}.JPEG")


def test_seed_command_starts_on_cpu_and_trains_as_torchrun_does(tmp_path):
    """SemCKD's README command on a CPU machine: one step on a tiny ImageFolder in ./data. Changed for a 2-core
    test: two processes (--gpu_id 0,1, so two gloo processes) at --batch_size 8 (4 each, SemCKD's least), 72 px,
    one epoch, no loader workers, --device cpu --precision fp32, a seed; --dali gpu needs a GPU
    (tests/test_dali.py runs DALI's CPU pipeline).

    torchrun with two processes at --batch_size 4 runs the same flags without the launcher's: both are the
    same code path (shards, seeds, all-reduces), so the weights and metrics are the same, bit for bit up to
    1e-6. Only rank 0 prints; the run's config.json records the node's batch (a repeat splits it again),
    each process trained on 4."""
    args = replaced(SEED, {"--gpu_id": "0,1", "--batch_size": "8", "--epochs": "1", "--num_workers": "0",
                           "--dali": None, "--device": "cpu", "--precision": "fp32", "--image_size": "72",
                           "--seed": "3", "--dist-url": f"tcp://127.0.0.1:{free_port()}"})
    by_launcher, by_torchrun = tmp_path / "launcher", tmp_path / "torchrun"
    for folder in (by_launcher, by_torchrun):
        seed_setup(folder)
    stdout = run_cli("train_student.py", args, by_launcher).stdout
    assert "starting 2 CPU (gloo) processes" in stdout and "device cpu, precision fp32" in stdout
    for line in ("teacher accuracy", "epoch 1, total time", "best accuracy"):
        assert stdout.count(line) == 1, f"{line!r} printed {stdout.count(line)} times:\n{stdout}"
    (row,) = metrics_of(by_launcher)
    assert row["epoch"] == 1 and "skipped_steps" not in row  # the step was taken (semckd skips small batches)
    (run,) = by_launcher.glob("save/student_model/S:ResNet18_T:ResNet34_imagenet_semckd_r:*_0")
    record = json.loads((run / "config.json").read_text())
    assert (record["options"]["batch_size"], record["world_size"]) == (8, 2)
    assert torch.load(run / "ResNet18_last.pth", map_location="cpu", weights_only=False)["opt"]["batch_size"] == 4

    plain = [arg for arg in args if arg != "--multiprocessing-distributed"]
    torchrun(str(ROOT / "train_student.py"), replaced(plain, {"--gpu_id": None, "--dist-url": None,
                                                             "--batch_size": "4"}), by_torchrun)
    expected, got = weights_of(by_torchrun, "ResNet18"), weights_of(by_launcher, "ResNet18")
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6, msg=key)
    for key in ("loss", "train_acc", "test_acc", "test_loss"):
        assert row[key] == pytest.approx(metrics_of(by_torchrun)[0][key], rel=1e-6), key


def test_worker_failure_is_one_line_and_the_launcher_exit_status(tmp_path):
    """Rank 0's one-line error (no data) stops every worker: rank 1, waiting for rank 0 to read the data first,
    learns its error and exits with it in silence (no gloo traceback); the launcher exits with the status."""
    teacher = write_teacher(tmp_path, "resnet20", num_classes=2)
    proc = run_cli("train_student.py", ["--path_t", str(teacher), "--dataset", "imagenet", "--data_folder",
                                        str(tmp_path / "nothing"), *CPU_RUN, "--multiprocessing-distributed",
                                        "--nproc_per_node", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"],
                   tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("train_student.py: error: imagenet: no images found")


def test_port_in_use_is_one_line_before_any_process_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        opt, _ = train_student.parse_option(["--path_t", "t.pth", "--multiprocessing-distributed", "--device", "cpu",
                                             "--dist-url", f"tcp://127.0.0.1:{port}"])
        with pytest.raises(UserError, match=f"cannot listen on port {port} here .*pass a free port") as error:
            launch(opt, train_student.main, None)
    assert "\n" not in str(error.value)


# In each process the launcher starts (RANK is set once it runs): rank 1 sends itself SIGTERM at its 2nd step.
SIGTERM_RANK1 = """
import os, signal
from helper import objectives

_calls = {"n": 0}
_step = objectives.DistillObjective.__call__


def _counting_step(self, batch):
    _calls["n"] += 1
    if os.environ.get("RANK") == "1" and _calls["n"] == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return _step(self, batch)


objectives.DistillObjective.__call__ = _counting_step
"""


def test_sigterm_to_one_worker_then_resume_writes_the_uninterrupted_metrics(tmp_path):
    """The interrupted epoch's row is summed from every rank's running sums: each rank's part before the stop
    is saved in the mid-epoch checkpoint and restored on that rank, so the row equals an uninterrupted run's
    (only the epoch's time differs). Restoring rank 0's sums on every rank counted them twice."""
    teacher = write_teacher(tmp_path, "resnet20")
    args = [*TINY_DATA, "--path_t", str(teacher), "--model_s", "resnet8", "--epochs", "1", "--seed", "3",
            "--multiprocessing-distributed", "--nproc_per_node", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    run_cli("train_student.py", args, whole)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SIGTERM_RANK1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train_student.py"), *args], cwd=stopped, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "at epoch 1, step 2" in proc.stdout
    run_cli("train_student.py", [*args, "--resume", "auto"], stopped)

    def rows(folder: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.endswith("time")} for row in metrics_of(folder)]

    assert rows(stopped) == rows(whole)
