"""The CUDA transform kernels' bodies, run on the CPU: no GPU needed.

csrc/cuda/dwt.cu's kernels only compute their block and thread indices and call the
``__host__ __device__`` phase functions of csrc/cuda/dwt_body.cuh, with ``__syncthreads()``
between phases. tests/cuda_emulation_harness.cpp compiles those functions with g++ (plain C++17)
and runs them serially for every thread of the launch grid that dwt.cu computes (the same
``split_geometry`` / ``merge_geometry`` / ``tile_origin``), phase by phase per block -- which is
what the barriers guarantee on a GPU. Output storage and shared memory start as NaN, so an output
that no thread writes, or a shared value read before any thread of an earlier phase wrote it,
fails the comparison. The one-pass multilevel Haar kernels (csrc/cuda/haar.cu, bodies in
csrc/cuda/haar_body.cuh) are emulated the same way by tests/cuda_haar_emulation_harness.cpp.

What this does not cover: the CUDA compiler and hardware themselves (device code generation,
half-type conversions, the launch configuration limits, the host wrappers' ATen code); data races
inside a phase are excluded by construction (each thread writes only its own entries), not
detected; only float64 is emulated.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import ALL_MODES, assert_chain_non_finite_policy, assert_close
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
from wavefuse.ops._common import empty_4d, empty_bands
from wavefuse.reference import analysis_length, synthesis_length

WAVELETS = ["haar", "db2", "db4", "sym5", "coif3", "db20"]
# (H, W) of the signal: a single sample, odd x odd shorter than most filters, a plane larger than
# one 16 x 16 output tile of the merge (17 x 24; shorter than db20) and one with several split
# tiles (36 x 40 -> more than 16 coefficients per axis for every wavelet here).
SIZES = [(1, 1), (3, 5), (17, 24), (36, 40)]
INT64_SIZES = [(3, 5), (36, 40)]  # also run with int64 offsets
LAYOUTS = ["contiguous", "channels_last", "strided"]
N, C = 2, 3
TOL = 1e-12
SPLIT_OPS = {"dwt2d": False, "idwt2d_adjoint": True}  # op -> synthesis
MERGE_OPS = {"dwt2d_adjoint": False, "idwt2d": True}


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    return compile_harness(tmp_path_factory, "cuda_emulation_harness.cpp")


# ---- building tensors in a layout and passing them to the harness -------------------------------


def _write_case(d: Path, kernel: int, synthesis: bool, mode: str, index_bits: int, filters,
                signal, ll, hi, inputs) -> None:  # fmt: skip
    d.mkdir(parents=True)
    n, c, h, w = signal.shape
    kh, kw = ll.shape[-2:]
    fields = [kernel, int(synthesis), MODE_CODE[mode], index_bits, filters.shape[-1]]
    fields += [n, c, h, w, kh, kw]
    for t in (signal, ll, hi):
        fields += [*t.stride(), span(t)]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    filters.contiguous().numpy().tofile(d / "filters.bin")
    for name, t in inputs.items():
        raw(t).tofile(d / f"{name}.bin")


# ---- the four ops through the emulated kernels ---------------------------------------------------


def emulate_split(harness, d, x, filters, mode, synthesis, index_bits=32):
    """dwt2d (synthesis=False) or idwt2d_adjoint (True) of x: (ll, hi) in the kernels' layout."""
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    if synthesis:
        kh, kw = ((s // 2 if mode == "periodization" else (s + taps - 2) // 2) for s in (h, w))
    else:
        kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    ll, hi = empty_4d(x, n, c, kh, kw), empty_bands(x, n, c, kh, kw)
    _write_case(d, 0, synthesis, mode, index_bits, filters, x, ll, hi, {"signal": x})
    return lambda: (from_raw(d / "out_ll.bin", ll), from_raw(d / "out_hi.bin", hi))


def emulate_merge(harness, d, ll, hi, filters, mode, synthesis, size=None, index_bits=32):
    """dwt2d_adjoint (synthesis=False, size = input_size) or idwt2d (True) of the bands."""
    n, c, kh, kw = ll.shape
    taps = filters.shape[-1]
    if synthesis:
        size = [synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode)]
    y = empty_4d(ll, n, c, *size)
    _write_case(d, 1, synthesis, mode, index_bits, filters, y, ll, hi, {"ll": ll, "hi": hi})
    return lambda: from_raw(d / "out_signal.bin", y)


def _cases():
    for wave in WAVELETS:
        for size in SIZES:
            for layout in LAYOUTS:
                yield wave, size, layout, 32
            if size in INT64_SIZES:  # the int64 instantiation of every body
                yield wave, size, "contiguous", 64


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("op", ["dwt2d", "dwt2d_adjoint", "idwt2d", "idwt2d_adjoint"])
def test_emulated_kernel_matches_reference(harness, tmp_path, op, mode):
    """Every wavelet x size x layout (x int32/int64 offsets) of one op and mode, float64, 1e-12."""
    pending = []
    for num, (wave, (h, w), layout, bits) in enumerate(_cases()):
        d = tmp_path / f"case{num}"
        kind = "rec" if op.startswith("idwt2d") else "dec"
        filters = filter_bank(wave, kind, torch.float64)
        taps = filters.shape[-1]
        what = f"{op} {mode} {wave} {h}x{w} {layout} int{bits}"
        kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
        if op == "dwt2d":
            x = tensor_in((N, C, h, w), layout)
            fetch = emulate_split(harness, d, x, filters, mode, False, bits)
            expected = reference.dwt2d_ref(x, filters, mode)
        elif op == "idwt2d_adjoint":  # grad_y of the size idwt2d makes from kh x kw coefficients
            sh, sw = synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode)
            gy = tensor_in((N, C, sh, sw), layout)
            fetch = emulate_split(harness, d, gy, filters, mode, True, bits)
            expected = reference.idwt2d_adjoint_ref(gy, filters, mode)
        else:
            ll, hi = tensor_in((N, C, kh, kw), layout), tensor_in((N, C, 3, kh, kw), layout)
            synthesis = op == "idwt2d"
            fetch = emulate_merge(harness, d, ll, hi, filters, mode, synthesis, [h, w], bits)
            if synthesis:
                expected = reference.idwt2d_ref(ll, hi, filters, mode)
            else:
                expected = reference.dwt2d_adjoint_ref(ll, hi, filters, mode, [h, w])
        pending.append((d, fetch, expected, what))
    run_harness(harness, [d for d, *_ in pending])
    for _, fetch, expected, what in pending:
        got = fetch()
        got, expected = (got, expected) if isinstance(got, tuple) else ((got,), (expected,))
        for g, e, part in zip(got, expected, ("ll", "hi") if len(got) == 2 else ("y",)):
            assert torch.isfinite(g).all(), f"{what} {part}: an output was never written (NaN)"
            assert_close(g, e, TOL, f"{what} {part}")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("pair", ["analysis", "synthesis"])
