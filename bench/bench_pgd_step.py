"""CPU benchmark of the fused PGD step against torchattacks' update sequence.

One figure per case (shape x norm, float32): ``pgd_step`` = one projected-gradient update of
``x_adv`` given the loss gradient, the clean images, eps and alpha (the gradient itself is not
timed: it is the model's cost, the same for every implementation).

* wavefuse: ``wavefuse.pgd_step(x_adv, grad, x_nat, eps, alpha, norm, backend=...)``, in place,
  one pass (Linf) or the per-sample norms and the update by the task that owns the sample (L2).
* torchattacks: torchattacks 3.5.1's ``PGD`` / ``PGDL2`` loop body after the gradient, written
  out as the eager torch ops it runs (``bench_gpu.torchattacks_linf`` / ``torchattacks_l2``):
  Linf 5 elementwise passes, L2 two norms and 7 passes, each allocating its output.

eps and alpha are torchattacks' defaults (Linf 8/255 and 2/255; L2 1.0 and 0.2). Before a case is
timed, the implementation's result is compared with the torchattacks sequence on the same inputs
(float32: bit for bit; any difference goes to the notes). The floor counts what the fused step
must move: read x_adv, grad and x_nat, write x_adv, 4 x the input's bytes (for L2 the norms need
one more pass over grad and delta, not counted).

Run ``python bench/bench_pgd_step.py [pytest args]`` to replace the pgd_step rows of
``bench/results/cpu.csv`` (notes in ``cpu-pgd_step-notes.md``); the norm is in the ``mode``
column, ``wave`` and ``level`` are empty.
"""

from __future__ import annotations

import functools
import sys
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

SHAPES = [(128, 3, 32, 32), (512, 3, 224, 224)]
NORMS = ["Linf", "L2"]
DTYPE = torch.float32
OP = "pgd_step"
MAX_TIME_S = 0.5
CSV_PATH = Path(__file__).resolve().parent / "results" / "cpu.csv"
NOTES_NAME = "cpu-pgd_step-notes.md"
THREADS = _results.set_cpu_threads()
ALLOCATOR = _results.steady_allocator()  # freed memory stays in the process: no fault storms

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]

pytestmark = [pytest.mark.benchmark(disable_gc=True)]


class Missing(Exception):
    """The implementation is not built here (its rows are skipped)."""


def _wavefuse(backend: str) -> Callable[[str], Step]:
    def build(norm: str) -> Step:
        reason = backends.why_not(backend, "pgd_step", "cpu")
        if reason is not None:
            raise Missing(f"wavefuse backend {backend!r} is not live: {reason}")
        return lambda xa, g, x, eps, alpha: wavefuse.pgd_step(
            xa, g, x, eps, alpha, norm, backend=backend
        )

    return build


def _torchattacks(norm: str) -> Step:
    return torchattacks_linf if norm == "Linf" else torchattacks_l2


IMPLS = {
    "torchattacks": (_torchattacks, True),
    "reference": (_wavefuse("reference"), False),
    "cpu": (_wavefuse("cpu"), False),
}


@functools.cache
def inputs(shape: tuple, norm: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_adv, grad, x_nat) as bench_gpu.py draws them (seeded; x_adv inside the eps-ball)."""
    return step_inputs(shape, DTYPE, "cpu", norm)


@functools.cache
def expected(shape: tuple, norm: str) -> torch.Tensor:
    """The torchattacks sequence's result on the benchmark input (computed once per case)."""
    x_adv, grad, x_nat = inputs(shape, norm)
    with torch.no_grad():
        return _torchattacks(norm)(x_adv.clone(), grad, x_nat, *STEP_PARAMS[norm])


@functools.cache
def check(impl: str, shape: tuple, norm: str) -> str:
    """A note when ``impl`` differs from the torchattacks sequence on the benchmark input."""
    x_adv, grad, x_nat = inputs(shape, norm)
    eps, alpha = STEP_PARAMS[norm]
    with torch.no_grad():
        got = IMPLS[impl][0](norm)(x_adv.clone(), grad, x_nat, eps, alpha)
    want = expected(shape, norm)
    diff = float((got - want).abs().max())
    if not diff <= 0:  # a NaN differs
        return (
            f"differs from torchattacks' update sequence by up to {diff:.3g} (not bit for bit; "
            f"{int((got != want).sum())} of {got.numel()} elements)"
        )
    return ""


def timed_step(step: Step, shape: tuple, norm: str) -> tuple[Callable[[], object], int]:
    """The step on a private copy of x_adv (wavefuse's writes it in place, staying in the ball)."""
    x_adv, grad, x_nat = inputs(shape, norm)
    x_adv = x_adv.clone()
    eps, alpha = STEP_PARAMS[norm]

    def run():
        with torch.no_grad():
            return step(x_adv, grad, x_nat, eps, alpha)

    run()
    return run, 4 * x_nat.nbytes


@pytest.fixture(scope="session")
def results(pytestconfig):
    return _results.recorder(pytestconfig)


def _shape_id(shape: tuple) -> str:
    return "x".join(map(str, shape))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_pgd_step(benchmark, results, pytestconfig, shape, norm, impl):
    """Time one implementation on one case; record it with the agreement note."""
    try:
        step = IMPLS[impl][0](norm)
    except Missing as e:
        pytest.skip(str(e))
    note = check(impl, shape, norm)
    fn, nbytes = timed_step(step, shape, norm)
    benchmark.group = f"{OP} {_shape_id(shape)} {norm}"
    benchmark.extra_info.update(nbytes=nbytes, note=note)
    benchmark.pedantic(fn, rounds=_results.rounds_for(fn, pytestconfig), iterations=1)
    if benchmark.stats:
        results.record(
            _results.Measurement(
                op=OP,
                backend=impl,
                shape=shape,
                dtype=str(DTYPE).removeprefix("torch."),
                wave="",
                mode=norm,
                level="",
                times_s=list(benchmark.stats.stats.data),
                nbytes=nbytes,
                is_baseline=IMPLS[impl][1],
                note=note,
            )
        )


def main(argv: list[str]) -> int:
    """Run this file's benchmarks and replace the pgd_step rows of bench/results/cpu.csv."""
    return _results.run_benchmarks(__file__, CSV_PATH, NOTES_NAME, MAX_TIME_S, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
