"""Data-free distillation (datafree_kd.py): the generator, the BN-statistics loss by hand, synthesis rounds
on a trained tiny teacher, first-order MAML and REPTILE meta-gradients, the bounded pool and its journal,
KD batches, the reference's command line, runs without any training image, kill and resume."""

from __future__ import annotations

import json
import math
import os
import pickle
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_cli, write_teacher
from test_shell_scripts import run as run_script
from test_shell_scripts import tree  # noqa: F401 - a fixture
from torch import nn

from datafree import data as df_data
from datafree import run as df_run
from datafree.augment import Normalizer, random_crop_flip, to_uint8
from datafree.criterions import jsdiv, kldiv
from datafree.generator import Generator
from datafree.hooks import BNStatHooks
from datafree.models import build_network, canonical_arch, load_teacher
from datafree.options import parse_option
from datafree.pool import ImagePool, kd_batch
from datafree.synthesis import (
    REPTILE_SCALE,
    DeepInvSyntheiszer,
    FastMetaSynthesizer,
    FastSynthesizer,
    GenerativeSynthesizer,
)
from dataset.base import channel_stats
from dataset.synthetic import generate
from helper.errors import run_cli as cli
from helper.teacher import FrozenTeacher

REFERENCE = ("--batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 --bn 10.0 --oh 0.4 --act 0 "
             "--balance 0 --T 20 --seed 0 --bn_mmt 0.9 --warmup 20 --epochs 220 --dataset cifar100 "
             "--method fast_meta --g_steps 10 --lr_z 0.01 --lr_g 2e-3 --student wrn16_2 --is_maml 1 --reset_l0 1 "
             "--reset_bn 0 --save_dir run/wrnS162-10 --log_tag wrnS162-10 --teacher_ckpt PATH_TO_TEACHER_CLASSIFIER")
