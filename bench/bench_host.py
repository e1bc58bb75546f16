"""CPU benchmark of host time per call: each public op on a tiny tensor, against the peers' calls.

On a tiny tensor (2 x 3 x 16 x 16 float32, 6 KB) the arithmetic is negligible, so a call's time is
what it costs the host: Python validation, the custom op's layers, autograd bookkeeping, the C++
dispatcher, allocations. On a GPU that is the time an eager call costs the CPU before (or instead
of) the kernel, and small-batch steps are bound by it (on an H200 the CUDA Linf ``pgd_step`` on
128 x 3 x 32 x 32 took 59 us a call, torchattacks' update 27 us, 2026-12-04). The rows say how far
wavefuse's eager calls are from the peers' on that count, measured here where it is cheap.

Cases (``op`` column ``host_<name>``; ``wave``/``mode``/``level`` as the other benchmarks):

* ``host_dwt2``: ``wavefuse.dwt2`` vs pytorch_wavelets ``DWTForward(J=1)``; ``host_wavedec2``: J=3
  vs ``DWTForward(J=3)`` (no gradient).
* ``host_hf_penalty_fwd_bwd``: ``hf_penalty`` (p=2, "sum") + ``torch.autograd.grad`` vs
  ``DWTForward`` + the sum of squares of the detail bands + the same grad.
* ``host_pgd_step``: ``wavefuse.pgd_step`` (Linf, L2; in ``mode``) vs torchattacks' update sequence.

wavefuse runs its CPU backend. Results are not compared here: every op's agreement is the other
benchmarks' and the tests' business. Run ``python bench/bench_host.py [pytest args]`` to replace
the host_* rows of ``bench/results/cpu.csv`` (notes in ``cpu-host-notes.md``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import wavefuse
from wavefuse import backends

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results
from bench_gpu import STEP_PARAMS, step_inputs, torchattacks_l2, torchattacks_linf

SHAPE = (2, 3, 16, 16)
DTYPE = torch.float32
MAX_TIME_S = 0.3
CSV_PATH = Path(__file__).resolve().parent / "results" / "cpu.csv"
NOTES_NAME = "cpu-host-notes.md"
THREADS = _results.set_cpu_threads()
ALLOCATOR = _results.steady_allocator()

pytestmark = [
    pytest.mark.filterwarnings("ignore:Level value"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
    pytest.mark.benchmark(disable_gc=True),
]


class Missing(Exception):
    """The implementation is not installed or not built here (its rows are skipped)."""


def _dwt_forward(wave: str, mode: str, level: int):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation
            import pytorch_wavelets
    except ImportError as e:
        raise Missing(f"pytorch_wavelets is not installed ({e})") from None
    return pytorch_wavelets.DWTForward(J=level, wave=wave, mode=mode)


def _check_live(op: str) -> None:
    reason = backends.why_not("cpu", op, "cpu")
    if reason is not None:
        raise Missing(f"wavefuse backend 'cpu' is not live: {reason}")


def _transform(impl: str, wave: str, mode: str, level: int) -> Callable[[], object]:
    x = torch.randn(SHAPE, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    if impl == "pytorch_wavelets":
        dwt = _dwt_forward(wave, mode, level)
        return lambda: dwt(x)
    _check_live("dwt2d")
    if level == 1:
        return lambda: wavefuse.dwt2(x, wave, mode, backend="cpu")
    return lambda: wavefuse.wavedec2(x, wave, mode, level, backend="cpu")


def _penalty(impl: str, wave: str, mode: str, level: int) -> Callable[[], object]:
    x = torch.randn(SHAPE, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    if impl == "pytorch_wavelets":
        dwt = _dwt_forward(wave, mode, level)

        def penalty(x):
            _, yh = dwt(x)
            return sum(h.square().sum() for h in yh)
    else:
        _check_live("hf_penalty")

        def penalty(x):
            return wavefuse.hf_penalty(x, wave, level, mode, 2, reduction="sum", backend="cpu")

    return lambda: torch.autograd.grad(penalty(x), x)


def _step(impl: str, norm: str) -> Callable[[], object]:
    x_adv, grad, x_nat = step_inputs(SHAPE, DTYPE, "cpu", norm)
    eps, alpha = STEP_PARAMS[norm]
    if impl == "torchattacks":
        update = torchattacks_linf if norm == "Linf" else torchattacks_l2
        return lambda: update(x_adv, grad, x_nat, eps, alpha)
    _check_live("pgd_step")
    return lambda: wavefuse.pgd_step(x_adv, grad, x_nat, eps, alpha, norm, backend="cpu")


# (op, wave, mode, level, wavefuse's call, the peer's name)
CASES = [
    ("host_dwt2", "haar", "periodization", 1, _transform, "pytorch_wavelets"),
    ("host_dwt2", "db4", "symmetric", 1, _transform, "pytorch_wavelets"),
    ("host_wavedec2", "haar", "periodization", 3, _transform, "pytorch_wavelets"),
    ("host_wavedec2", "db4", "symmetric", 3, _transform, "pytorch_wavelets"),
    ("host_hf_penalty_fwd_bwd", "haar", "periodization", 1, _penalty, "pytorch_wavelets"),
    ("host_hf_penalty_fwd_bwd", "db4", "symmetric", 3, _penalty, "pytorch_wavelets"),
    ("host_pgd_step", "", "Linf", "", _step, "torchattacks"),
    ("host_pgd_step", "", "L2", "", _step, "torchattacks"),
]


def _case_id(case) -> str:
    op, wave, mode, level = case[:4]
    return "-".join(str(p) for p in (op, wave, mode, level) if p != "")


@pytest.fixture(scope="session")
def results(pytestconfig):
    return _results.recorder(pytestconfig)


@pytest.mark.parametrize("impl", ["peer", "wavefuse"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_host(benchmark, results, pytestconfig, case, impl):
    """Time one call of one implementation on the tiny input; record it."""
    op, wave, mode, level, build, peer = case
    name = peer if impl == "peer" else "cpu"
    try:
        fn = build(name, mode) if build is _step else build(name, wave, mode, level)
    except Missing as e:
        pytest.skip(str(e))
    for _ in range(200):  # warm: filter caches, first-call dispatch, the allocator
        fn()
    benchmark.group = f"{op} {wave} {mode} {level}".strip()
    benchmark.pedantic(fn, rounds=_results.rounds_for(fn, pytestconfig), iterations=1)
    if benchmark.stats:
        results.record(
            _results.Measurement(
                op=op,
                backend=name,
                shape=SHAPE,
                dtype=str(DTYPE).removeprefix("torch."),
                wave=wave,
                mode=mode,
                level=level,
                times_s=list(benchmark.stats.stats.data),
                nbytes=0,
                is_baseline=impl == "peer",
            )
        )


def main(argv: list[str]) -> int:
    """Run this file's benchmarks and replace the host_* rows of bench/results/cpu.csv."""
    return _results.run_benchmarks(__file__, CSV_PATH, NOTES_NAME, MAX_TIME_S, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
