"""Model zoo: sizes, feature API and checkpoint compatibility, against the tables of models.md.

Expected numbers are the reference implementations' (RepDistiller, SemCKD, mdistiller, torchvision),
measured with K=100 classes at 32 px for CIFAR models and K=1000 at 224 px for ImageNet models.
Everything runs on CPU, batch 1, eval mode, under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models import IMAGENET_MODELS, build_model, model_dict
from models.classifier import classifier_of
from models.util import Connector as ABConnector
from models.util import (
    ConnectorV2,
    ConvReg,
    Embed,
    Flatten,
    LinearEmbed,
    MLPEmbed,
    Normalize,
    Paraphraser,
    PoolEmbed,
    Regress,
    Translator,
)

R16 = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
R64 = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]
W2 = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)]
VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)]
CIFAR_R18 = [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512,)]
IMAGENET_R18 = [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7), (512,)]

# name: (params, len(state_dict), is_feat shapes, feature indices changed by preact=True,
#        len(get_feat_modules()), channels of get_bn_before_relu() or None when it raises)
SPECS = {
    "resnet8": (83_892, 56, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet14": (181_108, 92, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet20": (278_324, 128, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet32": (472_756, 200, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet44": (667_188, 272, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet56": (861_620, 344, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet110": (1_736_564, 668, R16, {1, 2, 3}, 6, [16, 32, 64]),
    "resnet8x4": (1_233_540, 62, R64, {1, 2, 3}, 6, [64, 128, 256]),
    # SemCKD's HKD auxiliary network (keys and shapes checked against SemCKD's models/resnet.py)
    "resnet8x4_double": (
        4_875_428, 62, [(64, 32, 32), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512,)], {1, 2, 3}, 6,
        [128, 256, 512],
    ),
    "resnet32x4": (7_433_860, 206, R64, {1, 2, 3}, 6, [64, 128, 256]),
    "ResNet50": (
        23_705_252, 320, [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4), (2048,)],
        {1, 2, 3, 4}, 6, [256, 512, 1024, 2048],
    ),
    "wrn_16_1": (180_916, 82, R16, {1, 2, 3}, 4, [16, 32, 64]),
    "wrn_16_2": (703_284, 83, W2, {1, 2, 3}, 4, [32, 64, 128]),
    "wrn_40_1": (569_780, 226, R16, {1, 2, 3}, 4, [16, 32, 64]),
    "wrn_40_2": (2_255_156, 227, W2, {1, 2, 3}, 4, [32, 64, 128]),
    "vgg8": (3_965_028, 37, VGG, {1, 2, 3, 4}, 10, [128, 256, 512, 512]),
    "vgg11": (9_277_284, 58, VGG, {1, 2, 3, 4}, 10, [128, 256, 512, 512]),
    "vgg13": (9_462_180, 72, VGG, {1, 2, 3, 4}, 10, [128, 256, 512, 512]),
    "vgg16": (14_774_436, 93, VGG, {1, 2, 3, 4}, 10, [128, 256, 512, 512]),
    "vgg19": (20_086_692, 114, VGG, {1, 2, 3, 4}, 10, [128, 256, 512, 512]),
    "MobileNetV2": (
        812_836, 320, [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2), (1280,)],
        set(), 2, [12, 16, 48, 160],
    ),
    "ShuffleV1": (
        949_258, 296, [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4), (960,)], {1, 2, 3}, 5, None,
    ),
    "ShuffleV2": (
        1_355_528, 338, [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4), (1024,)], {1, 2, 3}, 5, None,
    ),
    # resnetv2's basic-block ResNets (DAFL's CIFAR resnet18/34: models.md's 11,220,132 / 21,328,292 at K=100)
    "ResNet18_cifar": (11_220_132, 122, CIFAR_R18, {1, 2, 3, 4}, 6, [64, 128, 256, 512]),
    "ResNet34_cifar": (21_328_292, 218, CIFAR_R18, {1, 2, 3, 4}, 6, [64, 128, 256, 512]),
    # mdistiller's Tiny-ImageNet MobileNetV2 (1x1 stem with padding 1: 32 px -> 34 px); 2,497,480 at K=200
    "mobilenetv2_tinyimagenet": (
        2_369_380, 373, [(32, 34, 34), (24, 17, 17), (32, 9, 9), (64, 5, 5), (1280, 5, 5), (1280,)], set(), 9,
        [24, 32, 64, 1280],
    ),
    "ResNet18": (11_689_512, 122, IMAGENET_R18, {1, 2, 3, 4}, 8, [64, 128, 256, 512]),
    "ResNet34": (21_797_672, 218, IMAGENET_R18, {1, 2, 3, 4}, 8, [64, 128, 256, 512]),
    "ResNet50_Imagenet": (
        25_557_032, 320, [(64, 56, 56), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7), (2048,)],
        {1, 2, 3, 4}, 8, [256, 512, 1024, 2048],
    ),
    "MobileNetV1": (
        4_231_976, 164, [(32, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7), (1024,)],
        {1, 2, 3, 4}, 1, [128, 256, 512, 1024],
    ),
    "MobileNetV2_Imagenet": (
        3_504_872, 314, [(32, 112, 112), (24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7), (1280,)],
        set(), 18, [24, 32, 96, 320],
    ),
    "ShuffleV2_Imagenet": (
        2_278_604, 338, [(24, 56, 56), (116, 28, 28), (232, 14, 14), (464, 7, 7), (1024,)],
        {1, 2, 3}, 5, None,
    ),
}

# Models whose preact features are not simply relu(pre) == post: WRN's are the *next* BN's output,
# CIFAR ShuffleV2's are concatenated before the channel shuffle (both as RepDistiller).
PREACT_NOT_RELU_OF_POST = {"wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "ShuffleV2"}

ALL = list(SPECS)


@pytest.fixture(autouse=True, scope="module")
def _module_setup() -> Iterator[None]:
    """Run single-threaded and drop the cached models afterwards.

    Batch-1 forwards gain nothing from intra-op threads, and on a busy machine OpenMP's thread
    synchronisation makes each small conv ~100x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _model.cache_clear()
    _outputs.cache_clear()


