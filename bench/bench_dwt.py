"""CPU benchmark of the 2-D DWT: wavefuse against pytorch_wavelets, torchwavelets and ptwt.

Two figures per case (shape x wavelet x mode x level, float32):

* ``dwt2d_fwd``: the forward transform under ``torch.no_grad()``;
* ``dwt2d_fwd_bwd``: the forward with autograd (input requires grad) plus ``torch.autograd.grad``
  of every output (the approximation and every detail band) against fixed random upstream
  gradients drawn once, outside the timing: no loss ops are timed, only the transforms.

Every implementation is called through its own API (wavefuse and pytorch_wavelets:
``DWTForward(J, wave, mode)``; torchwavelets: ``DWT2D(J, wave, mode)``; ptwt:
``wavedec2(x, pywt.Wavelet(w), level=J, mode=m)``). Before a case is timed, its forward is checked
against ``pywt.wavedec2`` and, for the fwd+bwd figure, its input gradient against wavefuse's
reference (the exact adjoint); a disagreement is written to the notes, never dropped silently.

Run ``python bench/bench_dwt.py [pytest args]`` to regenerate ``bench/results/cpu.csv``;
``pytest bench/bench_dwt.py`` only times and prints (see bench/README.md).
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
from torch import Tensor

import wavefuse
from wavefuse import backends

# bench/ is not a package: make its helpers importable however this file is loaded.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results

SHAPES = [(128, 64, 32, 32), (16, 3, 224, 224)]
WAVES = ["haar", "db4"]
MODES = ["zero", "symmetric"]
LEVELS = [1, 3]
DTYPE = torch.float32
OPS = ["dwt2d_fwd", "dwt2d_fwd_bwd"]
# Agreement tolerances, relative to the oracle's largest magnitude (float32 compute).
FWD_RTOL = 1e-5
GRAD_RTOL = 1e-4
# The correctness checks run on this many samples and channels of the benchmark input (full H, W).
CHECK_N, CHECK_C = 1, 2
MAX_TIME_S = 0.5  # timing budget per case under ``python bench/bench_dwt.py``
CSV_PATH = Path(__file__).resolve().parent / "results" / "cpu.csv"
THREADS = _results.set_cpu_threads()
ALLOCATOR = _results.steady_allocator()  # freed memory stays in the process: no fault storms

Transform = Callable[[Tensor], list[Tensor]]

pytestmark = [
    # pywt (the oracle) and torchwavelets (on every call) warn when J is above pywt's
    # dwt_max_level (db4, J=3 on 32x32): expected here, and it would flood the output.
    pytest.mark.filterwarnings("ignore:Level value"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
    # Rounds: see rounds_for. The garbage collector stays off while timing.
    pytest.mark.benchmark(disable_gc=True),
]


class Unsupported(Exception):
    """The implementation exists but cannot run this case (recorded with a note)."""


class Missing(Exception):
    """The implementation is not installed or not built here (its rows are skipped)."""


# ----------------------------------------------------------------------------- implementations
# Each builder returns a Transform whose outputs are flattened in pywt order:
# [cA_J, cH_J, cV_J, cD_J, ..., cH_1, cV_1, cD_1]. For (yl, yh) APIs the three bands of a level
# are unbind views of yh[j], so autograd sees exactly the tensors the API returned.


def _import(package: str):
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise Missing(f"{package} is not installed ({e}); pip install {package}") from None


def _pairs_to_pywt(yl: Tensor, yh: list[Tensor]) -> list[Tensor]:
    """pytorch_wavelets' (yl, yh[j] (N, C, 3, h, w) finest first) -> pywt order."""
    return [yl] + [band for hi in reversed(yh) for band in hi.unbind(2)]


def _pairs_module(module: torch.nn.Module) -> Transform:
    return lambda x: _pairs_to_pywt(*module(x))


