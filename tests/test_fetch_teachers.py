"""scripts/fetch_pretrained_teachers.sh against a loopback HTTP server: RepDistiller's URL answers 404, so the
teachers come out of mdistiller's tar (real checkpoints in RepDistiller's format, made here); each source's
failure is one line per teacher, and nothing that looks finished is left behind."""

from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import ROOT, write_teacher

SCRIPT = ROOT / "scripts" / "fetch_pretrained_teachers.sh"
PROG = "fetch_pretrained_teachers.sh"
ASKED = ["resnet56", "wrn_40_2"]


class Server:
    """Serves ``root`` on 127.0.0.1 (a free port) and counts the requests per path."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server name
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    (tmp_path / "www").mkdir()
    server = Server(tmp_path / "www")
    yield server, tmp_path / "www"
    server.close()


def make_tar(path: Path, members: dict[str, Path | bytes]) -> None:
    """A tar laid out as mdistiller's cifar_teachers.tar: cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth."""
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            arcname = f"cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth"
            if isinstance(content, Path):
                tar.add(content, arcname=arcname)
            else:
                info = tarfile.TarInfo(arcname)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Real RepDistiller-format teachers for the asked names, and one that is another network's."""
    root = tmp_path_factory.mktemp("ckpts")
    return {name: write_teacher(root, name, num_classes=100) for name in [*ASKED, "resnet20"]}


