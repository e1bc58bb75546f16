"""Compile every Triton kernel variant that wavefuse's ops launch, for a GPU architecture, on a
machine without a GPU. No kernel runs: this checks what the interpreter cannot.

    python bench/triton_compile.py                # sm_90 (H100/H200), the full sweep
    python bench/triton_compile.py --arch 80      # sm_80 (A100); 86, 89, 100, 120 ...
    python bench/triton_compile.py --quick        # a few variants of every kernel (the CI test)
    python bench/triton_compile.py --shard 0/2 & python bench/triton_compile.py --shard 1/2

Why. The test suite runs the Triton kernels on CPU tensors through Triton's interpreter
(TRITON_INTERPRET=1), which shares Triton's front end with the compiler but not its code generation:
a kernel can pass every interpreted test and fail to compile (MLIR lowering, ptxas), and a rule of
the front end that changed between Triton releases fails only on the release that has it (Triton
3.5-3.7 assert that a tl.dot accumulator's dtype is out_dtype: float64 dense merges failed there,
found 2026-12-06 on torch 2.13 / Triton 3.7.1, while CI's Triton 3.8 passed). The GPU image runs
another Triton than CI (3.6 in late 2026): run this with that Triton here before a short lease.

How. Triton's CUDA compiler runs without a GPU (ptxas comes with the wheel); only the driver needs
one. A stand-in driver answers the current device, stream and target (the `--arch` compute
capability), and every ``kernel[grid](...)`` launch becomes ``kernel.run(..., warmup=True)``:
Triton specialises the arguments as for a launch, compiles (or finds in its cache) the variant and
returns it, and nothing runs. The ops are then called with ``backend="triton"`` on CPU tensors
over a sweep of dtypes, wavelets, modes, sizes (the dense path of tiny planes and the general path),
levels, layouts, norms and the int64-offset variants (forced by lowering the int32 limit), so
their launchers pick every variant a GPU run would. Outputs are never written, so values are
garbage: nothing here checks numbers (the interpreted tests and tests_gpu do).

Report: per kernel, the variants compiled, the largest static shared memory of one variant
against the architecture's per-block limit (a larger one is refused at launch with OutOfResources,
which the launchers catch and answer with a path that needs less), and every failure with the
first lines of its error. Exit status 1 if any variant failed to compile, an op raised, or a
kernel of wavefuse.kernels was never launched by the sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections import defaultdict

os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be decorated as compiled JITFunctions

import torch

#: Static shared memory a block may use (opt-in maximum), bytes, by compute capability.
SHARED_LIMIT = {
    75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376,
}  # fmt: skip


class _Driver:
    """Triton's active driver, reduced to what compiling needs."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def __getattr__(self, name):
        raise AttributeError(f"no GPU here: the compile-only driver has no {name!r}")


class Recorder:
    def __init__(self):
        self.variants: dict[str, set] = defaultdict(set)
        self.shared: dict[str, int] = defaultdict(int)
        self.failures: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.seconds = 0.0
        self.case = ""

    def compile(self, fn, args, kwargs, grid):
        name = fn.fn.__name__
        start = time.perf_counter()
        try:
            kernel = fn.run(*args, grid=grid, warmup=True, **kwargs)
        except Exception as e:  # noqa: BLE001 (any compile error: record it, launch nothing, go on)
            lines = [ln for ln in traceback.format_exception_only(type(e), e) if ln.strip()]
            text = "".join(lines).strip().splitlines()
            shown = text if len(text) <= 8 else [*text[:3], "    ...", *text[-4:]]
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                cause = cause.__cause__ or cause.__context__
            if cause is not e:  # the front end's own error (a bare assert says only its line)
                frame = traceback.extract_tb(cause.__traceback__)[-1]
                where = f"{os.path.basename(frame.filename)}:{frame.lineno}: {frame.line}"
                shown.append(f"caused by {type(cause).__name__}: {cause} at {where}")
            self.failures[name].append((self.case, "\n".join(shown)))
            print(f"FAILED {name} in {self.case}: {shown[-1]}", flush=True)
            return
        finally:
            self.seconds += time.perf_counter() - start
        meta = kernel.metadata
        self.variants[name].add(kernel.hash if hasattr(kernel, "hash") else id(kernel))
        self.shared[name] = max(self.shared[name], int(getattr(meta, "shared", 0) or 0))


