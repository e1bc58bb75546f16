"""bench/_results.py's CSV writes: a complete run replaces every row of its ops; a run stopped
early (``partial``), and a merge of results returned from a GPU machine, replace only the rows of
the cases they measured, in place, so that the cases they did not reach keep their rows."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import _gpu
import _results


def _row(op: str, backend: str, shape: str, ms: str, baseline: str = "") -> dict:
    row = dict.fromkeys(_results.COLUMNS, "")
    row.update(op=op, backend=backend, shape=shape, ms_median=ms, baseline=baseline)
    return row


def _read(path: Path) -> list[tuple[str, str, str, str]]:
    with open(path, newline="") as f:
        return [(r["op"], r["backend"], r["shape"], r["ms_median"]) for r in csv.DictReader(f)]


OLD = [
    _row("dwt2d_fwd", "cuda", "A", "1"),
    _row("dwt2d_fwd", "cuda", "B", "2"),
    _row("dwt2d_fwd", "cuda", "C", "3"),
    _row("pgd_step", "cuda", "A", "4"),
]


def test_a_complete_run_replaces_every_row_of_its_ops(tmp_path):
    path = tmp_path / "gpu.csv"
    _results.write_csv(path, OLD)
    _results.write_csv(path, [_row("dwt2d_fwd", "cuda", "B", "20")])
    assert _read(path) == [("pgd_step", "cuda", "A", "4"), ("dwt2d_fwd", "cuda", "B", "20")]


def test_a_partial_run_replaces_only_its_cases_in_place(tmp_path):
    path = tmp_path / "gpu.csv"
    _results.write_csv(path, OLD)
    new = [
        _row("dwt2d_fwd", "cuda", "B", "20"),
        _row("dwt2d_fwd", "triton", "B", "30"),  # a case the old file lacks: appended
        _row("dwt2d_fwd", "cuda", "B", "21", baseline="ptwt"),  # another baseline: another case
    ]
    _results.write_csv(path, new, partial=True)
    assert _read(path) == [
        ("dwt2d_fwd", "cuda", "A", "1"),
        ("dwt2d_fwd", "cuda", "B", "20"),
        ("dwt2d_fwd", "cuda", "C", "3"),
        ("pgd_step", "cuda", "A", "4"),
        ("dwt2d_fwd", "triton", "B", "30"),
        ("dwt2d_fwd", "cuda", "B", "21"),
    ]


def test_a_partial_run_on_another_device_is_refused(tmp_path):
    """Replacing some rows of an op and keeping others measured on another machine would mix two
    devices' timings of one op in one file: refused, the file left as it was. A complete run
    replaces all of its ops' rows, so it may come from another machine."""
    path = tmp_path / "cpu.csv"
    _results.write_csv(path, [{**r, "device": "AMD EPYC"} for r in OLD])
    before = path.read_text()
    new = [{**_row("dwt2d_fwd", "cpu", "B", "20"), "device": "Intel Xeon"}]
    try:
        _results.write_csv(path, new, partial=True)
    except RuntimeError as e:
        assert "AMD EPYC" in str(e) and "Intel Xeon" in str(e) and "in full" in str(e)
    else:
        raise AssertionError("a partial write mixed two devices")
    assert path.read_text() == before
    other_op = [{**_row("pgd_step", "cpu", "A", "40"), "device": "AMD EPYC"}]
    _results.write_csv(path, other_op, partial=True)  # the same device: merged
    _results.write_csv(path, new)  # complete: every dwt2d_fwd row replaced
    assert [r for r in _read(path) if r[0] == "dwt2d_fwd"] == [("dwt2d_fwd", "cpu", "B", "20")]


def test_merge_of_a_returned_csv_is_case_by_case(tmp_path):
    dest, src = tmp_path / "gpu.csv", tmp_path / "returned.csv"
    _results.write_csv(dest, OLD)
    _results.write_csv(src, [_row("pgd_step", "cuda", "A", "40")])
    _gpu.merge_csv(src, dest)
    assert _read(dest) == [*[(r["op"], r["backend"], r["shape"], r["ms_median"]) for r in OLD[:3]],
                           ("pgd_step", "cuda", "A", "40")]  # fmt: skip


BENCH_FILE = """
import pytest
import _results

@pytest.mark.parametrize("case", ["A", "B", "C"], ids=["first", "second", "third"])
def test_case(pytestconfig, case):
    ms = {"A": 10.0, "B": 20.0, "C": 30.0}[case] * pytestconfig.getoption("scale")
    note = "slow" if case == "B" else ""
    _results.recorder(pytestconfig).record(_results.Measurement(
        op="op", backend="cpu", shape=(" ABC".index(case),), dtype="float32", wave="haar", mode="zero", level=1,
        times_s=[ms / 1e3], nbytes=0, is_baseline=False, note=note))
"""


class _Scale:
    def pytest_addoption(self, parser):
        parser.addoption("--scale", type=float, default=1.0)


def _run_bench(tmp_path: Path, *args: str) -> None:
    import pytest

    plugin = _results.ResultsPlugin(tmp_path / "cpu.csv")
    rc = pytest.main(
        [str(tmp_path / "bench_x.py"), "-q", "-p", "no:cacheprovider", *args],
        plugins=[plugin, _Scale()],
    )
    assert rc == 0


def test_a_filtered_bench_run_keeps_the_other_cases(tmp_path):
    """``python bench/bench_*.py -k ...`` re-measures some cases: the CSV rows and notes of the
    cases it deselected stay (before, a filtered run deleted every other row of its ops)."""
    (tmp_path / "bench_x.py").write_text(BENCH_FILE)
    _run_bench(tmp_path)
    path, notes = tmp_path / "cpu.csv", tmp_path / "cpu-notes.md"
    assert [r[2:] for r in _read(path)] == [("1", "10.0000"), ("2", "20.0000"), ("3", "30.0000")]
    _run_bench(tmp_path, "-k", "first or second", "--scale", "2")
    assert [r[2:] for r in _read(path)] == [("1", "20.0000"), ("2", "40.0000"), ("3", "30.0000")]
    assert "Partial run" in notes.read_text()
    assert notes.read_text().count("`op cpu 2 float32 haar zero J=1`: slow") == 1
    _run_bench(tmp_path, "-k", "third", "--scale", "3")  # B's note is not C's: it stays
    assert [r[2:] for r in _read(path)] == [("1", "20.0000"), ("2", "40.0000"), ("3", "90.0000")]
    assert "slow" in notes.read_text()
    _run_bench(tmp_path)  # a complete run starts the file afresh
    assert [r[2:] for r in _read(path)] == [("1", "10.0000"), ("2", "20.0000"), ("3", "30.0000")]
    assert "Partial run" not in notes.read_text()
