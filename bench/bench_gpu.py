"""GPU benchmarks of every live wavefuse backend against the peers, timed by triton.testing.do_bench.

Families (``--only``, default all four), one row per (measurement, baseline) pair in the schema of
DESIGN.md ("Benchmark results"), written to ``results/gpu-<device-slug>.csv`` (each family
replaces only its own ops' rows) with ``results/gpu-<device-slug>-<family>-notes.md``:

* ``dwt``: ``dwt2d_fwd`` (the forward under no_grad), ``dwt2d_adjoint`` (the backward alone:
  ``torch.autograd.grad`` of every output against fixed upstream gradients over a graph recorded
  once, i.e. the synthesis adjoint ``dwt2d_adjoint`` per level for wavefuse) and ``dwt2d_fwd_bwd``
  (both), as bench_dwt.py defines them; on (128, 64, 32, 32) and (16, 3, 224, 224), float32 and
  bfloat16, haar and db4, J = 1 and 3, modes zero, symmetric and periodization. Peers:
  pytorch_wavelets ``DWTForward``, ptwt ``wavedec2``, torchwavelets ``DWT2D``.
* ``hf_penalty``: ``hf_penalty_fwd_bwd``, the penalty (p = 2, reduction "sum") plus the input
  gradient; modes periodization and symmetric. Peers: pytorch_wavelets ``DWTForward`` + the sum of
  squares of the detail bands, ptwt ``wavedec2`` + the same.
* ``pgd_step``: one in-place step (norm in the ``mode`` column) on (128, 3, 32, 32) and
  (512, 3, 224, 224), float32 and bfloat16, against ``torchattacks``: torchattacks 3.5.1's
  PGD / PGDL2 update written out as the eager torch ops of its loop body.
* ``wavelet_pgd_step``: ``wavelet_pgd_step_linf`` / ``wavelet_pgd_step_l2``, one in-place step
  along ``g' = idwt(scale_hf(dwt(grad)))`` (hf_scale 0.5 at every level; the ``mode`` column is
  the wavelet's), bench_wavelet_pgd_step.py's cases: (128, 3, 32, 32) and (16, 3, 224, 224),
  float32 and bfloat16, haar periodization J = 1 and db4 symmetric J = 3. Peer: pytorch_wavelets
  ``DWTForward``, the detail bands scaled, ``DWTInverse``, then the torchattacks update above.

Backends: "reference", "cuda", "triton" on CUDA tensors; one that ``wavefuse.backends.why_not``
says is not live is skipped with the reason (in the notes). A peer that is not installed gets rows
with empty timings (the reason in the notes); a peer that fails on a case (bfloat16, a mode it
lacks) likewise, with its error. Before timing, every implementation is checked on a slice of the
input against PyWavelets (forward, penalty value) and wavefuse's float64 reference (gradients), the
steps against the torchattacks sequence and the wavelet steps against wavefuse's float64
reference; a disagreement is noted and the case timed anyway.

Timing: ``do_bench(fn, warmup, rep, quantiles=[0.5, 0.2, 0.8])`` -> ms_median, ms_p20, ms_p80
(CUDA events, L2 flushed before every call). ``pct_copy`` = 100 * t_copy / t_op, with t_copy the
do_bench median of ``y.copy_(x)`` over the same bytes, in the same run. The bytes are what the op
must move (bench/README.md, "bench_gpu.py").

    python bench/bench_gpu.py                     # on a GPU machine: every family
    python bench/bench_gpu.py --only dwt -k "haar" # a subset (replaces only its cases' rows)
    python bench/bench_gpu.py --device cpu --smoke # the logic on tiny shapes, CPU wall clock;
                                                   # writes under /tmp, never into results/

Without a CUDA device (and without --device cpu) it prints "no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gpu
import _results

FAMILIES = ("dwt", "hf_penalty", "pgd_step", "wavelet_pgd_step")
DTYPES = (torch.float32, torch.bfloat16)
WAVES = ("haar", "db4")
LEVELS = (1, 3)
DWT_OPS = ("dwt2d_fwd", "dwt2d_adjoint", "dwt2d_fwd_bwd")
DWT_MODES = ("zero", "symmetric", "periodization")
HF_OP = "hf_penalty_fwd_bwd"
HF_MODES = ("periodization", "symmetric")
PGD_OP = "pgd_step"
NORMS = ("Linf", "L2")
# bench_wavelet_pgd_step.py's op names (norm -> op), (wave, mode, level) cases and hf_scale.
WPGD_OPS = {"Linf": "wavelet_pgd_step_linf", "L2": "wavelet_pgd_step_l2"}
WPGD_CASES = (("haar", "periodization", 1), ("db4", "symmetric", 3))
WPGD_HF_SCALE = 0.5
SHAPES = {
    "dwt": [(128, 64, 32, 32), (16, 3, 224, 224)],
    "pgd_step": [(128, 3, 32, 32), (512, 3, 224, 224)],
    "wavelet_pgd_step": [(128, 3, 32, 32), (16, 3, 224, 224)],
}
SMOKE_SHAPES = {
    "dwt": [(2, 3, 16, 16)],
    "pgd_step": [(4, 3, 8, 8)],
    "wavelet_pgd_step": [(2, 3, 8, 8)],
}
# torchattacks' defaults: PGD eps 8/255, alpha 2/255; PGDL2 eps 1.0, alpha 0.2.
STEP_PARAMS = {"Linf": (8 / 255, 2 / 255), "L2": (1.0, 0.2)}
# Agreement tolerances, relative to the oracle's largest magnitude. float32: the CPU benchmarks';
# bfloat16: the output's rounding (2^-8) plus bf16 filters in the peers that cast their modules.
FWD_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
GRAD_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
# A bfloat16 step may differ from torchattacks' (which rounds after every op; wavefuse computes
# in float32 and rounds once) by a few ulps of values in [0, 1]: 2^-6.
STEP_TOL = {torch.float32: 0.0, torch.bfloat16: 2.0**-6}
# The wavelet step against the float64 reference: float32 as bench_wavelet_pgd_step.py; bfloat16
# as STEP_TOL. Linf excuses a flipped sign(g') where |g'| is within SIGN_TOL of zero (relative to
# its largest magnitude): float32 rounding; bfloat16: the peer filters in bfloat16 (2^-8 a pass).
WPGD_TOL = {torch.float32: 1e-5, torch.bfloat16: 2.0**-6}
SIGN_TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
CHECK_N, CHECK_C = 1, 2  # the slice the oracles run on (full H x W)
PTWT_MODES = {"zero": "zero", "symmetric": "symmetric", "reflect": "reflect"}

Outputs = list[Tensor]


class Missing(Exception):
    """Not installed or not live here: no timings (the reason goes to the notes once)."""


class Unsupported(Exception):
    """Installed, but cannot run this case (a row with empty timings and the reason)."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape_id(shape) -> str:
    return "x".join(map(str, shape))


