"""BSS: the loss, base samples, attack classes, one attack step by hand, the attack on a trained tiny
teacher, the schedule, a real step, many teacher families, runs with both loaders."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from conftest import write_teacher
from method_checks import build_method, check_e2e, nets
from torch import nn

from distiller_zoo.BSS import BSS, BSSAttacker, bss_schedule, sample_attack_classes, select_base_samples
from distiller_zoo.registry import DistillBatch, Networks, Weights, get_method
from helper.objectives import DistillObjective
from helper.teacher import FrozenTeacher


def test_loss_is_kl_at_T_without_T_squared():
    torch.manual_seed(0)
    z_s, z_t, T = torch.randn(3, 4), torch.randn(3, 4), 3.0
    total = 0.0
    for b in range(3):
        p_t = [math.exp(v / T) for v in z_t[b].tolist()]
        p_s = [math.exp(v / T) for v in z_s[b].tolist()]
        p_t = [v / sum(p_t) for v in p_t]
        p_s = [v / sum(p_s) for v in p_s]
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    assert math.isclose(BSS(T)(z_s, z_t).item(), total / 3, rel_tol=1e-5)


def test_base_samples_are_both_correct_and_the_most_different():
    torch.manual_seed(0)
    z_t, z_s = torch.randn(8, 5), torch.randn(8, 5)
    y = z_t.argmax(1).clone()
    y[1] = (y[1] + 1) % 5  # teacher wrong on sample 1
    for b in range(8):  # student correct except on sample 4
        z_s[b, y[b]] = z_s[b].max() + (-10.0 if b == 4 else 0.5)
    both = [b for b in range(8) if b not in (1, 4)]
    assert select_base_samples(z_s, z_t, y, 32).tolist() == both

    def score(b):
        p_t, p_s = F.softmax(z_t[b], 0), F.softmax(z_s[b], 0)
        return sum((p_t[c] - p_s[c]).item() ** 2 for c in range(5) if c != y[b])

    expected = sorted(both, key=score, reverse=True)[:3]
    assert select_base_samples(z_s, z_t, y, 3).tolist() == expected


def test_attack_classes_follow_the_teacher_scores_off_its_top_class():
    logits = torch.tensor([[3.0, 0.0, 1.0, -1.0, 2.0]]).repeat(40000, 1)
    torch.manual_seed(0)
    drawn = sample_attack_classes(logits)
    assert (drawn != 0).all()  # never the teacher's top-1
    p = F.softmax(logits[0], 0)[1:]
    expected = p / p.sum()
    counts = torch.bincount(drawn, minlength=5)[1:].float() / drawn.numel()
    assert torch.allclose(counts, expected, atol=0.01)
    torch.manual_seed(0)
    assert torch.equal(sample_attack_classes(logits[:100]), drawn[:100])  # torch's generator: reproducible


def test_one_attack_step_by_hand_on_a_linear_teacher():
    """softmax(Wx + b): d(p_a - p_y)/dx = W^T (p_a (e_a - p) - p_y (e_y - p)), by loops."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.randn(2, 1, 2, 3, dtype=torch.float64)
    y = model(x).argmax(1)  # correct now: both samples move
    a = (y + 1) % 3
    got = BSSAttacker(step_alpha=0.3, num_steps=1, eps=1e-4).attack(model, x, y, a)
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    for n in range(2):
        flat = x[n].flatten().tolist()
        z = [sum(weight[k, d].item() * flat[d] for d in range(6)) + bias[k].item() for k in range(3)]
        e = [math.exp(v) for v in z]
        p = [v / sum(e) for v in e]
        yi, ai = y[n].item(), a[n].item()
        dz = [p[ai] * ((k == ai) - p[k]) - p[yi] * ((k == yi) - p[k]) for k in range(3)]
        g = [sum(weight[k, d].item() * dz[k] for k in range(3)) for d in range(6)]
        norm = math.sqrt(sum(v * v for v in g))
        step = 0.3 * (p[yi] - p[ai] + 1e-4) / norm
        want = [min(max(flat[d] + step * g[d], -2.5), 2.5) for d in range(6)]
        assert torch.allclose(got[n].flatten(), torch.tensor(want, dtype=torch.float64), atol=1e-12)


class _Tiny(nn.Module):
    """A small net without BatchNorm (train and eval agree), answering the model API the trainer uses."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, 4)

    def forward(self, x, is_feat=False, preact=False):
        feat = self.body(x)
        logits = self.fc(feat)
        return ([feat], logits) if is_feat else logits


def _trained_teacher() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny teacher fitted for a few dozen steps on 4 separable synthetic classes."""
    torch.manual_seed(0)
    centres = 0.25 * torch.randn(4, 3, 4, 4)  # close enough for 10 attack steps of 0.3 to cross
    y = torch.arange(64) % 4
    x = centres[y] + 0.5 * torch.randn(64, 3, 4, 4)
    net = _Tiny()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return net.eval().requires_grad_(False), x, y


