"""The one-pass multilevel Haar kernels (wavefuse.kernels.haar, ops wavefuse::haar_wavedec2 and
wavefuse::haar_wavedec2_adjoint) and the fused Haar wavelet_pgd_step, against independent oracles:
PyWavelets (float64, 1e-10), the reference backend (its per-level adjoint, its wavelet_pgd_step),
the identity <A x, y> = <x, A^T y>, gradcheck and opcheck. Launch counts pin the wiring: wavedec2
(haar, level >= 2, triton), its backward and wavelet_pgd_step must take the one-pass kernels.

Under TRITON_INTERPRET=1 (tests/conftest.py) every Triton operation costs ~0.2 ms whatever the block
size, so planes are small and one test covers a whole grid; the block-size constants are shrunk
(monkeypatch) to force many tiles per plane, the periodic wrap-around tile and reflect's aligned
grid. About a minute on 2 cores.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close, assert_step_close, count_launches

import wavefuse
from wavefuse import backends, ops

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_REASON = backends.why_not("triton", "dwt2d", DEVICE.type) or backends.why_not(
    "triton", "wavelet_pgd_step", DEVICE.type
)
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=f"backend='triton' is not live: {_REASON}"),
    pytest.mark.filterwarnings("ignore:Level value of:UserWarning"),  # levels above pywt's max
]

# (H, W): odd x odd (not divisible by 2^J), divisible by 8, even but not divisible by 8 (odd
# lengths at deeper levels), 1 x 1, smaller than 2^J, a 2-row plane.
SIZES = [(19, 23), (8, 8), (12, 6), (1, 1), (3, 5), (2, 7)]


def _randn(*shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).to(dtype).to(DEVICE)


def _reflect_ok(h: int, w: int, level: int) -> bool:
    """Reflect needs two samples per axis at the input of every level (pywt, wavedec2)."""
    for _ in range(level):
        if min(h, w) < 2:
            return False
        h, w = (h + 1) // 2, (w + 1) // 2
    return True


def _inner(a, b) -> float:
    return sum(float((s * t).sum()) for s, t in zip(a, b))


# ---- analysis and adjoint: every mode, level and size ----------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_level_and_size_matches_pywt_and_the_reference_adjoint(mode):
    """J in {1, 2, 3} x SIZES, two channels, float64: the bands against pywt.wavedec2 (1e-10), the
    adjoint against the reference backend's per-level adjoint and through <A x, y> = <x, A^T y>."""
    for level in (1, 2, 3):
        for h, w in SIZES:
            if mode == "reflect" and not _reflect_ok(h, w, level):
                continue
            what = f"{mode} level {level} {h}x{w}"
            x = _randn(1, 2, h, w)
            out = ops.haar_wavedec2(x, level, mode, "triton")
            theirs = pywt.wavedec2(x.cpu().numpy(), "haar", mode, level=level)
            assert len(out) == level + 1
            assert_close(out[0], theirs[0], 1e-10, f"cA {what}")
            for j, (hi, bands) in enumerate(zip(out[1:], theirs[1:])):
                for b, name in enumerate("HVD"):
                    assert_close(hi[:, :, b], bands[b], 1e-10, f"c{name} level {level - j} {what}")
            grads = [torch.randn_like(t) for t in out]
            adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [h, w], mode, "triton")
            ref = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [h, w], mode, "reference")
            assert_close(adj, ref, 1e-10, f"adjoint {what}")
            lhs, rhs = _inner(out, grads), float((x * adj).sum())
            assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), f"<Ax,y> != <x,A^T y> {what}"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_many_tiles_per_plane(mode, monkeypatch):
    """Tiles shrunk to their minimum (2^J, or 2^(J+1) where reflect/periodic fold across pairs):
    interior and boundary tiles, periodic's wrapped first tile, reflect's grid ending at the
    padded length; both axes odd at some level."""
    from wavefuse.kernels import haar

    monkeypatch.setattr(haar, "_TILE_ELEMENTS", 1)
    monkeypatch.setattr(haar, "_MAX_TILE_W", 1)
    x = _randn(1, 1, 21, 26)
    out = ops.haar_wavedec2(x, 2, mode, "triton")
    theirs = pywt.wavedec2(x.cpu().numpy(), "haar", mode, level=2)
    assert_close(out[0], theirs[0], 1e-10, f"cA {mode}")
    for hi, bands in zip(out[1:], theirs[1:]):
        assert_close(hi, np.stack(bands, 2), 1e-10, mode)
    grads = [torch.randn_like(t) for t in out]
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [21, 26], mode, "triton")
    ref = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [21, 26], mode, "reference")
    assert_close(adj, ref, 1e-10, f"adjoint {mode}")