def test_emulated_adjoints_are_transposes(harness, tmp_path, pair, mode):
    """<A x, g> = <x, A^T g> for the emulated split and merge of each pair, on shapes where the
    extension wraps (db20 on 5 x 7) and a multi-tile plane."""
    synthesis = pair == "synthesis"
    pending = []
    for num, (wave, (h, w)) in enumerate([("db2", (17, 24)), ("db20", (5, 7)), ("sym5", (36, 9))]):
        filters = filter_bank(wave, "rec" if synthesis else "dec", torch.float64)
        taps = filters.shape[-1]
        kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
        if synthesis:  # A = idwt2d (merge), A^T = idwt2d_adjoint (split)
            h, w = synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode)
        x = tensor_in((N, C, h, w), "channels_last")
        gl, gh = tensor_in((N, C, kh, kw), "strided"), tensor_in((N, C, 3, kh, kw), "contiguous")
        split = emulate_split(harness, tmp_path / f"s{num}", x, filters, mode, synthesis)
        merge = emulate_merge(
            harness, tmp_path / f"m{num}", gl, gh, filters, mode, synthesis, [h, w]
        )
        pending.append((x, gl, gh, split, merge, f"{pair} {mode} {wave} {h}x{w}"))
    run_harness(harness, [tmp_path / f"{p}{i}" for i in range(len(pending)) for p in "sm"])
    for x, gl, gh, split, merge, what in pending:
        ll, hi = split()
        y = merge()
        lhs = (ll * gl).sum() + (hi * gh).sum()  # <split x, g>
        rhs = (x * y).sum()  # <x, merge g>
        assert abs(lhs - rhs) <= TOL * max(abs(lhs), 1.0), f"{what}: {lhs} != {rhs}"


