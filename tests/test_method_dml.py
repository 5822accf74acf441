"""DML: the loss by hand, one step equal to KD-Zoo's two updates, both networks trained, evaluated, saved,
resumed and averaged under DDP; --init_s and --path_t initialise the student and the peer."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_cli
from method_checks import build_method, nets
from test_distributed import CPU_RUN, image_folder, torchrun, weights_of

import train_student
from distiller_zoo import DML
from distiller_zoo.registry import DistillMethod, Weights, get_method
from helper.checkpoint import load_strict
from helper.errors import run_cli as run_main
from helper.objectives import DistillObjective
from helper.peer import TrainedPeer
from models import build_model

SYN4 = ["--dataset", "synthetic", "--syn_classes", "4", "--num_workers", "0", "--device", "cpu",
        "--precision", "fp32", "--save_freq", "100"]


def dml_by_hand(out1: list[list[float]], out2: list[list[float]], T: float = 1.0) -> float:
    """sum_k p2 (log p2 - log p1) at temperature T, averaged over rows, times T^2 (explicit loops)."""
    total = 0.0
    for row1, row2 in zip(out1, out2, strict=True):
        z1 = sum(math.exp(v / T) for v in row1)
        z2 = sum(math.exp(v / T) for v in row2)
        for a, b in zip(row1, row2, strict=True):
            p1, p2 = math.exp(a / T) / z1, math.exp(b / T) / z2
            total += p2 * (math.log(p2) - math.log(p1))
    return total / len(out1) * T * T


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_loss_matches_hand_computation(T):
    torch.manual_seed(0)
    out1, out2 = torch.randn(3, 5) * 2, torch.randn(3, 5) * 2
    got = DML(T)(out1, out2).item()
    assert math.isclose(got, dml_by_hand(out1.tolist(), out2.tolist(), T), rel_tol=1e-5)
    assert DML().T == 1.0  # KD-Zoo's DML() takes no argument
    assert DML()(out1, out1).abs().item() < 1e-6


def _kl(target_logits, logits, T: float):
    """KL(softmax(target/T) || softmax(logits/T)) per row, averaged, times T^2."""
    p = F.softmax(target_logits / T, dim=1)
    return (p * (F.log_softmax(target_logits / T, dim=1) - F.log_softmax(logits / T, dim=1))).sum(1).mean() * T * T


def test_one_step_gives_each_network_its_own_loss_gradient_as_kd_zoo():
    """The objective's single backward equals KD-Zoo's two: net 1 on CE + a KD + b DML towards the detached
    net 2, net 2 the same towards the detached net 1 (from the same forward)."""
    student, peer = nets("resnet8", "resnet8")
    r, a, b, kd_T = 0.7, 0.3, 1.5, 4.0
    method = build_method("dml", student, peer, gamma=r, alpha=a, beta=b, model_t="resnet8")
    assert {id(p) for p in method.main_parameters()} == {id(p) for p in peer.parameters()}
    reference1, reference2 = copy.deepcopy(student), copy.deepcopy(peer)
    objective = DistillObjective(student, TrainedPeer(peer), method, get_method("dml"), Weights(r, a, b), kd_T,
                                 nullcontext)
    objective.train_mode()
    assert student.training and peer.training
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    logits, terms, total = objective([x, y])
    assert set(terms) == {"cls", "div", "kd", "peer_cls", "peer_div", "peer_kd"}
    total.backward()

    reference1.train(), reference2.train()
    out1, out2 = reference1(x), reference2(x)
    assert torch.allclose(logits, out1, atol=1e-6)
    loss1 = r * F.cross_entropy(out1, y) + a * _kl(out2.detach(), out1, kd_T) + b * _kl(out2.detach(), out1, 1.0)
    loss2 = r * F.cross_entropy(out2, y) + a * _kl(out1.detach(), out2, kd_T) + b * _kl(out1.detach(), out2, 1.0)
    loss1.backward()
    loss2.backward()
    assert math.isclose(total.item(), loss1.item() + loss2.item(), rel_tol=1e-5)
    for trained, expected in ((student, reference1), (peer, reference2)):
        for (name, p), q in zip(trained.named_parameters(), expected.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_spec_defaults_hook_and_bad_temperature():
    spec = get_method("dml")
    assert spec.weights == Weights(1.0, 0.0, 1.0) and spec.trains_peer and not spec.uses_features
    student, peer = nets("resnet8", "resnet14")
    method = build_method("dml", student, peer, gamma=1.0, alpha=0.0, beta=1.0, model_t="resnet14")
    assert method.criterion.T == 1.0 and method.extra_weights == {"peer_cls": 1.0, "peer_div": 0.0, "peer_kd": 1.0}
    (entry,) = method.peer_networks()
    assert (entry.name, entry.arch) == ("peer", "resnet14") and entry.module is peer
    assert DistillMethod().peer_networks() == []
    with pytest.raises(ValueError, match="--dml_T must be positive"):
        build_method("dml", student, peer, gamma=1.0, alpha=0.0, beta=1.0, model_t="resnet14", dml_T=0.0)


def test_a_peer_method_needs_model_t_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_student.parse_option([*SYN4, "--distill", "dml"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--model_t" in err, err


# ----- through train_student.py --------------------------------------------------------------------

def write_init(path: Path, arch: str, seed: int, bare: bool = False) -> dict:
    """A freshly initialised model, as train_teacher.py --save_init writes it (or a bare state_dict)."""
    torch.manual_seed(seed)
    state = build_model(arch, 4).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if bare else {"model": state, "arch": arch}, path)
    return state


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory):
    """Two epochs of DML, resnet8 with a resnet8 peer (same architecture: their files must not clash),
    the student from --init_s and the peer from --path_t. 4 classes, 512 images, 32 steps an epoch."""
    work = tmp_path_factory.mktemp("learning")
    write_init(work / "init/student.pth", "resnet8", 1)
    write_init(work / "init/peer.pth", "resnet8", 2)
    proc = run_cli("train_student.py", [
        *SYN4, "--syn_train_size", "512", "--syn_val_size", "64", "--batch_size", "16", "--epochs", "2",
        "--learning_rate", "0.05", "--seed", "3", "--distill", "dml", "--model_s", "resnet8",
        "--model_t", "resnet8", "--init_s", str(work / "init/student.pth"), "--path_t", str(work / "init/peer.pth"),
    ], work)
    (run,) = (work / "save/student_model").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return proc, run, rows


def test_both_networks_improve_and_are_reported(learning_run):
    """Each network's training cross-entropy falls from epoch 1 to epoch 2 and well below chance (ln 4).

    Test accuracy is logged for both but not asserted: after two short epochs on this set it still
    swings by tens of points from seed to seed, while the training loss falls by 0.3 or more on every
    seed tried (1-5)."""
    proc, run, rows = learning_run
    assert run.name == "S:resnet8_T:resnet8_synthetic_dml_r:1_a:0.0_b:1.0_1"  # RepDistiller's pattern
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("loss_cls", "loss_peer_cls"):
        first, second = rows[0][key], rows[1][key]
        assert second < first - 0.1 and second < 0.9 * math.log(4), (key, first, second)
    for row in rows:
        assert 0 <= row["peer_test_acc"] <= 100 and {"peer_test_acc_top5", "peer_test_loss"} <= set(row)
        parts = sum(row[f"loss_{t}"] * w for t, w in (("cls", 1), ("kd", 1), ("peer_cls", 1), ("peer_kd", 1)))
        assert math.isclose(row["loss"], parts, rel_tol=1e-4)
    assert "teacher accuracy" not in proc.stdout
    assert proc.stdout.count(" * Acc@1") == 2 and proc.stdout.count(" * peer Acc@1") == 2
    results = json.loads((run / "results.json").read_text())
    assert results["peer_last_acc"] == rows[-1]["peer_test_acc"]
    assert results["peer_best_acc"] == max(r["peer_test_acc"] for r in rows)
    assert f"peer best accuracy: {results['peer_best_acc']:.2f}" in proc.stdout


def test_both_networks_save_their_own_checkpoints_that_load_strictly(learning_run):
    _, run, rows = learning_run
    files = {}
    for name in ("resnet8_best", "resnet8_last", "resnet8_peer_best", "resnet8_peer_last"):
        checkpoint = torch.load(run / f"{name}.pth", weights_only=True)
        assert checkpoint["arch"] == "resnet8"
        load_strict(build_model("resnet8", 4), checkpoint["model"], name, "resnet8")
        files[name] = checkpoint
    assert files["resnet8_peer_best"]["best_acc"] == max(r["peer_test_acc"] for r in rows)
    student, peer = files["resnet8_last"]["model"], files["resnet8_peer_last"]["model"]
    assert not torch.equal(student["conv1.weight"], peer["conv1.weight"])
    resume = torch.load(run / "ckpt_last.pth", weights_only=True)
    for key, value in peer.items():  # the peer is the method's submodule in the resumable checkpoint
        assert torch.equal(resume["extra"][f"peer.{key}"], value), key


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train_student.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _outputs(work: Path) -> tuple[dict, dict, list[dict]]:
    (run,) = (work / "save/student_model").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("epoch_time")
    return (torch.load(run / "resnet8_last.pth", weights_only=True)["model"],
            torch.load(run / "resnet8_peer_last.pth", weights_only=True)["model"], rows)


def test_sigkill_then_resume_restores_both_networks_bit_identically(tmp_path):
    """Deterministic setting (CPU, fp32, no workers, fixed seed, one thread); the peer from scratch."""
    args = [*SYN4, "--syn_train_size", "128", "--syn_val_size", "32", "--batch_size", "32", "--epochs", "3",
            "--seed", "7", "--distill", "dml", "--model_s", "resnet8", "--model_t", "resnet8"]
    reference, work = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), work.mkdir()
    run_cli("train_student.py", args, reference)
    proc = _popen(args, work)
    _wait_for(work / "save/student_model", proc)
    _wait_for(next((work / "save/student_model").iterdir()) / "ckpt_last.pth", proc)
    proc.send_signal(signal.SIGSTOP)
    proc.kill()
    proc.wait()
    run_cli("train_student.py", [*args, "--resume", "auto"], work)
    student, peer, rows = _outputs(work)
    ref_student, ref_peer, ref_rows = _outputs(reference)
    for got, expected in ((student, ref_student), (peer, ref_peer)):
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
    assert rows == ref_rows  # both networks' losses and accuracies, epoch by epoch


def _capture_trainer(monkeypatch) -> dict:
    """Replace the Trainer in train_student: record what it is handed, train nothing."""
    seen: dict = {}

    class Capture:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit(self, resume):
            seen["fit"] = resume

    monkeypatch.setattr(train_student, "Trainer", Capture)
    return seen


def test_init_s_loads_the_student_and_path_t_the_peer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    student_init = write_init(tmp_path / "student.pth", "resnet8", 1, bare=True)  # a bare state_dict
    peer_init = write_init(tmp_path / "peer.pth", "resnet14", 2)
    seen = _capture_trainer(monkeypatch)
    train_student.main([*SYN4, "--syn_train_size", "16", "--syn_val_size", "8", "--distill", "dml",
                        "--model_s", "resnet8", "--init_s", str(tmp_path / "student.pth"),
                        "--path_t", str(tmp_path / "peer.pth")])
    (peer,) = seen["peers"]
    assert peer.arch == "resnet14" and seen["stages"][-1].objective.teacher.network is peer.module
    for module, expected in ((seen["model"], student_init), (peer.module, peer_init)):
        state = module.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert seen["extra_state"].peer is peer.module


def test_init_s_for_any_method_and_a_mismatch_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    student_init = write_init(tmp_path / "student.pth", "resnet8", 1)
    write_init(tmp_path / "teacher.pth", "resnet20", 0)
    base = [*SYN4, "--syn_train_size", "16", "--syn_val_size", "8", "--path_t", str(tmp_path / "teacher.pth"),
            "--distill", "kd", "--init_s", str(tmp_path / "student.pth")]
    seen = _capture_trainer(monkeypatch)
    train_student.main([*base, "--model_s", "resnet8"])
    state = seen["model"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in student_init.items())

    with pytest.raises(SystemExit) as exit_info:
        run_main(train_student.main, [*base, "--model_s", "resnet14"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "student.pth does not fit architecture 'resnet14'" in err and "Traceback" not in err


def test_peer_under_torchrun_matches_one_process(tmp_path):
    """2 processes x batch 4 against 1 process x batch 8 (the black-image setting of test_distributed, where
    per-rank BatchNorm statistics equal the global batch's): the peer, trained outside DDP, starts from
    rank 0's weights and has its gradients averaged, so both networks end as in one process."""
    data = image_folder(tmp_path / "data", {"train": 8, "val": 4})
    common = ["--dataset", "imagenet", "--image_size", "32", "--data_folder", str(data), *CPU_RUN,
              "--distill", "dml", "--model_s", "resnet8", "--model_t", "resnet8", "--epochs", "1",
              "--no-channels_last"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_cli("train_student.py", [*common, "--batch_size", "8"], one)
    stdout = torchrun(str(ROOT / "train_student.py"), [*common, "--batch_size", "4"], two).stdout
    assert stdout.count(" * peer Acc@1") == 1
    for arch in ("resnet8", "resnet8_peer"):
        expected, got = weights_of(one, arch), weights_of(two, arch)
        for key, value in expected.items():
            tol = 1e-2 if key.endswith("running_var") else 1e-5
            torch.testing.assert_close(got[key], value, rtol=tol, atol=tol, msg=f"{arch} {key}")