@pytest.mark.parametrize(
    "dtype, layout, mode",
    [
        (torch.float64, "contiguous", "zero"),
        (torch.float64, "channels_last", "periodization"),
        (torch.float32, "contiguous", "symmetric"),
        (torch.float32, "channels_last", "reflect"),
        (torch.float16, "contiguous", "periodic"),
        (torch.float16, "channels_last", "symmetric"),
        (torch.bfloat16, "contiguous", "reflect"),
        (torch.bfloat16, "channels_last", "periodic"),
    ],
)
def test_dtypes_and_layouts(dtype, layout, mode):
    """Half types accumulate in float32 and round once (compared with float64 on the rounded
    input); outputs in the input's dtype and memory format (bands band-major, as ops._common
    allocates them), read through the input's strides with no copy."""
    x = _randn(2, 3, 13, 10, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = ops.haar_wavedec2(x, 2, mode, "triton")
    expected = ops.haar_wavedec2(x.double(), 2, mode, "reference")
    for got, exp in zip(out, expected):
        assert got.dtype == dtype
        assert_close(got, exp, TOL[dtype], f"{mode} {dtype} {layout}")
    assert out[0].is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert out[-1][:, :, 0].is_contiguous(
        memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format
    )
    grads = [torch.randn_like(t) for t in out]
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [13, 10], mode, "triton")
    ref = ops.haar_wavedec2_adjoint(
        grads[0].double(), [g.double() for g in grads[1:]], [13, 10], mode, "reference"
    )
    assert adj.dtype == dtype and adj.stride() == x.stride()
    assert_close(adj, ref, TOL[dtype], f"adjoint {mode} {dtype} {layout}")


def test_strided_inputs_int64_offsets_and_empty_batches(monkeypatch):
    """A non-contiguous view (every other column) and gradients of arbitrary layout (not the
    band-major one the forward allocates); then the int64 in-plane offset path; empty batches."""
    base = _randn(1, 2, 11, 18)
    x = base[..., ::2]
    out = ops.haar_wavedec2(x, 2, "periodic", "triton")
    expected = ops.haar_wavedec2(x.contiguous(), 2, "periodic", "reference")
    for got, exp in zip(out, expected):
        assert_close(got, exp, 1e-12, "strided view")
    grads = [torch.randn(t.shape, dtype=t.dtype).contiguous() for t in out]  # (N, C, 3, h, w)
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 9], "reflect", "triton")
    ref = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 9], "reflect", "reference")
    assert_close(adj, ref, 1e-12, "gradients of another layout")
    monkeypatch.setattr("wavefuse.kernels.dwt._INT32_LIMIT", 0)
    out = ops.haar_wavedec2(x, 2, "periodic", "triton")
    for got, exp in zip(out, expected):
        assert_close(got, exp, 1e-12, "int64 offsets")
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 9], "reflect", "triton")
    assert_close(adj, ref, 1e-12, "int64 offsets, adjoint")
    empty = _randn(0, 2, 9, 7)
    out = ops.haar_wavedec2(empty, 3, "zero", "triton")
    assert [tuple(t.shape) for t in out] == [(0, 2, 2, 1), (0, 2, 3, 2, 1), (0, 2, 3, 3, 2),
                                             (0, 2, 3, 5, 4)]  # fmt: skip
    adj = ops.haar_wavedec2_adjoint(out[0], out[1:], [9, 7], "zero", "triton")
    assert adj.shape == empty.shape