def test_attack_moves_a_trained_teacher_toward_the_chosen_class():
    teacher, x, y = _trained_teacher()
    with torch.no_grad():
        correct = teacher(x).argmax(1).eq(y)
    assert correct.float().mean() > 0.9
    x, y = x[correct][:16], y[correct][:16]
    attack = (y + 1 + torch.arange(16) % 3) % 4
    frozen = FrozenTeacher(teacher, preact=False)
    calls = []

    def model(z):
        calls.append(1)
        return frozen(z, input_grad=True)

    adv = BSSAttacker(step_alpha=0.3, num_steps=10).attack(model, x, y, attack)
    with torch.no_grad():
        p0, p1 = F.softmax(teacher(x), 1), F.softmax(teacher(adv), 1)
    rows = torch.arange(16)
    gap0 = p0[rows, attack] - p0[rows, y]
    gap1 = p1[rows, attack] - p1[rows, y]
    assert (gap1 > gap0).all() and (p1[rows, attack] > p0[rows, attack]).all()
    # the attack stops moving a sample once it leaves its true class: on the boundary, as BSS wants
    assert (p1.argmax(1) != y).sum() >= 12 and (p1.argmax(1) == attack).sum() >= 4
    assert adv.abs().max() <= 2.5 and not adv.requires_grad
    assert all(p.grad is None for p in teacher.parameters())
    # early stop: once nothing is classified as its true class, one more teacher pass ends the attack
    calls.clear()
    wrong = (y + 1) % 4
    BSSAttacker(step_alpha=0.3, num_steps=10).attack(model, x, wrong, attack)
    assert len(calls) == 1


def test_schedule():
    assert bss_schedule(10, 200, 10) == 0.0  # warm-up
    assert math.isclose(bss_schedule(11, 200, 10), 1 - 1.25 * 10 / 200)
    assert math.isclose(bss_schedule(160, 200, 10), 1 - 1.25 * 159 / 200)
    assert bss_schedule(161, 200, 10) == 0.0 and bss_schedule(200, 200, 10) == 0.0  # last 20 %
    assert bss_schedule(1, 1, 0) == 1.0


def _bss_objective(warmup: int):
    teacher, x, y = _trained_teacher()
    student = copy.deepcopy(teacher).train().requires_grad_(True)  # both correct on most samples
    spec = get_method("bss")
    method = build_method("bss", student, teacher, size=4, bss_warmup=warmup, bss_attack_size=5)
    frozen = FrozenTeacher(teacher, preact=False)
    return DistillObjective(student, frozen, method, spec, Weights(0, 0, 1), 4.0, nullcontext), student, teacher, x, y


def test_one_step_through_the_objective():
    objective, student, teacher, x, y = _bss_objective(warmup=2)
    objective.set_epoch(3, 10)
    _, terms, total = objective([x[:16], y[:16]])
    total.backward()
    assert terms["kd"].item() > 0
    grad = student.body[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    # the factor of the schedule multiplies the term: reproduce it with the same random draws
    torch.manual_seed(5)
    objective.set_epoch(3, 10)
    _, terms, _ = objective([x[:16], y[:16]])
    torch.manual_seed(5)
    objective.set_epoch(4, 10)
    _, later, _ = objective([x[:16], y[:16]])
    assert math.isclose(later["kd"].item() / terms["kd"].item(), bss_schedule(4, 10, 2) / bss_schedule(3, 10, 2),
                        rel_tol=1e-5)


def test_no_attack_during_warm_up():
    objective, _, _, x, y = _bss_objective(warmup=2)
    calls = []
    teacher_pass = objective.nets.teacher
    objective.nets.teacher = lambda *a, **k: calls.append(1) or teacher_pass(*a, **k)
    objective.set_epoch(2, 10)
    _, terms, _ = objective([x[:16], y[:16]])
    assert terms["kd"].item() == 0.0 and not calls


@pytest.mark.parametrize("pair", [("MobileNetV2", "vgg8"), ("ShuffleV1", "wrn_16_1"), ("ShuffleV2", "resnet8x4")])
def test_attack_runs_for_other_families(pair):
    """Channels_last images through a folded-BN teacher of another family; the student's pass on them."""
    student, teacher = nets(*pair)
    student.train()
    frozen = FrozenTeacher(teacher.eval().requires_grad_(False), preact=False)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        logit_t = frozen(x)
        logit_s = student(x)
    y = logit_t.argmax(1)
    method = build_method("bss", student, teacher, size=32, bss_warmup=0)
    batch = DistillBatch([], [], logit_s, logit_t, y, image=x, nets=Networks(student, frozen, nullcontext))
    # make both nets "correct": the student's logits are replaced by the teacher's for selection
    batch.logit_s = logit_t.clone()
    loss = method(batch)
    assert math.isfinite(loss.item())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_spec_defaults_and_flags():
    spec = get_method("bss")
    assert spec.weights == Weights(gamma=1.0, alpha=0.0, beta=2.0)
    assert not spec.uses_features and not spec.input_grad
    method = build_method("bss", *nets())
    assert (method.attack_size, method.warmup, method.criterion.T) == (32, 10, 3.0)
    assert (method.attacker.step_alpha, method.attacker.num_steps, method.attacker.eps) == (0.3, 10, 1e-4)
    with pytest.raises(ValueError, match="--bss_attack_size"):
        build_method("bss", *nets(), bss_attack_size=0)


@pytest.mark.parametrize("loader", ["memory", "torchvision"])
def test_end_to_end(run_student, tmp_path, loader):
    """The student starts as the teacher, both biased to class 0: its samples are base samples, so the
    attack runs on the loader's normalised images on the device."""
    path = write_teacher(tmp_path, "resnet8")
    state = torch.load(path, weights_only=True)
    state["model"]["fc.bias"][0] = 6.0
    torch.save(state, path)
    rows = check_e2e(run_student, tmp_path, "bss", "--path_t", str(path), "--init_s", str(path),
                     "--bss_warmup", "0", "--loader", loader, "-a", "0.5")
    assert rows[-1]["loss_kd"] > 0