SYN = ["--dataset", "synthetic", "--syn_classes", "10", "--syn_train_size", "256", "--syn_val_size", "64"]
# The reference's flags, small: 2 rounds of 2 synthesis steps and 3 KD steps per epoch.
TINY = [*SYN, "--device", "cpu", "--precision", "fp32", "--batch_size", "8", "--student", "resnet8", "--ngf", "8",
        "--nz", "16", "--g_steps", "2", "--kd_steps", "3", "--ep_steps", "6", "--bn", "10", "--oh", "0.4",
        "--adv", "1.1", "--T", "20", "--bn_mmt", "0.9", "--lr", "0.1", "--lr_g", "2e-3", "--lr_z", "0.01",
        "--seed", "3", "--save_images", "8"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory) -> Path:
    """resnet8 fitted for a few dozen steps to the 10-class synthetic set (so its BN statistics and logits
    mean something), saved as RepDistiller saves teachers."""
    (x, y), _ = generate(10, 256, 0, seed=0)
    mean, std = channel_stats(x)
    images = (torch.from_numpy(x).float().div(255) - torch.tensor(mean)) / torch.tensor(std)
    images, labels = images.permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
    torch.manual_seed(0)
    model = build_network("resnet8", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(40):
        index = torch.arange(step * 32, step * 32 + 32) % 256
        optimizer.zero_grad()
        F.cross_entropy(model(images[index]), labels[index]).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("teacher") / "save" / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": model.state_dict()}, path)
    return path


def frozen(path: Path) -> FrozenTeacher:
    network, _ = load_teacher(path, None, 10)
    return FrozenTeacher(network.eval().requires_grad_(False), preact=False).eval()


def normalizer() -> Normalizer:
    (x, _), _ = generate(10, 256, 0, seed=0)
    return Normalizer(*channel_stats(x), CPU)


def run_main(main, argv: list[str]) -> None:
    """A CLI in this process (no interpreter start-up), through run_cli; signal handlers put back after."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli(main, argv)
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----- networks and losses --------------------------------------------------------------------------
def test_generator_shapes_parameters_and_reference_keys():
    g = Generator(nz=256, ngf=64, img_size=32, nc=3)
    assert sum(p.numel() for p in g.parameters()) == 2_328_899
    keys = list(g.state_dict())
    assert len(keys) == 21 and keys[:2] == ["l1.0.weight", "l1.0.bias"] and keys[-1] == "conv_blocks.9.bias"
    out = g(torch.randn(4, 256))
    assert out.shape == (4, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    twin = g.clone()
    pairs = zip(g.parameters(), twin.parameters(), strict=True)
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in pairs)
    assert Generator(nz=16, ngf=8, img_size=32)(torch.randn(2, 16)).shape == (2, 3, 32, 32)


def test_reference_model_names_map_onto_ours():
    counts = {"wrn40_2": 2_255_156, "wrn16_2": 703_284, "wrn40_1": 569_780, "wrn16_1": 180_916,
              "resnet34": 21_328_292, "resnet18": 11_220_132, "vgg11": 9_277_284}  # models.md §3.6 (K=100)
    for name, count in counts.items():
        assert sum(p.numel() for p in build_network(name, 100).parameters()) == count, name
    keys = build_network("resnet18", 100).state_dict()
    assert "layer2.0.shortcut.0.weight" in keys and "linear.weight" in keys  # DAFL's keys, as FDF's files


def test_bn_statistics_loss_against_loops():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                        nn.BatchNorm2d(2)).eval()
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    hooks = BNStatHooks(net, mmt_rate=0.9)
    x = torch.randn(3, 3, 5, 5)

    def by_hand(mmt=None):
        total, feature = 0.0, x
        for i, layer in enumerate(net):
            if isinstance(layer, nn.BatchNorm2d):
                f = feature.detach()
                means, variances = [], []
                for c in range(f.shape[1]):
                    values = [f[n, c, h, w].item() for n in range(f.shape[0]) for h in range(f.shape[2])
                              for w in range(f.shape[3])]
                    mu = sum(values) / len(values)
                    means.append(mu)
                    variances.append(sum((v - mu) ** 2 for v in values) / len(values))
                if mmt is not None:
                    means = [0.1 * m + 0.9 * o for m, o in zip(means, mmt[i][0], strict=True)]
                    variances = [0.1 * v + 0.9 * o for v, o in zip(variances, mmt[i][1], strict=True)]
                for running, batch in ((layer.running_var, variances), (layer.running_mean, means)):
                    total += math.sqrt(sum((r - v) ** 2 for r, v in zip(running.tolist(), batch, strict=True)))
            feature = layer(feature)
        return total

    hooks.activate(True)
    net(x)
    assert math.isclose(hooks.loss().item(), by_hand(), rel_tol=1e-5)
    hooks.update_mmt()  # first update: the momentum estimate takes this batch's statistics
    old = {i: (h.mmt[0].tolist(), h.mmt[1].tolist()) for i, h in zip((1, 4), hooks.hooks, strict=True)}
    x = torch.randn(3, 3, 5, 5) * 2 + 1
    net(x)
    assert math.isclose(hooks.loss().item(), by_hand(old), rel_tol=1e-5)
    hooks.activate(False)
    net(x)
    assert all(h.r_feature is None for h in hooks.hooks)  # off outside synthesis
    hooks.remove()
    assert all(not bn._forward_hooks for bn in (net[1], net[4]))


def test_divergences_by_hand():
    torch.manual_seed(1)
    s, t, T = torch.randn(2, 3), torch.randn(2, 3), 4.0
    by_hand = 0.0
    for b in range(2):
        p = torch.softmax(t[b] / T, 0).tolist()
        q = torch.softmax(s[b] / T, 0).tolist()
        by_hand += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    assert math.isclose(kldiv(s, t, T=T).item(), by_hand / 2 * T * T, rel_tol=1e-5)
    p, q = torch.softmax(s / 3, 1)[0].tolist(), torch.softmax(t / 3, 1)[0].tolist()
    m = [min(max((a + b) / 2, 0.01), 0.99) for a, b in zip(p, q, strict=True)]
    clamp = [min(max(v, 0.01), 0.99) for v in p], [min(max(v, 0.01), 0.99) for v in q]
    js = sum(0.5 * mi * (math.log(mi) - math.log(a)) + 0.5 * mi * (math.log(mi) - math.log(b))
             for mi, a, b in zip(m, *clamp, strict=True))
    assert math.isclose(jsdiv(s[:1], t[:1], T=3).item(), js, rel_tol=1e-5)


def test_kl_gradient_stays_finite_for_a_confident_teacher():
    """The reference's kldiv takes probabilities, whose gradient is NaN where one underflows to 0."""
    student = torch.zeros(1, 3, requires_grad=True)
    teacher = torch.tensor([[0.0, 200.0, -200.0]], requires_grad=True)
    loss = kldiv(student, teacher)
    loss.backward()
    assert math.isclose(loss.item(), math.log(3), rel_tol=1e-5)  # p = (0, 1, 0): KL = log 1 − log(1/3)
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()
    reference = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="batchmean")
    assert torch.isnan(torch.autograd.grad(reference, teacher)[0]).any()  # what the fix avoids


