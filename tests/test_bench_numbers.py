"""The numbers the benchmarks report, from first principles: bench/_results.py's rows (GB/s, % of
copy, speedups, quantiles, the environment columns), the copy floors, bench_gpu.py's bytes per op,
its agreement checks and which row compares to which baseline, bench_at_step.py's rows and
agreement verdict, and what bench/plot.py draws. No real benchmark runs here: tiny inputs,
synthetic timings and fake clocks."""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import _gpu
import _results
import bench_at_step
import bench_gpu

ENV = {"device": "dev", "torch": "t", "triton": "tr", "date": "d"}


def _m(backend, times_ms=None, baseline=False, **kw) -> _results.Measurement:
    fields = {
        "op": "op",
        "backend": backend,
        "shape": (2, 3, 16, 16),
        "dtype": "float32",
        "wave": "haar",
        "mode": "zero",
        "level": 1,
        "times_s": None if times_ms is None else [t / 1e3 for t in times_ms],
        "nbytes": 0,
        "is_baseline": baseline,
    }
    fields.update(kw)
    return _results.Measurement(**fields)


def _f(row: dict, key: str) -> float:
    return float(row[key])


# ----------------------------------------------------------------------------- _results rows


def test_row_quantiles_gbps_pct_copy_and_speedup():
    """11 rounds of 0..10 ms (shuffled): median 5, p20 2, p80 8 (linear quantiles); the op moves
    the bytes of a float32 (8, 16, 32, 32) tensor read and written once; a copy of those bytes
    took 1 ms in the same run; the peer's median is 20 ms."""
    nbytes = 2 * torch.empty(8, 16, 32, 32).nbytes
    times = [7, 3, 10, 0, 5, 9, 1, 6, 2, 8, 4]
    ours = _m("cpu", times, nbytes=nbytes, copy_ms=1.0)
    peer = _m("peer", [20.0] * 5, baseline=True, nbytes=nbytes, copy_ms=1.0)
    rows = _results.build_rows([ours, peer], ENV)
    assert [(r["backend"], r["baseline"]) for r in rows] == [("peer", ""), ("cpu", "peer")]
    own, row = rows
    assert (_f(row, "ms_median"), _f(row, "ms_p20"), _f(row, "ms_p80")) == (5.0, 2.0, 8.0)
    assert _f(row, "gbps") == pytest.approx(nbytes / 5e-3 / 1e9, abs=1e-3)
    assert _f(row, "pct_copy") == pytest.approx(100 * 1.0 / 5.0, abs=0.05)  # 20.0
    assert _f(row, "speedup") == pytest.approx(20.0 / 5.0, abs=1e-3)  # > 1: ours faster
    assert own["speedup"] == "" and _f(own, "ms_median") == 20.0
    assert _f(own, "pct_copy") == pytest.approx(100 * 1.0 / 20.0, abs=0.05)
    for r in rows:  # the per-run columns are carried, not dropped
        assert {k: r[k] for k in ENV} == ENV


def test_pct_copy_keeps_its_decimal():
    """pct_copy has one decimal: a copy of 1 ms against an op of 8 ms is 12.5%, not 12 or 13."""
    row = _results.build_rows([_m("cpu", [8.0] * 3, nbytes=10**6, copy_ms=1.0)], ENV)[0]
    assert _f(row, "pct_copy") == pytest.approx(12.5, abs=0.05)


def test_gpu_quantiles_and_graph_columns():
    """A GPU measurement carries do_bench's (median, p20, p80) in that order; the graph replay's
    % of copy is against its own time, not the eager median."""
    nbytes = 4 * torch.empty(128, 3, 32, 32, dtype=torch.bfloat16).nbytes
    m = _m("cuda", nbytes=nbytes, quantiles_ms=(0.05, 0.04, 0.07), copy_ms=0.01, graph_ms=0.02)
    row = _results.build_rows([m], ENV)[0]
    assert (_f(row, "ms_median"), _f(row, "ms_p20"), _f(row, "ms_p80")) == (0.05, 0.04, 0.07)
    assert _f(row, "gbps") == pytest.approx(nbytes / 0.05e-3 / 1e9, abs=1e-3)
    assert _f(row, "pct_copy") == pytest.approx(100 * 0.01 / 0.05, abs=0.05)  # 20%
    assert _f(row, "ms_graph") == 0.02
    assert _f(row, "pct_copy_graph") == pytest.approx(100 * 0.01 / 0.02, abs=0.05)  # 50%


