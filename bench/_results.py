"""Benchmark-results plumbing shared by every ``bench/bench_<op>.py``.

One schema for every CSV in ``bench/results/`` (DESIGN.md, "Benchmark results"): ``COLUMNS``.
A benchmark records one ``Measurement`` per timed case into a ``ResultsPlugin``; at the end of
the pytest session the plugin measures the copy floor for every byte count it saw and writes

* the CSV: one row per (measurement, baseline) pair. A *subject* measurement (wavefuse) gets one
  row per baseline measured for the same case (``baseline`` = the peer's name, ``speedup`` =
  peer_ms / subject_ms), or one row with an empty baseline when no baseline was measured; a
  baseline's own measurement is a row with its name in ``backend`` and an empty ``baseline``;
* ``<csv stem>-notes.md``: the notes (unsupported modes, peers that disagree with the oracle).
  The CSV schema has no note column, so notes live next to it, keyed by the row's fields.

The copy floor: a copy of a float32 tensor that reads + writes the same number of bytes as the
op must move (``x.clone()``, or into a preallocated tensor when faster: see ``copy_gbps``), timed
in the same process. ``pct_copy`` = achieved GB/s over
that copy's GB/s, i.e. ``100 * t_copy / t_op``: 100% means the op runs at the memory floor.

GPU runs (bench_gpu.py, bench_at_step.py) build ``Measurement``s themselves, with the quantiles
``triton.testing.do_bench`` returns (``quantiles_ms``) and the time of a ``y.copy_(x)`` of the same
bytes timed by do_bench in the same run (``copy_ms``), and write them with ``build_rows`` and
``write_csv`` into ``results/gpu-<device-slug>.csv``.
"""

from __future__ import annotations

import csv
import ctypes
import datetime
import importlib.metadata
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

COLUMNS = (
    "op",
    "backend",
    "shape",
    "dtype",
    "wave",
    "mode",
    "level",
    "ms_median",
    "ms_p20",
    "ms_p80",
    "gbps",
    "pct_copy",
    "baseline",
    "speedup",
    "device",
    "torch",
    "triton",
    "date",
    # GPU runs: the same call replayed from a CUDA graph (host time excluded) and its % of copy
    "ms_graph",
    "pct_copy_graph",
)
# Copy-floor timing: enough rounds for a stable median of a memory-bound clone.
COPY_MIN_ROUNDS = 7
COPY_MIN_SECONDS = 0.25
_COPY_GBPS: dict[tuple[int, str], float] = {}
# A 1-min load average above this before a run means other work shares the cores.
LOADED = 0.8


@dataclass
class Measurement:
    """One timed case. ``times_s`` is the per-round time in seconds (None: not runnable here,
    say why in ``note``); ``nbytes`` the bytes the op must move (reads + writes)."""

    op: str
    backend: str
    shape: Sequence[int]
    dtype: str
    wave: str
    mode: str
    level: int | str  # "" for ops without a wavelet level (pgd_step, at_step)
    times_s: Sequence[float] | None
    nbytes: int
    is_baseline: bool
    note: str = ""
    device: str = "cpu"
    # GPU runs (bench_gpu.py): timers such as triton.testing.do_bench return quantiles, not the
    # per-round times: (median, p20, p80) in ms, used when ``times_s`` is empty.
    quantiles_ms: tuple[float, float, float] | None = None
    # The time of a device copy (``y.copy_(x)``) of the same bytes, measured in the same run by
    # the same timer, in ms: ``pct_copy`` uses it when set, else ``copy_gbps(nbytes, device)``.
    copy_ms: float | None = None
    # GPU runs: median ms of the same call captured once in a CUDA graph and replayed: the device
    # time without the host's (Python, dispatch, launch) time per call; None where not measured.
    graph_ms: float | None = None

    @property
    def case(self) -> tuple:
        """The fields that make two measurements comparable."""
        return (self.op, tuple(self.shape), self.dtype, self.wave, self.mode, self.level)

    def ms(self) -> tuple[float, float, float] | None:
        """(median, p20, p80) in milliseconds, or None when there are no timings."""
        if not self.times_s:
            return tuple(self.quantiles_ms) if self.quantiles_ms else None
        p50, p20, p80 = np.percentile(np.asarray(self.times_s) * 1e3, [50, 20, 80])
        return float(p50), float(p20), float(p80)


# ----------------------------------------------------------------------------- environment


