"""scripts/model_transform.py: torchvision's ImageNet files -> teacher files that --path_t reads, giving the
logits of torchvision's own model (its untrained networks stand in for the downloads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import ROOT

import train_student

# our architecture -> torchvision's builder and the published file name of its ImageNet weights
TORCHVISION = {
    "ResNet18": ("resnet18", "resnet18-f37072fd.pth"),
    "ResNet34": ("resnet34", "resnet34-333f7ec4.pth"),  # the older URL's name, as in SemCKD's README
    "ResNet50_Imagenet": ("resnet50", "resnet50-11ad3fa6.pth"),  # the V2 weights' name
    "MobileNetV2_Imagenet": ("mobilenet_v2", "mobilenet_v2-b0353104.pth"),
    "ShuffleV2_Imagenet": ("shufflenet_v2_x1_0", "shufflenetv2_x1-5666bf0f80.pth"),
}


def load_script():
    spec = importlib.util.spec_from_file_location("model_transform", ROOT / "scripts" / "model_transform.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchvision_file(folder: Path, arch: str, num_classes: int = 1000) -> tuple[torch.nn.Module, Path]:
    """torchvision's (untrained, seeded) network and its state_dict saved under the published file name."""
    builder, name = TORCHVISION[arch]
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(num_classes=num_classes).eval()
    with torch.no_grad():  # BatchNorm statistics that are not 0/1, so that running them is checked too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = folder / f"{arch}_vanilla" / name
    path.parent.mkdir(parents=True)
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("arch", list(TORCHVISION))
def test_round_trip_gives_torchvision_logits(tmp_path, arch):
    """torchvision's file -> model_transform -> train_student's --path_t loading -> the same logits."""
    reference, source = torchvision_file(tmp_path, arch)
    target = load_script().transform(source)
    assert target == source.with_name(f"{TORCHVISION[arch][1].split('-')[0]}_transformed.pth")
    saved = torch.load(target, map_location="cpu", weights_only=True)
    assert set(saved) == {"model", "arch"} and saved["arch"] == arch

    opt, _ = train_student.parse_option(["--path_t", str(target), "--dataset", "imagenet"])
    teacher = train_student.load_teacher(opt, num_classes=1000).eval()
    assert opt.model_t == arch
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), reference(x), rtol=1e-5, atol=1e-5)


def test_seed_teacher_path_and_class_count(tmp_path, capsys):
    """SemCKD's README path: ResNet34_vanilla/resnet34_transformed.pth; a 10-class torchvision file keeps 10."""
    _, source = torchvision_file(tmp_path, "ResNet34", num_classes=10)
    assert load_script().main([str(source)]) == 0
    target = tmp_path / "ResNet34_vanilla" / "resnet34_transformed.pth"
    assert str(target) in capsys.readouterr().out
    assert torch.load(target, weights_only=True)["model"]["fc.weight"].shape == (10, 512)


def test_mistakes_are_one_line_and_write_nothing(tmp_path, capsys):
    script = load_script()
    _, source = torchvision_file(tmp_path, "ResNet18")
    renamed = source.rename(source.with_name("weights.pth"))
    assert script.main([str(renamed)]) == 1  # no torchvision name to read the architecture from
    assert script.main([str(renamed), "--arch", "ResNet34"]) == 1  # resnet18's weights do not fit ResNet34
    assert script.main([str(tmp_path / "resnet34-none.pth")]) == 1  # no such file
    assert not list(tmp_path.rglob("*_transformed.pth"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("model_transform: ") for line in lines)
    assert "cannot tell the architecture from the name weights.pth" in lines[0] and "pass --arch" in lines[0]
    assert "does not fit architecture 'ResNet34'" in lines[1]
    assert "checkpoint not found" in lines[2]
    assert script.main([str(renamed), "--arch", "ResNet18", "-o", str(tmp_path / "t.pth")]) == 0
    assert torch.load(tmp_path / "t.pth", weights_only=True)["arch"] == "ResNet18"
