"""The linear probe's input pipeline: every image resized to the network's input size, then padded-cropped
and flipped. Its data sets (STL-10, Tiny-ImageNet-200 and the rest) are the training ones."""

from __future__ import annotations

import dataclasses

from .base import DataBundle, crop_flip_transforms


def probe_bundle(bundle: DataBundle, size: int) -> DataBundle:
    """``bundle`` at ``size`` x ``size`` with the distillers' transfer pipeline (Resize, RandomCrop with
    padding size/8, flip; Resize alone to test). Arrays already at ``size`` stay, for the in-memory
    loader, which crops and flips the same way on the device."""
    if bundle.train_array is not None and bundle.image_size == size:
        return bundle
    bundle.train.transform, bundle.val.transform = crop_flip_transforms(size, bundle.mean, bundle.std, fit=True)
    return dataclasses.replace(bundle, image_size=size, train_array=None, val_array=None)