def _import(package: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation (pytorch_wavelets)
            return importlib.import_module(package)
    except ImportError as e:
        raise Missing(f"{package} is not installed ({e})") from None


@dataclass
class Run:
    """One invocation: device, timer, what was measured and noted."""

    device: torch.device
    timer: _gpu.Timer
    smoke: bool
    select: str
    deadline: float
    measurements: list
    extra: list
    backends: tuple

    def wanted(self, case_id: str) -> bool:
        return self.select in case_id

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline


@functools.cache
def bench_input(shape: tuple, dtype: torch.dtype, device: str, seed: int = 0) -> Tensor:
    """Seeded standard normal in float32, rounded to ``dtype``: never zeros (METHOD.md)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device).to(dtype)


def _rel_err(got: Outputs, want: Outputs) -> float:
    if [tuple(g.shape) for g in got] != [tuple(w.shape) for w in want]:
        return float("inf")
    want = [torch.as_tensor(np.asarray(w) if not torch.is_tensor(w) else w) for w in want]
    want = [w.detach().double().cpu() for w in want]
    scale = max(float(w.abs().max()) for w in want) or 1.0
    errs = [float((g.detach().double().cpu() - w).abs().max()) for g, w in zip(got, want)]
    return max(errs) / scale if all(math.isfinite(e) for e in errs) else math.inf


def _pywt():
    return _import("pywt")


def _pywt_coeffs(x: Tensor, wave: str, mode: str, level: int) -> Outputs:
    """pywt.wavedec2 of x (as float64 on the CPU), flattened in pywt order."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Level value")
        c = _pywt().wavedec2(x.double().cpu().numpy(), wave, mode=mode, level=level)
    return [torch.from_numpy(np.ascontiguousarray(c[0]))] + [
        torch.from_numpy(np.ascontiguousarray(b)) for d in c[1:] for b in d
    ]


# ----------------------------------------------------------------------------- transforms
# A transform returns its API's outputs, flattened: "pairs" layout (yl, yh[0], ..., yh[J-1]) with
# yh[j] (N, C, 3, h, w) finest first (wavefuse, pytorch_wavelets, torchwavelets), or "pywt" layout
# [cA_J, cH_J, cV_J, cD_J, ..., cD_1] (ptwt). Timings use the API's own tensors (no unbind/stack).


@dataclass(frozen=True)
class Transform:
    fn: Callable[[Tensor], Outputs]
    layout: str  # "pairs" or "pywt"
    level: int

    def __call__(self, x: Tensor) -> Outputs:
        return self.fn(x)

    def to_pywt(self, outs: Outputs) -> Outputs:
        if self.layout == "pywt":
            return list(outs)
        return [outs[0]] + [band for hi in reversed(outs[1:]) for band in hi.unbind(2)]

    def from_pywt(self, bands: Outputs) -> Outputs:
        if self.layout == "pywt":
            return list(bands)
        j_count = self.level
        yh = [
            torch.stack(bands[1 + 3 * (j_count - 1 - j) : 4 + 3 * (j_count - 1 - j)], 2)
            for j in range(j_count)
        ]
        return [bands[0]] + yh


def _pairs(module) -> Callable[[Tensor], Outputs]:
    def fn(x: Tensor) -> Outputs:
        yl, yh = module(x)
        return [yl, *yh]

    return fn