def test_deep_levels_fall_back_to_the_per_level_kernels(monkeypatch):
    """Above the tile-side limits the launchers run kernels/dwt.py per level (documented): the
    same results, J launches. Limits lowered so that J = 3 (and J = 2 for reflect's folds)
    exceed them."""
    from wavefuse.kernels import dwt, haar

    counts = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    monkeypatch.setattr(haar, "_MAX_SIDE", 4)
    monkeypatch.setattr(haar, "_TILE_ELEMENTS", 1)  # tiles of 2^J: reflect's folds need 2^(J+1)
    monkeypatch.setattr(haar, "_MAX_TILE_W", 1)
    x = _randn(1, 1, 11, 10)
    out = ops.haar_wavedec2(x, 3, "symmetric", "triton")
    theirs = pywt.wavedec2(x.cpu().numpy(), "haar", "symmetric", level=3)
    assert_close(out[0], theirs[0], 1e-10, "fallback cA")
    assert counts["_dwt2d_fwd_kernel"].launches == 3
    grads = [torch.randn_like(t) for t in out]
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 10], "symmetric", "triton")
    ref = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 10], "symmetric", "reference")
    assert_close(adj, ref, 1e-10, "fallback adjoint")
    out = ops.haar_wavedec2(x, 2, "reflect", "triton")  # one pass (2^2 <= 4) ...
    assert counts["_dwt2d_fwd_kernel"].launches == 3
    grads = [torch.randn_like(t) for t in out]
    adj = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 10], "reflect", "triton")
    ref = ops.haar_wavedec2_adjoint(grads[0], grads[1:], [11, 10], "reflect", "reference")
    assert_close(adj, ref, 1e-10, "reflect fallback adjoint")  # ... its folds need 2^3 > 4
    assert counts["_dwt2d_adjoint_kernel"].launches == 3 + 2


# ---- the public API: wiring, autograd, opcheck -------------------------------------------------------


def test_wavedec2_takes_the_one_pass_kernels(monkeypatch):
    """wavedec2(haar or db1, level >= 2, backend="triton"): one analysis launch, its backward one
    adjoint launch, none of the per-level kernels; results equal the reference backend's."""
    from wavefuse.kernels import dwt, haar

    per_level = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    fused = count_launches(monkeypatch, haar, "_haar_fwd_kernel", "_haar_adjoint_kernel")
    for k, wave in enumerate(("haar", "db1")):
        x = _randn(1, 2, 13, 11).requires_grad_()
        coeffs = wavefuse.wavedec2(x, wave, "reflect", 3, backend="triton")
        expected = wavefuse.wavedec2(x, wave, "reflect", 3, backend="reference")
        flat = [coeffs[0]] + [b for d in coeffs[1:] for b in d]
        flat_ref = [expected[0]] + [b for d in expected[1:] for b in d]
        for got, exp in zip(flat, flat_ref):
            assert_close(got, exp, 1e-12, wave)
        cot = [torch.randn_like(t) for t in flat]
        (g,) = torch.autograd.grad(flat, x, cot)
        (g_ref,) = torch.autograd.grad(flat_ref, x, cot)
        assert_close(g, g_ref, 1e-12, f"{wave} gradient")
        assert fused["_haar_fwd_kernel"].launches == 1 + k
        assert fused["_haar_adjoint_kernel"].launches == 1 + k
    assert per_level["_dwt2d_fwd_kernel"].launches == 0
    assert per_level["_dwt2d_adjoint_kernel"].launches == 0
    wavefuse.wavedec2(x.detach(), "haar", "zero", 1, backend="triton")  # level 1: per level
    assert per_level["_dwt2d_fwd_kernel"].launches == 1
    wavefuse.wavedec2(x.detach(), "haar", "zero", 2, backend="triton")  # level 2: one pass
    assert fused["_haar_fwd_kernel"].launches == 3
    assert per_level["_dwt2d_fwd_kernel"].launches == 1


def test_dwt_forward_module_takes_the_one_pass_kernels(monkeypatch):
    """DWTForward(J >= 2, haar/db1, backend="triton") runs the one-pass kernels too, with
    pytorch_wavelets' layout (yh finest first) and the reference backend's values."""
    from wavefuse.kernels import dwt, haar

    per_level = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel")
    fused = count_launches(monkeypatch, haar, "_haar_fwd_kernel")
    x = _randn(2, 1, 9, 12)
    yl, yh = wavefuse.DWTForward(J=3, wave="db1", mode="symmetric", backend="triton")(x)
    yl_ref, yh_ref = wavefuse.DWTForward(J=3, wave="db1", mode="symmetric", backend="reference")(x)
    assert fused["_haar_fwd_kernel"].launches == 1
    assert per_level["_dwt2d_fwd_kernel"].launches == 0
    assert_close(yl, yl_ref, 1e-12, "yl")
    assert [t.shape for t in yh] == [t.shape for t in yh_ref]
    for j, (got, exp) in enumerate(zip(yh, yh_ref)):
        assert_close(got, exp, 1e-12, f"yh[{j}]")


