"""ImageNet ShuffleNetV2 x1.0 with a state_dict identical to torchvision's ``shufflenet_v2_x1_0``.

Features (as SemCKD): f0 after the max-pool, f1-f3 the stage outputs, f4 the pooled vector.
``preact=True`` gives each stage's last unit before its final ReLU, shuffled like the output (so
``relu(pre) == post``; the CIFAR ShuffleV2 instead returns it unshuffled, as RD does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ModelOutput, channel_shuffle, conv_bn, global_pool, run_stages


class InvertedResidual(nn.Module):
    """torchvision's ShuffleNetV2 unit.

    The trailing ReLU of each branch is applied in ``forward`` rather than stored in the branch;
    ReLUs hold no parameters, so the keys are unchanged and the pre-activation becomes reachable.
    """

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        self.stride = stride
        branch = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(*conv_bn(inp, inp, 3, stride, groups=inp), *conv_bn(inp, branch, 1))
        self.branch2 = nn.Sequential(
            *conv_bn(inp if stride > 1 else branch, branch, 1, act=nn.ReLU),
            *conv_bn(branch, branch, 3, stride, groups=branch),
            *conv_bn(branch, branch, 1),
        )

    def forward(self, x: Tensor, with_preact: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            pre = torch.cat((left, self.branch2(right)), 1)
        else:
            pre = torch.cat((self.branch1(x), self.branch2(x)), 1)
        # ReLU over the whole concat: a pass-through left half is a previous unit's ReLU output already.
        out = channel_shuffle(F.relu(pre), 2)
        return (out, channel_shuffle(pre, 2)) if with_preact else out


class ShuffleNetV2(nn.Module):
    """3x3/2 conv + 3x3/2 max-pool stem, stages ``stage2..stage4``, 1x1 ``conv5``, global pool, ``fc``."""

    def __init__(self, stages_repeats: list[int], stages_out_channels: list[int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = conv_bn(3, stages_out_channels[0], 3, 2, act=nn.ReLU)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = stages_out_channels[0]
        stage_specs = zip(stages_repeats, stages_out_channels[1:-1], strict=True)
        for i, (repeats, oup) in enumerate(stage_specs, start=2):
            units = [InvertedResidual(inp, oup, 2)]
            units += [InvertedResidual(oup, oup, 1) for _ in range(repeats - 1)]
            self.add_module(f"stage{i}", nn.Sequential(*units))
            inp = oup
        self.conv5 = conv_bn(inp, stages_out_channels[-1], 1, act=nn.ReLU)
        self.fc = nn.Linear(stages_out_channels[-1], num_classes)

    def stages(self) -> list[nn.Sequential]:
        return [self.stage2, self.stage3, self.stage4]

    def get_feat_modules(self) -> nn.ModuleList:
        """Stem and stages; ``conv5`` is excluded, like the CIFAR ShuffleV2."""
        return nn.ModuleList([self.conv1, self.maxpool, *self.stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        # A stage output is a shuffled concat, not the output of one BN (as in RD's ShuffleNets).
        raise NotImplementedError('ShuffleNetV2 currently is not supported for "Overhaul" teacher')

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> ModelOutput:
        x = self.maxpool(self.conv1(x))
        f0 = x
        x, maps = run_stages(self.stages(), x, preact)
        pooled = global_pool(self.conv5(x))
        logits = self.fc(pooled)
        return ([f0, *maps, pooled], logits) if is_feat else logits


def shufflenet_v2_x1_0(**kwargs) -> ShuffleNetV2:
    return ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], **kwargs)
