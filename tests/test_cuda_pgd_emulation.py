"""The CUDA PGD-step kernels' bodies, run on the CPU: no GPU needed.

csrc/cuda/pgd_step.cu's kernels only compute their block and thread indices and call the
``__host__ __device__`` phase functions of csrc/cuda/pgd_step_body.cuh, with ``__syncthreads()``
between phases. tests/cuda_pgd_emulation_harness.cpp compiles those functions with g++ (plain
C++17, no FMA contraction) and runs them serially for every thread of the grid that pgd_step.cu
computes (the same ``linf_geometry`` / ``l2_geometry``), phase by phase per block and launch by
launch. The L2 partial sums and shared memory start as NaN, so a value read before it is written
fails the comparison; x_adv's whole storage is compared, so a write into the gaps of a strided view
fails too. Compared with ``reference.pgd_step_ref``: Linf bit for bit (float64 and float32: the
update's products and sums are rounded one by one, as torch's ops), L2 to 1e-12 / 1e-6 (the norms'
summation order differs).

The fused Haar wavelet_pgd_step (``haar_step_*`` bodies, one launch for Linf, three for L2) runs
the same way over the grid of ``haar_step_geometry``: per block the sample reduction, then per
tile (shared memory NaN-filled before each) the load through the padded-signal map, the J mean
levels and the tile phase, then the block's partial. Compared with
``reference.wavelet_pgd_step_ref`` with PyWavelets' haar bank: L2 to 1e-12 / 1e-6; Linf bit for bit
except where the reference's filtered gradient is within rounding of zero (its sign may differ:
the fused form sums block means, the reference runs the transforms). Every mode, levels 1-3, 5
and 6, odd, 1-wide and 1 x 1 planes, planes of several tiles, samples with more tiles than
partial slots, float and per-level hf_scale, float and tensor bounds, every layout, int32 and
int64 offsets, NaN spreading, bitwise repeatability.

The separable wavelet step (``sep_step_*`` bodies: other banks, and Haar beyond 6 levels, on
planes up to 64 x 64) runs over the grid of ``sep_step_geometry`` with the matrix pairs that
wavefuse/ops/separable.py builds: per plane the load, the init, per pair the right and the left
phase (their fma_rn chains are std::fma here: the device's bits), the plane phase. Compared with
``reference.wavelet_pgd_step_ref`` as the Haar step: every mode x db2/db4/sym5/coif1/haar J=7,
odd, 1-wide, 1 x 1 and 64 x 64 planes, more planes than partial slots, NaN (its whole plane),
repeatability.

The whole-cascade approximation chain (csrc/cuda/cascade_body.cuh's ``cascade_block``, the one
launch of the chain's filter on planes up to 2^18 samples or 128 planes and more) runs in
tests/cuda_cascade_emulation_harness.cpp through cascade_block itself, whose ``phase`` callable
runs each phase for every thread of the block before the next (the kernel: its own thread, then
``__syncthreads()``), one block per plane. Output, level scratch and shared memory start as NaN.
g' compared with ``reference.scale_details_ref``: db2/db4/sym5/coif3 x every mode x levels 1, 2,
3, 5 x odd and even planes over 64, float64 (1e-12) and float32 (2e-6), three layouts of g, int32
and int64 offsets; scale 1 (g' = g) and a NaN gradient entry.

The chain in pairs of stages (csrc/cuda/pair_body.cuh's ``pair_block``, J launches where the
cascade does not run) runs in tests/cuda_pair_emulation_harness.cpp: the launches of
``pair_plan`` in order, each over its grid of tiles, each block's phases for every thread before
the next; every level buffer, g' and shared memory start as NaN. g' compared with
``reference.scale_details_ref``: the cascade's wavelets and modes x levels 1-5 x a plane of one
tile and of several per level, float64 and float32, three layouts, int32 and int64 offsets;
scale 1, db20 (a plane narrower than the filter, and several tiles) and a NaN entry.

What this does not cover: the CUDA compiler and hardware (device code generation, the ``__*_rn``
intrinsics themselves, half-type conversions, launch limits, dynamic shared memory), the host
wrappers' ATen code (layout, index-type and fused-path choice are recomputed here by the same
rules), and the composition that wavelet_pgd_step runs for other wavelets and for Haar deeper
than 6 levels (the transform kernels, emulated by test_cuda_host_emulation.py, then this step).
Only float64 and float32 are emulated.
"""

from __future__ import annotations

import math
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close, eps_telling_the_divisions_apart
from emulation import (
    MODE_CODE,
    compile_harness,
    one_thread,  # noqa: F401 (autouse fixture)
    run_harness,
    span,
)

from wavefuse import reference
from wavefuse.filters import filter_bank
from wavefuse.ops import separable

# (N, C, H, W): a single element, odd sizes, one with several Linf blocks (1,024 elements each)
# and several L2 chunks per sample (256-element chunks: 12 per sample), one with 118 chunks.
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 2, 40, 37), (2, 3, 100, 100)]
LAYOUTS = ["contiguous", "channels_last", "strided", "mixed"]
DTYPES = [torch.float64, torch.float32]
BOUND_KINDS = ["floats", "per_sample", "per_channel", "per_sample_channel"]
L2_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
THREADS = 256  # kThreads of pgd_step_body.cuh
LINF_BLOCK = 4 * THREADS  # kLinfBlockElems


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    # -ffp-contract=off: the bodies' *_rn helpers are plain operations on the host; no FMA there.
    return compile_harness(
        tmp_path_factory, "cuda_pgd_emulation_harness.cpp", ["-ffp-contract=off"]
    )


# ---- tensors in a layout, raw storage to and from the harness ------------------------------------


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t (N, C, H, W) in ``layout``: contiguous, channels_last or a strided, offset view."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    n, c, h, w = t.shape
    big = torch.full((n, c + 1, h + 2, 2 * w + 1), 7.0, dtype=t.dtype)
    view = big[:, 1:, 1 : h + 1, 1::2]
    view.copy_(t)
    return view


def _raw(t: torch.Tensor) -> torch.Tensor:
    """The storage that t's strides address, from its first element on (a view)."""
    return torch.as_strided(t, (span(t),), (1,), t.storage_offset())


def _bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", float(value)))[0]