# ----- synthesis --------------------------------------------------------------------------------------
def fast_synth(kind, teacher, **kwargs):
    torch.manual_seed(0)
    student = build_network("resnet8", 10)
    settings = dict(nz=16, num_classes=10, img_size=(3, 32, 32), iterations=3, lr_g=2e-3, lr_z=0.01,
                    synthesis_batch_size=8, adv=1.1, bn=10, oh=0.4, normalizer=normalizer(), warmup=0, bn_mmt=0.9)
    settings.update(kwargs)
    return kind(teacher, student, Generator(nz=16, ngf=8, img_size=32), **settings)


def test_one_synthesis_round_lowers_the_bn_loss(trained_teacher):
    teacher = frozen(trained_teacher)
    synth = fast_synth(FastSynthesizer, teacher, iterations=12, lr_g=0.02, lr_z=0.05, adv=0.0, oh=0.0, bn=1.0,
                       bn_mmt=0.0)
    result = synth.synthesize(seeded(0))
    assert result.terms["syn_bn"] < 0.8 * result.terms["syn_bn_first"], result.terms
    assert result.images.shape == (8, 3, 32, 32) and 0 <= result.images.min() and result.images.max() <= 1
    inv = DeepInvSyntheiszer(teacher, build_network("resnet8", 10), num_classes=10, img_size=(3, 32, 32),
                             iterations=12, lr_g=0.1, synthesis_batch_size=8, adv=1.0, bn=1.0, oh=0.0,
                             normalizer=normalizer())
    result = inv.synthesize(seeded(0))
    assert result.terms["syn_bn"] < 0.8 * result.terms["syn_bn_first"], result.terms
    assert 0 <= result.images.min() and result.images.max() <= 1  # pixels clipped to the valid range
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(p.grad is None for p in inv.student.parameters())  # the student is not differentiated


def capture_fast_generator(synth):
    """Wrap the round's clone so the test sees the fast generator and every gradient it receives."""
    seen = {"grads": []}
    original = synth.generator.clone

    def record(total):
        def hook(grad):
            total.add_(grad)  # returns None: the gradient itself is left as it is

        return hook

    def clone():
        fast = original()
        seen["fast"] = fast
        grads = [torch.zeros_like(p) for p in fast.parameters()]
        seen["grads"] = grads
        for p, total in zip(fast.parameters(), grads, strict=True):
            p.register_hook(record(total))
        return fast

    synth.generator.clone = clone
    return seen


def test_maml_meta_gradient_is_the_sum_of_the_fast_generators_gradients(trained_teacher):
    synth = fast_synth(FastMetaSynthesizer, frozen(trained_teacher), is_maml=1)
    seen = capture_fast_generator(synth)
    before = [p.detach().clone() for p in synth.generator.parameters()]
    synth.synthesize(seeded(1))
    lr = synth.meta_optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(2e-3 * 3)  # lr_g x g_steps
    rows = zip(synth.generator.parameters(), before, seen["grads"], seen["fast"].parameters(), strict=True)
    for p, old, total, fast in rows:
        assert torch.allclose(p.grad, total, rtol=1e-5, atol=1e-8)  # first-order MAML: the sum over iterations
        step = lr * total / (total.abs() + 1e-8)  # Adam's first step: lr·m̂/(√v̂ + eps) with m̂ = g, v̂ = g²
        assert torch.allclose(p.detach(), old - step, atol=1e-7)  # one meta step, after the round
        assert not torch.equal(fast.detach(), old)  # the inner loop moved the fast copy only


def test_reptile_meta_gradient_is_the_scaled_parameter_difference(trained_teacher):
    synth = fast_synth(FastMetaSynthesizer, frozen(trained_teacher), is_maml=0)
    seen = capture_fast_generator(synth)
    before = [p.detach().clone() for p in synth.generator.parameters()]
    synth.synthesize(seeded(1))
    for p, old, fast in zip(synth.generator.parameters(), before, seen["fast"].parameters(), strict=True):
        assert torch.allclose(p.grad, REPTILE_SCALE * (old - fast.detach()), atol=1e-6)
        assert not torch.equal(p.detach(), old)


def test_fast_trains_the_generator_itself_and_bn_momentum(trained_teacher):
    synth = fast_synth(FastSynthesizer, frozen(trained_teacher))
    before = [p.detach().clone() for p in synth.generator.parameters()]
    synth.synthesize(seeded(2))
    assert all(not torch.equal(p.detach(), old) for p, old in zip(synth.generator.parameters(), before, strict=True))
    assert all(h.mmt is not None for h in synth.hooks.hooks)  # --bn_mmt 0.9: the momentum estimate exists
    synth.remove_hooks()
    assert all(not m._forward_hooks for m in synth.teacher.modules() if isinstance(m, nn.BatchNorm2d))


