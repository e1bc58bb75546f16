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

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ALL_MODES, assert_close

from wavefuse import reference
from wavefuse.filters import filter_bank
from wavefuse.ops._common import empty_4d
from wavefuse.ops.hf_penalty import check_cascade
from wavefuse.reference import analysis_length

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "cuda_hf_emulation_harness.cpp"
MODE_CODE = {"zero": 0, "symmetric": 1, "reflect": 2, "periodic": 3, "periodization": 4}
WAVELETS = ["haar", "db2", "db4", "db20"]
# 1 x 1; odd x odd (shorter than db4 and db20); 1 x 9 (one axis of one sample); a plane of several
# 16 x 16 coefficient tiles for every wavelet (37 x 40 -> at least 19 x 20 coefficients) whose
# coarser levels have fewer tiles (partials rows of unequal length).
SIZES = [(1, 1), (3, 5), (1, 9), (37, 40)]
LEVELS = [1, 2, 3]
LAYOUTS = ["contiguous", "channels_last", "strided"]
N, C = 2, 2
TOL = 1e-12


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small reference ops run much faster on one intra-op thread (see test_cuda_host_emulation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++ on PATH: the CUDA kernel bodies cannot be compiled for host emulation")
    exe = tmp_path_factory.mktemp("hf_harness") / "cuda_hf_emulation_harness"
    torch_include = Path(torch.__file__).parent / "include"  # c10/util/Exception.h (common.h)
    cmd = [gxx, "-O1", "-std=c++17", f"-I{ROOT / 'csrc'}", f"-I{torch_include}"]
    result = subprocess.run(
        cmd + [str(HARNESS), "-o", str(exe)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"g++ failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}"
    return exe


# ---- tensors in a layout, and the harness's files ------------------------------------------------


def _tensor(shape, layout: str) -> torch.Tensor:
    """Random float64 (N, C, h, w): contiguous, channels_last or a strided view (offset, step 2)."""
    if layout == "contiguous":
        return torch.randn(*shape, dtype=torch.float64)
    if layout == "strided":
        return torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64)[..., 1::2]
    return torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)


def _span(t: torch.Tensor) -> int:
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def _raw(t: torch.Tensor) -> np.ndarray:
    """The storage that t's strides address, from its first element on."""
    return torch.as_strided(t, (_span(t),), (1,), t.storage_offset()).numpy()


def _from_raw(path: Path, like: torch.Tensor) -> torch.Tensor:
    data = torch.from_numpy(np.fromfile(path, dtype=np.float64))
    assert data.numel() == _span(like), f"{path.name}: {data.numel()} values"
    return torch.as_strided(data, like.shape, like.stride(), 0)


def emulate(d: Path, x, filters, mode: str, level: int, p: int, grad=None, bits: int = 32):
    """Write one case; -> fetch() giving the energies (grad None) or grad_x (in x's layout)."""
    d.mkdir(parents=True)
    n, c, h, w = x.shape
    gx = empty_4d(x, n, c, h, w)  # the layout hf_penalty.cu allocates
    fields = [0 if grad is None else 1, MODE_CODE[mode], bits, filters.shape[-1], p, level]
    fields += [n, c, h, w, *x.stride(), _span(x), *gx.stride(), _span(gx)]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    filters.contiguous().numpy().tofile(d / "filters.bin")
    _raw(x).tofile(d / "x.bin")
    if grad is None:
        return lambda: torch.from_numpy(np.fromfile(d / "out_energy.bin")).reshape(n, level, 3)
    grad.contiguous().numpy().tofile(d / "grad.bin")
    return lambda: _from_raw(d / "out_gx.bin", gx)


def _run(harness: Path, dirs: list[Path]) -> None:
    for start in range(0, len(dirs), 200):  # keep command lines short
        chunk = [str(d) for d in dirs[start : start + 200]]
        result = subprocess.run(
            [str(harness), *chunk], check=False, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr


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
        x = _tensor((N, C, h, w), layout)
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
    _run(harness, [d for d, *_ in pending])
    for _, fetch, expected, x, what in pending:
        got = fetch()
        assert torch.isfinite(got).all(), f"{what}: an output was never written (NaN)"
        if backward:
            assert got.stride() == empty_4d(x, *x.shape).stride(), what
        assert_close(got, expected, TOL, what)


def test_emulated_kernels_are_deterministic(harness, tmp_path):
    """The same inputs twice: energies and gradients bitwise equal (fixed reduction orders)."""
    x = _tensor((N, 3, 37, 40), "channels_last")
    filters = filter_bank("db4", "dec", torch.float64)
    grad = torch.rand(N, 2, 3, dtype=torch.float64)
    fetches = []
    for run in range(2):
        fetches.append(emulate(tmp_path / f"e{run}", x, filters, "symmetric", 2, 2))
        fetches.append(emulate(tmp_path / f"g{run}", x, filters, "symmetric", 2, 1, grad))
    _run(harness, [tmp_path / f"{k}{run}" for run in range(2) for k in "eg"])
    e0, g0, e1, g1 = (f() for f in fetches)
    assert torch.equal(e0, e1) and torch.equal(g0, g1)
    assert_close(e0, reference.band_energy_ref(x, filters, "symmetric", 2, 2), TOL, "energies")


def test_emulated_kernels_keep_nan(harness, tmp_path):
    """A NaN input poisons exactly the energies and gradients that depend on it, for p = 1 too:
    psi(NaN) = NaN * g, as csrc/cpu/hf_penalty.cpp, the Triton kernels and the reference (which
    keeps a NaN d where torch.sign(NaN) is 0); p = 1 and p = 2 poison the same entries."""
    x = _tensor((1, 2, 9, 12), "contiguous")
    x[0, 1, 4, 5] = float("nan")
    filters = filter_bank("db2", "dec", torch.float64)
    grad = torch.rand(1, 2, 3, dtype=torch.float64)
    args = (filters, "periodic", 2)
    cases = []
    for p in (1, 2):
        e = emulate(tmp_path / f"e{p}", x, *args, p)
        g = emulate(tmp_path / f"g{p}", x, *args, p, grad)
        cases.append((p, e, g))
    _run(harness, [tmp_path / f"{k}{p}" for p in (1, 2) for k in "eg"])
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
