"""The fused Triton kernels (wavefuse.kernels.hf_penalty, wavefuse.kernels.pgd_step) against the
reference backend: band_energy, hf_penalty (values and gradients), pgd_step, wavelet_pgd_step.

On CPU-only CI they run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1),
which costs tens of milliseconds per program, so every case is one or two planes: every mode x
haar/db2/db4/sym5 with levels 1-3 (a level that grows, odd sizes), one db20 case, the kernels'
paths (dense, general, tiled; int64 offsets), float64/float32/bfloat16, contiguous and
channels_last, gradcheck, opcheck. The whole file takes about a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import (
    ALL_MODES,
    TOL,
    assert_chain_non_finite_policy,
    assert_close,
    assert_linf_wavelet_step,
    assert_step_close,
    count_launches,
)

import wavefuse
from wavefuse import backends
from wavefuse.filters import filter_bank
from wavefuse.ops import pgd_step as pgd_step_ops
from wavefuse.ops.pgd_step import prepare_bounds

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
OPS = torch.ops.wavefuse


def _needs(*ops: str):
    reason = next((r for op in ops if (r := backends.why_not("triton", op, DEVICE.type))), None)
    return pytest.mark.skipif(reason is not None, reason=f"backend='triton' is not live: {reason}")


needs_penalty = _needs("band_energy", "hf_penalty")
needs_step = _needs("pgd_step")
needs_wavelet_step = _needs("wavelet_pgd_step", "dwt2d", "idwt2d")

# Levels above dwt_max_level are used on purpose (they warn, as PyWavelets does).
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")

# The block-size switches of kernels/dwt.py, which the band-energy kernel shares (see test_triton).
PATHS = {
    "general": {
        "_DENSE_MAX_FULL": 0,
        "_BLOCK_ELEMENTS": 2**16,
        "_MAX_TILE_OUTPUTS": 2**12,
        "_MAX_TILE_W": 64,
    },
    "tiled": {"_DENSE_MAX_FULL": 0, "_MAX_TILE_OUTPUTS": 32, "_MAX_TILE_W": 8},
}


def _use_path(monkeypatch, path: str) -> None:
    from wavefuse.kernels import dwt

    for name, value in PATHS[path].items():
        assert hasattr(dwt, name), name
        monkeypatch.setattr(dwt, name, value)


def _randn(*shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).to(dtype).to(DEVICE)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---- band_energy and hf_penalty ------------------------------------------------------------------


def _check_penalty(x, wave, mode, level, ps=(1, 2), grad_p=2, weights=None):
    """Energies (each p in ps) and the gradient of the weighted sum (p = grad_p) on Triton
    against the reference in float64 from the same (rounded) input."""
    dtype = x.dtype
    tol = TOL[dtype]
    what = f"{wave}/{mode}/level {level}/{tuple(x.shape)}/{dtype}"
    xd = x.double()
    for p in ps:
        got = _quiet(wavefuse.band_energy, x, wave, level, mode, p, backend="triton")
        expected = _quiet(wavefuse.band_energy, xd, wave, level, mode, p, backend="reference")
        assert got.shape == (x.shape[0], level, 3)
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(got, expected, tol, f"energies p={p} {what}")
    if grad_p is None:
        return
    w = torch.rand(level, 3, dtype=torch.float64) if weights is None else weights
    xs = x.clone().requires_grad_()
    value = _quiet(wavefuse.hf_penalty, xs, wave, level, mode, grad_p, w, "sum", backend="triton")
    (got,) = torch.autograd.grad(value, xs)
    xr = xd.clone().requires_grad_()
    ref = _quiet(wavefuse.hf_penalty, xr, wave, level, mode, grad_p, w, "sum", backend="reference")
    (expected,) = torch.autograd.grad(ref, xr)
    assert got.dtype == dtype and got.stride() == x.stride(), what
    assert_close(got, expected, tol, f"gradient p={grad_p} {what}")


def _penalty_route(monkeypatch, route: str) -> None:
    """Routes of band_energy and its backward: "levels", one launch per level (two per level
    backward); "cascade", every level of a plane in one program (separable.cascade_fits, which
    CPU tensors meet with 2 planes by default)."""
    from wavefuse.ops import separable

    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0 if route == "cascade" else 2**40)


ROUTES = ("levels", "cascade")


# Per wavelet: (size, level). 9 x 8 is odd x even; sym5 (10 taps) on 5 x 7 grows at every level
# in the non-periodization modes (5 -> 7 -> 8 -> 8).
CASES = {"haar": ((9, 8), 3), "db2": ((9, 8), 2), "db4": ((9, 8), 1), "sym5": ((5, 7), 3)}


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", list(CASES))
def test_band_energy_and_gradient_every_mode_and_wavelet(monkeypatch, wave, mode, route):
    _penalty_route(monkeypatch, route)
    size, level = CASES[wave]
    grad_p = 1 if ALL_MODES.index(mode) % 2 else 2
    _check_penalty(_randn(1, 1, *size), wave, mode, level, grad_p=grad_p)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_band_energy_db20_on_a_signal_shorter_than_the_filter(monkeypatch, route):
    """40 taps on a 2 x 3 plane: the boundary extension wraps many times. The cascade's gradient
    is left out here: its merge is the general (sparse) gather, which loops over every wrap (two
    minutes under the interpreter for this one plane); the level route's small planes take the
    dense merge. The cascade's backward wraps in test_levels_that_grow_from_one_sample."""
    _penalty_route(monkeypatch, route)
    grad_p = 1 if route == "levels" else None
    _check_penalty(_randn(1, 1, 2, 3), "db20", "symmetric", 1, ps=(2,), grad_p=grad_p)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode", ["symmetric", "periodic"])
def test_levels_that_grow_from_one_sample(monkeypatch, mode, route):
    """1 x 1 with db4 grows to 4 x 4, 5 x 5, 6 x 6 over three levels (every buffer is sized per
    level; the cascade's band buffer by the largest level, not the first)."""
    _penalty_route(monkeypatch, route)
    _check_penalty(_randn(1, 1, 1, 1), "db4", mode, 3, ps=(2,))


