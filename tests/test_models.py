"""wavefuse.models: WideResNet / WideWaveletResNet and PreActResNet-18 (tiny configs for speed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TOL, assert_close
from torch import nn
from torch.autograd import gradcheck

from wavefuse.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PreActResNet18,
    WideResNet,
    WideWaveletResNet,
)
from wavefuse.nn import HFPenalty, WaveletAvgPool2d, WaveletConv2d

VARIANTS = [(None, "paper"), ("haar", "paper"), ("haar", "all_downsample"), ("db2", "paper")]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_the_standard_models():
    with torch.device("meta"):  # construct only
        assert _count(WideResNet(34, 10)) == 46_160_474
        assert _count(WideWaveletResNet()) == 46_160_474
        assert _count(WideResNet(34, 10, wavelet="haar", placement="all_downsample")) == 46_160_474
        assert _count(PreActResNet18()) == 11_171_146
        assert _count(PreActResNet18(wavelet="haar", placement="all_downsample")) == 11_171_146
        assert _count(WideResNet(34, 10, num_classes=100)) == 46_160_474 + 640 * 90 + 90


@pytest.mark.parametrize("wavelet, placement", VARIANTS)
def test_shapes_cifar_and_fashion_mnist(wavelet, placement):
    """Forward and backward of the tiny WRN; PreActResNet-18 (full size) forward only, in eval."""
    for make, final in [
        (lambda **kw: WideResNet(10, 1, wavelet=wavelet, placement=placement, **kw), 64),
        (lambda **kw: PreActResNet18(wavelet=wavelet, placement=placement, **kw).eval(), 512),
    ]:
        for in_channels, size in [(3, 32), (1, 28)]:
            model = make(in_channels=in_channels, num_classes=7)
            x = torch.rand(2, in_channels, size, size)
            with torch.set_grad_enabled(final == 64):
                out = model(x)
                feats = model.features(x).shape[-1]
            assert out.shape == (2, 7)
            if final == 64:
                out.sum().backward()
            base = (8 if size == 32 else 7) if final == 64 else 4
            expected = base if wavelet is None or placement != "paper" else (base + 1) // 2
            assert feats == expected, (make, in_channels, size)


def test_paper_placement_is_wap_before_global_pooling():
    model = WideWaveletResNet(10, 1)
    assert isinstance(model.wap, WaveletAvgPool2d) and model.wap.bands == "all"
    assert not any(isinstance(m, WaveletConv2d) for m in model.modules())
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    pre = model.relu(model.bn1(model.block3(model.block2(model.block1(model.conv1(
        model.normalize(x)))))))  # fmt: skip
    assert pre.shape[-2:] == (8, 8)
    pooled = 0.5 * pre[..., ::2, ::2]  # Haar WAP, 8x8 -> 4x4
    expected = model.fc(pooled.mean(dim=(2, 3)))
    assert_close(model(x), expected, TOL[torch.float32])
    down = WideResNet(10, 1, wavelet="haar", placement="all_downsample")
    names = [
        n for n, m in down.named_modules() if isinstance(m, WaveletConv2d) and m.stride == (2, 2)
    ]
    assert names == [
        "block2.layer.0.conv1",
        "block2.layer.0.convShortcut",
        "block3.layer.0.conv1",
        "block3.layer.0.convShortcut",
    ]
    assert isinstance(down.wap, nn.Identity)


def test_state_dicts_are_the_standard_ones():
    plain = WideResNet(10, 1)
    keys = set(plain.state_dict())
    assert {
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block2.layer.0.convShortcut.weight",
    } <= keys
    assert {"fc.weight", "bn1.running_mean"} <= keys and not any("mean" == k for k in keys)
    for wavelet, placement in VARIANTS[1:]:
        other = WideResNet(10, 1, wavelet=wavelet, placement=placement)
        other.load_state_dict(plain.state_dict())  # strict
    pre = PreActResNet18()
    assert {"layer2.0.shortcut.0.weight", "linear.weight"} <= set(pre.state_dict())
    PreActResNet18(wavelet="haar", placement="all_downsample").load_state_dict(pre.state_dict())
    learned = PreActResNet18(wavelet="haar", bands="learned")
    assert learned.wap.weight.shape == (512, 4)


def test_normalisation_is_inside_the_model():
    model = PreActResNet18(wavelet="haar").eval()
    raw = PreActResNet18(wavelet="haar", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    raw.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert_close(model(x), raw((x - mean) / std), TOL[torch.float32])
    fm = WideResNet(10, 1, in_channels=1)
    assert fm.normalize.mean.flatten().tolist() == pytest.approx([0.2860])
    with pytest.raises(ValueError, match="mean and std"):
        WideResNet(10, 1, in_channels=1, mean=(0.5, 0.5, 0.5), std=(1, 1, 1))
    with pytest.raises(ValueError, match="placement"):
        WideResNet(10, 1, wavelet="haar", placement="everywhere")
    with pytest.raises(ValueError, match="depth"):
        WideResNet(12, 1)


@pytest.mark.parametrize(
    "build, exc, match",
    [
        (lambda: WideResNet(16, 0), ValueError, "widen must be an int >= 1, got 0"),
        (lambda: WideResNet("34"), TypeError, "depth must be an int"),
        (lambda: PreActResNet18(num_classes=-1), ValueError, "num_classes must be an int >= 1"),
        (lambda: WideResNet(10, 1, num_classes=2.0), TypeError, "num_classes must be an int"),
        (lambda: WideResNet(10, 1, in_channels=0), ValueError, "in_channels must be an int >= 1"),
        (lambda: PreActResNet18(mean=(0.5, 0.5, 0.5)), ValueError, "mean and std go together"),
        (lambda: WideResNet(10, 1, bands="foo"), ValueError, "bands='foo' is not supported"),
        (lambda: WideResNet(10, 1, wavelet_mode="foo"), ValueError, "wavelet_mode='foo'"),
        (
            lambda: PreActResNet18(wavelet="foo", placement="all_downsample"),
            ValueError,
            "wavelet='foo' is not a known wavelet",
        ),
        (lambda: PreActResNet18(wavelet=2), TypeError, "wavelet must be None, a wavelet name"),
    ],
)
def test_model_arguments_are_checked(build, exc, match):
    """Every argument is checked up front with its own name, a wavelet option also when no
    wavelet is used (a typo never passes silently)."""
    with pytest.raises(exc, match=match):
        build()


def test_channels_last_and_bf16_autocast():
    model = WideResNet(10, 1, wavelet="db2", placement="all_downsample").eval()
    x = torch.rand(4, 3, 32, 32)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert_close(out, ref, 1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
    assert low.dtype == torch.bfloat16 and bool(low.isfinite().all())
    # Nine bf16 layers, each rounding its inputs and weights: a few percent of the logit scale.
    assert_close(low, ref, 5e-2)


def test_gradcheck_tiny_model():
    model = WideResNet(10, 1, wavelet="haar", placement="all_downsample", in_channels=1).double()
    model.eval()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(model, (x,), fast_mode=True)


def test_compile_full_model_forward_backward():
    """torch.compile (inductor, fullgraph) of a tiny wavelet WRN with an HFPenalty: forward and
    backward on CPU, against eager."""
    torch._dynamo.reset()
    model = WideResNet(10, 1, wavelet="haar", placement="all_downsample")
    model.wap = WaveletAvgPool2d("haar", bands="learned", channels=64)  # both modules in one graph
    pen = HFPenalty(model, layers=["block2"], weight=0.01)
    x = torch.rand(2, 3, 16, 16)
    y = torch.randint(0, 10, (2,))
    eager = torch.nn.functional.cross_entropy(model(x), y) + pen.value()
    grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    loss = torch.nn.functional.cross_entropy(compiled(x), y) + pen.value()
    got = torch.autograd.grad(loss, list(model.parameters()))
    assert_close(loss, eager, 1e-4)
    for a, b in zip(got, grads):
        assert_close(a, b, 1e-3)


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that BN-ReLU changes its input."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def test_blocks_compute_as_the_codebases_write_them():
    """The width-changing blocks, recomposed from their layers as the codebases' forward passes
    write them: TRADES' BasicBlock and kuangliu's PreActBlock take the 1x1 shortcut from the
    activated input relu(bn1(x)), not from x."""
    wrn = WideResNet(10, 2, in_channels=3).eval()
    _randomise_bn(wrn)
    block = wrn.block2.layer[0]  # 32 -> 64 channels, stride 2
    x = torch.randn(2, 32, 8, 8)
    act = F.relu(block.bn1(x))
    out = block.conv2(F.relu(block.bn2(block.conv1(act))))
    with torch.no_grad():
        assert_close(block(x.clone()), out + block.convShortcut(act), TOL[torch.float32])
    pre = PreActResNet18().eval()
    _randomise_bn(pre)
    block = pre.layer2[0]  # 64 -> 128 channels, stride 2
    x = torch.randn(2, 64, 8, 8)
    act = F.relu(block.bn1(x))
    out = block.conv2(F.relu(block.bn2(block.conv1(act))))
    with torch.no_grad():
        assert_close(block(x), out + block.shortcut(act), TOL[torch.float32])


def test_wide_resnet_init_is_he_normal_fan_out():
    """The WRN codebases' init: every conv N(0, 2 / fan_out) (torch's kaiming_normal_ with
    mode="fan_out", nonlinearity="relu"), BatchNorm (1, 0), zero linear bias; the std is checked
    statistically on convs whose fan_in and fan_out differ (>= 4,608 weights: 10% is > 6 sigma)."""
    torch.manual_seed(0)
    model = WideResNet(10, 2)
    checked = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            std = nn.init.calculate_gain("relu") / fan_out**0.5
            if fan_in != fan_out and m.weight.numel() >= 4608:
                assert abs(m.weight.std().item() / std - 1) < 0.1, m
                assert abs(m.weight.mean().item()) < 0.1 * std, m
                checked += 1
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
        elif isinstance(m, nn.Linear):
            assert bool((m.bias == 0).all())
    assert checked >= 3