def test_wavedec2_errors_unchanged():
    """Reflect with a level whose input has one sample raises what the per-level loop raises."""
    x = _randn(1, 1, 3, 5)
    messages = []
    for backend in ("triton", "reference"):
        with pytest.raises(ValueError, match="needs at least 2 samples") as info:
            wavefuse.wavedec2(x, "haar", "reflect", 3, backend=backend)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_wavedec2_reflect_on_odd_sizes_goes_as_deep_as_pywt():
    """The size check before the one-pass kernel follows the levels' sizes, ceil(n / 2^j): a
    5 x 7 plane has 5, 3, 2 rows at the inputs of levels 1-3, so reflect takes level 3 there (as
    pywt and the per-level loop do); a floor would see one row and refuse it."""
    x = _randn(1, 2, 5, 7)
    got = wavefuse.wavedec2(x, "haar", "reflect", 3, backend="triton")
    theirs = pywt.wavedec2(x.cpu().numpy(), "haar", "reflect", level=3)
    assert_close(got[0], theirs[0], 1e-10, "cA")
    for j, (ours, bands) in enumerate(zip(got[1:], theirs[1:])):
        for b, name in enumerate("HVD"):
            assert_close(ours[b], bands[b], 1e-10, f"c{name} level {3 - j}")


@pytest.mark.parametrize("mode", ["reflect", "periodic"])
def test_gradcheck_and_gradgradcheck_through_wavedec2(mode):
    """float64; double backward runs the analysis kernel again (the adjoint's backward)."""
    x = _randn(1, 1, 7, 5).requires_grad_()

    def f(t):
        coeffs = wavefuse.wavedec2(t, "haar", mode, 2, backend="triton")
        return (coeffs[0], *(b for d in coeffs[1:] for b in d))

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    x = _randn(1, 2, 5, 7).contiguous(memory_format=torch.channels_last)
    out = ops.haar_wavedec2(x, 2, "symmetric", "reference")
    args = [x.clone().requires_grad_(requires_grad), 2, "symmetric", "triton"]
    torch.library.opcheck(torch.ops.wavefuse.haar_wavedec2.default, args)
    grads = [t.clone().requires_grad_(requires_grad) for t in out]
    args = (grads[0], grads[1:], [5, 7], "periodic", "triton")
    torch.library.opcheck(torch.ops.wavefuse.haar_wavedec2_adjoint.default, args)


def test_compiles_fullgraph():
    x = _randn(1, 1, 9, 6)

    @torch.compile(fullgraph=True, backend="eager")
    def f(t):
        return wavefuse.wavedec2(t, "haar", "zero", 2, backend="triton")

    got, expected = f(x), wavefuse.wavedec2(x, "haar", "zero", 2, backend="reference")
    assert_close(got[0], expected[0], 1e-12, "compiled cA")
    for d, d_ref in zip(got[1:], expected[1:]):
        assert_close(torch.stack(d), torch.stack(d_ref), 1e-12, "compiled details")


# ---- the fused wavelet_pgd_step ---------------------------------------------------------------------


