"""torchvision's ImageNet weights for a teacher (``--teacher_weights torchvision``), read from the
torch hub cache; our ImageNet models share torchvision's state_dict keys, so they load as they are.

The V1 weights are used: they are what ``pretrained=True`` gave the references (SemCKD, mdistiller),
so a teacher here is the teacher their ImageNet tables were measured with.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor

from helper.errors import UserError

TORCHVISION_WEIGHTS = {
    "ResNet18": "ResNet18_Weights.IMAGENET1K_V1",
    "ResNet34": "ResNet34_Weights.IMAGENET1K_V1",
    "ResNet50_Imagenet": "ResNet50_Weights.IMAGENET1K_V1",
    "MobileNetV2_Imagenet": "MobileNet_V2_Weights.IMAGENET1K_V1",
    "ShuffleV2_Imagenet": "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1",
}
IMAGENET_CLASSES = 1000


def _weights(arch: str):
    from torchvision.models import get_weight

    return get_weight(TORCHVISION_WEIGHTS[arch])


def hub_file(arch: str) -> Path:
    """Where torch.hub keeps (or would download) the weights file for ``arch``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(_weights(arch).url).path).name


def torchvision_state_dict(arch: str, num_classes: int) -> dict[str, Tensor]:
    """The state_dict of torchvision's ImageNet weights for ``arch``, from the hub cache (downloaded
    into it when missing and the network allows); every way of failing is one line naming the file."""
    if arch not in TORCHVISION_WEIGHTS:
        raise UserError(f"torchvision has no ImageNet weights for '{arch}'; --teacher_weights torchvision "
                        f"takes --model_t one of: {', '.join(TORCHVISION_WEIGHTS)}")
    if num_classes != IMAGENET_CLASSES:
        raise UserError(f"torchvision's weights classify {IMAGENET_CLASSES} classes, the data set has {num_classes}")
    weights, path = _weights(arch), hub_file(arch)
    try:
        return weights.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        # no network (URLError is an OSError), a download cut short or with a bad hash, a corrupt file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load torchvision's {arch} weights ({reason}); put {path.name} "
                        f"(from {weights.url}) in {path.parent}/") from exc
