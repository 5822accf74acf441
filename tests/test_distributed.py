"""torchrun on CPU (gloo, 2 processes): DDP reaches one process's weights on the same global batch,
only rank 0 writes or prints, CRD's memory stays identical on every rank, the ImageNet path runs, and
the torchvision teacher loads from the hub cache or fails in one line.

This file is also the CRD worker: ``torchrun ... tests/test_distributed.py crd <out>``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli, write_teacher
from PIL import Image

WORLD = 2
CPU_RUN = ["--device", "cpu", "--precision", "fp32", "--num_workers", "0", "--seed", "5"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(target: str, args: list[str], cwd: Path, pythonpath: tuple[str, ...] = (),
             check: bool = True, module: str = "torch.distributed.run") -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 target args`` on a free local port (``module``:
    helper.torchrun, the project's torchrun without torchrun's failure report)."""
    command = [sys.executable, "-m", module, f"--nproc_per_node={WORLD}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", target, *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(ROOT)]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun {target} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def image_folder(root: Path, per_class: dict[str, int], colour=lambda cls, i: (0, 0, 0)) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: 32x32 images, ``per_class[split]`` of each of two classes."""
    for split, count in per_class.items():
        for cls in range(2):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), colour(cls, i)).save(folder / f"{i}.png")
    return root


# In each torchrun worker (RANK set): every file it opens for writing, creates, replaces or removes
# below `watch` is logged to writes_rank<RANK>.txt in `log_dir`.
WRITE_RECORDER = """
import builtins, io, os
if os.environ.get("RANK") is not None:
    _log = os.path.join({log_dir!r}, "writes_rank" + os.environ["RANK"] + ".txt")
    _open, _os_open, _mkdir, _replace, _unlink = builtins.open, os.open, os.mkdir, os.replace, os.unlink

    def _note(path):
        path = os.path.abspath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if path.startswith({watch!r}):
            with _open(_log, "a") as handle:
                handle.write(path + "\\n")

    def _open_hook(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            _note(file)
        return _open(file, mode, *args, **kwargs)

    def _os_open_hook(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            _note(path)
        return _os_open(path, flags, *args, **kwargs)

    def _pair(original):
        def hook(src, dst, *args, **kwargs):
            _note(dst)
            return original(src, dst, *args, **kwargs)
        return hook

    def _one(original):
        def hook(path, *args, **kwargs):
            _note(path)
            return original(path, *args, **kwargs)
        return hook

    builtins.open = io.open = _open_hook
    os.open, os.replace, os.mkdir, os.unlink = _os_open_hook, _pair(_replace), _one(_mkdir), _one(_unlink)
"""


def weights_of(folder: Path, arch: str) -> dict[str, torch.Tensor]:
    (path,) = folder.glob(f"save/student_model/*/{arch}_last.pth")
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def metrics_of(folder: Path, runs: str = "student_model") -> list[dict]:
    (path,) = folder.glob(f"save/{runs}/*/metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- DDP against one process ------------------------------------------------------------------------


def test_two_processes_match_one_process_and_only_rank_0_writes(tmp_path):
    """2 processes x batch 4 against 1 process x batch 8, 2 epochs of 2 steps, one seed, with VID: its
    regressors train outside DDP, so this also checks that they start from rank 0's state and that their
    gradients are averaged (without the start broadcast, the weights here differ by 3e-3).

    BatchNorm: gloo cannot run SyncBatchNorm (torch runs it on GPUs only), and per-rank batch statistics
    differ from the global batch's, so a plain comparison would differ by design. Every image here is the
    same black 32x32 picture: the pad-and-crop and flip leave it unchanged (the padding is black), so all
    samples are one tensor, every rank's batch has the global batch's statistics, and BatchNorm's backward
    (linear in the per-sample gradients, all multiplying the same activations) sums to the global one.
    The labels still differ (two classes), so the gradients, their averaging, each step's shards and the
    reduced metrics are all compared. The networks run contiguous (--no-channels_last): CPU BatchNorm on
    channels_last float32 tensors rounds its batch statistics differently for different batch sizes (1e-4
    here, measured with identical inputs in one process), which would swamp the comparison.
    Tolerances: parameters and running means 1e-5 (summation order; measured 3e-6); running variances
    1e-2, as they carry BatchNorm's unbiased factor n/(n-1) with n the values per channel in the local
    batch, which differs from the global batch's (measured 2e-3; they do not enter training forwards).
    """
    data = image_folder(tmp_path / "data", {"train": 8, "val": 4})
    teacher = write_teacher(tmp_path / "teacher", "resnet20", num_classes=2)
    common = ["--dataset", "imagenet", "--image_size", "32", "--data_folder", str(data), *CPU_RUN,
              "--path_t", str(teacher), "--model_s", "resnet8", "--distill", "vid", "--epochs", "2",
              "--save_freq", "1", "--no-channels_last"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_cli("train_student.py", [*common, "--batch_size", "8"], one)

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(WRITE_RECORDER.format(log_dir=str(tmp_path), watch=str(two)))
    stdout = torchrun(str(ROOT / "train_student.py"), [*common, "--batch_size", "4"], two, (str(hooks),)).stdout

    # (b) rank 0 wrote (so the recorder works); rank 1 wrote nothing and printed nothing
    assert (tmp_path / "writes_rank0.txt").read_text()
    assert not (tmp_path / "writes_rank1.txt").exists(), (tmp_path / "writes_rank1.txt").read_text()
    for line in ("teacher accuracy", "epoch 1, total time", "epoch 2, total time", "best accuracy"):
        assert stdout.count(line) == 1, f"{line!r} printed {stdout.count(line)} times:\n{stdout}"
    rows_one, rows_two = metrics_of(one), metrics_of(two)
    assert [(r["stage"], r["epoch"]) for r in rows_two] == [("main", 1), ("main", 2)]
    (events,) = two.glob("save/student_tensorboards/*/events.out.tfevents.*")

    # (a) the same weights and the same reduced metrics as one process on the global batch
    expected, got = weights_of(one, "resnet8"), weights_of(two, "resnet8")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        tol = 1e-2 if key.endswith("running_var") else 1e-5
        torch.testing.assert_close(got[key], value, rtol=tol, atol=tol, msg=key)
    for row_one, row_two in zip(rows_one, rows_two, strict=True):
        for key in ("loss", "loss_cls", "loss_div", "loss_kd", "train_acc", "test_acc"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-4, abs=1e-5), key


# On rank 1 only: its student's final parameters, saved where the test can compare them with rank 0's.
RANK1_WEIGHTS = """
import os
if os.environ.get("RANK") == "1":
    import torch
    from helper import trainer
    _finish = trainer.Trainer._finish

    def _save_then_finish(self):
        torch.save({{k: v for k, v in self.model.named_parameters()}}, {path!r})
        _finish(self)

    trainer.Trainer._finish = _save_then_finish
"""


def test_init_stage_trunk_gradients_are_averaged_across_ranks(tmp_path):
    """AB: its init stage trains the connectors and the student's trunk outside DDP (whose classifier the
    stage leaves unused), averaging their gradients by hand; the main stage then runs DDP without
    find_unused_parameters. The ranks see different images, so unless every gradient of both stages is
    averaged their students part ways: rank 1's final parameters must equal rank 0's saved ones."""
    data = image_folder(tmp_path / "data", {"train": 8, "val": 4},
                        colour=lambda cls, i: (30 * i, 200 * cls, 255 - 25 * i))
    teacher = write_teacher(tmp_path / "teacher", "resnet20", num_classes=2)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    rank1 = tmp_path / "rank1.pth"
    (hooks / "sitecustomize.py").write_text(RANK1_WEIGHTS.format(path=str(rank1)))
    torchrun(str(ROOT / "train_student.py"), [
        "--dataset", "imagenet", "--image_size", "32", "--data_folder", str(data), *CPU_RUN, "--path_t", str(teacher),
        "--model_s", "resnet8", "--distill", "abound", "--init_epochs", "2", "--epochs", "1", "--batch_size", "4"],
        tmp_path, (str(hooks),))
    rank0, other = weights_of(tmp_path, "resnet8"), torch.load(rank1, weights_only=True)
    assert other.keys() <= rank0.keys() and other
    for key, value in other.items():
        torch.testing.assert_close(value, rank0[key], rtol=1e-6, atol=1e-6, msg=key)


def test_imagenet_path_under_torchrun(tmp_path):
    """--dataset imagenet at 224 px (RandomResizedCrop / Resize+CenterCrop) on a tiny ImageFolder, a
    ResNet34-format teacher file, ResNet18 student, CRD (the memory gathers across ranks): one step."""
    data = image_folder(tmp_path / "data", {"train": 2, "val": 2}, colour=lambda cls, i: (200 * cls, 60 * i, 90))
    teacher = write_teacher(tmp_path, "ResNet34", num_classes=2)
    stdout = torchrun(str(ROOT / "train_student.py"), [
        "--dataset", "imagenet", "--data_folder", str(data), *CPU_RUN, "--path_t", str(teacher),
        "--model_s", "ResNet18", "--distill", "crd", "--nce_k", "2", "--batch_size", "2", "--epochs", "1"], tmp_path
    ).stdout
    assert "device cpu, precision fp32" in stdout and f"{WORLD} processes" in stdout
    (row,) = metrics_of(tmp_path)
    assert row["epoch"] == 1 and 0 <= row["test_acc"] <= 100
    assert weights_of(tmp_path, "ResNet18")["fc.weight"].shape == (2, 512)


def test_teacher_under_torchrun_and_sync_bn_on_cpu_is_one_line(tmp_path):
    """train_teacher.py on the in-memory synthetic path (each rank its shard); --sync_bn on CPU stops."""
    args = [*TINY_DATA, "--syn_train_size", "64", "--syn_val_size", "32", "--batch_size", "16",
            "--model", "resnet8", "--epochs", "1", "--seed", "5"]
    torchrun(str(ROOT / "train_teacher.py"), args, tmp_path)
    (row,) = metrics_of(tmp_path, "models")
    assert row["epoch"] == 1
    proc = torchrun(str(ROOT / "train_teacher.py"), [*args, "--sync_bn", "--overwrite"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "train_teacher.py: error: --sync_bn needs GPUs" in proc.stderr


# --- failures: one line per node --------------------------------------------------------------------

# In each torchrun worker: rank 1 alone cannot read the data (rank 0 reads it first, and succeeds).
RANK1_NO_DATA = """
import os
if os.environ.get("RANK") == "1":
    import dataset

    def _unavailable(opt):
        raise dataset.DatasetUnavailable("rank 1 cannot read the data")

    dataset.build_data = _unavailable
"""


def test_one_rank_failing_alone_is_one_line_and_every_rank_stops(tmp_path):
    """Rank 1 fails where rank 0 has gone on (after rank_zero_first's first wait): the ranks agree on its
    error, so rank 0 says it in one line, nobody dies in a barrier, and every rank exits 2 (helper.torchrun
    reports the processes' status, without torchrun's own report)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(RANK1_NO_DATA)
    teacher = write_teacher(tmp_path, "resnet20")
    proc = torchrun(str(ROOT / "train_student.py"), [*TINY_DATA, "--path_t", str(teacher), "--epochs", "1"],
                    tmp_path, (str(hooks),), check=False, module="helper.torchrun")
    assert proc.stderr.splitlines() == ["train_student.py: error: rank 1 cannot read the data"], proc.stderr
    assert proc.returncode == 2


def test_missing_teacher_stops_before_any_process_starts(tmp_path, monkeypatch):
    import train_student
    from helper.errors import UserError

    monkeypatch.setattr(train_student, "launch", lambda *args: pytest.fail("processes were started"))
    with pytest.raises(UserError, match="checkpoint not found: nothere.pth"):
        train_student.main(["--path_t", "nothere.pth", "--multiprocessing-distributed"])


# --- CRD's memory under DDP -------------------------------------------------------------------------

# Local batch per rank at each step: then a smaller last batch, equal on every rank as DistributedSampler
# pads the shards (all_gather_cat relies on it).
CRD_SIZES = [(4, 4), (3, 3)]


def crd_opt() -> argparse.Namespace:
    return argparse.Namespace(s_dim=6, t_dim=5, feat_dim=4, n_data=32, nce_k=7, nce_t=0.5, nce_m=0.5)


def crd_batch(step: int, rank: int) -> tuple[torch.Tensor, ...]:
    """Rank ``rank``'s local batch at ``step``: features, distinct dataset indices, contrast indices."""
    opt, n = crd_opt(), CRD_SIZES[step][rank]
    g = torch.Generator().manual_seed(100 * step + rank)
    idx = torch.arange(n) * WORLD + rank + 10 * step
    contrast = torch.randint(0, opt.n_data, (n, opt.nce_k + 1), generator=g)
    contrast[:, 0] = idx
    return torch.randn(n, opt.s_dim, generator=g), torch.randn(n, opt.t_dim, generator=g), idx, contrast


def crd_worker(out: Path) -> None:
    """Each rank initialises CRDLoss from its own seed (as training does), takes rank 0's state as
    train_student does, runs two steps on its own batches; rank 0 checks every rank's memory and saves it."""
    from crd.criterion import CRDLoss
    from helper.distributed import all_gather_cat, broadcast_state, init_distributed, shutdown

    info, _ = init_distributed(torch.device("cpu"))
    torch.manual_seed(info.rank)
    crd = CRDLoss(crd_opt())
    broadcast_state(crd, info)
    for step in range(len(CRD_SIZES)):
        crd(*crd_batch(step, info.rank)).backward()
    state = crd.state_dict()
    flat = torch.cat([t.reshape(-1).float() for t in state.values()])
    every = all_gather_cat(flat[None], info)
    if info.is_main:
        torch.save({"identical": all(torch.equal(every[0], row) for row in every), "state": state}, out)
    shutdown(info)


def test_crd_memory_is_identical_on_every_rank_and_equals_one_process_on_the_global_batch(tmp_path):
    from crd.criterion import CRDLoss

    out = tmp_path / "crd.pth"
    torchrun(str(Path(__file__).resolve()), ["crd", str(out)], tmp_path)
    result = torch.load(out, weights_only=True)
    assert result["identical"], "the ranks' CRD memories (or embeddings) differ"

    torch.manual_seed(0)  # rank 0's initialisation, which every rank took
    reference = CRDLoss(crd_opt())
    for step in range(len(CRD_SIZES)):
        parts = [crd_batch(step, rank) for rank in range(WORLD)]
        reference(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))
    for name, value in reference.state_dict().items():  # embeddings (never stepped here), banks and Z
        torch.testing.assert_close(result["state"][name], value, rtol=1e-6, atol=1e-6, msg=name)



# --- teachers with torchvision's weights ------------------------------------------------------------


def test_torchvision_teacher_loads_from_the_hub_cache(tmp_path, monkeypatch):
    """torchvision's own files (here: its untrained networks, saved where torch.hub keeps downloads) load
    strictly into our models through train_student's teacher loading."""
    import torchvision

    import train_student
    from helper.pretrained import TORCHVISION_WEIGHTS, hub_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    builders = {"ResNet18": "resnet18", "ResNet34": "resnet34", "ResNet50_Imagenet": "resnet50",
                "MobileNetV2_Imagenet": "mobilenet_v2", "ShuffleV2_Imagenet": "shufflenet_v2_x1_0"}
    assert set(builders) == set(TORCHVISION_WEIGHTS)
    for arch, name in builders.items():
        reference = getattr(torchvision.models, name)().state_dict()
        hub_file(arch).parent.mkdir(parents=True, exist_ok=True)
        torch.save(reference, hub_file(arch))
        opt, _ = train_student.parse_option(["--teacher_weights", "torchvision", "--model_t", arch])
        teacher = train_student.load_teacher(opt, num_classes=1000)
        for key, value in teacher.state_dict().items():
            assert torch.equal(value, reference[key]), f"{arch}: {key}"


def test_torchvision_teacher_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from helper.errors import UserError
    from helper.pretrained import torchvision_state_dict

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY"):  # the discard port: refused at once, no network needed
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(UserError) as err:
        torchvision_state_dict("ResNet34", 1000)
    message = str(err.value)
    assert "\n" not in message and "resnet34-b627a593.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(UserError, match="1000 classes"):
        torchvision_state_dict("ResNet18", 10)
    with pytest.raises(UserError, match="no ImageNet weights for 'MobileNetV1'"):
        torchvision_state_dict("MobileNetV1", 1000)


@pytest.mark.parametrize("args", [["--teacher_weights", "torchvision"],
                                  ["--teacher_weights", "torchvision", "--model_t", "ResNet34", "--path_t", "t.pth"],
                                  []])
def test_teacher_source_must_be_one_of_path_or_torchvision(args):
    import train_student

    with pytest.raises(SystemExit):
        train_student.parse_option(args)


# --- the ImageNet script ----------------------------------------------------------------------------


def test_imagenet_script_splits_the_global_batch_and_passes_the_rendezvous(tmp_path):
    """SemCKD's global 256 over 2 nodes x 8 processes is 16 per process; torchrun gets the node flags."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "CALLS": str(tmp_path / "calls"), "NNODES": "2", "NODE_RANK": "1",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}
    subprocess.run(["bash", str(ROOT / "scripts" / "run_imagenet_distill.sh"), "--num_workers", "4"], env=env,
                   check=True, timeout=60)
    check, *calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    assert check[:3] == ["scripts/check_prereqs.py", "--prog", "run_imagenet_distill.sh"]  # before any run
    assert [c[c.index("--distill") + 1] for c in calls] == ["kd", "hint", "attention", "crd", "crd"]
    for call in calls:
        assert call[:11] == ["-m", "helper.torchrun", "--nnodes", "2", "--node_rank", "1", "--nproc_per_node",
                             "8", "--master_addr", "10.0.0.1", "--master_port"]
        flag = {name: call[call.index(name) + 1] for name in ("--batch_size", "--learning_rate", "--lr_decay_epochs",
                                                                "--weight_decay", "--epochs", "--model_t")}
        assert flag == {"--batch_size": "16", "--learning_rate": "0.1", "--lr_decay_epochs": "30,60",
                        "--weight_decay": "1e-4", "--epochs": "90", "--model_t": "ResNet34"}
        assert call[12] == "train_student.py"
        assert call[-2:] == ["--num_workers", "4"]
    env["NPROC_PER_NODE"] = "3"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "run_imagenet_distill.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a multiple of 6 processes" in proc.stderr


if __name__ == "__main__" and sys.argv[1:2] == ["crd"]:
    crd_worker(Path(sys.argv[2]))
