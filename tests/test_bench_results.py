"""bench/_results.py's CSV writes: a complete run replaces every row of its ops; a run stopped
early (``partial``), and a merge of results returned from a GPU machine, replace only the rows of
the cases they measured, in place, so that the cases they did not reach keep their rows."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

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


def test_merge_of_a_returned_csv_is_case_by_case(tmp_path):
    dest, src = tmp_path / "gpu.csv", tmp_path / "returned.csv"
    _results.write_csv(dest, OLD)
    _results.write_csv(src, [_row("pgd_step", "cuda", "A", "40")])
    _gpu.merge_csv(src, dest)
    assert _read(dest) == [*[(r["op"], r["backend"], r["shape"], r["ms_median"]) for r in OLD[:3]],
                           ("pgd_step", "cuda", "A", "40")]  # fmt: skip