def test_every_baseline_gets_its_row_and_only_its_case():
    """Two peers measured on a case: the subject has one row per peer, each with that peer's
    speedup; a bfloat16 subject is not compared with the float32 peers, nor J=3 with J=1."""
    ms = [
        _m("pw", [10.0] * 3, baseline=True),
        _m("ptwt", [30.0] * 3, baseline=True),
        _m("cpu", [5.0] * 3),
        _m("cpu", [1.0] * 3, dtype="bfloat16"),
        _m("cpu", [2.0] * 3, level=3),
    ]
    rows = _results.build_rows(ms, ENV)
    got = [(r["backend"], r["dtype"], r["level"], r["baseline"], r["speedup"]) for r in rows]
    assert sorted(got) == sorted(
        [
            ("pw", "float32", 1, "", ""),
            ("ptwt", "float32", 1, "", ""),
            ("cpu", "float32", 1, "pw", f"{10 / 5:.3f}"),
            ("cpu", "float32", 1, "ptwt", f"{30 / 5:.3f}"),
            ("cpu", "bfloat16", 1, "", ""),
            ("cpu", "float32", 3, "", ""),
        ]
    )


@pytest.fixture
def fake_copy(monkeypatch):
    """Every copy moves its bytes at 10 GB/s after a 1 us latency: ``_median_seconds`` calls the
    copy once and times it from the bytes of the tensor it returns (read + write); ``x.clone()``
    pays 1 ms more (faulting its fresh output in), so the floor is the ``y.copy_(x)``."""
    monkeypatch.setattr(_results, "_COPY_GBPS", {})

    def seconds(fn, device):
        out = fn()
        return (
            2 * out.nbytes / 10e9 + 1e-6 + (1e-3 if getattr(fn, "__name__", "") == "clone" else 0)
        )

    monkeypatch.setattr(_results, "_median_seconds", seconds)
    return lambda nbytes: nbytes / (nbytes / 10e9 + 1e-6) / 1e9  # GB/s of a copy of nbytes


def test_cpu_copy_floor_is_a_copy_of_the_same_bytes(fake_copy):
    small, large = 8 * 1024, 8 * 2**20  # the second call must not reuse the first's floor
    assert _results.copy_gbps(small) == pytest.approx(fake_copy(small), rel=1e-9)
    assert _results.copy_gbps(large) == pytest.approx(fake_copy(large), rel=1e-9)
    # a CPU row without a same-run copy time: pct_copy = its GB/s over that floor's
    row = _results.build_rows([_m("cpu", [2.0] * 3, nbytes=large)], ENV)[0]
    want = 100 * (large / 2e-3 / 1e9) / fake_copy(large)
    assert _f(row, "pct_copy") == pytest.approx(want, abs=0.05)


def test_columns_are_the_design_schema_in_order(tmp_path):
    """DESIGN.md ("Benchmark results"): these columns in this order (the graph columns after);
    every committed CSV has that header."""
    design = [
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
    ]
    assert list(_results.COLUMNS[: len(design)]) == design
    path = tmp_path / "x.csv"
    _results.write_csv(path, _results.build_rows([_m("cpu", [1.0])], ENV))
    for p in [path, *sorted((BENCH_DIR / "results").glob("*.csv"))]:
        with open(p, newline="") as f:
            assert tuple(next(csv.reader(f))) == _results.COLUMNS, p


def test_environment_columns():
    env = _results.environment("cpu")
    assert env["torch"] == torch.__version__
    assert env["date"] == datetime.date.today().isoformat()
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = ""
    assert env["triton"] == triton
    assert env["device"] == _results.device_string("cpu")


# ----------------------------------------------------------------------------- partial writes


def _row(op, backend, shape, ms, **kw) -> dict:
    row = dict.fromkeys(_results.COLUMNS, "")
    row.update(op=op, backend=backend, shape=shape, ms_median=ms, **kw)
    return row


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_partial_write_checks_the_device_of_its_own_ops_only(tmp_path):
    """cpu.csv may hold one op measured on one machine and another op on another; a partial
    rerun of the second op on its machine mixes nothing."""
    path = tmp_path / "cpu.csv"
    _results.write_csv(
        path,
        [
            _row("dwt2d_fwd", "cpu", "A", "1", device="X"),
            _row("pgd_step", "cpu", "A", "2", device="Y"),
        ],
    )
    _results.write_csv(path, [_row("pgd_step", "cpu", "A", "3", device="Y")], partial=True)
    assert [(r["op"], r["ms_median"], r["device"]) for r in _read(path)] == [
        ("dwt2d_fwd", "1", "X"),
        ("pgd_step", "3", "Y"),
    ]


