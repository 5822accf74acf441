"""KD-Zoo's setting: scripts/run_cifar_zoo.sh under sh (dash), bash and ./ (a stand-in ``python`` first on PATH
records its arguments instead of training); train_teacher.py --save_init; CIFAR-10 through train_student.py
on a fake CIFAR-10 folder laid out as the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, after_prereq_check
from test_dataset import skip_md5, write_fake_cifar  # noqa: F401 - skip_md5 is a fixture
from torchvision import datasets

import dataset.cifar10
import train_student
import train_teacher
from distiller_zoo.registry import get_method, method_names
from helper.errors import UserError
from models import build_model

SCRIPT = ROOT / "scripts" / "run_cifar_zoo.sh"
EXTRA = ["--device", "cuda", "--data_folder", "my data"]  # a space: the extra arguments must stay whole
RECIPE = ["--epochs", "200", "--batch_size", "128", "--learning_rate", "0.1", "--lr_decay_epochs", "100,150",
          "--lr_decay_rate", "0.1", "--weight_decay", "1e-4", "--momentum", "0.9", "--nesterov"]
# KD-Zoo's table (methods.md 2.39): its name, then our -r -a -b and the flags it adds; CRD's weight per data set
ZOO_TABLE = [
    ("logits", ["-r", "1", "-a", "0", "-b", "0.1"]),
    ("st", ["-r", "1", "-a", "0.1", "-b", "0", "--kd_T", "4"]),
    ("at", ["-r", "1", "-a", "0", "-b", "1000"]),
    ("fitnet", ["-r", "1", "-a", "0", "-b", "0.1"]),
    ("nst", ["-r", "1", "-a", "0", "-b", "10"]),
    ("pkt", ["-r", "1", "-a", "0", "-b", "10000"]),
    ("fsp", ["-r", "1", "-a", "0", "-b", "1", "--init_epochs", "50"]),
    ("ft", ["-r", "1", "-a", "0", "-b", "200"]),
    ("rkd", ["-r", "1", "-a", "0", "-b", "1"]),
    ("ab", ["-r", "1", "-a", "0", "-b", "10", "--init_epochs", "50"]),
    ("sp", ["-r", "1", "-a", "0", "-b", "3000"]),
    ("sobolev", ["-r", "1", "-a", "0", "-b", "20"]),
    ("bss", ["-r", "1", "-a", "0", "-b", "2", "--bss_T", "3", "--bss_attack_size", "32"]),
    ("cc", ["-r", "1", "-a", "0", "-b", "0.02"]),
    ("lwm", ["-r", "1", "-a", "0", "-b", "0.4"]),
    ("irg", ["-r", "1", "-a", "0", "-b", "1", "--irg_variant", "zoo", "--w_irg_vert", "0.1", "--w_irg_edge", "5",
             "--w_irg_tran", "5"]),
    ("vid", ["-r", "1", "-a", "0", "-b", "1"]),
    ("ofd", ["-r", "1", "-a", "0", "-b", "0.5", "--ofd_margin", "batch"]),
    ("afd", ["-r", "1", "-a", "0", "-b", "500", "--att_f", "1"]),
    ("crd", ["-r", "1", "-a", "0", "-b", "{crd}", "--nce_t", "0.1", "--nce_k", "16384", "--feat_dim", "128",
             "--nce_m", "0.5", "--mode", "exact"]),
]
CRD_WEIGHT = {"cifar10": "0.2", "cifar100": "0.8"}

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
    base = {k: v for k, v in os.environ.items() if k not in ("TRIAL", "DATASETS", "STANDIN_FAIL")}
    full_env = {**base, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS_LOG": str(log), **env}
    proc = subprocess.run([*argv, *args], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return proc, after_prereq_check(calls)


def flag(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def expected_calls(data: str, trial: str, extra: list[str]) -> list[list[str]]:
    """The script's calls for one data set, written out from KD-Zoo's table."""
    common = ["--dataset", data, *RECIPE, "--trial", trial]
    r20 = f"./save/models/resnet20_{data}_lr_0.1_decay_0.0001_trial_{trial}"
    r110 = f"./save/models/resnet110_{data}_lr_0.1_decay_0.0001_trial_{trial}"
    calls = [["python", "train_teacher.py", *common, "--model", model, "--save_init", f"{folder}/{model}_init.pth",
              *extra] for model, folder in (("resnet20", r20), ("resnet110", r110))]

    def student(second: str, name: str, flags: list[str]) -> list[str]:
        return ["python", "train_student.py", *common, "--path_t", second, "--model_s", "resnet20",
                "--init_s", f"{r20}/resnet20_init.pth", "--distill", name, *flags, *extra]

    for name, flags in ZOO_TABLE:
        calls.append(student(f"{r110}/resnet110_best.pth", name, [CRD_WEIGHT[data] if f == "{crd}" else f
                                                                  for f in flags]))
    calls.append(student(f"{r110}/resnet110_init.pth", "dml", ["-r", "1", "-a", "0", "-b", "1"]))
    return calls


@pytest.mark.parametrize("how", ["sh", "dash", "bash", "direct"])
def test_every_method_of_kd_zoos_table_on_both_data_sets(tmp_path, how):
    proc, calls = run(tmp_path, how, *EXTRA)
    assert proc.returncode == 0, proc.stderr
    assert calls == expected_calls("cifar10", "1", EXTRA) + expected_calls("cifar100", "1", EXTRA)


def test_data_sets_and_trial_from_the_environment(tmp_path):
    proc, calls = run(tmp_path, "sh", DATASETS="cifar100", TRIAL="4")
    assert proc.returncode == 0, proc.stderr
    assert calls == expected_calls("cifar100", "4", [])


def test_the_students_read_what_the_baselines_write(tmp_path):
    """Paths in the script match the folders train_teacher.py names; every call parses with our CLIs (the
    methods other engineers are still adding are skipped until they are registered)."""
    _, calls = run(tmp_path, "sh", DATASETS="cifar10")
    baselines, students = calls[:2], calls[2:]
    saved = {}
    for call in baselines:
        opt = train_teacher.parse_option(call[2:])
        assert opt.nesterov and (opt.learning_rate, opt.weight_decay, opt.epochs) == (0.1, 1e-4, 200)
        assert Path(opt.save_init).parent == Path(opt.save_folder)
        saved[opt.model] = opt.save_init
    teacher_best = Path(saved["resnet110"]).parent / "resnet110_best.pth"
    known = set(method_names()) | {"st", "at", "fitnet", "ft", "ab", "sp", "cc"}
    for call in students:
        assert flag(call, "--init_s") == saved["resnet20"]
        is_dml = flag(call, "--distill") == "dml"
        assert Path(flag(call, "--path_t")) == (Path(saved["resnet110"]) if is_dml else teacher_best)
        if flag(call, "--distill") in known:
            opt, spec = train_student.parse_option(call[2:])
            assert opt.nesterov and opt.gamma == 1 and opt.batch_size == 128 and spec.trains_peer == is_dml
    assert get_method("st").name == "kd" and get_method("fitnet").name == "hint"


def test_flags_that_rename_the_baselines_are_refused(tmp_path):
    proc, calls = run(tmp_path, "sh", "--trial", "3")
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.count("\n") == 1 and "TRIAL=" in proc.stderr


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_a_failing_run_stops_the_script(tmp_path, how):
    proc, calls = run(tmp_path, how, STANDIN_FAIL="resnet110")
    assert proc.returncode != 0 and len(calls) == 2 and "resnet110" in calls[-1]


# ----- the baselines' initial weights -----------------------------------------------------------------------

def _no_training(monkeypatch, module) -> dict:
    seen: dict = {}

    class Capture:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit(self, resume):
            pass

    monkeypatch.setattr(module, "Trainer", Capture)
    return seen


def test_save_init_writes_the_model_before_training_and_never_silently_over_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = _no_training(monkeypatch, train_teacher)
    args = ["--dataset", "synthetic", "--syn_classes", "4", "--syn_train_size", "16", "--syn_val_size", "8",
            "--num_workers", "0", "--device", "cpu", "--model", "resnet8", "--save_init", "init/resnet8.pth"]
    train_teacher.main(args)
    saved = torch.load(tmp_path / "init/resnet8.pth", weights_only=True)
    assert saved["arch"] == "resnet8"
    state = seen["model"].state_dict()
    assert saved["model"].keys() == state.keys() and all(torch.equal(state[k], v) for k, v in saved["model"].items())
    with pytest.raises(UserError, match="init/resnet8.pth exists .* --overwrite"):
        train_teacher.main([*args, "--seed", "1"])
    train_teacher.main([*args, "--overwrite", "--seed", "1"])
    assert not torch.equal(torch.load(tmp_path / "init/resnet8.pth", weights_only=True)["model"]["conv1.weight"],
                           saved["model"]["conv1.weight"])


# ----- CIFAR-10 -------------------------------------------------------------------------------------------------

def test_cifar10_trains_with_its_own_classes_and_statistics(tmp_path, monkeypatch, skip_md5):  # noqa: F811
    """A fake CIFAR-10 folder (CIFAR's pickles): the bundle, both in-memory loaders and the networks see
    10 classes and CIFAR-10's mean/std; the student is built for 10 classes and trains a step."""
    monkeypatch.chdir(tmp_path)
    images = write_fake_cifar(tmp_path / "data", datasets.CIFAR10, 8, 10)
    torch.manual_seed(0)
    teacher = {"model": build_model("resnet8", 10).state_dict()}
    torch.save(teacher, tmp_path / "teacher.pth")
    seen = _no_training(monkeypatch, train_student)
    train_student.main(["--dataset", "cifar10", "--data_folder", str(tmp_path / "data"), "--device", "cpu",
                        "--num_workers", "0", "--path_t", str(tmp_path / "teacher.pth"), "--model_t", "resnet8",
                        "--model_s", "resnet8", "--distill", "kd", "--batch_size", "8", "--epochs", "1"])
    mean, std = torch.tensor(dataset.cifar10.MEAN), torch.tensor(dataset.cifar10.STD)
    for loader in (seen["train_loader"], seen["val_loader"]):
        assert torch.equal(loader.mean, mean) and torch.equal(loader.std, std)
    x, y = next(iter(seen["val_loader"]))[:2]
    raw = torch.as_tensor(images[40:44]).float().div(255).permute(0, 3, 1, 2)  # the first test images, in order
    assert torch.allclose(x, (raw - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert seen["model"].fc.out_features == 10 and y.tolist() == [0, 1, 2, 3]
    logits, terms, total = seen["stages"][-1].objective(next(iter(seen["train_loader"])))
    assert logits.shape == (8, 10) and torch.isfinite(total)
