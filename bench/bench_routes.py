"""Times the routes of the multilevel ops whose choice is blind (never measured on a GPU).

    python bench/bench_routes.py            # CUDA: every case, every route, both backends
    python bench/bench_routes.py --smoke    # CPU under TRITON_INTERPRET=1: a tiny case (logic only)

wavelet_pgd_step's approximation chain (other wavelets on planes over 64 per side) runs as

* ``cascade``: one launch for every level, one program (block) per (n, c) plane;
* ``pairs``: the chain's stages two per launch, J launches, every tile of every level spread over
  the GPU (each tile recomputes its window's halo);
* ``levels`` (Triton only: ``kernels/pgd_step.py``'s ``_PAIR_ROUTE = False``; CUDA keeps it for
  filters whose window does not fit in shared memory): two launches per level;

and band_energy / hf_penalty's passes run as ``cascade`` (one launch per pass) or ``levels``.
``wavefuse/ops/separable.py``'s ``cascade_fits`` picks the cascade where there are at least
CASCADE_PLANES_PER_SM planes per SM and none is over CASCADE_MAX_PLANE samples; this script forces
each route (monkeypatching those numbers and ``_PAIR_ROUTE``) on shapes on both sides of that rule
and reports which one the rule picks (``default``), so the two numbers, the pair tiles and the
route itself can be set from measurements.

Per (op, backend, shape, route): do_bench median / p20 / p80 ms (bench/_gpu.py's Timer: L2 flushed
before every call), ms of a CUDA-graph replay (device time without the host), % of a copy's
bandwidth over the op's compulsory bytes (wavelet step: read g, x_adv, x_nat, write x_adv; penalty
forward + backward: read x twice, write grad_x), and the largest difference from the first route
timed of the same case (every route computes the same values: a wrong route shows there).
Writes results/gpu-<device-slug>-routes.csv (``--smoke``: /tmp/wavefuse-bench-smoke/, never
results/).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gpu

import wavefuse
from wavefuse import backends

FIELDS = [
    "op", "backend", "wave", "level", "norm", "shape", "planes", "route", "default",
    "ms_median", "ms_p20", "ms_p80", "ms_graph", "pct_copy", "max_diff", "note",
]  # fmt: skip

# (op, wave, level, norm, shape): few large planes (the pairs' or levels' side of the rule), many
# planes (the cascade's), one plane over 512 x 512.
CASES = [
    ("wavelet_pgd_step", "db4", 3, "Linf", (16, 3, 224, 224)),
    ("wavelet_pgd_step", "db4", 3, "L2", (16, 3, 224, 224)),
    ("wavelet_pgd_step", "db4", 3, "Linf", (128, 3, 224, 224)),
    ("wavelet_pgd_step", "db4", 3, "Linf", (4, 3, 768, 768)),
    ("wavelet_pgd_step", "sym8", 2, "Linf", (16, 3, 224, 224)),
    ("wavelet_pgd_step", "db20", 2, "Linf", (16, 3, 224, 224)),
    ("hf_penalty", "db4", 3, None, (128, 64, 32, 32)),
    ("hf_penalty", "db4", 3, None, (16, 3, 224, 224)),
]
SMOKE_CASES = [
    ("wavelet_pgd_step", "db2", 3, "Linf", (1, 2, 70, 66)),
    ("wavelet_pgd_step", "db2", 2, "L2", (1, 2, 70, 66)),
    ("hf_penalty", "db2", 2, None, (1, 2, 40, 36)),
]


@contextlib.contextmanager
def route(op: str, name: str):
    """Force a route: the cascade rule's numbers and the Triton chain's pair switch."""
    from wavefuse.kernels import pgd_step as triton_step

    from wavefuse.ops import separable

    saved = (separable.CASCADE_PLANES_PER_SM, separable.CASCADE_MAX_PLANE, triton_step._PAIR_ROUTE)
    try:
        if name == "cascade":
            separable.CASCADE_PLANES_PER_SM, separable.CASCADE_MAX_PLANE = 0, 2**62
        elif name != "default":
            separable.CASCADE_PLANES_PER_SM = 2**40
        triton_step._PAIR_ROUTE = name != "levels"
        yield
    finally:
        separable.CASCADE_PLANES_PER_SM, separable.CASCADE_MAX_PLANE = saved[:2]
        triton_step._PAIR_ROUTE = saved[2]


def routes_of(op: str, backend: str) -> list[str]:
    if op == "hf_penalty":
        return ["cascade", "levels"]
    return ["cascade", "pairs", "levels"] if backend == "triton" else ["cascade", "pairs"]


def default_route(op: str, shape, device) -> str:
    """The route separable.cascade_fits picks for this shape (depths here are within the limits)."""
    from wavefuse.ops import separable

    n, c, h, w = shape
    per_sm = separable.CASCADE_PLANES_PER_SM * separable.sm_count(device)
    if h * w <= separable.CASCADE_MAX_PLANE and n * c >= per_sm:
        return "cascade"
    return "levels" if op == "hf_penalty" else "pairs"


def build(op, backend, wave, level, norm, shape, device, dtype):
    """(fn, result, compulsory bytes): fn runs the op once; result() its output for comparison."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device, dtype)
    g = torch.randn(shape, generator=gen).to(device, dtype)
    nbytes = x.numel() * x.element_size()
    if op == "wavelet_pgd_step":
        x_adv = (x + 0.01 * torch.randn(shape, generator=gen).to(device, dtype)).clamp(0, 1)
        target = x_adv.clone()
        eps = 8 / 255 if norm == "Linf" else 0.5
        scales = [0.0, 0.5, 0.25][:level]

        def fn():
            target.copy_(x_adv)  # the same step every call (the copy is in the time: noted)
            wavefuse.wavelet_pgd_step(target, g, x, eps, 2 / 255, wave, level, "symmetric",
                                      scales, norm, backend=backend)  # fmt: skip

        return fn, lambda: target.clone(), 4 * nbytes + 2 * nbytes
    xs = x.clone().requires_grad_()
    out = {}

    def fn():
        y = wavefuse.hf_penalty(xs, wave, level, "symmetric", p=2, reduction="sum", backend=backend)
        (out["grad"],) = torch.autograd.grad(y, xs)

    return fn, lambda: out["grad"].clone(), 3 * nbytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, interpreter, tiny cases")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    _gpu.on_sigterm()
    device = torch.device("cpu" if args.smoke else "cuda")
    timer = _gpu.Timer(str(device), *((1.0, 1.0) if args.smoke else (10.0, 50.0)))
    if args.smoke:  # never in results/ (as bench_gpu.py's --smoke)
        path = Path("/tmp/wavefuse-bench-smoke/cpu-smoke-routes.csv")
    else:
        path = _gpu.RESULTS / f"gpu-{_gpu.device_slug(_gpu.device_name('cuda'))}-routes.csv"
    rows = []
    try:
        for op, wave, level, norm, shape in SMOKE_CASES if args.smoke else CASES:
            for backend in ("cuda", "triton"):
                why = backends.why_not(backend, op, device.type)
                if why is not None:
                    print(f"{op} {backend}: {why}")
                    continue
                default = default_route(op, shape, device)
                first = None
                fn, result, nbytes = build(op, backend, wave, level, norm, shape, device,
                                           torch.float32)  # fmt: skip
                for name in routes_of(op, backend):
                    row = dict.fromkeys(FIELDS, "")
                    row.update(op=op, backend=backend, wave=wave, level=level, norm=norm or "",
                               shape="x".join(map(str, shape)), planes=shape[0] * shape[1],
                               route=name, default=int(name == default))  # fmt: skip
                    try:
                        with route(op, name):
                            fn()
                            got = result()
                            med, p20, p80 = timer(fn)
                            row.update(ms_median=f"{med:.4f}", ms_p20=f"{p20:.4f}",
                                       ms_p80=f"{p80:.4f}")  # fmt: skip
                            if device.type == "cuda":
                                row["ms_graph"] = f"{timer.graph_ms(fn):.4f}"
                                row["pct_copy"] = f"{100 * timer.copy_ms(nbytes) / med:.1f}"
                        if first is None:
                            first = got
                        diff = (got.double() - first.double()).abs().max().item()
                        row["max_diff"] = f"{diff:.3g}" if math.isfinite(diff) else "nan"
                        if op == "wavelet_pgd_step":
                            row["note"] = "includes a copy of x_adv per call"
                    except _gpu.Interrupted:
                        raise
                    except Exception as e:  # noqa: BLE001 - recorded in the row, next route
                        row["note"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
                    rows.append(row)
                    print(" ".join(f"{k}={row[k]}" for k in FIELDS if row[k] != ""), flush=True)
    except _gpu.Interrupted as e:
        print(f"interrupted ({e}): writing the {len(rows)} rows measured")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows)")
    errors = [r for r in rows if r["note"].startswith("error")]
    return 1 if errors or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