def test_partial_write_keeps_the_other_dtype(tmp_path):
    """A bfloat16 row is another case than the float32 row of the same shape and backend."""
    path = tmp_path / "gpu.csv"
    f32 = _row("pgd_step", "cuda", "A", "1", dtype="float32", mode="Linf")
    _results.write_csv(path, [f32])
    _results.write_csv(path, [{**f32, "dtype": "bfloat16", "ms_median": "2"}], partial=True)
    assert [(r["dtype"], r["ms_median"]) for r in _read(path)] == [
        ("float32", "1"),
        ("bfloat16", "2"),
    ]


FAILING_BENCH = """
import pytest
import _results

@pytest.mark.parametrize("case", ["A", "B"])
def test_case(pytestconfig, case):
    if case == "B" and pytestconfig.getoption("fail_b"):
        raise RuntimeError("stopped")
    _results.recorder(pytestconfig).record(_results.Measurement(
        op="op", backend="cpu", shape=(" AB".index(case),), dtype="float32", wave="", mode="",
        level="", times_s=[pytestconfig.getoption("ms") / 1e3], nbytes=0, is_baseline=False))
"""


class _Opts:
    def pytest_addoption(self, parser):
        parser.addoption("--fail-b", action="store_true")
        parser.addoption("--ms", type=float, default=1.0)


def test_a_failed_bench_run_keeps_the_cases_it_did_not_measure(tmp_path):
    """A run with a failure (or an interrupt) is partial even without -k: case B keeps its row."""
    (tmp_path / "bench_y.py").write_text(FAILING_BENCH)
    args = [str(tmp_path / "bench_y.py"), "-q", "-p", "no:cacheprovider"]
    path = tmp_path / "cpu.csv"
    assert pytest.main(args, plugins=[_results.ResultsPlugin(path), _Opts()]) == 0
    rc = pytest.main(
        [*args, "--fail-b", "--ms", "5"], plugins=[_results.ResultsPlugin(path), _Opts()]
    )
    assert rc != 0
    assert [(r["shape"], r["ms_median"]) for r in _read(path)] == [("1", "5.0000"), ("2", "1.0000")]


# ----------------------------------------------------------------------------- _gpu


def test_timer_returns_median_p20_p80(monkeypatch):
    """The CPU stand-in of do_bench on a fake clock: three timed calls of 3, 1 and 2 ms."""
    clock = [0.0]
    durations = iter([5.0, 3.0, 1.0, 2.0])  # ms: the untimed first call, then the timed ones
    monkeypatch.setattr(_gpu.time, "perf_counter", lambda: clock[0])

    def fn():
        clock[0] += next(durations) / 1e3

    med, p20, p80 = _gpu.Timer("cpu", warmup_ms=0.0, rep_ms=0.0)(fn)
    assert med == pytest.approx(2.0)
    assert 1.0 < p20 < med < p80 < 3.0


def test_timer_copy_is_a_copy_of_the_same_bytes(monkeypatch):
    """copy_ms(n): the time of a y.copy_(x) that reads + writes n bytes in all (here timed as
    1 ms per MB moved), per byte count."""

    def timed(self, fn):
        out = fn()
        ms = 2 * out.nbytes / 1e6
        return ms, ms, ms

    monkeypatch.setattr(_gpu.Timer, "__call__", timed)
    timer = _gpu.Timer("cpu")
    assert timer.copy_ms(8 * 10**4) == pytest.approx(8 * 10**4 / 1e6)
    assert timer.copy_ms(8 * 10**6) == pytest.approx(8 * 10**6 / 1e6)


def test_device_slug_names_the_committed_gpu_csvs():
    assert _gpu.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert (
        _gpu.device_slug("NVIDIA A100-SXM4-40GB (MIG 1g.5gb)") == "nvidia-a100-sxm4-40gb-mig-1g-5gb"
    )
    for path in sorted((BENCH_DIR / "results").glob("gpu-*.csv")):
        devices = {r["device"] for r in _read(path)}
        assert {f"gpu-{_gpu.device_slug(d)}" for d in devices} == {path.stem}, path


def test_smoke_runs_never_target_the_committed_cpu_csv():
    assert _gpu.csv_path("cpu") != BENCH_DIR / "results" / "cpu.csv"