@needs_penalty
@pytest.mark.parametrize(
    "path, wave, mode, level, size",
    [("general", "db2", "reflect", 2, (1, 13, 10)), ("tiled", "haar", "zero", 2, (2, 9, 17))],
)
def test_general_and_tiled_paths(path, wave, mode, level, size, monkeypatch):
    """The large-plane path (one tile per plane), and many small 4 x 8 tiles per plane over two
    channels and two levels with different tile counts (partials rows of unequal length); level
    by level (the cascade's tiles: test_band_energy_cascade_tiles)."""
    _penalty_route(monkeypatch, "levels")
    _use_path(monkeypatch, path)
    x = _randn(1, *size)
    _check_penalty(x, wave, mode, level, ps=(1,) if path == "tiled" else (1, 2), grad_p=2)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_penalty_dtypes_and_layouts(monkeypatch, dtype, layout, route):
    """Half types accumulate in float32 (energies in float32); grad_x in x's dtype and layout."""
    _penalty_route(monkeypatch, route)
    x = _randn(1, 2, 9, 8, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    _check_penalty(x, "db2", "symmetric", 2, ps=(2,), grad_p=1)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_int64_offsets(monkeypatch, route):
    """Planes of 2**31 elements do not fit a test; lowering the limit takes the same code. The
    cascade's offsets inside a plane's scratch stay int32 (under that limit it would go level by
    level), so there the kernels are told to use int64 offsets for x and grad_x directly."""
    _penalty_route(monkeypatch, route)
    if route == "cascade":
        counts = _penalty_counts(monkeypatch)
        monkeypatch.setattr("wavefuse.kernels.dwt._needs_int64", lambda *tensors: True)
    else:
        monkeypatch.setattr("wavefuse.kernels.dwt._INT32_LIMIT", 0)
    x = _randn(1, 2, 7, 6).contiguous(memory_format=torch.channels_last)
    _check_penalty(x, "db2", "periodization", 2, ps=(2,), grad_p=2)
    if route == "cascade":
        launched = _launches(counts)
        assert launched["_band_cascade_kernel"] == 2 and launched["_band_backward_cascade_kernel"]


@needs_penalty
@pytest.mark.parametrize(
    "reduction, weights, p",
    [("none", None, 1), ("sum", [0.5, 2.0], 2), ("mean", [[1.0, 2.0, 3.0], [0.1, 0.0, 4.0]], 1)],
    ids=["none-unweighted", "sum-per-level", "mean-per-band"],
)
def test_hf_penalty_reductions_and_weights(reduction, weights, p):
    """Values and gradients (a random cotangent for "none") for three samples."""
    x = _randn(3, 1, 7, 6)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    args = ("db2", 2, "zero", p, weights, reduction)
    got = wavefuse.hf_penalty(xs, *args, backend="triton")
    expected = wavefuse.hf_penalty(xr, *args, backend="reference")
    assert got.shape == expected.shape
    assert_close(got, expected, 1e-12, f"penalty p={p}")
    cot = torch.rand_like(got)
    (g,) = torch.autograd.grad(got, xs, cot)
    (g_ref,) = torch.autograd.grad(expected, xr, cot)
    assert_close(g, g_ref, 1e-12, f"gradient p={p}")


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_p1_subgradient_is_zero_at_zero_coefficients(monkeypatch, route):
    """p=1: the gradient of |d| is sign(d), 0 where d is exactly 0 (band_energy's contract). A
    zero region gives exactly zero coefficients on every backend (0 times any tap is 0), so the
    Triton gradient is the reference's there: no contribution from those coefficients."""
    _penalty_route(monkeypatch, route)
    x = _randn(2, 2, 12, 10)
    x[:, :, :8, :8] = 0.0
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    args = ("haar", 2, "periodization", 1, None, "sum")
    (got,) = torch.autograd.grad(wavefuse.hf_penalty(xs, *args, backend="triton"), xs)
    (expected,) = torch.autograd.grad(wavefuse.hf_penalty(xr, *args, backend="reference"), xr)
    assert (expected[:, :, :4, :4] == 0).all()  # the oracle: no subgradient at d = 0
    assert_close(got, expected, 1e-12, "p=1 at zero coefficients")


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mode, p", [("zero", 2), ("reflect", 1)])
def test_gradcheck(monkeypatch, mode, p, route):
    """float64 gradcheck of the penalty (fast mode: random projections of the Jacobian)."""
    _penalty_route(monkeypatch, route)
    x = _randn(1, 2, 5, 4).requires_grad_()
    w = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.0, 1.5]], dtype=torch.float64)

    def penalty(t):
        return _quiet(wavefuse.hf_penalty, t, "db2", 2, mode, p, w, "none", backend="triton")

    assert torch.autograd.gradcheck(penalty, (x,), fast_mode=True)


@needs_penalty
def test_gradgradcheck():
    """Double backward runs the Triton backward kernel again (p = 2: linear in x) and the band
    products, built from the Triton dwt2d."""
    x = _randn(1, 1, 4, 6).requires_grad_()

    def penalty(t):
        return wavefuse.hf_penalty(t, "haar", 1, "symmetric", 2, None, "none", backend="triton")

    assert torch.autograd.gradgradcheck(penalty, (x,), fast_mode=True)


@needs_penalty
def test_opcheck_penalty_ops():
    x = _randn(1, 2, 4, 3).contiguous(memory_format=torch.channels_last).requires_grad_()
    filters = filter_bank("haar", "dec", torch.float64, DEVICE)
    grad = torch.rand(1, 1, 3, dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(OPS.band_energy.default, (x, filters, "symmetric", 1, 2, "triton"))
    torch.library.opcheck(
        OPS.band_energy_backward.default, (grad, x.detach(), filters, "zero", 1, 1, "triton")
    )
    w = torch.rand(1, 3, dtype=torch.float64, device=DEVICE)
    args = (x, filters, "periodization", 1, 2, w, "mean", "triton")
    torch.library.opcheck(OPS.hf_penalty.default, args)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_energies_are_deterministic_and_empty_inputs_work(monkeypatch, route):
    _penalty_route(monkeypatch, route)
    x = _randn(2, 3, 10, 9)
    first = wavefuse.band_energy(x, "db2", 2, "reflect", 2, backend="triton")
    assert torch.equal(first, wavefuse.band_energy(x, "db2", 2, "reflect", 2, backend="triton"))
    empty = _randn(0, 3, 8, 8).requires_grad_()
    assert wavefuse.band_energy(empty, "db2", 2, backend="triton").shape == (0, 2, 3)
    pen = wavefuse.hf_penalty(empty, "db2", 2, reduction="none", backend="triton")
    (g,) = torch.autograd.grad(pen.sum(), empty)
    assert pen.shape == (0,) and g.shape == empty.shape
    level0 = wavefuse.hf_penalty(x.requires_grad_(), "haar", 0, reduction="sum", backend="triton")
    (g,) = torch.autograd.grad(level0, x)
    assert level0.item() == 0 and torch.equal(g, torch.zeros_like(g))


def _penalty_counts(monkeypatch) -> dict:
    from wavefuse.kernels import dwt, hf_penalty

    counts = count_launches(
        monkeypatch, hf_penalty, "_band_level_kernel", "_reduce_rows_kernel",
        "_band_cascade_kernel", "_band_backward_cascade_kernel",
    )  # fmt: skip
    counts.update(count_launches(monkeypatch, dwt, "_dwt2d_adjoint_kernel"))
    return counts


def _energy_and_gradient(x, wave, level, mode, p, backend="triton"):
    """(energies, grad_x of their sum with fixed weights) on the backend (Triton by default)."""
    xs = x.clone().requires_grad_()
    e = _quiet(wavefuse.band_energy, xs, wave, level, mode, p, backend=backend)
    w = torch.arange(1.0, 1.0 + 3 * level, dtype=e.dtype, device=e.device).reshape(level, 3)
    (g,) = torch.autograd.grad((e * w).sum(), xs)
    return e.detach(), g


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_band_energy_launches(monkeypatch, route):
    """The cascade: energies in two launches (``_band_cascade_kernel``, then the row sum over
    the channels), grad_x in one (``_band_backward_cascade_kernel``), for every level count;
    level by level: one per level forward (and the row sum), two per level backward."""
    _penalty_route(monkeypatch, route)
    counts = _penalty_counts(monkeypatch)
    x = _randn(2, 2, 13, 11)
    for level in (1, 3):
        for counter in counts.values():
            counter.launches = 0
        _energy_and_gradient(x, "db2", level, "symmetric", 2)
        if route == "cascade":
            expected = {
                "_band_cascade_kernel": 1, "_reduce_rows_kernel": 1,
                "_band_backward_cascade_kernel": 1,
            }  # fmt: skip
        else:
            expected = {
                "_band_level_kernel": 2 * level, "_reduce_rows_kernel": 1,
                "_dwt2d_adjoint_kernel": level,
            }  # fmt: skip
        assert _launches(counts) == expected, (route, level)


@needs_penalty
@pytest.mark.parametrize("mode", ["zero", "periodization"])
def test_band_energy_cascade_tiles(monkeypatch, mode):
    """The cascade on tiles of at most 8 columns and 32 outputs: a program loops over several
    row and column tiles at every level (19 x 37 over three levels, two channels, p = 1 and 2),
    against the reference. sym5's 10 taps: the energies only (its gradient here costs a minute
    under the interpreter, in the sparse merge's wraps; p = 1 gradients on the cascade:
    test_band_energy_and_gradient_every_mode_and_wavelet)."""
    _penalty_route(monkeypatch, "cascade")
    _use_path(monkeypatch, "tiled")
    x = _randn(2, 2, 19, 37)
    _check_penalty(x, "db2", mode, 3, ps=(1, 2), grad_p=2)
    _check_penalty(x, "sym5", mode, 2, ps=(2,), grad_p=None)


@needs_penalty
def test_band_energy_cascade_or_levels(monkeypatch):
    """separable.cascade_fits decides: at least CASCADE_PLANES_PER_SM planes per SM (CPU tensors:
    one "SM"), none over CASCADE_MAX_PLANE samples; both routes give the reference's values."""
    from wavefuse.ops import separable

    counts = _penalty_counts(monkeypatch)
    x = _randn(2, 3, 11, 9)
    settings = [  # (planes per SM, max plane) -> route
        ((6, 11 * 9), "cascade"),
        ((7, 11 * 9), "levels"),
        ((6, 11 * 9 - 1), "levels"),
        ((2, 512 * 512), "cascade"),  # the defaults' numbers
    ]
    reference = _quiet(wavefuse.band_energy, x, "db2", 2, "reflect", 2, backend="reference")
    for (per_sm, plane), route in settings:
        monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", per_sm)
        monkeypatch.setattr(separable, "CASCADE_MAX_PLANE", plane)
        for counter in counts.values():
            counter.launches = 0
        got = _quiet(wavefuse.band_energy, x, "db2", 2, "reflect", 2, backend="triton")
        cascade = _launches(counts).get("_band_cascade_kernel", 0)
        assert cascade == (route == "cascade"), (per_sm, plane)
        assert_close(got, reference, 1e-12, route)


@needs_penalty
@pytest.mark.parametrize("route", ROUTES)
def test_band_energy_non_finite_stays_in_its_sample(monkeypatch, route):
    """A NaN in sample 1 makes its energies and its gradient NaN (at least at the poisoned
    element), never sample 0's or 2's (docs/edge_policies.md), on both routes."""
    _penalty_route(monkeypatch, route)
    x = _randn(3, 2, 12, 11)
    x[1, 1, 5, 6] = math.nan
    e, g = _energy_and_gradient(x, "db2", 2, "symmetric", 2)
    assert e[1].isnan().any() and e[0].isfinite().all() and e[2].isfinite().all()
    assert g[1, 1, 5, 6].isnan() and g[0].isfinite().all() and g[2].isfinite().all()


@contextlib.contextmanager
def _barrier_checker():
    """Under the interpreter, records every masked load of an address that the same program
    stored to since its last barrier (tl.debug_barrier): a read-after-write that, on a GPU, may
    read what another thread of the block has not written yet. The interpreter runs each program
    in order and treats a barrier as a no-op, so without this a dropped barrier passes every test.
    Yields the list of (kernel program, number of such addresses)."""
    from triton.runtime import interpreter

    builder = getattr(interpreter, "InterpreterBuilder", None)
    hooks = ("create_masked_load", "create_masked_store", "create_barrier")
    if builder is None or not all(hasattr(builder, name) for name in hooks):
        pytest.skip("this Triton's interpreter has none of the hooks the barrier check patches")
    load, store, barrier = (getattr(builder, name) for name in hooks)
    hits, dirty, current = [], set(), [None]

    def addresses(self, ptrs, mask):
        program = tuple(getattr(self, "grid_idx", None) or ())
        if program != current[0]:
            current[0] = program
            dirty.clear()
        if np.ndim(ptrs.data) == 0:
            return program, {int(ptrs.data)} if mask is None or bool(mask.data) else set()
        live = np.ones(ptrs.data.shape, bool) if mask is None else mask.data.astype(bool)
        return program, set(ptrs.data[np.broadcast_to(live, ptrs.data.shape)].ravel().tolist())

    def checked_load(self, ptrs, mask, *args, **kwargs):
        program, seen = addresses(self, ptrs, mask)
        if seen & dirty:
            hits.append((program, len(seen & dirty)))
        return load(self, ptrs, mask, *args, **kwargs)

    def checked_store(self, ptrs, value, mask, *args, **kwargs):
        dirty.update(addresses(self, ptrs, mask)[1])
        return store(self, ptrs, value, mask, *args, **kwargs)

    def checked_barrier(self, *args, **kwargs):
        dirty.clear()
        return barrier(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builder, "create_masked_load", checked_load)
        mp.setattr(builder, "create_masked_store", checked_store)
        mp.setattr(builder, "create_barrier", checked_barrier)
        yield hits


@needs_penalty
@pytest.mark.skipif(DEVICE.type != "cpu", reason="checks the interpreter's record of a run")
@pytest.mark.parametrize("mode", ["periodization", "symmetric"])
def test_cascades_read_nothing_written_since_the_last_barrier(monkeypatch, mode):
    """Every one-launch cascade (the band energies, their backward, the wavelet step's chain),
    three levels and several tiles per level: no program loads what it stored since its last
    barrier. A barrier dropped between two levels fails this (seen: the backward's analyses
    without their barriers)."""
    from wavefuse.kernels import pgd_step

    from wavefuse.ops import separable

    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0)
    monkeypatch.setattr(pgd_step, "_SEPARABLE_MAX_SIDE", 0)
    _use_path(monkeypatch, "tiled")
    counts = _penalty_counts(monkeypatch)
    counts.update(count_launches(monkeypatch, pgd_step, "_cascade_kernel"))
    x = _randn(1, 2, 19, 14)
    x_adv, g, x_nat = _step_inputs(shape=(1, 2, 19, 14), dtype=torch.float64)
    with _barrier_checker() as hits:
        _energy_and_gradient(x, "db2", 3, mode, 2)
        assert not hits, f"band energies: {hits[:3]}"
        wavefuse.wavelet_pgd_step(x_adv, g, x_nat, 0.03, 0.01, "db2", 3, mode, [0.0, 0.5, 0.25],
                                  backend="triton")  # fmt: skip
        assert not hits, f"wavelet step: {hits[:3]}"
    launched = _launches(counts)
    assert launched["_band_cascade_kernel"] == launched["_band_backward_cascade_kernel"] == 1
    assert launched["_cascade_kernel"] == 1


