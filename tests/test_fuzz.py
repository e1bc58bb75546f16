"""Property-based fuzzing (hypothesis) of every op on every backend that runs here.

Each test draws whole cases -- wavelet (every supported one, by name or as a ``pywt.Wavelet``),
mode, level (None, 0-4, also above ``dwt_max_level``), dtype, shape (1 x 1, odd, prime, smaller
than the filter, medium, very wide or tall; N and C up to 3), memory layout (contiguous,
channels_last, H/W transposed, N/C innermost, a NaN-padded strided slice of a larger tensor, a
stride-0 batch) and values (normal at three scales, zeros, constants, small integers, sparse) --
and compares with PyWavelets in float64 on the same (rounded) input: coefficients, sizes, output
layouts, warnings and refusals; gradients with exact operators built from PyWavelets
(``pywt.dwt``/``pywt.idwt`` of identity matrices: the transforms are separable, so one 1-D
matrix per axis is the whole Jacobian). Tolerances are TOL (conftest) times the forward error
bound |A| |x| (computed by PyWavelets with the absolute-valued filters), not times |A x|, which
is ~0 for the detail bands of smooth inputs. pgd_step and wavelet_pgd_step are compared with the
update written out in float64, and the kernels with the reference (torchattacks' update op for
op: the same bits for Linf).

Budget (2-core machine): the "ci" profile below is derandomized (the same cases on every run)
and runs ``max_examples`` = 1,000 cases per op per backend -- the reference, the C++ kernels and
the Triton kernels under the interpreter: 20,000 cases. The interpreter runs one program at a
time; with tests/conftest.py's once-per-launch patching of ``triton.language`` and its memos of
the frontend's type objects, and Triton's int32 overflow check off for these tests (the
``no_overflow_sanitizer`` fixture says why), a Triton case costs about 0.05 s for pgd_step and
0.1-0.35 s for the others (a forward and a backward launch per plane, more on the forced tiled
paths, where a case costs 2-6 times a dense one). The Triton transform tests draw planes of at
most 32 x 32, band_energy / hf_penalty and wavelet_pgd_step at most 24 x 24; a sixth of their
cases are forced onto the kernels' two tiled variants of the general path, the rest take the
dense path that such planes take by default. The whole file took 8.1 minutes in two xdist
workers (15.9 minutes of one core, 13.0 of them the Triton tests, band_energy the longest at
4.9; 2026-12-08); the Triton tests are marked ``slow``, which tests/conftest.py runs first in
the session, longest first, with the workers taking one test at a time, so that neither starts
one as the other runs out of work (in file order instead of longest first: 8.9 minutes; with
xdist's default dispatch and the file's own order before 2026-12-07: 9.9).
``WAVEFUSE_FUZZ_TRITON_EXAMPLES`` (the transforms) and ``WAVEFUSE_FUZZ_TRITON_FUSED_EXAMPLES``
(band_energy and wavelet_pgd_step) lower the Triton counts for a quick run. Every test asserts
that it ran its count. ``HYPOTHESIS_PROFILE=dev`` draws 100 fresh random cases per test instead.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, ALL_WAVELETS, TOL, assert_close
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import wavefuse
from wavefuse import backends
from wavefuse.functional import wavelet_pool2d
from wavefuse.ops._common import is_channels_last

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,  # hermetic: no .hypothesis/ directory, nothing replayed from earlier runs
    max_examples=1000,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile(
    "dev", parent=settings.get_profile("ci"), derandomize=False, max_examples=100
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@functools.cache
def _sampled_from(values: tuple) -> st.SearchStrategy:
    return st.sampled_from(values)


def sampled_from(values) -> st.SearchStrategy:
    """``st.sampled_from(values)``, one strategy object per tuple of values. Hypothesis validates
    and labels a strategy object at its first draw, and the composites below would build a new one
    at every draw: a quarter of hypothesis's own time per case (6-8 ms; the same cases drawn)."""
    return _sampled_from(tuple(values))


# Warnings are compared with PyWavelets' explicitly where they matter (wavedec2, band_energy).
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")

EXAMPLES = settings.default.max_examples
TRITON_EXAMPLES = int(os.environ.get("WAVEFUSE_FUZZ_TRITON_EXAMPLES", EXAMPLES))
TRITON_FUSED_EXAMPLES = int(os.environ.get("WAVEFUSE_FUZZ_TRITON_FUSED_EXAMPLES", EXAMPLES))

F64 = torch.float64
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
LAYOUTS = ("contiguous", "channels_last", "transposed", "permuted", "sliced", "expanded")
VALUES = ("normal", "small", "large", "zeros", "constant", "integers", "sparse")
# Weights: 0 or at least 1e-3 in magnitude (a smaller one would underflow the float32 taps the
# kernels build from it, which is rounding, not an error).
WEIGHTS = st.one_of(st.just(0.0), st.floats(1e-3, 2.0), st.floats(-2.0, -1e-3))
SMALL_SIDES = tuple(range(1, 10)) + (11, 13, 17, 19, 23)
MEDIUM_SIDES = (24, 29, 32, 37, 48)
LONG_SIDES = (29, 31, 37, 47, 53, 64, 67, 97, 128, 131)
#: Levels: None (pywt's dwt_max_level), 0, and 1-4 whatever the size (PyWavelets allows a level
#: above the maximum, with a warning).
LEVELS = sampled_from((None, 0, 1, 1, 2, 2, 3, 4))
#: The most levels a drawn case resolves to: pywt's dwt_max_level for haar on 131 samples is 7.
MAX_LEVELS = 7