def test_online_generator_adversarial_term_compares_the_student_with_the_teacher(trained_teacher):
    """The reference passes student=teacher, so its term is 0; here it is −D(student, teacher) on the batch."""
    teacher = frozen(trained_teacher)
    torch.manual_seed(0)
    student = build_network("resnet8", 10).eval()
    synth = GenerativeSynthesizer(teacher, student, Generator(nz=16, ngf=8, img_size=32), 16, (3, 32, 32),
                                  iterations=1, lr_g=1e-3, synthesis_batch_size=8, sample_batch_size=4, adv=1.0,
                                  criterion=nn.L1Loss(), normalizer=normalizer())
    before = [p.detach().clone() for p in synth.generator.parameters()]
    result = synth.synthesize(seeded(0))
    x = synth.normalizer(result.images)
    with torch.no_grad():
        expected = -F.l1_loss(student(x), teacher(x)).item()
    assert expected < 0 and math.isclose(result.terms["syn_adv"], expected, rel_tol=1e-3)
    assert all(not torch.equal(p.detach(), old) for p, old in zip(synth.generator.parameters(), before, strict=True))
    assert synth.sample(seeded(1)).shape == (4, 3, 32, 32)
    assert torch.equal(synth.sample(seeded(1)), synth.sample(seeded(1)))


def test_online_generator_baselines_run(tmp_path, trained_teacher, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for method, weights in (("dafl", ["--oh", "1", "--act", "0.001", "--balance", "20", "--adv", "0"]),
                            ("dfad", ["--adv", "1"])):
        run_main(df_run.main, [*TINY, *weights, "--method", method, "--epochs", "2", "--kd_steps", "2",
                               "--ep_steps", "4", "--teacher_ckpt", str(trained_teacher)])
        folder = tmp_path / "save" / "datafree" / f"{method}-synthetic-resnet8-resnet8"
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["pool"] for r in rows] == [8, 8]  # no pool: the latest batch, for the grids
        assert all(math.isfinite(r["loss"]) for r in rows)
    assert parse_option(["--method", "dafl"]).nz == 512 and parse_option(["--method", "dfq"]).nz == 256  # as FDF
    last = json.loads((folder / "results.json").read_text())["last_acc"]
    capsys.readouterr()
    run_main(df_run.main, [*SYN, "--device", "cpu", "--precision", "fp32", "--student", "resnet8", "--evaluate_only",
                           "--resume", str(folder / "resnet8_last.pth")])  # the reference's --evaluate_only
    assert f"[Eval] Acc={last:.4f}" in capsys.readouterr().out


def test_augmentation_is_differentiable_crop_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).requires_grad_()
    out = random_crop_flip(x, seeded(0), padding=1)
    out.sum().backward()
    assert out.shape == x.shape and x.grad.sum() > 0
    for b in range(2):  # each image is a shifted (maybe mirrored) window of itself, zeros outside
        found = False
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                padded = F.pad(x[b].detach(), (1, 1, 1, 1))[:, 1 + dy:9 + dy, 1 + dx:9 + dx]
                found |= torch.equal(out[b].detach(), padded) or torch.equal(out[b].detach(), padded.flip(-1))
        assert found


# ----- the pool ---------------------------------------------------------------------------------------
def test_pool_is_bounded_and_its_journal_survives_a_kill(tmp_path):
    pool = ImagePool(5, (4, 4, 3), CPU, tmp_path / "pool.u8")
    pool.create_file()
    batches = [torch.full((3, 4, 4, 3), i, dtype=torch.uint8) for i in (1, 2, 3)]
    pool.add(batches[0])
    state = pool.state()
    pool.flush()
    pool.add(batches[1])
    assert len(pool) == 5 and pool.newest(5)[:, 0, 0, 0].tolist() == [1, 1, 2, 2, 2]
    pool.add(batches[2])
    assert len(pool) == 5 and pool.newest(5)[:, 0, 0, 0].tolist() == [2, 2, 3, 3, 3]  # oldest dropped
    state = pool.state()  # the checkpoint holds images 4-9; the file has 1-3 only (killed before the flush)
    restored = ImagePool(5, (4, 4, 3), CPU, tmp_path / "pool.u8")
    restored.load(state)
    assert torch.equal(restored.images, pool.images) and restored.count == 9
    restored.load(state)  # replaying the journal twice changes nothing
    assert torch.equal(restored.images, pool.images)