def wavefuse_dwt(backend: str, run: Run, wave, mode, level, dtype) -> Transform:
    import wavefuse
    from wavefuse import backends

    reason = backends.why_not(backend, "dwt2d", run.device.type)
    if reason is not None:
        raise Missing(f"wavefuse backend {backend!r} is not live for dwt2d: {reason}")
    module = wavefuse.DWTForward(J=level, wave=wave, mode=mode, backend=backend).to(run.device)
    return Transform(_pairs(module), "pairs", level)


def pytorch_wavelets_dwt(run: Run, wave, mode, level, dtype) -> Transform:
    pw = _import("pytorch_wavelets")
    module = pw.DWTForward(J=level, wave=wave, mode=mode).to(device=run.device, dtype=dtype)
    return Transform(_pairs(module), "pairs", level)


def torchwavelets_dwt(run: Run, wave, mode, level, dtype) -> Transform:
    tw = _import("torchwavelets")
    module = tw.DWT2D(J=level, wave=wave, mode=mode).to(device=run.device, dtype=dtype)
    return Transform(_pairs(module), "pairs", level)


def ptwt_dwt(run: Run, wave, mode, level, dtype) -> Transform:
    ptwt = _import("ptwt")
    if mode not in PTWT_MODES:
        raise Unsupported(f"ptwt.wavedec2 has no mode equivalent to pywt's {mode!r}")
    wavelet, ptwt_mode = _pywt().Wavelet(wave), PTWT_MODES[mode]

    def fn(x: Tensor) -> Outputs:
        c = ptwt.wavedec2(x, wavelet, level=level, mode=ptwt_mode)
        return [c[0]] + [band for details in c[1:] for band in details]

    return Transform(fn, "pywt", level)


DWT_PEERS = {
    "pytorch_wavelets": pytorch_wavelets_dwt,
    "ptwt": ptwt_dwt,
    "torchwavelets": torchwavelets_dwt,
}


def _reference_grad(x: Tensor, wave, mode, level, bands: Outputs) -> Tensor:
    """d<outputs, bands>/dx by wavefuse's reference in float64 (the exact adjoint)."""
    import wavefuse

    module = wavefuse.DWTForward(J=level, wave=wave, mode=mode, backend="reference")
    t = Transform(_pairs(module), "pairs", level)
    xg = x.detach().double().requires_grad_()
    outs = t(xg)
    grads = t.from_pywt([b.double() for b in bands])
    return torch.autograd.grad(outs, xg, grads)[0]


def check_dwt(t: Transform, x: Tensor, wave, mode, level, grad: bool) -> str:
    """A note when ``t`` disagrees with pywt (forward) or the exact adjoint (gradient), else ""."""
    x = x[:CHECK_N, :CHECK_C].contiguous()
    with torch.no_grad():
        got = t.to_pywt(t(x))
    err = _rel_err(got, _pywt_coeffs(x, wave, mode, level))
    if not err <= FWD_TOL[x.dtype]:  # a NaN disagrees
        return f"forward disagrees with pywt.wavedec2 (max rel. error {err:.2e})"
    if not grad:
        return ""
    gen = torch.Generator(device=x.device).manual_seed(1)
    bands = [torch.randn(b.shape, generator=gen, device=x.device) for b in got]
    xg = x.detach().requires_grad_()
    outs = t(xg)
    mine = torch.autograd.grad(outs, xg, [g.to(o.dtype) for g, o in zip(t.from_pywt(bands), outs)])[
        0
    ]
    err = _rel_err([mine], [_reference_grad(x, wave, mode, level, bands)])
    if not err <= GRAD_TOL[x.dtype]:
        return (
            f"input gradient disagrees with the exact adjoint (wavefuse reference, float64; max "
            f"rel. error {err:.2e}): timed anyway, not a like-for-like comparison"
        )
    return ""


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def dwt_step(op: str, t: Transform, x: Tensor) -> tuple[Callable[[], object], int]:
    """The timed callable and the bytes it must move (bench/README.md)."""
    if op == "dwt2d_fwd":

        def fwd():
            with torch.no_grad():
                return t(x)

        return fwd, x.nbytes + _nbytes(fwd())
    xg = x.detach().requires_grad_()
    outs = t(xg)
    gen = torch.Generator(device=x.device).manual_seed(2)
    grads = [torch.randn(o.shape, generator=gen, device=x.device).to(o.dtype) for o in outs]
    if op == "dwt2d_adjoint":
        # The backward alone over a graph recorded once: read every coefficient gradient,
        # write grad_x.
        adjoint = functools.partial(torch.autograd.grad, outs, xg, grads, retain_graph=True)
        return adjoint, x.nbytes + _nbytes(grads)

    def fwd_bwd():
        return torch.autograd.grad(t(xg), xg, grads)

    return fwd_bwd, 2 * (x.nbytes + _nbytes(grads))


# ----------------------------------------------------------------------------- hf_penalty

Penalty = Callable[[Tensor], Tensor]


