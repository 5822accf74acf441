"""A network's classifier, found by what it computes rather than by its attribute name.

RepDistiller's models call it ``fc``, ``linear`` or ``classifier`` (sometimes inside a Sequential with a
Dropout); SRRL and SimKD reuse the teacher's, and the linear probe replaces the student's. The
classifier is the ``nn.Linear`` (or a :class:`PointwiseClassifier`, a Linear stored as a 1x1 convolution)
that maps the pooled feature ``F[-1]`` to the logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import IMAGENET_MODELS
from .layers import PointwiseClassifier


def find_classifier(model: nn.Module, pooled: Tensor, logits: Tensor) -> str:
    """The name of the Linear whose output on ``pooled`` is ``logits`` (an eval-mode forward's outputs).

    Raises ValueError when no Linear of the model computes the logits from the pooled feature.
    """
    for name, module in reversed(list(model.named_modules())):
        if not isinstance(module, (nn.Linear, PointwiseClassifier)):
            continue
        if (module.in_features, module.out_features) != (pooled.shape[1], logits.shape[1]):
            continue
        with torch.no_grad():
            out = module(pooled.to(module.weight.dtype))
        if torch.allclose(out.float(), logits.float(), rtol=1e-4, atol=1e-5):
            return name
    raise ValueError(f"{type(model).__name__} has no Linear layer mapping its pooled feature to its logits")


def input_size(arch: str) -> int:
    """The side of the images a model of ``models.model_dict`` is built for."""
    return 224 if arch in IMAGENET_MODELS else 32


def classifier_of(model: nn.Module, size: int) -> str:
    """:func:`find_classifier` from one eval-mode forward of a random batch of ``size`` x ``size`` images."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad():
        feats, logits = model(torch.randn(2, 3, size, size, device=param.device), is_feat=True)
    model.train(was_training)
    return find_classifier(model, feats[-1], logits)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted, as ``named_modules`` gives it) is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