def test_kd_batches_are_a_function_of_round_and_step(tmp_path):
    pool = ImagePool(20, (8, 8, 3), CPU, tmp_path / "pool.u8")
    pool.add(torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1).expand(20, 8, 8, 3).contiguous())
    mean, std = torch.zeros(3), torch.ones(3) / 255

    def batch(r, step):
        return kd_batch(pool, 5, r, step, 8, mean, std, channels_last=False)

    assert torch.equal(batch(1, 2), batch(1, 2)) and not torch.equal(batch(1, 2), batch(1, 3))
    ids = torch.cat([batch(1, s)[:, 0].amax(dim=(1, 2)) for s in range(3)])  # one pass: 8 + 8 + 4 images
    assert sorted(ids.round().long().tolist()) == list(range(20))


# ----- the command line and runs ----------------------------------------------------------------------
def test_reference_command_line_parses_with_its_meaning():
    opt = parse_option(shlex.split(REFERENCE))
    assert (opt.method, opt.batch_size, opt.lr, opt.kd_steps, opt.ep_steps) == ("fast_meta", 256, 0.2, 400, 400)
    assert (opt.adv, opt.bn, opt.oh, opt.act, opt.balance, opt.T) == (1.1, 10.0, 0.4, 0, 0, 20)
    assert (opt.seed, opt.bn_mmt, opt.warmup, opt.epochs, opt.dataset) == (0, 0.9, 20, 220, "cifar100")
    assert (opt.g_steps, opt.lr_z, opt.lr_g, opt.is_maml, opt.reset_l0, opt.reset_bn) == (10, 0.01, 2e-3, 1, 1, 0)
    assert opt.student == "wrn_16_2" and opt.teacher is None and opt.teacher_ckpt == "PATH_TO_TEACHER_CLASSIFIER"
    assert (opt.save_dir, opt.log_tag, opt.synthesis_batch_size, opt.weight_decay) == (
        "run/wrnS162-10", "wrnS162-10", 256, 1e-4)
    ours = parse_option(["--model_s", "wrn_16_2", "--path_t", "x.pth", "--model_t", "wrn40_2", "--learning_rate",
                         "0.2", "--kd_T", "20", "--weight_decay", "1e-4", "--data_folder", "d", "--gpu", "0"])
    assert (ours.student, ours.teacher_ckpt, ours.teacher, ours.lr, ours.T, ours.data_folder) == (
        "wrn_16_2", "x.pth", "wrn_40_2", 0.2, 20, "d")
    default = parse_option(["--teacher", "resnet34"])
    assert default.teacher_ckpt == os.path.join("checkpoints", "pretrained", "cifar100_resnet34.pth")


def test_bad_options_are_one_line_errors(tmp_path, capsys, monkeypatch):
    for args, text in ((["--method", "cmix"], "invalid choice"), (["--cr_T", "0"], "--cr_T must be positive"),
                       (["--kd_steps", "5", "--ep_steps", "4"],
                       "--ep_steps"), (["--student", "nonet"], "unknown model"), (["--world_size", "2"], "one process"),
                       (["--teacher_ckpt", str(tmp_path / "none.pth")], "checkpoint not found")):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exit_:
            run_main(df_run.main, [*SYN, "--device", "cpu", "--bn", "1", *args])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and text in err and len(err.splitlines()) == 1, err


def test_reference_command_runs_and_the_kd_loss_falls(tmp_path, trained_teacher):
    """The reference's line with small sizes appended (argparse: the last value wins), through the alias."""
    small = [*TINY, "--epochs", "4", "--warmup", "1", "--teacher_ckpt", str(trained_teacher), "--save_dir",
             str(tmp_path / "images"), "--ep_steps", "3"]
    run_cli("faster_data_free_kd.py", [*shlex.split(REFERENCE), *small], tmp_path)
    folder = tmp_path / "save" / "datafree" / "fast_meta-synthetic-resnet8-resnet8-wrnS162-10"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and "loss" not in rows[0]  # epoch 1: warm-up
    losses = [r["loss"] for r in rows[1:]]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.85 * losses[0], losses
    assert [r["pool"] for r in rows] == [8, 16, 24, 32]
    results = json.loads((folder / "results.json").read_text())
    assert results["epochs"] == 4 and 0 <= results["last_acc"] <= 100
    best = torch.load(folder / "resnet8_best.pth", weights_only=True)
    assert torch.equal(best["model"]["conv1.weight"], best["state_dict"]["conv1.weight"])  # RD's and FDF's keys
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        ".lock", "pool.owner", "pool.u8", *(f"synthetic_00{i}.png" for i in range(1, 5))]
    assert (tmp_path / "images" / "pool.u8").stat().st_size == 32 * 32 * 32 * 3  # bounded by the schedule
    config = json.loads((folder / "config.json").read_text())
    assert config["options"]["method"] == "fast_meta" and config["teacher"]["arch"] == "resnet8"
    assert list((tmp_path / "save" / "datafree_tensorboards").rglob("events.out.tfevents.*"))