def wavefuse_hf(backend: str, run: Run, wave, mode, level, dtype) -> Penalty:
    import wavefuse
    from wavefuse import backends

    reason = backends.why_not(backend, "hf_penalty", run.device.type)
    if reason is not None:
        raise Missing(f"wavefuse backend {backend!r} is not live for hf_penalty: {reason}")
    return lambda x: wavefuse.hf_penalty(
        x, wave=wave, level=level, mode=mode, p=2, reduction="sum", backend=backend
    )


def pytorch_wavelets_hf(run: Run, wave, mode, level, dtype) -> Penalty:
    t = pytorch_wavelets_dwt(run, wave, mode, level, dtype)
    return lambda x: sum(h.square().sum() for h in t(x)[1:])


def ptwt_hf(run: Run, wave, mode, level, dtype) -> Penalty:
    t = ptwt_dwt(run, wave, mode, level, dtype)
    return lambda x: sum(b.square().sum() for b in t(x)[1:])


HF_PEERS = {"pytorch_wavelets": pytorch_wavelets_hf, "ptwt": ptwt_hf}


def check_hf(penalty: Penalty, x: Tensor, wave, mode, level) -> str:
    import wavefuse

    x = x[:CHECK_N, :CHECK_C].contiguous()
    want = float(sum((b**2).sum() for b in _pywt_coeffs(x, wave, mode, level)[1:]))
    with torch.no_grad():
        got = float(penalty(x))
    tol = GRAD_TOL[x.dtype]
    if not abs(got - want) <= tol * abs(want):
        return f"value disagrees with pywt.wavedec2's energies ({got:.6g} vs {want:.6g})"
    xg = x.detach().requires_grad_()
    mine = torch.autograd.grad(penalty(xg), xg)[0]
    xd = x.detach().double().requires_grad_()
    ref = wavefuse.hf_penalty(xd, wave, level, mode, p=2, reduction="sum", backend="reference")
    oracle = torch.autograd.grad(ref, xd)[0]
    err = _rel_err([mine], [oracle])
    if not err <= tol:
        return (
            f"input gradient disagrees with the exact one (wavefuse reference, float64; max rel. "
            f"error {err:.2e}): timed anyway, not a like-for-like comparison"
        )
    return ""


def hf_step(penalty: Penalty, x: Tensor) -> tuple[Callable[[], object], int]:
    """Penalty + its input gradient; bytes: read x (forward), read x + write grad_x (backward)."""
    xg = x.detach().requires_grad_()
    return (lambda: torch.autograd.grad(penalty(xg), xg)), 3 * x.nbytes


# ----------------------------------------------------------------------------- pgd_step
# A step maps (x_adv, grad, x_nat, eps, alpha) to the new x_adv; wavefuse's updates x_adv in place.

Step = Callable[[Tensor, Tensor, Tensor, float, float], Tensor]


def wavefuse_step(backend: str, run: Run, norm: str) -> Step:
    import wavefuse
    from wavefuse import backends

    reason = backends.why_not(backend, "pgd_step", run.device.type)
    if reason is not None:
        raise Missing(f"wavefuse backend {backend!r} is not live for pgd_step: {reason}")

    def step(x_adv, grad, x_nat, eps, alpha):
        return wavefuse.pgd_step(x_adv, grad, x_nat, eps, alpha, norm, backend=backend)

    return step


def torchattacks_linf(adv_images, grad, images, eps, alpha):
    """torchattacks 3.5.1 PGD's update (the loop body after the gradient), eager torch ops."""
    adv_images = adv_images.detach() + alpha * grad.sign()
    delta = torch.clamp(adv_images - images, min=-eps, max=eps)
    return torch.clamp(images + delta, min=0, max=1).detach()


def torchattacks_l2(adv_images, grad, images, eps, alpha, eps_for_division=1e-10):
    """torchattacks 3.5.1 PGDL2's update (the loop body after the gradient), eager torch ops."""
    batch_size = len(images)
    grad_norms = torch.norm(grad.view(batch_size, -1), p=2, dim=1) + eps_for_division
    grad = grad / grad_norms.view(batch_size, 1, 1, 1)
    adv_images = adv_images.detach() + alpha * grad
    delta = adv_images - images
    delta_norms = torch.norm(delta.view(batch_size, -1), p=2, dim=1)
    factor = eps / delta_norms
    factor = torch.min(factor, torch.ones_like(delta_norms))
    delta = delta * factor.view(-1, 1, 1, 1)
    return torch.clamp(images + delta, min=0, max=1).detach()


def torchattacks_step(run: Run, norm: str) -> Step:
    return torchattacks_linf if norm == "Linf" else torchattacks_l2


@functools.cache
def step_inputs(shape, dtype, device: str, norm: str) -> tuple[Tensor, Tensor, Tensor]:
    """(x_adv, grad, x_nat): x_nat uniform in [0, 1], x_adv inside the ball, grad standard normal."""
    gen = torch.Generator(device=device).manual_seed(3)
    x_nat = torch.rand(shape, generator=gen, device=device)
    eps = STEP_PARAMS[norm][0]
    if norm == "Linf":
        noise = (torch.rand(shape, generator=gen, device=device) * 2 - 1) * eps
    else:
        noise = torch.randn(shape, generator=gen, device=device)
        noise *= eps * 0.5 / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x_adv = (x_nat + noise).clamp(0, 1)
    grad = torch.randn(shape, generator=gen, device=device)
    return tuple(t.to(dtype) for t in (x_adv, grad, x_nat))


