"""Transforms against PyWavelets (the independent oracle): reconstruction, dtypes, layouts, autograd."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, ALL_WAVELETS, CPU_BACKENDS, GRID_WAVELETS, SIZES, TOL, assert_close

import wavefuse
from wavefuse import backends


def _pywt_or_error(fn):
    """Run a pywt call; return (result, None) or (None, the ValueError it raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(), None
        except ValueError as e:
            return None, e


def _compare_coeffs(ours, theirs, tol, what):
    assert len(ours) == len(theirs), f"{what}: {len(ours)} levels, pywt has {len(theirs)}"
    assert_close(ours[0], theirs[0], tol, f"{what} cA")
    for j, (d_ours, d_theirs) in enumerate(zip(ours[1:], theirs[1:])):
        for name, a, b in zip("HVD", d_ours, d_theirs):
            assert_close(a, b, tol, f"{what} level[{j + 1}] c{name}")


def _levels(h, w, wave):
    max_level = pywt.dwt_max_level(min(h, w), pywt.Wavelet(wave).dec_len)
    return range(1, max(max_level, 1) + 1)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", GRID_WAVELETS)
def test_wavedec2_waverec2_match_pywt_grid(wave, mode, backend):
    """float64 agreement to 1e-10 over sizes x levels 1..max, forward and inverse."""
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        for level in _levels(h, w, wave):
            what = f"{wave} {mode} {h}x{w} J={level}"
            expected, err = _pywt_or_error(
                lambda x=x, level=level: pywt.wavedec2(x.numpy(), wave, mode, level)
            )
            if err is not None:  # pywt refuses (reflect on a length-1 axis): so must we
                with pytest.raises(ValueError), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wavefuse.wavedec2(x, wave, mode, level, backend=backend)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = wavefuse.wavedec2(x, wave, mode, level, backend=backend)
            _compare_coeffs(ours, expected, TOL[torch.float64], what)
            rec = wavefuse.waverec2(ours, wave, mode, backend=backend)
            assert_close(
                rec, pywt.waverec2(expected, wave, mode), TOL[torch.float64], what + " rec"
            )


@pytest.mark.parametrize("wave", ALL_WAVELETS)
def test_every_wavelet_every_mode_max_level(wave):
    """Every supported wavelet in every mode, default level (pywt's dwt_max_level)."""
    x = torch.randn(1, 2, 79, 80, dtype=torch.float64)  # max level >= 1 even for 40 taps
    for mode in ALL_MODES:
        expected = pywt.wavedec2(x.numpy(), wave, mode)
        ours = wavefuse.wavedec2(x, wave, mode)
        assert len(ours) >= 2
        _compare_coeffs(ours, expected, TOL[torch.float64], f"{wave} {mode}")
        assert_close(
            wavefuse.waverec2(ours, wave, mode),
            pywt.waverec2(expected, wave, mode),
            TOL[torch.float64],
            f"{wave} {mode} waverec2",
        )


@pytest.mark.parametrize("mode", ALL_MODES)
def test_dwt2_idwt2_match_pywt(mode):
    x = torch.randn(2, 2, 11, 6, dtype=torch.float64)
    for wave in ["haar", "db3", "sym4", "coif2"]:
        ca, (ch, cv, cd) = wavefuse.dwt2(x, wave, mode)
        pa, (ph, pv, pd) = pywt.dwt2(x.numpy(), wave, mode)
        for a, b, n in [(ca, pa, "cA"), (ch, ph, "cH"), (cv, pv, "cV"), (cd, pd, "cD")]:
            assert_close(a, b, 1e-10, f"{wave} {mode} {n}")
        # None bands are zeros, as in pywt; any single band reconstructs alone too.
        for keep in range(4):
            bands = [ca, ch, cv, cd]
            ours = [b if i == keep else None for i, b in enumerate(bands)]
            theirs = [b.numpy() if i == keep else None for i, b in enumerate(bands)]
            got = wavefuse.idwt2((ours[0], tuple(ours[1:])), wave, mode)
            want = pywt.idwt2((theirs[0], tuple(theirs[1:])), wave, mode)
            assert_close(got, want, 1e-10, f"{wave} {mode} idwt2 band {keep} alone")


def test_pywt_default_mode_and_level():
    x = torch.randn(1, 1, 32, 24, dtype=torch.float64)
    _compare_coeffs(wavefuse.wavedec2(x, "db2"), pywt.wavedec2(x.numpy(), "db2"), 1e-10, "defaults")
    assert_close(wavefuse.dwt2(x, "db2")[0], pywt.dwt2(x.numpy(), "db2")[0], 1e-10, "dwt2 default")


def test_pywt_wavelet_object_accepted():
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64)
    ours = wavefuse.wavedec2(x, pywt.Wavelet("sym3"), "periodic", 1)
    _compare_coeffs(ours, pywt.wavedec2(x.numpy(), "sym3", "periodic", 1), 1e-10, "pywt.Wavelet")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db4", "sym5", "coif3"])
