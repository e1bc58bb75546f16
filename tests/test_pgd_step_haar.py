"""wavelet_pgd_step's fused Haar kernel on CPU (csrc/cpu/pgd_step.cpp): one pass per block row that
filters the gradient and steps, for every mode and size, against backend="reference"."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import ALL_MODES, TOL, assert_close, assert_step_close, cpu_backends
from torch import Tensor

import wavefuse
from wavefuse import backends, reference
from wavefuse.filters import filter_bank
from wavefuse.ops.pgd_step import prepare_bounds

# Levels above dwt_max_level are part of the grids on purpose; they warn as PyWavelets does.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Level value of:UserWarning"),
    pytest.mark.skipif(
        backends.why_not("cpu", "wavelet_pgd_step", "cpu") is not None,
        reason=str(backends.why_not("cpu", "wavelet_pgd_step", "cpu")),
    ),
]

F64 = torch.float64
# (H, W): divisible by 8, by 4 only, odd x even, odd, 1 x 1, smaller than 2^J, thin, larger odd.
SIZES = [(8, 16), (12, 20), (13, 10), (7, 7), (1, 1), (3, 5), (2, 6), (1, 9), (33, 31)]
SCALES = [0.0, 0.5, -0.25]  # per level, finest first: band-limited, damped, sign-flipped


def _inputs(shape, dtype=F64, spread=0.1):
    """x in [0, 1], x_adv near it (some clamps act), a gradient; each in ``dtype``."""
    x = torch.rand(*shape, dtype=F64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    return x_adv.to(dtype), g.to(dtype), x.to(dtype)


def _reflect_ok(h: int, w: int, level: int) -> bool:
    """mode='reflect' needs 2 samples per axis at every level (as PyWavelets)."""
    for _ in range(level):
        if min(h, w) < 2:
            return False
        h, w = (h + 1) // 2, (w + 1) // 2
    return True


def _both(x_adv, g, x, eps, alpha, level, mode, scales, norm, lo=0.0, hi=1.0, wave="haar"):
    """(cpu, reference) results of the same step, x_adv untouched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            wavefuse.wavelet_pgd_step(
                x_adv.clone(), g, x, eps, alpha, wave, level, mode, scales, norm, lo, hi,
                backend=backend,
            )
            for backend in ("cpu", "reference")
        ]  # fmt: skip