def install(arch: int) -> Recorder:
    """Makes every Triton launch a compile for ``sm_<arch>`` and returns the recorder."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(_Driver(GPUTarget("cuda", arch, 32)))
    recorder = Recorder()

    def getitem(self, grid):
        return lambda *args, **kwargs: recorder.compile(self, args, kwargs, grid)

    JITFunction.__getitem__ = getitem
    return recorder


def _randn(shape, dtype, layout="contiguous", seed=0):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    return t


def cases(quick: bool, wide: bool = False):
    """(label, thunk) pairs; each thunk calls public ops with backend="triton".

    Full: every dtype x every mode x haar, db4 and db20 (the kernels' constexprs are the dtype,
    the mode and the filter length; other wavelets of a length share their variants) x a tiny
    plane (dense paths) and a larger one (general paths: 140 x 132, whose first level's
    coefficients are over the dense merge's 64 too, its coarser levels' under) x levels 1 and 3,
    plus a 1 x 1 plane, channels_last, and Haar beyond its fused kernels' depth. Quick: float32
    and float64, haar periodization and db4 symmetric, the tiny plane at level 2 and the larger
    at level 3, p=2, one eps and hf_scale.
    ``wide``: the int64-offset variants of a subset (the tiny and the larger plane, float32 and
    float64; quick: db4 symmetric in float64)."""
    import wavefuse

    t = {"backend": "triton"}
    if quick:
        dtypes = [torch.float32, torch.float64]
        pairs = [("haar", "periodization"), ("db4", "symmetric")]
        shapes = [((1, 2, 9, 8), "contiguous", 2), ((1, 2, 140, 132), "contiguous", 3)]
    else:
        dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
        modes = ["zero", "symmetric", "reflect", "periodic", "periodization"]
        pairs = [(w, m) for w in ("haar", "db4", "db20") for m in modes]
        shapes = [
            ((2, 3, h, w), "contiguous", j) for (h, w) in ((9, 8), (140, 132)) for j in (1, 3)
        ]
        shapes += [((2, 3, 1, 1), "contiguous", 1), ((2, 3, 33, 20), "channels_last", 2)]
    if wide:
        dtypes = [torch.float64] if quick else [torch.float32, torch.float64]
        pairs = [("db4", "symmetric")] if quick else pairs
        shapes = [s for s in shapes if s[1] == "contiguous" and s[0][2] in (9, 140)][:2]

    def transforms(x, wave, mode, level):
        ll, hi = wavefuse.dwt2(x, wave, mode, **t)
        wavefuse.idwt2((ll, hi), wave, mode, **t)
        xg = x.detach().requires_grad_()
        coeffs = wavefuse.wavedec2(xg, wave, mode, level, **t)
        rec = wavefuse.waverec2(coeffs, wave, mode, **t)
        torch.autograd.grad(rec.sum() + coeffs[0].sum(), xg)

    def penalty(x, wave, mode, level):
        from wavefuse.ops import separable

        saved = separable.CASCADE_PLANES_PER_SM
        # both routes: every level in one launch per pass (the cascade, its planes-per-SM rule
        # off) and level by level (the rule out of reach)
        for per_sm in (0, 2**40):
            separable.CASCADE_PLANES_PER_SM = per_sm
            try:
                for p in (2,) if quick else (1, 2):
                    xg = x.detach().requires_grad_()
                    y = wavefuse.hf_penalty(xg, wave, level, mode, p=p, reduction="sum", **t)
                    (g,) = torch.autograd.grad(y, xg, create_graph=p == 2)
                    if p == 2 and x.dtype == torch.float64:  # the double backward
                        torch.autograd.grad(g.sum(), xg)
            finally:
                separable.CASCADE_PLANES_PER_SM = saved

    def steps(x, wave, mode, level):
        from wavefuse.kernels import pgd_step

        from wavefuse.ops import separable

        grad, x_nat = torch.randn_like(x), x.clone()
        per_sample = torch.full((x.shape[0], 1, 1, 1), 0.03, dtype=x.dtype)
        # above the separable kernel's planes, the chain in one launch (the cascade, its
        # planes-per-SM rule off), in pairs of stages and level by level (the cascade's depth
        # limit lowered to 0; _PAIR_ROUTE on, then off)
        large = wave != "haar" and max(x.shape[-2:]) > pgd_step._SEPARABLE_MAX_SIDE
        routes = ("cascade", "pairs", "levels") if large else (None,)
        for norm in ("Linf", "L2"):
            for eps in (0.03,) if quick else (0.03, per_sample):
                wavefuse.pgd_step(x.clone(), grad, x_nat, eps, 0.01, norm=norm, **t)
            for hf_scale in (0.5,) if quick else (0.5, [0.0, 0.5, 1.0][:level]):
                kw = {"wave": wave, "level": level, "mode": mode, "hf_scale": hf_scale}
                saved = (
                    pgd_step._CASCADE_MAX_DEPTH,
                    separable.CASCADE_PLANES_PER_SM,
                    pgd_step._PAIR_ROUTE,
                )
                for route in routes:
                    if route not in (None, "cascade"):
                        pgd_step._CASCADE_MAX_DEPTH = 0
                    pgd_step._PAIR_ROUTE = route != "levels"
                    separable.CASCADE_PLANES_PER_SM = 0
                    try:
                        step = wavefuse.wavelet_pgd_step
                        step(x.clone(), grad, x_nat, 0.03, 0.01, norm=norm, **kw, **t)
                    finally:
                        (
                            pgd_step._CASCADE_MAX_DEPTH,
                            separable.CASCADE_PLANES_PER_SM,
                            pgd_step._PAIR_ROUTE,
                        ) = saved

    families = {"transforms": transforms, "hf_penalty": penalty, "steps": steps}
    work = [
        (shape, layout, dtype, wave, mode, level)
        for shape, layout, level in shapes
        for dtype in dtypes
        for wave, mode in pairs
    ]
    if not quick and not wide:  # Haar deeper than its fused kernels go (6 levels)
        work += [((1, 2, 131, 97), "contiguous", torch.float32, "haar", "symmetric", 7)]
    for shape, layout, dtype, wave, mode, level in work:
        if mode == "reflect" and min(shape[-2:]) < 2:
            continue  # reflect needs 2 samples per axis (as PyWavelets)
        x = _randn(shape, dtype, layout)
        for family, fn in families.items():
            label = f"{family} {shape} {str(dtype)[6:]} {layout} {wave} {mode} J={level}"
            yield label, (lambda fn=fn, x=x, wave=wave, mode=mode, level=level:
                          fn(x, wave, mode, level))  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: sm_90)")
    parser.add_argument("--quick", action="store_true", help="a few variants of every kernel")
    parser.add_argument(
        "--shard",
        default="0/1",
        help="K/N: only the cases whose index is K mod N (run N processes to use N cores); "
        "a kernel no case of this shard launches is then listed, not an error",
    )
    args = parser.parse_args(argv)
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        raise SystemExit(f"--shard must be K/N with 0 <= K < N; got {args.shard!r}")

    import triton

    # decorated as compiled JITFunctions (TRITON_INTERPRET was dropped from the environment above)
    from wavefuse.kernels import dwt as kernels_dwt
    from wavefuse.kernels import haar, hf_penalty, pgd_step

    import wavefuse
    from wavefuse import backends

    if type(kernels_dwt._dwt2d_fwd_kernel).__name__ != "JITFunction":
        raise SystemExit("the kernels were decorated for the interpreter: unset TRITON_INTERPRET")
    recorder = install(args.arch)
    # The triton backend takes CPU tensors only under the interpreter: here they stand in for CUDA
    # tensors (nothing runs), so every op the backend has for CUDA tensors is marked live for them.
    reason = backends.why_not("triton", "wavelet_pgd_step", "cuda")
    if reason is not None:
        raise SystemExit(f"backend='triton' is not live: {reason}")
    for op in backends.OPS:
        if backends.why_not("triton", op, "cuda") is None:
            backends._STATUS[("triton", op, "cpu")] = None

    quick = " (quick)" if args.quick else ""
    versions = f"torch {torch.__version__}, triton {triton.__version__}"
    print(f"wavefuse {wavefuse.__version__}, {versions}: compiling for sm_{args.arch}{quick}")
    start = time.perf_counter()
    errors = 0
    for wide in (False, True):
        # int64 offsets: every launcher asks kernels/dwt.py's limit
        saved = kernels_dwt._INT32_LIMIT
        kernels_dwt._INT32_LIMIT = 0 if wide else saved
        try:
            work = list(cases(args.quick, wide))
            for index, (label, thunk) in enumerate(work):
                if index % shards != shard:
                    continue
                if index % 50 < shards:  # progress, for a run cut short
                    print(f"[{index}/{len(work)}{' int64' if wide else ''}] {label}", flush=True)
                recorder.case = label + (" int64" if wide else "")
                try:
                    thunk()
                except Exception as e:  # noqa: BLE001 (the op itself refused: not a compile error)
                    errors += 1
                    print(f"op error in {recorder.case}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            kernels_dwt._INT32_LIMIT = saved

    from triton.runtime.jit import JITFunction

    modules = (kernels_dwt, haar, hf_penalty, pgd_step)
    every = {
        name
        for module in modules
        for name, obj in vars(module).items()
        if isinstance(obj, JITFunction) and name.endswith("_kernel")
    }
    unswept = sorted(every - set(recorder.variants) - set(recorder.failures))

    limit = SHARED_LIMIT.get(args.arch)
    print(f"\n{'kernel':34} {'variants':>8} {'max shared KiB':>15}  over sm_{args.arch}'s limit")
    for name in sorted(set(recorder.variants) | set(recorder.failures)):
        shared = recorder.shared.get(name, 0)
        over = (
            "yes (refused at launch: the launcher falls back)" if limit and shared > limit else ""
        )
        print(f"{name:34} {len(recorder.variants.get(name, ())):8d} {shared / 1024:15.1f}  {over}")
    failed = sum(len(v) for v in recorder.failures.values())
    for name, items in sorted(recorder.failures.items()):
        print(
            f"\nFAILED {name}: {len(items)} launch(es); the first in {items[0][0]}:\n{items[0][1]}"
        )
    print(f"\nkernels compiled: {', '.join(sorted(recorder.variants))}")
    print(f"kernels of wavefuse.kernels: {', '.join(sorted(every))}")
    if unswept and shards == 1:
        print(f"\nNOT SWEPT (no case launches them; extend cases()): {', '.join(unswept)}")
    total = sum(len(v) for v in recorder.variants.values())
    took = f"{recorder.seconds:.0f} s compiling, {time.perf_counter() - start:.0f} s in all"
    print(f"\n{total} variants compiled, {failed} failed launches, {errors} op errors; {took}")
    return 1 if failed or errors or (unswept and shards == 1) else 0


if __name__ == "__main__":
    sys.exit(main())