def _wavefuse(backend: str) -> Callable[[str, str, int], Transform]:
    def build(wave: str, mode: str, level: int) -> Transform:
        reason = backends.why_not(backend, "dwt2d", "cpu")
        if reason is not None:
            raise Missing(f"wavefuse backend {backend!r} is not live: {reason}")
        return _pairs_module(wavefuse.DWTForward(J=level, wave=wave, mode=mode, backend=backend))

    return build


def _pytorch_wavelets(wave: str, mode: str, level: int) -> Transform:
    pw = _import("pytorch_wavelets")
    return _pairs_module(pw.DWTForward(J=level, wave=wave, mode=mode))


def _torchwavelets(wave: str, mode: str, level: int) -> Transform:
    tw = _import("torchwavelets")
    return _pairs_module(tw.DWT2D(J=level, wave=wave, mode=mode))


# ptwt's padding names: zero, symmetric, reflect, periodic and "constant" (= edge replication,
# pywt's "constant"); no periodization in its convolution path.
PTWT_MODES = {"zero": "zero", "symmetric": "symmetric", "reflect": "reflect"}


def _ptwt(wave: str, mode: str, level: int) -> Transform:
    ptwt = _import("ptwt")
    if mode not in PTWT_MODES:
        raise Unsupported(f"ptwt.wavedec2 has no mode equivalent to pywt's {mode!r}")
    wavelet, ptwt_mode = pywt.Wavelet(wave), PTWT_MODES[mode]

    def transform(x: Tensor) -> list[Tensor]:
        coeffs = ptwt.wavedec2(x, wavelet, level=level, mode=ptwt_mode)
        return [coeffs[0]] + [band for details in coeffs[1:] for band in details]

    return transform


@dataclass(frozen=True)
class Impl:
    name: str  # the ``backend`` column
    build: Callable[[str, str, int], Transform]
    is_peer: bool


IMPLS = {
    impl.name: impl
    for impl in (
        Impl("reference", _wavefuse("reference"), is_peer=False),
        Impl("cpu", _wavefuse("cpu"), is_peer=False),
        Impl("pytorch_wavelets", _pytorch_wavelets, is_peer=True),
        Impl("torchwavelets", _torchwavelets, is_peer=True),
        Impl("ptwt", _ptwt, is_peer=True),
    )
}


# ----------------------------------------------------------------------------- inputs and checks


@functools.cache
def bench_input(shape: tuple[int, ...]) -> Tensor:
    """The benchmark input of ``shape`` (seeded, standard normal, float32, contiguous)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=DTYPE)


def _rel_err(got: list[Tensor], want: list[np.ndarray | Tensor]) -> float:
    if [tuple(g.shape) for g in got] != [tuple(w.shape) for w in want]:
        return float("inf")
    want = [torch.as_tensor(np.asarray(w), dtype=torch.float64) for w in want]
    scale = max(float(w.abs().max()) for w in want) or 1.0
    errs = [float((g.double() - w).abs().max()) for g, w in zip(got, want)]
    return max(errs) / scale if all(math.isfinite(e) for e in errs) else math.inf


def forward_error(transform: Transform, x: Tensor, wave: str, mode: str, level: int) -> float:
    """Largest deviation from ``pywt.wavedec2`` (float64), relative to its largest coefficient."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Level value")
        coeffs = pywt.wavedec2(x.double().numpy(), wave, mode=mode, level=level)
    want = [coeffs[0]] + [band for details in coeffs[1:] for band in details]
    with torch.no_grad():
        return _rel_err(transform(x), want)


def input_grad(transform: Transform, x: Tensor, seed: int = 1) -> Tensor:
    """d<outputs, g>/dx for seeded standard-normal upstream gradients g."""
    xg = x.detach().requires_grad_()
    outs = transform(xg)
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    return torch.autograd.grad(outs, xg, grads)[0]


