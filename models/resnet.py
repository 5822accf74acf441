"""CIFAR ResNets of RepDistiller (resnet8 ... resnet110, resnet8x4, resnet32x4) and SemCKD's resnet8x4_double.

Module names follow RD (and torchvision: ``conv1``/``bn1``/``downsample``/``fc``), so RD teacher
checkpoints load strictly. The blocks and :class:`ResNetBase` are reused by the ImageNet ResNets.
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import ModelOutput, PostActBlock, conv_bn, global_pool, init_weights, run_stages


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 conv with padding 1."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class _Block(PostActBlock):
    """Residual block whose shortcut is identity or the ``downsample`` projection."""

    expansion = 1
    downsample: nn.Module | None

    def skip(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)


class BasicBlock(_Block):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, add shortcut, ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose output (plus shortcut) is the block's pre-activation."""
        return self.bn2

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (carries the stride, torchvision "v1.5"), 1x1 expand x4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose output (plus shortcut) is the block's pre-activation."""
        return self.bn3

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def make_stage(
    block: type[BasicBlock | Bottleneck], inplanes: int, planes: int, num_blocks: int, stride: int = 1
) -> nn.Sequential:
    """``num_blocks`` blocks; the first strides and gets a 1x1 conv-BN projection if the shape changes."""
    out_planes = planes * block.expansion
    downsample = conv_bn(inplanes, out_planes, 1, stride) if stride != 1 or inplanes != out_planes else None
    blocks = [block(inplanes, planes, stride, downsample)]
    blocks += [block(out_planes, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


class ResNetBase(nn.Module):
    """Stem -> ``layer1..layerN`` -> global pool -> ``fc``, with RD's feature API.

    Subclasses build ``conv1``/``bn1``/``relu``, the ``layerK`` stages and ``fc``, and may extend
    :meth:`stem` (the ImageNet variant adds the max-pool).
    """

    def stem(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.relu]

    def stages(self) -> list[nn.Sequential]:
        return [m for name, m in self.named_children() if name.startswith("layer")]

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything from the input to the last stage (the AB/FSP pre-training set)."""
        return nn.ModuleList([*self.stem(), *self.stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """Last-block BN of every stage."""
        return [stage[-1].last_bn for stage in self.stages()]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        for module in self.stem():
            x = module(x)
        f0 = x
        x, maps = run_stages(self.stages(), x, preact)
        pooled = global_pool(x)
        logits = self.fc(pooled)
        return ([f0, *maps, pooled], logits) if is_feat else logits


class ResNet(ResNetBase):
    """RD's CIFAR ResNet: 3x3 stem (no max-pool), three stages at strides 1, 2, 2."""

    def __init__(
        self, depth: int, num_filters: list[int], block_name: str = "BasicBlock", num_classes: int = 10
    ):
        super().__init__()
        if block_name.lower() == "basicblock":
            block, per_block = BasicBlock, 2
        elif block_name.lower() == "bottleneck":
            block, per_block = Bottleneck, 3
        else:
            raise ValueError(f"block_name should be BasicBlock or Bottleneck, got {block_name!r}")
        if (depth - 2) % (3 * per_block):
            raise ValueError(f"depth {depth} must be {3 * per_block}n+2 for {block.__name__}")
        n = (depth - 2) // (3 * per_block)

        self.conv1 = conv3x3(3, num_filters[0])
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = num_filters[0]
        for i, (planes, stride) in enumerate(zip(num_filters[1:], (1, 2, 2), strict=True), start=1):
            self.add_module(f"layer{i}", make_stage(block, inplanes, planes, n, stride))
            inplanes = planes * block.expansion
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)


def _cifar_resnet(depth: int, wide: bool, **kwargs) -> ResNet:
    return ResNet(depth, [32, 64, 128, 256] if wide else [16, 16, 32, 64], "basicblock", **kwargs)


def resnet8(**kwargs) -> ResNet:
    return _cifar_resnet(8, False, **kwargs)


def resnet14(**kwargs) -> ResNet:
    return _cifar_resnet(14, False, **kwargs)


def resnet20(**kwargs) -> ResNet:
    return _cifar_resnet(20, False, **kwargs)


def resnet32(**kwargs) -> ResNet:
    return _cifar_resnet(32, False, **kwargs)


def resnet44(**kwargs) -> ResNet:
    return _cifar_resnet(44, False, **kwargs)


def resnet56(**kwargs) -> ResNet:
    return _cifar_resnet(56, False, **kwargs)


def resnet110(**kwargs) -> ResNet:
    return _cifar_resnet(110, False, **kwargs)


def resnet8x4(**kwargs) -> ResNet:
    """resnet8 with 4x wider stages (32/64/128/256)."""
    return _cifar_resnet(8, True, **kwargs)


def resnet8x4_double(**kwargs) -> ResNet:
    """SemCKD's HKD auxiliary network: resnet8 with 8x wider stages (64/128/256/512), same state_dict keys."""
    return ResNet(8, [64, 128, 256, 512], "basicblock", **kwargs)


def resnet32x4(**kwargs) -> ResNet:
    """resnet32 with 4x wider stages (32/64/128/256)."""
    return _cifar_resnet(32, True, **kwargs)
