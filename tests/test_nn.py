"""WaveletConv2d, convert() and HFPenalty."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import TOL, assert_close
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import wavefuse
from wavefuse.filters import filter_length
from wavefuse.models import PreActResNet18, WideResNet
from wavefuse.nn import HFPenalty, WaveletAvgPool2d, WaveletConv2d, convert
from wavefuse.nn.pool import fit_to_stride2

# ---- WaveletConv2d -------------------------------------------------------------------------------


def test_is_a_conv2d_and_loads_its_state_dict():
    conv = nn.Conv2d(3, 8, 3, 2, 1)
    for pool in ("all", "ll", "learned"):
        w = WaveletConv2d(3, 8, 3, 2, 1, pool=pool)
        assert isinstance(w, nn.Conv2d)
        w.load_state_dict(conv.state_dict())  # strict
        assert torch.equal(w.weight, conv.weight) and torch.equal(w.bias, conv.bias)
        if pool == "learned":
            assert w.band_weight.shape == (8, 4) and bool((w.band_weight == 0.25).all())
            assert set(w.state_dict()) == {"weight", "bias", "band_weight"}
        else:
            assert set(w.state_dict()) == {"weight", "bias"}
    assert "pool='all'" in repr(WaveletConv2d(3, 8, 3, 2))
    with pytest.raises(ValueError, match="stride 1 or 2"):
        WaveletConv2d(3, 8, 3, (2, 1))
    with pytest.raises(ValueError, match="pool="):
        WaveletConv2d(3, 8, 3, 2, pool="max")


def test_stride1_is_plain_conv_and_stride2_is_pooled_stride1_conv():
    x = torch.randn(2, 3, 11, 10)
    conv1 = nn.Conv2d(3, 4, 3, 1, 1)
    w1 = WaveletConv2d(3, 4, 3, 1, 1)
    w1.load_state_dict(conv1.state_dict())
    assert torch.equal(w1(x), conv1(x))
    conv2 = nn.Conv2d(3, 4, 3, 2, 1)
    w2 = WaveletConv2d(3, 4, 3, 2, 1, wave="db2", mode="symmetric")
    w2.load_state_dict(conv2.state_dict())
    y1 = F.conv2d(x, conv2.weight, conv2.bias, 1, 1)
    expected = wavefuse.wavelet_pool2d(y1, "db2", "symmetric")[..., 1:7, 1:6]
    out = w2(x)
    assert out.shape == conv2(x).shape
    assert_close(out, expected, TOL[torch.float32])
    haar = WaveletConv2d(3, 4, 3, 2, 1)  # Haar "all", periodization: 0.5 * y1[::2, ::2]
    haar.load_state_dict(conv2.state_dict())
    x = torch.randn(2, 3, 12, 10)
    assert torch.equal(haar(x), 0.5 * F.conv2d(x, conv2.weight, conv2.bias, 1, 1)[..., ::2, ::2])


@pytest.mark.parametrize("pmode", ["reflect", "replicate", "circular"])
def test_stride2_keeps_the_padding_mode(pmode):
    """The stride-1 convolution pads as the layer's padding_mode says: with Haar "all" the output
    is 0.5 * (nn.Conv2d at stride 1, same padding_mode)[::2, ::2]."""
    x = torch.randn(2, 3, 12, 10)
    conv = nn.Conv2d(3, 4, 3, 1, (2, 1), padding_mode=pmode)
    wconv = WaveletConv2d(3, 4, 3, 2, (2, 1), padding_mode=pmode)
    wconv.load_state_dict(conv.state_dict())
    assert_close(wconv(x), 0.5 * conv(x)[..., ::2, ::2], TOL[torch.float32])


PADDINGS = [0, 1, 2, (1, 0), (0, 2), "valid"]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


@pytest.mark.parametrize(
    "wave, mode, kernels, pmodes",
    [
        ("haar", "periodization", (1, 2, 3, (3, 2)), PADDING_MODES),
        ("db2", "symmetric", (1, 2, (3, 2)), ("zeros", "reflect")),
        ("db3", "zero", (2, 3), ("zeros", "circular")),
    ],
)
def test_output_shape_equals_conv2d_stride2(wave, mode, kernels, pmodes, monkeypatch):
    """Every kernel / padding / dilation / padding_mode / odd-even size nn.Conv2d accepts (the
    full grid for the default pooling; for the other modes, whose pooled maps are cropped, the
    rule is the same at a smaller grid)."""
    # Shapes only: skip oneDNN, whose per-shape setup dominates hundreds of tiny convolutions.
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    count = 0
    for k, pad, dil, pmode in itertools.product(kernels, PADDINGS, (1, 2), pmodes):
        if pmode != "zeros" and pad == "valid":
            continue
        conv = nn.Conv2d(2, 3, k, 2, pad, dil, padding_mode=pmode)
        wconv = WaveletConv2d(2, 3, k, 2, pad, dil, padding_mode=pmode, wave=wave, mode=mode)
        wconv.load_state_dict(conv.state_dict())
        for h, w in ((7, 8), (8, 9)):
            x = torch.randn(1, 2, h, w)
            try:
                expected = conv(x).shape
            except RuntimeError:  # nn.Conv2d rejects it (padding larger than the input, say)
                continue
            assert wconv(x).shape == expected, (k, pad, dil, pmode, h, w)
            count += 1
    assert count > 60


@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym5"])
def test_reflect_on_responses_of_one_sample(wave):
    """mode="reflect" where the stride-1 response has 1 sample along an axis (PyWavelets' reflect
    refuses it): the shape is still nn.Conv2d's, the 1-sample axis extended as numpy.pad's reflect
    extends it (constant). Checks: a 1 x 1 response equals mode "symmetric"'s (whose extension of
    one sample is the same constant); a 1 x W response equals the pooling of the response with
    its row written twice (reflect then extends it constantly too); gradcheck through it."""
    import numpy as np

    row = np.array([3.0])
    assert np.array_equal(np.pad(row, 4, mode="reflect"), np.pad(row, 4, mode="symmetric"))
    torch.manual_seed(0)
    for shape, k in (((1, 2, 3, 4), 3), ((1, 2, 3, 3), 3), ((1, 2, 1, 9), 1), ((2, 2, 8, 1), 1)):
        conv = nn.Conv2d(2, 3, k, 2)
        x = torch.randn(*shape, dtype=torch.float64)
        wconv = WaveletConv2d(2, 3, k, 2, wave=wave, mode="reflect").double()
        wconv.load_state_dict(conv.state_dict())
        got = wconv(x)
        assert got.shape == conv.double()(x).shape, shape
        y = wconv._conv_stride1(x)
        h, w = y.shape[-2:]
        if (h, w) == (1, 1):
            other = WaveletConv2d(2, 3, k, 2, wave=wave, mode="symmetric").double()
            other.load_state_dict(conv.state_dict())
            assert_close(got, other(x), 1e-12, f"{wave} {shape} 1x1")
        else:
            twice = y.repeat(1, 1, 2 if h == 1 else 1, 2 if w == 1 else 1)
            pooled = wavefuse.wavelet_pool2d(twice, wave, "reflect", "all", backend="reference")
            expected = fit_to_stride2(pooled, (h, w), filter_length(wave), "reflect", True)
            assert_close(got, expected, 1e-12, f"{wave} {shape}")
        xg = x.clone().requires_grad_()
        assert gradcheck(wconv, (xg,), fast_mode=True)
    pool = wavefuse.WaveletAvgPool2d(wave, "reflect", ceil_mode=True)
    assert pool(torch.randn(1, 2, 1, 5)).shape == (1, 2, 1, 3)
    with pytest.raises(ValueError, match="reflect"):  # PyWavelets' count: refused, as pywt
        wavefuse.WaveletAvgPool2d(wave, "reflect")(torch.randn(1, 2, 1, 5))


def test_learned_pool_names_its_channels():
    pool = wavefuse.WaveletAvgPool2d(bands="learned", channels=3)
    with pytest.raises(ValueError, match=r"channels=3\) got an input with 4 channels"):
        pool(torch.randn(1, 4, 8, 8))
    assert pool(torch.randn(3, 8, 8)).shape == (3, 4, 4)


def test_gradcheck():
    for wave, mode, pool in [("haar", "periodization", "learned"), ("db2", "symmetric", "ll")]:
        m = WaveletConv2d(2, 3, 3, 2, 1, wave=wave, mode=mode, pool=pool).double()
        params = dict(m.named_parameters())
        x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)

        def f(x, *p, m=m, names=tuple(params)):
            return torch.func.functional_call(m, dict(zip(names, p)), (x,))

        assert gradcheck(f, (x, *params.values()), fast_mode=True)
        assert gradgradcheck(f, (x, *params.values()), fast_mode=True)


def test_channels_last_and_bf16_autocast():
    m = WaveletConv2d(4, 8, 3, 2, 1, wave="db2", mode="periodization", pool="learned")
    x = torch.randn(2, 4, 12, 11)
    ref = m(x)
    y = m(x.to(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref, TOL[torch.float32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yb = m(x)
    assert yb.dtype == torch.bfloat16 and bool(yb.isfinite().all())
    # bf16 rounds the inputs, the weights and the conv output: a few bf16 ulps of the largest value.
    assert_close(yb, ref, 4 * TOL[torch.bfloat16])
    yb.float().sum().backward()
    assert m.weight.grad is not None and m.band_weight.grad.dtype == torch.float32


# ---- convert -------------------------------------------------------------------------------------


def _output_shapes(model, x):
    shapes, handles = {}, []
    for name, m in model.named_modules():
        handles.append(m.register_forward_hook(lambda m, a, o, n=name: shapes.__setitem__(n, o)))
    out = model(x)
    for h in handles:
        h.remove()
    return out, {k: tuple(v.shape) for k, v in shapes.items() if torch.is_tensor(v)}


def test_convert_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision", reason="torchvision is in the [test] extra")
    model = torchvision.models.resnet18(num_classes=10)
    params = {n: p for n, p in model.named_parameters()}
    xs = [torch.randn(1, 3, 33, 36)]
    before = [_output_shapes(model, x)[1] for x in xs]
    model, done = convert(model)
    assert [r.name for r in done] == [
        "conv1",
        "maxpool",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
        "layer3.0.conv1",
        "layer3.0.downsample.0",
        "layer4.0.conv1",
        "layer4.0.downsample.0",
    ]
    assert done[0].old is nn.Conv2d and done[0].new is WaveletConv2d
    assert done[1].old is nn.MaxPool2d and done[1].new is WaveletAvgPool2d
    assert model.maxpool.ceil_mode is True  # kernel 3, padding 1: ceil(n/2)
    # The same Parameter objects: an optimizer built before convert keeps training them.
    assert all(p is params[n] for n, p in model.named_parameters())
    for x, shapes in zip(xs, before):
        out, after = _output_shapes(model, x)
        assert after == shapes
        out.sum().backward()
    assert convert(model)[1] == []  # nothing left to replace


def test_convert_pools_by_their_size_rule():
    model = nn.Sequential(
        nn.AvgPool2d(2),  # floor(n/2)
        nn.MaxPool2d(2, ceil_mode=True),  # ceil(n/2)
        nn.AvgPool2d(3, 2),  # floor((n-1)/2): neither, left alone
        nn.MaxPool2d(2, return_indices=True),  # indices: left alone
        nn.AvgPool2d(2, 1),  # stride 1: not a downsampling pool
    )
    with pytest.warns(UserWarning, match="leaving"):
        _, done = convert(model, "db2", mode="symmetric")
    assert [r.name for r in done] == ["0", "1"]
    assert model[0].ceil_mode is False and model[1].ceil_mode is True
    for n in (9, 10, 11):
        x = torch.randn(1, 2, n, n + 1)
        assert model[0](x).shape == nn.AvgPool2d(2)(x).shape
        assert model[1](x).shape == nn.MaxPool2d(2, ceil_mode=True)(x).shape
    with pytest.raises(ValueError, match="pool='learned'"):
        convert(nn.Sequential(nn.AvgPool2d(2)), pool="learned")
    untouched = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="pool='learned'"):  # the conv comes first: not swapped
        convert(untouched, pool="learned")
    assert type(untouched[0]) is nn.Conv2d and type(untouched[2]) is nn.MaxPool2d
    with pytest.raises(ValueError, match="targets"):
        convert(model, targets=("conv",))


def test_convert_pools_with_a_tuple_stride():
    """stride=(2, 2) is stride 2: such pools are swapped like stride=2 ones, by their size rule."""
    model = nn.Sequential(
        nn.AvgPool2d(2, (2, 2)), nn.MaxPool2d(3, (2, 2), 1), nn.MaxPool2d(2, (2, 1))
    )
    _, done = convert(model, targets=("avgpool", "maxpool"))
    assert [r.name for r in done] == ["0", "1"] and type(model[2]) is nn.MaxPool2d
    assert model[0].ceil_mode is False and model[1].ceil_mode is True
    x = torch.randn(1, 2, 9, 10)
    assert model[1](model[0](x)).shape == nn.MaxPool2d(3, 2, 1)(nn.AvgPool2d(2)(x)).shape


def test_convert_root_shared_modules_and_targets():
    conv = nn.Conv2d(3, 4, 3, 2, 1)
    new, done = convert(conv, pool="learned")
    assert isinstance(new, WaveletConv2d) and done[0].name == ""
    assert new.weight is conv.weight and new.band_weight.device == conv.weight.device
    shared = nn.Conv2d(4, 4, 1, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.AvgPool2d(2))
    _, done = convert(model, targets=("conv_stride2",))
    assert len(done) == 1 and model[0] is model[2] and isinstance(model[0], WaveletConv2d)
    assert type(model[3]) is nn.AvgPool2d
    # A replacement takes the training flag of the module it replaces (an eval-mode model stays so).
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.MaxPool2d(2)).eval()
    _, done = convert(model)
    assert len(done) == 2 and not any(m.training for m in model.modules())
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.MaxPool2d(2)).train()
    convert(model)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("make", [lambda: WideResNet(10, 1), lambda: PreActResNet18()])
def test_convert_models_keeps_shapes(make):
    model = make()
    x = torch.rand(2, 3, 32, 32)
    _, before = _output_shapes(model, x)
    _, done = convert(model)
    assert len(done) == (4 if isinstance(model, WideResNet) else 6)
    out, after = _output_shapes(model, x)
    assert after == before
    out.sum().backward()


# ---- HFPenalty -----------------------------------------------------------------------------------


def _tiny_net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        WaveletConv2d(4, 4, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _activations(model, names, x):
    acts, handles = {}, []
    for name, m in model.named_modules():
        if name in names:
            handles.append(m.register_forward_hook(lambda m, a, o, n=name: acts.__setitem__(n, o)))
    model(x)
    for h in handles:
        h.remove()
    return [acts[n] for n in names]


def test_value_is_the_weighted_sum_of_hf_penalty():
    net = _tiny_net()
    x = torch.randn(3, 2, 32, 30)
    pen = HFPenalty(net, layers=["0", "2"], wave="db2", level=2, p=1, weight=0.3, mode="symmetric")
    net(x)
    expected = 0.3 * sum(
        wavefuse.hf_penalty(a, "db2", 2, "symmetric", 1) for a in _activations(net, ["0", "2"], x)
    )
    assert_close(pen.value(), expected, TOL[torch.float32])
    net(x[:1])  # a new forward pass starts afresh
    assert len(pen.terms) == 2
    by_type = HFPenalty(net, layers=nn.Conv2d)  # WaveletConv2d is a Conv2d too
    assert by_type.layers == ["0", "2", "4"]
    net(x)
    assert len(by_type.terms) == 3
    by_type.remove()
    net(x)
    assert by_type.terms == [] and len(pen.terms) == 2
    pen.reset()
    with pytest.warns(UserWarning, match="no hooked activation"):
        assert float(pen.value()) == 0.0
    pen.enabled = False
    net(x)
    assert pen.terms == []
    pen.remove()


def test_penalty_passes_its_settings_and_unwraps_compiled_models():
    """value() is weight (default 1) times hf_penalty with every setting passed on (reduction and
    band_weights against band_energy); a module named and matched by type is hooked once;
    reduction="none" is refused (value() is 0-d); a penalty built on a torch.compile wrapper
    takes the inner model's names and its pre-hook, so passes of the inner model start afresh."""
    net = _tiny_net()
    x = torch.randn(3, 2, 32, 24)  # layer 2's output: 16 x 12, two db2 levels
    a0, a2, a4 = _activations(net, ["0", "2", "4"], x)
    with HFPenalty(net, layers=["0", nn.Conv2d]) as pen:  # "0" is a Conv2d too: hooked once
        assert pen.layers == ["0", "2", "4"]
        net(x)
        assert len(pen.terms) == 3
        expected = sum(wavefuse.hf_penalty(a) for a in (a0, a2, a4))
        assert_close(pen.value(), expected, TOL[torch.float32])
    w = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, 0.25]])
    kw = {"wave": "db2", "level": 2, "mode": "symmetric", "band_weights": w.tolist()}
    with HFPenalty(net, layers=["2"], reduction="sum", **kw) as pen:
        net(x)
        expected = (wavefuse.band_energy(a2, "db2", 2, "symmetric") * w).sum()
        assert_close(pen.value(), expected, TOL[torch.float32])
    with pytest.raises(ValueError, match="reduction='none' is not supported"):
        HFPenalty(net, layers=["0"], reduction="none")
    compiled = torch.compile(net, backend="eager")  # never called: only its wrapping matters
    with HFPenalty(compiled, layers=["0"]) as pen:
        net(x)
        net(x)
        assert len(pen.terms) == 1