def _inputs(shape, dtype, seed=0, spread=0.1):
    """x in [0, 1], x_adv near it (some at the bounds), a gradient with a zero entry."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, dtype=torch.float64, generator=gen)
    x_adv = (x + spread * torch.randn(*shape, dtype=torch.float64, generator=gen)).clamp(0, 1)
    g = torch.randn(*shape, dtype=torch.float64, generator=gen)
    g.view(-1)[0] = 0.0
    return x_adv.to(dtype), g.to(dtype), x.to(dtype)


def _bounds(kind: str, norm: str, n: int, c: int, dtype):
    """(eps, alpha, lo, hi) of one kind: floats, or tensors (N, 1, 1, 1) / (1, C, 1, 1) / (N, C)."""
    eps, alpha = (0.03, 0.01) if norm == "Linf" else (0.5, 0.2)
    lo, hi = 0.05, 0.95
    if kind == "floats":
        return eps, alpha, lo, hi
    per_n = torch.linspace(0.5, 1.5, n, dtype=dtype).view(n, 1, 1, 1)
    per_c = torch.linspace(0.7, 1.3, c, dtype=dtype).view(1, c, 1, 1)
    if kind == "per_sample":
        return eps * per_n, alpha * per_n, lo * per_n, 0.9 + 0.1 * per_n / 1.5
    if kind == "per_channel":
        eps_t = eps * per_n if norm == "L2" else eps * per_c  # L2: eps per sample only
        return eps_t, alpha * per_c, lo * per_c - 0.05, hi
    both = per_n * per_c
    eps_t = eps * per_n if norm == "L2" else eps * both
    return eps_t, alpha * both, 0.1 * both - 0.1, 0.8 + 0.1 * both


HAAR_MAX_LEVELS = 6  # cuda_haar::kHaarMaxLevels
HAAR_MIN_SIDE = 32  # cuda_haar::kHaarMinSide
MAX_PARTIALS = 256  # kMaxPartials


def _bound_tensor(b, path: Path) -> tuple[int, int, int]:
    """A tensor bound's (sn, sc, span) as host.h's bound_arg passes them, its raw storage written
    to path; (0, 0, 0) for a float."""
    if not isinstance(b, torch.Tensor):
        return 0, 0, 0
    _raw(b).double().numpy().tofile(path)
    return (b.stride(0) if b.shape[0] > 1 else 0), (b.stride(1) if b.shape[1] > 1 else 0), span(b)


def _write_case(
    d: Path, x_adv, g, x, bounds, norm: str, index_bits: int, haar=None, sep=None
) -> None:
    """One harness case; haar = (mode, hf_scale list) for the fused Haar wavelet step, sep =
    separable.Terms (unpadded, in x_adv's dtype) for the separable wavelet step."""
    d.mkdir(parents=True)
    cl = not x_adv.is_contiguous() and x_adv.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    flat = all(t.is_contiguous(memory_format=fmt) for t in (x_adv, g, x))
    dtype_code = {torch.float64: 0, torch.float32: 1}[x_adv.dtype]
    fields = [dtype_code, int(norm == "L2"), index_bits, int(cl), int(flat), *x_adv.shape]
    for t in (x_adv, g, x):
        fields += [*t.stride(), span(t)]
    for name, b in zip(("eps", "alpha", "lo", "hi"), bounds):
        sn, sc, n = _bound_tensor(b, d / f"{name}.bin")
        fields += [1, 0, sn, sc, n] if n else [0, _bits(b), 0, 0, 0]
    if haar is not None:
        mode, scales = haar
        fields += [1, MODE_CODE[mode], len(scales), *map(_bits, scales)]
    elif sep is not None:
        fields += [2, sep.count, _bits(sep.identity)]
        sep.left.double().numpy().tofile(d / "left.bin")
        sep.right_t.double().numpy().tofile(d / "right_t.bin")
    else:
        fields.append(0)
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    for name, t in (("xa", x_adv), ("g", g), ("x", x)):
        _raw(t).double().numpy().tofile(d / f"{name}.bin")


def _result(d: Path, x_adv: torch.Tensor) -> torch.Tensor:
    """The emulated x_adv (same shape and strides); the storage outside it must be untouched."""
    out = torch.from_numpy(np.fromfile(d / "out_xa.bin", dtype=np.float64)).to(x_adv.dtype)
    assert out.numel() == span(x_adv), f"{d.name}: {out.numel()} values"
    got = torch.as_strided(out, x_adv.shape, x_adv.stride(), 0)
    mask = torch.ones(out.numel(), dtype=torch.bool)
    torch.as_strided(mask, x_adv.shape, x_adv.stride(), 0).fill_(False)
    before = _raw(x_adv)
    assert torch.equal(out[mask], before[mask]), f"{d.name}: wrote outside x_adv"
    return got


def _tensor_layouts(layout: str) -> tuple[str, str, str]:
    """Layouts of (x_adv, grad, x_nat): one for all, or three different ones ("mixed")."""
    if layout == "mixed":
        return "channels_last", "strided", "contiguous"
    return layout, layout, layout


def _check(got, expected, norm: str, what: str) -> None:
    if norm == "Linf":
        bad = ~((got == expected) | (got.isnan() & expected.isnan()))
        assert not bad.any(), f"{what}: {int(bad.sum())} elements differ, first {bad.nonzero()[0]}"
    else:
        assert_close(got, expected, L2_TOL[got.dtype], what)


# ---- the step against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_step_matches_the_reference(harness, tmp_path, norm, layout, dtype):
    """Every shape x bound kind in one harness run; int64 offsets on the odd shape."""
    cases = []
    for s, shape in enumerate(SHAPES):
        for kind in BOUND_KINDS:
            for index_bits in (32, 64) if shape == (2, 3, 5, 7) else (32,):
                x_adv, g, x = _inputs(shape, dtype, seed=s)
                la, lg, lx = _tensor_layouts(layout)
                x_adv, g, x = _layout(x_adv, la), _layout(g, lg), _layout(x, lx)
                bounds = _bounds(kind, norm, shape[0], shape[1], dtype)
                d = tmp_path / f"{s}_{kind}_{index_bits}"
                _write_case(d, x_adv, g, x, bounds, norm, index_bits)
                cases.append((d, x_adv, g, x, bounds, f"{shape} {kind} int{index_bits}"))
    run_harness(harness, [c[0] for c in cases])
    for d, x_adv, g, x, (eps, alpha, lo, hi), what in cases:
        got = _result(d, x_adv)
        expected = reference.pgd_step_ref(x_adv, g, x, eps, alpha, lo, hi, norm)
        _check(got, expected, norm, f"{norm} {layout} {dtype} {what}")
        if x_adv.numel() > 1:
            assert not torch.equal(got, x_adv), what


def test_geometry_covers_several_blocks_and_partials():
    """The shapes above exercise the multi-block paths (the geometry as l2_geometry computes it)."""
    n, c, h, w = SHAPES[-1]
    m = c * h * w
    per = -(-m // 256)
    chunk = THREADS * -(-per // THREADS)
    assert n * m > 4 * LINF_BLOCK and -(-m // chunk) > 100
    n, c, h, w = SHAPES[2]
    assert -(-(c * h * w) // THREADS) > 1


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_nan_gradient_propagates_and_zero_delta(harness, tmp_path, norm):
    """A NaN gradient entry: Linf that element is NaN, L2 its whole sample; the other sample is
    finite. eps = 0 with x_adv = x and g = 0: the step leaves x (factor 1, not 0 * inf)."""
    x_adv, g, x = _inputs((2, 2, 6, 5), torch.float64)
    g[0, 1, 3, 2] = math.nan
    _write_case(tmp_path / "nan", x_adv, g, x, (0.03, 0.01, 0.0, 1.0), norm, 32)
    zero = torch.zeros_like(g)
    _write_case(tmp_path / "zero", x, zero, x, (0.0, 0.1, 0.0, 1.0), norm, 32)
    run_harness(harness, [tmp_path / "nan", tmp_path / "zero"])
    got = _result(tmp_path / "nan", x_adv)
    assert torch.isnan(got[0, 1, 3, 2]) and torch.isfinite(got[1]).all()
    if norm == "L2":
        assert torch.isnan(got[0]).all()
    expected = reference.pgd_step_ref(x_adv, g, x, 0.03, 0.01, 0.0, 1.0, norm)
    _check(got.nan_to_num(), expected.nan_to_num(), norm, "NaN gradient")
    assert torch.equal(_result(tmp_path / "zero", x), x)


def test_l2_projection_factor_is_torch_scalar_division(harness, tmp_path):
    """The reference's ``eps / delta_norms`` with a Python eps is torch's scalar division, the
    reciprocal times eps (l2_factor's mul_rn(div_rn(1, dn), eps)), which differs from a true
    division in the last bit for some eps. With norms that are exact in any order of summation
    (one gradient entry 2^20: g / (||g|| + 1e-10) = 1; delta = (3/16, 1/4), ||delta|| = 5/16) the
    L2 step has no rounding excuse: the reference's bits, for eps values where the two divisions
    give different steps (found here, so the test can fail)."""
    dirs, cases = [], []
    for dtype in DTYPES:
        apart = eps_telling_the_divisions_apart([0.25, 3 / 16], 5 / 16, dtype, 313)
        x = torch.full((2, 2, 3, 4), 0.5, dtype=dtype)
        x_adv = x.clone()
        x_adv[:, 1, 2, 3] += 3 / 16
        g = torch.zeros_like(x)
        g[:, 0, 1, 1] = 2.0**20
        for k, eps in enumerate(apart[:6]):
            d = tmp_path / f"{dtype}-{k}".replace("torch.", "")
            _write_case(d, x_adv, g, x, (eps, 0.25, 0.0, 1.0), "L2", 32)
            dirs.append(d)
            cases.append((x_adv, g, x, eps))
    run_harness(harness, dirs)
    for d, (x_adv, g, x, eps) in zip(dirs, cases):
        expected = reference.pgd_step_ref(x_adv, g, x, eps, 0.25, 0.0, 1.0, "L2")
        got = _result(d, x_adv)
        assert torch.equal(got, expected), (d.name, (got - expected).abs().max())


def test_lo_above_hi_gives_hi_as_torch_clamp(harness, tmp_path):
    """Bounds the Python layer does not value-check (tensors on a GPU, traced calls) can have
    lo > hi; the kernel then gives hi, as the reference's torch.clamp(torch.clamp(v, min=lo),
    max=hi) does (docs/edge_policies.md)."""
    x_adv, g, x = _inputs((2, 3, 5, 4), torch.float64)
    dirs = []
    for norm in ("Linf", "L2"):
        d = tmp_path / norm
        _write_case(d, x_adv, g, x, (0.2, 0.05, 0.7, 0.3), norm, 32)
        dirs.append(d)
    run_harness(harness, dirs)
    for d, norm in zip(dirs, ("Linf", "L2")):
        got = _result(d, x_adv)
        assert torch.equal(got, torch.full_like(got, 0.3)), norm


def test_float64_bounds_are_not_rounded_to_float32(harness, tmp_path):
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    eps = 0.1 + 1e-12
    _write_case(tmp_path / "c", x, torch.ones_like(x), x, (eps, 1.0, 0.0, 1.0), "Linf", 32)
    run_harness(harness, [tmp_path / "c"])
    assert torch.equal(_result(tmp_path / "c", x), torch.full_like(x, 0.5 + eps))


def test_repeated_runs_are_bitwise_identical(harness, tmp_path):
    """The same L2 case twice (several chunks per sample): identical bytes."""
    x_adv, g, x = _inputs((2, 3, 40, 37), torch.float32)
    _write_case(tmp_path / "a", x_adv, g, x, (0.5, 0.2, 0.0, 1.0), "L2", 32)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    run_harness(harness, [tmp_path / "a", tmp_path / "b"])
    first = (tmp_path / "a" / "out_xa.bin").read_bytes()
    assert first == (tmp_path / "b" / "out_xa.bin").read_bytes()


# ---- the fused Haar wavelet step against the reference --------------------------------------------

LINF_FLIP_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _haar_geometry(shape, level: int, l2: bool) -> tuple[int, int]:
    """(tiles per sample Q, slots per sample P) as pgd_step_body.cuh's haar_step_geometry."""
    _, c, h, w = shape
    side = max(2**level, HAAR_MIN_SIDE)
    hp, wp = -(-h // 2**level) * 2**level, -(-w // 2**level) * 2**level
    q = c * -(-hp // side) * -(-wp // side)
    return q, min(q, MAX_PARTIALS) if l2 else q


def _haar_expected(x_adv, g, x, bounds, mode, level, scales, norm):
    filters = filter_bank("haar", "dec", x_adv.dtype)
    eps, alpha, lo, hi = bounds
    expected = reference.wavelet_pgd_step_ref(
        x_adv, g, x, eps, alpha, filters, mode, level, scales, lo, hi, norm
    )
    return expected, reference.scale_details_ref(g, filters, mode, level, scales)


def _check_haar(got, expected, g_ref, norm: str, what: str) -> None:
    """L2 to L2_TOL; Linf bit for bit except where the reference's g' is within rounding of 0."""
    if norm == "L2":
        assert_close(got, expected, L2_TOL[got.dtype], what)
        return
    bad = ~((got == expected) | (got.isnan() & expected.isnan()))
    scale = float(g_ref.abs().nan_to_num(0.0).max()) or 1.0
    near_zero = g_ref.abs() <= LINF_FLIP_TOL[got.dtype] * scale
    hard = bad & ~near_zero
    assert not hard.any(), f"{what}: {int(hard.sum())} elements differ, first {hard.nonzero()[0]}"
    assert int(bad.sum()) <= 2, f"{what}: {int(bad.sum())} sign flips"


def _haar_cases(tmp_path, norm, dtype, plan):
    """Writes one harness case per (tag, shape, mode, level, scales, layout, bound kind, index
    bits) of plan; returns [(dir, x_adv, g, x, bounds, mode, level, scales, what)]."""
    cases = []
    for i, (shape, mode, level, scales, layout, kind, index_bits) in enumerate(plan):
        x_adv, g, x = _inputs(shape, dtype, seed=i)
        la, lg, lx = _tensor_layouts(layout)
        x_adv, g, x = _layout(x_adv, la), _layout(g, lg), _layout(x, lx)
        bounds = _bounds(kind, norm, shape[0], shape[1], dtype)
        scales = [float(scales)] * level if not isinstance(scales, list) else scales
        d = tmp_path / f"h{i}"
        _write_case(d, x_adv, g, x, bounds, norm, index_bits, haar=(mode, scales))
        what = f"haar {norm} {dtype} {shape} {mode} J={level} {scales} {layout} {kind} {index_bits}"
        cases.append((d, x_adv, g, x, bounds, mode, level, scales, what))
    return cases


def _run_haar_cases(harness, cases, norm) -> None:
    run_harness(harness, [c[0] for c in cases])
    for d, x_adv, g, x, bounds, mode, level, scales, what in cases:
        got = _result(d, x_adv)
        expected, g_ref = _haar_expected(x_adv, g, x, bounds, mode, level, scales, norm)
        _check_haar(got, expected, g_ref, norm, what)
        assert torch.equal(got, x_adv) == torch.equal(expected, x_adv), what


def test_haar_step_inf_gradient_with_equal_scales(harness, tmp_path):
    """An infinite gradient entry, one scale for every level (zero coefficients between levels):
    the skipped terms never make 0 * inf = NaN, so no NaN where the reference has none, and the
    same steps elsewhere (Linf; docs/edge_policies.md)."""
    cases = []
    for i, (mode, level, pos) in enumerate(
        [("zero", 2, (3, 2)), ("periodization", 2, (1, 2)), ("symmetric", 3, (0, 0))]
    ):
        x_adv, g, x = _inputs((2, 2, 8, 7), torch.float64, seed=i)
        g[0, 1][pos] = math.inf
        bounds = _bounds("floats", "Linf", 2, 2, torch.float64)
        scales = [0.5] * level
        d = tmp_path / f"inf{i}"
        _write_case(d, x_adv, g, x, bounds, "Linf", 32, haar=(mode, scales))
        cases.append((d, x_adv, g, x, bounds, mode, level, scales))
    run_harness(harness, [c[0] for c in cases])
    for d, x_adv, g, x, bounds, mode, level, scales in cases:
        got = _result(d, x_adv)
        expected, _ = _haar_expected(x_adv, g, x, bounds, mode, level, scales, "Linf")
        assert not (got.isnan() & ~expected.isnan()).any(), mode
        fin = ~expected.isnan()
        assert torch.equal(got[fin], expected[fin]), mode


# odd, 1-high, 1-wide, 1 x 1 planes, and one of several tiles per plane at levels 1-3
HAAR_SHAPES = [(2, 2, 5, 7), (1, 3, 1, 6), (2, 1, 9, 1), (1, 1, 1, 1), (2, 3, 70, 45)]
HAAR_SCALES = [0.0, [0.5, -0.25, 2.0], 0.3, [1.0, 0.0, 0.75]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_step_matches_the_reference(harness, tmp_path, norm, dtype):
    """Every mode x levels 1-3 x shape; scales, layouts, bound kinds and index widths rotate."""
    plan = []
    for mode in MODE_CODE:
        for level in (1, 2, 3):
            for shape in HAAR_SHAPES:
                k = len(plan)
                scales = HAAR_SCALES[k % len(HAAR_SCALES)]
                scales = scales[:level] if isinstance(scales, list) else scales
                layout = LAYOUTS[k % len(LAYOUTS)]
                kind = BOUND_KINDS[(k // len(LAYOUTS)) % len(BOUND_KINDS)]
                plan.append((shape, mode, level, scales, layout, kind, (32, 64)[k % 2]))
    _run_haar_cases(harness, _haar_cases(tmp_path, norm, dtype, plan), norm)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_step_deep_levels(harness, tmp_path, norm):
    """Levels 5 and 6 (tiles of 32 and 64, the 2^J blocks larger than the plane) in every mode,
    float64; level 6 on a plane of two 64 x 64 tiles."""
    plan = []
    for k, mode in enumerate(MODE_CODE):
        plan.append(((1, 2, 11, 7), mode, 5, [0.0, 0.5, 1.5, -1.0, 0.25], LAYOUTS[k % 4],
                     BOUND_KINDS[k % 4], 32))  # fmt: skip
        plan.append(((2, 1, 37, 70), mode, 6, 0.0 if k % 2 else [0.2, 0.0, 0.4, 0.6, 1.0, 0.0],
                     LAYOUTS[(k + 1) % 4], BOUND_KINDS[(k + 2) % 4], 64))  # fmt: skip
    assert _haar_geometry((2, 1, 37, 70), 6, False)[0] == 2
    _run_haar_cases(harness, _haar_cases(tmp_path, norm, torch.float64, plan), norm)


def test_haar_step_more_tiles_than_partial_slots(harness, tmp_path):
    """L2 with 300 tiles per sample: 256 slots, 44 of them summing two tiles (float32, level 1);
    Linf on the same plane (one tile per block)."""
    shape = (2, 3, 300, 310)
    q, p = _haar_geometry(shape, 1, True)
    assert q > p == MAX_PARTIALS
    cases = []
    for norm in ("Linf", "L2"):
        plan = [(shape, "reflect", 1, [0.25], "strided", "per_sample", 32)]
        sub = tmp_path / norm
        sub.mkdir()
        cases.append((norm, _haar_cases(sub, norm, torch.float32, plan)))
    for norm, c in cases:
        _run_haar_cases(harness, c, norm)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_step_nan_spreads_over_its_block(harness, tmp_path, norm):
    """A NaN in grad: NaN over its 2^J x 2^J block (and the pad blocks that copy it), as the
    reference; L2 the whole sample. The other sample is finite and matches."""
    x_adv, g, x = _inputs((2, 2, 11, 9), torch.float64)
    g[0, 1, 5, 8] = math.nan  # in the last, odd column: symmetric's pad copies it
    bounds = (0.03, 0.01, 0.0, 1.0) if norm == "Linf" else (0.5, 0.2, 0.0, 1.0)
    for mode in ("symmetric", "zero"):
        d = tmp_path / mode
        _write_case(d, x_adv, g, x, bounds, norm, 32, haar=(mode, [0.0, 0.5]))
        run_harness(harness, [d])
        got = _result(d, x_adv)
        expected, g_ref = _haar_expected(x_adv, g, x, bounds, mode, 2, [0.0, 0.5], norm)
        assert torch.equal(got.isnan(), expected.isnan()), mode
        assert got.isnan()[0, 1, 4:8, 8].all() and torch.isfinite(got[1]).all(), mode
        if norm == "Linf":
            assert int(got.isnan().sum()) == 4 * 1, mode  # the 4 x 4 block is 4 x 1 in the plane
        _check_haar(got[1], expected[1], g_ref[1], norm, f"NaN {mode}")


def test_haar_step_is_bitwise_repeatable_and_index_width_independent(harness, tmp_path):
    """The same L2 case three times (twice int32, once int64): identical bytes."""
    x_adv, g, x = _inputs((2, 3, 70, 45), torch.float32)
    for name, bits in (("a", 32), ("b", 32), ("c", 64)):
        _write_case(tmp_path / name, x_adv, g, x, (0.5, 0.2, 0.0, 1.0), "L2", bits,
                    haar=("periodic", [0.0, 0.5, 0.2]))  # fmt: skip
    run_harness(harness, [tmp_path / n for n in "abc"])
    first = (tmp_path / "a" / "out_xa.bin").read_bytes()
    assert first == (tmp_path / "b" / "out_xa.bin").read_bytes()
    assert first == (tmp_path / "c" / "out_xa.bin").read_bytes()


def test_haar_step_scale_one_is_the_plain_step(harness, tmp_path):
    """Every hf_scale 1: c = (1, 0, ..., 0), so g' = g and the fused step is pgd_step exactly
    (Linf bit for bit in float64, L2 to its tolerance)."""
    x_adv, g, x = _inputs((2, 2, 13, 10), torch.float64)
    for norm in ("Linf", "L2"):
        bounds = (0.03, 0.01, 0.0, 1.0) if norm == "Linf" else (0.5, 0.2, 0.0, 1.0)
        _write_case(tmp_path / norm, x_adv, g, x, bounds, norm, 32, haar=("reflect", [1.0] * 3))
        run_harness(harness, [tmp_path / norm])
        expected = reference.pgd_step_ref(x_adv, g, x, *bounds, norm)
        _check(_result(tmp_path / norm, x_adv), expected, norm, f"scale 1 {norm}")


# ---- the separable wavelet step (other banks, planes up to 64 x 64) against the reference --------

SEP_MAX_SIDE = 64  # kSepMaxSide
# odd, 1-high, 1-wide, 1 x 1 planes, one not square, one of the largest side
SEP_SHAPES = [(2, 2, 5, 7), (1, 3, 1, 6), (2, 1, 9, 1), (1, 1, 1, 1), (1, 2, 33, 20)]
SEP_WAVES = [("db2", 2), ("db4", 3), ("sym5", 2), ("coif1", 1), ("haar", 7)]


def _sep_cases(tmp_path, norm, dtype, plan):
    """Writes one separable case per (shape, wave, mode, level, scales, layout, bound kind, index
    bits) of plan; returns [(dir, x_adv, g, x, bounds, filters, mode, level, scales, what)]."""
    cases = []
    for i, (shape, wave, mode, level, scales, layout, kind, index_bits) in enumerate(plan):
        x_adv, g, x = _inputs(shape, dtype, seed=i)
        la, lg, lx = _tensor_layouts(layout)
        x_adv, g, x = _layout(x_adv, la), _layout(g, lg), _layout(x, lx)
        bounds = _bounds(kind, norm, shape[0], shape[1], dtype)
        scales = [float(scales)] * level if not isinstance(scales, list) else (scales * 3)[:level]
        filters = filter_bank(wave, "dec", dtype)
        h, w = shape[-2:]
        terms = separable.filter_terms(filters, mode, level, h, w, scales, dtype, h, w)
        d = tmp_path / f"s{i}"
        _write_case(d, x_adv, g, x, bounds, norm, index_bits, sep=terms)
        what = (
            f"{wave} {norm} {dtype} {shape} {mode} J={level} {scales} {layout} {kind} {index_bits}"
        )
        cases.append((d, x_adv, g, x, bounds, filters, mode, level, scales, what))
    return cases


def _run_sep_cases(harness, cases, norm) -> None:
    run_harness(harness, [c[0] for c in cases])
    for d, x_adv, g, x, bounds, filters, mode, level, scales, what in cases:
        got = _result(d, x_adv)
        eps, alpha, lo, hi = bounds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # levels above dwt_max_level, as PyWavelets warns
            expected = reference.wavelet_pgd_step_ref(
                x_adv, g, x, eps, alpha, filters, mode, level, scales, lo, hi, norm
            )
            g_ref = reference.scale_details_ref(g, filters, mode, level, scales)
        _check_haar(got, expected, g_ref, norm, what)
        assert torch.equal(got, x_adv) == torch.equal(expected, x_adv), what


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_separable_step_matches_the_reference(harness, tmp_path, norm, dtype):
    """Every mode x (db2 J2, db4 J3, sym5 J2, coif1 J1, haar J7: the fused Haar kernel's depth
    exceeded) x shape; scales, layouts, bound kinds and index widths rotate."""
    plan = []
    for mode in MODE_CODE:
        for wave, level in SEP_WAVES:
            for shape in SEP_SHAPES:
                k = len(plan)
                scales = HAAR_SCALES[k % len(HAAR_SCALES)]
                layout = LAYOUTS[k % len(LAYOUTS)]
                kind = BOUND_KINDS[(k // len(LAYOUTS)) % len(BOUND_KINDS)]
                plan.append((shape, wave, mode, level, scales, layout, kind, (32, 64)[k % 2]))
    _run_sep_cases(harness, _sep_cases(tmp_path, norm, dtype, plan), norm)


def test_separable_step_largest_planes_and_partial_slots(harness, tmp_path):
    """64 x 64 planes (float64: 64 KiB of shared memory, the opt-in size) with three matrix pairs;
    L2 with 300 planes per sample: 256 slots, 44 of them summing two planes; Linf on the same."""
    cases = []
    for norm in ("Linf", "L2"):
        sub = tmp_path / norm
        sub.mkdir()
        plan = [
            ((1, 2, 64, 64), "db4", "symmetric", 3, [0.0, 0.5, -0.25], "mixed", "per_channel", 32),
            ((2, 300, 3, 2), "db2", "reflect", 1, 0.25, "strided", "per_sample", 64),
        ]
        cases.append((norm, _sep_cases(sub, norm, torch.float64, plan)))
    for norm, c in cases:
        _run_sep_cases(harness, c, norm)


def test_separable_step_nan_and_index_width(harness, tmp_path):
    """A NaN in grad makes its whole plane NaN (dense products: 0 * NaN is NaN; a superset of the
    reference's NaN positions, documented), L2 its whole sample; other samples are finite and
    match. One L2 case with int32 and with int64 offsets: identical bytes."""
    x_adv, g, x = _inputs((2, 2, 11, 9), torch.float64)
    g[0, 1, 5, 8] = math.nan
    filters = filter_bank("db2", "dec", torch.float64)
    terms = separable.filter_terms(filters, "symmetric", 2, 11, 9, [0.0, 0.5], torch.float64, 11, 9)
    for norm in ("Linf", "L2"):
        bounds = (0.03, 0.01, 0.0, 1.0) if norm == "Linf" else (0.5, 0.2, 0.0, 1.0)
        d = tmp_path / f"nan_{norm}"
        _write_case(d, x_adv, g, x, bounds, norm, 32, sep=terms)
        run_harness(harness, [d])
        got = _result(d, x_adv)
        expected = reference.wavelet_pgd_step_ref(
            x_adv, g, x, *bounds[:2], filters, "symmetric", 2, [0.0, 0.5], *bounds[2:], norm
        )
        assert got[0, 1].isnan().all() and torch.isfinite(got[1]).all(), norm
        assert got[0].isnan().all() == (norm == "L2"), norm
        assert bool((got.isnan() | ~expected.isnan()).all()), norm  # a superset
        g_ref = reference.scale_details_ref(g, filters, "symmetric", 2, [0.0, 0.5])
        _check_haar(got[1], expected[1], g_ref[1], norm, f"NaN {norm}")
    x_adv, g, x = _inputs((2, 3, 13, 10), torch.float32)
    filters = filter_bank("sym5", "dec", torch.float32)
    terms = separable.filter_terms(
        filters, "periodic", 2, 13, 10, [0.2, 0.7], torch.float32, 13, 10
    )
    for name, bits in (("a", 32), ("c", 64)):
        _write_case(tmp_path / name, x_adv, g, x, (0.5, 0.2, 0.0, 1.0), "L2", bits, sep=terms)
    run_harness(harness, [tmp_path / n for n in "ac"])
    first = (tmp_path / "a" / "out_xa.bin").read_bytes()
    assert first == (tmp_path / "c" / "out_xa.bin").read_bytes()


def test_python_dispatch_limits_match_the_cuda_constants():
    """wavefuse/ops/pgd_step.py chooses the CUDA kernel by copies of two C++ constants."""
    import re

    from wavefuse.ops import pgd_step

    csrc = Path(__file__).resolve().parents[1] / "csrc" / "cuda"

    def constant(header: str, name: str) -> int:
        text = (csrc / header).read_text()
        return int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))

    assert pgd_step._CUDA_HAAR_MAX_LEVELS == constant("haar_body.cuh", "kHaarMaxLevels")
    assert pgd_step._CUDA_SEPARABLE_MAX_SIDE == constant("pgd_step_body.cuh", "kSepMaxSide")
    assert pgd_step._CUDA_CASCADE_MAX_LEVELS == constant("cascade_body.cuh", "kCascadeMaxLevels")
    assert SEP_MAX_SIDE == pgd_step._CUDA_SEPARABLE_MAX_SIDE


# ---- the whole-cascade chain (one launch: csrc/cuda/cascade_body.cuh's cascade_block) ------------

CASCADE_WAVES = ["db2", "db4", "sym5", "coif3"]
CASCADE_LEVELS = [1, 2, 3, 5]
# odd and even sides over 64; two planes each, so the plane offsets of the scratch are exercised
CASCADE_SHAPES = [(1, 2, 67, 65), (2, 1, 66, 72)]
CASCADE_LAYOUTS = ["contiguous", "channels_last", "strided"]
# relative to max |g'|: float32, J levels of float32 rounding against the float64 reference (seen:
# 2e-7); float64 rounding only
CASCADE_TOL = {torch.float64: 1e-12, torch.float32: 2e-6}
CASCADE_SCALES = [
    [0.0, 0.5, -0.25, 1.0, 0.3],
    [0.3, 0.3, 1.0, 0.0, 2.0],
    [0.75, 0.0, 0.5, 0.25, 1.0],
]


@pytest.fixture(scope="module")
def cascade_harness(tmp_path_factory) -> Path:
    # -ffp-contract=off: the fused Linf step's *_rn helpers are plain operations on the host
    return compile_harness(
        tmp_path_factory, "cuda_cascade_emulation_harness.cpp", ["-ffp-contract=off"]
    )


def _cascade_case(d: Path, g, wave: str, mode: str, level: int, scales, index_bits: int, step=None):
    """One case; returns g' allocated as dwt.cu's chain_cascade does (g's memory format).
    step = (x_adv, x_nat, (eps, alpha, lo, hi)): the Linf step fused into the chain's last
    launch (tests/emulation_step.h; bounds floats or tensors in g's dtype)."""
    from wavefuse.ops._common import empty_4d

    d.mkdir(parents=True)
    n, c, h, w = g.shape
    filters = filter_bank(wave, "dec", g.dtype)  # the kernel reads the taps in the compute type
    out = empty_4d(g, n, c, h, w)
    dtype_code = {torch.float64: 0, torch.float32: 1}[g.dtype]
    fields = [dtype_code, index_bits, MODE_CODE[mode], filters.shape[-1], level, n, c, h, w]
    fields += [*g.stride(), span(g), *out.stride(), span(out), *map(repr, scales)]
    fields.append(int(step is not None))
    if step is not None:
        x_adv, x_nat, bounds = step
        fields += [*x_adv.stride(), span(x_adv), *x_nat.stride(), span(x_nat)]
        _raw(x_adv).double().numpy().tofile(d / "xa.bin")
        _raw(x_nat).double().numpy().tofile(d / "xn.bin")
        for k, b in enumerate(bounds):
            sn, sc, n = _bound_tensor(b, d / f"bound{k}.bin")
            fields += [0.0, 1, sn, sc, n] if n else [repr(float(b)), 0, 0, 0, 0]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    filters.double().contiguous().numpy().tofile(d / "filters.bin")
    _raw(g).double().numpy().tofile(d / "g.bin")
    return out


def _cascade_result(d: Path, out) -> torch.Tensor:
    data = torch.from_numpy(np.fromfile(d / "out.bin", dtype=np.float64))
    assert data.numel() == span(out), f"{d.name}: {data.numel()} values"
    return torch.as_strided(data, out.shape, out.stride(), 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(MODE_CODE))
def test_cascade_is_the_wavelet_filter(cascade_harness, tmp_path, mode, dtype):
    """The whole cascade, one block per plane sweeping its tiles level by level (barriers between
    phases), equals reference.scale_details_ref (every band formed) in float64 on g's values:
    db2, db4, sym5, coif3 x levels 1, 2, 3, 5 x odd and even planes over 64 per side; scales,
    g's layout (g' follows it) and int32 / int64 offsets rotate. Every output written (no NaN:
    the output, the level scratch and shared memory start as NaN)."""
    _check_filter_cases(cascade_harness, tmp_path / "c", "cascade", mode, dtype, CASCADE_LEVELS,
                        CASCADE_SHAPES)  # fmt: skip


def _check_filter_cases(harness, root: Path, what: str, mode, dtype, levels, shapes) -> None:
    """CASCADE_WAVES x levels x shapes through a harness that reads _cascade_case's directories,
    against reference.scale_details_ref; scales, g's layout and int32 / int64 offsets rotate.
    Every output must have been written (no NaN)."""
    cases = []
    for wave in CASCADE_WAVES:
        for level in levels:
            for shape in shapes:
                k = len(cases)
                gen = torch.Generator().manual_seed(k)
                g = torch.randn(*shape, dtype=torch.float64, generator=gen).to(dtype)
                g = _layout(g, CASCADE_LAYOUTS[k % len(CASCADE_LAYOUTS)])
                scales = CASCADE_SCALES[k % len(CASCADE_SCALES)][:level]
                d = root / str(k)
                out = _cascade_case(d, g, wave, mode, level, scales, (32, 64)[k % 2])
                label = f"{what} {wave} {mode} J={level} {shape} {dtype} {scales} {g.stride()}"
                cases.append((d, g, out, wave, level, scales, label))
    run_harness(harness, [c[0] for c in cases])
    for d, g, out, wave, level, scales, label in cases:
        got = _cascade_result(d, out)
        assert torch.isfinite(got).all(), f"{label}: an output was never written (NaN)"
        filters = filter_bank(wave, "dec", torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # levels above dwt_max_level, as PyWavelets warns
            expected = reference.scale_details_ref(g.double(), filters, mode, level, scales)
        assert_close(got, expected, CASCADE_TOL[dtype], label)


def test_cascade_scale_one_and_nan(cascade_harness, tmp_path):
    """Every scale 1: g' = g (coef_1 = 1, every other coefficient and the coarsest gain 0). A NaN
    gradient entry: NaN exactly where the reference has NaN, in its plane only."""
    g = torch.randn(1, 2, 70, 65, dtype=torch.float64)
    out = _cascade_case(tmp_path / "one", g, "db4", "symmetric", 3, [1.0] * 3, 32)
    bad = g.clone()
    bad[0, 1, 33, 20] = math.nan
    scales = [0.0, 0.5]
    out_nan = _cascade_case(tmp_path / "nan", bad, "db2", "zero", 2, scales, 32)
    run_harness(cascade_harness, [tmp_path / "one", tmp_path / "nan"])
    assert_close(_cascade_result(tmp_path / "one", out), g, 1e-12, "scale 1")
    got = _cascade_result(tmp_path / "nan", out_nan)
    expected = reference.scale_details_ref(bad, filter_bank("db2", "dec", torch.float64), "zero",
                                           2, scales)  # fmt: skip
    assert expected.isnan().any() and torch.isfinite(got[0, 0]).all()
    assert torch.equal(got.isnan(), expected.isnan())
    assert_close(got[0, 0], expected[0, 0], 1e-11, "NaN: the other plane")


# ---- the chain in pairs of stages (J launches: csrc/cuda/pair_body.cuh's pair_block) -------------


@pytest.fixture(scope="module")
def pair_harness(tmp_path_factory) -> Path:
    # -ffp-contract=off: the fused Linf step's *_rn helpers are plain operations on the host
    return compile_harness(
        tmp_path_factory, "cuda_pair_emulation_harness.cpp", ["-ffp-contract=off"]
    )


# one level of tiles or several (analysis tiles 16, synthesis tiles 32 per side)
PAIR_SHAPES = [(1, 2, 67, 65), (2, 1, 30, 72)]
PAIR_LEVELS = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(MODE_CODE))
def test_pairs_are_the_wavelet_filter(pair_harness, tmp_path, mode, dtype):
    """The chain in pairs of stages, launch after launch of pair_plan, each block's window then
    its tile (barriers between phases), equals reference.scale_details_ref (every band formed)
    in float64 on g's values: db2, db4, sym5, coif3 x levels 1-5 (odd ones have the middle pair,
    an analysis then a synthesis) x planes of one tile and of several per level; scales (every
    level different, so each kept a_j is read), g's layout (g' follows it) and int32 / int64
    offsets rotate. Every output written (no NaN: g', every level buffer and shared memory
    start as NaN); every level buffer a launch writes is released after its last read (the
    harness fails a run that keeps one to the end: more GPU memory, same values)."""
    _check_filter_cases(pair_harness, tmp_path / "p", "pairs", mode, dtype, PAIR_LEVELS,
                        PAIR_SHAPES)  # fmt: skip


def test_pairs_scale_one_long_filter_and_nan(pair_harness, tmp_path):
    """Every scale 1: g' = g. db20 (40 taps, windows of 70 and 36) on a plane narrower than the
    filter and on one of several tiles. A NaN gradient entry: NaN exactly where the reference
    has NaN, in its plane only."""
    g = torch.randn(1, 2, 70, 65, dtype=torch.float64)
    out = _cascade_case(tmp_path / "one", g, "db4", "symmetric", 3, [1.0] * 3, 32)
    small = torch.randn(1, 1, 9, 14, dtype=torch.float64)
    long_cases = [(tmp_path / f"db20{k}", x) for k, x in enumerate((small, g))]
    long_outs = [
        _cascade_case(d, x, "db20", mode, 2, [0.25, 0.5], 32)
        for (d, x), mode in zip(long_cases, ("reflect", "periodization"))
    ]
    bad = g.clone()
    bad[0, 1, 33, 20] = math.nan
    scales = [0.0, 0.5]
    out_nan = _cascade_case(tmp_path / "nan", bad, "db2", "zero", 2, scales, 32)
    run_harness(pair_harness, [tmp_path / "one", *(d for d, _ in long_cases), tmp_path / "nan"])
    assert_close(_cascade_result(tmp_path / "one", out), g, 1e-12, "scale 1")
    db20 = filter_bank("db20", "dec", torch.float64)
    for ((d, x), mode), o in zip(zip(long_cases, ("reflect", "periodization")), long_outs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference.scale_details_ref(x, db20, mode, 2, [0.25, 0.5])
        assert_close(_cascade_result(d, o), expected, 1e-12, f"db20 {mode} {tuple(x.shape)}")
    got = _cascade_result(tmp_path / "nan", out_nan)
    expected = reference.scale_details_ref(bad, filter_bank("db2", "dec", torch.float64), "zero",
                                           2, scales)  # fmt: skip
    assert expected.isnan().any() and torch.isfinite(got[0, 0]).all()
    assert torch.equal(got.isnan(), expected.isnan())
    assert_close(got[0, 0], expected[0, 0], 1e-11, "NaN: the other plane")


# ---- the Linf step fused into the chain's last launch (step_math.cuh's FusedLinf) ----------------

FUSED_CASES = [  # (wave, mode, level, dtype, bound kind, layouts of x_adv / g / x_nat, bits)
    ("db4", "symmetric", 3, torch.float32, "floats", ("contiguous",) * 3, 32),
    ("db2", "zero", 2, torch.float64, "per_sample", ("channels_last", "contiguous", "strided"), 64),
    ("sym5", "periodization", 1, torch.float32, "per_channel", ("strided",) * 3, 32),
    ("coif3", "reflect", 2, torch.float64, "per_sample_channel", ("contiguous", "strided",
                                                                   "channels_last"), 32),
    ("db4", "periodic", 4, torch.float32, "per_sample_channel", ("channels_last",) * 3, 64),
    ("db2", "zero", 5, torch.float32, "per_sample", ("contiguous",) * 3, 32),
]  # fmt: skip


@pytest.mark.parametrize("what", ["cascade", "pairs"])
def test_chain_fused_linf_step(cascade_harness, pair_harness, tmp_path, what):
    """The Linf step fused into the chain's last launch (dwt.cu's chain_cascade / chain_pairs
    given a LinfStep: where the launch would store g', x_adv gets linf_value) is the separate
    step on the unfused chain's g', bit for bit: reference.pgd_step_ref (op for op as the step
    kernel's linf_thread) on the g' the same harness computes without the step. Bounds as floats
    and as per-sample / per-channel / per-(sample, channel) tensors, mixed layouts of x_adv, g
    and x_nat, int32 and int64 offsets, float64 and float32, levels 1-5 (the pairs' last launch
    is (A_1, S_1), (S_2, S_1) or (A_J, S_J)'s successor). g' itself is never written (out.bin
    stays NaN). A NaN gradient entry: x_adv is NaN exactly where g' is."""
    harness = cascade_harness if what == "cascade" else pair_harness
    cases = []
    for k, case in enumerate([*FUSED_CASES, FUSED_CASES[0]]):
        wave, mode, level, dtype, kind, layouts, bits = case
        nan = k == len(FUSED_CASES)  # the first case again, with a NaN gradient entry
        if nan:
            wave, mode, level, dtype, kind, layouts, bits = FUSED_CASES[0]
        shape = (2, 3, 67, 65) if k % 2 == 0 else (1, 2, 70, 66)
        x_adv, g, x = _inputs(shape, dtype, seed=k)
        if nan:
            g[1, 2, 30, 40] = math.nan
        x_adv, g, x = (_layout(t, lay) for t, lay in zip((x_adv, g, x), layouts, strict=True))
        bounds = _bounds(kind, "Linf", shape[0], shape[1], dtype)
        scales = CASCADE_SCALES[k % len(CASCADE_SCALES)][:level]
        plain = _cascade_case(tmp_path / f"{k}g", g, wave, mode, level, scales, bits)
        fused = _cascade_case(tmp_path / f"{k}s", g, wave, mode, level, scales, bits,
                              step=(x_adv, x, bounds))  # fmt: skip
        cases.append((k, x_adv, x, bounds, plain, fused, nan))
    run_harness(harness, [tmp_path / f"{c[0]}{s}" for c in cases for s in "gs"])
    for k, x_adv, x, bounds, plain, fused, nan in cases:
        label = f"{what} case {k}"
        g_prime = _cascade_result(tmp_path / f"{k}g", plain).to(x_adv.dtype)
        assert bool(g_prime.isnan().any()) == bool(nan), label
        assert _cascade_result(tmp_path / f"{k}s", fused).isnan().all(), f"{label}: g' written"
        got = _result(tmp_path / f"{k}s", x_adv)
        expected = reference.pgd_step_ref(x_adv, g_prime, x, *bounds, "Linf")
        assert torch.equal(got.isnan(), expected.isnan()), label
        assert torch.equal(got.nan_to_num(7.0), expected.nan_to_num(7.0)), label
        assert not torch.equal(got, x_adv), f"{label}: no step taken"