@pytest.mark.parametrize("pair", ["analysis", "synthesis"])
def test_emulated_merge_on_wide_planes(harness, tmp_path, pair):
    """The separable merge on planes of 9 tiles per row: interior tiles (their window of
    coefficient columns alone) between end tiles (the window and both end segments), every mode
    and wavelet up to db20, against the reference. A slot read that no thread wrote is NaN."""
    synthesis = pair == "synthesis"
    pending = []
    for mode in ALL_MODES:
        for wave in ["db2", "db4", "sym5", "coif3", "db20"]:
            for width in (133, 140):
                filters = filter_bank(wave, "rec" if synthesis else "dec", torch.float64)
                taps = filters.shape[-1]
                kh, kw = analysis_length(3, taps, mode), analysis_length(width, taps, mode)
                h, w = (3, width)
                if synthesis:
                    h, w = synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode)
                ll = tensor_in((1, 2, kh, kw), "contiguous")
                hi = tensor_in((1, 2, 3, kh, kw), "strided")
                d = tmp_path / f"case{len(pending)}"
                fetch = emulate_merge(harness, d, ll, hi, filters, mode, synthesis, [h, w])
                if synthesis:
                    expected = reference.idwt2d_ref(ll, hi, filters, mode)
                else:
                    expected = reference.dwt2d_adjoint_ref(ll, hi, filters, mode, [h, w])
                pending.append((fetch, expected, f"{pair} {mode} {wave} {w}"))
    run_harness(harness, [tmp_path / f"case{i}" for i in range(len(pending))])
    for fetch, expected, what in pending:
        got = fetch()
        assert torch.isfinite(got).all(), f"{what}: an output was never written or read NaN"
        assert_close(got, expected, TOL, what)


# ---- wavelet_pgd_step's approximation chain (dwt.cu's analysis_ll and chain_level) ---------------


def emulate_analysis_ll(d, x, filters, mode, index_bits=32):
    """split_col_pass with a null hi: dwt2d's ll band alone; -> fetch() giving (ll, hi storage)."""
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    ll, hi = empty_4d(x, n, c, kh, kw), empty_bands(x, n, c, kh, kw)
    _write_case(d, 2, False, mode, index_bits, filters, x, ll, hi, {"signal": x})
    return lambda: (from_raw(d / "out_ll.bin", ll), from_raw(d / "out_hi.bin", hi))


def emulate_chain_level(d, cur, prev, filters, mode, coef, gain, index_bits=32):
    """chain_thread over prev's grid, in place over prev: coef * prev + gain * S_lo cur."""
    n, c, kh, kw = cur.shape
    hi = empty_bands(cur, n, c, kh, kw)  # unused: its strides fill the params line
    _write_case(d, 3, True, mode, index_bits, filters, prev, cur, hi, {"signal": prev, "ll": cur})
    with (d / "params.txt").open("a") as f:
        f.write(f"{coef!r} {gain!r}\n")
    return lambda: from_raw(d / "out_signal.bin", prev)