def check_step(step: Step, shape, dtype, device: str, norm: str) -> str:
    x_adv, grad, x_nat = step_inputs(shape, dtype, device, norm)
    eps, alpha = STEP_PARAMS[norm]
    with torch.no_grad():
        got = step(x_adv.clone(), grad, x_nat, eps, alpha)
        want = torchattacks_step(None, norm)(x_adv.clone(), grad, x_nat, eps, alpha)
    diff = float((got.double() - want.double()).abs().max())
    if not diff <= STEP_TOL[dtype]:
        return (
            f"differs from torchattacks' update sequence by up to {diff:.3g} "
            f"(tolerance {STEP_TOL[dtype]:.3g})"
        )
    return ""


def pgd_timed(step: Step, shape, dtype, device: str, norm: str) -> tuple[Callable, int]:
    """The step on its own copy of x_adv (wavefuse's writes it in place); bytes: read x_adv,
    grad, x_nat, write x_adv (the L2 norms' second pass over the data is not counted)."""
    x_adv, grad, x_nat = step_inputs(shape, dtype, device, norm)
    x_adv = x_adv.clone()
    eps, alpha = STEP_PARAMS[norm]

    def fn():
        with torch.no_grad():
            return step(x_adv, grad, x_nat, eps, alpha)

    return fn, 4 * x_nat.nbytes


# ----------------------------------------------------------------------------- wavelet_pgd_step
# One step along g' = idwt(scale_hf(dwt(grad))), as bench_wavelet_pgd_step.py defines it (its op
# names, cases and hf_scale, so GPU and CPU rows line up): the norm is in the op name, the mode
# column is the wavelet's boundary mode. Inputs, eps/alpha and the timed call are pgd_step's.


def wavefuse_wavelet_step(backend: str, run: Run, wave, mode, level, norm, dtype) -> Step:
    import wavefuse
    from wavefuse import backends

    reason = backends.why_not(backend, "wavelet_pgd_step", run.device.type)
    if reason is not None:
        raise Missing(f"wavefuse backend {backend!r} is not live for wavelet_pgd_step: {reason}")

    def step(x_adv, grad, x_nat, eps, alpha):
        return wavefuse.wavelet_pgd_step(
            x_adv, grad, x_nat, eps, alpha, wave, level, mode, WPGD_HF_SCALE, norm, backend=backend
        )

    return step


def pytorch_wavelets_wavelet_step(run: Run, wave, mode, level, norm, dtype) -> Step:
    """pytorch_wavelets ``DWTForward``, the detail bands times hf_scale, ``DWTInverse`` cropped
    level by level as ``pywt.waverec2`` does (bench_wavelet_pgd_step.py's composition, modules
    cast to the input's dtype), then torchattacks' update."""
    pw = _import("pytorch_wavelets")
    dwt = pw.DWTForward(J=level, wave=wave, mode=mode).to(device=run.device, dtype=dtype)
    idwt = pw.DWTInverse(wave=wave, mode=mode).to(device=run.device, dtype=dtype)
    update = torchattacks_step(run, norm)

    def step(x_adv, grad, x_nat, eps, alpha):
        yl, yh = dwt(grad)
        a = yl
        for j in reversed(range(level)):  # coarsest first; crop to the detail bands' size
            band = yh[j] * WPGD_HF_SCALE
            a = idwt((a[..., : band.shape[-2], : band.shape[-1]], [band]))
        return update(x_adv, a[..., : grad.shape[-2], : grad.shape[-1]], x_nat, eps, alpha)

    return step


WPGD_PEERS = {"pytorch_wavelets": pytorch_wavelets_wavelet_step}


@functools.cache
def wavelet_step_oracle(
    shape, dtype, device: str, wave, mode, level, norm
) -> tuple[Tensor, Tensor]:
    """(the stepped x_adv, g') by wavefuse's reference in float64 on the (rounded) inputs."""
    import wavefuse
    from wavefuse import filters, reference

    x_adv, grad, x_nat = (t.double() for t in step_inputs(shape, dtype, device, norm))
    eps, alpha = STEP_PARAMS[norm]
    want = wavefuse.wavelet_pgd_step(
        x_adv.clone(),
        grad,
        x_nat,
        eps,
        alpha,
        wave,
        level,
        mode,
        WPGD_HF_SCALE,
        norm,
        backend="reference",
    )
    bank = filters.filter_bank(filters.wavelet_name(wave), "dec", torch.float64, device)
    g = reference.scale_details_ref(grad, bank, mode, level, [WPGD_HF_SCALE] * level)
    return want, g


