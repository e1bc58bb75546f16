"""Driver for compute-sanitizer (issue 9): every GPU kernel of wavefuse, on small awkward inputs.

    compute-sanitizer --tool memcheck  --error-exitcode 1 python bench/sanitize.py --backend cuda
    compute-sanitizer --tool racecheck --error-exitcode 1 python bench/sanitize.py --backend cuda
    compute-sanitizer --tool memcheck  --error-exitcode 1 python bench/sanitize.py --backend triton

bench/gpu_check.sh's ``sanitize`` phase runs exactly these and keeps their logs. Each op that the
backend has a kernel for on CUDA tensors (wavefuse.backends.why_not) runs forward and backward
over the five modes, haar / db4 / db20 (a filter longer than the planes), odd, tiny and
larger-than-a-tile sizes, float32 / bfloat16 / float64, contiguous and channels_last, and every
result is compared with the reference (a kernel that reads out of bounds without faulting usually
shows up there too). The sizes are small: the sanitizer slows kernels down 10-100x. Exit status 0
when every comparison held; ops without a kernel on this backend are listed, not failed.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

import wavefuse
from wavefuse import backends

MODES = ("zero", "symmetric", "reflect", "periodic", "periodization")
WAVES = ("haar", "db4", "db20")
SHAPES = ((2, 3, 17, 24), (1, 2, 5, 3), (1, 1, 1, 1), (2, 4, 70, 33))
DTYPES = (torch.float32, torch.bfloat16, torch.float64)
DEVICE = "cuda"  # --device cpu (with --backend cpu) checks this driver itself on a CPU
TOL = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float64: 1e-10}


def _close(a, b, dtype, what: str, failures: list) -> None:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    if a.shape != b.shape or not torch.allclose(a, b, rtol=0, atol=TOL[dtype] * scale):
        err = float((a - b).abs().max()) if a.shape == b.shape and a.numel() else float("nan")
        failures.append(f"{what}: max err {err:.3g} (shapes {tuple(a.shape)} {tuple(b.shape)})")


def _inputs(shape, dtype, channels_last: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(DEVICE)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x


def _cases():
    for shape in SHAPES:
        for dtype in DTYPES:
            for channels_last in (False, True):
                for wave in WAVES:
                    for mode in MODES:
                        if mode == "reflect" and min(shape[-2:]) < 2:
                            continue  # refused, as PyWavelets
                        yield shape, dtype, channels_last, wave, mode


def _transforms(backend: str, failures: list) -> int:
    n = 0
    for shape, dtype, cl, wave, mode in _cases():
        what = f"dwt2/idwt2 {backend} {wave} {mode} {shape} {dtype} cl={cl}"
        outs = {}
        for b in (backend, "reference"):
            x = _inputs(shape, dtype, cl).requires_grad_()
            ll, hi = wavefuse.dwt2(x, wave, mode, backend=b)
            y = wavefuse.idwt2((ll, hi), wave, mode, backend=b)
            (gx,) = torch.autograd.grad([ll, *hi, y], x, [torch.ones_like(t) for t in (ll, *hi, y)])
            outs[b] = (ll, *hi, y, gx)
        for a, r in zip(outs[backend], outs["reference"]):
            _close(a, r, dtype, what, failures)
        n += 1
    return n


def _multilevel(backend: str, failures: list) -> int:
    n = 0
    for shape, dtype, cl, wave, mode in _cases():
        if dtype != torch.float32 or (mode == "reflect" and min(shape[-2:]) < 16):
            continue  # reflect needs 2 samples per axis at level 3
        what = f"wavedec2/band_energy {backend} {wave} {mode} {shape} cl={cl}"
        res = {}
        for b in (backend, "reference"):
            x = _inputs(shape, dtype, cl).requires_grad_()
            outs = []
            if not backends.why_not(b, "dwt2d", DEVICE):
                coeffs = wavefuse.wavedec2(x, wave, mode, 3, backend=b)
                outs += [coeffs[0], *[t for level in coeffs[1:] for t in level]]
            if not backends.why_not(b, "hf_penalty", DEVICE):
                outs.append(wavefuse.band_energy(x, wave, 3, mode, 2, backend=b))
                pen = wavefuse.hf_penalty(x, wave, 3, mode, 2, None, "sum", backend=b)
                (g,) = torch.autograd.grad(pen, x)
                outs.append(g)
            res[b] = outs
        if res[backend]:
            for a, r in zip(res[backend], res["reference"]):
                _close(a, r, dtype, what, failures)
            n += 1
    return n


def _steps(backend: str, failures: list) -> int:
    from wavefuse.ops import separable

    n = 0
    saved = separable.CASCADE_PLANES_PER_SM
    try:  # the chain of the 70 x 33 planes: in pairs of stages (2 planes), then as the cascade
        for per_sm in (saved, 0):
            separable.CASCADE_PLANES_PER_SM = per_sm
            n += _steps_once(backend, failures, chain_only=per_sm == 0)
    finally:
        separable.CASCADE_PLANES_PER_SM = saved
    return n


def _steps_once(backend: str, failures: list, chain_only: bool) -> int:
    n = 0
    # wavelet_pgd_step: haar (the fused kernels) shallow and deep, and a longer filter in a mode
    # that reflects: the separable kernel on planes up to 64 x 64, the approximation chain on the
    # 70 x 33 one (its route: _steps).
    filters = (("haar", "periodization", 1), ("haar", "symmetric", 3), ("db4", "reflect", 2))
    shapes = ((2, 3, 17, 24), (1, 1, 1, 1), (3, 3, 64, 64), (1, 2, 70, 33))
    for shape in shapes[-1:] if chain_only else shapes:
        for norm in ("Linf", "L2"):
            for op, (wave, mode, level) in [("pgd_step", filters[0])] + [
                ("wavelet_pgd_step", f) for f in filters
            ]:
                if backends.why_not(backend, op, DEVICE):
                    continue
                if mode == "reflect" and min(shape[-2:]) < 2:
                    continue  # refused, as PyWavelets
                res = {}
                for b in (backend, "reference"):
                    g = torch.Generator().manual_seed(1)
                    x_nat = torch.rand(shape, generator=g).to(DEVICE)
                    x_adv = (x_nat + 0.01 * torch.randn(shape, generator=g).to(DEVICE)).clamp(0, 1)
                    grad = torch.randn(shape, generator=g).to(DEVICE)
                    if op == "pgd_step":
                        wavefuse.pgd_step(x_adv, grad, x_nat, 8 / 255, 2 / 255, norm, backend=b)
                    else:
                        with warnings.catch_warnings():  # level 3 of a 1 x 1 plane
                            warnings.simplefilter("ignore")
                            wavefuse.wavelet_pgd_step(
                                x_adv, grad, x_nat, 8 / 255, 2 / 255, wave, level, mode,
                                0.5, norm, backend=b,
                            )  # fmt: skip
                    res[b] = x_adv
                what = f"{op} {norm} {shape}" + (f" {wave} {mode} J={level}" if "wav" in op else "")
                _close(res[backend], res["reference"], torch.float32, what, failures)
                n += 1
    return n


def _pool(backend: str, failures: list) -> int:
    if backends.why_not(backend, "wavelet_pool2d", DEVICE):
        return 0
    n = 0
    for shape, dtype, cl, wave, mode in _cases():
        res = {}
        for b in (backend, "reference"):
            x = _inputs(shape, dtype, cl).requires_grad_()
            y = wavefuse.wavelet_pool2d(x, wave, mode, backend=b)
            (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
            res[b] = (y, g)
        for a, r in zip(res[backend], res["reference"]):
            _close(a, r, dtype, f"wavelet_pool2d {backend} {wave} {mode} {shape} {dtype}", failures)
        n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("cuda", "triton", "cpu"), required=True)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("sanitize.py: no CUDA device", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")  # pywt-style level warnings are not the subject here
    live = [op for op in backends.OPS if not backends.why_not(args.backend, op, DEVICE)]
    missing = [op for op in backends.OPS if op not in live]
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(f"backend={args.backend} on {where}: kernels for {live}")
    if missing:
        print(f"no {args.backend} kernel on CUDA tensors for: {missing}")
    failures: list[str] = []
    counts = {}
    if not backends.why_not(args.backend, "dwt2d", DEVICE):
        counts["transforms"] = _transforms(args.backend, failures)
    counts["multilevel/energy"] = _multilevel(args.backend, failures)
    counts["steps"] = _steps(args.backend, failures)
    counts["pool"] = _pool(args.backend, failures)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    print(f"cases run: {counts}")
    for f in failures[:50]:
        print("MISMATCH", f)
    print(f"{len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