@pytest.fixture(autouse=True)
def _one_thread():
    """Intra-op threads only cost at these sizes (and make the run time hostage to other load);
    thread counts are the subject of tests/test_determinism.py."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _backends(op: str, candidates=("reference", "cpu")) -> list:
    """Backends as pytest params; one that cannot run ``op`` here skips with the reason."""
    params = []
    for b in candidates:
        reason = backends.why_not(b, op, "cpu")
        params.append(
            pytest.param(b, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))
        )
    return params


#: What a check returns when PyWavelets refused the case and so did we (ValueError).
REFUSED = "refused"


#: The largest share of refused cases (PyWavelets and the op both raise ValueError: reflect mode
#: on a 1-sample axis) a run may have, as 1 / REFUSED_SHARE, so that the fuzzing is not vacuous.
#: Not a tenth: the CI profile's fixed cases refuse 84 of 1,000 for dwt2 and 56 for wavedec2
#: (hypothesis 6.170, 2026-12-07; hypothesis is not pinned, and another release draws other cases),
#: and a random run that meets a refused case early often explores around it: 25 random 100-case
#: runs per op refused 0-14 (a tenth failed 24 of 58 random runs of the non-Triton fuzz tests).
REFUSED_SHARE = 4


def run_cases(strategy, check, examples: int = EXAMPLES) -> None:
    """Run ``check`` on ``examples`` cases drawn from ``strategy``; assert that they all ran and
    that at most 1 / REFUSED_SHARE of them were refusals (so the fuzzing is not vacuous)."""
    ran = refused = 0

    @settings(max_examples=examples)
    @given(strategy)
    def fuzz(case):
        nonlocal ran, refused
        refused += check(case) == REFUSED
        ran += 1

    fuzz()
    assert ran >= examples, f"hypothesis ran {ran} cases, fewer than the {examples} required"
    assert refused <= ran // REFUSED_SHARE, f"{refused} of {ran} cases were refused (invalid input)"


# ---- drawing cases -------------------------------------------------------------------------------


@st.composite
def sides(draw, max_side: int = 131, least: int = 1) -> tuple[int, int]:
    """(H, W): small or prime, medium, or very wide / very tall (one axis at most 3 + ``least``,
    the other long); every side at least ``least``."""
    small = sampled_from([s for s in SMALL_SIDES if s <= max_side])
    medium = sampled_from([s for s in MEDIUM_SIDES if s <= max_side] or [max_side])
    long = sampled_from([s for s in LONG_SIDES if s <= max_side] or [max_side])
    kind = draw(sampled_from(("small", "small", "medium", "wide", "tall")))
    h, w = {
        "small": (small, small),
        "medium": (medium, medium),
        "wide": (st.integers(1, 3), long),
        "tall": (long, st.integers(1, 3)),
    }[kind]
    return min(draw(h) + least - 1, max_side), min(draw(w) + least - 1, max_side)


def path_max_side(path: str | None, max_side: int) -> int:
    """The Triton interpreter runs one program at a time: the forced tiled paths cut a plane into
    many small tiles, so they get smaller planes (they cover the same index arithmetic)."""
    return min(max_side, {"general": 24, "tiled": 12}.get(path, max_side))


@functools.cache  # one strategy object per path (as sampled_from)
def wavelets(path: str | None = None):
    """A supported wavelet, by name or (sometimes) as a pywt.Wavelet object. The Triton kernels'
    tiled gather paths ("general", "tiled") get filters of at most 8 taps: on planes shorter than
    a long filter they loop once per wrap of the extension, a minute per case under the
    interpreter (the dense path, which small planes take by default, gets every wavelet)."""
    max_taps = 8 if path in ("general", "tiled") else 40
    names = sampled_from([w for w in ALL_WAVELETS if pywt.Wavelet(w).dec_len <= max_taps])
    return st.one_of(names, names, names, names.map(pywt.Wavelet))


@st.composite
def tensor_spec(draw, allow_expanded: bool = True) -> dict:
    layouts = LAYOUTS if allow_expanded else LAYOUTS[:-1]
    return {
        "layout": draw(sampled_from(layouts)),
        "values": draw(sampled_from(VALUES)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _values(shape, kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64)
    if kind == "small":
        return x * 1e-3
    if kind == "large":
        return x * 1e2
    if kind == "zeros":
        return torch.zeros(shape, dtype=F64)
    if kind == "constant":
        return torch.full(shape, float(torch.randn((), generator=g)), dtype=F64)
    if kind == "integers":
        return torch.randint(-3, 4, shape, generator=g).to(F64)
    if kind == "sparse":
        return x * (torch.rand(shape, generator=g, dtype=F64) < 0.1)
    return x


def with_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x's values (for "expanded": its first sample, repeated) in the given memory layout."""
    n, c, h, w = x.shape
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # H is the innermost dimension
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "permuted":  # N and C innermost
        return x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    if layout == "sliced":  # strided view; the gaps hold NaN, so a read outside the view shows
        big = torch.full((n, 2 * c, h + 2, 2 * w + 1), math.nan, dtype=x.dtype)
        view = big[:, 1::2, 1 : h + 1, 1::2]
        view.copy_(x)
        return view
    if layout == "expanded":  # stride 0 along N
        return x[:1].expand(n, c, h, w)
    return x.contiguous()


def make(shape, spec: dict, dtype: torch.dtype) -> torch.Tensor:
    return with_layout(_values(shape, spec["values"], spec["seed"]).to(dtype), spec["layout"])


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(F64).numpy()


def wave_name(w) -> str:
    return w if isinstance(w, str) else w.name


def dec_len(w) -> int:
    return pywt.Wavelet(wave_name(w)).dec_len


@contextlib.contextmanager
def recorded_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def messages(caught) -> list[str]:
    return sorted(str(w.message) for w in caught if issubclass(w.category, UserWarning))


def pywt_or_error(fn):
    """(result, warnings) from PyWavelets, or (ValueError, warnings) when it refuses."""
    with recorded_warnings() as caught:
        try:
            out = fn()
        except ValueError as e:
            out = e
    return out, messages(caught)


def expect_layout(out: torch.Tensor, like: torch.Tensor, what: str) -> None:
    """Outputs keep the input's dtype and memory format (contiguous or channels_last)."""
    assert out.dtype == like.dtype, f"{what}: dtype {out.dtype}, input {like.dtype}"
    fmt = torch.channels_last if is_channels_last(like) else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt), (
        f"{what}: strides {out.stride()} for shape {tuple(out.shape)} are not {fmt} "
        f"(input strides {like.stride()})"
    )


# ---- tolerances: the forward error bound -------------------------------------------------------------
#
# Any way of computing a linear map A x in floating point errs by at most a few units of rounding
# times (|A| |x|), elementwise: the scale is that of the absolute contributions, not of the result
# (a detail band of a smooth input is ~0 with a rounding residue ~eps |x|). So every comparison
# below is relative to max(|expected|, B) over the array, with B = |A| |x| computed by PyWavelets
# with the absolute-valued filter bank; TOL (conftest) gives the units per dtype.


@functools.cache
def abs_wavelet(name: str) -> pywt.Wavelet:
    """``name`` with every tap replaced by its absolute value."""
    bank = [np.abs(np.asarray(f)) for f in pywt.Wavelet(name).filter_bank]
    return pywt.Wavelet(f"abs_{name}", filter_bank=bank)


def absolute(tree):
    """|.| of every array in a nested list/tuple of arrays (None stays None)."""
    if tree is None:
        return None
    if isinstance(tree, (list, tuple)):
        return type(tree)(absolute(t) for t in tree)
    return np.abs(tree)


def assert_bounded(actual, expected, bound, tol: float, what: str) -> None:
    """|actual - expected| <= tol * max(max |expected|, max bound) + one subnormal step of the
    actual's dtype (the rounding of a result below the normal range is absolute, not relative:
    2^-24 ~ 6e-8 in float16); NaN never passes. Where the expected value lies beyond the actual's
    dtype range (float16: above 65504, a gradient of large inputs, say), the result may be the
    infinity of the expected sign, as rounding it to that dtype gives."""
    a = actual.detach().to(F64).numpy() if torch.is_tensor(actual) else np.asarray(actual)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    scale = max(np.abs(e).max(initial=0.0), np.asarray(bound).max(initial=0.0))
    err = np.abs(a - e)
    floor, overflow = 0.0, np.zeros(a.shape, dtype=bool)
    if torch.is_tensor(actual) and actual.dtype.is_floating_point:
        info = torch.finfo(actual.dtype)
        floor = info.tiny * info.eps
        with np.errstate(invalid="ignore"):
            overflow = np.isinf(a) & (np.sign(a) == np.sign(e)) & (np.abs(e) * (1 + tol) > info.max)
    bad = ~(err <= tol * scale + floor) & ~overflow
    if bad.any():
        idx = np.argwhere(bad)[:5].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.size} elements differ by more than {tol} x {scale:.3g}"
            f" (max err {np.nanmax(err):.3e}); first bad indices {idx}"
        )


# ---- exact operators from PyWavelets ---------------------------------------------------------------


# ``wave``: a name or a pywt.Wavelet (also the absolute-valued ones, whose matrices are the
# error bounds: |taps| summed over every extended position, before any folding).