def _spy_penalty_scratch(monkeypatch) -> list:
    """The cascades' scratch buffers, as allocated, filled with NaN (an element left unwritten,
    or read before it is written, shows)."""
    from wavefuse.kernels import hf_penalty

    buffers = []

    def scratch(numel, dtype, device):
        buffers.append(torch.full((max(numel, 1),), math.nan, dtype=dtype, device=device))
        return buffers[-1]

    monkeypatch.setattr(hf_penalty, "_cascade_scratch", scratch)
    return buffers


@needs_penalty
@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_band_energy_cascade_scratch_layout(monkeypatch, mode):
    """The cascades' scratch after a call: forward, plane p's a_1 .. a_{J-1} one after the other
    from p * sum_{j<J} h_j w_j, each row-major and equal to the reference's approximation of that
    plane (wavedec2 to level j); backward, every element written (approximations, their
    gradients, and the band buffer of the largest level), its approximations plane p's own again.
    Planes that shared or overlapped regions would fail this even under the interpreter."""
    from wavefuse.reference import analysis_length

    _penalty_route(monkeypatch, "cascade")
    _use_path(monkeypatch, "tiled")
    buffers = _spy_penalty_scratch(monkeypatch)
    x = _randn(2, 3, 19, 14)
    level = 3
    got = _energy_and_gradient(x, "db2", level, mode, 2)
    expected = _energy_and_gradient(x, "db2", level, mode, 2, backend="reference")
    for g, e, what in zip(got, expected, ("energies", "gradient")):
        assert_close(g, e, 1e-12, f"{what} {mode}")
    sizes, h, w = [], 19, 14
    for _ in range(level):
        h, w = analysis_length(h, 4, mode), analysis_length(w, 4, mode)
        sizes.append((h, w))
    forward, backward = buffers
    a_size = sum(a * b for a, b in sizes[:-1])
    assert forward.numel() == 6 * a_size
    assert not forward.isnan().any(), "an approximation element left unwritten"
    per_plane = a_size + sum(a * b for a, b in sizes) + 3 * max(a * b for a, b in sizes)
    assert backward.numel() == 6 * per_plane
    assert not backward.isnan().any(), "a backward scratch element left unwritten"
    for buf, stride in ((forward, a_size), (backward, per_plane)):
        planes = buf.view(6, stride)
        off = 0
        for j, (kh, kw) in enumerate(sizes[:-1], start=1):
            got = planes[:, off : off + kh * kw].reshape(2, 3, kh, kw)
            a_j = wavefuse.wavedec2(x, "db2", mode, j, backend="reference")[0]
            assert_close(got, a_j, 1e-12, f"a_{j} {mode}")
            off += kh * kw


# ---- pgd_step ------------------------------------------------------------------------------------