def _fake_cifar10(root: Path) -> tuple[str, np.ndarray]:
    """cifar-10-batches-py with the test batch and meta only: no training batch exists to be read."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (40, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": data, "labels": [i % 10 for i in range(40)]}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, handle)
    import hashlib

    return hashlib.md5((folder / "test_batch").read_bytes()).hexdigest(), data


def test_no_training_image_is_read(tmp_path, monkeypatch):
    md5, data = _fake_cifar10(tmp_path / "data")
    monkeypatch.setattr(df_data.datasets.CIFAR10, "test_list", [["test_batch", md5]])

    def no_download(*args):
        raise AssertionError("tried to fetch CIFAR-10: the test batch is there")

    monkeypatch.setattr(df_data.cifar10, "_download", no_download)
    opt = parse_option(["--dataset", "cifar10", "--data_root", str(tmp_path / "data")])
    test = df_data.load_test_data(opt)
    assert test.num_classes == 10 and np.array_equal(test.images.transpose(0, 3, 1, 2).reshape(40, -1), data)
    teacher = write_teacher(tmp_path, "resnet8")
    runs = []
    original_fit = df_run.DataFreeRun.fit

    def fit(self, resume):
        runs.append(self)
        original_fit(self, resume)

    monkeypatch.setattr(df_run.DataFreeRun, "fit", fit)
    monkeypatch.chdir(tmp_path)
    run_main(df_run.main, [*TINY[len(SYN):], "--dataset", "cifar10", "--data_root", str(tmp_path / "data"),
                           "--epochs", "1", "--teacher_ckpt", str(teacher), "--method", "fast"])
    assert sorted(p.name for p in (tmp_path / "data" / "cifar-10-batches-py").iterdir()) == [
        "batches.meta", "test_batch"]
    (run,) = runs
    bns = [m for m in run.teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m._forward_hooks for m in bns)  # hooks removed at the end
    assert not run.teacher.training and not any(p.requires_grad for p in run.teacher.parameters())


def test_teacher_checkpoint_formats(tmp_path):
    torch.manual_seed(0)
    model = build_network("wrn_16_1", 10)
    fdf = tmp_path / "checkpoints" / "pretrained" / "cifar10_wrn16_1.pth"
    fdf.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, fdf)
    loaded, arch = load_teacher(fdf, "wrn16_1", 10)  # the reference's name and format, DataParallel keys
    assert arch == "wrn_16_1" and torch.equal(loaded.fc.weight, model.fc.weight)
    rd = write_teacher(tmp_path, "resnet8")  # RepDistiller's file: the architecture from its folder
    assert load_teacher(rd, None, 10)[1] == "resnet8"
    with pytest.raises(Exception, match="does not fit architecture"):
        load_teacher(fdf, "resnet8", 10)


# ----- kill and resume --------------------------------------------------------------------------------
RESUME_ARGS = [*TINY, "--epochs", "4", "--warmup", "1", "--method", "fast_meta", "--save_images", "0"]


def _final(folder: Path, name: str | None = None) -> dict:
    run = folder / "save" / "datafree" / name if name else next((folder / "save" / "datafree").iterdir())
    return {"student": torch.load(run / "resnet8_last.pth", weights_only=True)["model"],
            "generator": torch.load(run / "generator.pth", weights_only=True)["state_dict"],
            "epochs": [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()]}


def _assert_same(a: dict, b: dict) -> None:
    assert a["epochs"] == b["epochs"] == [1, 2, 3, 4]
    for part in ("student", "generator"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


def _start(folder: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "datafree_kd.py"), *args], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint(folder: Path) -> Path | None:
    found = list((folder / "save").rglob("ckpt_last.pth"))
    return found[0] if found else None


def _wait_for_new_checkpoint(folder: Path, proc: subprocess.Popen, after: float = 0.0) -> None:
    """Until a ckpt_last.pth newer than ``after`` (mtime) is there, while the process runs."""
    deadline = time.time() + 240
    while _checkpoint(folder) is None or _checkpoint(folder).stat().st_mtime_ns <= after:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, trained_teacher) -> dict:
    folder = tmp_path_factory.mktemp("uninterrupted")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        run_main(df_run.main, [*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher)])
    finally:
        os.chdir(cwd)
    return _final(folder)


def stop_then_resume(args: list[str], folder: Path, monkeypatch, at_round: int, at_step: int) -> dict:
    """Run ``args`` in ``folder`` with a stop request after KD step ``at_step`` (0-indexed) of synthesis round
    ``at_round`` (1-indexed, counted over the run), check it exits 75, resume it; the stopped checkpoint's state."""
    monkeypatch.chdir(folder)
    kd_images = df_run.DataFreeRun._kd_images

    def request_stop(self, step):
        if self.synth.ep == at_round and step == at_step:
            self.stop.local_stop = True
        return kd_images(self, step)

    monkeypatch.setattr(df_run.DataFreeRun, "_kd_images", request_stop)
    with pytest.raises(SystemExit) as stopped:
        run_main(df_run.main, args)
    assert stopped.value.code == 75
    state = torch.load(next(folder.rglob("ckpt_last.pth")), weights_only=True)
    monkeypatch.setattr(df_run.DataFreeRun, "_kd_images", kd_images)
    run_main(df_run.main, [*args, "--resume", "auto"])
    return state