def _step_inputs(shape, dtype=torch.float64, spread=0.1):
    x = torch.rand(*shape, dtype=torch.float64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    return x_adv.to(dtype).to(DEVICE), g.to(dtype).to(DEVICE), x.to(dtype).to(DEVICE)


def _steps(x_adv, g, x, *args, **kwargs):
    """(triton, reference) results of the same wavelet step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            wavefuse.wavelet_pgd_step(x_adv.clone(), g, x, *args, **kwargs, backend=b)
            for b in ("triton", "reference")
        ]


def _assert_step(got, expected, norm, what, alpha):
    """L2: 1e-12 (float64) / 1e-6 (float32) / the half type's tolerance. Linf steps by sign(g'),
    whose tiny entries the two computations' rounding may flip: a handful, by at most 2 alpha."""
    assert got.dtype == expected.dtype
    if norm == "L2":
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, TOL[got.dtype])
        assert_step_close(got, expected, tol, what)
    else:
        diff = (got.double() - expected.double()).abs()
        assert (diff > 1e-12).sum() <= 2 and diff.max() <= 2 * alpha + 1e-6, what


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wavelet_pgd_step_matches_the_reference(mode):
    """Linf and L2, levels 1-3, per-level hf_scale (0, 0.5, -0.25) and a float hf_scale, odd and
    divisible sizes, float64."""
    for level, size, norm, scale in [
        (1, (7, 6), "Linf", [0.0]),
        (2, (9, 13), "L2", [0.5, -0.25]),
        (3, (19, 23), "Linf", [0.0, 0.5, -0.25]),
        (3, (8, 8), "L2", 0.3),
        (2, (3, 5), "L2", 0.0),
    ]:
        if mode == "reflect" and not _reflect_ok(*size, level):
            continue
        x_adv, g, x = _step_inputs((2, 2, *size))
        eps = 0.05 if norm == "Linf" else 0.5
        got, expected = _steps(x_adv, g, x, eps, 0.03, "haar", level, mode, scale, norm)
        _assert_step(got, expected, norm, f"{mode} level {level} {size} {norm}", 0.03)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_tensor_bounds_dtypes_layouts(norm):
    """Per-sample eps, per-channel alpha and lo, (N, C) hi; float32 channels_last and bfloat16
    (compute in float32, round x_adv once); grad and x_nat in other layouts than x_adv."""
    for dtype, layout in ((torch.float64, "contiguous"), (torch.float32, "channels_last"),
                          (torch.bfloat16, "channels_last")):  # fmt: skip
        x_adv, g, x = _step_inputs((3, 3, 11, 9), dtype, spread=0.2)
        if layout == "channels_last":
            x_adv = x_adv.contiguous(memory_format=torch.channels_last)
        n, c = x.shape[:2]
        eps = (0.05 + 0.1 * torch.rand(n, 1, 1, 1)) * (4 if norm == "L2" else 1)
        alpha = torch.tensor([0.02, 0.03, 0.05]).view(1, c, 1, 1)
        lo = torch.tensor([0.1, -0.2, 0.0]).view(1, c, 1, 1)
        hi = 0.8 + 0.2 * torch.rand(n, c, 1, 1)
        args = (eps, alpha, "haar", 2, "symmetric", [0.0, 0.4], norm, lo, hi)
        got, expected = _steps(x_adv, g, x, *args)
        assert got.stride() == x_adv.stride()
        _assert_step(got, expected, norm, f"{norm} {dtype} {layout}", 0.05)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # the interpreter's 1 / 0
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_wavelet_pgd_step_nan_and_determinism():
    """A NaN gradient entry spreads over its 2^J x 2^J block in both (Linf: those elements; L2:
    the sample), the other sample stays finite; L2 repeated calls agree bit for bit."""
    x_adv, g, x = _step_inputs((2, 2, 6, 5))
    g[0, 1, 3, 2] = math.nan
    for norm in ("Linf", "L2"):
        got, expected = _steps(x_adv, g, x, 0.3, 0.05, "haar", 2, "periodic", [0.0, 0.5], norm)
        assert torch.equal(got.isnan(), expected.isnan()), norm
        assert torch.isfinite(got[1]).all() and got.isnan().any()
        _assert_step(got.nan_to_num(), expected.nan_to_num(), norm, f"NaN {norm}", 0.05)
    x_adv, g, x = _step_inputs((2, 3, 9, 14))
    first, _ = _steps(x_adv, g, x, 0.5, 0.3, "haar", 3, "reflect", 0.0, "L2")
    again, _ = _steps(x_adv, g, x, 0.5, 0.3, "haar", 3, "reflect", 0.0, "L2")
    assert torch.equal(first, again)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's inf - inf
def test_wavelet_pgd_step_inf_gradient_with_one_scale():
    """An infinite gradient entry and one hf_scale for every level (zero coefficients between
    levels): the skipped terms never make 0 * inf = NaN, so no NaN where the reference has none
    and the same steps elsewhere (Linf; docs/edge_policies.md)."""
    for mode, pos in (("zero", (3, 2)), ("periodization", (1, 2)), ("symmetric", (0, 0))):
        x_adv, g, x = _step_inputs((2, 2, 8, 7))
        g[0, 1][pos] = math.inf
        got, expected = _steps(x_adv, g, x, 0.05, 0.01, "haar", 2, mode, 0.5, "Linf")
        assert not (got.isnan() & ~expected.isnan()).any(), mode
        fin = ~expected.isnan()
        assert torch.equal(got[fin], expected[fin]), mode