def test_penalty_backend():
    net = _tiny_net()
    x = torch.randn(2, 2, 16, 16)
    values = {}
    for backend in ("reference", "auto"):
        with HFPenalty(net, layers=["0", "2"], wave="db2", level=2, backend=backend) as pen:
            net(x)
            values[backend] = pen.value()
    assert_close(values["auto"], values["reference"], TOL[torch.float32])
    with pytest.raises(ValueError, match="backend='gpu' is not one of"):
        HFPenalty(net, layers=["0"], backend="gpu")


def test_context_manager_errors_and_gradients():
    net = _tiny_net().double()
    with HFPenalty(net, layers=[net[2]]) as pen:
        x = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)

        def f(x):
            net(x)
            return pen.value()

        assert gradcheck(f, (x,), fast_mode=True)
    assert not net[2]._forward_hooks
    with pytest.raises(ValueError, match="not a module"):
        HFPenalty(net, layers=["nope"])
    with pytest.raises(ValueError, match="matches no module"):
        HFPenalty(net, layers=nn.Linear)
    with HFPenalty(net, layers=["6"]), pytest.raises(ValueError, match="not an"):
        net(x)


def test_torch_fx_traces_the_modules_and_models():
    """symbolic_trace (and so torchvision's create_feature_extractor) sees the wavelet pooling as
    one call, as it sees nn.Conv2d; the traced module computes what the module does."""
    x = torch.randn(2, 3, 16, 16)
    for m in (
        WaveletAvgPool2d(),
        WaveletAvgPool2d("db2", "symmetric", "learned", channels=3, ceil_mode=True),
        WaveletConv2d(3, 4, 3, 2, 1, wave="db3", mode="zero", pool="learned"),
        nn.Sequential(WaveletConv2d(3, 4, 3, 2, 1), nn.ReLU(), WaveletAvgPool2d(ceil_mode=False)),
        WideResNet(10, 1, wavelet="haar"),
        PreActResNet18(num_classes=3, wavelet="haar", placement="all_downsample"),
    ):
        m.eval()
        traced = torch.fx.symbolic_trace(m)
        assert any(
            n.target.__name__ == "pool_fitted"
            for n in traced.graph.nodes
            if n.op == "call_function"
        )
        assert torch.equal(traced(x), m(x))


