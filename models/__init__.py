"""Model zoo: RepDistiller's CIFAR networks (same names, same state_dict keys) plus ImageNet networks.

Every model takes ``num_classes=`` and follows RD's API: ``model(x)`` -> logits,
``model(x, is_feat=True, preact=False)`` -> ``(feats, logits)`` with the feature maps first and the
pooled vector last, plus ``get_feat_modules()`` and ``get_bn_before_relu()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import mobile_half
from .mobilenetv2_imagenet import mobilenet_v2
from .mobilenetv2_tinyimagenet import mobilenetv2_tinyimagenet
from .resnet import (
    resnet8,
    resnet8x4,
    resnet8x4_double,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from .resnet_imagenet import resnet18, resnet34, resnet50
from .resnetv2 import ResNet18_cifar, ResNet34_cifar, ResNet50
from .ShuffleNetv1 import ShuffleV1
from .ShuffleNetv2 import ShuffleV2
from .shufflenetv2_imagenet import shufflenet_v2_x1_0
from .vgg import vgg8_bn, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

model_dict: dict[str, Callable[..., nn.Module]] = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet8x4_double": resnet8x4_double,  # SemCKD's HKD auxiliary network
    "resnet32x4": resnet32x4,
    "ResNet50": ResNet50,
    # resnetv2's basic-block ResNets: DAFL's/Fast-Datafree's CIFAR resnet18/34, mdistiller's Tiny-ImageNet teacher
    "ResNet18_cifar": ResNet18_cifar,
    "ResNet34_cifar": ResNet34_cifar,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8_bn,
    "vgg11": vgg11_bn,
    "vgg13": vgg13_bn,
    "vgg16": vgg16_bn,
    "vgg19": vgg19_bn,
    "MobileNetV2": mobile_half,
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
    "mobilenetv2_tinyimagenet": mobilenetv2_tinyimagenet,  # mdistiller's Tiny-ImageNet student (64 px)
    # ImageNet models (native input 224 px)
    "ResNet18": resnet18,
    "ResNet34": resnet34,
    "ResNet50_Imagenet": resnet50,
    "MobileNetV1": MobileNetV1,
    "MobileNetV2_Imagenet": mobilenet_v2,
    "ShuffleV2_Imagenet": shufflenet_v2_x1_0,
}

# Names whose native input is 224x224; every other model expects 32x32 CIFAR images.
IMAGENET_MODELS = frozenset(
    {"ResNet18", "ResNet34", "ResNet50_Imagenet", "MobileNetV1", "MobileNetV2_Imagenet", "ShuffleV2_Imagenet"}
)


def build_model(name: str, num_classes: int) -> nn.Module:
    """Instantiate ``model_dict[name]``; unknown names raise a one-line ``ValueError`` listing the choices."""
    if name not in model_dict:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(model_dict)}")
    return model_dict[name](num_classes=num_classes)


def model_fitting(state: dict[str, torch.Tensor], num_classes: int) -> str | None:
    """The first architecture whose weights have exactly ``state``'s names and shapes, or None: what to
    suggest when a checkpoint does not fit the one named. Built on the meta device (no memory, no init)."""
    wanted = {key: tuple(value.shape) for key, value in state.items()}
    for name in model_dict:
        with torch.device("meta"):
            model = build_model(name, num_classes)
        if {key: tuple(value.shape) for key, value in model.state_dict().items()} == wanted:
            return name
    return None