def test_perfect_reconstruction(wave, mode):
    for h, w in [(32, 32), (29, 18)]:
        x = torch.randn(2, 3, h, w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rec = wavefuse.waverec2(wavefuse.wavedec2(x, wave, mode, 2), wave, mode)
        assert_close(rec[..., :h, :w], x, 1e-6, f"{wave} {mode} {h}x{w}")


def test_numpy_integer_level_and_none_approximation_as_pywt():
    x = torch.randn(1, 1, 16, 12, dtype=torch.float64)
    ours = wavefuse.wavedec2(x, "db2", "periodic", np.int64(2))
    theirs = pywt.wavedec2(x.numpy(), "db2", "periodic", np.int64(2))
    _compare_coeffs(ours, theirs, 1e-10, "numpy level")
    got = wavefuse.waverec2([None] + ours[1:], "db2", "periodic")
    want = pywt.waverec2([np.zeros_like(theirs[0])] + theirs[1:], "db2", "periodic")
    assert_close(got, want, 1e-10, "None approximation")


def test_empty_batch_and_channels():
    for shape in [(0, 3, 8, 8), (2, 0, 9, 8)]:
        x = torch.randn(*shape)
        coeffs = wavefuse.wavedec2(x, "db2", "symmetric", 1)
        expected = pywt.wavedec2(x.numpy(), "db2", "symmetric", 1)
        assert coeffs[0].shape == expected[0].shape
        rec = wavefuse.waverec2(coeffs, "db2", "symmetric")
        assert rec.shape == pywt.waverec2(expected, "db2", "symmetric").shape


def test_level_zero_returns_input_and_waverec2_of_one_array():
    x = torch.randn(1, 1, 8, 8)
    coeffs = wavefuse.wavedec2(x, "haar", level=0)
    assert len(coeffs) == 1 and torch.equal(coeffs[0], x)
    assert torch.equal(wavefuse.waverec2(coeffs, "haar"), x)


# ----- dtypes and memory formats -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_half_and_single_precision(dtype, mode):
    x = torch.randn(2, 3, 19, 16).to(dtype)
    x64 = x.double().numpy()  # the rounded input, exactly
    ours = wavefuse.wavedec2(x, "db3", mode, 2)
    expected = pywt.wavedec2(x64, "db3", mode=mode, level=2, axes=(-2, -1))
    assert ours[0].dtype == dtype and ours[1][0].dtype == dtype
    _compare_coeffs(ours, [expected[0]] + [tuple(d) for d in expected[1:]], TOL[dtype], str(dtype))
    rec = wavefuse.waverec2(ours, "db3", mode)
    assert rec.dtype == dtype
    ours64 = [ours[0].double().numpy()] + [tuple(b.double().numpy() for b in d) for d in ours[1:]]
    want = pywt.waverec2(ours64, "db3", mode=mode, axes=(-2, -1))
    assert_close(rec, want, TOL[dtype], f"{dtype} waverec2")


def test_channels_last_in_channels_last_out():
    x = torch.randn(2, 5, 12, 10, dtype=torch.float64)
    xc = x.contiguous(memory_format=torch.channels_last)
    coeffs = wavefuse.wavedec2(xc, "db2", "symmetric", 2)
    for t in [coeffs[0], *coeffs[1], *coeffs[2]]:
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    _compare_coeffs(coeffs, pywt.wavedec2(x.numpy(), "db2", "symmetric", 2), 1e-10, "channels_last")
    rec = wavefuse.waverec2(coeffs, "db2", "symmetric")
    assert rec.is_contiguous(memory_format=torch.channels_last)
    assert_close(rec, x, 1e-10, "channels_last reconstruction")


def test_contiguous_bands_are_contiguous_views_of_one_tensor():
    ca, (ch, cv, cd) = wavefuse.dwt2(torch.randn(2, 3, 8, 8), "haar")
    assert ca.is_contiguous() and all(b.is_contiguous() for b in (ch, cv, cd))
    assert ch.untyped_storage().data_ptr() == cd.untyped_storage().data_ptr()


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t[:, :, 1::2, ::3],
        lambda t: t.transpose(-1, -2),
        lambda t: t.permute(1, 0, 2, 3),
        lambda t: t.expand(3, -1, -1, -1),
    ],
    ids=["sliced", "transposed", "batch-permuted", "expanded"],
)
def test_strided_views(view):
    base = torch.randn(1, 4, 22, 21, dtype=torch.float64)
    x = view(base)
    expected = pywt.wavedec2(x.contiguous().numpy(), "db2", "reflect", 2)
    _compare_coeffs(wavefuse.wavedec2(x, "db2", "reflect", 2), expected, 1e-10, "view")