def test_unbatched_inputs_as_torch_layers():
    x = torch.randn(3, 9, 10)
    for m, ref in (
        (WaveletConv2d(3, 4, 3, 2, 1), nn.Conv2d(3, 4, 3, 2, 1)),
        (WaveletAvgPool2d(ceil_mode=False), nn.AvgPool2d(2)),
        (WaveletAvgPool2d("db2", "symmetric", ceil_mode=True), nn.AvgPool2d(2, ceil_mode=True)),
    ):
        assert m(x).shape == ref(x).shape
        assert torch.equal(m(x), m(x.unsqueeze(0)).squeeze(0))


def test_copies_and_pickles_of_the_model_carry_no_penalty():
    """deepcopy (EMA / SWA copies), AveragedModel and torch.save of a model with a penalty work
    after a forward pass (terms are not graph leaves), and the copy never writes into the
    original's terms."""
    net = _tiny_net()
    pen = HFPenalty(net, layers=["0", "2"], weight=0.1)
    x = torch.randn(2, 2, 8, 8)
    (net(x).sum() + pen.value()).backward()
    before = [t.detach().clone() for t in pen.terms]
    copy_ = copy.deepcopy(net)
    ema = torch.optim.swa_utils.AveragedModel(net)
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for other in (copy_, ema, loaded):
        assert torch.equal(other(x), net(x))
    net(x)  # the original's own pass still fills its terms
    assert len(pen.terms) == 2
    copy_(x[:1]), ema(x[:1]), loaded(x[:1])
    assert len(pen.terms) == 2 and all(torch.equal(a, b) for a, b in zip(pen.terms, before))
    pen.remove()
    assert not net[0]._forward_hooks and not net._forward_pre_hooks