def _step_inputs(shape=(3, 3, 11, 9), dtype=torch.float32, spread=0.1):
    """x in [0, 1], x_adv near it (some pixels at the bounds), a gradient with a zero entry."""
    x = torch.rand(*shape, dtype=torch.float64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    g[0, 0, 0, 0] = 0.0
    return x_adv.to(dtype).to(DEVICE), g.to(dtype).to(DEVICE), x.to(dtype).to(DEVICE)


def _steps(x_adv, g, x, *args, **kwargs):
    """(triton, reference) results of the same step."""
    got = wavefuse.pgd_step(x_adv.clone(), g, x, *args, **kwargs, backend="triton")
    expected = wavefuse.pgd_step(x_adv.clone(), g, x, *args, **kwargs, backend="reference")
    return got, expected


def _assert_step(got, expected, norm, what=""):
    """Linf: bit for bit (every dtype: one rounding of the same float32/float64 values). L2:
    1e-6 in float32 (the norms' summation order differs), one ulp of the half types."""
    assert got.dtype == expected.dtype
    if norm == "Linf":
        assert torch.equal(got, expected), f"{what}: {(got != expected).sum()} elements differ"
    else:
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, TOL[got.dtype])
        assert_step_close(got, expected, tol, what)


@needs_step
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_matches_the_reference(norm, layout, dtype):
    x_adv, g, x = _step_inputs(dtype=dtype)
    if layout == "channels_last":
        x_adv = x_adv.contiguous(memory_format=torch.channels_last)
    eps, alpha = (0.03, 0.02) if norm == "Linf" else (0.3, 0.25)
    got, expected = _steps(x_adv, g, x, eps, alpha, norm)
    _assert_step(got, expected, norm, f"{norm} {layout} {dtype}")
    assert got.stride() == x_adv.stride()


@needs_step
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_tensor_bounds(norm):
    """Per-sample eps, per-channel alpha and lo, a float hi; then (N, C) bounds everywhere."""
    x_adv, g, x = _step_inputs(spread=0.2)
    n, c = x.shape[:2]
    eps = (0.05 + 0.1 * torch.rand(n, 1, 1, 1, device=DEVICE)) * (4 if norm == "L2" else 1)
    alpha = torch.tensor([0.02, 0.03, 0.05], device=DEVICE).view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0], device=DEVICE).view(1, c, 1, 1)
    got, expected = _steps(x_adv, g, x, eps, alpha, norm, lo, 0.9)
    _assert_step(got, expected, norm, "per-sample/per-channel")
    hi = 0.8 + 0.2 * torch.rand(n, c, 1, 1, device=DEVICE)
    got, expected = _steps(x_adv, g, x, eps, alpha * 2, norm, lo - 0.1, hi)
    _assert_step(got, expected, norm, "(N, C) bounds")


@needs_step
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_per_channel_range_alone(norm):
    """Float eps and alpha with a per-channel lo and hi (a normalised-space range) on contiguous
    tensors: the channel of every element is still needed to read its bounds."""
    x_adv, g, x = _step_inputs(spread=0.2)
    c = x.shape[1]
    lo = torch.tensor([0.1, -0.2, 0.3], device=DEVICE).view(1, c, 1, 1)
    hi = torch.tensor([0.9, 0.4, 1.0], device=DEVICE).view(1, c, 1, 1)
    eps, alpha = (0.2, 0.1) if norm == "Linf" else (2.0, 1.0)
    for lo_, hi_ in ((lo, 1.0), (0.0, hi), (lo, hi)):
        got, expected = _steps(x_adv, g, x, eps, alpha, norm, lo_, hi_)
        _assert_step(got, expected, norm, "per-channel range")


@needs_step
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_unchecked_lo_above_hi_gives_hi(norm, monkeypatch):
    """On a GPU or under torch.compile, tensor bounds are not value-checked, so an entry with
    lo > hi reaches the kernel (docs/edge_policies.md): it gives hi there, as the reference's
    torch.clamp(torch.clamp(v, min=lo), max=hi) does. The check is switched off to stand for
    those callers."""
    monkeypatch.setattr(pgd_step_ops, "_check_values", lambda bounds: None)
    x_adv, g, x = _step_inputs(spread=0.2)
    lo = torch.tensor([0.7, 0.0, 0.2], device=DEVICE).view(1, 3, 1, 1)
    hi = torch.tensor([0.3, 1.0, 0.9], device=DEVICE).view(1, 3, 1, 1)
    eps, alpha = (0.2, 0.05) if norm == "Linf" else (2.0, 0.5)
    got, expected = _steps(x_adv, g, x, eps, alpha, norm, lo, hi)
    assert torch.equal(expected[:, 0], torch.full_like(expected[:, 0], 0.3))
    _assert_step(got, expected, norm, "lo > hi")


@needs_step
def test_pgd_step_bfloat16_rounds_ties_to_even():
    """bfloat16 results are rounded once, to nearest even, as torch rounds: steps of half a
    bfloat16 ulp from bfloat16 values land exactly on ties, which must go to the even neighbour
    (never all up), bit for bit with the reference."""
    x = (0.5 + torch.arange(256, dtype=torch.float32) / 512).view(2, 2, 8, 8)  # exact in bf16
    x = x.to(torch.bfloat16).to(DEVICE)
    g = torch.ones_like(x)
    g[1] = -1.0
    alpha = 2.0**-9  # half the bfloat16 spacing in [0.5, 1)
    got, expected = _steps(x.clone(), g, x, 1.0, alpha, "Linf", -1.0, 2.0)
    assert (expected != x).any() and (expected == x).any()  # ties went both ways
    _assert_step(got, expected, "Linf", "bfloat16 ties")


@needs_step
def test_pgd_step_l2_tiny_gradient_norms():
    """torchattacks' g / (||g|| + 1e-10): where ||g|| is comparable to 1e-10 the constant shows
    in the step, so the kernels must use the same one as the reference."""
    x_adv, g, x = _step_inputs(shape=(2, 3, 6, 5))
    g[0] *= 1e-11
    got, expected = _steps(x_adv, g, x, 10.0, 0.1, "L2", -10.0, 10.0)
    _assert_step(got, expected, "L2", "tiny ||g||")
    assert not torch.allclose(got[0], x_adv[0] + 0.1 * g[0] / g[0].norm(), rtol=1e-3, atol=0)


@needs_step
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_mixed_layouts_and_int64_offsets(norm, monkeypatch):
    """x_adv, grad and x_nat in three different layouts (each read through its own strides),
    then the int64 index path."""
    x_adv, g, x = _step_inputs(shape=(2, 3, 7, 5))
    g_cl = g.contiguous(memory_format=torch.channels_last)
    x_strided = torch.zeros(2, 3, 14, 10, device=DEVICE)[:, :, ::2, ::2]
    x_strided.copy_(x)
    expected = _steps(x_adv, g, x, 0.3, 0.1, norm)[1]
    for xa in (x_adv, x_adv.contiguous(memory_format=torch.channels_last)):
        got = wavefuse.pgd_step(xa.clone(), g_cl, x_strided, 0.3, 0.1, norm, backend="triton")
        _assert_step(got, expected, norm, "mixed layouts")
    monkeypatch.setattr("wavefuse.kernels.dwt._INT32_LIMIT", 0)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, 0.3, 0.1, norm, backend="triton")
    _assert_step(got, expected, norm, "int64 offsets")


@needs_step
def test_pgd_step_float64_bounds_are_not_rounded_to_float32():
    """Floats reach the kernels as float64 bit patterns: an eps that float32 cannot hold."""
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64, device=DEVICE)
    g = torch.ones_like(x)
    eps = 0.1 + 1e-12
    got = wavefuse.pgd_step(x.clone(), g, x, eps, 1.0, backend="triton")
    assert torch.equal(got, torch.full_like(x, 0.5 + eps))


@needs_step
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # the interpreter's 1 / 0
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_nan_propagates_and_zero_delta(norm):
    """A NaN gradient entry is not hidden (Linf: that element; L2: its sample), the other sample
    stays finite; eps = 0 with x_adv = x gives a zero delta, not NaN (factor 1)."""
    x_adv, g, x = _step_inputs(shape=(2, 2, 6, 5))
    g[0, 1, 3, 2] = math.nan
    got, cpu_like = _steps(x_adv, g, x, 0.03, 0.01, norm)
    assert torch.isnan(got[0, 1, 3, 2]) and torch.isfinite(got[1]).all()
    if norm == "L2":
        assert torch.isnan(got[0]).all()
    else:
        assert torch.equal(got.nan_to_num(), cpu_like.nan_to_num())
    got = wavefuse.pgd_step(x.clone(), torch.zeros_like(g), x, 0.0, 0.1, norm, backend="triton")
    assert torch.equal(got, x)


