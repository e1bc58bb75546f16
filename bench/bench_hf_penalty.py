"""CPU benchmark of the fused high-frequency penalty against the composition users write today.

One figure per case (shape x wavelet x mode x level, float32): ``hf_penalty_fwd_bwd`` = the penalty
``sum over samples, levels and detail bands of d^2`` (p=2, reduction "sum") with autograd, plus
``torch.autograd.grad`` of it with respect to the input.

* wavefuse: ``wavefuse.hf_penalty(x, wave, level, mode, p=2, reduction="sum", backend=...)``: no
  detail band is ever stored; the backward recomputes them and writes grad_x once.
* pytorch_wavelets: ``DWTForward(J, wave, mode)`` + ``sum(yh_j.square().sum())`` + backward,
  the way a training script adds such a penalty today.

Before a case is timed its value is checked against the energies of ``pywt.wavedec2`` and its
input gradient against wavefuse's reference (the exact adjoint); a disagreement goes to the notes.
The floor counts what the fused op must move: read x (forward), read x and write grad_x (backward).

Run ``python bench/bench_hf_penalty.py [pytest args]`` to replace the hf_penalty rows of
``bench/results/cpu.csv`` (notes in ``cpu-hf_penalty-notes.md``).
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import pywt
import torch
from torch import Tensor

import wavefuse
from wavefuse import backends

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results

SHAPES = [(128, 64, 32, 32), (16, 3, 224, 224)]
WAVES = ["haar", "db4"]
MODES = ["periodization", "symmetric"]
LEVELS = [1, 3]
DTYPE = torch.float32
OP = "hf_penalty_fwd_bwd"
RTOL = 1e-4  # value and gradient, relative to the oracle's largest magnitude (float32 compute)
CHECK_N, CHECK_C = 2, 2
MAX_TIME_S = 0.5
CSV_PATH = Path(__file__).resolve().parent / "results" / "cpu.csv"
NOTES_NAME = "cpu-hf_penalty-notes.md"
THREADS = _results.set_cpu_threads()
ALLOCATOR = _results.steady_allocator()  # freed memory stays in the process: no fault storms

Penalty = Callable[[Tensor], Tensor]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Level value"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
    pytest.mark.benchmark(disable_gc=True),
]


class Missing(Exception):
    """The implementation is not installed or not built here (its rows are skipped)."""


def _wavefuse(backend: str) -> Callable[[str, str, int], Penalty]:
    def build(wave: str, mode: str, level: int) -> Penalty:
        reason = backends.why_not(backend, "hf_penalty", "cpu")
        if reason is not None:
            raise Missing(f"wavefuse backend {backend!r} is not live: {reason}")
        return lambda x: wavefuse.hf_penalty(
            x, wave=wave, level=level, mode=mode, p=2, reduction="sum", backend=backend
        )

    return build


def _pytorch_wavelets(wave: str, mode: str, level: int) -> Penalty:
    try:
        import pytorch_wavelets
    except ImportError as e:
        raise Missing(f"pytorch_wavelets is not installed ({e})") from None
    dwt = pytorch_wavelets.DWTForward(J=level, wave=wave, mode=mode)

    def penalty(x: Tensor) -> Tensor:
        _, yh = dwt(x)
        return sum(h.square().sum() for h in yh)

    return penalty


IMPLS = {
    "reference": (_wavefuse("reference"), False),
    "cpu": (_wavefuse("cpu"), False),
    "pytorch_wavelets": (_pytorch_wavelets, True),
}


@functools.cache
def bench_input(shape: tuple[int, ...]) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=DTYPE)


def _value_oracle(x: Tensor, wave: str, mode: str, level: int) -> float:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Level value")
        coeffs = pywt.wavedec2(x.double().numpy(), wave, mode=mode, level=level)
    return float(sum((band**2).sum() for details in coeffs[1:] for band in details))


def _grad(penalty: Penalty, x: Tensor) -> Tensor:
    xg = x.detach().requires_grad_()
    return torch.autograd.grad(penalty(xg), xg)[0]


@functools.cache
def check(impl: str, shape: tuple, wave: str, mode: str, level: int) -> str:
    x = bench_input(shape)[:CHECK_N, :CHECK_C].contiguous()
    penalty = IMPLS[impl][0](wave, mode, level)
    want = _value_oracle(x, wave, mode, level)
    with torch.no_grad():
        got = float(penalty(x))
    if not abs(got - want) <= RTOL * abs(want):  # a NaN disagrees
        return f"value disagrees with pywt.wavedec2's energies ({got:.6g} vs {want:.6g})"
    oracle = _grad(IMPLS["reference"][0](wave, mode, level), x.double()).float()
    err = float((_grad(penalty, x) - oracle).abs().max() / oracle.abs().max())
    if not err <= RTOL:
        return (
            f"input gradient disagrees with the exact one (wavefuse reference; max rel. error "
            f"{err:.2e}): timed anyway, but not a like-for-like comparison"
        )
    return ""


def fwd_bwd_step(penalty: Penalty, x: Tensor) -> tuple[Callable[[], object], int]:
    xg = x.detach().requires_grad_()

    def step():
        return torch.autograd.grad(penalty(xg), xg)

    step()
    return step, 3 * x.nbytes


@pytest.fixture(scope="session")
def results(pytestconfig):
    return _results.recorder(pytestconfig)


def _shape_id(shape: tuple) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("level", LEVELS, ids=lambda j: f"J{j}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("wave", WAVES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_hf_penalty(benchmark, results, pytestconfig, shape, wave, mode, level, impl):
    """Time one implementation on one case; record it with the agreement note."""
    try:
        penalty = IMPLS[impl][0](wave, mode, level)
        note = check(impl, shape, wave, mode, level)
    except Missing as e:
        pytest.skip(str(e))
    step, nbytes = fwd_bwd_step(penalty, bench_input(shape))
    benchmark.group = f"{OP} {_shape_id(shape)} {wave} {mode} J={level}"
    benchmark.extra_info.update(nbytes=nbytes, note=note)
    benchmark.pedantic(step, rounds=_results.rounds_for(step, pytestconfig), iterations=1)
    if benchmark.stats:
        results.record(
            _results.Measurement(
                op=OP,
                backend=impl,
                shape=shape,
                dtype=str(DTYPE).removeprefix("torch."),
                wave=wave,
                mode=mode,
                level=level,
                times_s=list(benchmark.stats.stats.data),
                nbytes=nbytes,
                is_baseline=IMPLS[impl][1],
                note=note,
            )
        )


def main(argv: list[str]) -> int:
    """Run this file's benchmarks and replace the hf_penalty rows of bench/results/cpu.csv."""
    return _results.run_benchmarks(__file__, CSV_PATH, NOTES_NAME, MAX_TIME_S, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