@pytest.mark.parametrize("float64_dot", ["as_installed", "off"])
def test_wavelet_pgd_step_takes_the_fused_kernel(monkeypatch, float64_dot):
    """Haar: Linf is one launch and L2 three, of the fused kernel only, in many tiles (a plane
    split 2 x 2, slots looping over several tiles when the partials are capped); the per-level
    path is taken beyond its limit (documented fallback): the separable one-plane kernel on small
    planes; on larger ones the approximation chain, in one cascade launch (4 planes fill the one
    "SM" of CPU tensors), in pairs of stages or level by level (both forced). The separable kernel needs float64 tl.dot for
    these float64 planes (Triton 3.5): "off" is Triton before 3.5, which takes the chain."""
    from wavefuse.kernels import dwt, haar, pgd_step

    if float64_dot == "off":
        monkeypatch.setattr(dwt, "_DOT_FLOAT64", False)
    sep = int(dwt._DOT_FLOAT64)  # launches of the separable kernel per fallback step

    fused = count_launches(monkeypatch, haar, "_haar_pgd_kernel")["_haar_pgd_kernel"]
    others = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    others.update(
        count_launches(
            monkeypatch,
            pgd_step,
            *("_linf_kernel", "_l2_update_kernel", "_separable_kernel", "_cascade_kernel"),
            "_pair_kernel",
        )
    )
    monkeypatch.setattr(haar, "_PGD_TILE_ELEMENTS", 16)
    monkeypatch.setattr(haar, "_MAX_TILE_W", 4)
    monkeypatch.setattr(haar, "_MAX_PARTIALS", 2)
    x_adv, g, x = _step_inputs((2, 2, 7, 6))
    for norm, launches in (("Linf", 1), ("L2", 4)):
        got, expected = _steps(x_adv, g, x, 0.5, 0.05, "haar", 2, "reflect", [0.25, 0.5], norm)
        _assert_step(got, expected, norm, f"small tiles {norm}", 0.05)
        assert fused.launches == launches
    assert all(c.launches == 0 for c in others.values())
    monkeypatch.setattr(haar, "_MAX_PGD_SIDE", 2)
    got, expected = _steps(x_adv, g, x, 0.5, 0.05, "haar", 2, "zero", [0.25, 0.5], "L2")
    _assert_step(got, expected, "L2", "fallback, one plane per program", 0.05)
    assert fused.launches == 4 and others["_separable_kernel"].launches == sep
    assert others["_cascade_kernel"].launches == 1 - sep
    monkeypatch.setattr(pgd_step, "_SEPARABLE_MAX_SIDE", 6)
    got, expected = _steps(x_adv, g, x, 0.5, 0.05, "haar", 2, "zero", [0.25, 0.5], "L2")
    _assert_step(got, expected, "L2", "fallback, the cascade", 0.05)
    assert others["_separable_kernel"].launches == sep
    assert others["_cascade_kernel"].launches == 2 - sep
    assert others["_dwt2d_fwd_kernel"].launches == 0
    monkeypatch.setattr(pgd_step, "_CASCADE_MAX_DEPTH", 0)
    got, expected = _steps(x_adv, g, x, 0.5, 0.05, "haar", 2, "zero", [0.25, 0.5], "L2")
    _assert_step(got, expected, "L2", "fallback, in pairs", 0.05)
    assert others["_cascade_kernel"].launches == 2 - sep
    assert others["_pair_kernel"].launches == 2 and others["_dwt2d_fwd_kernel"].launches == 0
    monkeypatch.setattr(pgd_step, "_PAIR_ROUTE", False)
    got, expected = _steps(x_adv, g, x, 0.5, 0.05, "haar", 2, "zero", [0.25, 0.5], "L2")
    _assert_step(got, expected, "L2", "fallback, per level", 0.05)
    assert others["_pair_kernel"].launches == 2
    assert others["_dwt2d_fwd_kernel"].launches == 2