def _dwt_calls(fn) -> int:
    """How many transform kernels ``fn`` runs through the dispatcher (torch.profiler sees every
    dispatcher call of a registered op)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = ("wavefuse::_dwt2d_kernel", "wavefuse::_idwt2d_kernel")
    return sum(1 for e in prof.events() if e.name in names)


# ----- float64 against the reference: every mode, level and size ---------------------------------


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_matches_the_reference_every_mode_and_size(mode, level):
    """Both norms, sizes divisible by 2^J and not, odd, 1 x 1, smaller than 2^J: float64 within
    1e-12 (the carried form of the transform differs from the reference only in rounding)."""
    for h, w in SIZES:
        if mode == "reflect" and not _reflect_ok(h, w, level):
            continue
        x_adv, g, x = _inputs((2, 3, h, w))
        for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
            got, expected = _both(x_adv, g, x, eps, 0.03, level, mode, SCALES[:level], norm)
            assert_close(got, expected, 1e-12, f"{mode} J={level} {h}x{w} {norm}")
            assert not torch.equal(got, x_adv)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_levels_beyond_the_size(mode):
    """J = 6 on planes of at most 9 samples: one block row holds the plane, the coarse levels are
    1 x 1 and repeat their sample (or pad a zero)."""
    for h, w in ((5, 7), (9, 2), (1, 1), (4, 4)):
        if mode == "reflect" and not _reflect_ok(h, w, 6):
            continue
        x_adv, g, x = _inputs((2, 2, h, w))
        scales = [0.5, 0.0, 2.0, -1.0, 0.25, 0.0]
        for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
            got, expected = _both(x_adv, g, x, eps, 0.03, 6, mode, scales, norm)
            assert_close(got, expected, 1e-12, f"{mode} {h}x{w} {norm}")


def test_hf_scale_float_and_per_level_list():
    x_adv, g, x = _inputs((2, 3, 17, 12))
    for norm in ("Linf", "L2"):
        a, _ = _both(x_adv, g, x, 0.1, 0.03, 3, "symmetric", 0.3, norm)
        b, expected = _both(x_adv, g, x, 0.1, 0.03, 3, "symmetric", [0.3, 0.3, 0.3], norm)
        assert torch.equal(a, b)
        assert_close(b, expected, 1e-12, norm)
        # some levels 1, one not: the transform runs (only all-ones is the identity)
        c, expected = _both(x_adv, g, x, 0.1, 0.03, 2, "periodic", [1.0, 0.0], norm)
        assert_close(c, expected, 1e-12, f"[1, 0] {norm}")


def test_db1_is_haar():
    x_adv, g, x = _inputs((2, 2, 9, 11))
    for norm in ("Linf", "L2"):
        haar, _ = _both(x_adv, g, x, 0.1, 0.03, 2, "zero", [0.0, 0.5], norm)
        db1, _ = _both(x_adv, g, x, 0.1, 0.03, 2, "zero", [0.0, 0.5], norm, wave="db1")
        assert torch.equal(haar, db1)


# ----- layouts ------------------------------------------------------------------------------------


def _strided(t: Tensor) -> Tensor:
    """t as a non-contiguous view: every other row and column of a larger buffer (filled with a
    marker, so a write outside the view shows)."""
    n, c, h, w = t.shape
    big = torch.full((n, c + 1, 2 * h + 1, 3 * w), 7.0, dtype=t.dtype)
    view = big[:, 1:, 1::2, ::3]
    view.copy_(t)
    return view


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("layout", ["channels_last", "strided", "mixed"])
def test_layouts(layout, norm):
    """channels_last, a strided slice of a larger tensor (x_adv updated in place there, nothing
    around it touched), and each tensor in its own layout."""
    x_adv, g, x = _inputs((2, 3, 13, 10))
    _, expected = _both(x_adv, g, x, 0.1, 0.03, 2, "reflect", [0.0, 0.5], norm)
    if layout == "channels_last":
        x_adv, g, x = (t.contiguous(memory_format=torch.channels_last) for t in (x_adv, g, x))
    elif layout == "strided":
        x_adv, g, x = _strided(x_adv), _strided(g), _strided(x)
    else:
        x_adv = x_adv.contiguous(memory_format=torch.channels_last)
        g = _strided(g)
    strides = x_adv.stride()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = wavefuse.wavelet_pgd_step(
            x_adv, g, x, 0.1, 0.03, "haar", 2, "reflect", [0.0, 0.5], norm, backend="cpu"
        )
    assert out is x_adv and out.stride() == strides
    assert_close(out, expected, 1e-12, layout)
    if layout == "strided":
        outside = torch.ones_like(x_adv._base, dtype=torch.bool)
        outside[:, 1:, 1::2, ::3] = False
        assert (x_adv._base[outside] == 7.0).all(), "a write outside the view"


# ----- dtypes -------------------------------------------------------------------------------------


def _filtered(g, level, mode, scales):
    """The reference's g' (compute dtype)."""
    cdtype = F64 if g.dtype == F64 else torch.float32
    filters = filter_bank("haar", "dec", cdtype)
    return reference.scale_details_ref(g.to(cdtype), filters, mode, level, scales)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["zero", "periodic", "periodization"])
def test_half_and_float32(mode, dtype):
    """float32 accumulation, x_adv rounded once. L2 is continuous in g': within the tolerance
    table (TOL: the half types may round the last bit the other way). Linf steps by sign(g'), which
    the transform's rounding may flip where |g'| is at rounding level: those elements (if any) may
    differ by up to 2 alpha, every other one is within TOL."""
    alpha = 0.03
    for level, (h, w) in ((1, (9, 8)), (2, (16, 16)), (3, (13, 11))):
        x_adv, g, x = _inputs((2, 3, h, w), dtype)
        scales = SCALES[:level]
        for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
            got, expected = _both(x_adv, g, x, eps, alpha, level, mode, scales, norm)
            assert got.dtype == dtype
            what = f"{dtype} J={level} {norm}"
            if norm == "L2":
                assert_step_close(got, expected, TOL[dtype], what)
                continue
            gf = _filtered(g, level, mode, scales)
            tiny = gf.abs() <= 1e-5 * gf.abs().max()
            assert tiny.sum() <= 2, what
            assert_close(got[~tiny], expected[~tiny], TOL[dtype], what)
            assert ((got - expected).float().abs()[tiny] <= 2 * alpha + TOL[dtype]).all(), what


@pytest.mark.parametrize("wave", ["haar", "db2"])
def test_float16_step_takes_the_sign_of_g_prime_before_rounding(wave):
    """g' is computed in float32 and never rounded to float16 before its sign: a checkerboard of
    float16's smallest subnormal (2^-24) is all detail, so with hf_scale 0.25 every g' entry is
    about +-2^-26, which float16 rounds to 0 (sign 0: no step), float32 keeps (a full alpha
    step). The Linf step equals the reference's (which filters in float32) bit for bit, and does
    step: a kernel that rounded g' first would leave x_adv where it is."""
    x_adv, _, x = _inputs((2, 2, 8, 8), torch.float16)
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    board = ((i + j) % 2 * 2 - 1).to(torch.float16) * 2.0**-24
    g = board.expand(2, 2, 8, 8).clone()
    g[1] = -g[1]
    got, expected = _both(x_adv, g, x, 0.05, 0.03, 1, "periodization", [0.25], "Linf", wave=wave)
    assert got.dtype == torch.float16
    assert not torch.equal(expected, x_adv), "the reference takes no step: the test would not see"
    assert torch.equal(got, expected)


# ----- bounds as tensors --------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_tensor_bounds_per_sample_and_per_channel(norm):
    x_adv, g, x = _inputs((3, 3, 11, 14), spread=0.2)
    n, c = x.shape[:2]
    eps = 0.05 + 0.1 * torch.rand(n, 1, 1, 1, dtype=F64)
    if norm == "Linf":
        eps = eps * torch.tensor([1.0, 0.5, 2.0], dtype=F64).view(1, c, 1, 1)
    else:
        eps = eps * 4
    alpha = torch.tensor([0.02, 0.03, 0.05], dtype=F64).view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0], dtype=F64).view(1, c, 1, 1)
    hi = torch.tensor([0.9, 1.0, 0.6], dtype=F64).view(1, c, 1, 1)
    for mode in ("symmetric", "periodic"):
        got, expected = _both(x_adv, g, x, eps, alpha, 2, mode, [0.0, 0.5], norm, lo, hi)
        assert_close(got, expected, 1e-12, f"{norm} {mode}")
        assert (got >= lo - 1e-15).all() and (got <= hi + 1e-15).all()
    # float32 data, bounds per sample
    x_adv, g, x = (t.float() for t in (x_adv, g, x))
    eps = torch.full((n, 1, 1, 1), 0.3 if norm == "L2" else 0.05)
    alpha = torch.tensor([0.01, 0.02, 0.04]).view(n, 1, 1, 1)
    got, expected = _both(x_adv, g, x, eps, alpha, 1, "zero", 0.0, norm, 0.0, 1.0)
    assert_close(got, expected, TOL[torch.float32], f"{norm} float32")


