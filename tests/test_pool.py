"""wavelet_pool2d (the op wavefuse::wavelet_pool2d and its pair) and WaveletAvgPool2d.

Oracle: the weighted sum of the four bands of ``wavefuse.dwt2`` (itself held to PyWavelets to 1e-10
in test_dwt.py), in float64 to 1e-10, for every mode, wavelets of every family, odd and even sizes;
plus the published identity Haar WAP = 0.5 * x[..., ::2, ::2].
"""

from __future__ import annotations

import pytest
import pywt
import torch
from conftest import ALL_MODES, SIZES, TOL, assert_close, cpu_backends
from torch.autograd import gradcheck, gradgradcheck

import wavefuse
from wavefuse import backends
from wavefuse.backends import BackendUnavailableError
from wavefuse.ops import pool as pool_ops

POOL_WAVELETS = ["haar", "db2", "db3", "sym4", "coif1", "db7"]
#: "reference" and the C++ kernels ("cpu"), each against the same oracles.
BACKENDS = cpu_backends("wavelet_pool2d")


def _bands_sum(x, wave, mode, weights):
    """sum_b w_b * band_b of dwt2; weights (4,) or (C, 4) in the order LL, cH, cV, cD."""
    ll, (ch, cv, cd) = wavefuse.dwt2(x, wave, mode)
    w = weights if weights.dim() == 2 else weights.expand(x.shape[1], 4)
    return sum(w[:, b, None, None] * band for b, band in enumerate((ll, ch, cv, cd)))


def _sizes(mode):
    return [s for s in SIZES if mode != "reflect" or min(s) >= 2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", POOL_WAVELETS)
def test_equals_weighted_sum_of_dwt2_bands(wave, mode, backend):
    for h, w in _sizes(mode):
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        what = f"{wave} {mode} {h}x{w}"
        quarter = torch.full((4,), 0.25, dtype=torch.float64)
        y = wavefuse.wavelet_pool2d(x, wave, mode, backend=backend)
        assert_close(y, _bands_sum(x, wave, mode, quarter), 1e-10, what)
        ll = wavefuse.wavelet_pool2d(x, wave, mode, "ll", backend=backend)
        assert_close(ll, wavefuse.dwt2(x, wave, mode)[0], 1e-10, what + " ll")
        for weights in (
            torch.randn(3, 4, dtype=torch.float64),
            torch.randn(4, dtype=torch.float64),
        ):
            y = wavefuse.wavelet_pool2d(x, wave, mode, weights, backend=backend)
            assert_close(y, _bands_sum(x, wave, mode, weights), 1e-10, what + " weighted")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "wave, mode",
    [("db2", "symmetric"), ("db4", "periodization"), ("haar", "zero"), ("db3", "reflect")],
)
def test_adjoint_and_kernel_gradient_against_the_reference(wave, mode, backend):
    """The pair ops on their own: the adjoint is the transpose of the forward (<A x, g> =
    <x, A^T g>), both agree with the reference's, and so does the per-channel kernel gradient;
    tall planes (several row blocks of the C++ forward), odd sizes, strided views."""
    for h, w in [(70, 9), (9, 70), (5, 7), (33, 34)]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        taps = pywt.Wavelet(wave).dec_len
        kernel = torch.randn(3, taps, taps, dtype=torch.float64)
        for k in (kernel, kernel[:1]):
            y = pool_ops.wavelet_pool2d(x, k, mode, backend)
            assert_close(y, pool_ops.wavelet_pool2d(x, k, mode, "reference"), 1e-12, "forward")
            g = torch.randn_like(y)
            a = pool_ops.wavelet_pool2d_adjoint(g, k, mode, [h, w], backend)
            assert_close(
                a, pool_ops.wavelet_pool2d_adjoint(g, k, mode, [h, w], "reference"), 1e-12, "adj"
            )
            torch.testing.assert_close((y * g).sum(), (x * a).sum(), rtol=1e-12, atol=1e-12)
            kg = pool_ops.wavelet_pool2d_kernel_grad(g, x, taps, mode, backend)
            ref = pool_ops.wavelet_pool2d_kernel_grad(g, x, taps, mode, "reference")
            assert_close(kg, ref, 1e-12, "kernel grad")
        # strided (a slice and a transpose) in, the same values out
        xs = torch.randn(2, 3, 2 * h, w + 3, dtype=torch.float64)[:, :, ::2, 1 : w + 1]
        xt = torch.randn(2, 3, w, h, dtype=torch.float64).transpose(-1, -2)
        for t in (xs, xt, x.to(memory_format=torch.channels_last)):
            assert_close(
                pool_ops.wavelet_pool2d(t, kernel, mode, backend),
                pool_ops.wavelet_pool2d(t.contiguous(), kernel, mode, "reference"),
                1e-12,
                "strided",
            )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "wave, mode",
    [("haar", "periodization"), ("db3", "symmetric"), ("db2", "zero"), ("db4", "periodic")],
)
def test_many_channels_channels_last(wave, mode, dtype, backend):
    """16+ channels in channels_last take the C++ kernels' channel-vector loops (forward and
    adjoint); per-channel and shared kernels, odd sizes, against the contiguous reference."""
    cl = torch.channels_last
    taps = pywt.Wavelet(wave).dec_len
    for n, c, h, w in [(2, 16, 9, 7), (1, 20, 4, 12)]:
        x = torch.randn(n, c, h, w, dtype=torch.float64)
        kernel = torch.randn(c, taps, taps, dtype=torch.float64)
        ck = kernel.to(torch.float32) if dtype != torch.float64 else kernel
        for k, k64 in ((ck, kernel), (ck[:1], kernel[:1])):
            y = pool_ops.wavelet_pool2d(x.to(dtype).to(memory_format=cl), k, mode, backend)
            assert y.is_contiguous(memory_format=cl)
            ref = pool_ops.wavelet_pool2d(x.to(dtype).double(), k64, mode, "reference")
            assert_close(y, ref, TOL[dtype], f"{wave} {mode} forward")
            g = torch.randn(y.shape, dtype=torch.float64)
            a = pool_ops.wavelet_pool2d_adjoint(
                g.to(dtype).to(memory_format=cl), k, mode, [h, w], backend
            )
            assert a.is_contiguous(memory_format=cl)
            ref = pool_ops.wavelet_pool2d_adjoint(
                g.to(dtype).double(), k64, mode, [h, w], "reference"
            )
            assert_close(a, ref, TOL[dtype], f"{wave} {mode} adjoint")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["periodization", "symmetric", "periodic", "zero"])
