"""The reference's image generator (``datafree/models/generator.py`` of Fast-Datafree), same module
names, so its generator state_dicts load: ``l1.0`` and ``conv_blocks.0`` ... ``conv_blocks.10``."""

from __future__ import annotations

import copy

from torch import Tensor, nn


class Generator(nn.Module):
    """z (nz) -> Linear -> 2·ngf × s/4 × s/4 -> BN -> up ×2 -> conv-BN-LReLU -> up ×2 -> conv-BN-LReLU
    -> conv (bias) -> sigmoid: ``nc`` × ``img_size`` × ``img_size`` images in [0, 1].

    ``Generator(nz=256, ngf=64, img_size=32)`` (the reference's) has 2,328,899 parameters.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, img_size: int = 32, nc: int = 3):
        super().__init__()
        self.params = (nz, ngf, img_size, nc)
        self.init_size = img_size // 4
        self.l1 = nn.Sequential(nn.Linear(nz, ngf * 2 * self.init_size**2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(ngf * 2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf * 2, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        out = self.l1(z)
        out = out.reshape(out.shape[0], -1, self.init_size, self.init_size)
        return self.conv_blocks(out)

    def clone(self) -> Generator:
        """A copy on the same device, in the same memory format, without gradients (the reference's
        ``clone()`` rebuilds the network and moves it to CUDA; this works on any device)."""
        twin = copy.deepcopy(self)
        for p in twin.parameters():
            p.grad = None
        return twin


def reset_l0(model: Generator) -> None:
    """The reference's ``--reset_l0``: weights N(0, 0.02) and zero biases for the first Linear and, as
    its code does (``l1.0`` and ``conv_blocks.0``), for the first BatchNorm too."""
    for module in (model.l1[0], model.conv_blocks[0]):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.constant_(module.bias, 0)
