"""SimKD: the loss and the logits by hand, the deployed student (projector + teacher classifier) in
evaluation and in the saved files, gradients, defaults, and a run whose saved student evaluates alone to
the accuracy the run printed."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_DATA, run_cli
from method_checks import build_method, check_one_step, nets

from distiller_zoo.registry import DistillBatch, get_method
from distiller_zoo.SimKD import SimKD, SimKDMethod, SimKDStudent, simkd_student
from helper.checkpoint import safe_load
from helper.errors import UserError


def block_mean(x: np.ndarray, out: int) -> np.ndarray:
    """Average pooling of a square N x C x H x H array down to out x out (H a multiple of out), by loops."""
    n, c, h, _ = x.shape
    k = h // out
    y = np.zeros((n, c, out, out))
    for i in range(n):
        for j in range(c):
            for r in range(out):
                for q in range(out):
                    y[i, j, r, q] = x[i, j, r * k:(r + 1) * k, q * k:(q + 1) * k].mean()
    return y


def conv_loops(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Stride-1 convolution with zero padding k//2, no bias, by loops over every output element."""
    n, c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    p = k // 2
    y = np.zeros((n, c_out, h, wd))
    for i in range(n):
        for o in range(c_out):
            for r in range(h):
                for q in range(wd):
                    total = 0.0
                    for c in range(c_in):
                        for a in range(k):
                            for b in range(k):
                                rr, qq = r + a - p, q + b - p
                                if 0 <= rr < h and 0 <= qq < wd:
                                    total += w[o, c, a, b] * x[i, c, rr, qq]
                    y[i, o, r, q] = total
    return y


def bn_relu_loops(x: np.ndarray, bn: torch.nn.BatchNorm2d) -> np.ndarray:
    """Train-mode BN (batch mean, biased variance per channel) then ReLU."""
    gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    y = np.zeros_like(x)
    for c in range(x.shape[1]):
        values = x[:, c].ravel()
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        y[:, c] = np.maximum(gamma[c] * (x[:, c] - mean) / math.sqrt(var + bn.eps) + beta[c], 0.0)
    return y


def simkd_by_hand(simkd: SimKD, cls_t: torch.nn.Linear, f_s: np.ndarray, f_t: np.ndarray) -> tuple[float, np.ndarray]:
    size = min(f_s.shape[2], f_t.shape[2])
    f_s, f_t = block_mean(f_s, size), block_mean(f_t, size)
    x = f_s
    for i in (0, 3, 6):
        x = bn_relu_loops(conv_loops(x, simkd.transfer[i].weight.detach().double().numpy()), simkd.transfer[i + 1])
    loss = float(((x - f_t) ** 2).mean())
    pooled = x.mean(axis=(2, 3))
    wc, bc = cls_t.weight.detach().double().numpy(), cls_t.bias.detach().double().numpy()
    logits = np.array([[sum(wc[k, c] * pooled[n, c] for c in range(pooled.shape[1])) + bc[k]
                        for k in range(wc.shape[0])] for n in range(pooled.shape[0])])
    return loss, logits


def randomise_bns(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(("hw_s", "hw_t"), [(4, 2), (2, 4), (2, 2)])
def test_loss_and_logits_match_hand_computation(hw_s, hw_t):
    torch.manual_seed(0)
    method = SimKDMethod(2, 4, 2, torch.nn.Linear(4, 3).requires_grad_(False), (hw_t, hw_t))
    randomise_bns(method)
    method.train()
    f_s, f_t = torch.randn(3, 2, hw_s, hw_s), torch.rand(3, 4, hw_t, hw_t)
    logit_s = torch.randn(3, 3)
    batch = DistillBatch([f_s, f_s], [f_t, f_t], logit_s, torch.randn(3, 3), torch.tensor([0, 2, 1]))
    ce = torch.nn.CrossEntropyLoss()
    logits, terms = method.loss_terms(batch, ce, lambda a, b: (a - b).abs().sum())
    loss, want_logits = simkd_by_hand(method.simkd, method.cls_t, f_s.double().numpy(), f_t.double().numpy())
    assert math.isclose(terms["kd"].item(), loss, rel_tol=1e-5)
    np.testing.assert_allclose(logits.detach().double().numpy(), want_logits, rtol=1e-5, atol=1e-6)
    # -r and -a act on the student's own logits, as the reference computes them before replacing them
    assert torch.equal(terms["cls"], ce(logit_s, batch.target))
    assert torch.equal(terms["div"], (logit_s - batch.logit_t).abs().sum())
    assert torch.equal(method(batch), terms["kd"])


def test_projector_as_the_reference():
    simkd = SimKD(s_n=6, t_n=8)
    convs = [m for m in simkd.transfer if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(6, 4, (1, 1)), (4, 4, (3, 3)),
                                                                                (4, 8, (1, 1))]
    assert all(c.bias is None for c in convs) and len(simkd.transfer) == 9
    assert SimKD(s_n=6, t_n=8, factor=4).transfer[0].out_channels == 2


@pytest.mark.parametrize(("student", "teacher"), [("resnet8", "vgg8"), ("vgg8", "resnet20"), ("resnet8", "resnet20")])
def test_deployed_student_computes_the_training_logits(student, teacher):
    s, t = nets(student, teacher)
    method = build_method("simkd", s, t, size=32)
    randomise_bns(method)
    x = torch.randn(4, 3, 32, 32)
    deployed = method.eval_model(s).eval()
    with torch.no_grad():
        feat_s, _ = s(x, is_feat=True)
        feat_t, _ = t.eval()(x, is_feat=True)
        _, _, want = method.simkd(feat_s[-2], feat_t[-2], method.cls_t)
        got = deployed(x)
        feats, logits = deployed(x, is_feat=True)
    assert torch.allclose(got, want, atol=1e-5) and torch.equal(got, logits)
    assert torch.allclose(method.cls_t(feats[-1]), logits, atol=1e-5)
    assert method.target_hw == tuple(feat_t[-2].shape[2:])


def test_model_file_entry_rebuilds_the_deployed_student(tmp_path):
    s, t = nets("resnet8", "vgg8")
    method = build_method("simkd", s, t, size=32)
    randomise_bns(method)
    path = tmp_path / "student.pth"
    torch.save({"model": s.state_dict(), **method.model_file_extras()}, path)
    entry = safe_load(path)["simkd"]  # plain tensors and containers: loads with weights_only
    from models import build_model

    fresh = build_model("resnet8", 10)
    fresh.load_state_dict(s.state_dict())
    rebuilt = simkd_student(fresh, entry).eval()
    assert isinstance(rebuilt, SimKDStudent) and not any(p.requires_grad for p in rebuilt.cls_t.parameters())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), method.eval_model(s).eval()(x), atol=1e-6)