@needs_step
def test_pgd_step_repeated_calls_are_bitwise_identical():
    x_adv, g, x = _step_inputs()
    first = wavefuse.pgd_step(x_adv.clone(), g, x, 0.5, 0.3, "L2", backend="triton")
    assert torch.equal(
        first, wavefuse.pgd_step(x_adv.clone(), g, x, 0.5, 0.3, "L2", backend="triton")
    )


# ---- wavelet_pgd_step ----------------------------------------------------------------------------


def _wavelet_steps(x_adv, g, x, eps, wave, level, mode, scales, norm):
    """(triton, reference) results of the same wavelet step."""
    args = (x, eps, 0.03, wave, level, mode, scales, norm)
    return [
        _quiet(wavefuse.wavelet_pgd_step, x_adv.clone(), g, *args, backend=backend)
        for backend in ("triton", "reference")
    ]


# (wave, level, norm) per case; scales cycle through 0 (band-limited), 0.5 and -0.25.
WAVELET_CASES = [("haar", 1, "Linf"), ("db2", 2, "L2"), ("db4", 3, "L2"), ("sym5", 2, "Linf")]


@needs_wavelet_step
@pytest.mark.parametrize("mode", ALL_MODES)
def test_wavelet_pgd_step_matches_the_reference(mode):
    """Every mode x haar/db2/db4/sym5, levels 1-3 (db4 and sym5 grow on 7 x 6), odd sizes,
    float64. Linf steps by sign(g'), which the transforms' rounding may flip where the exact g' is
    zero to rounding: only there may the steps differ, by at most 2 alpha."""
    _check_wavelet_cases(mode, WAVELET_CASES)


def _check_wavelet_cases(mode: str, cases) -> None:
    """(wave, level, norm) cases on a 7 x 6 plane pair, float64. Linf: assert_linf_wavelet_step
    (sign(g') may flip only where the exact g' is zero to rounding, by at most 2 alpha)."""
    x_adv, g, x = _step_inputs(shape=(1, 2, 7, 6), dtype=torch.float64)
    for wave, level, norm in cases:
        scales = [0.0, 0.5, -0.25][:level]
        got, expected = _wavelet_steps(x_adv, g, x, 0.05, wave, level, mode, scales, norm)
        what = f"{wave} level {level} {mode} {norm}"
        if norm == "L2":
            assert_close(got, expected, 1e-12, what)
        else:
            assert_linf_wavelet_step(got, expected, g, wave, level, mode, scales, 0.03, 1e-12, what)


@needs_wavelet_step
def test_wavelet_pgd_step_db20():
    x_adv, g, x = _step_inputs(shape=(1, 1, 5, 6), dtype=torch.float64)
    got, expected = _wavelet_steps(x_adv, g, x, 0.4, "db20", 1, "periodization", [0.25], "L2")
    assert_close(got, expected, 1e-12, "db20")


@needs_wavelet_step
@pytest.mark.parametrize(
    "dtype, layout",
    [(torch.float32, "channels_last"), (torch.bfloat16, "contiguous")],
)
def test_wavelet_pgd_step_dtypes_and_layouts(dtype, layout):
    """L2 (continuous in g): float32 within 1e-6, bfloat16 within its tolerance; the half step
    reads the filtered gradient in float32 and rounds x_adv once."""
    x_adv, g, x = _step_inputs(shape=(2, 2, 9, 8), dtype=dtype)
    if layout == "channels_last":
        x_adv, g = (t.contiguous(memory_format=torch.channels_last) for t in (x_adv, g))
    got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", 2, "symmetric", [0.0, 0.3], "L2")
    assert got.dtype == dtype and got.stride() == x_adv.stride()
    assert_step_close(got, expected, 1e-6 if dtype == torch.float32 else TOL[dtype], str(dtype))


@needs_wavelet_step
@pytest.mark.parametrize("route", ["separable", "cascade", "cascade-many-planes"])
def test_wavelet_pgd_step_one_launch_per_step(monkeypatch, route):
    """db4 J=3 (three distinct scales) is one launch for Linf and three for L2, no transform
    kernel: on planes up to _SEPARABLE_MAX_SIDE the separable kernel (three matrix pairs), above
    it (forced here) the cascade; for L2 that kernel also sums g'^2 per plane, so pgd_step's
    grad-partials launch does not run -- except where a sample has more planes than
    _MAX_PARTIALS (lowered here to 2: "many planes"). Per-channel and per-sample tensor bounds,
    channels_last data, blocks that are not square (33 x 20 -> 64 x 32)."""
    from wavefuse.kernels import dwt, pgd_step

    if route != "separable":
        _route(monkeypatch, "cascade")
    if route == "cascade-many-planes":
        monkeypatch.setattr(pgd_step, "_MAX_PARTIALS", 2)
    counts = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    step_kernels = ("_separable_kernel", "_cascade_kernel", "_chain_kernel", "_linf_kernel")
    step_kernels += ("_l2_grad_partials_kernel", "_l2_delta_partials_kernel", "_l2_update_kernel")
    counts.update(count_launches(monkeypatch, pgd_step, *step_kernels))
    x_adv, g, x = _step_inputs(shape=(2, 3, 33, 20), dtype=torch.float32)
    x_adv = x_adv.contiguous(memory_format=torch.channels_last)
    lo = torch.full((1, 3, 1, 1), 0.1, device=DEVICE)
    kernel = "_separable_kernel" if route == "separable" else "_cascade_kernel"
    l2_launches = dict.fromkeys((kernel, "_l2_delta_partials_kernel", "_l2_update_kernel"), 1)
    if route == "cascade-many-planes":
        l2_launches["_l2_grad_partials_kernel"] = 1
    expected_launches = {"Linf": {kernel: 1}, "L2": l2_launches}
    for norm in ("Linf", "L2"):
        eps = torch.tensor([0.3, 0.5], device=DEVICE).view(2, 1, 1, 1)
        args = (x, eps, 0.03, "db4", 3, "symmetric", [0.0, 0.5, -0.25], norm)
        for counter in counts.values():
            counter.launches = 0
        got = _quiet(wavefuse.wavelet_pgd_step, x_adv.clone(), g, *args, lo=lo, backend="triton")
        launches = {name: c.launches for name, c in counts.items() if c.launches}
        assert launches == expected_launches[norm], (norm, launches)
        expected = _quiet(
            wavefuse.wavelet_pgd_step, x_adv.clone(), g, *args, lo=lo, backend="reference"
        )
        assert got.stride() == x_adv.stride()
        if norm == "L2":
            assert_close(got, expected, 1e-6, norm)
        else:  # sign(g') where g' is zero to rounding may flip, by 2 alpha
            assert_linf_wavelet_step(got, expected, g, *args[3:7], 0.03, 1e-6, norm)


def _chain_counts(monkeypatch) -> dict:
    """Launch counters of the kernels a wavelet step above _SEPARABLE_MAX_SIDE may run."""
    from wavefuse.kernels import dwt, pgd_step

    counts = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    names = ("_chain_kernel", "_pair_kernel", "_cascade_kernel", "_separable_kernel")
    counts.update(count_launches(monkeypatch, pgd_step, *names))
    return counts


def _by_levels(monkeypatch, pairs: bool = False) -> None:
    """Planes above _SEPARABLE_MAX_SIDE (forced here on small planes) and the chain level by
    level (two launches per level), or in pairs of stages (one launch per level), not in one
    ``_cascade_kernel`` launch."""
    from wavefuse.kernels import pgd_step

    monkeypatch.setattr(pgd_step, "_SEPARABLE_MAX_SIDE", 0)
    monkeypatch.setattr(pgd_step, "_CASCADE_MAX_DEPTH", 0)
    monkeypatch.setattr(pgd_step, "_PAIR_ROUTE", pairs)


