"""Helpers shared by the GPU benchmarks (bench_gpu.py, bench_at_step.py) and gpu_check.sh.

* ``device_slug``: the ``<device-slug>`` of ``results/gpu-<device-slug>.csv``
  (``python bench/_gpu.py slug`` prints it for the shell script);
* ``Timer``: ``triton.testing.do_bench`` on CUDA (median, p20, p80 from its ``quantiles``, with
  its L2 flush before every call), and a CPU timer that imitates it (the same warm-up and
  repetition rule, wall clock) so the benchmarks' logic runs on a CPU-only machine (``--smoke``);
* ``Timer.copy_ms``: the time of ``y.copy_(x)`` over the same bytes, timed the same way: the
  ``pct_copy`` ceiling;
* ``on_sigterm``: turns SIGTERM (``timeout`` ending a step) into an exception, so the partial
  results are still written.

Nothing here touches a GPU at import time.
"""

from __future__ import annotations

import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
QUANTILES = (0.5, 0.2, 0.8)  # median, p20, p80: the CSV's ms_median, ms_p20, ms_p80


def device_name(device: str = "cuda") -> str:
    """The GPU's name (torch.cuda.get_device_name), or "cpu"."""
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': lower case, runs of anything but
    letters and digits replaced by one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def csv_path(device: str = "cuda") -> Path:
    """results/gpu-<device-slug>.csv for a CUDA device (results/cpu-smoke.csv for --smoke on CPU,
    which must never replace the committed cpu.csv)."""
    if torch.device(device).type != "cuda":
        return RESULTS / "cpu-smoke.csv"
    return RESULTS / f"gpu-{device_slug(device_name(device))}.csv"


class Interrupted(Exception):
    """SIGTERM arrived (``timeout`` ended the step): write what was measured, then stop."""


def on_sigterm() -> None:
    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Timer:
    """Times a callable: (median, p20, p80) in ms.

    CUDA: ``triton.testing.do_bench(fn, warmup, rep, quantiles=QUANTILES)`` (CUDA events around
    every call, the L2 cache flushed before each). CPU (``--smoke`` only): the same rule on the
    wall clock: calls for ``warmup_ms``, then as many as fit in ``rep_ms`` (at least 3).
    """

    def __init__(self, device: str, warmup_ms: float = 10.0, rep_ms: float = 50.0) -> None:
        self.device = torch.device(device)
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self._copies: dict[int, float] = {}

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float, float]:
        if self.device.type == "cuda":
            from triton.testing import do_bench  # imported here: CPU machines need no Triton

            out = do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=list(QUANTILES))
            return tuple(float(v) for v in out)
        return self._cpu(fn)

    def _cpu(self, fn: Callable[[], object]) -> tuple[float, float, float]:
        fn()
        start = time.perf_counter()
        while (time.perf_counter() - start) * 1e3 < self.warmup_ms:
            fn()
        times = []
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start) * 1e3 < self.rep_ms:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        p50, p20, p80 = np.quantile(np.asarray(times), QUANTILES)
        return float(p50), float(p20), float(p80)

    def graph_ms(self, fn: Callable[[], object]) -> float:
        """Median ms of ``fn`` captured once in a CUDA graph and replayed (``torch.cuda.graph``,
        warmed up on a side stream first, as PyTorch's CUDA-graph notes do): the device's time for
        the call without the host's. Raises where ``fn`` cannot be captured (a host sync, say)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        try:
            return self(graph.replay)[0]
        finally:
            del graph
            torch.cuda.synchronize(self.device)

    def copy_ms(self, nbytes: int) -> float:
        """Median ms of ``y.copy_(x)`` for float32 x, y that read + write ``nbytes`` in all."""
        if nbytes not in self._copies:
            x = torch.rand(max(1, nbytes // 8), device=self.device)
            y = torch.empty_like(x)
            self._copies[nbytes] = self(lambda: y.copy_(x))[0]
            del x, y
        return self._copies[nbytes]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fn: Callable[[], object], device: torch.device) -> float:
    """One call's wall time in ms, the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def median(values) -> float:
    return float(statistics.median(values))


def merge_csv(src: Path, dest: Path) -> None:
    """Write ``src``'s rows into ``dest``: each replaces ``dest``'s row of the same case, the
    others stay (``_results.write_csv(partial=True)``), so that merging a run that stopped early
    loses none of the cases an earlier run measured."""
    import csv

    import _results

    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows:
        _results.write_csv(dest, rows, partial=True)


if __name__ == "__main__":
    # For gpu_check.sh: `slug` prints the slug of GPU 0 ("cpu" without one); `merge SRC DEST`
    # merges a returned CSV into a results CSV by case.
    if sys.argv[1:] == ["slug"]:
        print(device_slug(device_name("cuda")) if torch.cuda.is_available() else "cpu")
    elif len(sys.argv) == 4 and sys.argv[1] == "merge":
        merge_csv(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python bench/_gpu.py slug | merge SRC.csv DEST.csv")