def test_stop_mid_round_then_resume_is_bit_identical(tmp_path, trained_teacher, uninterrupted, monkeypatch):
    """A stop request at a chosen KD step (epoch 2, round 2, after step 2 of 3): the checkpoint holds the
    position inside the round, and the resumed run skips the round's synthesis and replays its last step."""
    state = stop_then_resume([*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher)], tmp_path, monkeypatch, 4, 1)
    assert state["position"] == {"epoch": 2, "complete": False, "round": 1, "step": 2}
    _assert_same(_final(tmp_path), uninterrupted)


def test_sigterm_and_sigkill_then_resume_are_bit_identical(tmp_path, trained_teacher, uninterrupted):
    args = [*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher)]
    work = tmp_path / "stopped"
    work.mkdir()
    proc = _start(work, args)
    _wait_for_new_checkpoint(work, proc)
    proc.send_signal(signal.SIGTERM)  # lands in epoch 2 (a synthesis round or a KD step) or just after epoch 1
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, (out, err)
    assert ("stopped by SIGTERM at epoch 2" in out or "stopped by SIGTERM after epoch 1" in out) and (
        "--resume auto" in out), out
    saved = _checkpoint(work).stat().st_mtime_ns
    proc = _start(work, [*args, "--resume", "auto"])
    _wait_for_new_checkpoint(work, proc, after=saved)
    proc.send_signal(signal.SIGSTOP)  # wherever it is, even between the checkpoint and the pool file's write
    proc.kill()
    proc.wait()
    run_cli("datafree_kd.py", [*args, "--resume", "auto"], work)
    _assert_same(_final(work), uninterrupted)


def _one_line_refusal(args: list[str], capsys, text: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_main(df_run.main, args)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and text in err and len(err.splitlines()) == 1, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_shared_save_dir_is_held_by_one_run(tmp_path, trained_teacher, uninterrupted, monkeypatch, capsys):
    """The issue's case: run A killed, run B started on A's --save_dir, A resumed. While A lives, B stops at
    the lock; once A is dead B is refused A's pool; A resumes bit-identically; a B that overwrites A's pool
    with --overwrite makes A's later --resume a one-line refusal instead of a silent mix."""
    images = tmp_path / "images"
    a_args = [*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher), "--save_dir", str(images)]
    b_args = [*a_args, "--log_tag", "b", "--epochs", "1"]
    a_name = "fast_meta-synthetic-resnet8-resnet8"
    a_files = [tmp_path / "save" / "datafree" / a_name, tmp_path / "save" / "datafree_tensorboards", images]
    monkeypatch.chdir(tmp_path)
    proc = _start(tmp_path, a_args)
    _wait_for_new_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGSTOP)  # alive, holding its folders, writing nothing while we look
    try:
        before = [_snapshot(folder) for folder in a_files]
        for extra in ([], ["--overwrite"], ["--log_tag", "", "--resume", "auto"]):
            _one_line_refusal([*b_args, *extra], capsys, "is in use by a running process (pid")
        assert [_snapshot(folder) for folder in a_files] == before  # nothing of A's written or removed
    finally:
        proc.kill()
        proc.wait()
    _one_line_refusal(b_args, capsys, "holds the image pool of the run in")  # dead A: its pool stays A's
    run_main(df_run.main, [*a_args, "--resume", "auto"])  # the kill released A's lock
    _assert_same(_final(tmp_path, a_name), uninterrupted)
    run_main(df_run.main, [*b_args, "--overwrite"])  # explicitly: A's pool is lost
    _one_line_refusal([*a_args, "--resume", "auto", "--epochs", "5"], capsys, "now belongs to the run in")


