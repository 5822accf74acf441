"""The best file: RepDistiller's strict improvement, and always written at the first evaluation."""
from types import SimpleNamespace

from helper.trainer import RunOutputs, Trainer


def test_first_evaluation_writes_best_file_even_at_zero_accuracy(tmp_path):
    trainer = SimpleNamespace(out=RunOutputs(tmp_path, tmp_path / "tb", "resnet8", False))
    assert Trainer._is_new_best(trainer, 0.0, 0.0, "resnet8_best.pth")  # no file yet: 0 % still saved
    (tmp_path / "resnet8_best.pth").write_bytes(b"")
    assert not Trainer._is_new_best(trainer, 0.0, 0.0, "resnet8_best.pth")  # ties keep the earlier file
    assert not Trainer._is_new_best(trainer, 40.0, 50.0, "resnet8_best.pth")
    assert Trainer._is_new_best(trainer, 50.5, 50.0, "resnet8_best.pth")