# ----- non-finite gradients -----------------------------------------------------------------------

NAN, INF = math.nan, math.inf
POSITIONS = [(0, 0), (4, 3), (6, 4), (0, 4), (6, 0)]  # corners, interior, last (odd) row / column


@pytest.mark.parametrize("mode", ALL_MODES)
def test_nan_in_grad_spreads_as_the_reference(mode):
    """Linf: NaN exactly where the reference's step is NaN (the 2^J block of the NaN and every
    block whose boundary extension reads it), the same values elsewhere; L2: the whole sample."""
    for pos in POSITIONS:
        x_adv, g, x = _inputs((2, 2, 7, 5))
        g[0, 1][pos] = NAN
        for scales in ([0.0, 0.5], [1.0, 0.0]):
            got, expected = _both(x_adv, g, x, 0.05, 0.01, 2, mode, scales, "Linf")
            assert torch.equal(got.isnan(), expected.isnan()), (mode, pos, scales)
            fin = ~expected.isnan()
            assert_close(got[fin], expected[fin], 1e-12, f"{mode} {pos}")
            got, _ = _both(x_adv, g, x, 0.4, 0.1, 2, mode, scales, "L2")
            assert got[0].isnan().all() and got[1].isfinite().all()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_inf_in_grad_stays_inside_the_reference_stencil(mode):
    """An infinite gradient entry: the fused path computes g' in another (equal) form,
    g' = sum_j c_j P_j g with c_j the differences of consecutive scales, so where the reference's
    g' is inf - inf = NaN the fused g' may be +-inf, a full sign step (docs/edge_policies.md).
    With scales that never decrease from the finest level to the coarsest, within [0, 1] (every
    c_j >= 0; one scale for every level, the common case: c_j = 0 terms are skipped, never
    0 * inf), never more NaN than the reference and the same values outside its NaN set. Other
    scales meet inf - inf at the infinite entry itself: NaN there, within its 2^J block, where the
    reference may step. L2 normalises by an infinite norm: the sample is NaN, as the reference."""
    for pos in POSITIONS:
        x_adv, g, x = _inputs((2, 2, 7, 5))
        g[0, 1][pos] = INF
        for scales in ([0.0, 0.5], [0.5, 0.5], 0.5, [0.25, 1.0], [0.0, 0.0]):
            got, expected = _both(x_adv, g, x, 0.05, 0.01, 2, mode, scales, "Linf")
            assert not (got.isnan() & ~expected.isnan()).any(), (mode, pos, scales)
            fin = ~expected.isnan()
            assert_close(got[fin], expected[fin], 1e-12, f"{mode} {pos} {scales}")
            assert got[1].isfinite().all()
        for scales in ([0.5, 0.25], [2.0, 2.0], [-0.5, 0.5]):
            got, expected = _both(x_adv, g, x, 0.05, 0.01, 2, mode, scales, "Linf")
            extra = got.isnan() & ~expected.isnan()
            block = torch.zeros_like(extra)
            r, c = (p - p % 4 for p in pos)
            block[0, 1, r : r + 4, c : c + 4] = True
            assert not (extra & ~block).any(), (mode, pos, scales)
            fin = ~(expected.isnan() | got.isnan())
            assert_close(got[fin], expected[fin], 1e-12, f"{mode} {pos} {scales}")
        got, _ = _both(x_adv, g, x, 0.4, 0.1, 2, mode, [0.0, 0.5], "L2")
        assert got[0].isnan().all() and got[1].isfinite().all()