def test_save_dir_that_is_a_file_is_one_line(tmp_path, trained_teacher, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    for path in ("afile", "afile/below"):
        _one_line_refusal([*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher), "--save_dir", path], capsys,
                          "--save_dir afile")


def test_a_finished_run_extended_by_epochs_equals_the_longer_run(tmp_path, trained_teacher, uninterrupted,
                                                                 monkeypatch):
    """Two epochs, finished (its pool sized 32 by its schedule), then --resume --epochs 4: the pool grows to the
    longer schedule's 64 and the result is the uninterrupted 4-epoch run's, bit for bit."""
    monkeypatch.chdir(tmp_path)
    args = [*RESUME_ARGS, "--teacher_ckpt", str(trained_teacher)]
    run_main(df_run.main, [*args, "--epochs", "2"])
    assert (next(tmp_path.rglob("pool.u8"))).stat().st_size == 32 * 32 * 32 * 3
    run_main(df_run.main, [*args, "--resume", "auto"])
    _assert_same(_final(tmp_path), uninterrupted)
    assert (next(tmp_path.rglob("pool.u8"))).stat().st_size == 64 * 32 * 32 * 3


def test_to_uint8_truncates_as_the_reference_png_writer():
    x = torch.tensor([0.0, 0.5, 0.999, 1.2, -0.1]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 127, 254, 255, 0]


# (teacher, student, adv, oh) of the reference's fast_cifar.sh, each at (g_steps, lr_z, lr_g) 2/5/10.
PAIRS = [("resnet34", "resnet18", 1.33, 0.5), ("vgg11", "resnet18", 1.0, 0.5), ("wrn_40_2", "wrn_16_1", 1.1, 0.4),
         ("wrn_40_2", "wrn_40_1", 1.1, 0.4), ("wrn_40_2", "wrn_16_2", 1.1, 0.4)]
BUDGETS = [(2, 0.015, 5e-3), (5, 0.01, 3e-3), (10, 0.01, 2e-3)]


@pytest.mark.parametrize("how", ["sh", "dash"])
def test_run_datafree_script_issues_the_references_settings(tree, how):  # noqa: F811
    proc, calls = run_script(how, tree, "scripts/run_datafree.sh", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 15 and all(c[:2] == ["python", "datafree_kd.py"] and c[-2:] == ["--device", "cpu"]
                                     for c in calls)
    expected = [(t, s, adv, oh, *budget) for t, s, adv, oh in PAIRS for budget in BUDGETS]
    wrn = "./save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth"  # no reference file here: RepDistiller's teacher
    for call, (teacher, student, adv, oh, steps, lr_z, lr_g) in zip(calls, expected, strict=True):
        opt = parse_option(call[2:])
        assert (opt.method, opt.dataset, opt.batch_size, opt.lr, opt.kd_steps, opt.epochs, opt.warmup, opt.T) == (
            "fast_meta", "cifar100", 256, 0.2, 400, 220, 20, 20)
        assert (opt.student, opt.adv, opt.oh, opt.bn, opt.bn_mmt, opt.is_maml, opt.reset_l0) == (
            canonical_arch(student), adv, oh, 10.0, 0.9, 1, 1)
        assert (opt.g_steps, opt.lr_z, opt.lr_g) == (steps, lr_z, lr_g)
        want = wrn if teacher == "wrn_40_2" else f"checkpoints/pretrained/cifar100_{teacher}.pth"
        assert opt.teacher_ckpt == want and opt.teacher in (None, canonical_arch(teacher))
    proc, calls = run_script(how, tree, "scripts/run_datafree.sh", BASELINES="1")
    assert len(calls) == 18 and [parse_option(c[2:]).method for c in calls[15:]] == ["deepinv", "cmi", "cmi"]


def test_run_datafree_demo_trains_a_teacher_then_two_students(tree):  # noqa: F811
    proc, calls = run_script("sh", tree, "scripts/run_datafree.sh", DEMO="1", PY="python")
    assert proc.returncode == 0, proc.stderr
    assert calls[0][:2] == ["python", "train_teacher.py"] and "synthetic" in calls[0]
    teacher = "save/models/resnet20_synthetic_lr_0.05_decay_0.0005_trial_datafree_demo/resnet20_best.pth"
    methods = [parse_option(c[2:]) for c in calls[1:3]]
    assert [m.method for m in methods] == ["fast_meta", "deepinv"]
    assert all(m.teacher_ckpt == teacher and m.dataset == "synthetic" for m in methods)
    assert "fast_meta" in proc.stdout and "deepinv" in proc.stdout