def test_filters_longer_than_the_signal(mode, backend):
    """db20 (40 taps) on 3x5 inputs: the extension wraps or mirrors several times."""
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    weights = torch.randn(2, 4, dtype=torch.float64)
    y = wavefuse.wavelet_pool2d(x, "db20", mode, weights, backend=backend)
    assert_close(y, _bands_sum(x, "db20", mode, weights), 1e-10, f"db20 {mode}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_wap_is_half_the_top_left_sample(mode, backend):
    """The published identity: Haar (LL + LH + HL + HH) / 4 = 0.5 * x[..., ::2, ::2] on even sizes
    (every mode: two taps never reach the extension). Bit for bit in float32 and the half types;
    float64 it is x * 0.5000000000000001 (pywt's tap 0.7071067811865476 squared), 3e-16 relative."""
    x = torch.randn(2, 3, 8, 6)
    for t in (x, x.to(memory_format=torch.channels_last), x.half(), x.bfloat16()):
        y = wavefuse.wavelet_pool2d(t, "haar", mode, backend=backend)
        assert torch.equal(y, 0.5 * t[..., ::2, ::2]), t.dtype
        assert torch.equal(wavefuse.WaveletAvgPool2d("haar", mode, backend=backend)(t), y)
    x64 = x.double()
    y64 = wavefuse.wavelet_pool2d(x64, "haar", mode, backend=backend)
    torch.testing.assert_close(y64, 0.5 * x64[..., ::2, ::2], rtol=3.4e-16, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtypes_and_memory_format(dtype, backend):
    x = torch.randn(2, 5, 13, 10)
    weights = torch.randn(5, 4)
    for wave, mode in [("db3", "symmetric"), ("haar", "periodization"), ("db2", "periodization")]:
        for t in (x.to(dtype), x.to(dtype).to(memory_format=torch.channels_last)):
            for bands in ("all", "ll", weights):
                y = wavefuse.wavelet_pool2d(t, wave, mode, bands, backend=backend)
                assert y.dtype == dtype
                assert y.is_contiguous(memory_format=torch.channels_last) == (not t.is_contiguous())
                b64 = bands if isinstance(bands, str) else bands.double()
                ref = wavefuse.wavelet_pool2d(t.double(), wave, mode, b64)
                assert_close(y, ref, TOL[dtype], f"{dtype} {wave} {mode}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("first", [torch.float32, torch.float64])
def test_constant_kernels_are_kept_per_dtype(first, backend, monkeypatch):
    """The "all" / "ll" kernels are built once per wavelet, bands, compute dtype and device: a
    float32 call before a float64 one (or after it) must not hand the float64 call float32 taps,
    which would hold it to float32 precision instead of PyWavelets' 1e-10."""
    monkeypatch.setattr(pool_ops, "_KERNELS", {})  # a fresh cache: the order below is the test
    x = torch.randn(2, 3, 13, 10, dtype=torch.float64)
    quarter = torch.full((4,), 0.25, dtype=torch.float64)
    second = torch.float64 if first == torch.float32 else torch.float32
    for dtype in (first, second):
        for bands in ("all", "ll"):
            y = wavefuse.wavelet_pool2d(x.to(dtype), "db3", "symmetric", bands, backend=backend)
            assert y.dtype == dtype
            if dtype == torch.float64:
                expected = (
                    _bands_sum(x, "db3", "symmetric", quarter)
                    if bands == "all"
                    else wavefuse.dwt2(x, "db3", "symmetric")[0]
                )
                assert_close(y, expected, 1e-10, f"float64 {bands} after {first}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_band_weight_gradient_is_the_per_channel_sum_of_band_times_grad(backend):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    weights = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    (wavefuse.wavelet_pool2d(x, "db3", "symmetric", weights, backend=backend) * g).sum().backward()
    ll, (ch, cv, cd) = wavefuse.dwt2(x, "db3", "symmetric")
    expected = torch.stack([(b * g).sum(dim=(0, 2, 3)) for b in (ll, ch, cv, cd)], dim=1)
    assert_close(weights.grad, expected, 1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty_reaches_the_band_weights(backend):
    """A gradient penalty ||d loss / dx||^2 (double backward with a cotangent that needs no
    gradient, only the weights do) differentiates with respect to per-channel and shared band
    weights exactly as the same penalty on the weighted sum of dwt2's bands."""
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)

    def penalty(y):
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return (gx**2).sum()

    for shape in ((3, 4), (4,)):
        w = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        y = wavefuse.wavelet_pool2d(x, "db2", "symmetric", w, backend=backend)
        (got,) = torch.autograd.grad(penalty(y), w)
        (expected,) = torch.autograd.grad(penalty(_bands_sum(x, "db2", "symmetric", w)), w)
        assert_close(got, expected, 1e-10, f"weights {shape}")


@pytest.mark.parametrize(
    "wave, mode, size",
    [
        ("haar", "periodization", (6, 5)),
        ("db2", "symmetric", (5, 6)),
        ("db3", "periodization", (3, 5)),
        ("db2", "reflect", (4, 7)),
        ("db2", "zero", (2, 3)),
        ("sym2", "periodic", (5, 4)),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_double_backward(wave, mode, size, backend):
    """fast_mode (random projections of the Jacobian) keeps this quick; one full check below."""
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    for weights in (torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)):
        weights.requires_grad_(True)

        def f(x, w):
            return wavefuse.wavelet_pool2d(x, wave, mode, w, backend=backend)

        assert gradcheck(f, (x, weights), fast_mode=True)
        assert gradgradcheck(f, (x, weights), fast_mode=True)
    assert gradgradcheck(
        lambda t: wavefuse.wavelet_pool2d(t, wave, mode, backend=backend), (x,), fast_mode=True
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_gradcheck_small(backend):
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        return wavefuse.wavelet_pool2d(x, "db2", "symmetric", w, backend=backend)

    assert gradcheck(f, (x, w))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    kernel = torch.randn(3, 4, 4, dtype=torch.float64)
    cl = torch.channels_last
    cases = [
        (pool_ops.wavelet_pool2d, (x, kernel, "symmetric", backend)),
        (
            pool_ops.wavelet_pool2d,
            (x.to(memory_format=cl), kernel[:1], "periodization", backend),
        ),
        (
            pool_ops.wavelet_pool2d,
            (x.clone().requires_grad_(), kernel[:1].clone().requires_grad_(), "zero", backend),
        ),
        (pool_ops.wavelet_pool2d_adjoint, (g, kernel, "symmetric", [7, 6], backend)),
        (pool_ops.wavelet_pool2d_kernel_grad, (g, x, 4, "symmetric", backend)),
        (pool_ops.wavelet_pool2d_kernel_grad, (g.float(), x.float(), 4, "symmetric", backend)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_half_inputs(backend, dtype):
    """Half data: the output in the data's dtype, the kernel and its gradient in the compute
    dtype (float32), in the fake functions as in the kernels (what torch.compile relies on)."""
    x = torch.randn(2, 3, 7, 6, dtype=dtype)
    g = torch.randn(2, 3, 5, 4, dtype=dtype)
    kernel = torch.randn(3, 4, 4)
    assert pool_ops.wavelet_pool2d_kernel_grad(g, x, 4, "symmetric", backend).dtype == torch.float32
    cases = [
        (pool_ops.wavelet_pool2d, (x, kernel, "symmetric", backend)),
        (pool_ops.wavelet_pool2d_adjoint, (g, kernel, "symmetric", [7, 6], backend)),
        (pool_ops.wavelet_pool2d_kernel_grad, (g, x, 4, "symmetric", backend)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_forward_and_backward(backend):
    x = torch.randn(2, 3, 11, 10, requires_grad=True)
    weights = torch.randn(3, 4, requires_grad=True)

    def f(x, w):
        return (wavefuse.wavelet_pool2d(x, "db2", "symmetric", w, backend=backend) ** 2).sum()

    eager = torch.autograd.grad(f(x, weights), (x, weights))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(x, weights), (x, weights))
    for a, b in zip(got, eager):
        assert_close(a, b, TOL[torch.float32])


def test_backends():
    x = torch.randn(1, 2, 4, 4)
    cpu_live = backends.why_not("cpu", "wavelet_pool2d", "cpu") is None
    expected = "cpu" if cpu_live else "reference"
    assert backends.resolve("auto", x.device, "wavelet_pool2d") == expected
    assert backends.TRITON_MODULES["wavelet_pool2d"] == "pool"
    for b in ("triton", "cuda") if cpu_live else ("cpu", "triton", "cuda"):
        reason = backends.why_not(b, "wavelet_pool2d", "cpu")
        assert reason is not None and len(reason) > 20
        with pytest.raises(BackendUnavailableError, match="cannot run wavelet_pool2d"):
            wavefuse.wavelet_pool2d(x, backend=b)


def test_bad_inputs():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="bands='lh'"):
        wavefuse.wavelet_pool2d(x, bands="lh")
    with pytest.raises(ValueError, match=r"allowed: .*\(3, 4\)"):
        wavefuse.wavelet_pool2d(x, bands=torch.ones(2, 4))
    with pytest.raises(TypeError, match="bands has dtype"):
        wavefuse.wavelet_pool2d(x, bands=torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="reflect"):
        wavefuse.wavelet_pool2d(torch.randn(1, 1, 1, 4), mode="reflect")
    with pytest.raises(ValueError, match="not supported"):
        wavefuse.wavelet_pool2d(x, wave="bior2.2")
    with pytest.raises(ValueError, match="4-D"):
        wavefuse.wavelet_pool2d(torch.randn(3, 4, 4))


# ---- WaveletAvgPool2d ----------------------------------------------------------------------------


def test_module_bands_and_learned_init():
    x = torch.randn(2, 4, 10, 9)
    learned = wavefuse.WaveletAvgPool2d("db2", "symmetric", "learned", channels=4)
    assert learned.weight.shape == (4, 4) and bool((learned.weight == 0.25).all())
    assert_close(learned(x), wavefuse.WaveletAvgPool2d("db2", "symmetric")(x), TOL[torch.float32])
    ll = wavefuse.WaveletAvgPool2d("db2", "symmetric", "ll")(x)
    assert_close(ll, wavefuse.dwt2(x, "db2", "symmetric")[0], TOL[torch.float32])
    assert list(wavefuse.WaveletAvgPool2d().state_dict()) == []
    assert list(learned.state_dict()) == ["weight"]
    assert "bands='learned'" in repr(learned)
    with pytest.raises(ValueError, match="needs channels="):
        wavefuse.WaveletAvgPool2d(bands="learned")
    with pytest.raises(ValueError, match="bands="):
        wavefuse.WaveletAvgPool2d(bands="max")


@pytest.mark.parametrize("wave, mode", [("haar", "periodization"), ("db2", "symmetric")])
def test_module_ceil_mode_sizes(wave, mode):
    """ceil_mode True / False: the sizes of a stride-2 pool, ceil(n/2) / floor(n/2)."""
    for n in (5, 6, 7, 8):
        x = torch.randn(1, 2, n, n + 1)
        for ceil in (True, False):
            y = wavefuse.WaveletAvgPool2d(wave, mode, ceil_mode=ceil)(x)
            assert y.shape == torch.nn.AvgPool2d(2, ceil_mode=ceil)(x).shape


@pytest.mark.parametrize("wave", ["haar", "db2", "db3", "db4", "coif1", "coif2", "sym5", "coif5"])
@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodic"])
@pytest.mark.parametrize("bands", ["all", "ll"])
def test_module_ceil_mode_aligned_as_periodization(wave, mode, bands):
    """ceil_mode=True: output k sits where periodization's output k does, whatever the mode (the
    mode changes only the boundary handling): equal away from the boundaries for L = 2 mod 4; for
    L = 0 mod 4, equal to periodization's of the input moved one sample back (no whole shift of
    half a coefficient exists). Also through WaveletConv2d, which crops the same way."""
    taps = pywt.Wavelet(wave).dec_len
    n = 4 * taps + 8
    x = torch.randn(1, 2, n, n + 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = wavefuse.WaveletAvgPool2d(wave, mode, bands, ceil_mode=True)(x)
    xp = x if taps % 4 == 2 else torch.roll(x, (-1, -1), (-2, -1))
    ref = wavefuse.WaveletAvgPool2d(wave, "periodization", bands)(xp)
    assert y.shape == ref.shape
    m = taps // 2 + 1  # outputs this far from an edge see only samples inside the input
    assert_close(y[..., m:-m, m:-m], ref[..., m:-m, m:-m], 1e-12, "WaveletAvgPool2d")
    conv = wavefuse.WaveletConv2d(2, 2, 1, 2, bias=False, wave=wave, mode=mode, pool=bands)
    ref_conv = wavefuse.WaveletConv2d(
        2, 2, 1, 2, bias=False, wave=wave, mode="periodization", pool=bands
    )
    ref_conv.load_state_dict(conv.state_dict())
    conv, ref_conv = conv.double(), ref_conv.double()
    with torch.no_grad():
        got, want = conv(x), ref_conv(xp)
    assert_close(got[..., m:-m, m:-m], want[..., m:-m, m:-m], 1e-12, "WaveletConv2d")


def test_module_gradcheck_and_autocast():
    m = wavefuse.WaveletAvgPool2d("db2", "periodic", "learned", channels=2).double()
    with torch.no_grad():
        m.weight.copy_(torch.randn(2, 4))
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        return torch.func.functional_call(m, {"weight": w}, (x,))

    assert gradcheck(f, (x, m.weight), fast_mode=True)
    xf = torch.randn(2, 2, 8, 8)
    mf = m.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mf(xf.bfloat16())
    assert y.dtype == torch.bfloat16 and bool(y.isfinite().all())
    assert_close(y, mf(xf.bfloat16().float()), TOL[torch.bfloat16])