def _route(monkeypatch, route: str) -> None:
    """Routes: "levels", the chain level by level; "pairs", two stages per launch (where the
    cascade does not run, by default); "cascade", in one launch (all above _SEPARABLE_MAX_SIDE,
    forced here on small planes; the cascade also without its planes-per-SM rule, which CPU
    tensors meet with 2 planes)."""
    from wavefuse.kernels import pgd_step

    from wavefuse.ops import separable

    if route in ("levels", "pairs"):
        _by_levels(monkeypatch, pairs=route == "pairs")
    else:
        monkeypatch.setattr(pgd_step, "_SEPARABLE_MAX_SIDE", 0)
        monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0)


def _chain_launches(route: str, levels: int, calls: int = 1) -> dict:
    """The launches of ``calls`` chains of ``levels`` levels in all, by route."""
    if route == "cascade":
        return {"_cascade_kernel": calls}
    if route == "pairs":
        return {"_pair_kernel": levels}
    return {"_dwt2d_fwd_kernel": levels, "_chain_kernel": levels}


def _launches(counts) -> dict:
    return {name: c.launches for name, c in counts.items() if c.launches}


@needs_wavelet_step
@pytest.mark.parametrize("path", ["dense", "general", "tiled"])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_wavelet_pgd_step_chain_path(monkeypatch, mode, path):
    """Planes above _SEPARABLE_MAX_SIDE (forced here on small planes) run the approximation chain:
    per level one analysis launch that writes the approximation alone and one synthesis launch
    (``_chain_kernel``), the last fused with the Linf step; no detail band, no full synthesis.
    The cases of test_wavelet_pgd_step_matches_the_reference, float64, against the reference
    (which forms, scales and resynthesises every band), on the chain kernel's dense and tiled
    merges."""
    _by_levels(monkeypatch)
    if path != "dense":
        _use_path(monkeypatch, path)
    counts = _chain_counts(monkeypatch)
    _check_wavelet_cases(mode, WAVELET_CASES[1:])
    levels = 2 + 3 + 2
    assert _launches(counts) == {"_dwt2d_fwd_kernel": levels, "_chain_kernel": levels}


@needs_wavelet_step
@pytest.mark.parametrize("path", ["default", "tiled"])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_wavelet_pgd_step_cascade(monkeypatch, mode, path):
    """The chain in one launch: one ``_cascade_kernel`` program per plane runs every analysis
    and synthesis level (the last fused with the Linf step), and nothing else launches for Linf.
    The cases of test_wavelet_pgd_step_matches_the_reference, float64, against the reference; on
    "tiled", tiles of at most 8 columns and 32 outputs, so that a program loops over several
    tiles at every level (a 19 x 37 plane too)."""
    _route(monkeypatch, "cascade")
    if path != "default":
        _use_path(monkeypatch, path)
    counts = _chain_counts(monkeypatch)
    _check_wavelet_cases(mode, WAVELET_CASES[1:])
    calls = 3
    if path == "tiled":  # 19 x 37: several row and column tiles (4 x 8) at every level
        x_adv, g, x = _step_inputs(shape=(1, 2, 19, 37), dtype=torch.float64)
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", 2, mode, [0.0, 0.5], "L2")
        assert_close(got, expected, 1e-12, f"19 x 37 {mode}")
        calls += 1
    assert _launches(counts) == {"_cascade_kernel": calls}