# ----- the fused path is the one taken ------------------------------------------------------------


def test_haar_runs_no_transform_kernel():
    """Haar and db1, every mode, both norms: the step calls no transform kernel (one pass); nor
    does db2 (its own one-pass-per-plane path, tests/test_pgd_step.py); the profiler does see a
    transform kernel the test calls itself."""
    x_adv, g, x = _inputs((2, 3, 9, 8))

    def step(wave, mode, norm):
        return lambda: wavefuse.wavelet_pgd_step(
            x_adv.clone(), g, x, 0.1, 0.01, wave, 2, mode, [0.0, 0.5], norm, backend="cpu"
        )

    for mode in ALL_MODES:
        for norm in ("Linf", "L2"):
            assert _dwt_calls(step("haar", mode, norm)) == 0, (mode, norm)
            assert _dwt_calls(step("db1", mode, norm)) == 0, (mode, norm)
            assert _dwt_calls(step("db2", mode, norm)) == 0, (mode, norm)
    assert _dwt_calls(lambda: wavefuse.dwt2(g, "db2", "symmetric", backend="cpu")) == 1


def _steps_where_the_reference_is_nan(wave, mode, filters=None) -> bool:
    """The fused kernel's fingerprint (the general path calls no transform op either, so the
    test above cannot tell them apart): with an infinite gradient entry and scales [0, 0.5] the
    fused form g' = sum_j c_j P_j g steps where the reference's 0 * inf is NaN; the general path
    (the four-band synthesis, as the reference) gives the reference's NaN."""
    x_adv, g, x = _inputs((2, 2, 7, 6))
    g[0, 1, 3, 2] = INF
    bounds = prepare_bounds(x, 0.05, 0.01, 0.0, 1.0, "Linf")
    filters = filter_bank(wave, "dec", F64) if filters is None else filters
    got = x_adv.clone()
    _kernel(got, g, x, *bounds, filters, mode, 2, [0.0, 0.5], "Linf")
    expected = reference.wavelet_pgd_step_ref(
        x_adv, g, x, 0.05, 0.01, filters, mode, 2, [0.0, 0.5], 0.0, 1.0, "Linf"
    )
    assert expected.isnan().any() and not (got.isnan() & ~expected.isnan()).any()
    return bool((expected.isnan() & ~got.isnan()).any())


