"""The in-memory loader: torchvision's augmentation outcomes and normalisation, the sampler's order,
bit-exact mid-epoch resumption, CRD batches, DDP shards; end to end through both CLIs."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_DATA, run_cli
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from dataset.memory import MemoryLoader
from helper.errors import UserError
from helper.sampler import ResumableSampler
from helper.setup import loader_kind

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100's


def random_set(n: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.permutation(np.arange(n) % classes)


def loader(images: np.ndarray, targets: np.ndarray, **kwargs) -> MemoryLoader:
    return MemoryLoader(images, targets, MEAN, STD, device=torch.device("cpu"), **kwargs)


def epoch(memory: MemoryLoader, number: int, start_batch: int = 0) -> list[list[torch.Tensor]]:
    memory.set_position(number, start_batch)
    return list(memory)


# ----- augmentation: the same outcomes as torchvision's RandomCrop(32, padding=4) + flip ----------

@pytest.fixture(scope="module")
def outcomes_and_draws():
    """Every torchvision outcome of one image (bytes -> (row, col, flip)), and 4,096 loader draws of it."""
    image = random_set(1)[0][0]
    outcomes = {}
    for row in range(9):
        for col in range(9):
            for flip in (False, True):
                crop = TF.crop(TF.pad(Image.fromarray(image), 4, fill=0), row, col, 32, 32)
                outcomes[np.asarray(TF.hflip(crop) if flip else crop).tobytes()] = (row, col, flip)
    assert len(outcomes) == 9 * 9 * 2
    copies = np.repeat(image[None], 512, axis=0)
    # mean 0, std 1: the loader's output is pixels / 255, so the uint8 crop is recovered exactly
    memory = MemoryLoader(copies, np.zeros(512, np.int64), (0.0,) * 3, (1.0,) * 3, device=torch.device("cpu"),
                          batch_size=128)
    draws = []
    for number in range(8):
        for x, _ in epoch(memory, number):
            pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            draws += [p.numpy().tobytes() for p in pixels]
    return outcomes, draws


def test_crops_and_flips_are_exactly_torchvisions_outcomes(outcomes_and_draws):
    outcomes, draws = outcomes_and_draws
    assert set(draws) <= set(outcomes)
    assert set(draws) == set(outcomes)  # and every one of the 162 is hit


def test_offsets_are_uniform_and_half_the_crops_flipped(outcomes_and_draws):
    outcomes, draws = outcomes_and_draws
    picked = [outcomes[d] for d in draws]
    n = len(picked)
    for axis in (0, 1):  # chi-square, 8 degrees of freedom: 26.1 is the 0.1% critical value
        counts = Counter(p[axis] for p in picked)
        chi2 = sum((counts[v] - n / 9) ** 2 / (n / 9) for v in range(9))
        assert chi2 < 26.1, (axis, counts)
    flips = sum(p[2] for p in picked)
    assert abs(flips - n / 2) < 4 * math.sqrt(n / 4)


def test_eval_path_matches_totensor_normalize():
    images, targets = random_set(50)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    expected = torch.stack([reference(Image.fromarray(img)) for img in images])
    for channels_last in (False, True):
        memory = loader(images, targets, batch_size=16, train=False, channels_last=channels_last)
        batches = list(memory)
        assert len(batches) == len(memory) == 4 and batches[-1][0].shape[0] == 2  # last partial batch kept
        x = torch.cat([b[0] for b in batches])
        torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
        assert torch.equal(torch.cat([b[1] for b in batches]), torch.as_tensor(targets))
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert batches[0][0].is_contiguous(memory_format=layout) and batches[0][0].dtype == torch.float32


# ----- order and resumption ---------------------------------------------------------------------

def test_order_is_the_resumable_samplers():
    images, targets = random_set(150)
    memory = loader(images, targets, batch_size=64, variant="instance", seed=7)
    for number in (1, 2):
        batches = epoch(memory, number)
        sampler = ResumableSampler(range(150), seed=7)
        sampler.set_position(number, 0)
        assert torch.cat([b[2] for b in batches]).tolist() == list(sampler)
        assert [b[0].shape[0] for b in batches] == [64, 64, 22] and len(memory) == 3
        for _, y, index in batches:
            assert torch.equal(y, torch.as_tensor(targets)[index])


def test_mid_epoch_position_reproduces_the_rest_of_the_epoch_bit_exactly():
    images, targets = random_set(200)
    memory = loader(images, targets, batch_size=32, variant="crd", nce_k=20, seed=3)
    whole = epoch(memory, 5)
    epoch(memory, 6)  # something else in between, as a run that stopped later would
    tail = epoch(memory, 5, start_batch=4)
    assert len(tail) == len(whole) - 4
    for resumed, original in zip(tail, whole[4:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(resumed, original, strict=True))
    assert not torch.equal(whole[0][0], epoch(memory, 6)[0][0])  # other epochs draw otherwise


def test_crd_batches_carry_the_positive_then_negatives_of_other_classes():
    images, targets = random_set(120, classes=6)
    labels = torch.as_tensor(targets)
    for mode in ("exact", "relax"):
        x, y, index, contrast = epoch(loader(images, targets, batch_size=32, variant="crd", nce_k=40, mode=mode), 1)[0]
        assert x.shape == (32, 3, 32, 32) and contrast.shape == (32, 41) and contrast.dtype == torch.long
        if mode == "exact":
            assert torch.equal(contrast[:, 0], index)
        assert torch.equal(labels[contrast[:, 0]], y)
        assert (labels[contrast[:, 1:]] != y[:, None]).all()


def test_variants_yield_their_fields():
    images, targets = random_set(40)
    assert len(epoch(loader(images, targets, variant="plain"), 1)[0]) == 2
    assert len(epoch(loader(images, targets, variant="instance"), 1)[0]) == 3
    with pytest.raises(ValueError, match="variant"):
        loader(images, targets, variant="pairs")


def test_ddp_shards_are_disjoint_and_cover_the_set():
    images, targets = random_set(101)
    shards = []
    for rank in range(2):
        memory = loader(images, targets, batch_size=16, variant="instance", seed=1, rank=rank, world_size=2)
        shards.append(torch.cat([b[2] for b in epoch(memory, 3)]).tolist())
    # DistributedSampler's order: 51 per rank, the one extra index repeated to even the shards out
    assert len(shards[0]) == len(shards[1]) == 51 and set(shards[0]) | set(shards[1]) == set(range(101))
    assert len(set(shards[0]) & set(shards[1])) == 1
    evals = [torch.cat([b[1] for b in loader(images, np.arange(101), train=False, rank=r, world_size=2)]).tolist()
             for r in range(2)]
    assert sorted(evals[0] + evals[1]) == list(range(101))


# ----- choosing the loader ----------------------------------------------------------------------

def test_loader_choice():
    arrays = SimpleNamespace(name="cifar100", train_array=random_set(4))
    files = SimpleNamespace(name="imagenet", train_array=None)
    assert loader_kind(SimpleNamespace(loader="auto"), arrays) == "memory"
    assert loader_kind(SimpleNamespace(loader="auto"), files) == "torchvision"
    assert loader_kind(SimpleNamespace(loader="torchvision"), arrays) == "torchvision"
    with pytest.raises(UserError, match="--loader memory"):
        loader_kind(SimpleNamespace(loader="memory"), files)


# ----- end to end -------------------------------------------------------------------------------

def metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["memory", "torchvision"])
def test_teacher_trains_through_each_loader(tmp_path, kind):
    proc = run_cli("train_teacher.py", [*TINY_DATA, "--model", "resnet8", "--epochs", "2", "--loader", kind],
                   tmp_path)
    assert f"data: {kind} loader" in proc.stdout
    rows = metrics(tmp_path / "save/models/resnet8_synthetic_lr_0.05_decay_0.0005_trial_0")
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compile_reports_its_time_apart(tmp_path):
    # one step per epoch: the time is the compiler's (about 40 s cold, seconds from inductor's cache)
    args = [*TINY_DATA, "--model", "resnet8", "--epochs", "2", "--compile", "--syn_train_size", "32",
            "--syn_val_size", "32"]
    proc = run_cli("train_teacher.py", args, tmp_path)
    assert "compile time:" in proc.stdout.split("epoch 1, total time")[0]
    assert "compile time:" not in proc.stdout.split("epoch 1, total time")[1]
    rows = metrics(tmp_path / "save/models/resnet8_synthetic_lr_0.05_decay_0.0005_trial_0")
    assert all(math.isfinite(r["loss"]) for r in rows)
    # the compiled module keeps its own state_dict keys (RepDistiller's checkpoint format)
    best = torch.load(tmp_path / "save/models/resnet8_synthetic_lr_0.05_decay_0.0005_trial_0/resnet8_best.pth",
                      weights_only=True)
    assert not any(key.startswith("_orig_mod") for key in best["model"])


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_distillation_runs(run_student, tmp_path):
    # The student and the frozen teacher (its folded graph) are both compiled.
    proc = run_student("--compile", "--distill", "kd", "--syn_train_size", "32", "--syn_val_size", "32")
    assert "compile time:" in proc.stdout and "best accuracy:" in proc.stdout
    rows = metrics(tmp_path / "save/student_model/S:resnet8_T:resnet20_synthetic_kd_r:0.1_a:0.9_b:0.0_1")
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["loss_div"]) for r in rows)