def check_wavelet_step(step: Step, shape, dtype, device: str, wave, mode, level, norm) -> str:
    """A note when ``step`` differs from the float64 reference by more than WPGD_TOL anywhere
    but (Linf) at entries where g' is zero to rounding: there sign(g') is a rounding accident and
    the step may go the other way, up to 2 alpha apart."""
    x_adv, grad, x_nat = step_inputs(shape, dtype, device, norm)
    eps, alpha = STEP_PARAMS[norm]
    with torch.no_grad():
        got = step(x_adv.clone(), grad, x_nat, eps, alpha).double()
    want, g = wavelet_step_oracle(shape, dtype, device, wave, mode, level, norm)
    tol = WPGD_TOL[dtype]
    diff = (got - want).abs()
    off = ~(diff <= tol)  # a NaN is off
    if norm == "Linf":
        near_zero = g.abs() <= SIGN_TOL[dtype] * float(g.abs().max())
        off &= ~(near_zero & (diff <= 2 * alpha + tol))
    count = int(off.sum())
    if count:
        return (
            f"differs from the float64 reference by more than {tol:.3g} in {count} of "
            f"{diff.numel()} elements (up to {float(diff[off].max()):.3g})"
        )
    return ""


# ----------------------------------------------------------------------------- the runner


def _measure(run: Run, m: _results.Measurement, build: Callable[[], tuple[Callable, int]]) -> None:
    """Build the case's timed callable, time it and the copy floor, and record ``m``."""
    fn, nbytes = build()
    fn()  # the first call compiles Triton kernels, loads cuDNN, allocates
    _gpu.synchronize(run.device)
    m.quantiles_ms = run.timer(fn)
    m.nbytes = nbytes
    m.copy_ms = run.timer.copy_ms(nbytes)
    if run.device.type == "cuda" and not m.is_baseline:
        # wavefuse's backends: the device time alone, against which the copy floor is the goal
        # (at these sizes the eager time is mostly the host's); a capture failure is a note
        try:
            m.graph_ms = run.timer.graph_ms(fn)
        except Exception as e:  # noqa: BLE001 -- recorded in the notes, the run goes on
            m.note = (m.note + "; " if m.note else "") + f"no CUDA graph: {_first_line(e)}"
            torch.cuda.synchronize(run.device)


@dataclass(frozen=True)
class Case:
    """One row's key: op, input shape and dtype, wavelet, mode (pgd_step: the norm), level."""

    op: str
    shape: tuple
    dtype: torch.dtype
    wave: str = ""
    mode: str = ""
    level: int | str = ""

    def measurement(self, impl: str, is_baseline: bool, device) -> _results.Measurement:
        return _results.Measurement(
            op=self.op,
            backend=impl,
            shape=self.shape,
            dtype=_dtype_name(self.dtype),
            wave=self.wave,
            mode=self.mode,
            level=self.level,
            times_s=None,
            nbytes=0,
            is_baseline=is_baseline,
            device=str(device),
        )


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def run_case(run: Run, case: Case, impl: str, is_peer: bool, build, check, timed) -> None:
    """One implementation on one case: ``obj = build()``, ``note = check(obj)``, time
    ``timed(obj) -> (callable, bytes)``. Every failure is recorded, never raised: an unattended
    run goes on with the next case (hence the blind excepts)."""
    m = case.measurement(impl, is_peer, run.device)
    case_id = f"{m.op} {_shape_id(m.shape)} {m.dtype} {m.wave} {m.mode} J{m.level} {impl}"
    if not run.wanted(case_id):
        return
    if run.out_of_time():
        raise _gpu.Interrupted("--budget-s reached")
    try:
        obj = build()
    except Missing:
        if m.is_baseline:  # an empty row, so the speedup column says "not measured"
            run.measurements.append(m)
        return
    except Unsupported as e:
        m.note = str(e)
        run.measurements.append(m)
        return
    except Exception as e:  # noqa: BLE001 -- a peer that cannot be built for this case
        m.note = f"could not be built: {_first_line(e)}"
        run.measurements.append(m)
        return
    try:
        m.note = check(obj)
    except Exception as e:  # noqa: BLE001 -- a peer that fails on this case (bfloat16, say)
        m.note = f"check failed: {_first_line(e)}"
        if m.is_baseline:  # no timing for it
            run.measurements.append(m)
            return
    try:
        _measure(run, m, functools.partial(timed, obj))
    except _gpu.Interrupted:
        raise
    except Exception as e:  # noqa: BLE001 -- recorded in the notes, the run goes on
        m.quantiles_ms = None
        m.note = (m.note + "; " if m.note else "") + f"timing failed: {_first_line(e)}"
        traceback.print_exc()
    run.measurements.append(m)
    ms = m.ms()
    print(f"{case_id:78s} {ms[0] if ms else float('nan'):10.4f} ms  {m.note[:60]}", flush=True)
    if run.device.type == "cuda":
        torch.cuda.empty_cache()


def _note_missing(run: Run, impls: dict, *probe_args) -> None:
    """One notes line per implementation that is not installed or not live."""
    for name, (build, _) in impls.items():
        try:
            build(run, *probe_args)
        except Missing as e:
            line = f"`{name}` not measured: {e}"
            if line not in run.extra:
                run.extra.append(line)
        except Exception as e:  # noqa: BLE001 -- case-specific failures are noted per case
            print(f"probe of {name}: {_first_line(e)}")


