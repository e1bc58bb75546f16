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

What this does not cover: the CUDA compiler and hardware (device code generation, the ``__*_rn``
intrinsics themselves, half-type conversions, launch limits), the host wrappers' ATen code
(layout and index-type choice are recomputed here by the same rules), and wavelet_pgd_step, which
on CUDA is a composition of the transform kernels (emulated by test_cuda_host_emulation.py) and
this step: there is no fused Haar body to emulate. Only float64 and float32 are emulated.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close

from wavefuse import reference

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "cuda_pgd_emulation_harness.cpp"
# (N, C, H, W): a single element, odd sizes, one with several Linf blocks (1,024 elements each)
# and several L2 chunks per sample (256-element chunks: 12 per sample), one with 118 chunks.
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 2, 40, 37), (2, 3, 100, 100)]
LAYOUTS = ["contiguous", "channels_last", "strided", "mixed"]
DTYPES = [torch.float64, torch.float32]
BOUND_KINDS = ["floats", "per_sample", "per_channel", "per_sample_channel"]
L2_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}
THREADS = 256  # kThreads of pgd_step_body.cuh
LINF_BLOCK = 4 * THREADS  # kLinfBlockElems


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The reference on these small tensors is faster on one intra-op thread (2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Path:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++ on PATH: the CUDA kernel bodies cannot be compiled for host emulation")
    exe = tmp_path_factory.mktemp("pgd_harness") / "cuda_pgd_emulation_harness"
    torch_include = Path(torch.__file__).parent / "include"  # c10/util/Exception.h (common.h)
    cmd = [gxx, "-O1", "-std=c++17", "-ffp-contract=off", f"-I{ROOT / 'csrc'}"]
    cmd += [f"-I{torch_include}", str(HARNESS), "-o", str(exe)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"g++ failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}"
    return exe


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


def _span(t: torch.Tensor) -> int:
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def _raw(t: torch.Tensor) -> torch.Tensor:
    """The storage that t's strides address, from its first element on (a view)."""
    return torch.as_strided(t, (_span(t),), (1,), t.storage_offset())


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


def _write_case(d: Path, x_adv, g, x, bounds, norm: str, index_bits: int) -> None:
    d.mkdir(parents=True)
    cl = not x_adv.is_contiguous() and x_adv.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    flat = all(t.is_contiguous(memory_format=fmt) for t in (x_adv, g, x))
    dtype_code = {torch.float64: 0, torch.float32: 1}[x_adv.dtype]
    fields = [dtype_code, int(norm == "L2"), index_bits, int(cl), int(flat), *x_adv.shape]
    for t in (x_adv, g, x):
        fields += [*t.stride(), _span(t)]
    for name, b in zip(("eps", "alpha", "lo", "hi"), bounds):
        if isinstance(b, torch.Tensor):
            sn = b.stride(0) if b.shape[0] > 1 else 0
            sc = b.stride(1) if b.shape[1] > 1 else 0
            fields += [1, 0, sn, sc, _span(b)]
            _raw(b).double().numpy().tofile(d / f"{name}.bin")
        else:
            fields += [0, _bits(b), 0, 0, 0]
    (d / "params.txt").write_text(" ".join(map(str, fields)) + "\n")
    for name, t in (("xa", x_adv), ("g", g), ("x", x)):
        _raw(t).double().numpy().tofile(d / f"{name}.bin")


def _run(harness: Path, dirs: list[Path]) -> None:
    for start in range(0, len(dirs), 200):  # keep command lines short
        chunk = [str(d) for d in dirs[start : start + 200]]
        result = subprocess.run(
            [str(harness), *chunk], check=False, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr


def _result(d: Path, x_adv: torch.Tensor) -> torch.Tensor:
    """The emulated x_adv (same shape and strides); the storage outside it must be untouched."""
    out = torch.from_numpy(np.fromfile(d / "out_xa.bin", dtype=np.float64)).to(x_adv.dtype)
    assert out.numel() == _span(x_adv), f"{d.name}: {out.numel()} values"
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
    _run(harness, [c[0] for c in cases])
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
    _run(harness, [tmp_path / "nan", tmp_path / "zero"])
    got = _result(tmp_path / "nan", x_adv)
    assert torch.isnan(got[0, 1, 3, 2]) and torch.isfinite(got[1]).all()
    if norm == "L2":
        assert torch.isnan(got[0]).all()
    expected = reference.pgd_step_ref(x_adv, g, x, 0.03, 0.01, 0.0, 1.0, norm)
    _check(got.nan_to_num(), expected.nan_to_num(), norm, "NaN gradient")
    assert torch.equal(_result(tmp_path / "zero", x), x)


def test_float64_bounds_are_not_rounded_to_float32(harness, tmp_path):
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    eps = 0.1 + 1e-12
    _write_case(tmp_path / "c", x, torch.ones_like(x), x, (eps, 1.0, 0.0, 1.0), "Linf", 32)
    _run(harness, [tmp_path / "c"])
    assert torch.equal(_result(tmp_path / "c", x), torch.full_like(x, 0.5 + eps))


def test_repeated_runs_are_bitwise_identical(harness, tmp_path):
    """The same L2 case twice (several chunks per sample): identical bytes."""
    x_adv, g, x = _inputs((2, 3, 40, 37), torch.float32)
    _write_case(tmp_path / "a", x_adv, g, x, (0.5, 0.2, 0.0, 1.0), "L2", 32)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    _run(harness, [tmp_path / "a", tmp_path / "b"])
    first = (tmp_path / "a" / "out_xa.bin").read_bytes()
    assert first == (tmp_path / "b" / "out_xa.bin").read_bytes()