def test_under_torch_compile():
    torch._dynamo.reset()
    net = WideResNet(10, 1, wavelet="haar")
    pen = HFPenalty(net, layers=["block1", "block2"], weight=0.5)
    x = torch.rand(2, 3, 16, 16)
    eager = (net(x).sum(), pen.value())
    grads = torch.autograd.grad(eager[0] + eager[1], list(net.parameters()))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    assert len(pen.terms) == 2
    assert_close(pen.value(), eager[1], TOL[torch.float32])
    got = torch.autograd.grad(out.sum() + pen.value(), list(net.parameters()))
    for a, b in zip(got, grads):
        assert_close(a, b, 1e-4)


class _RoundTrip(nn.Module):
    def __init__(self, J, wave, mode):
        super().__init__()
        self.fwd = wavefuse.DWTForward(J=J, wave=wave, mode=mode)
        self.inv = wavefuse.DWTInverse(wave=wave, mode=mode)

    def forward(self, x):
        return self.inv(self.fwd(x))


def test_torch_export():
    """torch.export (deploying a trained model): the modules export with a dynamic batch -- and
    dynamic H and W where the module is shape-polymorphic (the pools, WaveletConv2d, a Haar
    round trip on multiples of 2^J; the trimming of odd sizes makes other sizes separate
    programs) with no guard that pins them, the program keeps wavefuse's ops (a deployed model
    runs the kernels, not a decomposition: fails if the ops run their implementations directly
    while traced), gives the eager module's bits at other sizes and survives save / load. The
    fake registrations' shapes for concrete sizes are opcheck's subject (per op)."""
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    height, width = (
        torch.export.Dim("height", min=4, max=256),
        torch.export.Dim("width", min=4, max=256),
    )
    side = torch.export.Dim("side", min=2, max=64)
    free = {0: batch, 2: height, 3: width}
    cases = (
        (WaveletAvgPool2d(), free, (5, 3, 22, 13)),
        (WaveletAvgPool2d("db2", "symmetric", bands="learned", channels=3), {0: batch}, None),
        (WaveletConv2d(3, 4, 3, 2, 1, wave="db2", mode="symmetric"), free, (2, 3, 33, 17)),
        (_RoundTrip(2, "haar", "symmetric"), {0: batch, 2: 4 * side, 3: 4 * side}, (3, 3, 24, 24)),
        (_RoundTrip(2, "db2", "periodization"), {0: batch}, None),
        (WideResNet(10, 1, wavelet="haar").eval(), {0: batch}, None),
    )
    for module, dims, other in cases:
        x = torch.rand(2, 3, 16, 16)
        ep = torch.export.export(module, (x,), dynamic_shapes=(dims,))
        ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert any(op.startswith("wavefuse.") for op in ops), (module, sorted(ops))
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        buf.seek(0)
        loaded = torch.export.load(buf)
        other = other or (5, 3, 16, 16)
        for y in (x, torch.rand(other)):
            with torch.no_grad():
                expected = module(y)
            assert torch.equal(ep.module()(y), expected), (module, tuple(y.shape))
            assert torch.equal(loaded.module()(y), expected), (module, tuple(y.shape))


def test_under_ddp(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        net = _tiny_net()
        ddp = nn.parallel.DistributedDataParallel(net)
        pen = HFPenalty(ddp, layers=["0", "2"], weight=0.1)  # the inner model's names
        x = torch.randn(2, 2, 8, 8)
        (ddp(x).sum() + pen.value()).backward()
        ddp_grads = [p.grad.clone() for p in net.parameters()]
        expected = 0.1 * sum(wavefuse.hf_penalty(a) for a in _activations(net, ["0", "2"], x))
        net.zero_grad()
        (net(x).sum() + expected).backward()
        for a, p in zip(ddp_grads, net.parameters()):
            assert_close(a, p.grad, TOL[torch.float32])
    finally:
        dist.destroy_process_group()