@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_and_db1_take_the_fused_path(mode):
    assert _steps_where_the_reference_is_nan("haar", mode)
    assert _steps_where_the_reference_is_nan("db1", mode)


def _kernel(*args):
    """The C++ kernel op itself (looked up at call time: the module imports without _C)."""
    return torch.ops.wavefuse._wavelet_pgd_step_kernel(*args)


def test_two_tap_banks_that_are_not_orthogonal_fall_back():
    """The kernel op itself takes any (2, L) bank; a two-tap bank that is not orthogonal (here
    haar's taps times 1.01) takes the general path (the four-band synthesis of every level, which
    does not assume perfect reconstruction; no transform kernel) and still matches the
    reference."""
    x_adv, g, x = _inputs((2, 2, 7, 6))
    filters = filter_bank("haar", "dec", F64) * 1.01
    for norm in ("Linf", "L2"):
        bounds = prepare_bounds(x, 0.1, 0.02, 0.0, 1.0, norm)
        got = x_adv.clone()
        args = (got, g, x, *bounds, filters, "symmetric", 2, [0.0, 0.5], norm)
        assert _dwt_calls(lambda args=args: _kernel(*args)) == 0
        expected = reference.wavelet_pgd_step_ref(
            x_adv, g, x, 0.1, 0.02, filters, "symmetric", 2, [0.0, 0.5], 0.0, 1.0, norm
        )
        assert_close(got, expected, 1e-12, norm)
    assert not _steps_where_the_reference_is_nan("haar", "symmetric", filters)