@functools.cache
def check(impl: str, shape: tuple, wave: str, mode: str, level: int, grad: bool) -> str:
    """A note when ``impl`` disagrees with the oracles on a slice of the benchmark input, else ""."""
    x = bench_input(shape)[:CHECK_N, :CHECK_C].contiguous()
    transform = IMPLS[impl].build(wave, mode, level)
    err = forward_error(transform, x, wave, mode, level)
    if not err <= FWD_RTOL:  # a NaN disagrees
        return f"forward disagrees with pywt.wavedec2 (max rel. error {err:.2e})"
    if not grad:
        return ""
    oracle = input_grad(IMPLS["reference"].build(wave, mode, level), x)
    err = _rel_err([input_grad(transform, x)], [oracle])
    if not err <= GRAD_RTOL:
        return (
            f"input gradient disagrees with the exact adjoint (wavefuse reference; max rel. "
            f"error {err:.2e}): timed anyway, but not a like-for-like comparison"
        )
    return ""


# ----------------------------------------------------------------------------- timed steps


def _nbytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def forward_step(transform: Transform, x: Tensor) -> tuple[Callable[[], object], int]:
    """The forward under no_grad, and its bytes: read x, write every coefficient."""

    def step():
        with torch.no_grad():
            return transform(x)

    return step, x.nbytes + _nbytes(step())


def forward_backward_step(transform: Transform, x: Tensor) -> tuple[Callable[[], object], int]:
    """Forward with autograd + autograd.grad of all outputs, and its bytes: the forward's, plus
    read every coefficient gradient and write grad_x. Upstream gradients are drawn here, once."""
    xg = x.detach().requires_grad_()
    outs = transform(xg)
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    del outs

    def step():
        return torch.autograd.grad(transform(xg), xg, grads)

    return step, 2 * (x.nbytes + _nbytes(grads))


STEPS = {"dwt2d_fwd": forward_step, "dwt2d_fwd_bwd": forward_backward_step}


# ----------------------------------------------------------------------------- the benchmark


def _shape_id(shape: tuple) -> str:
    return "x".join(map(str, shape))


def _measurement(op, impl, shape, wave, mode, level, times, nbytes, note) -> _results.Measurement:
    return _results.Measurement(
        op=op,
        backend=impl,
        shape=shape,
        dtype=str(DTYPE).removeprefix("torch."),
        wave=wave,
        mode=mode,
        level=level,
        times_s=times,
        nbytes=nbytes,
        is_baseline=IMPLS[impl].is_peer,
        note=note,
    )


@pytest.fixture(scope="session")
def results(pytestconfig):
    """Where measurements go: the CSV writer under ``python bench/bench_dwt.py``, else nowhere."""
    return _results.recorder(pytestconfig)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("level", LEVELS, ids=lambda j: f"J{j}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wave", WAVES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("op", OPS)
def test_dwt2d(benchmark, results, pytestconfig, op, shape, wave, mode, level, impl):
    """Time one implementation on one case; record it with the agreement note."""
    try:
        transform = IMPLS[impl].build(wave, mode, level)
        note = check(impl, shape, wave, mode, level, grad=op == "dwt2d_fwd_bwd")
    except Missing as e:
        pytest.skip(str(e))
    except Unsupported as e:
        results.record(_measurement(op, impl, shape, wave, mode, level, None, 0, str(e)))
        pytest.skip(str(e))
    step, nbytes = STEPS[op](transform, bench_input(shape))  # its first call warmed up
    benchmark.group = f"{op} {_shape_id(shape)} {wave} {mode} J={level}"
    benchmark.extra_info.update(nbytes=nbytes, note=note)
    benchmark.pedantic(step, rounds=_results.rounds_for(step, pytestconfig), iterations=1)
    if benchmark.stats:  # None or empty under --benchmark-disable
        times = list(benchmark.stats.stats.data)
        results.record(_measurement(op, impl, shape, wave, mode, level, times, nbytes, note))


def main(argv: list[str]) -> int:
    """Run this file's benchmarks under pytest and write bench/results/cpu.csv (+ notes)."""
    return _results.run_benchmarks(__file__, CSV_PATH, None, MAX_TIME_S, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
