"""The CUDA band-energy kernels' bodies, run on the CPU: no GPU needed.

csrc/cuda/hf_penalty.cu's kernels only compute their block and thread indices and call the
``__host__ __device__`` phase functions of csrc/cuda/hf_penalty_body.cuh (and the split row pass,
column coefficients and merge of csrc/cuda/dwt_body.cuh), with ``__syncthreads()`` between phases.
tests/cuda_hf_emulation_harness.cpp compiles them with g++ and runs them serially, phase by phase
per block, over the launch grids hf_penalty.cu computes with the same functions, and drives the
multilevel cascade as hf_penalty.cu's host code does (forward: one level kernel per level and the
final row reduction; backward: the split kernels up, the adjoint merges down). Buffers the kernels
write and shared memory start as NaN, so a value that no thread wrote fails the comparison.

Compared with ``reference.band_energy_ref`` and ``reference.band_energy_backward_ref`` in float64
(1e-12 of max |expected|): haar, db2, db4, db20 x every mode x levels 1-3 x p 1 and 2 x sizes 1 x 1,
odd x odd, shorter than the filter and a plane of several tiles x contiguous, channels_last and
strided x int32 and int64 offsets; two runs bitwise equal; NaN propagation.

The one-launch cascades (csrc/cuda/hf_cascade_body.cuh's energy_cascade_block and
grad_cascade_block, one block per plane through every level) run through their own loops in
tests/cuda_hf_cascade_emulation_harness.cpp (then rows_kernel's phases for the forward): haar, db2,
db4, sym5, coif3, db20 x every mode x levels 1, 2, 3, 5 x sizes narrower than the filter, 1 x 9,
19 x 37 and 40 x 70 x float64 and float32 (plus a float16-input test: the <c10::Half> bodies) x
p 1 and 2 x contiguous, channels_last and strided x int32 and int64 offsets; deeper and growing
cascades; determinism and NaN propagation. Also, without a GPU: the cascade ops' schemas, the
Python route (hf_penalty._kernel_name) and its copy of the level limit.

Not covered (as tests/test_cuda_host_emulation.py): the CUDA compiler and hardware, the host
wrappers' ATen code (dtype dispatch, allocation); the level kernels are emulated in float64 only,
the cascades in float64, float32 and float16 input (bfloat16 is not emulated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ALL_MODES, assert_close
from emulation import (
    MODE_CODE,
    compile_harness,
    from_raw,
    one_thread,  # noqa: F401 (autouse fixture)
    raw,
    run_harness,
    span,
    tensor_in,
)

from wavefuse import reference
from wavefuse.filters import filter_bank
from wavefuse.ops._common import empty_4d
from wavefuse.ops.hf_penalty import check_cascade
from wavefuse.reference import analysis_length

WAVELETS = ["haar", "db2", "db4", "db20"]
# 1 x 1; odd x odd (shorter than db4 and db20); 1 x 9 (one axis of one sample); a plane of several
# 16 x 16 coefficient tiles for every wavelet (37 x 40 -> at least 19 x 20 coefficients) whose
# coarser levels have fewer tiles (partials rows of unequal length).
SIZES = [(1, 1), (3, 5), (1, 9), (37, 40)]
LEVELS = [1, 2, 3]
LAYOUTS = ["contiguous", "channels_last", "strided"]
N, C = 2, 2
TOL = 1e-12


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return compile_harness(tmp_path_factory, "cuda_hf_emulation_harness.cpp")


# ---- tensors in a layout, and the harness's files ------------------------------------------------


def emulate(d: Path, x, filters, mode: str, level: int, p: int, grad=None, bits: int = 32):
    """Write one case; -> fetch() giving the energies (grad None) or grad_x (in x's layout)."""
    d.mkdir(parents=True)
    n, c, h, w = x.shape
    gx = empty_4d(x, n, c, h, w)  # the layout hf_penalty.cu allocates
    fields = [0 if grad is None else 1, MODE_CODE[mode], bits, filters.shape[-1], p, level]
    fields += [n, c, h, w, *x.stride(), span(x), *gx.stride(), span(gx)]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    filters.contiguous().numpy().tofile(d / "filters.bin")
    raw(x).tofile(d / "x.bin")
    if grad is None:
        return lambda: torch.from_numpy(np.fromfile(d / "out_energy.bin")).reshape(n, level, 3)
    grad.contiguous().numpy().tofile(d / "grad.bin")
    return lambda: from_raw(d / "out_gx.bin", gx)


def _valid(h: int, w: int, taps: int, mode: str, level: int) -> bool:
    try:
        check_cascade(h, w, taps, mode, level, "x")
    except ValueError:
        return False
    return True


def _sign_fragile(h: int, w: int, taps: int, mode: str, level: int) -> bool:
    """Whether some level reads an axis of one sample in a mode that extends it to a constant:
    the detail coefficients are then sums of taps times one value, pure rounding noise, and
    their sum of |d| (p = 1) and sign (its gradient) depend on the summation order, not on the
    kernel being right. Such cases run with p = 2 (noise squared is far below the tolerance)."""
    for _ in range(level):
        if mode != "zero" and min(h, w) == 1:
            return True
        h, w = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    return False


def _cases(mode: str, backward: bool):
    num = 0
    for wave in WAVELETS:
        taps = filter_bank(wave, "dec", torch.float64).shape[-1]
        for h, w in SIZES:
            for level in LEVELS:
                if not _valid(h, w, taps, mode, level):
                    continue
                layout = LAYOUTS[num % 3]
                p = 1 + num % 2
                if p == 1 and _sign_fragile(h, w, taps, mode, level):
                    p = 2
                bits = 64 if num % 4 == 3 else 32
                yield wave, (h, w), level, layout, p, bits
                num += 1


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("op", ["band_energy", "band_energy_backward"])
def test_emulated_kernels_match_reference(harness, tmp_path, op, mode):
    """Every wavelet x size x level (layouts, p and offset widths cycling) of one op and mode,
    float64, every thread of every launch, against the reference at 1e-12."""
    backward = op == "band_energy_backward"
    pending = []
    for num, (wave, (h, w), level, layout, p, bits) in enumerate(_cases(mode, backward)):
        filters = filter_bank(wave, "dec", torch.float64)
        x = tensor_in((N, C, h, w), layout)
        what = f"{op} {mode} {wave} {h}x{w} J={level} p={p} {layout} int{bits}"
        if backward:
            grad = torch.rand(N, level, 3, dtype=torch.float64) + 0.5
            fetch = emulate(tmp_path / f"c{num}", x, filters, mode, level, p, grad, bits)
            expected = reference.band_energy_backward_ref(grad, x, filters, mode, level, p)
        else:
            fetch = emulate(tmp_path / f"c{num}", x, filters, mode, level, p, None, bits)
            expected = reference.band_energy_ref(x, filters, mode, level, p)
        pending.append((tmp_path / f"c{num}", fetch, expected, x, what))
    assert len(pending) >= 20, len(pending)  # reflect rejects the 1-sample axes
    run_harness(harness, [d for d, *_ in pending])
    for _, fetch, expected, x, what in pending:
        got = fetch()
        assert torch.isfinite(got).all(), f"{what}: an output was never written (NaN)"
        if backward:
            assert got.stride() == empty_4d(x, *x.shape).stride(), what
        assert_close(got, expected, TOL, what)


def test_emulated_kernels_are_deterministic(harness, tmp_path):
    """The same inputs twice: energies and gradients bitwise equal (fixed reduction orders)."""
    x = tensor_in((N, 3, 37, 40), "channels_last")
    filters = filter_bank("db4", "dec", torch.float64)
    grad = torch.rand(N, 2, 3, dtype=torch.float64)
    fetches = []
    for run in range(2):
        fetches.append(emulate(tmp_path / f"e{run}", x, filters, "symmetric", 2, 2))
        fetches.append(emulate(tmp_path / f"g{run}", x, filters, "symmetric", 2, 1, grad))
    run_harness(harness, [tmp_path / f"{k}{run}" for run in range(2) for k in "eg"])
    e0, g0, e1, g1 = (f() for f in fetches)
    assert torch.equal(e0, e1) and torch.equal(g0, g1)
    assert_close(e0, reference.band_energy_ref(x, filters, "symmetric", 2, 2), TOL, "energies")


def test_emulated_kernels_keep_nan(harness, tmp_path):
    """A NaN input poisons exactly the energies and gradients that depend on it, for p = 1 too:
    psi(NaN) = NaN * g, as csrc/cpu/hf_penalty.cpp, the Triton kernels and the reference (which
    keeps a NaN d where torch.sign(NaN) is 0); p = 1 and p = 2 poison the same entries."""
    x = tensor_in((1, 2, 9, 12), "contiguous")
    x[0, 1, 4, 5] = float("nan")
    filters = filter_bank("db2", "dec", torch.float64)
    grad = torch.rand(1, 2, 3, dtype=torch.float64)
    args = (filters, "periodic", 2)
    cases = []
    for p in (1, 2):
        e = emulate(tmp_path / f"e{p}", x, *args, p)
        g = emulate(tmp_path / f"g{p}", x, *args, p, grad)
        cases.append((p, e, g))
    run_harness(harness, [tmp_path / f"{k}{p}" for p in (1, 2) for k in "eg"])
    poisoned = reference.band_energy_backward_ref(grad, x, *args, 2).isnan()
    assert poisoned.any() and not poisoned.all()
    for p, e, g in cases:
        energies = e()
        assert energies[0].isnan().all(), f"p={p}: every band of every level sees the NaN"
        got = g()
        expected = reference.band_energy_backward_ref(grad, x, *args, p)
        assert torch.equal(expected.isnan(), poisoned), f"p={p}: the reference's NaN pattern"
        assert torch.equal(got.isnan(), poisoned), f"p={p}: NaN pattern"
        assert_close(got[~poisoned], expected[~poisoned], TOL, f"p={p} finite part")


# ---- the one-launch cascade (csrc/cuda/hf_cascade_body.cuh) --------------------------------------
# tests/cuda_hf_cascade_emulation_harness.cpp runs energy_cascade_block and grad_cascade_block
# themselves (one block per plane, every phase for all threads before the next: their own loops)
# and, after the forward, rows_kernel's phases over the (N, J, 3, C) partials. The scratch, the
# partials, the outputs and shared memory start as NaN.

CASCADE_WAVES = ["haar", "db2", "db4", "sym5", "coif3", "db20"]
# narrower than most filters (levels grow outside periodization), one sample along an axis, odd
# x odd with two column tiles at level 1 for the short filters, even x even with several
# row and column tiles at the first levels
CASCADE_SIZES = [(3, 5), (1, 9), (19, 37), (40, 70)]
CASCADE_LEVELS = [1, 2, 3, 5]
CASCADE_DTYPES = [torch.float64, torch.float32]
CASCADE_LAYOUTS = ["contiguous", "channels_last", "strided"]
# relative to max |expected|: float64 rounding only; float32 sums of up to a few thousand terms
# over up to 5 levels of float32 rounding, against float64 on the same (float32) values
CASCADE_TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
CASCADE_N, CASCADE_C = 2, 3


@pytest.fixture(scope="module")
def cascade_harness(tmp_path_factory) -> Path:
    return compile_harness(tmp_path_factory, "cuda_hf_cascade_emulation_harness.cpp")


def emulate_cascade(d: Path, x, filters, mode: str, level: int, p: int, grad=None, bits=32):
    """Write one cascade case (x float64, float32 or float16; the compute dtype is float64 for
    float64, else float32, as the kernels' instantiations);
    -> fetch() giving the energies (grad None) or grad_x in the layout hf_penalty.cu allocates."""
    d.mkdir(parents=True)
    n, c, h, w = x.shape
    gx = empty_4d(x, n, c, h, w).double()
    dtype = {torch.float64: 0, torch.float32: 1, torch.float16: 2}[x.dtype]
    fields = [0 if grad is None else 1, dtype, bits, MODE_CODE[mode], filters.shape[-1], p, level]
    fields += [n, c, h, w, *x.stride(), span(x), *gx.stride(), span(gx)]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    filters.double().contiguous().numpy().tofile(d / "filters.bin")
    raw(x).astype(np.float64).tofile(d / "x.bin")
    if grad is None:
        return lambda: torch.from_numpy(np.fromfile(d / "out_energy.bin")).reshape(n, level, 3)
    grad.double().contiguous().numpy().tofile(d / "grad.bin")
    return lambda: from_raw(d / "out_gx.bin", gx)


def _cascade_cases(mode: str, backward: bool):
    """Every wavelet x size x level valid in the mode; dtype, p and the offset width rotate
    through their 8 combinations, the layout (period 3) across them."""
    num = 0
    for wave in CASCADE_WAVES:
        taps = filter_bank(wave, "dec", torch.float64).shape[-1]
        for h, w in CASCADE_SIZES:
            for level in CASCADE_LEVELS:
                if not _valid(h, w, taps, mode, level):
                    continue
                dtype = CASCADE_DTYPES[num % 2]
                p = 1 + (num // 2) % 2
                bits = 64 if (num // 4) % 2 else 32
                # p = 1's gradient is sign(d): a d at rounding level (a constant extension of
                # one sample, or float32 against the float64 reference) may flip it
                fragile = _sign_fragile(h, w, taps, mode, level)
                if p == 1 and (fragile or (backward and dtype == torch.float32)):
                    p = 2
                layout = CASCADE_LAYOUTS[num % 3]
                yield wave, (h, w), level, layout, dtype, p, bits
                num += 1


def _cascade_input(shape, layout: str, dtype, seed: int) -> torch.Tensor:
    """tensor_in's layouts in dtype (the strided view taken after the cast, which would make it
    contiguous)."""
    torch.manual_seed(seed)
    if layout == "strided":
        base = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64).to(dtype)
        return base[..., 1::2]
    return tensor_in(shape, layout).to(dtype)  # keeps channels_last


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("op", ["band_energy", "band_energy_backward"])
def test_emulated_cascade_matches_reference(cascade_harness, tmp_path, op, mode):
    """The one-launch cascade of one op and mode: haar, db2, db4, sym5, coif3, db20 x sizes
    (narrower than the filter, 1 x 9, 19 x 37, 40 x 70) x levels 1, 2, 3, 5, with float64 and
    float32, p 1 and 2, contiguous, channels_last and strided input and int32 and int64 offsets
    rotating; against the reference in float64 on the same values."""
    backward = op == "band_energy_backward"
    pending = []
    for num, (wave, (h, w), level, layout, dtype, p, bits) in enumerate(
        _cascade_cases(mode, backward)
    ):
        x = _cascade_input((CASCADE_N, CASCADE_C, h, w), layout, dtype, num)
        filters = filter_bank(wave, "dec", dtype)
        f64 = filter_bank(wave, "dec", torch.float64)
        d = tmp_path / f"c{num}"
        what = f"cascade {op} {mode} {wave} {h}x{w} J={level} p={p} {dtype} {layout} int{bits}"
        if backward:
            grad = torch.rand(CASCADE_N, level, 3, dtype=torch.float64).to(dtype) + 0.5
            fetch = emulate_cascade(d, x, filters, mode, level, p, grad, bits)
            expected = reference.band_energy_backward_ref(
                grad.double(), x.double(), f64, mode, level, p
            )
        else:
            fetch = emulate_cascade(d, x, filters, mode, level, p, None, bits)
            expected = reference.band_energy_ref(x.double(), f64, mode, level, p)
        pending.append((d, fetch, expected, x, what, CASCADE_TOL[dtype]))
    assert len(pending) >= 40, len(pending)
    run_harness(cascade_harness, [c[0] for c in pending])
    for _, fetch, expected, x, what, tol in pending:
        got = fetch()
        assert torch.isfinite(got).all(), f"{what}: an output was never written (NaN)"
        if backward:
            assert got.stride() == empty_4d(x, *x.shape).stride(), what
        assert_close(got, expected, tol, what)


@pytest.mark.parametrize("op", ["band_energy", "band_energy_backward"])
def test_emulated_cascade_half_input(cascade_harness, tmp_path, op):
    """x in float16 (read at the first level only, grad_x written in float16), everything else in
    float32: the kernels' <c10::Half, index_t> instantiations, against the reference in float64
    on the same rounded values (grad_x: float16 rounding of the result)."""
    cases = []
    for k, (wave, mode, level, shape, layout) in enumerate(
        [("db4", "symmetric", 3, (2, 3, 40, 70), "channels_last"),
         ("sym5", "zero", 2, (1, 2, 3, 5), "contiguous"),
         ("haar", "periodization", 2, (2, 2, 19, 37), "strided"),
         ("coif3", "reflect", 3, (1, 3, 19, 37), "channels_last")]
    ):  # fmt: skip
        x = _cascade_input(shape, layout, torch.float16, 200 + k)
        filters = filter_bank(wave, "dec", torch.float32)
        f64 = filter_bank(wave, "dec", torch.float64)
        what = f"{op} float16 {wave} {mode} {shape} J={level} {layout}"
        if op == "band_energy":
            fetch = emulate_cascade(tmp_path / f"c{k}", x, filters, mode, level, 1 + k % 2, None)
            expected = reference.band_energy_ref(x.double(), f64, mode, level, 1 + k % 2)
            cases.append((fetch, expected, x, what, CASCADE_TOL[torch.float32]))
        else:
            grad = torch.rand(shape[0], level, 3, dtype=torch.float32)
            fetch = emulate_cascade(tmp_path / f"c{k}", x, filters, mode, level, 2, grad, 64)
            expected = reference.band_energy_backward_ref(
                grad.double(), x.double(), f64, mode, level, 2
            )
            cases.append((fetch, expected, x, what, 1e-3))
    run_harness(cascade_harness, sorted(tmp_path.iterdir()))
    for fetch, expected, x, what, tol in cases:
        got = fetch()
        assert torch.isfinite(got).all(), f"{what}: an output was never written (NaN)"
        if op != "band_energy":
            assert got.stride() == empty_4d(x, *x.shape).stride(), what
            assert torch.equal(got, got.half().double()), f"{what}: grad_x is not float16"
        assert_close(got, expected, tol, what)


def test_emulated_cascade_deep_and_growing(cascade_harness, tmp_path):
    """Deeper than CASCADE_LEVELS: 1 x 1 with db4 grows to 4 x 4, 5 x 5, ... (the band scratch
    sized by the largest level, not the first), and db2 on 40 x 70 over 7 levels (sizes shrink to
    a few samples), both ops, float64."""
    cases = []
    for k, (wave, shape, mode, level) in enumerate(
        [("db4", (2, 2, 1, 1), "symmetric", 6), ("db4", (1, 3, 2, 3), "periodic", 5),
         ("db2", (2, 1, 40, 70), "reflect", 7), ("db2", (1, 2, 40, 70), "periodization", 8)]
    ):  # fmt: skip
        x = _cascade_input(shape, "contiguous", torch.float64, 100 + k)
        filters = filter_bank(wave, "dec", torch.float64)
        grad = torch.rand(shape[0], level, 3, dtype=torch.float64)
        e = emulate_cascade(tmp_path / f"e{k}", x, filters, mode, level, 2)
        g = emulate_cascade(tmp_path / f"g{k}", x, filters, mode, level, 2, grad)
        what = f"{wave} {mode} {shape} J={level}"
        cases.append((e, reference.band_energy_ref(x, filters, mode, level, 2), what))
        expected = reference.band_energy_backward_ref(grad, x, filters, mode, level, 2)
        cases.append((g, expected, what + " grad"))
    run_harness(cascade_harness, sorted(tmp_path.iterdir()))
    for fetch, expected, what in cases:
        assert_close(fetch(), expected, 1e-12, what)


def test_emulated_cascade_is_deterministic_and_keeps_nan(cascade_harness, tmp_path):
    """Twice the same inputs: bitwise equal (fixed orders, no atomics). A NaN input poisons
    exactly the entries the reference poisons (p = 1 and 2), in its own plane only."""
    x = tensor_in((2, 3, 37, 40), "channels_last")
    filters = filter_bank("db4", "dec", torch.float64)
    grad = torch.rand(2, 2, 3, dtype=torch.float64)
    fetches = []
    for run in range(2):
        for k, g in (("e", None), ("g", grad)):
            fetches.append(
                emulate_cascade(tmp_path / f"{k}{run}", x, filters, "symmetric", 2, 1, g)
            )
    bad = tensor_in((1, 2, 9, 12), "contiguous")
    bad[0, 1, 4, 5] = float("nan")
    f2 = filter_bank("db2", "dec", torch.float64)
    g2 = torch.rand(1, 2, 3, dtype=torch.float64)
    nan_cases = [
        (p, emulate_cascade(tmp_path / f"ne{p}", bad, f2, "periodic", 2, p),
         emulate_cascade(tmp_path / f"ng{p}", bad, f2, "periodic", 2, p, g2))
        for p in (1, 2)
    ]  # fmt: skip
    run_harness(cascade_harness, sorted(tmp_path.iterdir()))
    e0, g0, e1, g1 = (f() for f in fetches)
    assert torch.equal(e0, e1) and torch.equal(g0, g1)
    assert_close(e0, reference.band_energy_ref(x, filters, "symmetric", 2, 1), TOL, "energies")
    poisoned = reference.band_energy_backward_ref(g2, bad, f2, "periodic", 2, 2).isnan()
    assert poisoned.any() and not poisoned[0, 0].any()
    for p, e, g in nan_cases:
        assert e()[0].isnan().all(), f"p={p}: every band of every level sees the NaN"
        got = g()
        expected = reference.band_energy_backward_ref(g2, bad, f2, "periodic", 2, p)
        assert torch.equal(got.isnan(), poisoned), f"p={p}: NaN pattern"
        assert_close(got[~poisoned], expected[~poisoned], TOL, f"p={p} finite part")


# ---- the cascade's ops and route (no GPU needed) -------------------------------------------------


def test_cascade_level_limit_matches_the_cuda_constant():
    """wavefuse/ops/hf_penalty.py routes by a copy of the cascade's level limit."""
    import re

    from wavefuse.ops import hf_penalty

    text = (Path(__file__).resolve().parents[1] / "csrc/cuda/hf_cascade_body.cuh").read_text()
    limit = int(re.search(r"constexpr int kHfCascadeMaxLevels = (\d+);", text).group(1))
    assert hf_penalty._CUDA_CASCADE_MAX_LEVELS == limit


@pytest.mark.parametrize("name", ["band_energy", "band_energy_backward"])
def test_cascade_op_schema_is_the_level_ops(name):
    """_<name>_cascade_kernel takes exactly the level op's arguments and returns one Tensor; it
    has a CUDA kernel in a CUDA build (which the route's check sees) and no CPU kernel."""
    pytest.importorskip("wavefuse._C")
    from wavefuse import backends
    from wavefuse.ops import hf_penalty

    level = getattr(torch.ops.wavefuse, f"_{name}_kernel").default._schema
    cascade = getattr(torch.ops.wavefuse, f"_{name}_cascade_kernel").default._schema
    assert cascade.name == f"wavefuse::_{name}_cascade_kernel"
    args = [(a.name, str(a.type)) for a in cascade.arguments]
    assert args == [(a.name, str(a.type)) for a in level.arguments]
    assert [str(r.type) for r in cascade.returns] == ["Tensor"]
    assert not any(a.alias_info is not None for a in cascade.arguments)
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert not has(cascade.name, "CPU")
    assert has(cascade.name, "CUDA") == torch.ops.wavefuse._built_with_cuda()
    assert hf_penalty._has_cuda_cascade(name) == torch.ops.wavefuse._built_with_cuda()
    # an extension without the op's schema at all (built before it): no kernel, no error
    assert not backends._has_kernel(f"{name}_no_such_route", "CUDA")


@pytest.mark.parametrize(
    "per_sm, built, expected",
    [(0, True, "_cascade_kernel"), (10**9, True, "_kernel"), (0, False, "_kernel")],
)
def test_cuda_route_follows_cascade_fits(monkeypatch, per_sm, built, expected):
    """hf_penalty._kernel_name: the cascade op where separable.cascade_fits (CPU tensors count
    one SM) and the extension has it (an older build: the level ops), the level ops otherwise,
    for level 0 and beyond the cascade's limit, and for every backend but cuda."""
    from wavefuse.ops import hf_penalty, separable

    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", per_sm)
    monkeypatch.setattr(hf_penalty, "_has_cuda_cascade", lambda name: built)
    x = torch.zeros(2, 3, 8, 8)
    f = filter_bank("db2", "dec", torch.float32)
    grad = torch.zeros(2, 2, 3)
    limit = hf_penalty._CUDA_CASCADE_MAX_LEVELS
    name = hf_penalty._kernel_name
    assert name("cuda", "band_energy", (x, f, "zero", 2, 2)) == f"_band_energy{expected}"
    assert name("cuda", "band_energy_backward", (grad, x, f, "zero", 2, 2)) == (
        f"_band_energy_backward{expected}"
    )
    for level in (0, limit + 1):
        assert name("cuda", "band_energy", (x, f, "zero", level, 2)) == "_band_energy_kernel"
    assert name("cpu", "band_energy", (x, f, "zero", 2, 2)) == "_band_energy_kernel"
