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

Not covered (as tests/test_cuda_host_emulation.py): the CUDA compiler and hardware, half-type
conversions, the host wrappers' ATen code (dtype dispatch, allocation); only float64 is emulated.
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