def set_cpu_threads() -> int:
    """Use one torch thread per core this process may run on; returns that count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    return cores


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def steady_allocator() -> str:
    """Keep freed memory in the process (glibc), for every implementation timed in this process.

    By default glibc serves allocations above 32 MiB (and smaller ones, until its threshold has
    adapted) with fresh mmaps and hands them back to the OS on free, and trims the heap top, so
    every call of a transform that returns tens of MB faults its outputs in afresh. On this VM a
    fault can cost 60 us (the host backs the page again): the same call then takes 10 ms or 230 ms
    from one round to the next, nearly all of it system time (2026-12-03, db4/haar on
    128x64x32x32, 2-core EPYC), and one or two random cases per run came out 2-8x slow. With mmap
    off and no trimming, memory freed by one round is reused by the next: the timings measure the
    transforms, for wavefuse and the peers alike. Returns a line for the notes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    global _ALLOCATOR
    if ok:
        _ALLOCATOR = "glibc malloc with mmap off and no heap trimming (`steady_allocator`)"
    else:
        _ALLOCATOR = (
            "the default allocator (no glibc mallopt): page faults of fresh outputs are timed"
        )
    return _ALLOCATOR


_ALLOCATOR = "the default allocator"


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_string(device: str = "cpu") -> str:
    """The ``device`` column: GPU name, or CPU model with cores and torch threads."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()} ({cores} cores, {torch.get_num_threads()} torch threads)"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): timings on a loaded machine,
    where torch's threads wait for busy cores, are not to be trusted."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
        busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    return time.perf_counter(), busy, own.ru_utime + own.ru_stime


def other_cpu_share(start: tuple[float, float, float]) -> tuple[float, float]:
    """(minutes since ``start`` = ``_cpu_seconds()``, share of the machine's cores that other
    processes kept busy meanwhile): a share above a few % means the timings shared the cores."""
    wall, busy, own = (b - a for a, b in zip(start, _cpu_seconds()))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return wall / 60, max(0.0, busy - own) / (wall * cores)


def triton_version() -> str:
    """Installed Triton's version, without importing it ("" when absent)."""
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return ""


# ----------------------------------------------------------------------------- timing