def _synthesis_of_approximation(cur, filters, mode, size):
    """S_lo cur: the reference synthesis with zero detail bands, cropped to size."""
    n, c, kh, kw = cur.shape
    zeros = torch.zeros(n, c, 3, kh, kw, dtype=cur.dtype)
    return reference.idwt2d_ref(cur, zeros, filters.flip(-1), mode)[..., : size[0], : size[1]]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_emulated_chain_kernels(harness, tmp_path, mode):
    """The two bodies of the CUDA chain, every wavelet x size x layout (x int32/int64): the split
    with a null hi writes dwt2d's ll band and no detail band (their storage stays NaN); the chain
    level, in place over prev, is coef * prev + gain * (the synthesis of cur with zero details,
    cropped to prev's size), with coef 0 (prev not read: a NaN there stays out) and not."""
    pending = []
    for num, (wave, (h, w), layout, bits) in enumerate(_cases()):
        filters = filter_bank(wave, "dec", torch.float64)
        what = f"{mode} {wave} {h}x{w} {layout} int{bits}"
        x = tensor_in((N, C, h, w), layout)
        split = emulate_analysis_ll(tmp_path / f"a{num}", x, filters, mode, bits)
        taps = filters.shape[-1]
        cur = tensor_in(
            (N, C, analysis_length(h, taps, mode), analysis_length(w, taps, mode)), layout
        )
        coef, gain = (0.0, 0.75) if num % 2 else (-0.375, 1.25)
        prev = tensor_in((N, C, h, w), "strided" if layout == "contiguous" else layout)
        expected = gain * _synthesis_of_approximation(cur, filters, mode, (h, w))
        if coef:
            expected = expected + coef * prev
        else:
            prev[..., 0, 0] = float("nan")  # not read when coef is 0
        chain = emulate_chain_level(
            tmp_path / f"c{num}", cur, prev, filters, mode, coef, gain, bits
        )
        pending.append((x, filters, split, chain, expected, what))
    run_harness(harness, [tmp_path / f"{p}{i}" for i in range(len(pending)) for p in "ac"])
    for x, filters, split, chain, expected, what in pending:
        ll, hi = split()
        assert_close(ll, reference.dwt2d_ref(x, filters, mode)[0], TOL, f"analysis_ll {what}")
        assert torch.isnan(hi).all(), f"analysis_ll {what}: a detail band was written"
        got = chain()
        assert torch.isfinite(got).all(), f"chain {what}: an output was never written (NaN)"
        assert_close(got, expected, TOL, f"chain {what}")


def _emulated_chain_filter(harness, d, g, filters, mode, level, scales):
    """chain_pgd_step_cuda's filter through the emulated bodies: analysis_ll per level, then the
    chain levels coarsest first with its coefficients (levels past separable.chain_depth dropped);
    g' (the step's input)."""
    from wavefuse.ops.separable import chain_depth

    depth = chain_depth(level, scales)
    chain = [g]
    for j in range(depth):
        fetch = emulate_analysis_ll(d / f"a{j}", chain[-1], filters, mode)
        run_harness(harness, [d / f"a{j}"])
        chain.append(fetch()[0])
    for j in range(depth, 0, -1):
        coef = scales[j - 1] - scales[j - 2] if j > 1 else scales[0]
        gain = 1.0 - scales[j - 1] if j == depth else 1.0
        fetch = emulate_chain_level(d / f"s{j}", chain[j], chain[j - 1].clone(), filters, mode,
                                    coef, gain)  # fmt: skip
        run_harness(harness, [d / f"s{j}"])
        chain[j - 1] = fetch()
    return chain[0]


@pytest.mark.parametrize("mode", ["symmetric", "periodization", "reflect"])
def test_emulated_chain_is_the_wavelet_filter(harness, tmp_path, mode):
    """chain_pgd_step_cuda's composition through the emulated bodies equals
    reference.scale_details_ref, the filter with every band formed: db4 and sym5, 3 levels, odd
    sizes, a scale of each kind."""
    for wave, scales, (h, w) in (
        ("db4", [0.0, 0.5, -0.25], (37, 29)),
        ("sym5", [0.3, 0.3, 1.0], (20, 33)),
    ):
        filters = filter_bank(wave, "dec", torch.float64)
        g = tensor_in((N, C, h, w), "channels_last")
        got = _emulated_chain_filter(harness, tmp_path / wave, g, filters, mode, 3, scales)
        expected = reference.scale_details_ref(g, filters, mode, 3, scales)
        assert_close(got, expected, 1e-11, f"{wave} {mode} {scales}")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("mode", ["zero", "symmetric", "periodization"])
