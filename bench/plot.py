"""Plot the benchmark CSVs: per device, a memory roofline and the speedups over each baseline.

For every ``results/cpu.csv`` and ``results/gpu-<device-slug>.csv`` (or the CSVs named on the
command line), two PNGs beside it:

* ``<stem>-roofline.png``: one panel per op; each measurement at (MB the op must move, achieved
  GB/s), log-log, coloured by backend (marker: dtype), and the ceiling measured in the same run,
  the GB/s of a copy of the same bytes (``gbps / pct_copy * 100``), as black crosses: a point on
  its cross runs at the memory floor (pct_copy 100%).
* ``<stem>-speedup.png``: one panel per op; for each (wavefuse backend, baseline, dtype) a bar at
  the geometric-mean speedup over the cases both ran, and a dot per case; log scale, 1 = parity
  (> 1: wavefuse faster). The ``at_step`` panel labels its dots with the model.

    pip install matplotlib          # not a dependency of wavefuse; part of the bench tooling
    python bench/plot.py            # every CSV in bench/results/
    python bench/plot.py bench/results/gpu-nvidia-h100-80gb-hbm3.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MARKERS = {"float32": "o", "bfloat16": "s", "float16": "^", "float64": "D"}


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(row: dict, key: str) -> float | None:
    try:
        v = float(row[key])
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _case(row: dict) -> tuple:
    return (row["shape"], row["dtype"], row["wave"], row["mode"], row["level"])


def _grid(n: int, plt, width: float = 6.0, height: float = 4.2):
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _colors(names, plt) -> dict:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(sorted(names))}


def roofline(rows: list[dict], title: str, out: Path, plt) -> bool:
    """Achieved GB/s against bytes moved, per op, with the measured copy ceiling."""
    points: dict[str, dict] = defaultdict(dict)  # op -> {(backend, case): (mb, gbps, copy)}
    for r in rows:
        gbps, ms, pct = _float(r, "gbps"), _float(r, "ms_median"), _float(r, "pct_copy")
        if not gbps or not ms:
            continue
        mb = gbps * ms  # GB/s x ms = MB
        copy = gbps / pct * 100 if pct else None
        points[r["op"]][(r["backend"], r["dtype"], _case(r))] = (mb, gbps, copy)
    if not points:
        return False
    ops = sorted(points)
    fig, axes = _grid(len(ops), plt)
    colors = _colors({k[0] for op in ops for k in points[op]}, plt)
    for ax, op in zip(axes, ops):
        seen = set()
        for (backend, dtype, _), (mb, gbps, copy) in sorted(points[op].items()):
            label = f"{backend} ({dtype})"
            ax.scatter(
                mb,
                gbps,
                color=colors[backend],
                marker=MARKERS.get(dtype, "o"),
                s=22,
                alpha=0.8,
                label=None if label in seen else label,
            )
            seen.add(label)
            if copy:
                ax.scatter(
                    mb,
                    copy,
                    color="black",
                    marker="x",
                    s=18,
                    linewidths=0.8,
                    label=None if "copy" in seen else "copy of the same bytes",
                )
                seen.add("copy")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MB the op must move (reads + writes)")
        ax.set_ylabel("achieved GB/s")
        ax.set_title(op)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: achieved bandwidth vs the measured copy ceiling", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def speedups(rows: list[dict], title: str, out: Path, plt) -> bool:
    """Geometric-mean speedup over each baseline (bars) and every case's speedup (dots)."""
    per_op: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        s = _float(r, "speedup")
        if r["baseline"] and s:
            per_op[r["op"]][(r["backend"], r["baseline"], r["dtype"])].append((s, r))
    if not per_op:
        return False
    ops = sorted(per_op)
    most = max(len(per_op[op]) for op in ops)
    fig, axes = _grid(len(ops), plt, width=max(7.0, 0.6 * most))
    colors = _colors({b for op in ops for (_, b, _) in per_op[op]}, plt)
    for ax, op in zip(axes, ops):
        pairs = sorted(per_op[op])
        dtypes = {d for (_, _, d) in pairs}
        for i, pair in enumerate(pairs):
            values = [s for s, _ in per_op[op][pair]]
            geo = math.exp(sum(math.log(v) for v in values) / len(values))
            ax.bar(i, geo, color=colors[pair[1]], alpha=0.55, width=0.7)
            jitter = [i + 0.25 * ((k % 7) / 6 - 0.5) for k in range(len(values))]
            ax.scatter(jitter, values, color="black", s=8, zorder=3)
            ax.annotate(
                f"{geo:.2f}x" if geo < 10 else f"{geo:.0f}x",
                (i + 0.36, geo),
                ha="left",
                va="center",
                fontsize=7,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            )
            if op == "at_step":  # one dot per model: name it
                for x, (s, r) in zip(jitter, per_op[op][pair]):
                    ax.annotate(
                        r["mode"], (x, s), fontsize=6, xytext=(3, -8), textcoords="offset points"
                    )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, 0.8), max(hi, 1.25))  # parity always in view
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels(
            [f"{b} vs {base}" + (f" ({d})" if len(dtypes) > 1 else "") for b, base, d in pairs],
            fontsize=7,
            rotation=30,
            ha="right",
            rotation_mode="anchor",
        )
        ax.set_ylabel("speedup (baseline ms / wavefuse ms)")
        ax.set_title(op)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(
        f"{title}: speedup over each baseline (bar: geometric mean; dots: cases)", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot(path: Path, out_dir: Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read(path)
    if not rows:
        return []
    out_dir = out_dir or path.parent
    devices = sorted({r["device"] for r in rows})
    title = f"{path.name} ({'; '.join(devices)})"
    written = []
    for name, draw in (("roofline", roofline), ("speedup", speedups)):
        out = out_dir / f"{path.stem}-{name}.png"
        if draw(rows, title, out, plt):
            written.append(out)
    return written


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="*", type=Path, help="default: results/cpu.csv, results/gpu-*.csv")
    p.add_argument("--out-dir", type=Path, help="default: beside each CSV")
    args = p.parse_args(argv)
    paths = args.csv or sorted([*RESULTS.glob("cpu.csv"), *RESULTS.glob("gpu-*.csv")])
    if not paths:
        print(f"no CSV in {RESULTS}")
        return 0
    for path in paths:
        for out in plot(path, args.out_dir):
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