def rounds_for(step: Callable[[], object], config: pytest.Config) -> int:
    """pytest-benchmark's rule, --benchmark-max-time / one call's time but at least
    --benchmark-min-rounds, from one timed call. Calling ``benchmark.pedantic`` with it spares
    the calibration call and the trailing call of ``benchmark(step)``: every call costs up to
    seconds here (2 cores, a reference implementation's fwd+bwd)."""
    start = time.perf_counter()
    step()
    once = time.perf_counter() - start
    max_time = float(config.getoption("benchmark_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    return max(min_rounds, math.ceil(max_time / once))


# ----------------------------------------------------------------------------- copy floor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device: torch.device) -> float:
    """Median time of ``fn()`` after one warm-up call: at least COPY_MIN_ROUNDS rounds and
    COPY_MIN_SECONDS seconds."""
    fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < COPY_MIN_ROUNDS or time.perf_counter() - start < COPY_MIN_SECONDS:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_gbps(nbytes: int, device: str = "cpu") -> float:
    """GB/s of the faster of ``x.clone()`` and ``y.copy_(x)`` (y allocated once), for a float32
    ``x`` whose copy reads + writes ``nbytes`` in all. Cached per (bytes, device).

    Why not the clone alone: glibc hands allocations above 32 MiB back to the OS on free, so every
    clone of such a tensor page-faults its output in afresh; on a VM that costs more than the copy
    itself (measured 2026-11-23 on the 2-core EPYC: 3.3 GB/s for a 67 MB clone, 4 GB/s to
    15 GB/s from one run to the next for 33 MB), and a floor that ops beat is no floor.
    """
    key = (nbytes, str(device))
    if key not in _COPY_GBPS:
        dev = torch.device(device)
        x = torch.rand(max(1, nbytes // 8), device=dev)  # float32: 4 bytes read + 4 written
        y = torch.empty_like(x)
        best = min(_median_seconds(x.clone, dev), _median_seconds(lambda: y.copy_(x), dev))
        _COPY_GBPS[key] = 2 * x.nbytes / best / 1e9
    return _COPY_GBPS[key]


# ----------------------------------------------------------------------------- rows


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(m: Measurement, env: dict, baseline: Measurement | None) -> dict:
    ms = m.ms()
    gbps = m.nbytes / (ms[0] * 1e-3) / 1e9 if ms and m.nbytes else None  # 0 bytes: at_step
    if gbps and m.copy_ms:
        pct = 100 * m.copy_ms / ms[0]
    else:
        pct = 100 * gbps / copy_gbps(m.nbytes, m.device) if gbps else None
    base_ms = baseline.ms() if baseline is not None else None
    speedup = base_ms[0] / ms[0] if ms and base_ms else None
    return {
        "op": m.op,
        "backend": m.backend,
        "shape": "x".join(str(s) for s in m.shape),
        "dtype": m.dtype,
        "wave": m.wave,
        "mode": m.mode,
        "level": m.level,
        "ms_median": _fmt(ms and ms[0], 4),
        "ms_p20": _fmt(ms and ms[1], 4),
        "ms_p80": _fmt(ms and ms[2], 4),
        "gbps": _fmt(gbps, 3),
        "pct_copy": _fmt(pct, 1),
        "baseline": baseline.backend if baseline is not None else "",
        "speedup": _fmt(speedup, 3),
        **env,
        "ms_graph": _fmt(m.graph_ms, 4),
        "pct_copy_graph": _fmt(
            100 * m.copy_ms / m.graph_ms if m.graph_ms and m.copy_ms and m.nbytes else None, 1
        ),
    }


def build_rows(measurements: Sequence[Measurement], env: dict) -> list[dict]:
    """CSV rows, case by case in recording order: baselines' own rows, then each subject
    paired with every baseline of its case (or alone when the case has none)."""
    cases: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        cases.setdefault(m.case, []).append(m)
    rows = []
    for group in cases.values():
        baselines = [m for m in group if m.is_baseline]
        rows += [_row(b, env, None) for b in baselines]
        for m in (m for m in group if not m.is_baseline):
            rows += [_row(m, env, b) for b in baselines] or [_row(m, env, None)]
    return rows


def environment(device: str = "cpu") -> dict:
    """The per-run columns: device, torch, triton, date."""
    return {
        "device": device_string(device),
        "torch": torch.__version__,
        "triton": triton_version(),
        "date": datetime.date.today().isoformat(),
    }


#: The columns that name one case's row: a partial write or a merge replaces rows by this key.
ROW_KEY = ("op", "backend", "shape", "dtype", "wave", "mode", "level", "baseline")


def _row_key(row: dict) -> tuple[str, ...]:
    # as text: a row read back from the CSV has level "1" where a new one has 1
    return tuple(str(row.get(k, "")) for k in ROW_KEY)


def _check_one_device(path: Path, old: Sequence[dict], rows: Sequence[dict], ops) -> None:
    """A partial run replaces some of an op's rows and keeps the others: refuse when the kept
    rows were measured on another machine, which would mix two devices' timings of one op in
    one file (a full run of the benchmark file replaces all of its ops' rows instead)."""
    here = {r.get("device", "") for r in rows}
    there = {r.get("device", "") for r in old if r.get("op") in ops} - here
    if there:
        raise RuntimeError(
            f"{path} holds rows of {', '.join(sorted(ops))} measured on {', '.join(sorted(there))};"
            f" this partial run (-k, or stopped early) ran on {', '.join(sorted(here))} and would"
            " mix two machines' timings of one op in one file. Rerun the benchmark file in full"
            " (no -k), or time with plain `pytest bench/...`, which writes nothing."
        )


def write_csv(path: Path, rows: Sequence[dict], partial: bool = False) -> None:
    """Write ``rows``, keeping the rows of ``path`` whose op none of them has: several benchmark
    files (one per op family) share one CSV per device, each replacing only its own ops.
    ``partial`` (a run stopped early, or results merged from another run): replace only the rows
    of the same cases (``ROW_KEY``), so that the cases such a run did not reach keep their rows;
    refused (RuntimeError) where those rows come from another device."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        ops = {row["op"] for row in rows}
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
        if partial:  # in place: each new row where the row of its case was, the rest after
            _check_one_device(path, old, rows, ops)
            new = {_row_key(r): r for r in rows}
            merged = [new.pop(_row_key(r), r) for r in old]
            rows = merged + [r for r in rows if _row_key(r) in new]
        else:
            rows = [r for r in old if r["op"] not in ops] + list(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _note_line(m: Measurement) -> str:
    shape = "x".join(str(s) for s in m.shape)
    return f"- `{m.op} {m.backend} {shape} {m.dtype} {m.wave} {m.mode} J={m.level}`: {m.note}"


def _note_key(line: str) -> str | None:
    """The case a note line names (the text between its first backticks), None for other lines."""
    if not line.startswith("- `"):
        return None
    end = line.find("`", 3)
    return line[3:end] if end > 0 else None


def write_notes(
    path: Path,
    title: str,
    measurements: Sequence[Measurement],
    env: dict,
    run: str = "",
    extra: Sequence[str] = (),
    partial: bool = False,
) -> None:
    """The notes of every measurement that has one, as a Markdown list, after a line about the
    run (``run``: its duration and load, say); ``extra``: lines about the whole run (backends
    not live, peers missing), listed before them. ``partial`` (as in ``write_csv``): the notes
    that ``path`` has on cases this run did not measure are kept, after the new ones."""
    notes = [_note_line(m) for m in measurements if m.note]
    if partial and path.exists():
        measured = {_note_key(_note_line(m)) for m in measurements}
        notes += [
            line
            for line in path.read_text().splitlines()
            if _note_key(line) is not None and _note_key(line) not in measured
        ]
    about = f"{env['device']}, torch {env['torch']}, {env['date']}. {run}".strip()
    header = [f"# {title}", "", about, ""]
    if extra:
        header += [f"- {line}" for line in extra] + [""]
    none = (
        "No notes: every implementation ran (and agreed with the oracle, where the benchmark "
        "checks one)."
    )
    body = notes or [none]
    path.write_text("\n".join(header + body) + "\n")


# ----------------------------------------------------------------------------- pytest plugin

_PLUGIN_KEY = pytest.StashKey["ResultsPlugin"]()


@dataclass
class ResultsPlugin:
    """Collects measurements during a pytest session and writes ``path`` at its end.

    Pass an instance to ``pytest.main(args, plugins=[plugin])``; benchmarks find it with
    ``recorder(config)``.
    """

    path: Path
    device: str = "cpu"
    notes_name: str | None = None  # default: <csv stem>-notes.md
    measurements: list[Measurement] = field(default_factory=list)
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)  # _cpu_seconds() at configure
    _deselected: int = 0  # cases left out by -k / -m: the run is partial

    def record(self, m: Measurement) -> None:
        self.measurements.append(m)

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[_PLUGIN_KEY] = self
        self._start = _cpu_seconds()
        load = load_average()
        if load is not None and load > LOADED:
            print(f"warning: 1-min load average {load:.2f} before timing: expect noise")

    def _run_summary(self) -> str:
        minutes, share = other_cpu_share(self._start)
        return (
            f"Run took {minutes:.1f} min; other processes used {100 * share:.0f}% of the cores "
            f"meanwhile. Memory: {_ALLOCATOR}."
        )

    def pytest_deselected(self, items) -> None:
        self._deselected += len(items)

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if not self.measurements:
            print(f"\nno measurements recorded: {self.path} left unchanged")
            return
        env = environment(self.device)
        # A run that left cases out (-k, -m) or stopped early (a failure under -x, an interrupt)
        # replaces only the rows of the cases it measured: the others keep their earlier rows.
        partial = self._deselected > 0 or exitstatus != 0
        write_csv(self.path, build_rows(self.measurements, env), partial=partial)
        notes = self.path.with_name(self.notes_name or self.path.stem + "-notes.md")
        ops = ", ".join(sorted({m.op for m in self.measurements}))
        title = f"Notes on {self.path.name} ({ops})"
        run = self._run_summary()
        if partial:
            run += (
                f" Partial run ({len(self.measurements)} cases measured): the other cases keep "
                "their rows and notes from earlier runs (see each row's date)."
            )
        write_notes(notes, title, self.measurements, env, run, partial=partial)
        print(f"\nwrote {self.path} and {notes.name} ({env['device']})")


class _Discard:
    """Stands in for ``ResultsPlugin`` under a plain ``pytest bench/...`` run: no CSV."""

    def record(self, m: Measurement) -> None:
        pass


def recorder(config: pytest.Config) -> ResultsPlugin | _Discard:
    """The session's ``ResultsPlugin`` when one was passed to pytest.main, else a no-op."""
    return config.stash.get(_PLUGIN_KEY, _Discard())


def run_benchmarks(
    file: str, csv_path: Path, notes_name: str | None, max_time_s: float, argv: list[str]
) -> int:
    """A CPU benchmark file's ``main``: run its tests under pytest with a ``ResultsPlugin`` that
    writes ``csv_path`` (and the notes beside it), pytest-benchmark's columns trimmed and
    ``--benchmark-max-time`` set to ``max_time_s`` (``argv`` comes after, so it can override)."""
    plugin = ResultsPlugin(csv_path, notes_name=notes_name)
    args = [
        file,
        "-p",
        "no:cacheprovider",
        "--benchmark-columns=median,iqr,rounds",
        "--benchmark-sort=name",
        f"--benchmark-max-time={max_time_s}",
        *argv,
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device_string()}")
    return pytest.main(args, plugins=[plugin])