# ----------------------------------------------------------------------------- bench_gpu bytes


def _coeff_numel(shape, wave, mode, level) -> int:
    """Elements of pywt.wavedec2's coefficients of an (N, C, H, W) input, from pywt's lengths."""
    n, c, h, w = shape
    taps = pywt.Wavelet(wave).dec_len
    total = 0
    for _ in range(level):
        h, w = pywt.dwt_coeff_len(h, taps, mode), pywt.dwt_coeff_len(w, taps, mode)
        total += 3 * h * w
    return n * c * (total + h * w)


def _cpu_run(select="", backends=("reference",), timer=None, measurements=()) -> bench_gpu.Run:
    """A bench_gpu smoke run on the CPU: -k ``select``, a zero-length timer unless given."""
    timer = timer or _gpu.Timer("cpu", 0.0, 0.0)
    return bench_gpu.Run(
        torch.device("cpu"), timer, True, select, math.inf, list(measurements), [], backends
    )


CPU_RUN = _cpu_run()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("wave", "mode", "level"), [("haar", "zero", 1), ("db4", "symmetric", 3)])
def test_dwt_bytes_are_the_input_and_every_coefficient(dtype, wave, mode, level):
    shape = (2, 3, 16, 16)
    size = torch.empty((), dtype=dtype).element_size()
    x_bytes = math.prod(shape) * size
    coeffs = _coeff_numel(shape, wave, mode, level) * size
    x = bench_gpu.bench_input(shape, dtype, "cpu")
    t = bench_gpu.wavefuse_dwt("reference", CPU_RUN, wave, mode, level, dtype)
    assert bench_gpu.dwt_step("dwt2d_fwd", t, x)[1] == x_bytes + coeffs  # read x, write coeffs
    assert bench_gpu.dwt_step("dwt2d_adjoint", t, x)[1] == coeffs + x_bytes  # read grads, write gx
    assert bench_gpu.dwt_step("dwt2d_fwd_bwd", t, x)[1] == 2 * (x_bytes + coeffs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_and_penalty_bytes(dtype):
    shape = (4, 3, 8, 8)
    x_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    x = bench_gpu.bench_input(shape, dtype, "cpu")
    assert bench_gpu.hf_step(lambda v: v.square().sum(), x)[1] == 3 * x_bytes
    for norm in bench_gpu.NORMS:  # read x_adv, grad, x_nat; write x_adv
        step = bench_gpu.torchattacks_step(None, norm)
        assert bench_gpu.pgd_timed(step, shape, dtype, "cpu", norm)[1] == 4 * x_bytes


# ----------------------------------------------------------------------------- bench_gpu checks


@pytest.mark.parametrize(("wave", "mode", "level"), [("db4", "symmetric", 3), ("haar", "zero", 2)])
def test_dwt_check_passes_an_exact_transform(wave, mode, level):
    """wavefuse's reference is exact: no note, forward or gradient, at several levels (the band
    order of the pywt layout and back must match)."""
    x = bench_gpu.bench_input((2, 3, 16, 16), torch.float32, "cpu")
    t = bench_gpu.wavefuse_dwt("reference", CPU_RUN, wave, mode, level, torch.float32)
    assert bench_gpu.check_dwt(t, x, wave, mode, level, grad=True) == ""


def _perturbed(t: bench_gpu.Transform, rel: float) -> bench_gpu.Transform:
    return bench_gpu.Transform(lambda x: [o * (1 + rel) for o in t(x)], t.layout, t.level)


def test_dwt_check_notes_a_wrong_forward():
    """float32: 1e-5 of the largest coefficient. 5e-5 is out; NaN is out."""
    x = bench_gpu.bench_input((2, 3, 16, 16), torch.float32, "cpu")
    t = bench_gpu.wavefuse_dwt("reference", CPU_RUN, "db4", "symmetric", 1, torch.float32)
    assert "forward disagrees" in bench_gpu.check_dwt(
        _perturbed(t, 5e-5), x, "db4", "symmetric", 1, False
    )
    nan = bench_gpu.Transform(lambda v: [o * float("nan") for o in t(v)], t.layout, t.level)
    assert "forward disagrees" in bench_gpu.check_dwt(nan, x, "db4", "symmetric", 1, False)


def test_adjoint_rows_check_the_gradient(monkeypatch):
    """dwt2d_adjoint times the backward alone: its check must look at the gradient, which
    pytorch_wavelets gets wrong for db4 symmetric (bench/README.md); the others' rows on the case
    compare with each timed peer."""
    pytest.importorskip("pytorch_wavelets")
    monkeypatch.setattr(
        bench_gpu, "DWT_PEERS", {"pytorch_wavelets": bench_gpu.pytorch_wavelets_dwt}
    )
    run = _cpu_run("dwt2d_adjoint 2x3x16x16 float32 db4 symmetric J1 ")
    bench_gpu.run_dwt(run, [(2, 3, 16, 16)])
    by = {m.backend: m for m in run.measurements}
    assert set(by) == {"pytorch_wavelets", "reference"}
    assert "input gradient disagrees" in by["pytorch_wavelets"].note
    assert by["reference"].note == "" and by["pytorch_wavelets"].is_baseline
    assert not by["reference"].is_baseline


def test_missing_peer_gets_an_empty_row_missing_backend_none(monkeypatch):
    def missing(*args):
        raise bench_gpu.Missing("not installed")

    monkeypatch.setattr(bench_gpu, "DWT_PEERS", {"peer": missing})
    run = _cpu_run("dwt2d_fwd 2x3x16x16 float32 haar zero J1 ", ("reference", "no_such_backend"))
    bench_gpu.run_dwt(run, [(2, 3, 16, 16)])
    rows = _results.build_rows(run.measurements, ENV)
    assert [(r["backend"], r["baseline"], r["ms_median"] != "", r["speedup"]) for r in rows] == [
        ("peer", "", False, ""),
        ("reference", "peer", True, ""),
    ]


def test_pgd_rows_compare_with_torchattacks_per_norm():
    """Each row's copy floor is timed over the bytes of that row's op."""
    asked = []

    class Timer(_gpu.Timer):
        def copy_ms(self, nbytes):
            asked.append(nbytes)
            return super().copy_ms(nbytes)

    run = _cpu_run(timer=Timer("cpu", 0.0, 0.0))
    bench_gpu.run_pgd(run, [(4, 3, 8, 8)])
    assert asked == [m.nbytes for m in run.measurements]
    rows = _results.build_rows(run.measurements, ENV)
    ours = [r for r in rows if r["backend"] == "reference"]
    assert sorted((r["dtype"], r["mode"]) for r in ours) == sorted(
        (d, n) for d in ("float32", "bfloat16") for n in ("Linf", "L2")
    )
    assert all(r["baseline"] == "torchattacks" and r["speedup"] for r in ours)
    theirs = [r for r in rows if r["backend"] == "torchattacks"]
    assert len(theirs) == 4 and all(r["baseline"] == "" for r in theirs)


def test_step_check_is_bit_exact_in_float32():
    shape, norm = (4, 3, 8, 8), "Linf"

    def off(x_adv, grad, x_nat, eps, alpha):
        return bench_gpu.torchattacks_linf(x_adv, grad, x_nat, eps, alpha) + 1e-4

    assert (
        bench_gpu.check_step(bench_gpu.torchattacks_linf, shape, torch.float32, "cpu", norm) == ""
    )
    assert "differs" in bench_gpu.check_step(off, shape, torch.float32, "cpu", norm)


def test_penalty_check_notes_a_wrong_gradient():
    """Same value at the checked input, gradient off by ~5e-3 absolute: past 1e-4 relative."""
    import wavefuse

    x = bench_gpu.bench_input((2, 3, 16, 16), torch.float32, "cpu")
    x0 = x[: bench_gpu.CHECK_N, : bench_gpu.CHECK_C].contiguous()
    direction = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).sign()

    def penalty(v, shift=0.0):
        ref = wavefuse.hf_penalty(
            v, "haar", 1, "periodization", p=2, reduction="sum", backend="reference"
        )
        return ref + shift * ((v - x0) * direction).sum()

    assert bench_gpu.check_hf(penalty, x, "haar", "periodization", 1) == ""
    note = bench_gpu.check_hf(lambda v: penalty(v, 5e-3), x, "haar", "periodization", 1)
    assert "input gradient disagrees" in note


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wavelet_step_check_excuses_only_flips_where_g_is_zero(dtype, monkeypatch):
    """Linf: an entry that moved the other way (by 2 alpha) is excused only where |g'| is within
    SIGN_TOL of zero relative to the largest |g'| (there sign(g') is a rounding accident);
    elsewhere a difference is noted. Here g' is 100 but at one entry, 1/4 of SIGN_TOL of the
    largest: zero to rounding relatively, not in absolute terms."""
    shape, wave, mode, level, norm = (2, 3, 8, 8), "haar", "periodization", 1, "Linf"
    want = bench_gpu.step_inputs(shape, dtype, "cpu", norm)[2].double()  # any x_adv will do
    g = torch.full(shape, 100.0, dtype=torch.float64)
    tiny = (0, 1, 2, 3)
    g[tiny] = bench_gpu.SIGN_TOL[dtype] * 100.0 / 4
    monkeypatch.setattr(bench_gpu, "wavelet_step_oracle", lambda *args: (want, g))
    _, alpha = bench_gpu.STEP_PARAMS[norm]

    def moved(at, by):
        out = want.clone()
        out[at] += by
        return lambda *args: out.to(dtype)

    def check(step):
        return bench_gpu.check_wavelet_step(step, shape, dtype, "cpu", wave, mode, level, norm)

    assert check(moved(tiny, 2 * alpha)) == ""
    # 3 alpha: past bfloat16's tolerance (2^-6, about 2 alpha) after rounding
    assert "differs" in check(moved((1, 2, 3, 4), 3 * alpha))