def _classes(name: str) -> int:
    return 1000 if name in IMAGENET_MODELS else 100


def _input(name: str, size: int | None = None) -> torch.Tensor:
    size = size or (224 if name in IMAGENET_MODELS else 32)
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so loading checks cover buffers too."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


@functools.cache
def _model(name: str) -> nn.Module:
    """One shared eval-mode instance per name; tests that change a model deep-copy it first."""
    torch.manual_seed(0)
    return _randomise_bn(build_model(name, _classes(name))).eval()


@functools.cache
def _outputs(name: str) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(logits, feats, preact feats, logits of a preact call without is_feat) on the standard input."""
    model, x = _model(name), _input(name)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        pre_feats, _ = model(x, is_feat=True, preact=True)
        return logits, feats, pre_feats, model(x, preact=True)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_model_dict_names() -> None:
    rd_names = {
        "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
        "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
        "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
    }
    semckd_names = {"resnet8x4_double"}
    mdistiller_and_dafl_names = {"ResNet18_cifar", "ResNet34_cifar", "mobilenetv2_tinyimagenet"}
    assert set(model_dict) == rd_names | semckd_names | mdistiller_and_dafl_names | IMAGENET_MODELS == set(SPECS)
    assert IMAGENET_MODELS == {
        "ResNet18", "ResNet34", "ResNet50_Imagenet", "MobileNetV1", "MobileNetV2_Imagenet",
        "ShuffleV2_Imagenet",
    }


def test_build_model_unknown_name() -> None:
    expected = r"^unknown model 'resnet9'; choose one of: resnet8, resnet14, "
    with pytest.raises(ValueError, match=expected) as err:
        build_model("resnet9", 10)
    assert "\n" not in str(err.value) and "ShuffleV2_Imagenet" in str(err.value)


@pytest.mark.parametrize("name", ALL)
def test_size(name: str) -> None:
    params, keys, *_ = SPECS[name]
    model = _model(name)
    assert _n_params(model) == params
    assert len(model.state_dict()) == keys


@pytest.mark.parametrize("name", ALL)
def test_feature_shapes_and_logits(name: str) -> None:
    logits, feats, _, preact_only = _outputs(name)
    assert [tuple(f.shape[1:]) for f in feats] == SPECS[name][2]
    assert logits.shape == (1, _classes(name))
    with torch.no_grad():
        assert torch.equal(_model(name)(_input(name)), logits)
    assert torch.equal(preact_only, logits), "preact must be ignored unless is_feat=True"


@pytest.mark.parametrize("name", ALL)
def test_preact(name: str) -> None:
    _, feats, pre_feats, _ = _outputs(name)
    changed = {i for i, (f, p) in enumerate(zip(feats, pre_feats, strict=True)) if not torch.equal(f, p)}
    assert changed == SPECS[name][3]
    for i in changed:
        assert pre_feats[i].shape == feats[i].shape and pre_feats[i].min() < 0
        if name not in PREACT_NOT_RELU_OF_POST:
            assert torch.equal(F.relu(pre_feats[i]), feats[i])


@pytest.mark.parametrize("name", ALL)
def test_helper_methods(name: str) -> None:
    *_, n_feat_modules, bn_channels = SPECS[name]
    model = _model(name)
    feat_modules = model.get_feat_modules()
    assert isinstance(feat_modules, nn.ModuleList) and len(feat_modules) == n_feat_modules
    classifier = model.get_submodule(classifier_of(model, 224 if name in IMAGENET_MODELS else 32))
    assert all(p is not q for p in classifier.parameters() for q in feat_modules.parameters())
    if bn_channels is None:
        with pytest.raises(NotImplementedError):
            model.get_bn_before_relu()
    else:
        bns = model.get_bn_before_relu()
        assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
        assert [bn.num_features for bn in bns] == bn_channels


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name: str) -> None:
    """An RD-style ``{'model': state_dict}`` checkpoint loads strictly into a fresh instance."""
    checkpoint = {"model": _model(name).state_dict()}
    torch.manual_seed(123)
    fresh = build_model(name, _classes(name)).eval()
    fresh.load_state_dict(checkpoint["model"], strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(_input(name)), _outputs(name)[0])


@pytest.mark.parametrize(
    ("name", "torchvision_name"),
    [
        ("ResNet18", "resnet18"),
        ("ResNet34", "resnet34"),
        ("ResNet50_Imagenet", "resnet50"),
        ("MobileNetV2_Imagenet", "mobilenet_v2"),
        ("ShuffleV2_Imagenet", "shufflenet_v2_x1_0"),
    ],
)
def test_torchvision_weights_load(name: str, torchvision_name: str) -> None:
    reference = _randomise_bn(getattr(torchvision.models, torchvision_name)()).eval()
    ours = build_model(name, 1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name", ALL)
def test_num_classes_and_small_inputs(name: str) -> None:
    """num_classes is honoured; pooling is global, so ImageNet models also run on 64-px inputs."""
    model = build_model(name, 7).eval()
    with torch.no_grad():
        assert model(_input(name, 64 if name in IMAGENET_MODELS else 32)).shape == (1, 7)


@pytest.mark.parametrize("name", ALL)
def test_channels_last_and_autocast(name: str) -> None:
    model = copy.deepcopy(_model(name)).to(memory_format=torch.channels_last)
    x = _input(name, 64 if name in IMAGENET_MODELS else 32)
    with torch.no_grad():
        expected = _model(name)(x)
        feats, logits = model(x.contiguous(memory_format=torch.channels_last), is_feat=True, preact=True)
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats[:-1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x.contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16 and low.shape == expected.shape


def test_mobilenetv2_constructs_silently(capsys: pytest.CaptureFixture[str]) -> None:
    build_model("MobileNetV2", 100)
    assert capsys.readouterr().out == ""


def test_resnet50_cifar_preact_unpacks() -> None:
    with torch.no_grad():
        feats, logits = _model("ResNet50")(_input("ResNet50"), is_feat=True, preact=True)
    assert len(feats) == 6 and logits.shape == (1, 100)


def test_vgg_pools_after_block3_only_at_64px() -> None:
    with torch.no_grad():
        feats, _ = _model("vgg8")(_input("vgg8", 64), is_feat=True)
    assert [tuple(f.shape[1:]) for f in feats[:-1]] == [
        (64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4),
    ]


def test_wrn_preact_reapplies_bn_in_training() -> None:
    """As RepDistiller: preact=True runs the BNs after each stage a second time (stats updated twice)."""
    model = build_model("wrn_16_1", 10).train()
    x = torch.randn(2, 3, 32, 32)
    model(x, is_feat=True, preact=True)
    assert [int(bn.num_batches_tracked) for bn in model.get_bn_before_relu()] == [2, 2, 2]
    assert int(model.block1.layer[0].bn1.num_batches_tracked) == 1


# ---------------------------------------------------------------------------------------------
# Connector / embedding modules (models/util.py)


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "params"),
    [
        ((2, 128, 16, 16), (2, 128, 16, 16), 16_768),  # resnet8x4 <- resnet32x4, hint layer 2
        ((2, 64, 16, 16), (2, 64, 16, 16), 4_288),  # wrn_16_2 <- wrn_40_2
        ((2, 256, 8, 8), (2, 256, 8, 8), 66_304),  # vgg8 <- vgg13
    ],
)
def test_convreg_published_sizes(s_shape: tuple, t_shape: tuple, params: int) -> None:
    assert _n_params(ConvReg(s_shape, t_shape)) == params


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "kind", "kernel"),
    [
        ((2, 16, 32, 32), (2, 64, 16, 16), nn.Conv2d, (3, 3)),
        ((2, 16, 8, 8), (2, 64, 16, 16), nn.ConvTranspose2d, (4, 4)),
        ((2, 16, 8, 8), (2, 64, 6, 6), nn.Conv2d, (3, 3)),
        ((2, 16, 8, 8), (2, 64, 8, 8), nn.Conv2d, (1, 1)),
    ],
)
def test_convreg_shape_rules(s_shape: tuple, t_shape: tuple, kind: type, kernel: tuple) -> None:
    reg = ConvReg(s_shape, t_shape).eval()
    assert type(reg.conv) is kind and reg.conv.kernel_size == kernel
    out = reg(torch.randn(s_shape))
    assert out.shape == t_shape and out.min() >= 0
    assert ConvReg(s_shape, t_shape, use_relu=False).eval()(torch.randn(s_shape)).min() < 0


def test_convreg_rejects_unsupported_shapes() -> None:
    with pytest.raises(ValueError, match="cannot map a 4x4 student map onto a 7x7 teacher map"):
        ConvReg((2, 16, 4, 4), (2, 32, 7, 7))


def test_ab_connector() -> None:
    s_shapes = [(2, 64, 32, 32), (2, 128, 16, 16), (2, 64, 8, 8)]
    t_shapes = [(2, 64, 32, 32), (2, 128, 16, 16), (2, 128, 4, 4)]
    connector = ABConnector(s_shapes, t_shapes).eval()
    assert _n_params(connector.connectors[0]) == 0 and _n_params(connector.connectors[1]) == 0
    assert isinstance(connector.connectors[2], ConvReg) and not connector.connectors[2].use_relu
    feats = [torch.randn(s) for s in s_shapes]
    out = connector(feats)
    assert out[0] is feats[0] and [o.shape for o in out] == [torch.Size(t) for t in t_shapes]
    assert _n_params(ABConnector(t_shapes[:2], t_shapes[:2])) == 0
    with pytest.raises(ValueError, match="unequal length"):
        ABConnector(s_shapes, t_shapes[:2])


def test_ofd_connector() -> None:
    connector = ConnectorV2([(2, 16, 8, 8), (2, 32, 4, 4)], [(2, 64, 8, 8), (2, 128, 4, 4)])
    assert list(connector.state_dict())[:2] == ["connectors.0.0.weight", "connectors.0.1.weight"]
    assert _n_params(connector) == 16 * 64 + 2 * 64 + 32 * 128 + 2 * 128
    out = connector.eval()([torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)])
    assert [tuple(o.shape) for o in out] == [(2, 64, 8, 8), (2, 128, 4, 4)]


def test_factor_transfer_modules() -> None:
    t_shape, s_shape = (2, 256, 8, 8), (2, 256, 8, 8)
    paraphraser, translator = Paraphraser(t_shape), Translator(s_shape, t_shape)
    assert _n_params(paraphraser) == 2_065_536  # resnet32x4 teacher
    assert _n_params(translator) == 1_033_728  # resnet8x4 student
    assert len(paraphraser.state_dict()) == 12 and len(Paraphraser(t_shape, use_bn=True).state_dict()) == 42
    x = torch.randn(t_shape)
    factor, rec = paraphraser(x)
    assert factor.shape == (2, 128, 8, 8) and rec.shape == x.shape
    assert torch.equal(paraphraser(x, is_factor=True), factor)
    assert translator.eval()(torch.randn(s_shape)).shape == factor.shape


def test_embeddings() -> None:
    x = torch.randn(4, 64, 1, 1)
    for embed in (Embed(64, 16), MLPEmbed(64, 16)):
        out = embed(x)
        assert out.shape == (4, 16)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    assert list(MLPEmbed(64, 16).state_dict()) == [
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
    ]
    assert LinearEmbed(64, 16)(x).shape == (4, 16) and Regress(64, 32)(x).min() >= 0
    normalised = Normalize(2)(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    torch.testing.assert_close(normalised, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


@pytest.mark.parametrize(
    ("layer", "shape"), [(0, (2, 16, 32, 32)), (2, (2, 32, 16, 16)), (3, (2, 64, 8, 8)), (4, (2, 64))]
)
def test_pool_embed(layer: int, shape: tuple) -> None:
    for pool_type in ("avg", "max"):
        out = PoolEmbed(layer, 32, pool_type)(torch.randn(shape))
        assert out.shape == (2, 32)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError):
        PoolEmbed(5)


def test_flatten_channels_last() -> None:
    x = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    assert torch.equal(Flatten()(x), x.contiguous().reshape(2, -1))