def test_emulated_chain_non_finite_gradients(harness, tmp_path, mode):
    """docs/edge_policies.md for the CUDA chain (gathers only), on g' itself: a NaN gradient
    entry gives exactly the reference's NaN positions; an infinite one, with scales that never
    decrease and stay in [0, 1], makes no NaN where the reference has none (it may be a number
    where the reference's 0 * inf is NaN); elsewhere the reference's values, infinities included.
    The cases of tests/test_triton_fused.py's test for Triton's tiled merges."""
    filters = filter_bank("db2", "dec", torch.float64)
    for num, (bad, scales) in enumerate(
        ((math.nan, [0.0, 0.5]), (math.inf, [0.0, 0.5]), (-math.inf, [0.5, 0.5]))
    ):
        g = tensor_in((2, 1, 13, 10), "contiguous")
        g[0, 0, 6, 3] = bad
        got = _emulated_chain_filter(harness, tmp_path / str(num), g, filters, mode, 2, scales)
        expected = reference.scale_details_ref(g, filters, mode, 2, scales)
        what = f"{bad} {scales} {mode}"
        assert_chain_non_finite_policy(got, expected, bad, what)


# ---- the one-pass multilevel Haar kernels (csrc/cuda/haar_body.cuh) ------------------------------

# 1 x 1; odd x odd; smaller than 2^J along H (J = 2, 3) with an even W; several analysis tiles
# (side 32) and adjoint tiles (16 x 16) with odd lengths at several levels (37 -> 19 -> 10 -> 5).
HAAR_SIZES = [(1, 1), (5, 7), (3, 6), (37, 70)]
HAAR_LEVELS = [1, 2, 3]


@pytest.fixture(scope="module")
def haar_harness(tmp_path_factory) -> Path:
    return compile_harness(tmp_path_factory, "cuda_haar_emulation_harness.cpp")


def _haar_case(d: Path, kernel: int, mode: str, bits: int, x, ll, his, inputs) -> None:
    """his: level 1 (finest) first."""
    d.mkdir(parents=True)
    n, c, h, w = x.shape
    fields = [kernel, MODE_CODE[mode], bits, len(his), n, c, h, w]
    for t in (x, ll, *his):
        fields += [*t.stride(), span(t)]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    for name, t in inputs.items():
        raw(t).tofile(d / f"{name}.bin")


