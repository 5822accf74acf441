"""Contrastive model inversion (datafree_kd.py --method cmi): the contrastive loss by hand, the local view's
resized crop, the head and feature hooks, the generator re-draw, a round that feeds the bank, a run end to
end, the reference's command lines, and a stop then resume that is bit-identical."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
import torch.nn.functional as F
from test_datafree import (
    RESUME_ARGS,
    TINY,
    _assert_same,
    _final,
    frozen,
    normalizer,
    run_main,
    seeded,
    stop_then_resume,
    trained_teacher,  # noqa: F401 - a fixture
)
from test_shell_scripts import run as run_script
from test_shell_scripts import tree  # noqa: F401 - a fixture
from torch import nn

from datafree import run as df_run
from datafree.augment import random_resized_crop_flip
from datafree.cmi import (
    BANK_SIZE,
    HEAD_DIM,
    N_NEG,
    CMISynthesizer,
    InstanceMeans,
    MLPHead,
    contrastive_loss,
    feature_modules,
    reset_generator,
)
from datafree.generator import Generator
from datafree.models import build_network
from datafree.options import parse_option

CMI = ["--method", "cmi", "--bn", "1", "--oh", "1", "--adv", "0.5", "--cr", "0.8", "--cr_T", "0.2"]


def test_contrastive_loss_by_hand():
    """Two batch rows and one bank row, the head = L2-normalisation: each row's cross-entropy written out."""
    local = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    global_ = torch.tensor([[3.0, 0.0], [1.0, 1.0]], requires_grad=True)
    bank_local, bank_global = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    T = 0.5
    loss = contrastive_loss(lambda x: F.normalize(x, dim=1), local, global_, bank_local, bank_global, T)
    r = 1 / math.sqrt(2)
    # normalised anchors (local side) and candidates (global side), in the order [batch; bank]
    anchors = [(1, 0), (0, 1), (r, r)]
    candidates = [(1, 0), (r, r), (0, 1)]
    rows = []
    for i, a in enumerate(anchors):
        logits = [(a[0] * c[0] + a[1] * c[1]) / T for c in candidates]
        rows.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    expected = (rows[0] + rows[1]) / 2 + rows[2]  # the batch's mean plus the bank's mean
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    assert not global_.grad.any() and local.grad.abs().sum() > 0  # the global side is detached in the logits
    empty = torch.zeros(0, 2)
    alone = contrastive_loss(lambda x: F.normalize(x, dim=1), local, global_, empty, empty, T)
    # an empty bank (the first round): one mean over the batch rows, candidates the batch only
    by_hand = []
    for i, a in enumerate(anchors[:2]):
        logits = [(a[0] * c[0] + a[1] * c[1]) / T for c in candidates[:2]]
        by_hand.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    assert math.isclose(alone.item(), sum(by_hand) / 2, rel_tol=1e-6)


def test_head_hooks_and_feature_layers():
    head = MLPHead(6, 4)
    out = head(torch.randn(5, 6))
    assert out.shape == (5, 4) and torch.allclose(out.norm(dim=1), torch.ones(5))
    assert [type(m) for m in head.head] == [nn.Linear, nn.ReLU, nn.Linear] and head.head[0].out_features == 6
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                        nn.BatchNorm2d(2)).eval()
    means = InstanceMeans(feature_modules(net, "resnet8"))
    x = torch.randn(3, 3, 5, 5)
    net(x)
    assert means.means == [None, None]  # inactive: nothing kept
    means.active = True
    net(x)
    expected = torch.cat([net[0](x).mean(dim=(2, 3)), net[3](net[2](net[1](net[0](x)))).mean(dim=(2, 3))], dim=1)
    assert torch.allclose(means.features(), expected, atol=1e-6)
    means.remove()
    r34 = build_network("resnet34", 10)
    stages = feature_modules(r34, "ResNet34_cifar")  # the reference's block inputs
    assert all(a is b for a, b in zip(stages, [r34.layer1, r34.layer2, r34.layer3, r34.layer4], strict=True))
    assert parse_option(["--teacher", "resnet34"]).teacher == "ResNet34_cifar"  # the name the run passes
    assert (HEAD_DIM, BANK_SIZE, N_NEG) == (256, 40960, 4096)  # the reference's datafree_kd.py


def test_generator_is_redrawn_from_the_round_generator():
    g = Generator(nz=16, ngf=8, img_size=32)
    reset_generator(g, seeded(0))
    first = {k: v.clone() for k, v in g.state_dict().items()}
    reset_generator(g, seeded(0))
    assert all(torch.equal(first[k], v) for k, v in g.state_dict().items())
    assert abs(g.l1[0].weight.std().item() - 0.02) < 0.002 and not g.l1[0].bias.any()
    bn = g.conv_blocks[0]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and not bn.bias.any()


def test_local_view_is_a_resized_crop_of_the_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).requires_grad_()
    whole = random_resized_crop_flip(x, seeded(0), scale=(1, 1), ratio=(1, 1))
    for b in range(2):  # the whole image, maybe mirrored
        assert torch.allclose(whole[b], x[b]) or torch.allclose(whole[b], x[b].flip(-1))
    quarter = random_resized_crop_flip(x, seeded(1), scale=(0.25, 0.25), ratio=(1, 1))
    quarter.sum().backward()
    assert x.grad.abs().sum() > 0
    for b in range(2):  # a 4x4 window resized to 8x8 (corners on corners), maybe mirrored
        found = False
        for y0 in range(5):
            for x0 in range(5):
                window = x[b:b + 1, :, y0:y0 + 4, x0:x0 + 4].detach()
                up = F.interpolate(window, size=(8, 8), mode="bilinear", align_corners=True)[0]
                found |= torch.allclose(quarter[b].detach(), up, atol=1e-4) or torch.allclose(
                    quarter[b].detach(), up.flip(-1), atol=1e-4)
        assert found


