"""CPU benchmark of the wavelet-filtered PGD step against the composition users write today.

One figure per case (shape x wavelet x mode x level x norm, float32, hf_scale 0.5 at every
level): ``wavelet_pgd_step_linf`` / ``wavelet_pgd_step_l2`` = one projected-gradient update of
``x_adv`` along ``g' = idwt(scale_hf(dwt(grad)))`` (the gradient itself is not timed: it is the
model's cost, the same for every implementation).

* wavefuse: ``wavefuse.wavelet_pgd_step(x_adv, grad, x_nat, eps, alpha, wave, level, mode,
  hf_scale, norm, backend=...)``, in place. The CPU kernel: haar/db1 one fused pass; other
  wavelets one pass per plane (or per 8 small planes) through every level in local buffers, no
  band written to memory (Linf: one pass in all; L2: that pass writes g', then the step).
* pytorch_wavelets: ``DWTForward(J, wave, mode)``, the detail bands times hf_scale,
  ``DWTInverse(wave, mode)`` cropped level by level as ``pywt.waverec2`` does, then torchattacks
  3.5.1's PGD / PGDL2 update as eager torch ops (``bench_gpu.torchattacks_linf`` / ``_l2``).

eps and alpha are torchattacks' defaults (Linf 8/255 and 2/255; L2 1.0 and 0.2). Before a case is
timed, its result is compared with the float64 reference (``wavefuse.reference``) on the same
inputs; a disagreement goes to the notes (Linf: the sign of a filtered entry that is zero in exact
arithmetic is a rounding accident, so a few elements may differ by 2 alpha). The floor counts what
a fused step must move: read x_adv, grad and x_nat, write x_adv, 4 x the input's bytes.

Run ``python bench/bench_wavelet_pgd_step.py [pytest args]`` to replace the wavelet_pgd_step rows
of ``bench/results/cpu.csv`` (notes in ``cpu-wavelet_pgd_step-notes.md``).
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor

import wavefuse
from wavefuse import backends

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results
from bench_gpu import STEP_PARAMS, step_inputs, torchattacks_l2, torchattacks_linf

SHAPES = [(128, 3, 32, 32), (16, 3, 224, 224)]
CASES = [("haar", "periodization", 1), ("db4", "symmetric", 3)]  # (wave, mode, level)
NORMS = ["Linf", "L2"]
HF_SCALE = 0.5
DTYPE = torch.float32
OPS = {"Linf": "wavelet_pgd_step_linf", "L2": "wavelet_pgd_step_l2"}
MAX_TIME_S = 0.5
CSV_PATH = Path(__file__).resolve().parent / "results" / "cpu.csv"
NOTES_NAME = "cpu-wavelet_pgd_step-notes.md"
THREADS = _results.set_cpu_threads()
ALLOCATOR = _results.steady_allocator()  # freed memory stays in the process: no fault storms

Step = Callable[[Tensor, Tensor, Tensor, float, float], Tensor]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Level value"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated"),
    pytest.mark.benchmark(disable_gc=True),
]


class Missing(Exception):
    """The implementation is not installed or not built here (its rows are skipped)."""


def _wavefuse(backend: str) -> Callable[[str, str, int, str], Step]:
    def build(wave: str, mode: str, level: int, norm: str) -> Step:
        reason = backends.why_not(backend, "wavelet_pgd_step", "cpu")
        if reason is not None:
            raise Missing(f"wavefuse backend {backend!r} is not live: {reason}")
        return lambda xa, g, x, eps, alpha: wavefuse.wavelet_pgd_step(
            xa, g, x, eps, alpha, wave, level, mode, HF_SCALE, norm, backend=backend
        )

    return build


def _pytorch_wavelets(wave: str, mode: str, level: int, norm: str) -> Step:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation
            import pytorch_wavelets
    except ImportError as e:
        raise Missing(f"pytorch_wavelets is not installed ({e})") from None
    dwt = pytorch_wavelets.DWTForward(J=level, wave=wave, mode=mode)
    idwt = pytorch_wavelets.DWTInverse(wave=wave, mode=mode)
    update = torchattacks_linf if norm == "Linf" else torchattacks_l2

    def step(x_adv: Tensor, grad: Tensor, x_nat: Tensor, eps: float, alpha: float) -> Tensor:
        yl, yh = dwt(grad)
        a = yl
        for j in reversed(range(level)):  # coarsest first; crop to the detail bands' size
            band = yh[j] * HF_SCALE
            a = idwt((a[..., : band.shape[-2], : band.shape[-1]], [band]))
        g = a[..., : grad.shape[-2], : grad.shape[-1]]
        return update(x_adv, g, x_nat, eps, alpha)

    return step


IMPLS = {
    "pytorch_wavelets": (_pytorch_wavelets, True),
    "reference": (_wavefuse("reference"), False),
    "cpu": (_wavefuse("cpu"), False),
}


@functools.cache
def inputs(shape: tuple, norm: str) -> tuple[Tensor, Tensor, Tensor]:
    """(x_adv, grad, x_nat) as bench_gpu.py draws them (seeded; x_adv inside the eps-ball)."""
    return step_inputs(shape, DTYPE, "cpu", norm)


@functools.cache
def expected(shape: tuple, wave: str, mode: str, level: int, norm: str) -> Tensor:
    """The float64 reference on the benchmark input."""
    x_adv, grad, x_nat = (t.double() for t in inputs(shape, norm))
    eps, alpha = STEP_PARAMS[norm]
    return wavefuse.wavelet_pgd_step(
        x_adv, grad, x_nat, eps, alpha, wave, level, mode, HF_SCALE, norm, backend="reference"
    )


@functools.cache
def check(impl: str, shape: tuple, wave: str, mode: str, level: int, norm: str) -> str:
    """A note when ``impl`` differs from the float64 reference by more than float32 rounding."""
    x_adv, grad, x_nat = inputs(shape, norm)
    eps, alpha = STEP_PARAMS[norm]
    with torch.no_grad():
        got = IMPLS[impl][0](wave, mode, level, norm)(x_adv.clone(), grad, x_nat, eps, alpha)
    diff = (got.double() - expected(shape, wave, mode, level, norm)).abs()
    off = int((~(diff <= 1e-5)).sum())  # a NaN is off
    if off:
        return (
            f"differs from the float64 reference by more than 1e-5 in {off} of {diff.numel()} "
            f"elements (up to {float(diff.max()):.3g})"
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
@pytest.mark.parametrize("wave, mode, level", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_wavelet_pgd_step(benchmark, results, pytestconfig, shape, wave, mode, level, norm, impl):
    """Time one implementation on one case; record it with the agreement note."""
    try:
        step = IMPLS[impl][0](wave, mode, level, norm)
    except Missing as e:
        pytest.skip(str(e))
    note = check(impl, shape, wave, mode, level, norm)
    fn, nbytes = timed_step(step, shape, norm)
    benchmark.group = f"{OPS[norm]} {_shape_id(shape)} {wave} {mode} J={level}"
    benchmark.extra_info.update(nbytes=nbytes, note=note)
    benchmark.pedantic(fn, rounds=_results.rounds_for(fn, pytestconfig), iterations=1)
    if benchmark.stats:
        results.record(
            _results.Measurement(
                op=OPS[norm],
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
    """Run this file's benchmarks and replace the wavelet_pgd_step rows of bench/results/cpu.csv."""
    return _results.run_benchmarks(__file__, CSV_PATH, NOTES_NAME, MAX_TIME_S, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