# ----- autograd ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "sym3"])
def test_gradcheck_and_gradgradcheck(wave, mode, backend):
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)

    def analysis(t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c = wavefuse.wavedec2(t, wave, mode, 2, backend=backend)
        return (c[0], *c[1], *c[2])

    assert torch.autograd.gradcheck(analysis, (x,))
    # Second order in fast mode (random projections of the Jacobian): the full numerical
    # Hessian-vector check costs minutes per case on 2 cores and checks the same identity.
    assert torch.autograd.gradgradcheck(analysis, (x,), fast_mode=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coeffs = [t.detach().requires_grad_() for t in analysis(x.detach())]

    def synthesis(a, h2, v2, d2, h1, v1, d1):
        return wavefuse.waverec2([a, (h2, v2, d2), (h1, v1, d1)], wave, mode, backend=backend)

    assert torch.autograd.gradcheck(synthesis, coeffs)
    assert torch.autograd.gradgradcheck(synthesis, coeffs, fast_mode=True)


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "periodic"])
def test_backward_is_the_adjoint_not_the_inverse(mode):
    """Where the extension repeats samples, the adjoint folds it back: the gradient differs from
    idwt2. (With zero padding nothing folds back, and the adjoint is idwt2 on the kept samples.)"""
    x = torch.randn(1, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    ca, bands = wavefuse.dwt2(x, "db3", mode)
    gs = [torch.randn_like(ca)] + [torch.randn_like(b) for b in bands]
    (grad,) = torch.autograd.grad([ca, *bands], x, gs)
    # Dot-product test: <A x, g> == <x, A^T g>, with A^T g the gradient.
    lhs = sum((o * g).sum() for o, g in zip([ca, *bands], gs))
    torch.testing.assert_close(lhs, (x * grad).sum(), rtol=1e-12, atol=1e-12)
    inverse = wavefuse.idwt2((gs[0], tuple(gs[1:])), "db3", mode)
    assert inverse.shape != grad.shape or not torch.allclose(inverse, grad)


def test_partial_use_of_outputs_backpropagates():
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    _, (ch, _, _) = wavefuse.dwt2(x, "db2", "zero")
    (g,) = torch.autograd.grad(ch.sum(), x)
    xs = x.detach().requires_grad_()
    _, (ch_ref, _, _) = wavefuse.dwt2(xs, "db2", "zero", backend="reference")
    (g_ref,) = torch.autograd.grad(ch_ref.sum(), xs)
    torch.testing.assert_close(g, g_ref)
    assert g.abs().sum() > 0


# ----- compile -----------------------------------------------------------------------------------


def test_torch_compile_fullgraph_level_above_max():
    """The too-high-level warning is an eager-only side effect: tracing must not break on it."""

    def f(t):
        return wavefuse.wavedec2(t, "db2", "zero", level=3)[0].sum()

    x = torch.randn(1, 1, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(x), f(x))


def test_torch_compile_fullgraph_wavedec2_loss_backward():
    def loss(t):
        coeffs = wavefuse.wavedec2(t, "db2", "symmetric", level=2)
        hf = sum((b**2).sum() for level in coeffs[1:] for b in level)
        rec = wavefuse.waverec2(coeffs, "db2", "symmetric")[..., :15, :16]
        return hf + ((rec - t) ** 2).sum() + coeffs[0].abs().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="inductor")
    x = torch.randn(2, 3, 15, 16, requires_grad=True)
    (g_compiled,) = torch.autograd.grad(compiled(x), x)
    xe = x.detach().requires_grad_()
    (g_eager,) = torch.autograd.grad(loss(xe), xe)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-5, atol=1e-5)
    assert g_eager.abs().sum() > 0