def analysis_1d(n: int, wave, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (m, n): pywt.dwt of every unit vector, i.e. the analysis matrices."""
    return pywt.dwt(np.eye(n), wave, mode, axis=0)


def synthesis_1d(m: int, wave, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each (n_out, m): pywt.idwt of every unit coefficient vector."""
    eye = np.eye(m)
    return pywt.idwt(eye, None, wave, mode, axis=0), pywt.idwt(None, eye, wave, mode, axis=0)


def cascade_1d(n: int, wave, mode: str, level: int):
    """Per level j (finest first): (lo_j, hi_j), the (m_j, n) matrices taking the signal to level
    j's approximation and detail (the analysis cascade, from pywt.dwt of the identity)."""
    out, a = [], np.eye(n)
    for _ in range(level):
        lo, hi = pywt.dwt(a, wave, mode, axis=0)
        out.append((lo, hi))
        a = lo
    return out


# Band b of one 2-D level = (filter along H) x (filter along W): cA, cH, cV, cD as PyWavelets.
BAND_FILTERS = ((0, 0), (1, 0), (0, 1), (1, 1))


# ---- dwt2 ------------------------------------------------------------------------------------------


@st.composite
def dwt2_cases(draw, max_side: int = 131, max_planes: int = 9, paths=None):
    path = draw(sampled_from(paths)) if paths else None
    h, w = draw(sides(path_max_side(path, max_side)))
    n = draw(st.integers(1, min(3, max_planes)))
    c = draw(st.integers(1, max(1, max_planes // n)))
    return {
        "shape": (n, c, h, w),
        "wave": draw(wavelets(path)),
        "mode": draw(sampled_from(ALL_MODES)),
        "dtype": draw(sampled_from(DTYPES)),
        "x": draw(tensor_spec()),
        "grad_seed": draw(st.integers(0, 2**31 - 1)),
        "path": path,
    }


def check_dwt2(case: dict, backend: str) -> None:
    dtype, wave, mode = case["dtype"], case["wave"], case["mode"]
    x = make(case["shape"], case["x"], dtype).requires_grad_()
    what = f"dwt2 {backend} {wave_name(wave)}/{mode}/{tuple(x.shape)}/{dtype}/{case['x']}"
    expected, _ = pywt_or_error(lambda: pywt.dwt2(np64(x), wave_name(wave), mode))
    if isinstance(expected, ValueError):  # pywt refuses (reflect, one sample): so must we
        event("refused, as pywt")
        with pytest.raises(ValueError):
            wavefuse.dwt2(x, wave, mode, backend=backend)
        return REFUSED
    ll, (ch, cv, cd) = wavefuse.dwt2(x, wave, mode, backend=backend)
    tol = TOL[dtype]
    bound = pywt.dwt2(np.abs(np64(x)), abs_wavelet(wave_name(wave)), mode)
    for name, ours, theirs, b in zip(
        ("cA", "cH", "cV", "cD"),
        (ll, ch, cv, cd),
        (expected[0], *expected[1]),
        (bound[0], *bound[1]),
    ):
        assert tuple(ours.shape) == theirs.shape, f"{what} {name}: shape {tuple(ours.shape)}"
        assert_bounded(ours, theirs, b, tol, f"{what} {name}")
        expect_layout(ours, x, f"{what} {name}")
    # Gradient: the exact adjoint, sum_b A_H[b]^T G_b A_W[b] with pywt's 1-D analysis matrices.
    gen = torch.Generator().manual_seed(case["grad_seed"])
    grads = [torch.randn(ll.shape, generator=gen, dtype=F64).to(dtype) for _ in range(4)]
    (gx,) = torch.autograd.grad([ll, ch, cv, cd], x, grads)
    h, w, absw = x.shape[-2], x.shape[-1], abs_wavelet(wave_name(wave))
    mats_h, mats_w = analysis_1d(h, wave, mode), analysis_1d(w, wave, mode)
    abs_h, abs_w = analysis_1d(h, absw, mode), analysis_1d(w, absw, mode)
    pairs = list(zip(grads, BAND_FILTERS))
    expected_grad = sum(mats_h[fh].T @ np64(g) @ mats_w[fw] for g, (fh, fw) in pairs)
    bound_grad = sum(abs_h[fh].T @ np.abs(np64(g)) @ abs_w[fw] for g, (fh, fw) in pairs)
    assert gx.dtype == dtype
    assert_bounded(gx, expected_grad, bound_grad, tol, f"{what} grad")


@pytest.mark.parametrize("backend", _backends("dwt2d"))
def test_dwt2_fuzz(backend):
    run_cases(dwt2_cases(), lambda case: check_dwt2(case, backend))


# ---- idwt2 -----------------------------------------------------------------------------------------


@st.composite
def idwt2_cases(draw, max_side: int = 131, max_planes: int = 9, paths=None):
    path = draw(sampled_from(paths)) if paths else None
    wave, mode = draw(wavelets(path)), draw(sampled_from(ALL_MODES))
    # Synthesis needs L/2 coefficients per axis (except periodization); one case in 20 has one
    # fewer (an empty result: refused, as pywt).
    least = (
        1 if mode == "periodization" else dec_len(wave) // 2 - draw(sampled_from((0,) * 19 + (1,)))
    )
    h, w = draw(sides(max(path_max_side(path, max_side), least), max(least, 1)))
    n = draw(st.integers(1, min(3, max_planes)))
    c = draw(st.integers(1, max(1, max_planes // n)))
    present = draw(st.lists(st.booleans(), min_size=4, max_size=4).filter(any))
    return {
        "shape": (n, c, h, w),
        "wave": wave,
        "mode": mode,
        "dtype": draw(sampled_from(DTYPES)),
        "bands": [draw(tensor_spec()) if p else None for p in present],
        "grad_seed": draw(st.integers(0, 2**31 - 1)),
        "path": path,
    }


def check_idwt2(case: dict, backend: str) -> None:
    dtype, wave, mode = case["dtype"], case["wave"], case["mode"]
    bands = [
        None if spec is None else make(case["shape"], spec, dtype).requires_grad_()
        for spec in case["bands"]
    ]
    what = f"idwt2 {backend} {wave_name(wave)}/{mode}/{case['shape']}/{dtype}/{case['bands']}"
    coeffs = (bands[0], tuple(bands[1:]))
    as_np = [None if b is None else np64(b) for b in bands]
    expected, _ = pywt_or_error(
        lambda: pywt.idwt2((as_np[0], tuple(as_np[1:])), wave_name(wave), mode)
    )
    if isinstance(expected, ValueError) or expected.size == 0:
        # Too few coefficients for this filter (pywt raises, or returns an empty array): refused.
        event("refused, as pywt")
        with pytest.raises(ValueError):
            wavefuse.idwt2(coeffs, wave, mode, backend=backend)
        return REFUSED
    y = wavefuse.idwt2(coeffs, wave, mode, backend=backend)
    assert tuple(y.shape) == expected.shape, f"{what}: shape {tuple(y.shape)} != {expected.shape}"
    abs_np = absolute(as_np)
    bound = pywt.idwt2((abs_np[0], tuple(abs_np[1:])), abs_wavelet(wave_name(wave)), mode)
    assert_bounded(y, expected, bound, TOL[dtype], what)
    if bands[0] is not None:
        expect_layout(y, bands[0], what)
    # Gradient: the transposed synthesis, S_H[b]^T G_y S_W[b], for every band given.
    gen = torch.Generator().manual_seed(case["grad_seed"])
    gy = torch.randn(y.shape, generator=gen, dtype=F64).to(dtype)
    given_bands = [b for b in bands if b is not None]
    grads = iter(torch.autograd.grad(y, given_bands, gy))
    h, w, absw = case["shape"][2], case["shape"][3], abs_wavelet(wave_name(wave))
    s_h, s_w = synthesis_1d(h, wave, mode), synthesis_1d(w, wave, mode)
    abs_h, abs_w = synthesis_1d(h, absw, mode), synthesis_1d(w, absw, mode)
    gy_np = np64(gy)
    for name, b, (fh, fw) in zip(("cA", "cH", "cV", "cD"), bands, BAND_FILTERS):
        if b is not None:
            g = next(grads)
            assert g.dtype == dtype
            bound = abs_h[fh].T @ np.abs(gy_np) @ abs_w[fw]
            expected_g = s_h[fh].T @ gy_np @ s_w[fw]
            assert_bounded(g, expected_g, bound, TOL[dtype], f"{what} grad {name}")


@pytest.mark.parametrize("backend", _backends("idwt2d"))
def test_idwt2_fuzz(backend):
    run_cases(idwt2_cases(), lambda case: check_idwt2(case, backend))


# ---- wavedec2 / waverec2 -----------------------------------------------------------------------------


def _max_level(h: int, w: int, wave) -> int:
    return min(pywt.dwt_max_level(h, dec_len(wave)), pywt.dwt_max_level(w, dec_len(wave)))


@st.composite
def multilevel_cases(draw, max_side: int = 131, max_planes: int = 6, paths=None, max_level=4):
    path = draw(sampled_from(paths)) if paths else None
    h, w = draw(sides(path_max_side(path, max_side)))
    n = draw(st.integers(1, min(2, max_planes)))
    c = draw(st.integers(1, max(1, max_planes // n)))
    wave = draw(wavelets(path))
    level = draw(LEVELS)
    return {
        "shape": (n, c, h, w),
        "wave": wave,
        "mode": draw(sampled_from(ALL_MODES)),
        "level": level if level is None else min(level, max_level),
        "dtype": draw(sampled_from(DTYPES)),
        "x": draw(tensor_spec()),
        # One flag per detail band: level None resolves to up to 7 levels (haar, 131 samples).
        "drop": draw(st.lists(st.booleans(), min_size=3 * MAX_LEVELS, max_size=3 * MAX_LEVELS)),
        "grad_seed": draw(st.integers(0, 2**31 - 1)),
        "path": path,
    }


def check_multilevel(case: dict, backend: str) -> None:
    """wavedec2 against pywt.wavedec2 (levels, sizes, warnings, refusals); waverec2 of our
    coefficients (some detail bands None) against pywt.waverec2 of the same; the gradient of both
    through the Euler identity <grad_x, x> = <outputs, cotangents> (the maps are linear) and, for
    the compiled backends, entry by entry against the float64 reference's.

    Half types round every level, so their checks go level by level: level j against pywt.dwt2 of
    our level j - 1 approximation (``wavedec2(x, level=j - 1)[0]``), and waverec2 of the first j
    levels against pywt.waverec2 of our output for the first j - 1 and level j's details."""
    dtype, wave, mode, level = case["dtype"], case["wave"], case["mode"], case["level"]
    name, tol = wave_name(wave), TOL[dtype]
    half = dtype in (torch.float16, torch.bfloat16)
    x = make(case["shape"], case["x"], dtype).requires_grad_()
    what = f"wavedec2 {backend} {name}/{mode}/J={level}/{tuple(x.shape)}/{dtype}/{case['x']}"
    expected, expected_warnings = pywt_or_error(lambda: pywt.wavedec2(np64(x), name, mode, level))
    with recorded_warnings() as caught:
        if isinstance(expected, ValueError):
            event("refused, as pywt")
            with pytest.raises(ValueError):
                wavefuse.wavedec2(x, wave, mode, level, backend=backend)
            return REFUSED
        coeffs = wavefuse.wavedec2(x, wave, mode, level, backend=backend)
    assert messages(caught) == expected_warnings, what
    levels = len(expected) - 1
    event(f"levels: {levels}")
    assert len(coeffs) == levels + 1, f"{what}: {len(coeffs) - 1} levels"
    absw = abs_wavelet(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bounds = pywt.wavedec2(np.abs(np64(x)), absw, mode, levels)
    top, top_bound = expected[0], bounds[0]
    for j in range(1, levels + 1):  # level j (finest first) sits at index levels - j + 1
        theirs, bound = expected[levels - j + 1], bounds[levels - j + 1]
        if half:
            prev = x
            if j > 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    prev = wavefuse.wavedec2(x.detach(), wave, mode, j - 1, backend=backend)[0]
            top, theirs = pywt.dwt2(np64(prev), name, mode)
            top_bound, bound = pywt.dwt2(np.abs(np64(prev)), absw, mode)
        for b, (o, t, bd) in enumerate(zip(coeffs[levels - j + 1], theirs, bound)):
            assert tuple(o.shape) == t.shape, f"{what} level {j} band {b}: {tuple(o.shape)}"
            assert_bounded(o, t, bd, tol, f"{what} level {j} band {b}")
            expect_layout(o, x, f"{what} level {j} band {b}")
    assert_bounded(coeffs[0], top, top_bound, tol, f"{what} cA")
    if levels == 0:
        assert coeffs[0] is x, f"{what}: level 0 returns the input"
        return
    expect_layout(coeffs[0], x, f"{what} cA")

    # waverec2 of our coefficients with some detail bands dropped (None = zeros, as pywt).
    assert len(coeffs) - 1 <= MAX_LEVELS, f"{len(coeffs) - 1} levels: raise MAX_LEVELS"
    drop = iter(case["drop"])
    rec_in = [coeffs[0]] + [tuple(None if next(drop) else b for b in d) for d in coeffs[1:]]
    as_np = [np64(rec_in[0])] + [
        tuple(None if b is None else np64(b) for b in d) for d in rec_in[1:]
    ]
    y_expected, _ = pywt_or_error(lambda: pywt.waverec2(as_np, name, mode))
    if isinstance(y_expected, ValueError):  # a level with every band None cannot be sized
        event("waverec2 refused, as pywt")
        with pytest.raises(ValueError):
            wavefuse.waverec2(rec_in, wave, mode, backend=backend)
        return None
    y = wavefuse.waverec2(rec_in, wave, mode, backend=backend)
    assert tuple(y.shape) == y_expected.shape, f"{what} waverec2 shape {tuple(y.shape)}"
    if all(c.shape[-2:] != (1, 1) for c in coeffs[:1] + [d[0] for d in coeffs[1:]]):
        # A 1 x 1 approximation cropped from a larger plane reads as channels_last to the layout
        # rule (ops/_common.is_channels_last and csrc's channels_last_like: a non-contiguous
        # tensor with no spatial extent), so the next levels come out channels_last. Reported.
        expect_layout(y, x, f"{what} waverec2")
    if not half:
        bound = pywt.waverec2(absolute(as_np), absw, mode)
        assert_bounded(y, y_expected, bound, tol, f"{what} waverec2")
    else:
        prev = rec_in[0]
        for k in range(1, levels + 1):
            # all the levels: y itself (bitwise the same as a second call, which
            # tests/test_determinism.py checks; under Triton a launch per level saved)
            if k == levels:
                out = y
            else:
                out = wavefuse.waverec2(rec_in[: k + 1], wave, mode, backend=backend)
            expected_k = pywt.waverec2([np64(prev), as_np[k]], name, mode)
            bound = pywt.waverec2(absolute([np64(prev), as_np[k]]), absw, mode)
            assert_bounded(out, expected_k, bound, tol, f"{what} waverec2 level {k}")
            prev = out
    if half:
        return
    # Euler: x -> (coeffs, y) is linear, so <grad_x, x> = sum of <output, cotangent>.
    gen = torch.Generator().manual_seed(case["grad_seed"])
    outs = [coeffs[0], *(b for d in coeffs[1:] for b in d), y]
    cots = [torch.randn(o.shape, generator=gen, dtype=F64).to(dtype) for o in outs]
    (gx,) = torch.autograd.grad(outs, x, cots)
    gx, xd = gx.double(), x.detach().double()
    lhs = float((gx * xd).sum())
    rhs = sum(float((o.detach().double() * g.double()).sum()) for o, g in zip(outs, cots))
    scale = math.sqrt(float((gx**2).sum()) * float((xd**2).sum()))
    assert abs(lhs - rhs) <= 10 * tol * max(scale, 1.0), f"{what} grad: {lhs} != {rhs}"
    if backend == "reference":
        return
    # The identity is one number, weak against a wrong gradient: compare it entry by entry with
    # the float64 reference's through the same graph (the same cotangents and dropped bands).
    xr = x.detach().double().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = wavefuse.wavedec2(xr, wave, mode, level, backend="reference")
        ref_in = [ref[0]] + [
            tuple(None if b is None else r for b, r in zip(d, rd))
            for d, rd in zip(rec_in[1:], ref[1:])
        ]
        y_ref = wavefuse.waverec2(ref_in, wave, mode, backend="reference")
    ref_outs = [ref[0], *(b for d in ref[1:] for b in d), y_ref]
    (g_ref,) = torch.autograd.grad(ref_outs, xr, [c.double() for c in cots])
    assert_close(gx, g_ref, 10 * tol, f"{what} grad vs the reference")


@pytest.mark.parametrize("backend", _backends("dwt2d"))
def test_wavedec2_waverec2_fuzz(backend):
    run_cases(multilevel_cases(), lambda case: check_multilevel(case, backend))


# ---- band_energy, hf_penalty and its gradient ----------------------------------------------------------


def planes(draw, max_planes: int | None) -> tuple[int, int]:
    """(N, C): each 1-3 (the default), or at most ``max_planes`` planes in all."""
    if max_planes is None:
        return draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, min(3, max_planes)))
    return n, draw(st.integers(1, max(1, max_planes // n)))


@st.composite
def energy_cases(
    draw, max_side: int = 131, max_planes=None, paths=None, max_level=None, routes=None
):
    path = draw(sampled_from(paths)) if paths else None
    h, w = draw(sides(path_max_side(path, max_side)))
    n, c = planes(draw, max_planes)
    wave = draw(wavelets(path))
    level = draw(LEVELS)
    if level is not None and max_level is not None:
        level = min(level, max_level)
    resolved = _max_level(h, w, wave) if level is None else level
    weights = draw(sampled_from(("none", "levels", "bands", "tensor")))
    wvals = draw(st.lists(WEIGHTS, min_size=3 * resolved, max_size=3 * resolved))
    return {
        "shape": (n, c, h, w),
        "wave": wave,
        "mode": draw(sampled_from(ALL_MODES)),
        "level": level,
        "p": draw(sampled_from((1, 2))),
        "dtype": draw(sampled_from(DTYPES)),
        "x": draw(tensor_spec()),
        "weights": weights,
        "wvals": wvals,
        "reduction": draw(sampled_from(("none", "sum", "mean"))),
        "grad_seed": draw(st.integers(0, 2**31 - 1)),
        "path": path,
        "route": draw(sampled_from(routes)) if routes else None,
    }


def _weights(case: dict, level: int):
    vals = case["wvals"]
    if case["weights"] == "none" or level == 0:
        return None, np.ones((level, 3))
    if case["weights"] == "levels":
        return vals[:level], np.repeat(np.array(vals[:level])[:, None], 3, axis=1)
    arr = np.array(vals).reshape(level, 3)
    if case["weights"] == "bands":
        return arr.tolist(), arr
    return torch.tensor(arr, dtype=F64), arr


def detail_bands(x: np.ndarray, wave, mode: str, level: int, absolute_taps: bool = False):
    """Per level (finest first) the three detail bands of pywt's cascade; with ``absolute_taps``
    the bands of |x| under the absolute-valued bank (the error bound B = |A| |x|)."""
    w = abs_wavelet(wave_name(wave)) if absolute_taps else wave_name(wave)
    out, a = [], np.abs(x) if absolute_taps else x
    for _ in range(level):
        a, d = pywt.dwt2(a, w, mode)
        out.append(d)
    return out


def band_sums(per_level, p: int, n: int) -> np.ndarray:
    e = np.zeros((n, len(per_level), 3))
    for j, bands in enumerate(per_level):
        for b in range(3):
            e[:, j, b] = (np.abs(bands[b]) ** p).sum(axis=(1, 2, 3))
    return e


def energy_grad_oracle(x: np.ndarray, wave, mode: str, level: int, p: int, grad_e: np.ndarray,
                       tie_eps: float = 0.0):  # fmt: skip
    """d/dx sum_{n,j,b} grad_e[n,j,b] * energy[n,j,b] = sum_{j,b} P_H^T (grad_e * phi'(d)) P_W with
    the exact 1-D cascade matrices P (level j: lo or hi of level j after j - 1 lo's), its error
    bound sum |P_H|^T (|grad_e| * |phi'|(B)) |P_W|, and (p = 1) the most a flipped sign(d) can move
    it: sum |P_H|^T (2 |grad_e| * tie) |P_W| over the ties, coefficients with |d| <= tie_eps * B
    (within rounding of 0, so that an implementation may take either sign)."""
    bands = detail_bands(x, wave, mode, level)
    bounds = detail_bands(x, wave, mode, level, absolute_taps=True)
    h, w, absw = x.shape[-2], x.shape[-1], abs_wavelet(wave_name(wave))
    ch, cw = cascade_1d(h, wave, mode, level), cascade_1d(w, wave, mode, level)
    ah, aw = cascade_1d(h, absw, mode, level), cascade_1d(w, absw, mode, level)
    out, bound, slack = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for j in range(level):
        for b, (fh, fw) in enumerate(BAND_FILTERS[1:]):
            d, bd = bands[j][b], bounds[j][b]
            ge = grad_e[:, j, b][:, None, None, None]
            dphi, bphi = (2 * d, 2 * bd) if p == 2 else (np.sign(d), np.ones_like(bd))
            out += ch[j][fh].T @ (ge * dphi) @ cw[j][fw]
            bound += ah[j][fh].T @ (np.abs(ge) * bphi) @ aw[j][fw]
            if p == 1 and tie_eps:
                tie = np.abs(d) <= tie_eps * bd
                slack += ah[j][fh].T @ (2 * np.abs(ge) * tie) @ aw[j][fw]
    return out, bound, slack


def check_energy(case: dict, backend: str) -> None:
    dtype, wave, mode, p = case["dtype"], case["wave"], case["mode"], case["p"]
    name = wave_name(wave)
    x = make(case["shape"], case["x"], dtype).requires_grad_()
    xn = np64(x)
    what = f"hf_penalty {backend} {name}/{mode}/J={case['level']}/p={p}/{tuple(x.shape)}/{dtype}/{case['x']}"
    expected, expected_warnings = pywt_or_error(
        lambda: pywt.wavedec2(xn, name, mode, case["level"])
    )
    if isinstance(expected, ValueError):
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wavefuse.band_energy(x, wave, case["level"], mode, p, backend=backend)
        return REFUSED
    level = len(expected) - 1
    event(f"levels: {level}")
    w_arg, w_np = _weights(case, level)
    bands = detail_bands(xn, wave, mode, level)
    bounds = detail_bands(xn, wave, mode, level, absolute_taps=True)
    energies = band_sums(bands, p, xn.shape[0])
    e_bound = p * band_sums(bounds, p, xn.shape[0])  # d(|d|^p) <= p |d|^(p-1) |delta|
    cdtype = F64 if dtype == F64 else torch.float32
    etol = TOL[cdtype]
    with recorded_warnings() as caught:
        e = wavefuse.band_energy(x, wave, case["level"], mode, p, backend=backend)
    # pywt's warnings, and ours where level=None resolves to no level (a penalty of nothing)
    ours = [m for m in messages(caught) if m.startswith("level=None is 0 levels for x of")]
    assert len(ours) == (case["level"] is None and level == 0), f"{what}: {ours}"
    assert [m for m in messages(caught) if m not in ours] == expected_warnings, what
    assert e.dtype == cdtype and tuple(e.shape) == energies.shape, (
        f"{what}: {e.dtype} {tuple(e.shape)}"
    )
    assert_bounded(e, energies, e_bound, etol, f"{what} band_energy")
    per_sample = (energies * w_np).sum(axis=(1, 2))
    per_sample_bound = (e_bound * np.abs(w_np)).sum(axis=(1, 2))
    red = case["reduction"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pen = wavefuse.hf_penalty(x, wave, case["level"], mode, p, w_arg, red, backend=backend)
    reduce = {"none": lambda v: v, "sum": np.sum, "mean": np.mean}[red]
    assert pen.dtype == cdtype
    assert_bounded(
        pen, reduce(per_sample), reduce(per_sample_bound), etol, f"{what} hf_penalty {red}"
    )
    # Gradient of the penalty (cotangent random for "none"), against the exact cascade matrices.
    gen = torch.Generator().manual_seed(case["grad_seed"])
    cot = torch.randn(pen.shape, generator=gen, dtype=F64).to(cdtype)
    (gx,) = torch.autograd.grad(pen, x, cot)
    n = xn.shape[0]
    g_ps = np64(cot) if red == "none" else np.full(n, float(cot) / (n if red == "mean" else 1))
    grad_e = g_ps[:, None, None] * w_np[None]
    tie_eps = 1e3 * torch.finfo(cdtype).eps  # p = 1: sign(d) of a d within rounding of 0
    expected_grad, grad_bound, slack = energy_grad_oracle(xn, wave, mode, level, p, grad_e, tie_eps)
    expect_layout(gx, x, f"{what} grad")
    near = slack > 0  # entries a tie's flipped sign may move, by at most slack
    if near.any():
        event("p=1 gradient: ties (coefficients within rounding of 0) checked to their slack")
        got = gx.detach().to(F64).numpy()
        scale = max(np.abs(expected_grad).max(initial=0.0), grad_bound.max(initial=0.0))
        off = ~(np.abs(got - expected_grad) <= slack + TOL[dtype] * scale + 1e-300)
        assert not (near & off).any(), (
            f"{what} grad: beyond a tie's slack at {np.argwhere(near & off)[:5].tolist()}"
        )
        keep = torch.from_numpy(~near)
        gx, expected_grad = gx.detach()[keep], expected_grad[~near]
        grad_bound = np.full_like(expected_grad, grad_bound.max(initial=0.0))
    assert_bounded(gx, expected_grad, grad_bound, TOL[dtype], f"{what} grad")


@pytest.mark.parametrize("backend", _backends("hf_penalty"))
def test_band_energy_hf_penalty_fuzz(backend):
    run_cases(energy_cases(), lambda case: check_energy(case, backend))


# ---- pgd_step, wavelet_pgd_step ---------------------------------------------------------------------


@st.composite
def bound(draw, kind_choices, n: int, c: int, lo: float, hi: float):
    kind = draw(sampled_from(kind_choices))
    if kind == "float":
        return ("float", draw(st.floats(lo, hi)))
    shape = {
        "sample": (n, 1, 1, 1),
        "channel": (1, c, 1, 1),
        "both": (n, c, 1, 1),
        "one": (1, 1, 1, 1),
    }[kind]
    vals = draw(st.lists(st.floats(lo, hi), min_size=math.prod(shape), max_size=math.prod(shape)))
    return ("tensor", torch.tensor(vals, dtype=F64).reshape(shape))


@st.composite
def pgd_cases(draw, wavelet: bool = False, max_side: int = 131, max_planes=None, paths=None):
    path = draw(sampled_from(paths)) if paths else None
    h, w = draw(sides(path_max_side(path, max_side)))
    n, c = planes(draw, max_planes)
    norm = draw(sampled_from(("Linf", "L2")))
    eps_kinds = (
        ("float", "sample", "one")
        if norm == "L2"
        else ("float", "sample", "channel", "both", "one")
    )
    case = {
        "shape": (n, c, h, w),
        "norm": norm,
        "dtype": draw(sampled_from(DTYPES)),
        "x_adv": draw(tensor_spec(allow_expanded=False)),
        "grad": draw(tensor_spec()),
        "x_nat": draw(tensor_spec()),
        "eps": draw(bound(eps_kinds, n, c, 0.0, 0.5)),
        "alpha": draw(bound(("float", "sample", "channel"), n, c, -0.2, 0.5)),
        "box": draw(sampled_from(("unit", "none", "lo_tensor", "hi_tensor", "both_tensors"))),
        "path": path,
    }
    if wavelet:
        wave = draw(wavelets(path))
        level = draw(LEVELS)
        resolved = _max_level(h, w, wave) if level is None else level
        scale = sampled_from((0.0, 1.0, 0.5, -1.0, 2.0))
        case.update(
            wave=wave,
            mode=draw(sampled_from(ALL_MODES)),
            level=level,
            hf_scale=draw(st.one_of(scale, st.lists(scale, min_size=resolved, max_size=resolved))),
        )
    return case


def _box(case: dict):
    _, c = case["shape"][:2]
    ch = torch.linspace(0.0, 0.3, c, dtype=F64).view(1, c, 1, 1)
    return {
        "unit": (0.0, 1.0),
        "none": (-math.inf, math.inf),
        "lo_tensor": (ch, 1.0),
        "hi_tensor": (0.0, 0.7 + ch),
        "both_tensors": (ch - 0.1, ch + 0.8),
    }[case["box"]]


def pgd_inputs(case: dict):
    dtype, shape = case["dtype"], case["shape"]
    x_nat = make(shape, case["x_nat"], dtype)
    noise = make(shape, case["x_adv"], F64)
    x_adv = with_layout((x_nat.double() + 0.05 * noise).to(dtype), case["x_adv"]["layout"])
    grad = make(shape, case["grad"], dtype)
    eps, alpha = case["eps"][1], case["alpha"][1]
    lo, hi = _box(case)
    return x_adv, grad, x_nat, eps, alpha, lo, hi


def pgd_oracle(x_adv, g, x, eps, alpha, lo, hi, norm: str) -> torch.Tensor:
    """The update in float64 from the (rounded) inputs: torchattacks' PGD / PGDL2 formulas."""
    xa, g, x = (t.detach().double() for t in (x_adv, g, x))
    eps, alpha, lo, hi = (
        v.double() if isinstance(v, torch.Tensor) else v for v in (eps, alpha, lo, hi)
    )
    if norm == "Linf":
        delta = torch.clamp(xa + alpha * g.sign() - x, min=-eps, max=eps)
    else:
        n = x.shape[0]
        gn = torch.linalg.vector_norm(g.flatten(1), dim=1).view(n, 1, 1, 1)
        delta = xa + alpha * g / (gn + 1e-10) - x
        dn = torch.linalg.vector_norm(delta.flatten(1), dim=1).view(n, 1, 1, 1)
        eps_t = torch.as_tensor(eps, dtype=F64).reshape(-1, 1, 1, 1)
        factor = torch.where(
            dn == 0, torch.ones_like(dn), torch.minimum(eps_t / dn, torch.ones_like(dn))
        )
        delta = delta * factor
    return torch.clamp(torch.clamp(x + delta, min=lo), max=hi)


def check_pgd(case: dict, backend: str) -> None:
    x_adv, grad, x_nat, eps, alpha, lo, hi = pgd_inputs(case)
    dtype, norm = case["dtype"], case["norm"]
    what = f"pgd_step {backend} {norm}/{tuple(x_adv.shape)}/{dtype}/{case}"
    expected = pgd_oracle(x_adv, grad, x_nat, eps, alpha, lo, hi, norm)
    ref_in = x_adv.clone()
    out = wavefuse.pgd_step(x_adv, grad, x_nat, eps, alpha, norm, lo, hi, backend=backend)
    assert out is x_adv
    assert_close(out, expected, TOL[dtype], what)
    if backend != "reference" and dtype != F64:
        # The reference is torchattacks' update op for op. A kernel's Linf update is elementwise:
        # the same bits in float32 (and so after the one rounding of the half types); its L2
        # norms are sums in its own order: a few ulps (as tests/test_pgd_step.py; the fuzzer
        # found 1-ulp cases). float64 is not promised bits at all.
        ref = wavefuse.pgd_step(ref_in, grad, x_nat, eps, alpha, norm, lo, hi, backend="reference")
        if norm == "Linf":
            assert torch.equal(out, ref), f"{what}: differs from the reference (Linf: bits)"
        else:
            assert_close(out, ref, 4 * torch.finfo(dtype).eps, f"{what}: vs the reference")


@pytest.mark.parametrize("backend", _backends("pgd_step"))
def test_pgd_step_fuzz(backend):
    run_cases(pgd_cases(), lambda case: check_pgd(case, backend))


def filtered_grad_oracle(g: np.ndarray, wave, mode: str, level: int, scales) -> np.ndarray:
    """idwt(scale_hf(dwt(g))) cropped to g's size, with pywt."""
    if level == 0 or all(s == 1.0 for s in scales):
        return g
    name = wave_name(wave)
    coeffs = pywt.wavedec2(g, name, mode, level)
    scaled = [coeffs[0]] + [
        tuple(b * scales[level - 1 - k] for b in d) for k, d in enumerate(coeffs[1:])
    ]
    return pywt.waverec2(scaled, name, mode)[..., : g.shape[-2], : g.shape[-1]]


def check_wavelet_pgd(case: dict, backend: str) -> None:
    x_adv, grad, x_nat, eps, alpha, lo, hi = pgd_inputs(case)
    dtype, norm, wave, mode = case["dtype"], case["norm"], case["wave"], case["mode"]
    name = wave_name(wave)
    what = f"wavelet_pgd_step {backend} {tuple(x_adv.shape)}/{dtype}/{case}"
    gn = np64(grad)
    levels, _ = pywt_or_error(lambda: pywt.wavedec2(gn, name, mode, case["level"]))
    if isinstance(levels, ValueError):
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wavefuse.wavelet_pgd_step(
                x_adv,
                grad,
                x_nat,
                eps,
                alpha,
                wave,
                case["level"],
                mode,
                case["hf_scale"],
                norm,
                lo,
                hi,
                backend=backend,
            )
        return REFUSED
    level = len(levels) - 1
    event(f"levels: {level}")
    scales = case["hf_scale"] if isinstance(case["hf_scale"], list) else [case["hf_scale"]] * level
    g_f = torch.from_numpy(
        np.ascontiguousarray(filtered_grad_oracle(gn, wave, mode, level, scales))
    )
    expected = pgd_oracle(x_adv, g_f, x_nat, eps, alpha, lo, hi, norm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = wavefuse.wavelet_pgd_step(
            x_adv,
            grad,
            x_nat,
            eps,
            alpha,
            wave,
            case["level"],
            mode,
            case["hf_scale"],
            norm,
            lo,
            hi,
            backend=backend,
        )
    assert out is x_adv
    if norm == "Linf" and level > 0 and any(s != 1.0 for s in scales):
        # sign(g') of a filtered entry that is zero in exact arithmetic is a rounding accident:
        # leave those entries out (at most a few per case).
        cdtype = F64 if dtype == F64 else torch.float32
        top = g_f.abs().max().item()
        near_zero = g_f.abs() <= 1e3 * torch.finfo(cdtype).eps * top
        if not top > 0:  # a zero g' (exact: compare it all) or a NaN in it (NaN max: as before)
            near_zero = torch.zeros_like(near_zero)
        keep = ~near_zero
        assert_close(out.double()[keep], expected[keep], TOL[dtype], what)
    else:
        assert_close(out, expected, TOL[dtype], what)


@pytest.mark.parametrize("backend", _backends("wavelet_pgd_step"))
def test_wavelet_pgd_step_fuzz(backend):
    run_cases(pgd_cases(wavelet=True), lambda case: check_wavelet_pgd(case, backend))


# ---- wavelet_pool2d -----------------------------------------------------------------------------------


@st.composite
def pool_cases(draw):
    h, w = draw(sides())
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    bands = draw(sampled_from(("all", "ll", "shared", "per_channel")))
    count = {"shared": 4, "per_channel": 4 * c}.get(bands, 0)
    return {
        "shape": (n, c, h, w),
        "wave": draw(wavelets()),
        "mode": draw(sampled_from(ALL_MODES)),
        "dtype": draw(sampled_from(DTYPES)),
        "x": draw(tensor_spec()),
        "bands": bands,
        "weights": draw(st.lists(WEIGHTS, min_size=count, max_size=count)),
        "grad_seed": draw(st.integers(0, 2**31 - 1)),
    }


def check_pool(case: dict, backend: str) -> None:
    dtype, wave, mode = case["dtype"], case["wave"], case["mode"]
    c = case["shape"][1]
    x = make(case["shape"], case["x"], dtype).requires_grad_()
    what = f"wavelet_pool2d {backend} {wave_name(wave)}/{mode}/{tuple(x.shape)}/{dtype}/{case['bands']}/{case['x']}"
    if case["bands"] in ("all", "ll"):
        bands, w_np = (
            case["bands"],
            np.array([[0.25] * 4] if case["bands"] == "all" else [[1.0, 0, 0, 0]]),
        )
    else:
        w_np = np.array(case["weights"]).reshape(-1, 4)
        bands = torch.tensor(
            w_np if case["bands"] == "per_channel" else w_np[0], dtype=F64, requires_grad=True
        )
    expected, _ = pywt_or_error(lambda: pywt.dwt2(np64(x), wave_name(wave), mode))
    if isinstance(expected, ValueError):
        with pytest.raises(ValueError):
            wavelet_pool2d(x, wave, mode, bands, backend=backend)
        return REFUSED
    all_bands = (expected[0], *expected[1])
    bound = pywt.dwt2(np.abs(np64(x)), abs_wavelet(wave_name(wave)), mode)
    all_bounds = (bound[0], *bound[1])
    w_c = np.broadcast_to(w_np, (c, 4))
    y_expected = sum(w_c[None, :, b, None, None] * all_bands[b] for b in range(4))
    y_bound = sum(np.abs(w_c[None, :, b, None, None]) * all_bounds[b] for b in range(4))
    y = wavelet_pool2d(x, wave, mode, bands, backend=backend)
    assert tuple(y.shape) == y_expected.shape, f"{what}: shape {tuple(y.shape)}"
    assert_bounded(y, y_expected, y_bound, TOL[dtype], what)
    expect_layout(y, x, what)
    gen = torch.Generator().manual_seed(case["grad_seed"])
    gy = torch.randn(y.shape, generator=gen, dtype=F64).to(dtype)
    leaves = [x] + ([bands] if isinstance(bands, torch.Tensor) else [])
    grads = torch.autograd.grad(y, leaves, gy)
    gy_np = np64(gy)
    h, w, absw = x.shape[-2], x.shape[-1], abs_wavelet(wave_name(wave))
    mats_h, mats_w = analysis_1d(h, wave, mode), analysis_1d(w, wave, mode)
    abs_h, abs_w = analysis_1d(h, absw, mode), analysis_1d(w, absw, mode)
    expected_gx = sum(
        w_c[None, :, b, None, None] * (mats_h[fh].T @ gy_np @ mats_w[fw])
        for b, (fh, fw) in enumerate(BAND_FILTERS)
    )
    gx_bound = sum(
        np.abs(w_c[None, :, b, None, None]) * (abs_h[fh].T @ np.abs(gy_np) @ abs_w[fw])
        for b, (fh, fw) in enumerate(BAND_FILTERS)
    )
    assert_bounded(grads[0], expected_gx, gx_bound, TOL[dtype], f"{what} grad x")
    if isinstance(bands, torch.Tensor):  # d/dw_b = per-channel sum of band_b * grad
        per_channel = np.stack(
            [(all_bands[b] * gy_np).sum(axis=(0, 2, 3)) for b in range(4)], axis=1
        )
        per_channel_bound = np.stack(
            [(all_bounds[b] * np.abs(gy_np)).sum(axis=(0, 2, 3)) for b in range(4)], axis=1
        )
        expected_gw, gw_bound = (
            (per_channel, per_channel_bound)
            if bands.dim() == 2
            else (per_channel.sum(0), per_channel_bound.sum(0))
        )
        cdtype = F64 if dtype == F64 else torch.float32
        assert_bounded(grads[1], expected_gw, gw_bound, TOL[cdtype], f"{what} grad bands")


@pytest.mark.parametrize("backend", _backends("wavelet_pool2d"))
def test_wavelet_pool2d_fuzz(backend):
    run_cases(pool_cases(), lambda case: check_pool(case, backend))


# ---- Triton (interpreter): small planes, every kernel path -----------------------------------------


@pytest.fixture
def no_overflow_sanitizer():
    """Triton's interpreter checks every int32 add, sub and mul of a kernel for overflow
    (``InterpreterOptions.sanitize_overflow``, on by default): a third of a launch here. The fuzz
    planes are at most 131 samples a side and 9 planes, so no index a kernel computes comes near
    2^31, and the check is off for the Triton fuzz tests only; every other Triton test runs with it
    (int64 offsets: tests/test_triton.py::test_int64_offsets and the gpu+slow tests)."""
    import dataclasses

    try:
        from triton.runtime import interpreter
    except ImportError:  # no Triton: the tests skip
        yield
        return
    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if not dataclasses.is_dataclass(options) or not hasattr(options, "sanitize_overflow"):
        yield  # another Triton: run as it comes
        return
    builder.options = dataclasses.replace(options, sanitize_overflow=False)
    try:
        yield
    finally:
        builder.options = options


# The kernels' path switches (module constants of wavefuse.kernels.dwt, as tests/test_triton.py).
TRITON_PATHS = {
    "dense": {},
    "general": {
        "_DENSE_MAX_FULL": 0,
        "_BLOCK_ELEMENTS": 2**16,
        "_MAX_TILE_OUTPUTS": 2**12,
        "_MAX_TILE_W": 64,
    },
    "tiled": {
        "_DENSE_MAX_FULL": 0,
        "_MAX_TILE_OUTPUTS": 32,
        "_MAX_TILE_W": 8,
        "_DENSE_MAX_TILE": 16,
    },
}


@contextlib.contextmanager
def triton_path(path: str):
    from wavefuse.kernels import dwt as kernels

    with pytest.MonkeyPatch.context() as mp:
        for name, value in TRITON_PATHS[path].items():
            assert hasattr(kernels, name), name
            mp.setattr(kernels, name, value)
        yield


needs_triton = pytest.mark.skipif(
    backends.why_not("triton", "dwt2d", "cpu") is not None
    or backends.why_not("triton", "idwt2d", "cpu") is not None,
    reason=str(
        backends.why_not("triton", "dwt2d", "cpu") or backends.why_not("triton", "idwt2d", "cpu")
    ),
)
# Five sixths of the cases on the dense path (what planes of at most 64 take by default), the rest
# forced onto the two tiled variants of the general path, where a case costs 2-6 times as much.
PATHS = ("dense",) * 10 + ("general", "tiled")


def _on_path(check):
    def run(case):
        with triton_path(case["path"]):
            check(case, "triton")

    return run


@needs_triton
@pytest.mark.slow(seconds=110)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_dwt2_fuzz_triton():
    run_cases(
        dwt2_cases(max_side=32, max_planes=2, paths=PATHS), _on_path(check_dwt2), TRITON_EXAMPLES
    )


@needs_triton
@pytest.mark.slow(seconds=130)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_idwt2_fuzz_triton():
    run_cases(
        idwt2_cases(max_side=24, max_planes=2, paths=PATHS), _on_path(check_idwt2), TRITON_EXAMPLES
    )


@needs_triton
@pytest.mark.slow(seconds=130)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_wavedec2_waverec2_fuzz_triton():
    cases = multilevel_cases(max_side=32, max_planes=1, paths=PATHS, max_level=2)
    run_cases(cases, _on_path(check_multilevel), TRITON_EXAMPLES)


# The fused ops under the interpreter: band_energy / hf_penalty run the transforms' tile code (and
# so take the same forced paths), wavelet_pgd_step the fused Haar kernel, the separable kernel or
# (forced) the Triton transforms, pgd_step is elementwise (no paths, full-size planes). Counts:
# the profile's 1,000 for pgd_step, WAVEFUSE_FUZZ_TRITON_FUSED_EXAMPLES (default: the same) for
# the two wavelet ops.
needs_triton_fused = pytest.mark.skipif(
    any(backends.why_not("triton", op, "cpu") for op in ("hf_penalty", "wavelet_pgd_step")),
    reason=str(
        backends.why_not("triton", "hf_penalty", "cpu")
        or backends.why_not("triton", "wavelet_pgd_step", "cpu")
    ),
)


# A third of the band-energy cases on the one-launch cascade (one program per plane, every level),
# the rest level by level -- the cascade only for filters of at most 8 taps on planes at least that
# long on each side: as the tiled paths above (which the cascade's tiles are), its gathers loop
# over every wrap of the boundary extension, up to minutes per case under the interpreter.
ENERGY_ROUTES = ("levels", "levels", "cascade")


def _on_route(check):
    def run(case):
        from wavefuse.ops import separable

        wave = case["wave"]
        taps = (wave if isinstance(wave, pywt.Wavelet) else pywt.Wavelet(wave)).dec_len
        cascade = case["route"] == "cascade" and taps <= min(8, *case["shape"][-2:])
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(separable, "CASCADE_PLANES_PER_SM", 0 if cascade else 2**40)
            check(case)

    return run


@needs_triton_fused
@pytest.mark.slow(seconds=300)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_band_energy_hf_penalty_fuzz_triton():
    cases = energy_cases(max_side=24, max_planes=2, paths=PATHS, max_level=2, routes=ENERGY_ROUTES)
    run_cases(cases, _on_route(_on_path(check_energy)), TRITON_FUSED_EXAMPLES)


@needs_triton_fused
@pytest.mark.slow(seconds=40)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_pgd_step_fuzz_triton():
    run_cases(pgd_cases(), lambda case: check_pgd(case, "triton"))


def _on_wavelet_step_path(check):
    """The "dense" five sixths of the cases take what these planes take by default (the fused
    Haar kernel or, for other wavelets, the separable one-plane kernel); the rest turn the
    separable kernel off (_SEPARABLE_MAX_SIDE 0) on the two tiled variants of the general path:
    other wavelets then take the approximation chain (their banks have perfect reconstruction)
    -- in one cascade launch on "general"; on "tiled", in pairs of stages (tiles of at least 2
    outputs: several per level) for an even width and level by level for an odd one -- or, for
    an odd batch, the per-level transforms (perfect_reconstruction answering False, as for a bank
    without it). Haar keeps its fused kernel."""

    def run(case):
        from wavefuse.kernels import pgd_step as kernels

        from wavefuse.ops import separable

        with triton_path(case["path"]), pytest.MonkeyPatch.context() as mp:
            if case["path"] != "dense":
                mp.setattr(kernels, "_SEPARABLE_MAX_SIDE", 0)
                if case["path"] == "tiled":  # the chain in pairs or level by level
                    mp.setattr(kernels, "_CASCADE_MAX_DEPTH", 0)
                    mp.setattr(kernels, "_PAIR_MIN_TILE", 2)
                    mp.setattr(kernels, "_PAIR_ROUTE", case["shape"][-1] % 2 == 0)
                if case["shape"][0] % 2:
                    mp.setattr(separable, "perfect_reconstruction", lambda *args: False)
            check(case, "triton")

    return run


@needs_triton_fused
@pytest.mark.slow(seconds=85)  # on 2 cores; conftest runs the longest first
@pytest.mark.usefixtures("no_overflow_sanitizer")
def test_wavelet_pgd_step_fuzz_triton():
    cases = pgd_cases(wavelet=True, max_side=24, max_planes=2, paths=PATHS)
    run_cases(cases, _on_wavelet_step_path(check_wavelet_pgd), TRITON_FUSED_EXAMPLES)