def test_a_round_keeps_its_best_batch_and_feeds_the_bank(trained_teacher, tmp_path):  # noqa: F811
    teacher = frozen(trained_teacher)
    student = build_network("resnet8", 10).eval()
    synth = CMISynthesizer(teacher, student, Generator(nz=16, ngf=8, img_size=32), 16, 10, (3, 32, 32),
                           feature_modules(teacher.network, "resnet8"), tmp_path / "bank.f32", iterations=3,
                           lr_g=1e-3, synthesis_batch_size=4, adv=0.5, bn=1, oh=1, cr=0.8, cr_T=0.2,
                           normalizer=normalizer(), bank_size=12, n_neg=6)
    synth.create_files("run")
    dim = sum(m.num_features for m in teacher.network.modules() if isinstance(m, nn.BatchNorm2d))
    assert synth.head.head[0].in_features == dim and synth.bank.shape == (2 * dim,)
    head_before = [p.detach().clone() for p in synth.head.parameters()]
    first = synth.synthesize(seeded(0))
    assert first.images.shape == (4, 3, 32, 32) and synth.bank.count == 4
    assert all(math.isfinite(v) for v in first.terms.values()) and first.terms["syn_cr"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(head_before, synth.head.parameters(), strict=True))
    for r in range(3):  # the ring: 16 rows added to 12 slots; negatives are drawn from every held row
        synth.synthesize(seeded(r + 1))
    assert synth.bank.count == 16 and len(synth._negatives(seeded(9))[0]) == 6
    rows = synth.bank.newest(4)
    local, global_ = rows.chunk(2, dim=1)
    assert local.shape == global_.shape == (4, dim) and not torch.equal(local, global_)  # two views' features
    synth.remove_hooks()


def test_a_tiny_cmi_run_end_to_end(tmp_path, trained_teacher, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    run_main(df_run.main, [*TINY, *CMI, "--epochs", "2", "--teacher_ckpt", str(trained_teacher)])
    folder = tmp_path / "save" / "datafree" / "cmi-synthetic-resnet8-resnet8"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["pool"] for r in rows] == [16, 32]
    assert all(math.isfinite(r["loss"]) and r["syn_cr"] > 0 and math.isfinite(r["syn_adv"]) for r in rows)
    state = torch.load(folder / "ckpt_last.pth", weights_only=True)
    bank = state["synthesizer"]["bank"]
    assert bank["count"] == 32 and bank["capacity"] == 32  # one row per kept image; room for the schedule
    assert json.loads((folder / "results.json").read_text())["epochs"] == 2
    assert (folder / "bank.f32").stat().st_size == 32 * bank["shape"][0] * 4


@pytest.fixture(scope="module")
def uninterrupted_cmi(tmp_path_factory, trained_teacher) -> dict:  # noqa: F811
    folder = tmp_path_factory.mktemp("uninterrupted_cmi")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        run_main(df_run.main, [*RESUME_ARGS, *CMI, "--teacher_ckpt", str(trained_teacher)])
    return {**_final(folder), "head": _head(folder)}


def _head(folder) -> dict:
    state = torch.load(next(folder.rglob("ckpt_last.pth")), weights_only=True)["synthesizer"]
    return {"head": state["head"], "bank": next(folder.rglob("bank.f32")).read_bytes()}


def test_cmi_stop_then_resume_is_bit_identical(tmp_path, trained_teacher, uninterrupted_cmi,  # noqa: F811
                                               monkeypatch):
    """Stopped in epoch 3 after KD step 2 of round 1 (the bank's journal then holds rows not yet in its file)."""
    args = [*RESUME_ARGS, *CMI, "--teacher_ckpt", str(trained_teacher)]
    state = stop_then_resume(args, tmp_path, monkeypatch, 5, 1)
    assert state["position"] == {"epoch": 3, "complete": False, "round": 0, "step": 2}
    assert state["synthesizer"]["bank"]["journal"]  # the round's features travel in the checkpoint
    resumed = {**_final(tmp_path), "head": _head(tmp_path)}
    _assert_same(resumed, uninterrupted_cmi)
    assert resumed["head"]["bank"] == uninterrupted_cmi["head"]["bank"]
    for key, value in uninterrupted_cmi["head"]["head"].items():
        assert torch.equal(resumed["head"]["head"][key], value), key


def test_cmi_reference_lines_in_run_datafree(tree):  # noqa: F811
    """scripts/run_datafree.sh BASELINES=1 issues the reference's scripts/cmi_cifar.sh lines."""
    proc, calls = run_script("sh", tree, "scripts/run_datafree.sh", BASELINES="1")
    assert proc.returncode == 0, proc.stderr
    cmi = [parse_option(c[2:]) for c in calls if "cmi" in c]
    assert [(o.dataset, o.g_steps, o.cr, o.cr_T, o.adv, o.bn, o.oh, o.lr_g) for o in cmi] == [
        ("cifar10", 200, 0.8, 0.2, 0.5, 1.0, 1.0, 1e-3), ("cifar100", 5, 0.0, 0.2, 0.5, 1.0, 1.0, 1e-3)]
    assert all((o.batch_size, o.kd_steps, o.ep_steps, o.T, o.lr, o.student) == (256, 400, 400, 20, 0.1, "wrn_16_1")
               for o in cmi)
    assert parse_option(shlex.split("--method cmi")).cr == 1 and parse_option([]).cr_T == 0.5  # its defaults