def _haar_outputs(x, level):
    """Empty ll_J and [hi_1, ..., hi_J] in the layout the CUDA kernels allocate (ops._common)."""
    n, c, h, w = x.shape
    hs = [-(-h // 2**j) for j in range(level + 1)]
    ws = [-(-w // 2**j) for j in range(level + 1)]
    ll = empty_4d(x, n, c, hs[-1], ws[-1])
    return ll, [empty_bands(x, n, c, hs[j], ws[j]) for j in range(1, level + 1)]


def emulate_haar_fwd(d, x, level, mode, bits=32):
    """-> fetch() giving [ll_J, hi_J, ..., hi_1] (coarsest first, as ops.haar.haar_wavedec2)."""
    ll, his = _haar_outputs(x, level)
    _haar_case(d, 0, mode, bits, x, ll, his, {"x": x})

    def fetch():
        out = [from_raw(d / f"out_hi{j + 1}.bin", hi) for j, hi in enumerate(his)]
        return [from_raw(d / "out_ll.bin", ll)] + out[::-1]

    return fetch


def emulate_haar_adj(d, gl, ghs, size, mode, bits=32):
    """ghs coarsest first; -> fetch() giving grad_x of shape (N, C, *size)."""
    n, c = gl.shape[:2]
    y = empty_4d(gl, n, c, *size)
    his = list(ghs[::-1])
    inputs = {"ll": gl} | {f"hi{j + 1}": t for j, t in enumerate(his)}
    _haar_case(d, 1, mode, bits, y, gl, his, inputs)
    return lambda: from_raw(d / "out_x.bin", y)


def _haar_cases():
    for level in HAAR_LEVELS:
        for size in HAAR_SIZES:
            for layout in LAYOUTS:
                yield level, size, layout, 32
            yield level, size, "contiguous", 64
    yield 6, (70, 45), "channels_last", 32  # the deepest one-pass level: 64 x 64 tiles


def _haar_reference(x, level, mode):
    from wavefuse.ops.haar import haar_wavedec2

    return haar_wavedec2(x, level, mode, "reference")


def _haar_adjoint_reference(gl, ghs, size, mode):
    from wavefuse.ops.haar import haar_wavedec2_adjoint

    return haar_wavedec2_adjoint(gl, ghs, list(size), mode, "reference")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("op", ["haar_wavedec2", "haar_wavedec2_adjoint"])
def test_emulated_haar_kernel_matches_reference(haar_harness, tmp_path, op, mode):
    """Every level x size x layout (x int32/int64 offsets) of the one-pass Haar analysis or its
    adjoint, every thread of the launch grid, float64, against the reference at 1e-12."""
    pending = []
    for num, (level, (h, w), layout, bits) in enumerate(_haar_cases()):
        d = tmp_path / f"case{num}"
        what = f"{op} {mode} J={level} {h}x{w} {layout} int{bits}"
        if op == "haar_wavedec2":
            x = tensor_in((N, C, h, w), layout)
            fetch = emulate_haar_fwd(d, x, level, mode, bits)
            expected = _haar_reference(x, level, mode)
        else:
            ll, his = _haar_outputs(torch.empty(N, C, h, w), level)
            gl = tensor_in(tuple(ll.shape), layout)
            ghs = [tensor_in(tuple(hi.shape), layout) for hi in his[::-1]]
            fetch = emulate_haar_adj(d, gl, ghs, (h, w), mode, bits)
            expected = [_haar_adjoint_reference(gl, ghs, (h, w), mode)]
        pending.append((d, fetch, expected, what))
    run_harness(haar_harness, [d for d, *_ in pending])
    for _, fetch, expected, what in pending:
        got = fetch()
        got = got if isinstance(got, list) else [got]
        assert len(got) == len(expected), what
        for k, (g, e) in enumerate(zip(got, expected)):
            assert g.shape == e.shape, f"{what} output {k}: {g.shape} != {e.shape}"
            assert torch.isfinite(g).all(), f"{what} output {k}: an output was never written (NaN)"
            assert_close(g, e, TOL, f"{what} output {k}")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_emulated_haar_adjoint_is_the_transpose(haar_harness, tmp_path, mode):
    """<A x, g> = <x, A^T g> for the emulated one-pass analysis A and adjoint A^T, including
    sizes whose pad copies cross the adjoint's 16 x 16 tiles and the deepest one-pass level."""
    pending = []
    shapes = [(3, (37, 70)), (2, (1, 9)), (3, (33, 17)), (6, (70, 45))]
    for num, (level, (h, w)) in enumerate(shapes):
        x = tensor_in((N, C, h, w), "channels_last")
        ll, his = _haar_outputs(x, level)
        gl = tensor_in(tuple(ll.shape), "strided")
        ghs = [tensor_in(tuple(hi.shape), "contiguous") for hi in his[::-1]]
        fwd = emulate_haar_fwd(tmp_path / f"f{num}", x, level, mode)
        adj = emulate_haar_adj(tmp_path / f"a{num}", gl, ghs, (h, w), mode)
        pending.append((x, gl, ghs, fwd, adj, f"{mode} J={level} {h}x{w}"))
    run_harness(haar_harness, [tmp_path / f"{p}{i}" for i in range(len(pending)) for p in "fa"])
    for x, gl, ghs, fwd, adj, what in pending:
        ll, *hs = fwd()
        lhs = (ll * gl).sum() + sum((a * b).sum() for a, b in zip(hs, ghs))
        rhs = (x * adj()).sum()
        assert abs(lhs - rhs) <= TOL * max(abs(lhs), 1.0), f"{what}: {lhs} != {rhs}"