# The CPU kernels take one of two paths per level by plane size (csrc/cpu/planes.h): planes of at
# most 128 x 128 = 16384 samples go V at a time, one plane per vector lane; larger ones are
# filtered row by row. These sizes sit on both sides of the switch (16384 and 16383 samples on the
# plane-vector path, 16512 on the row path; db1 on an even side takes the Haar kernels instead,
# csrc/cpu/dwt.cpp's haar_split/haar_merge), so each path is
# checked on its own, in every mode, against PyWavelets and the exact adjoints against the
# reference -- over plane counts that fill no whole group of lanes (7) and a layout the lanes
# gather with strides (channels_last, a transposed view).
PATH_SIZES = [(128, 128), (129, 128), (127, 129), (128, 129)]


@pytest.mark.parametrize("wave", ["db1", "db3", "sym5"])
@pytest.mark.parametrize("size", PATH_SIZES)
def test_cpu_paths_either_side_of_the_plane_switch(size, wave):
    if backends.why_not("cpu", "dwt2d", "cpu") is not None:
        pytest.skip(str(backends.why_not("cpu", "dwt2d", "cpu")))
    from wavefuse import reference
    from wavefuse.filters import filter_bank

    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    base = torch.randn(1, 7, h, w, dtype=torch.float64, generator=gen)
    layouts = {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
    }
    dec, rec = (filter_bank(wave, kind, torch.float64, base.device) for kind in ("dec", "rec"))
    ops = torch.ops.wavefuse
    for mode in ALL_MODES:
        expected = pywt.wavedec2(base.numpy(), wave, mode, level=1)
        for name, x in layouts.items():
            what = f"{wave} {mode} {h}x{w} {name}"
            ll, hi = ops._dwt2d_kernel(x, dec, mode)
            _compare_coeffs([ll, tuple(hi.unbind(2))], expected, TOL[torch.float64], what)
            y = ops._idwt2d_kernel(ll, hi, rec, mode)
            assert_close(y[..., :h, :w], base, TOL[torch.float64], what + " reconstruction")
            g_ll = torch.randn(ll.shape, dtype=torch.float64, generator=gen)
            g_hi = torch.randn(hi.shape, dtype=torch.float64, generator=gen)
            assert_close(
                ops._dwt2d_adjoint_kernel(g_ll, g_hi, dec, mode, [h, w]),
                reference.dwt2d_adjoint_ref(g_ll, g_hi, dec, mode, [h, w]),
                TOL[torch.float64],
                what + " dwt2d adjoint",
            )
            g_y = torch.randn(y.shape, dtype=torch.float64, generator=gen)
            for a, b in zip(
                ops._idwt2d_adjoint_kernel(g_y, rec, mode),
                reference.idwt2d_adjoint_ref(g_y, rec, mode),
            ):
                assert_close(a, b, TOL[torch.float64], what + " idwt2d adjoint")