def _impls(peers: dict, subject, run: Run) -> dict:
    """name -> (builder, is_peer): the peers, then every wavefuse backend to try."""
    out = {name: (build, True) for name, build in peers.items()}
    out.update({b: (functools.partial(subject, b), False) for b in run.backends})
    return out


def run_dwt(run: Run, shapes) -> None:
    impls = _impls(DWT_PEERS, wavefuse_dwt, run)
    _note_missing(run, impls, "haar", "periodization", 1, torch.float32)
    for op, shape, dtype in itertools.product(DWT_OPS, shapes, DTYPES):
        x = bench_input(tuple(shape), dtype, str(run.device))
        for wave, mode, level in itertools.product(WAVES, DWT_MODES, LEVELS):
            case = Case(op, tuple(shape), dtype, wave, mode, level)
            for name, (build, is_peer) in impls.items():
                run_case(
                    run,
                    case,
                    name,
                    is_peer,
                    functools.partial(build, run, wave, mode, level, dtype),
                    functools.partial(
                        check_dwt, x=x, wave=wave, mode=mode, level=level, grad=op != "dwt2d_fwd"
                    ),
                    functools.partial(dwt_step, op, x=x),
                )


def run_hf(run: Run, shapes) -> None:
    impls = _impls(HF_PEERS, wavefuse_hf, run)
    _note_missing(run, impls, "haar", "periodization", 1, torch.float32)
    for shape, dtype in itertools.product(shapes, DTYPES):
        x = bench_input(tuple(shape), dtype, str(run.device))
        for wave, mode, level in itertools.product(WAVES, HF_MODES, LEVELS):
            case = Case(HF_OP, tuple(shape), dtype, wave, mode, level)
            for name, (build, is_peer) in impls.items():
                run_case(
                    run,
                    case,
                    name,
                    is_peer,
                    functools.partial(build, run, wave, mode, level, dtype),
                    functools.partial(check_hf, x=x, wave=wave, mode=mode, level=level),
                    functools.partial(hf_step, x=x),
                )


def run_pgd(run: Run, shapes) -> None:
    impls = _impls({"torchattacks": torchattacks_step}, wavefuse_step, run)
    _note_missing(run, impls, "Linf")
    dev = str(run.device)
    for shape, dtype, norm in itertools.product(shapes, DTYPES, NORMS):
        case = Case(PGD_OP, tuple(shape), dtype, mode=norm)
        for name, (build, is_peer) in impls.items():
            run_case(
                run,
                case,
                name,
                is_peer,
                functools.partial(build, run, norm),
                functools.partial(
                    check_step, shape=tuple(shape), dtype=dtype, device=dev, norm=norm
                ),
                functools.partial(
                    pgd_timed, shape=tuple(shape), dtype=dtype, device=dev, norm=norm
                ),
            )
        step_inputs.cache_clear()  # (512, 3, 224, 224): 3 x 308 MB per dtype
    if run.device.type == "cuda":
        torch.cuda.empty_cache()


def run_wavelet_pgd(run: Run, shapes) -> None:
    impls = _impls(WPGD_PEERS, wavefuse_wavelet_step, run)
    _note_missing(run, impls, "haar", "periodization", 1, "Linf", torch.float32)
    dev = str(run.device)
    for shape, dtype, norm in itertools.product(shapes, DTYPES, NORMS):
        shape = tuple(shape)
        for wave, mode, level in WPGD_CASES:
            case = Case(WPGD_OPS[norm], shape, dtype, wave, mode, level)
            for name, (build, is_peer) in impls.items():
                run_case(
                    run,
                    case,
                    name,
                    is_peer,
                    functools.partial(build, run, wave, mode, level, norm, dtype),
                    functools.partial(
                        check_wavelet_step,
                        shape=shape,
                        dtype=dtype,
                        device=dev,
                        wave=wave,
                        mode=mode,
                        level=level,
                        norm=norm,
                    ),
                    functools.partial(pgd_timed, shape=shape, dtype=dtype, device=dev, norm=norm),
                )
        step_inputs.cache_clear()
        wavelet_step_oracle.cache_clear()
    if run.device.type == "cuda":
        torch.cuda.empty_cache()


RUNNERS = {
    "dwt": (run_dwt, "dwt"),
    "hf_penalty": (run_hf, "dwt"),
    "pgd_step": (run_pgd, "pgd_step"),
    "wavelet_pgd_step": (run_wavelet_pgd, "wavelet_pgd_step"),
}
FAMILY_OPS = {
    "dwt": set(DWT_OPS),
    "hf_penalty": {HF_OP},
    "pgd_step": {PGD_OP},
    "wavelet_pgd_step": set(WPGD_OPS.values()),
}


# ----------------------------------------------------------------------------- output