def test_summary_is_a_geometric_mean():
    """bench_gpu's printed summary: speedups 1x and 4x over a peer average to 2x."""
    ms = [
        _m("peer", [4.0], baseline=True),
        _m("cpu", [4.0]),
        _m("peer", [8.0], baseline=True, level=3),
        _m("cpu", [2.0], level=3),
    ]
    line = next(li for li in bench_gpu.summary(ms) if li.split()[1:3] == ["cpu", "peer"])
    assert float(line.split()[4]) == pytest.approx(2.0)


def test_interrupted_gpu_run_keeps_the_rows_it_did_not_reach(tmp_path):
    path = tmp_path / "gpu.csv"
    old = [_row(bench_gpu.PGD_OP, "cuda", s, "1", mode="Linf", dtype="float32") for s in ("1", "2")]
    _results.write_csv(path, [{**r, "device": _results.device_string("cpu")} for r in old])
    run = _cpu_run(backends=())
    run.measurements.append(
        _m("cuda", [5.0], op=bench_gpu.PGD_OP, shape=(1,), mode="Linf", wave="", level="")
    )
    bench_gpu.write(run, ["pgd_step"], path, 0.0, "PARTIAL run, stopped early (x)")
    assert [(r["shape"], r["ms_median"]) for r in _read(path)] == [("1", "5.0000"), ("2", "1")]