# The plane-vector path moves planes into and out of its lane-interleaved buffer in one of four
# ways, chosen per group of V planes (V = 8 float32, 4 float64) by dtype and strides
# (csrc/cpu/planes.h, planes_layout): whole contiguous planes transposed in registers as one line,
# unit-stride rows transposed row by row, channels-last groups of V channels of one sample copied a
# vector at a time, and anything else (float16 / bfloat16, other strides, rows shorter than V) one
# scalar at a time. The moves are exact and the arithmetic per lane is the same, so every layout
# must give bitwise the same result as the contiguous input; each is also checked against the
# reference. 2 x 12 planes: with V = 8 the second group straddles the two samples, so channels-last
# takes the vector copy for groups 1 and 3 and the scalar moves for group 2.
def _layouts_of(t):
    """The same values in other strides; the last two dims are the plane, dim 1 the channels."""
    w = t.shape[-1]
    wide = torch.zeros(*t.shape[:-1], w + 3, dtype=t.dtype)
    wide[..., 2 : 2 + w] = t
    return {
        "channels last": t.movedim(1, -1).contiguous().movedim(-1, 1),
        "row slice": wide[..., 2 : 2 + w],
        "transposed": t.transpose(-1, -2).contiguous().transpose(-1, -2),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(32, 32), (19, 13), (5, 5), (3, 7)])
@pytest.mark.parametrize(
    "wave,mode", [("db4", "zero"), ("db2", "symmetric"), ("db3", "periodization")]
)
def test_cpu_plane_moves_every_layout_bitwise(size, dtype, wave, mode):
    if backends.why_not("cpu", "dwt2d", "cpu") is not None:
        pytest.skip(str(backends.why_not("cpu", "dwt2d", "cpu")))
    from wavefuse import reference
    from wavefuse.filters import filter_bank

    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    base = torch.randn(2, 12, h, w, dtype=dtype, generator=gen)
    dec, rec = (filter_bank(wave, kind, dtype, base.device) for kind in ("dec", "rec"))
    dec64, rec64 = dec.double(), rec.double()
    ops = torch.ops.wavefuse
    tol = TOL[dtype]

    ll, hi = ops._dwt2d_kernel(base, dec, mode)
    ll_ref, hi_ref = reference.dwt2d_ref(base.double(), dec64, mode)
    assert_close(ll, ll_ref, tol, "ll")
    assert_close(hi, hi_ref, tol, "hi")
    g_ll = torch.randn(ll.shape, dtype=dtype, generator=gen)
    g_hi = torch.randn(hi.shape, dtype=dtype, generator=gen)
    adj = ops._dwt2d_adjoint_kernel(g_ll, g_hi, dec, mode, [h, w])
    want = reference.dwt2d_adjoint_ref(g_ll.double(), g_hi.double(), dec64, mode, [h, w])
    assert_close(adj, want, tol, "dwt2d adjoint")
    y = ops._idwt2d_kernel(ll, hi, rec, mode)
    assert_close(y, reference.idwt2d_ref(ll.double(), hi.double(), rec64, mode), tol, "idwt2d")
    g_y = torch.randn(y.shape, dtype=dtype, generator=gen)
    iadj = ops._idwt2d_adjoint_kernel(g_y, rec, mode)
    for a, b in zip(iadj, reference.idwt2d_adjoint_ref(g_y.double(), rec64, mode)):
        assert_close(a, b, tol, "idwt2d adjoint")

    def same(got, want, what):
        assert torch.equal(got, want), f"{what}: max diff {(got - want).abs().max().item():.3e}"

    views = {
        name: _layouts_of(t)
        for name, t in {
            "x": base,
            "ll": ll,
            "hi": hi,
            "g_ll": g_ll,
            "g_hi": g_hi,
            "g_y": g_y,
        }.items()
    }
    for layout in views["x"]:
        v = {name: views[name][layout] for name in views}
        what = f"{wave} {mode} {h}x{w} {dtype} {layout}"
        ll_x, hi_x = ops._dwt2d_kernel(v["x"], dec, mode)
        same(ll_x, ll, what + " ll")
        same(hi_x, hi, what + " hi")
        same(
            ops._dwt2d_adjoint_kernel(v["g_ll"], v["g_hi"], dec, mode, [h, w]),
            adj,
            what + " dwt2d adjoint",
        )
        same(ops._idwt2d_kernel(v["ll"], v["hi"], rec, mode), y, what + " idwt2d")
        for a, b in zip(ops._idwt2d_adjoint_kernel(v["g_y"], rec, mode), iadj):
            same(a, b, what + " idwt2d adjoint")