def summary(measurements) -> list[str]:
    """Per op and backend: geometric-mean speedup over each baseline, median % of copy."""
    rows = _results.build_rows(measurements, {"device": "", "torch": "", "triton": "", "date": ""})
    acc: dict[tuple, list] = {}
    for r in rows:
        key = (r["op"], r["backend"], r["baseline"])
        acc.setdefault(key, ([], [], []))
        if r["speedup"]:
            acc[key][0].append(float(r["speedup"]))
        if r["pct_copy"]:
            acc[key][1].append(float(r["pct_copy"]))
        if r.get("pct_copy_graph"):
            acc[key][2].append(float(r["pct_copy_graph"]))
    head = f"{'op':21s} {'backend':17s} {'vs':17s} {'cases':>5s} {'geomean x':>9s} {'%copy':>6s}"
    lines = [head + " %copy(graph)"]
    for (op, backend, base), (sp, pct, pg) in sorted(acc.items()):
        g = f"{float(np.exp(np.mean(np.log(sp)))):9.2f}" if sp else f"{'-':>9s}"
        p = f"{float(np.median(pct)):6.1f}" if pct else f"{'-':>6s}"
        q = f"{float(np.median(pg)):12.1f}" if pg else f"{'-':>12s}"
        lines.append(
            f"{op:21s} {backend:17s} {base or '(own)':17s} {len(sp) or len(pct):5d} {g} {p} {q}"
        )
    return lines


def write(run: Run, families, path: Path, started: float, partial: str) -> None:
    """Write the CSV rows and the notes of each family run. A run stopped early (``partial``) or
    one that ran a subset of cases (``-k``) replaces the rows of the cases it ran and keeps the
    others, as the CPU benchmarks' -k does."""
    if not run.measurements:
        print(f"no measurements: {path} left unchanged")
        return
    env = _results.environment(str(run.device))
    if run.select and not partial:
        partial = f"A subset (-k {run.select!r}): the other cases keep their rows."
    _results.write_csv(path, _results.build_rows(run.measurements, env), partial=bool(partial))
    minutes = (time.monotonic() - started) / 60
    about = f"Run took {minutes:.1f} min (bench_gpu.py). {partial}".strip()
    for fam in families:
        ms = [m for m in run.measurements if m.op in FAMILY_OPS[fam]]
        if not ms:
            continue
        notes = path.with_name(f"{path.stem}-{fam}-notes.md")
        title = f"Notes on {path.name} ({', '.join(sorted({m.op for m in ms}))})"
        _results.write_notes(notes, title, ms, env, about, extra=run.extra, partial=bool(partial))
        print(f"wrote {notes}")
    print(f"wrote {path} ({env['device']}, {len(run.measurements)} measurements)")
    print("\n".join(summary(run.measurements)))


def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default=",".join(FAMILIES),
        help="comma list of " + ", ".join(FAMILIES) + " (default: all)",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes: test the logic, not speed")
    p.add_argument("--out", type=Path, help="CSV path (default results/gpu-<device-slug>.csv)")
    p.add_argument("--warmup-ms", type=float, default=10.0, help="do_bench warmup (ms)")
    p.add_argument("--rep-ms", type=float, default=40.0, help="do_bench rep (ms)")
    p.add_argument("--budget-s", type=float, default=float("inf"), help="stop starting new cases")
    p.add_argument("-k", dest="select", default="", help="substring of the case id to run")
    p.add_argument("--no-tf32", action="store_true", help="turn cuDNN's TF32 convolutions off")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device: nothing to benchmark here (bench_gpu.py runs on a GPU machine; "
            "`--device cpu --smoke` runs its logic on tiny CPU inputs)"
        )
        return 0
    if device.type != "cuda" and not args.smoke:
        print("error: on CPU only --smoke runs (bench_dwt.py and friends are the CPU benchmarks)")
        return 2
    families = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        print(f"error: unknown families {unknown}; allowed: {', '.join(FAMILIES)}")
        return 2
    warnings.filterwarnings("ignore", "Level value")  # pywt and wavefuse: J above the max level
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # logic only: one thread does not wait for busy cores
    if device.type == "cuda":
        torch.cuda.set_device(torch.device(device).index or 0)  # torch 2.11 wants an index
        if args.no_tf32:
            torch.backends.cudnn.allow_tf32 = False
    path = args.out or (
        Path(tempfile.gettempdir()) / "wavefuse-bench-smoke" / "cpu-smoke.csv"
        if args.smoke and device.type != "cuda"
        else _gpu.csv_path(str(device))
    )
    backends = ("reference", "cuda", "triton") if device.type == "cuda" else ("reference", "cpu")
    timer = _gpu.Timer(str(device), *((1.0, 3.0) if args.smoke else (args.warmup_ms, args.rep_ms)))
    run = Run(
        device, timer, args.smoke, args.select, time.monotonic() + args.budget_s, [], [], backends
    )
    if device.type == "cuda":
        run.extra.append(
            f"cuDNN TF32 convolutions (the conv-based peers): "
            f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}; do_bench warmup "
            f"{timer.warmup_ms} ms, rep {timer.rep_ms} ms"
        )
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    _gpu.on_sigterm()
    started, partial = time.monotonic(), ""
    print(f"torch {torch.__version__}, {_results.device_string(str(device))}, families {families}")
    try:
        for fam in families:
            runner, shape_key = RUNNERS[fam]
            runner(run, shapes[shape_key])
    except (_gpu.Interrupted, KeyboardInterrupt) as e:
        partial = f"PARTIAL run, stopped early ({e or type(e).__name__}): rows are missing."
        print(partial)
    write(run, families, path, started, partial)
    return 1 if partial else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
