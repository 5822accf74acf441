"""ImageNet from ``<data_folder>/{train,val}/<wnid>/`` (val sorted into class folders, as for torchvision's
reference scripts): RandomResizedCrop(224)+flip / Resize(256)+CenterCrop(224), ImageNet mean/std."""

from __future__ import annotations

import argparse

from .base import DataBundle
from .folder import IMAGENET_MEAN, IMAGENET_STD, folder_bundle, open_image_folders


def build_imagenet(opt: argparse.Namespace) -> DataBundle:
    """As many classes as there are folders (1000 for ILSVRC-2012); ``--image_size`` overrides 224."""
    train, val = open_image_folders("imagenet", opt.data_folder)
    return folder_bundle("imagenet", train, val, opt.image_size or 224, IMAGENET_MEAN, IMAGENET_STD)