def test_gpu_run_of_a_subset_keeps_the_other_cases(tmp_path):
    """-k runs some cases of an op: the rows (and note lines) of the others stay, as with the CPU
    scripts' -k; a full run of the op replaces them all."""
    path = tmp_path / "gpu.csv"
    old = [_row(bench_gpu.PGD_OP, "cuda", s, "1", mode="Linf", dtype="float32") for s in ("1", "2")]
    _results.write_csv(path, [{**r, "device": _results.device_string("cpu")} for r in old])
    new = _m("cuda", [5.0], op=bench_gpu.PGD_OP, shape=(1,), mode="Linf", wave="", level="")
    for select, expected in (("x1", [("1", "5.0000"), ("2", "1")]), ("", [("1", "5.0000")])):
        run = _cpu_run(select, backends=(), measurements=[new])
        bench_gpu.write(run, ["pgd_step"], path, 0.0, "")
        assert [(r["shape"], r["ms_median"]) for r in _read(path)] == expected, select


def test_at_step_run_of_some_models_keeps_the_others(tmp_path, monkeypatch):
    """bench_at_step.py --models preact-18 (or a model that failed) replaces that model's rows
    only; a run of the default models replaces every at_step row."""
    path = tmp_path / "cpu.csv"
    cfg = bench_at_step.SMOKE
    # main's process-wide settings, not for a test process: its SIGTERM handler, one thread.
    monkeypatch.setattr(bench_at_step._gpu, "on_sigterm", lambda: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)

    def run(models, step_ms):
        monkeypatch.setattr(
            bench_at_step,
            "bench_model",
            lambda name, cfg, device: [
                _timing(name, "reference_loop", [4 * step_ms]),
                _timing(name, "wavefuse", [step_ms]),
            ],
        )
        argv = ["--device", "cpu", "--smoke", "--no-agreement", "--out", str(path)]
        assert bench_at_step.main(argv + (["--models", models] if models else [])) == 0
        return {(r["mode"], r["backend"]): r["ms_median"] for r in _read(path)}

    everything = run(None, 1.0)
    assert {m for m, _ in everything} == set(cfg.models) and len(cfg.models) > 1
    one = cfg.models[0]
    kept = run(one, 2.0)
    assert {k: v for k, v in kept.items() if k[0] != one} == {
        k: v for k, v in everything.items() if k[0] != one
    }
    assert float(kept[(one, "wavefuse")]) == 2.0
    assert {m for m, _ in run(None, 3.0)} == set(cfg.models)