def test_gradients_reach_student_and_projector_not_teacher():
    check_one_step("simkd")
    check_one_step("simkd", "vgg8", "resnet32x4", size=32)


def test_teacher_classifier_is_a_frozen_copy():
    s, t = nets("resnet8", "vgg8")  # a classifier not called fc
    method = build_method("simkd", s, t, size=32)
    assert method.cls_t is not t.classifier and torch.equal(method.cls_t.weight, t.classifier.weight)
    assert {id(p) for p in method.main_parameters()} == {id(p) for p in method.simkd.parameters()}


def test_spec_defaults_and_factor_flag():
    spec = get_method("simkd")
    assert spec.name == "simkd" and spec.aliases == ()
    assert (spec.weights.gamma, spec.weights.alpha, spec.weights.beta) == (0.0, 0.0, 1.0)
    from method_checks import method_flag_defaults

    assert method_flag_defaults()["factor"] == 2
    s, t = nets()
    with pytest.raises(ValueError, match="--factor"):
        build_method("simkd", s, t, factor=0)


@pytest.mark.parametrize("teacher", ["MobileNetV2", "ShuffleV2"])
def test_a_teacher_with_a_head_after_its_last_map_is_refused_in_one_line(teacher):
    # their classifiers read the 1x1 head conv's 1280 / 1024 features, not the last map's channels
    with pytest.raises(ValueError, match="classifier reads (1280|1024) features"):
        build_method("simkd", *nets("resnet8", teacher), size=32)


def test_end_to_end_saved_student_evaluates_alone(run_student, tmp_path, teacher_ckpt, capsys):
    # a data set off the defaults (TINY_DATA's 10 classes, 128 train images; 48 test images, seed 3), which
    # eval_student reads from the run's config.json rather than from the command line
    proc = run_student("--distill", "simkd", "--epochs", "2", "--save_freq", "1", "--syn_val_size", "48",
                       "--syn_seed", "3")
    printed = re.findall(r"^ \* Acc@1 ([\d.]+)", proc.stdout, re.M)
    assert len(printed) == 2
    folder = tmp_path / "save" / "student_model" / "S:resnet8_T:resnet20_synthetic_simkd_r:0.0_a:0.0_b:1.0_1"
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row["loss_kd"]) and row["loss_kd"] > 0 for row in rows)
    for name in ("resnet8_best.pth", "resnet8_last.pth", "ckpt_epoch_1.pth", "ckpt_epoch_2.pth"):
        assert set(safe_load(folder / name)["simkd"]) == {"s_n", "t_n", "factor", "target_hw", "transfer", "cls_t"}
    teacher_ckpt.unlink()  # from here on the student has no teacher to lean on
    speed = ["--num_workers", "0", "--device", "cpu", "--precision", "fp32"]
    proc = run_cli("scripts/eval_student.py", ["--path", str(folder), *speed], tmp_path)  # its last model
    assert f"data set from {folder / 'config.json'}: --dataset synthetic --syn_classes 10 --syn_train_size 128 " \
           "--syn_val_size 48 --syn_seed 3\n" in proc.stdout
    assert "resnet8 on synthetic (48 test images)" in proc.stdout
    assert re.search(r"^ \* Acc@1 ([\d.]+)", proc.stdout, re.M).group(1) == printed[-1]
    eval_student().main(["--path", str(folder / "ckpt_epoch_1.pth"), *speed])
    assert re.search(r"^ \* Acc@1 ([\d.]+)", capsys.readouterr().out, re.M).group(1) == printed[0]
    eval_student().main(["--path", str(folder), *speed, "--syn_val_size", "40"])  # a flag given wins
    out = capsys.readouterr().out
    assert "--syn_val_size" not in out and "resnet8 on synthetic (40 test images)" in out


def eval_student():
    """scripts/eval_student.py as a module, to call its main in-process."""
    spec = importlib.util.spec_from_file_location("eval_student", ROOT / "scripts" / "eval_student.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_eval_student_refuses_a_missing_file_or_a_class_mismatch(tmp_path):
    script = eval_student()
    with pytest.raises(UserError, match="no model file or run folder"):
        script.main(["--path", str(tmp_path / "none.pth"), *TINY_DATA])
    from models import build_model

    torch.save({"model": build_model("resnet8", 7).state_dict(), "arch": "resnet8"}, tmp_path / "seven.pth")
    with pytest.raises(UserError, match="classifies 7 classes, synthetic has 10"):
        script.main(["--path", str(tmp_path / "seven.pth"), *TINY_DATA])
