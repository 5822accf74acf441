"""MethodSpec.train_augment: with augment=False both training loaders give the stored images, only
normalised, in the sampler's order, and agree with each other; the bundle's own transform is left alone."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from dataset.base import DataBundle
from dataset.loaders import make_train_loader, unaugmented_train
from dataset.memory import MemoryLoader
from dataset.synthetic import build_synthetic
from helper.sampler import ResumableSampler


@pytest.fixture(scope="module")
def bundle() -> DataBundle:
    return build_synthetic(argparse.Namespace(syn_classes=4, syn_train_size=40, syn_val_size=8, syn_seed=0))


def plain(bundle: DataBundle, index: list[int]) -> torch.Tensor:
    """ToTensor + Normalize of the stored images, independently of either loader."""
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(bundle.mean, bundle.std)])
    return torch.stack([tf(bundle.train_array[0][i]) for i in index])


def memory_epoch(bundle: DataBundle, augment: bool, epoch: int = 3) -> list[list[torch.Tensor]]:
    loader = MemoryLoader(*bundle.train_array, bundle.mean, bundle.std, device=torch.device("cpu"), batch_size=16,
                          variant="instance", seed=5, augment=augment)
    loader.set_position(epoch, 0)
    return list(loader)


def test_memory_loader_without_augmentation_gives_the_stored_images_in_the_samplers_order(bundle):
    batches = memory_epoch(bundle, augment=False)
    augmented = memory_epoch(bundle, augment=True)
    order = torch.cat([b[2] for b in batches]).tolist()
    sampler = ResumableSampler(range(40), seed=5)
    sampler.set_position(3, 0)
    assert order == list(sampler) == torch.cat([b[2] for b in augmented]).tolist()
    x = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(x, plain(bundle, order), atol=1e-6, rtol=0)
    assert not torch.allclose(torch.cat([b[0] for b in augmented]), x)  # the default still crops and flips
    for _, y, index in batches:
        assert torch.equal(y, torch.as_tensor(bundle.train_array[1])[index])


def test_torchvision_loader_without_augmentation_agrees_with_the_memory_loader(bundle):
    sampler = ResumableSampler(bundle.train, seed=5)
    sampler.set_position(3, 0)
    loader = make_train_loader(bundle, "instance", 16, 0, sampler=sampler, augment=False)
    got = list(loader)
    expected = memory_epoch(bundle, augment=False)
    assert len(got) == len(expected) == 3
    for (x, y, index), (mx, my, mindex) in zip(got, expected, strict=True):
        assert torch.equal(index, mindex) and torch.equal(y, my)
        torch.testing.assert_close(x, mx, atol=1e-6, rtol=0)
    assert any(isinstance(t, transforms.RandomCrop) for t in bundle.train.transform.transforms)  # left alone
    x, _, index = next(iter(make_train_loader(bundle, "instance", 40, 0)))
    assert not torch.allclose(x, plain(bundle, index.tolist()))  # the default still crops and flips


def test_a_training_set_without_a_transform_is_refused():
    class Bare(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return torch.zeros(3, 2, 2), 0

    bare = DataBundle("bare", Bare(), Bare(), 1, 2, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="cannot be served un-augmented"):
        unaugmented_train(bare)