# ----------------------------------------------------------------------------- bench_at_step


def _timing(model, version, step_ms, attack_share=0.75):
    t = bench_at_step.Timing(model, version)
    t.step_ms = list(step_ms)
    t.attack_ms = [s * attack_share for s in step_ms]
    t.update_ms = [s - a for s, a in zip(t.step_ms, t.attack_ms)]
    return t


def test_at_step_rows():
    """reference_loop is the baseline: wavefuse's speedup = reference ms / wavefuse ms over whole
    steps (attack + update); the shape is the configured batch."""
    cfg = bench_at_step.CPU  # batch 32
    timings = [
        _timing("preact-18", "reference_loop", [90.0, 100.0, 110.0]),
        _timing("preact-18", "wavefuse", [20.0, 25.0, 30.0]),
    ]
    rows = _results.build_rows(bench_at_step.measurements(timings, cfg, "cpu"), ENV)
    assert [(r["backend"], r["baseline"]) for r in rows] == [
        ("reference_loop", ""),
        ("wavefuse", "reference_loop"),
    ]
    assert [_f(r, "ms_median") for r in rows] == [100.0, 25.0]
    assert _f(rows[1], "speedup") == pytest.approx(100.0 / 25.0, abs=1e-3)
    assert {r["shape"] for r in rows} == {f"{cfg.batch}x3x32x32"}
    assert rows[0]["gbps"] == rows[0]["pct_copy"] == ""  # no bytes


def test_at_step_times_whole_steps_and_summarises_median_p20_p80(monkeypatch):
    """time_version on a fake clock: attack 3 ms, update 1 ms each step: a step is 4 ms."""
    clock = [0.0]
    monkeypatch.setattr(bench_at_step.time, "perf_counter", lambda: clock[0])

    def tick(ms, value=None):
        def fn(*args):
            clock[0] += ms / 1e3
            return value

        return fn

    v = bench_at_step.Version(
        "wavefuse", nn.Linear(1, 1), tick(3.0, 0), tick(1.0), lambda x: x, None
    )
    cfg = bench_at_step.Config(timed=5, warmup=1)
    t = bench_at_step.time_version(v, torch.zeros(1), torch.zeros(1), cfg, torch.device("cpu"), "m")
    assert t.step_ms == pytest.approx([4.0] * 5)
    t.step_ms = [5.0, 1.0, 4.0, 2.0, 3.0]
    med, p20, p80 = t.summary()["step_ms"]
    assert med == 3.0 and 1.0 < p20 < med < p80 < 5.0


@pytest.mark.parametrize(("wavefuse_accs", "agree"), [((0.53, 0.55), True), ((0.60, 0.62), False)])
def test_at_step_agreement_compares_mean_robust_accuracy(monkeypatch, wavefuse_accs, agree):
    """Reference robust accuracies 0.50, 0.52 (per attack seed), clean accuracies equal: a mean
    0.03 apart agrees, 0.10 apart does not (tolerance 0.05)."""
    accs = {"reference_loop": iter((0.50, 0.52)), "wavefuse": iter(wavefuse_accs)}

    def version(name):
        def make(model, *args):
            model.version = name
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            return bench_at_step.Version(
                name, model, lambda x, y: x, lambda x, y: None, lambda x: x, opt
            )

        return make

    monkeypatch.setattr(bench_at_step, "build_model", lambda name: nn.Linear(1, 1))
    monkeypatch.setattr(bench_at_step, "make_reference", version("reference_loop"))
    monkeypatch.setattr(bench_at_step, "make_wavefuse", version("wavefuse"))
    monkeypatch.setattr(bench_at_step, "_accuracy", lambda model, *a: 0.9)
    monkeypatch.setattr(
        bench_at_step, "robust_accuracy", lambda model, *a: next(accs[model.version])
    )
    out = bench_at_step.agreement(bench_at_step.SMOKE, torch.device("cpu"))
    assert out["robust_acc_diff"] == pytest.approx(abs(np.mean(wavefuse_accs) - 0.51))
    assert out["agree"] is agree