@needs_wavelet_step
def test_pair_geometry_keeps_every_read_inside_the_window(monkeypatch):
    """_pair_geometry for every even filter length up to 40 and minimum tiles 1 .. 16: the tiles
    reach the minimum; an analysis stage 2 reads window slots 2t + m (t < T_A, m < L) inside
    R_A, and the stage-1 positions a tile keeps ([2 i0, 2 i0 + 2 T_A)) lie in its window for
    both offsets; a synthesis stage 2 reads coefficients (r - m - OFF) / 2 (r in [r0, r0 + T_S),
    m of r - OFF's parity) inside [k0, k0 + R_S) for several tiles r0 and both offsets."""
    from wavefuse.kernels import pgd_step

    for min_tile in (1, 2, 8, 16):
        monkeypatch.setattr(pgd_step, "_PAIR_MIN_TILE", min_tile)
        for taps in range(2, 42, 2):
            r_a, t_a, b_a, r_s, t_s, b_s = pgd_step._pair_geometry(taps)
            what = f"L={taps} min tile {min_tile}"
            assert t_a >= min_tile and t_s >= 2 * min_tile and t_s % 2 == 0, what
            for side, lanes in ((r_a, b_a), (r_s, b_s), (b_a, b_a), (b_s, b_s)):
                assert side & (side - 1) == 0, what  # powers of two (tl.arange)
            assert b_a >= t_a and b_s >= t_s, what
            assert 2 * (t_a - 1) + taps - 1 < r_a, what
            for off in (2 - taps, 1 - taps // 2):  # the other modes', periodization's
                assert 2 * t_a <= r_a + off, what
                for r0 in (0, t_s, 2 * t_s, 7 * t_s):
                    k0 = (r0 - taps + 1 - off) // 2
                    slots = [
                        (r - m - off) // 2 - k0
                        for r in range(r0, r0 + t_s)
                        for m in range(taps)
                        if (r - m - off) % 2 == 0
                    ]
                    assert 0 <= min(slots) and max(slots) < r_s, (what, off, r0)


@needs_wavelet_step
@pytest.mark.parametrize("mode", ALL_MODES)
def test_wavelet_pgd_step_pairs(monkeypatch, mode):
    """Where the cascade does not run (forced here on small planes), the chain in pairs of
    stages: one ``_pair_kernel`` launch per level, the last fused with the Linf step, nothing else
    launched for the filter. The cases of test_wavelet_pgd_step_matches_the_reference (7 x 6,
    float64) with the default tiles; then, with tiles of at least 2 outputs (several tiles per
    level, windows reaching over the plane's edges), db2 J=4 and J=3 and sym5 J=2 with every
    scale different (each a_j that a synthesis needs is kept from its pair's first stage),
    against the reference; the last case also with gathers of at most 16 values per pass, so
    that both stages loop over several row chunks (_pair_chunks). The window scratch starts as
    NaN (a slot read before stage 1 wrote it would show)."""
    from wavefuse.kernels import dwt, pgd_step

    _route(monkeypatch, "pairs")
    counts = _chain_counts(monkeypatch)
    scratch = _spy_pair_scratch(monkeypatch)
    _check_wavelet_cases(mode, WAVELET_CASES[1:])
    assert _launches(counts) == {"_pair_kernel": 2 + 3 + 2}
    monkeypatch.setattr(pgd_step, "_PAIR_MIN_TILE", 2)
    cases = [("db2", 4, (1, 1, 23, 19), "L2"), ("db2", 3, (1, 2, 17, 22), "Linf")]
    cases += [("sym5", 2, (1, 1, 20, 17), "L2"), ("db2", 3, (1, 1, 17, 22), "L2")]
    for k, (wave, level, shape, norm) in enumerate(cases):
        if k == len(cases) - 1:
            monkeypatch.setattr(dwt, "_BLOCK_ELEMENTS", 16)
        for counter in counts.values():
            counter.launches = 0
        x_adv, g, x = _step_inputs(shape=shape, dtype=torch.float64)
        scales = [0.0, 0.5, -0.25, 0.3][:level]
        eps = 0.5 if norm == "L2" else 0.05
        got, expected = _wavelet_steps(x_adv, g, x, eps, wave, level, mode, scales, norm)
        what = f"{wave} J={level} {shape} {mode} {norm}"
        assert _launches(counts) == {"_pair_kernel": level}, what
        assert len(scratch) >= level, what
        if norm == "L2":
            assert_close(got, expected, 1e-12, what)
        else:
            assert_linf_wavelet_step(got, expected, g, wave, level, mode, scales, 0.03, 1e-12, what)


@needs_wavelet_step
def test_wavelet_pgd_step_pairs_partial_sums(monkeypatch):
    """L2 in pairs: the last pair writes g' and one sum of g'^2 per tile (12 per sample here: 3
    planes of 2 x 2 tiles), so pgd_step's grad-partials launch does not run -- except where a
    sample has more than _MAX_PARTIALS of them (lowered to 8)."""
    from wavefuse.kernels import pgd_step

    _route(monkeypatch, "pairs")
    monkeypatch.setattr(pgd_step, "_PAIR_MIN_TILE", 2)  # db4's synthesis tiles: 8 x 8
    counts = count_launches(monkeypatch, pgd_step, "_pair_kernel", "_l2_grad_partials_kernel")
    x_adv, g, x = _step_inputs(shape=(2, 3, 13, 10), dtype=torch.float64)
    for limit, grad_partials in ((256, 0), (8, 1)):
        monkeypatch.setattr(pgd_step, "_MAX_PARTIALS", limit)
        for counter in counts.values():
            counter.launches = 0
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db4", 2, "symmetric", [0.2, 0.6], "L2")
        assert counts["_pair_kernel"].launches == 2
        assert counts["_l2_grad_partials_kernel"].launches == grad_partials, limit
        assert_close(got, expected, 1e-12, f"partials limit {limit}")


@needs_wavelet_step
@pytest.mark.skipif(DEVICE.type != "cpu", reason="checks the interpreter's record of a run")
@pytest.mark.parametrize("level", [2, 3])
def test_pairs_read_nothing_written_since_the_last_barrier(monkeypatch, level):
    """Each pair's program reads its window (stage 2) only after a barrier that follows its
    writes (stage 1), over several tiles per level: J=2 (an analysis pair, a synthesis pair) and
    J=3 (the middle pair analysis then synthesis). Dropping the barrier fails this."""
    from wavefuse.kernels import pgd_step

    _route(monkeypatch, "pairs")
    monkeypatch.setattr(pgd_step, "_PAIR_MIN_TILE", 2)
    counts = count_launches(monkeypatch, pgd_step, "_pair_kernel")
    x_adv, g, x_nat = _step_inputs(shape=(1, 2, 19, 14), dtype=torch.float64)
    scales = [0.0, 0.5, 0.25][:level]
    with _barrier_checker() as hits:
        wavefuse.wavelet_pgd_step(x_adv, g, x_nat, 0.03, 0.01, "db2", level, "periodization",
                                  scales, backend="triton")  # fmt: skip
        assert not hits, f"pairs: {hits[:3]}"
    assert counts["_pair_kernel"].launches == level


@needs_wavelet_step
def test_wavelet_pgd_step_cascade_or_levels(monkeypatch):
    """separable.cascade_fits: the cascade runs where there are at least CASCADE_PLANES_PER_SM
    planes per SM (CPU tensors: one "SM"), none over CASCADE_MAX_PLANE samples, for at most
    _CASCADE_MAX_DEPTH levels; otherwise the chain runs in pairs of stages (one launch per
    level). Both give the reference's step."""
    from wavefuse.kernels import pgd_step

    from wavefuse.ops import separable

    monkeypatch.setattr(pgd_step, "_SEPARABLE_MAX_SIDE", 0)
    counts = _chain_counts(monkeypatch)
    x_adv, g, x = _step_inputs(shape=(2, 3, 11, 9), dtype=torch.float64)
    settings = [  # (planes per SM, max plane, max depth) -> route
        ((6, 11 * 9, 8), "cascade"),
        ((7, 11 * 9, 8), "pairs"),
        ((6, 11 * 9 - 1, 8), "pairs"),
        ((6, 11 * 9, 1), "pairs"),
        ((2, 512 * 512, 8), "cascade"),  # the defaults' numbers
    ]
    for (per_sm, plane, depth), route in settings:
        monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", per_sm)
        monkeypatch.setattr(separable, "CASCADE_MAX_PLANE", plane)
        monkeypatch.setattr(pgd_step, "_CASCADE_MAX_DEPTH", depth)
        for counter in counts.values():
            counter.launches = 0
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", 2, "reflect", [0.0, 0.5], "L2")
        assert _launches(counts) == _chain_launches(route, 2), (per_sm, plane, depth)
        assert_close(got, expected, 1e-12, route)


def _spy_nan_buffers(monkeypatch, allocator: str) -> list:
    """The buffers that kernels/pgd_step.py's ``allocator`` hands out, as allocated, filled with
    NaN (so that an element read before it was written shows)."""
    from wavefuse.kernels import pgd_step

    buffers = []

    def allocate(numel, dtype, device):
        buffers.append(torch.full((numel,), math.nan, dtype=dtype, device=device))
        return buffers[-1]

    monkeypatch.setattr(pgd_step, allocator, allocate)
    return buffers


def _spy_pair_scratch(monkeypatch) -> list:
    """The pairs' window scratch buffers (a window slot read before stage 1 wrote it shows)."""
    return _spy_nan_buffers(monkeypatch, "_pair_scratch")


def _spy_scratch(monkeypatch) -> list:
    """The cascade's level buffers (a level left unwritten shows)."""
    return _spy_nan_buffers(monkeypatch, "_cascade_scratch")


@needs_wavelet_step
@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_wavelet_pgd_step_cascade_scratch_layout(monkeypatch, mode):
    """The cascade's scratch after a step: plane p's levels 1 .. J one after the other from p *
    sum_j h_j w_j, each row-major, every element written; the coarsest level, which no synthesis
    overwrites, holds plane p's own a_J (the reference's approximation, wavedec2's first
    coefficient). Planes that shared or overlapped each other's regions would fail this even
    under the interpreter, which runs the programs one after another (and cannot see a missing
    barrier: the GPU tests can)."""
    from wavefuse.reference import analysis_length

    _route(monkeypatch, "cascade")
    _use_path(monkeypatch, "tiled")
    buffers = _spy_scratch(monkeypatch)
    x_adv, g, x = _step_inputs(shape=(2, 3, 19, 14), dtype=torch.float64)
    level, scales = 3, [0.0, 0.5, -0.25]
    got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", level, mode, scales, "L2")
    assert_close(got, expected, 1e-12, mode)
    sizes, h, w = [], 19, 14
    for _ in range(level):
        h, w = analysis_length(h, 4, mode), analysis_length(w, 4, mode)
        sizes.append((h, w))
    per_plane = sum(a * b for a, b in sizes)
    (scratch,) = buffers
    assert scratch.numel() == 6 * per_plane
    assert not scratch.isnan().any(), "a level element left unwritten"
    coarsest = scratch.view(6, per_plane)[:, per_plane - h * w :].reshape(2, 3, h, w)
    a_j = wavefuse.wavedec2(g, "db2", mode, level, backend="reference")[0]
    assert_close(coarsest, a_j, 1e-12, f"a_J {mode}")


@needs_wavelet_step
def test_wavelet_pgd_step_cascade_depth_limit(monkeypatch):
    """Eight levels, every scale different (every one of the kernel's eight coefficients used,
    each in its place): the cascade equals the reference; nine go in pairs of stages."""
    _route(monkeypatch, "cascade")
    _use_path(monkeypatch, "tiled")
    counts = _chain_counts(monkeypatch)
    x_adv, g, x = _step_inputs(shape=(1, 2, 23, 18), dtype=torch.float64)
    scales = [0.1, 0.9, 0.3, -0.2, 0.7, 0.4, 0.25, 0.6, 0.8]
    for level, route in ((8, "cascade"), (9, "pairs")):
        for counter in counts.values():
            counter.launches = 0
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", level, "zero", scales[:level], "L2")
        assert _launches(counts) == _chain_launches(route, level), level
        assert_close(got, expected, 1e-12, f"J={level}")


@needs_wavelet_step
@pytest.mark.parametrize("route", ["levels", "pairs", "cascade"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_chain_visits_only_the_levels_it_needs(monkeypatch, norm, route):
    """g' = s_1 g + sum_j (s_{j+1} - s_j) P_j g (s_{J+1} = 1): levels past the last change of
    scale are not visited (the cascade is told that depth: checked through its scratch buffer,
    which holds exactly the levels it visits), equal neighbouring scales skip their term, all ones
    is pgd_step."""

    _route(monkeypatch, route)
    counts = _chain_counts(monkeypatch)
    scratch = _spy_scratch(monkeypatch)
    x_adv, g, x = _step_inputs(shape=(2, 2, 13, 10), dtype=torch.float64)
    sizes = [(9, 7), (7, 6), (6, 5)]  # db3 (6 taps) symmetric levels of 13 x 10
    for scales, depth in (([0.5, 1.0, 1.0], 1), ([0.3, 0.3, 1.0], 2), ([0.0, 0.5, 0.5], 3)):
        for counter in counts.values():
            counter.launches = 0
        scratch.clear()
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db3", 3, "symmetric", scales, norm)
        assert _launches(counts) == _chain_launches(route, depth), scales
        if route == "cascade":
            assert [t.numel() for t in scratch] == [4 * sum(h * w for h, w in sizes[:depth])]
        assert_close(got, expected, 1e-12, f"{scales} {norm}")
    for counter in counts.values():
        counter.launches = 0
    got, _ = _wavelet_steps(x_adv, g, x, 0.5, "db3", 3, "symmetric", [1.0] * 3, norm)
    assert not _launches(counts)
    plain = wavefuse.pgd_step(x_adv.clone(), g, x, 0.5, 0.03, norm, backend="reference")
    assert torch.equal(got, plain)


@needs_wavelet_step
@pytest.mark.parametrize("route", ["levels", "pairs", "cascade"])
@pytest.mark.parametrize(
    "dtype, layout, norm",
    [
        (torch.float32, "channels_last", "Linf"),
        (torch.float32, "contiguous", "L2"),
        (torch.bfloat16, "channels_last", "L2"),
    ],
)
def test_wavelet_pgd_step_chain_dtypes_layouts_and_bounds(monkeypatch, dtype, layout, norm, route):
    """The chain on float32 and bfloat16 (a float32 chain, x_adv rounded once), channels_last x_adv
    and gradient, per-sample eps and hi and per-channel alpha and lo tensors, a 40 x 37 plane (the
    tiled merge for the first level; several tiles per level in the cascade); the gradient is left
    as it was (the chain overwrites only its own buffers)."""
    from wavefuse.kernels import dwt

    _route(monkeypatch, route)
    monkeypatch.setattr(dwt, "_DENSE_MAX_FULL", 16)
    counts = _chain_counts(monkeypatch)
    x_adv, g, x = _step_inputs(shape=(2, 3, 40, 37), dtype=dtype)
    if layout == "channels_last":
        x_adv, g = (t.contiguous(memory_format=torch.channels_last) for t in (x_adv, g))
    g_before = g.clone()
    eps = torch.tensor([0.3, 0.5], device=DEVICE).view(2, 1, 1, 1)
    alpha = torch.tensor([0.02, 0.03, 0.04], device=DEVICE).view(1, 3, 1, 1)
    bounds = {"lo": torch.full((1, 3, 1, 1), 0.1, device=DEVICE)}
    bounds["hi"] = torch.tensor([0.9, 0.95], device=DEVICE).view(2, 1, 1, 1)
    args = (x, eps, alpha, "db4", 2, "reflect", [0.0, 0.5], norm)
    got = _quiet(wavefuse.wavelet_pgd_step, x_adv.clone(), g, *args, **bounds, backend="triton")
    expected = _quiet(
        wavefuse.wavelet_pgd_step, x_adv.clone(), g, *args, **bounds, backend="reference"
    )
    assert _launches(counts) == _chain_launches(route, 2)
    assert torch.equal(g, g_before)
    assert got.dtype == dtype and got.stride() == x_adv.stride()
    if norm == "L2":
        assert_step_close(got, expected, 1e-6 if dtype == torch.float32 else TOL[dtype], str(dtype))
    else:  # sign(g') where g' is zero to rounding may flip, by 2 alpha (at most 0.04 here)
        tol = 1e-6 if dtype == torch.float32 else TOL[dtype]
        assert_linf_wavelet_step(got, expected, g, *args[3:7], 0.04, tol, norm)


@needs_wavelet_step
@pytest.mark.parametrize("path", ["levels-dense", "levels-tiled", "pairs", "cascade"])
def test_wavelet_pgd_step_chain_int64_offsets(monkeypatch, path):
    """Every offset of the chain's kernels in int64 (the int32 limit lowered to 0), on the dense
    and the tiled merge level by level, in pairs of stages, and in the cascade."""
    from wavefuse.kernels import dwt

    _route(monkeypatch, path.split("-")[0])
    monkeypatch.setattr(dwt, "_INT32_LIMIT", 0)
    if path == "levels-tiled":
        _use_path(monkeypatch, "tiled")
    for norm in ("Linf", "L2"):
        x_adv, g, x = _step_inputs(shape=(1, 2, 9, 12), dtype=torch.float64)
        got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", 2, "periodic", [0.0, 0.5], norm)
        assert_close(got, expected, 1e-12, norm)


@needs_wavelet_step
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's inf - inf
@pytest.mark.parametrize("route", ["levels", "pairs", "cascade"])
@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization"])
def test_wavelet_pgd_step_chain_non_finite_gradients(monkeypatch, mode, route):
    """The chain's tiled merges (docs/edge_policies.md), level by level, in pairs and in the
    cascade: a NaN gradient entry gives exactly the reference's NaN (Linf: those elements; L2:
    the sample); an infinite one, with scales that never decrease and stay in [0, 1], never makes NaN where
    the reference has none (it may step where the reference's 0 * inf is NaN) and gives the
    reference's steps elsewhere."""
    _route(monkeypatch, route)
    _use_path(monkeypatch, "tiled")
    for bad, scales in ((math.nan, [0.0, 0.5]), (math.inf, [0.0, 0.5]), (-math.inf, [0.5, 0.5])):
        x_adv, g, x = _step_inputs(shape=(2, 1, 13, 10), dtype=torch.float64)
        g[0, 0, 6, 3] = bad
        for norm in ("Linf", "L2"):
            got, expected = _wavelet_steps(x_adv, g, x, 0.5, "db2", 2, mode, scales, norm)
            what = f"{bad} {scales} {mode} {norm}"
            assert_chain_non_finite_policy(got, expected, bad, what)


@needs_wavelet_step
def test_wavelet_pgd_step_per_level_path_for_a_bank_without_perfect_reconstruction(monkeypatch):
    """The chain needs idwt(a_j, d_j) = a_{j-1}: a bank without it runs the per-level transforms
    above _SEPARABLE_MAX_SIDE (analysis, the bands scaled, the full synthesis), then the step."""
    _route(monkeypatch, "cascade")
    counts = _chain_counts(monkeypatch)
    _check_bank_without_perfect_reconstruction()
    assert _launches(counts) == {"_dwt2d_fwd_kernel": 2, "_dwt2d_adjoint_kernel": 2}


@needs_wavelet_step
def test_wavelet_pgd_step_bank_without_perfect_reconstruction():
    """The op with a 4-tap bank that is not perfect-reconstruction (nothing assumes
    orthogonality: its 2J matrix pairs do not merge) against the reference composition."""
    _check_bank_without_perfect_reconstruction()


def _check_bank_without_perfect_reconstruction():
    x_adv, g, x = _step_inputs(shape=(1, 2, 9, 11), dtype=torch.float64)
    filters = torch.tensor(
        [[0.3, 0.9, 0.1, -0.2], [0.5, -0.4, 0.2, 0.7]], dtype=torch.float64, device=DEVICE
    )
    bounds = prepare_bounds(x, 0.5, 0.03, 0.0, 1.0, "L2")
    results = []
    for backend in ("triton", "reference"):
        out = x_adv.clone()
        args = (*bounds, filters, "symmetric", 2, [0.3, 0.6], "L2", backend)
        OPS.wavelet_pgd_step(out, g, x, *args)
        results.append(out)
    assert_close(results[0], results[1], 1e-12, "non-PR bank")


@needs_wavelet_step
def test_opcheck_steps():
    """Linf with float bounds, L2 with tensor bounds (per-sample eps, per-channel lo)."""
    x_adv, g, x = _step_inputs(shape=(2, 3, 4, 4), dtype=torch.float64)
    eps = torch.full((2, 1, 1, 1), 0.05, dtype=torch.float64, device=DEVICE)
    lo = torch.zeros(1, 3, 1, 1, dtype=torch.float64, device=DEVICE)
    linf = prepare_bounds(x, 0.05, 0.02, 0.0, 1.0, "Linf")
    l2 = prepare_bounds(x, eps, 0.02, lo, 1.0, "L2")
    for bounds, norm in ((linf, "Linf"), (l2, "L2")):
        torch.library.opcheck(OPS.pgd_step.default, (x_adv, g, x, *bounds, norm, "triton"))
    filters = filter_bank("haar", "dec", torch.float64, DEVICE)
    args = (x_adv, g, x, *l2, filters, "periodization", 1, [0.5], "L2", "triton")
    torch.library.opcheck(OPS.wavelet_pgd_step.default, args)