@pytest.mark.parametrize("mode", ["symmetric", "periodization", "reflect"])
def test_orthogonal_two_tap_bank_other_than_haar(mode):
    """The fused path takes any orthogonal two-tap bank (haar_fusable), and haar's two equal taps
    cannot tell w0 (the weight of sample 2k) from w1 (of 2k + 1): a rotated bank, whose taps
    differ, goes the fused way too (its inf fingerprint) and still matches the reference's
    composition, odd sizes included."""
    c, s = math.cos(0.3), math.sin(0.3)
    filters = torch.tensor([[c, s], [s, -c]], dtype=F64)
    assert _steps_where_the_reference_is_nan("haar", mode, filters)
    x_adv, g, x = _inputs((2, 2, 9, 6))
    for norm in ("Linf", "L2"):
        bounds = prepare_bounds(x, 0.1, 0.02, 0.0, 1.0, norm)
        got = x_adv.clone()
        _kernel(got, g, x, *bounds, filters, mode, 2, [0.0, 0.5], norm)
        expected = reference.wavelet_pgd_step_ref(
            x_adv, g, x, 0.1, 0.02, filters, mode, 2, [0.0, 0.5], 0.0, 1.0, norm
        )
        assert_close(got, expected, 1e-12, norm)


def test_level_zero_kernel_is_pgd_step():
    """The kernel with level 0 (the Python layer runs pgd_step itself then): g' = g exactly, so
    Linf is pgd_step bit for bit; L2 sums its norms in another order (a few ulps)."""
    x_adv, g, x = _inputs((2, 3, 5, 6))
    filters = filter_bank("haar", "dec", F64)
    for norm in ("Linf", "L2"):
        bounds = prepare_bounds(x, 0.1, 0.02, 0.0, 1.0, norm)
        got = x_adv.clone()
        _kernel(got, g, x, *bounds, filters, "periodization", 0, [], norm)
        expected = wavefuse.pgd_step(x_adv.clone(), g, x, 0.1, 0.02, norm, backend="cpu")
        if norm == "Linf":
            assert torch.equal(got, expected)
        else:
            assert_close(got, expected, 4 * torch.finfo(F64).eps, norm)


# ----- determinism, threads, empty batches, opcheck -----------------------------------------------


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_bitwise_identical_across_calls_and_thread_counts(norm):
    """Large enough for several parallel chunks and, for L2, several sample groups: the same bits
    for 1 and 2 threads and on every call (fixed per-task partial sums, no atomics)."""
    x_adv, g, x = _inputs((3, 3, 200, 136), torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            for level in (1, 3):
                got, _ = _both(x_adv, g, x, 2.0, 0.5, level, "periodic", 0.25, norm)
                results.append(got)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[:2], results[2:4]):
        assert torch.equal(a, b)
    for a, b in zip(results[2:4], results[4:]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(0, 3, 9, 8), (2, 0, 9, 8)], ids=str)
def test_empty_batch_is_a_no_op(shape):
    for norm in ("Linf", "L2"):
        x_nat, grad = torch.rand(shape), torch.randn(shape)
        x_adv = x_nat.clone()
        out = wavefuse.wavelet_pgd_step(
            x_adv, grad, x_nat, 0.1, 0.1, "haar", 2, "zero", 0.5, norm, backend="cpu"
        )
        assert out is x_adv and x_adv.shape == shape


@pytest.mark.parametrize("backend", cpu_backends("wavelet_pgd_step"))
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("bounds_as_tensors", [False, True])
def test_opcheck_haar(bounds_as_tensors, norm, backend):
    x_adv, g, x = _inputs((2, 3, 9, 6))
    if bounds_as_tensors:
        eps = torch.full((2, 1, 1, 1), 0.05, dtype=F64)
        bounds = prepare_bounds(x, eps, 0.02, torch.zeros(1, 3, 1, 1).double(), 1.0, norm)
    else:
        bounds = prepare_bounds(x, 0.05, 0.02, 0.0, 1.0, norm)
    filters = filter_bank("haar", "dec", F64)
    for mode, scales in (("periodization", [0.0, 0.5]), ("reflect", [0.5, 0.0])):
        args = (x_adv, g, x, *bounds, filters, mode, 2, scales, norm, backend)
        torch.library.opcheck(torch.ops.wavefuse.wavelet_pgd_step.default, args)