# ----------------------------------------------------------------------------- plot.py


def _plotted(draw, rows):
    """Run plot.py's ``draw`` on real matplotlib (Agg) and return its figure."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plot

    figs = []

    class Plt:
        get_cmap = staticmethod(plt.get_cmap)

        @staticmethod
        def subplots(*args, **kw):
            figs.append(plt.subplots(*args, **kw))
            return figs[-1]

        @staticmethod
        def close(fig):
            pass

    assert getattr(plot, draw)(rows, "t", Path("/dev/null"), Plt)
    fig = figs[0][0]
    plt.close(fig)
    return fig


def test_roofline_points_and_copy_ceiling():
    """An op moving 10 MB in 2 ms runs at 5 GB/s; at 25% of copy the copy of the same bytes took
    0.5 ms: the ceiling is at 20 GB/s, above the point, at the same MB."""
    nbytes, ms, copy_ms = 10e6, 2.0, 0.5
    m = _m("cpu", [ms - 0.5, ms, ms + 0.5], nbytes=int(nbytes), copy_ms=copy_ms)
    fig = _plotted("roofline", _results.build_rows([m], ENV))
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    want = {
        (nbytes / 1e6, nbytes / (ms * 1e-3) / 1e9),
        (nbytes / 1e6, nbytes / (copy_ms * 1e-3) / 1e9),
    }
    got = {(round(float(x), 6), round(float(y), 6)) for x, y in points}
    assert got == want


def test_speedup_bars_are_geometric_means():
    rows = _results.build_rows(
        [
            _m("peer", [4.0], baseline=True),
            _m("cpu", [4.0]),
            _m("peer", [8.0], baseline=True, level=3),
            _m("cpu", [2.0], level=3),
        ],
        ENV,
    )
    fig = _plotted("speedups", rows)
    assert [p.get_height() for p in fig.axes[0].patches] == [pytest.approx(2.0)]


def test_merge_of_a_returned_csv_keeps_the_cases_it_lacks(tmp_path):
    """A returned CSV with one case of an op (a run stopped early) replaces that case only."""
    dest, src = tmp_path / "gpu.csv", tmp_path / "returned.csv"
    _results.write_csv(dest, [_row("dwt2d_fwd", "cuda", s, "1") for s in "ABC"])
    _results.write_csv(src, [_row("dwt2d_fwd", "cuda", "B", "2")])
    _gpu.merge_csv(src, dest)
    assert [(r["shape"], r["ms_median"]) for r in _read(dest)] == [
        ("A", "1"),
        ("B", "2"),
        ("C", "1"),
    ]


# ----------------------------------------------------------------------------- tables.py


def test_tables_name_every_date_and_version_and_unmeasured_cases(tmp_path, monkeypatch):
    """A CSV merged from two runs: the section names both dates and torch versions; a wavefuse
    case whose timing failed keeps its line, with "-"."""
    import tables

    monkeypatch.setattr(tables, "ROOT", tmp_path)
    path = tmp_path / "gpu-x.csv"
    common = {"dtype": "float32", "wave": "", "mode": "Linf", "level": "", "device": "GPU X"}
    _results.write_csv(
        path,
        [
            _row("pgd_step", "cuda", "1", "1.0", date="2026-12-01", torch="2.10", **common),
            _row("pgd_step", "cuda", "2", "", date="2026-12-05", torch="2.11", **common),
        ],
    )
    text = "\n".join(tables.section(path))
    assert "2026-12-01, 2026-12-05" in text and "torch 2.10, 2.11" in text
    assert "| cuda | 2 | float32 | Linf | - | - | - |" in text


def test_gpu_notes_go_to_their_family(tmp_path):
    """gpu-<slug>-<family>-notes.md holds the notes of that family's ops only."""
    path = tmp_path / "gpu.csv"
    run = _cpu_run(backends=())
    run.measurements += [
        _m("cuda", [1.0], op="dwt2d_fwd", note="dwt note"),
        _m("cuda", [1.0], op=bench_gpu.PGD_OP, wave="", mode="Linf", level="", note="step note"),
    ]
    bench_gpu.write(run, ["dwt", "pgd_step"], path, 0.0, "")
    dwt, step = (tmp_path / f"gpu-{fam}-notes.md" for fam in ("dwt", "pgd_step"))
    assert "dwt note" in dwt.read_text() and "step note" not in dwt.read_text()
    assert "step note" in step.read_text() and "dwt note" not in step.read_text()
