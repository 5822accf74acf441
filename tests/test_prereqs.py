"""scripts/check_prereqs.py, the one check every run script makes before its first run: the python, the data
set (present or downloadable) and every teacher file, one line per missing item and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, write_teacher
from test_shell_scripts import EXTRA, run, tree  # noqa: F401 - tree is a fixture

sys.path.insert(0, str(ROOT / "scripts"))
import check_prereqs  # noqa: E402

RD_TEACHER = "./save/models/{}_vanilla/ckpt_epoch_240.pth"
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # refused at once


@pytest.fixture
def offline(monkeypatch):
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_every_missing_item_is_one_line(tmp_path, monkeypatch, capsys, offline):
    monkeypatch.chdir(tmp_path)
    write_teacher(tmp_path, "resnet56", num_classes=100)
    argv = ["--prog", "run_x.sh", "--dataset", "cifar100", "--teacher", RD_TEACHER.format("resnet32x4"),
            "--teacher", RD_TEACHER.format("resnet56"), "--teacher", "mine/t.pth", "--teacher",
            "save/models/ResNet18_cifar_tinyimagenet_vanilla/ti_res18", "--", "--epochs", "2"]
    assert check_prereqs.main(argv) == 2
    data, rd, mine, tiny = lines(capsys)
    assert tiny.endswith("ti_res18 is missing (fetch it: sh scripts/fetch_pretrained_teachers.sh tinyimagenet)")
    assert data.startswith(f"run_x.sh: missing: CIFAR100 is not in {tmp_path}/data and cannot be downloaded (")
    assert rd == ("run_x.sh: missing: teacher ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth is missing "
                  "(fetch it: sh scripts/fetch_pretrained_teachers.sh resnet32x4)")
    assert mine == "run_x.sh: missing: teacher mine/t.pth is missing (train it or copy it there)"


def test_the_runs_own_arguments_name_the_data_and_teacher(tmp_path, monkeypatch, capsys, offline):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs" / "train").mkdir(parents=True)
    (tmp_path / "imgs" / "val").mkdir()
    assert check_prereqs.main(["--prog", "p", "--dataset", "cifar100", "--", "--dataset", "synthetic"]) == 0
    assert check_prereqs.main(["--prog", "p", "--", "--dataset", "imagenet", "--data_folder", "imgs"]) == 0
    assert check_prereqs.main(["--prog", "p", "--dataset", "synthetic", "--", "--path_t", "t1.pth",
                               "--path_t", "t2.pth"]) == 2  # the last of a repeated flag, as argparse
    assert lines(capsys) == ["p: missing: teacher t2.pth is missing (train it or copy it there)"]
    assert check_prereqs.main(["--prog", "p", "--dataset", "cifar10 cifar100", "--", "--data_root", "elsewhere"]) == 2
    assert [line.split(" is not in ")[0] for line in lines(capsys)] == ["p: missing: CIFAR10", "p: missing: CIFAR100"]
    assert check_prereqs.main(["--prog", "p", "--dataset", "tinyimagenet"]) == 2
    [line] = lines(capsys)
    assert line.startswith(f"p: missing: tinyimagenet: no train/ folder in {tmp_path}/data; run `sh scripts/get_")
    assert check_prereqs.main(["--prog", "p", "--", "--dataset", "imagenet", "--data_folder", "none"]) == 2
    assert lines(capsys) == [f"p: missing: imagenet: no train or val folder in {tmp_path}/none "
                             "(expected {train,val}/<class>/<image>)"]


def test_a_python_without_torch_is_named_with_the_teachers(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert check_prereqs.main(["--prog", "p", "--dataset", "cifar100", "--teacher", "t.pth"]) == 2
    python, teacher = lines(capsys)
    assert python.startswith(f"p: missing: python {sys.executable} cannot import the project's requirements (")
    assert python.endswith("activate the project's venv (. .venv/bin/activate; sh scripts/setup_env.sh makes it) "
                           "or pip install -r requirements.txt")
    assert teacher == "p: missing: teacher t.pth is missing (train it or copy it there)"


# What each run script hands the check (with EXTRA as its extra arguments), its first call.
CHECKS = {
    "run_cifar_distill.sh": ["--dataset", "cifar100", "--teacher", RD_TEACHER.format("resnet32x4")],
    "run_cifar_hkd.sh": ["--dataset", "cifar100", "--teacher", RD_TEACHER.format("resnet32x4")],
    "run_cifar_mlkd.sh": ["--dataset", "cifar100", *[arg for name in ("vgg13", "wrn_40_2", "resnet32x4", "resnet56",
                                                                      "ResNet50")
                                                     for arg in ("--teacher", RD_TEACHER.format(name))]],
    "run_cifar_vanilla.sh": ["--dataset", "cifar100"],
    "run_cifar_wrn.sh": ["--dataset", "cifar100", "--teacher", RD_TEACHER.format("wrn_40_2")],
    "run_cifar_zoo.sh": ["--dataset", "cifar10 cifar100"],
    "run_tinyimagenet_distill.sh": ["--dataset", "tinyimagenet", "--teacher",
                                    "./save/models/ResNet18_cifar_tinyimagenet_vanilla/ti_res18"],
    "run_datafree.sh": ["--dataset", "cifar100", "--teacher", "checkpoints/pretrained/cifar100_resnet34.pth",
                        "--teacher", "checkpoints/pretrained/cifar100_vgg11.pth", "--teacher",
                        RD_TEACHER.format("wrn_40_2")],
}
TORCHRUN = ["run_imagenet_distill.sh", "run_imagenet_mlkd.sh"]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("run_*.sh")))
def test_each_run_script_checks_first_and_stops_with_2(tree, script):  # noqa: F811
    assert script in CHECKS or script in TORCHRUN  # a new run script gets its check too
    extra = EXTRA
    proc, _ = run("sh", tree, f"scripts/{script}", *extra)
    assert proc.returncode == 0, proc.stderr
    first = (tree.parent / "calls.log").read_text().splitlines()[0].split("\t")
    assert first[:4] == ["python", "scripts/check_prereqs.py", "--prog", script]
    if script in CHECKS:
        assert first[4:] == [*CHECKS[script], "--", *extra]
    else:  # the torchrun scripts hand over the runs' whole argument list: data, folder and teacher are in it
        args = first[first.index("--") + 1:]
        assert args[-len(extra):] == extra and args[args.index("--dataset") + 1] == "imagenet"
    proc, calls = run("sh", tree, f"scripts/{script}", *extra, STANDIN_FAIL="scripts/check_prereqs.py")
    assert proc.returncode == 2 and calls == []


@pytest.mark.parametrize("how", ["sh", "bash"])
def test_run_cifar_distill_with_nothing_set_up_names_both_before_any_run(tmp_path, how):
    work = tmp_path / "work"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env |= {**OFFLINE, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([shutil.which(how), "scripts/run_cifar_distill.sh", "--epochs", "1"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    data, teacher = proc.stderr.splitlines()
    assert data.startswith(f"run_cifar_distill.sh: missing: CIFAR100 is not in {work}/data and cannot be downloaded")
    assert teacher == ("run_cifar_distill.sh: missing: teacher ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth "
                       "is missing (fetch it: sh scripts/fetch_pretrained_teachers.sh resnet32x4)")
    assert sorted(p.name for p in work.iterdir()) == ["scripts"]  # no run started: no save/, no data/