def fetch(work: Path, how: str, *names: str, **env: str) -> subprocess.CompletedProcess:
    shell = shutil.which(how)
    if shell is None:
        pytest.skip(f"no {how} on this machine")
    base = {k: v for k, v in os.environ.items() if k not in ("TEACHER_URL", "TEACHER_TAR_URL", "PYTHON")}
    full = {**base, "PYTHON": sys.executable, "CONNECT_TIMEOUT": "3", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([shell, str(SCRIPT), *names], cwd=work, env=full, capture_output=True, text=True,
                          timeout=300)


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_rd_404_then_the_tar_extracts_only_the_asked_teachers_once(tmp_path, served, checkpoints):
    server, www = served
    make_tar(www / "cifar_teachers.tar", {**{name: checkpoints[name] for name in ASKED}, "resnet110": b"other"})
    work = tmp_path / "work"
    work.mkdir()
    env = {"TEACHER_URL": f"{server.url}/rd", "TEACHER_TAR_URL": f"{server.url}/cifar_teachers.tar"}
    proc = fetch(work, "sh", *ASKED, **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    tar = "save/downloads/cifar_teachers.tar"
    assert proc.stdout.splitlines() == [
        f"{name}: saved save/models/{name}_vanilla/ckpt_epoch_240.pth from {tar} "
        f"(cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth, mdistiller's release {env['TEACHER_TAR_URL']}), "
        f"loads into {name}" for name in ASKED]
    assert files_under(work) == [tar] + [f"save/models/{name}_vanilla/ckpt_epoch_240.pth" for name in ASKED]
    for name in ASKED:  # the very files (each made by write_teacher, which loads strictly: the script checked)
        path = work / f"save/models/{name}_vanilla/ckpt_epoch_240.pth"
        assert path.read_bytes() == checkpoints[name].read_bytes()
    # RD's URL first for each teacher, the tar once for both
    assert server.requests == [f"/rd/{ASKED[0]}_vanilla/ckpt_epoch_240.pth", "/cifar_teachers.tar",
                               f"/rd/{ASKED[1]}_vanilla/ckpt_epoch_240.pth"]
    # present files are not fetched again; a third teacher comes out of the cached tar without a download
    server.requests.clear()
    proc = fetch(work, "sh", *ASKED, **env)
    assert proc.returncode == 0 and server.requests == []
    assert proc.stdout.splitlines() == [f"{name}: save/models/{name}_vanilla/ckpt_epoch_240.pth already present, "
                                        f"loads into {name}" for name in ASKED]


@pytest.mark.parametrize("broken", ["truncated", "does_not_load"])
def test_a_bad_tar_is_one_line_and_leaves_nothing(tmp_path, served, checkpoints, broken):
    server, www = served
    good = www / "good.tar"
    if broken == "truncated":
        make_tar(good, {"resnet56": checkpoints["resnet56"]})
        (www / "cifar_teachers.tar").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:  # resnet56's place holds resnet20's weights
        make_tar(www / "cifar_teachers.tar", {"resnet56": checkpoints["resnet20"]})
    work = tmp_path / "work"
    work.mkdir()
    url = f"{server.url}/cifar_teachers.tar"
    proc = fetch(work, "sh", "resnet56", TEACHER_URL=f"{server.url}/rd", TEACHER_TAR_URL=url)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"{PROG}: resnet56: download of {server.url}/rd/resnet56_vanilla/ckpt_epoch_240.pth "
                           "failed (curl: (22) The requested URL returned error: 404")
    if broken == "truncated":
        assert f"downloaded {url} but it is not a whole tar archive (" in line and line.endswith("); removed")
        assert files_under(work) == []
    else:
        assert "cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth in save/downloads/cifar_teachers.tar does " \
               "not load (check_teacher: " in line and line.endswith("); removed")
        assert files_under(work) == ["save/downloads/cifar_teachers.tar"]  # the archive itself is whole
    assert not (work / "save/models/resnet56_vanilla").exists()


@pytest.mark.parametrize("how", ["sh", "dash", "bash"])
def test_offline_is_one_line_per_teacher_naming_both_sources(tmp_path, how):
    refused = "http://127.0.0.1:9"  # the discard port: connection refused at once
    proc = fetch(tmp_path, how, TEACHER_URL=f"{refused}/rd", TEACHER_TAR_URL=f"{refused}/cifar_teachers.tar")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    published = ["wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50"]
    assert len(lines) == len(published), proc.stderr
    for name, line in zip(published, lines, strict=True):
        assert line.startswith(f"{PROG}: {name}: download of {refused}/rd/{name}_vanilla/ckpt_epoch_240.pth failed (")
        assert f"; download of {refused}/cifar_teachers.tar failed (" in line
    assert files_under(tmp_path) == [] and not list(tmp_path.rglob("*_vanilla"))


def test_default_sources_are_repdistiller_then_mdistillers_release():
    text = SCRIPT.read_text()
    assert "RD_URL=http://shape2prog.csail.mit.edu/repo\n" in text
    assert "MDISTILLER=https://github.com/megvii-research/mdistiller/releases/download/checkpoints\n" in text
    assert "MDISTILLER_TAR=$MDISTILLER/cifar_teachers.tar\n" in text
    assert 'MEMBER="cifar_teachers/$1_vanilla/ckpt_epoch_240.pth"' in text


def test_tinyimagenet_is_mdistillers_resnet18_out_of_its_own_tar(tmp_path, served):
    """mdistiller's Tiny-ImageNet teacher: its ResNet18 (our ResNet18_cifar, 200 classes), saved where
    scripts/run_tinyimagenet_distill.sh reads it; no RepDistiller URL is tried for it."""
    server, www = served
    made = write_teacher(tmp_path / "made", "ResNet18_cifar", num_classes=200)
    with tarfile.open(www / "tiny_imagenet_teachers.tar", "w") as tar:
        tar.add(made, arcname="tiny_imagenet_teachers/ResNet18_vanilla/ti_res18")
    work = tmp_path / "work"
    work.mkdir()
    url = f"{server.url}/tiny_imagenet_teachers.tar"
    proc = fetch(work, "sh", "tinyimagenet", TEACHER_URL=f"{server.url}/rd", TINYIMAGENET_TAR_URL=url)
    assert proc.returncode == 0, proc.stderr
    dest = "save/models/ResNet18_cifar_tinyimagenet_vanilla/ti_res18"
    assert proc.stdout == (f"tinyimagenet: saved {dest} from save/downloads/tiny_imagenet_teachers.tar "
                           f"(tiny_imagenet_teachers/ResNet18_vanilla/ti_res18, mdistiller's release {url}), "
                           "loads into ResNet18_cifar\n")
    assert (work / dest).read_bytes() == made.read_bytes() and server.requests == ["/tiny_imagenet_teachers.tar"]
    assert f"T=${{TEACHER:-./{dest}}}" in (ROOT / "scripts/run_tinyimagenet_distill.sh").read_text()


def standin_python(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_a_python_without_torch_never_costs_a_teacher(tmp_path, checkpoints):
    """PATH's python cannot run the check: the present file is reported and kept; with the project's .venv
    the script uses that python instead of PATH's (issue 22, item 14)."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    for name in ("fetch_pretrained_teachers.sh", "check_teacher.py"):
        (tree / "scripts" / name).symlink_to(ROOT / "scripts" / name)
    work = tmp_path / "work"
    present = work / "save/models/resnet56_vanilla/ckpt_epoch_240.pth"
    present.parent.mkdir(parents=True)
    shutil.copy(checkpoints["resnet56"], present)
    bin_dir = tmp_path / "bin"
    standin_python(bin_dir / "python3", "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1")
    env = {k: v for k, v in os.environ.items() if k not in ("TEACHER_URL", "TEACHER_TAR_URL", "PYTHON")}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "TEACHER_URL": "http://127.0.0.1:9/rd"}

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(tree / "scripts/fetch_pretrained_teachers.sh"), "resnet56"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=120)

    proc = run()
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"{PROG}: resnet56: cannot check teachers: ModuleNotFoundError: No module "
                                        "named 'torch'; set PYTHON to a python with the project's requirements "
                                        "(sh scripts/setup_env.sh makes .venv)"]
    assert present.read_bytes() == checkpoints["resnet56"].read_bytes()
    standin_python(tree / ".venv/bin/python", f'exec "{sys.executable}" "$@"')
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "resnet56: save/models/resnet56_vanilla/ckpt_epoch_240.pth already present, loads into " \
                          "resnet56\n"


def test_check_teacher_says_when_it_cannot_run(tmp_path):
    """Exit 3, not 1, when this python lacks torch: the fetcher then keeps the file."""
    blocker = tmp_path / "torch"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/check_teacher.py"), "--ready"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stderr == f"check_teacher: {sys.executable} cannot run the check (No module named 'torch')\n"
