"""The Triton backend (wavefuse.kernels) on CUDA tensors, against independent oracles.

Marked ``gpu``: the rest of the suite runs backend="triton" on CPU tensors under Triton's
interpreter (tests/test_triton*.py), so this file is the only place where the compiled kernels run
on a GPU: the four transform ops, wavedec2/waverec2 (with the one-pass Haar kernels), autograd and
opcheck, band_energy/hf_penalty, pgd_step and wavelet_pgd_step (fused Haar, separable and
approximation-chain paths). Every test skips with a reason, at run time (nothing touches the GPU
at collection), where no CUDA device is visible or ``backends.why_not("triton", op, device)``
names a reason for one of the ops it uses.

The device is ``WAVEFUSE_TRITON_TEST_DEVICE`` (default "cuda"). Its logic can be checked on a CPU,
through the interpreter, with

    TRITON_INTERPRET=1 WAVEFUSE_TRITON_TEST_DEVICE=cpu python -m pytest tests/test_triton_gpu.py -m gpu

(about 75 s on 2 cores; a CPU-only machine sets TRITON_INTERPRET=1 itself, tests/conftest.py).

Time on a GPU is compile time: the shapes are tiny (each launch takes microseconds), but the tests
compile about 300 kernel variants (each mode, filter length, dtype, tile size and stage is one),
which took 250 s to compile for sm_90 offline on a loaded 2-core EPYC (triton 3.8): 0.1-1 s each,
db20's dense transforms 5 s each (14 of them, float32; float64 would be 2-3x longer). Expect a
couple of minutes in one process on a cold Triton cache, a fraction with pytest-xdist (-n 8,
bench/gpu_check.sh) and seconds on a warm cache (~/.triton/cache). Hence one dtype per case
where the kernels' code does not depend on it, and float64 chiefly against PyWavelets.

Oracles: the reference backend in float64 on the CPU (the same (rounded) inputs, copied off the
device) and PyWavelets; never stored numbers. Tolerances (conftest.TOL, relative to max |expected|):

* Transforms and energies: TOL[dtype]. float64 accumulates in float64 (1e-10: the pywt contract;
  a GPU's fused multiply-adds and the tile order move the last few bits only). float32 and the half
  types accumulate in float32 and round once at the store. The small-plane ("dense") paths multiply
  by tl.dot with input_precision="ieee" (kernels/dwt.py, kernels/pgd_step.py): TF32 products would
  err by ~1e-3 relative, so TOL[float32] = 1e-5 fails on TF32 by design. The half types are
  compared against the float64 transform of the rounded input: a half-ulp rounding of the output
  plus the float32 accumulation, within TOL (float16 1e-3, bfloat16 8e-3: one ulp of the format).
* pgd_step: Linf bit for bit in every dtype (alpha * sign(g) is exact, every other op is one
  correctly rounded float32 / float64 operation, and the half types are rounded once, to nearest
  even, as the reference does); L2 1e-12 (float64) / 1e-6 (float32: the norms' summation order
  and the compiler's fused multiply-adds differ from torch's, documented in kernels/pgd_step.py) /
  TOL for bfloat16 (one ulp of the output).
* wavelet_pgd_step: L2 as pgd_step. Linf steps by sign(g'), and g' (a transform round trip in
  float32 or float64, or dense matrix products) differs from the reference's by rounding, which
  may flip the sign of its tiny entries: at most 2 elements may differ beyond the half types'
  rounding, by at most 2 alpha (tests/test_cuda_pgd_step.py ``_assert_wavelet``).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest
import pywt
import torch
from conftest import (
    ALL_MODES,
    TOL,
    assert_close,
    assert_step_close,
    assert_wavelet_step,
    count_launches,
    reflect_too_deep,
)

import wavefuse
from wavefuse import backends, ops
from wavefuse.filters import filter_bank

DEVICE = os.environ.get("WAVEFUSE_TRITON_TEST_DEVICE", "cuda")
TRANSFORMS = backends.TRANSFORM_OPS
PENALTY = ("band_energy", "hf_penalty")
STEPS = ("pgd_step",)
WAVELET_STEPS = ("wavelet_pgd_step", *TRANSFORMS)

pytestmark = pytest.mark.gpu


def _uses(*op_names: str):
    """The ops a test runs on backend="triton" (the autouse fixture checks them; default: the
    four transforms)."""

    def mark(fn):
        fn.triton_ops = op_names
        return fn

    return mark


@pytest.fixture(autouse=True)
def _triton_live(request):
    if torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available():
        pytest.skip(
            "needs CUDA (or, for the logic only: TRITON_INTERPRET=1 WAVEFUSE_TRITON_TEST_DEVICE=cpu)"
        )
    for op in getattr(request.function, "triton_ops", TRANSFORMS):
        reason = backends.why_not("triton", op, torch.device(DEVICE).type)
        if reason is not None:
            pytest.skip(f"backend='triton' cannot run {op} on {DEVICE} tensors: {reason}")


# ---- helpers -------------------------------------------------------------------------------------


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t in the layout: "contiguous", or "channels_last" (4-D: NHWC; a 5-D band tensor (N, C, 3,
    h, w): band-major with C innermost, as the kernels allocate it)."""
    if layout == "contiguous":
        return t.contiguous()
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t.permute(2, 0, 3, 4, 1).contiguous().permute(1, 4, 0, 2, 3)


def _randn(*shape, dtype=torch.float64, layout="contiguous") -> torch.Tensor:
    """Standard normal values drawn on the CPU (the same on every device), on DEVICE."""
    t = torch.randn(*shape, dtype=torch.float64).to(dtype)
    return _layout(t, layout).to(DEVICE)


def _randn_like(t: torch.Tensor) -> torch.Tensor:
    """Standard normal values drawn on the CPU, in t's dtype, device and memory format."""
    return torch.empty_like(t).copy_(torch.randn(t.shape, dtype=torch.float64))


def _cpu64(t: torch.Tensor) -> torch.Tensor:
    """The oracle's copy: the same (rounded) values in float64 on the CPU."""
    return t.detach().cpu().double()


def _quiet(fn, *args, **kwargs):
    """Levels above pywt's dwt_max_level are used on purpose; they warn, as PyWavelets does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _check_transforms(x: torch.Tensor, wave: str, mode: str) -> None:
    """The four ops on backend="triton" on DEVICE against the float64 reference on the CPU from
    the same (rounded) inputs. Outputs: x's dtype and device, the memory format the reference
    gives the same input; cotangents in x's layout (a channels_last 5-D band tensor for hi)."""
    dtype = x.dtype
    tol = TOL[dtype]
    layout = "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "contiguous"
    if x.is_contiguous():
        layout = "contiguous"  # a 1 x 1 plane is both: treat it as contiguous
    dec, rec = filter_bank(wave, "dec", dtype, DEVICE), filter_bank(wave, "rec", dtype, DEVICE)
    dec64, rec64 = (filter_bank(wave, kind, torch.float64, "cpu") for kind in ("dec", "rec"))
    h, w = x.shape[-2:]
    what = f"{wave} {mode} {tuple(x.shape)} {dtype} {layout}"

    ll, hi = ops.dwt2d(x, dec, mode, "triton")
    ll_r, hi_r = ops.dwt2d(_cpu64(x), dec64, mode, "reference")
    assert ll.dtype == hi.dtype == dtype and ll.device == hi.device == x.device, what
    ll_l, hi_l = ops.dwt2d(x.cpu(), dec.cpu(), mode, "reference")  # the layout rule's strides
    assert ll.stride() == ll_l.stride() and hi.stride() == hi_l.stride(), f"{what} layout"
    assert_close(ll, ll_r, tol, f"dwt2d ll {what}")
    assert_close(hi, hi_r, tol, f"dwt2d hi {what}")

    gl = _randn(*ll.shape, dtype=dtype, layout=layout)
    gh = _randn(*hi.shape, dtype=dtype, layout=layout)
    gx = ops.dwt2d_adjoint(gl, gh, dec, mode, [h, w], "triton")
    assert gx.dtype == dtype and gx.shape == x.shape and gx.device == x.device, what
    gx_r = ops.dwt2d_adjoint(_cpu64(gl), _cpu64(gh), dec64, mode, [h, w], "reference")
    assert_close(gx, gx_r, tol, f"dwt2d_adjoint {what}")

    y = ops.idwt2d(gl, gh, rec, mode, "triton")
    assert y.dtype == dtype and y.device == x.device, what
    y_r = ops.idwt2d(_cpu64(gl), _cpu64(gh), rec64, mode, "reference")
    assert_close(y, y_r, tol, f"idwt2d {what}")

    gy = _randn(*y.shape, dtype=dtype, layout=layout)
    a, b = ops.idwt2d_adjoint(gy, rec, mode, "triton")
    assert a.dtype == b.dtype == dtype and a.device == x.device, what
    a_r, b_r = ops.idwt2d_adjoint(_cpu64(gy), rec64, mode, "reference")
    assert_close(a, a_r, tol, f"idwt2d_adjoint ll {what}")
    assert_close(b, b_r, tol, f"idwt2d_adjoint hi {what}")


# ---- the four transform ops ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym5"])
def test_transforms_every_mode_and_wavelet(wave, mode):
    """13 x 8 (odd x even; db4's 8 taps are as long as W, sym5's 10 longer), float32: the dense
    path's tl.dot products must be ieee (TF32 would miss TOL[float32]). float64 in every mode is
    checked against PyWavelets below; other dtypes and layouts on the same path further down."""
    _check_transforms(_randn(2, 3, 13, 8, dtype=torch.float32), wave, mode)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_transforms_on_signals_shorter_than_the_filter(mode):
    """db20 (40 taps) on a 3 x 5 plane and db4 on a 1 x 1 one (reflect needs 2 samples per axis,
    as PyWavelets: 2 x 2 there): the boundary extension wraps many times. float32 only: db20's
    dense kernels take 5-15 s each to compile for sm_90 (float64 the longer), 14 variants."""
    _check_transforms(_randn(1, 2, 3, 5, dtype=torch.float32), "db20", mode)
    one = (2, 2) if mode == "reflect" else (1, 1)
    _check_transforms(_randn(2, 3, *one, dtype=torch.float32), "db4", mode)


@pytest.mark.parametrize(
    "wave, mode, size, dtype, layout",
    [
        ("haar", "symmetric", (21, 150), torch.float32, "contiguous"),
        ("db4", "reflect", (40, 150), torch.float64, "channels_last"),
        ("db2", "periodic", (150, 37), torch.bfloat16, "channels_last"),
    ],
    ids=["haar-symmetric", "db4-reflect", "db2-periodic"],
)
def test_transforms_on_planes_of_several_tiles(wave, mode, size, dtype, layout):
    """Planes longer than 64 on one axis take the general (tiled gather) paths with the untouched
    block-size rule: analysis 3-6 tiles per plane, its adjoint and synthesis (coefficients > 64
    per axis) 5-15, interior and boundary tiles, partial tiles at both ends."""
    _check_transforms(_randn(1, 2, *size, dtype=dtype, layout=layout), wave, mode)


@pytest.mark.parametrize(
    "dtype, layout",
    [
        (torch.float64, "channels_last"),
        (torch.float32, "channels_last"),
        (torch.bfloat16, "contiguous"),
        (torch.bfloat16, "channels_last"),
        (torch.float16, "contiguous"),
    ],
    ids=str,
)
def test_transforms_dtypes_and_layouts(dtype, layout):
    """sym5 on 13 x 10 (odd x even, the dense path) in every dtype and layout (float64 and float32
    contiguous: the tests above). Half types load as such, accumulate in float32 and round once
    at the store."""
    _check_transforms(_randn(2, 3, 13, 10, dtype=dtype, layout=layout), "sym5", "symmetric")


# ---- multilevel: wavedec2 / waverec2, the one-pass Haar kernels --------------------------------------


@pytest.mark.parametrize(
    "wave, mode, level, size",
    [
        ("db2", "symmetric", None, (23, 18)),
        ("db4", "periodic", 2, (11, 9)),  # above dwt_max_level (warns, as pywt)
        ("sym5", "zero", 2, (20, 15)),
        ("db2", "reflect", 3, (19, 24)),
        ("db4", "periodization", 2, (70, 33)),  # level 1 on the general path
    ],
)
def test_wavedec2_waverec2_match_pywt(wave, mode, level, size):
    x = _randn(2, 2, *size)
    ours = _quiet(wavefuse.wavedec2, x, wave, mode, level, backend="triton")
    theirs = _quiet(pywt.wavedec2, x.cpu().numpy(), wave, mode, level)
    assert len(ours) == len(theirs) >= 2
    assert ours[0].device == x.device
    assert_close(ours[0], theirs[0], TOL[torch.float64], "cA")
    for j, (d, dp) in enumerate(zip(ours[1:], theirs[1:], strict=True)):
        for name, a, b in zip("HVD", d, dp, strict=True):
            assert_close(a, b, TOL[torch.float64], f"level {len(ours) - 1 - j} c{name}")
    rec = wavefuse.waverec2(ours, wave, mode, backend="triton")
    assert_close(rec, pywt.waverec2(theirs, wave, mode), TOL[torch.float64], "waverec2")
    if mode == "periodization" or all(s % 2 == 0 for s in size):
        assert_close(rec[..., : size[0], : size[1]], x, TOL[torch.float64], "reconstruction")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_wavedec2_levels_1_to_3(mode):
    """haar, levels 1 (one level: kernels/dwt.py), 2 and 3 (the one-pass kernels/haar.py) on an
    odd x even plane wider than 64 (several tiles), float64 against PyWavelets; float32
    channels_last against the reference; the gradient (the one-pass adjoint) against the
    reference's with fixed cotangents."""
    x = _randn(1, 2, 37, 70)
    for level in (1, 2, 3):
        what = f"{mode} level {level}"
        ours = wavefuse.wavedec2(x, "haar", mode, level, backend="triton")
        theirs = pywt.wavedec2(x.cpu().numpy(), "haar", mode, level)
        assert len(ours) == level + 1
        assert_close(ours[0], theirs[0], TOL[torch.float64], f"cA {what}")
        for d, dp in zip(ours[1:], theirs[1:], strict=True):
            for a, b in zip(d, dp, strict=True):
                assert_close(a, b, TOL[torch.float64], f"details {what}")
    x = _randn(2, 3, 37, 70, dtype=torch.float32, layout="channels_last").requires_grad_()
    ours = wavefuse.wavedec2(x, "haar", mode, 3, backend="triton")
    xr = _cpu64(x).requires_grad_()
    ref = wavefuse.wavedec2(xr, "haar", mode, 3, backend="reference")
    flat = [ours[0]] + [b for d in ours[1:] for b in d]
    flat_ref = [ref[0]] + [b for d in ref[1:] for b in d]
    assert flat[0].is_contiguous(memory_format=torch.channels_last)
    for k, (got, exp) in enumerate(zip(flat, flat_ref, strict=True)):
        assert got.dtype == torch.float32
        assert_close(got, exp, TOL[torch.float32], f"float32 {mode} output {k}")
    cot = [_randn_like(t) for t in flat]  # in the outputs' layout: the gradient follows it
    (g,) = torch.autograd.grad(flat, x, cot)
    (g_ref,) = torch.autograd.grad(flat_ref, xr, [_cpu64(c) for c in cot])
    assert g.dtype == torch.float32 and g.stride() == x.stride()
    assert_close(g, g_ref, TOL[torch.float32], f"float32 {mode} gradient")


# ---- autograd and opcheck ------------------------------------------------------------------------


@pytest.mark.parametrize("wave, mode", [("db2", "symmetric"), ("haar", "reflect")])
def test_gradcheck_through_wavedec2_and_waverec2(wave, mode):
    """float64 gradcheck of wavedec2 -> waverec2 (two levels; haar: the one-pass kernels and
    reflect's folds in their adjoint) with every op on Triton (fast mode: random projections of
    the Jacobian)."""
    x = _randn(1, 2, 9, 8).requires_grad_()

    def f(t):
        coeffs = _quiet(wavefuse.wavedec2, t, wave, mode, 2, backend="triton")
        flat = [coeffs[0]] + [b for d in coeffs[1:] for b in d]
        return (*flat, wavefuse.waverec2(coeffs, wave, mode, backend="triton"))

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_dwt2d(requires_grad):
    x = _randn(2, 3, 9, 6, layout="channels_last").requires_grad_(requires_grad)
    dec = filter_bank("db2", "dec", x.dtype, DEVICE)
    torch.library.opcheck(torch.ops.wavefuse.dwt2d.default, (x, dec, "symmetric", "triton"))


# ---- band_energy and hf_penalty ------------------------------------------------------------------

PENALTY_CASES = [
    ("haar", "periodization", 3, (9, 8)),
    ("sym5", "symmetric", 3, (5, 7)),  # odd sizes that grow at every level (5 -> 7 -> 8 -> 8)
    ("db2", "reflect", 2, (70, 20)),  # a plane longer than 64: the general path, several tiles
]


def _check_penalty(x, wave, mode, level, p):
    """Energies and hf_penalty (per sample, random per-band weights) on Triton against the float64
    reference on the CPU, then the input gradient for a random cotangent."""
    dtype = x.dtype
    tol = TOL[dtype]
    what = f"{wave} {mode} level {level} p={p} {tuple(x.shape)} {dtype}"
    energies = _quiet(wavefuse.band_energy, x, wave, level, mode, p, backend="triton")
    expected = _quiet(wavefuse.band_energy, _cpu64(x), wave, level, mode, p, backend="reference")
    assert energies.shape == (x.shape[0], level, 3) and energies.device == x.device, what
    assert energies.dtype == (torch.float64 if dtype == torch.float64 else torch.float32), what
    assert_close(energies, expected, tol, f"energies {what}")
    w = torch.rand(level, 3, dtype=torch.float64)  # weights live on x's device
    xs, xr = x.detach().clone().requires_grad_(), _cpu64(x).requires_grad_()
    got = _quiet(wavefuse.hf_penalty, xs, wave, level, mode, p, w.to(DEVICE), "none",
                 backend="triton")  # fmt: skip
    ref = _quiet(wavefuse.hf_penalty, xr, wave, level, mode, p, w, "none", backend="reference")
    assert_close(got, ref, tol, f"penalty {what}")
    cot = torch.rand(x.shape[0], dtype=torch.float64)
    (g,) = torch.autograd.grad(got, xs, cot.to(got.dtype).to(DEVICE))
    (g_ref,) = torch.autograd.grad(ref, xr, cot)
    assert g.dtype == dtype and g.stride() == x.stride(), what
    assert_close(g, g_ref, tol, f"gradient {what}")


def _penalty_route(monkeypatch, route: str) -> None:
    """ "levels": one launch per level; "cascade": every level of a plane in one program
    (separable.cascade_fits, forced here: 4 planes do not fill a GPU)."""
    from wavefuse.ops import separable

    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0 if route == "cascade" else 2**40)


@_uses(*PENALTY)
@pytest.mark.parametrize("route", ["levels", "cascade"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("wave, mode, level, size", PENALTY_CASES)
def test_band_energy_and_hf_penalty(wave, mode, level, size, p, route, monkeypatch):
    _penalty_route(monkeypatch, route)
    _check_penalty(_randn(2, 2, *size), wave, mode, level, p)


@_uses(*PENALTY)
def test_band_energy_cascade_many_planes_repeatable(monkeypatch):
    """The cascade as separable.cascade_fits picks it by itself: 3 planes per SM, db4 J=3 on
    32 x 32 (bench_gpu's small case per plane), float32. One ``_band_cascade_kernel`` and one
    ``_band_backward_cascade_kernel`` launch per call; energies and gradient match the reference;
    three calls agree bit for bit (a race between a program's tiles might show as a difference;
    test_triton_fused's interpreter barrier check is the sure test of a dropped barrier); the
    level route gives the reference's values too."""
    from wavefuse.kernels import hf_penalty

    from wavefuse.ops import separable

    planes = 3 * separable.sm_count(torch.device(DEVICE))
    names = ("_band_cascade_kernel", "_band_backward_cascade_kernel", "_band_level_kernel")
    counts = count_launches(monkeypatch, hf_penalty, *names)
    x = _randn(planes // 3, 3, 32, 32, dtype=torch.float32)
    expected = _quiet(wavefuse.band_energy, _cpu64(x), "db4", 3, "symmetric", 2,
                      backend="reference")  # fmt: skip
    xr = _cpu64(x).requires_grad_()
    w = torch.rand(3, 3, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad(
        wavefuse.hf_penalty(xr, "db4", 3, "symmetric", 2, w, "sum", backend="reference"), xr
    )

    def run():
        xs = x.detach().clone().requires_grad_()
        e = _quiet(wavefuse.band_energy, xs, "db4", 3, "symmetric", 2, backend="triton")
        pen = _quiet(wavefuse.hf_penalty, xs, "db4", 3, "symmetric", 2, w.to(DEVICE), "sum",
                     backend="triton")  # fmt: skip
        (g,) = torch.autograd.grad(pen, xs)
        return e.detach(), g

    results = [run() for _ in range(3)]
    assert counts["_band_cascade_kernel"].launches == 6, "two forwards per call"
    assert counts["_band_backward_cascade_kernel"].launches == 3
    assert counts["_band_level_kernel"].launches == 0
    assert_close(results[0][0], expected, TOL[torch.float32], f"cascade energies {planes} planes")
    assert_close(results[0][1], g_ref, TOL[torch.float32], f"cascade gradient {planes} planes")
    for e, g in results[1:]:
        assert torch.equal(e, results[0][0]) and torch.equal(g, results[0][1]), "cascades differ"
    _penalty_route(monkeypatch, "levels")
    e, g = run()
    assert counts["_band_level_kernel"].launches == 2 * 3 + 3
    assert_close(e, expected, TOL[torch.float32], f"levels energies {planes} planes")
    assert_close(g, g_ref, TOL[torch.float32], f"levels gradient {planes} planes")


@_uses(*PENALTY)
@pytest.mark.parametrize(
    "dtype, layout, mode, p",
    [(torch.float32, "channels_last", "zero", 1), (torch.bfloat16, "contiguous", "periodic", 2)],
    ids=["float32-channels_last-zero-p1", "bfloat16-contiguous-periodic-p2"],
)
def test_band_energy_and_hf_penalty_dtypes_and_layouts(dtype, layout, mode, p):
    """Energies in float32 for both (accumulated in float32); the gradient in x's dtype and
    memory format. With the cases above, every mode."""
    _check_penalty(_randn(2, 3, 9, 8, dtype=dtype, layout=layout), "db4", mode, 2, p)


# ---- pgd_step --------------------------------------------------------------------------------------


def _step_inputs(shape, dtype=torch.float32, spread=0.1, layout="contiguous"):
    """x in [0, 1], x_adv near it (some pixels at the bounds), a gradient with a zero entry; all
    drawn on the CPU in float64, then rounded and moved to DEVICE."""
    x = torch.rand(*shape, dtype=torch.float64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    g.view(-1)[0] = 0.0
    return tuple(_layout(t.to(dtype), layout).to(DEVICE) for t in (x_adv, g, x))


def _cpu(v):
    return v.cpu() if isinstance(v, torch.Tensor) else v


def _steps(fn, x_adv, g, x, *args, **kwargs):
    """(triton on DEVICE, reference on the CPU) results of the same step, same dtype; the Triton
    one in place on a copy of x_adv with its strides."""
    target = torch.empty_strided(x_adv.shape, x_adv.stride(), dtype=x_adv.dtype, device=DEVICE)
    target.copy_(x_adv)
    got = _quiet(fn, target, g, x, *args, **kwargs, backend="triton")
    assert got is target
    cpu_args = [_cpu(a) for a in args]
    cpu_kwargs = {k: _cpu(v) for k, v in kwargs.items()}
    expected = _quiet(
        fn, x_adv.cpu().clone(), g.cpu(), x.cpu(), *cpu_args, **cpu_kwargs, backend="reference"
    )
    assert not torch.equal(expected, x_adv.cpu()), "the step moved nothing: a vacuous comparison"
    return got, expected


def _assert_step(got, expected, norm, what=""):
    assert got.dtype == expected.dtype, what
    if norm == "Linf":
        same = got.cpu() == expected
        assert same.all(), f"{what}: {int((~same).sum())} elements differ"
    else:
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, TOL[got.dtype])
        assert_step_close(got, expected, tol, what)


@_uses(*STEPS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_matches_the_reference(norm, dtype):
    """One odd plane per layout, then a sample of several Linf blocks and L2 partial sums
    (2 x 3 x 67 x 45: 9045 elements per sample)."""
    eps, alpha = (0.03, 0.02) if norm == "Linf" else (0.3, 0.25)
    for shape, layout in (
        ((3, 3, 11, 9), "contiguous"),
        ((3, 3, 11, 9), "channels_last"),
        ((2, 3, 67, 45), "contiguous"),
    ):
        x_adv, g, x = _step_inputs(shape, dtype, layout=layout)
        got, expected = _steps(wavefuse.pgd_step, x_adv, g, x, eps, alpha, norm)
        _assert_step(got, expected, norm, f"{norm} {dtype} {layout} {shape}")
        assert got.stride() == x_adv.stride()


@_uses(*STEPS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_tensor_bounds(norm):
    """Per-sample eps, per-channel alpha and lo, a float hi; then (N, C) bounds everywhere (eps
    per sample only for L2), float32 channels_last."""
    x_adv, g, x = _step_inputs((3, 3, 11, 9), spread=0.2, layout="channels_last")
    n, c = x.shape[:2]
    eps = (0.05 + 0.1 * torch.rand(n, 1, 1, 1)) * (4 if norm == "L2" else 1)
    alpha = torch.tensor([0.02, 0.03, 0.05]).view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0]).view(1, c, 1, 1)
    eps, alpha, lo = eps.to(DEVICE), alpha.to(DEVICE), lo.to(DEVICE)
    got, expected = _steps(wavefuse.pgd_step, x_adv, g, x, eps, alpha, norm, lo, 0.9)
    _assert_step(got, expected, norm, "per-sample eps, per-channel alpha and lo")
    hi = (0.8 + 0.2 * torch.rand(n, c, 1, 1)).to(DEVICE)
    if norm == "Linf":
        eps = eps * torch.tensor([1.0, 0.5, 2.0], device=DEVICE).view(1, c, 1, 1)
    got, expected = _steps(wavefuse.pgd_step, x_adv, g, x, eps, alpha * 2, norm, lo - 0.1, hi)
    _assert_step(got, expected, norm, "(N, C) bounds")


# ---- wavelet_pgd_step ------------------------------------------------------------------------------


def _wavelet_step(x_adv, g, x, eps, alpha, wave, level, mode, scales, norm, *bounds):
    got, expected = _steps(
        wavefuse.wavelet_pgd_step, x_adv, g, x, eps, alpha, wave, level, mode, scales, norm,
        *bounds,
    )  # fmt: skip
    assert got.stride() == x_adv.stride()
    return got, expected


@_uses(*WAVELET_STEPS)
@pytest.mark.parametrize("level", [1, 3])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_haar(norm, level, monkeypatch):
    """The fused Haar kernel (one launch for Linf, three for L2) in every mode, float64, the scale
    as one float or per level (alternately: each is one more compiled variant per mode); then
    float32 channels_last and bfloat16 on a plane wider than 64 with per-sample eps and
    per-channel alpha, lo."""
    from wavefuse.kernels import dwt, haar, pgd_step

    fused = count_launches(monkeypatch, haar, "_haar_pgd_kernel")["_haar_pgd_kernel"]
    others = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel")
    others.update(count_launches(monkeypatch, pgd_step, "_separable_kernel"))
    eps = 0.05 if norm == "Linf" else 0.4
    calls = 0
    x_adv, g, x = _step_inputs((2, 2, 13, 10), torch.float64)
    for k, mode in enumerate(ALL_MODES):
        assert not reflect_too_deep(x.shape, "haar", level)
        scales = 0.0 if k % 2 else [0.5, -0.25, 2.0][:level]
        got, expected = _wavelet_step(x_adv, g, x, eps, 0.03, "haar", level, mode, scales, norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"haar {level} {mode} {norm} {scales}")
        calls += 1
    assert fused.launches == calls * (1 if norm == "Linf" else 3)
    assert all(c.launches == 0 for c in others.values()), "not the fused kernel"
    n, c = 2, 3
    eps_t = (eps * torch.linspace(0.5, 1.5, n).view(n, 1, 1, 1)).to(DEVICE)
    alpha = torch.tensor([0.02, 0.03, 0.05]).view(1, c, 1, 1).to(DEVICE)
    lo = torch.tensor([0.1, -0.2, 0.0]).view(1, c, 1, 1).to(DEVICE)
    for dtype in (torch.float32, torch.bfloat16):
        x_adv, g, x = _step_inputs((n, c, 19, 70), dtype, spread=0.2, layout="channels_last")
        scales = [0.0, 0.5, -0.25][:level]
        bounds = (lo, 0.95)
        got, expected = _wavelet_step(
            x_adv, g, x, eps_t, alpha, "haar", level, "symmetric", scales, norm, *bounds
        )
        assert_wavelet_step(got, expected, norm, 0.05, f"haar {level} {dtype} tensor bounds {norm}")


@_uses(*WAVELET_STEPS)
@pytest.mark.parametrize(
    "path, size",
    [("separable", (33, 20)), ("cascade", (140, 20)), ("pairs", (140, 20)), ("chain", (140, 20))],
    ids=["separable", "cascade", "pairs", "chain"],
)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_db4_level_2(norm, path, size, monkeypatch):
    """db4, level 2: planes of at most 64 x 64 run the separable one-launch kernel (dense matrix
    products with tl.dot), larger ones (140 > 64 rows) the approximation chain: in one
    ``_cascade_kernel`` launch (one program per plane, every level: forced here, "cascade", as 4
    planes do not fill a GPU), or, where the cascade does not fit, in pairs of stages ("pairs",
    the default there: one ``_pair_kernel`` launch per level) or, with _PAIR_ROUTE off
    ("chain"), per level an analysis of the approximation alone and a ``_chain_kernel``
    synthesis (the first level's 73 coefficient rows take its tiled merge, the second level's
    its dense one). float64 in every mode (separable: the mode is in the host-built
    matrices, one compiled kernel) or in two (chain and cascade: each mode compiles kernels), then
    reflect in float32 channels_last with tensor bounds and in bfloat16."""
    from wavefuse.kernels import dwt, pgd_step

    from wavefuse.ops import separable as separable_ops

    if path in ("pairs", "chain"):
        monkeypatch.setattr(pgd_step, "_CASCADE_MAX_DEPTH", 0)
        monkeypatch.setattr(pgd_step, "_PAIR_ROUTE", path == "pairs")
    if path == "cascade":
        monkeypatch.setattr(separable_ops, "CASCADE_PLANES_PER_SM", 0)
    names = ("_separable_kernel", "_chain_kernel", "_cascade_kernel", "_pair_kernel")
    counts = count_launches(monkeypatch, pgd_step, *names)
    counts.update(count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel"))
    eps = 0.05 if norm == "Linf" else 0.5
    scales = [0.0, 0.5]
    x_adv, g, x = _step_inputs((2, 2, *size), torch.float64)
    calls = 0
    for mode in ALL_MODES if path == "separable" else ("symmetric", "periodization"):
        got, expected = _wavelet_step(x_adv, g, x, eps, 0.03, "db4", 2, mode, scales, norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"db4 {path} {mode} {norm}")
        calls += 1
    n, c = 2, 3
    eps_t = (eps * torch.linspace(0.5, 1.5, n).view(n, 1, 1, 1)).to(DEVICE)
    alpha = torch.tensor([0.02, 0.03, 0.05]).view(1, c, 1, 1).to(DEVICE)
    hi = (0.8 + 0.2 * torch.rand(n, c, 1, 1)).to(DEVICE)
    for dtype, layout in ((torch.float32, "channels_last"), (torch.bfloat16, "contiguous")):
        x_adv, g, x = _step_inputs((n, c, *size), dtype, spread=0.2, layout=layout)
        got, expected = _wavelet_step(
            x_adv, g, x, eps_t, alpha, "db4", 2, "reflect", [0.25, -0.5], norm, 0.05, hi
        )
        assert_wavelet_step(got, expected, norm, 0.05, f"db4 {path} {dtype} {layout} {norm}")
        calls += 1
    separable = counts["_separable_kernel"].launches
    per_level = counts["_dwt2d_fwd_kernel"].launches
    chain = counts["_chain_kernel"].launches
    cascade = counts["_cascade_kernel"].launches
    pairs = counts["_pair_kernel"].launches
    if path == "separable":
        # float64 (all calls but the last 2) needs float64 tl.dot (Triton 3.5): before, the chain
        # (in pairs: 4 planes do not fill a GPU)
        f64 = calls - 2 if not dwt._DOT_FLOAT64 else 0
        assert separable == calls - f64 and pairs == 2 * f64, (separable, pairs)
        assert cascade == per_level == chain == 0, (cascade, per_level, chain)
    elif path == "cascade":
        assert cascade == calls and separable == per_level == chain == pairs == 0, cascade
    elif path == "pairs":
        assert pairs == 2 * calls and separable == cascade == per_level == chain == 0, pairs
    else:
        assert separable == cascade == pairs == 0 and per_level == chain == 2 * calls, chain


@_uses(*WAVELET_STEPS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_cascade_many_planes_repeatable(norm, monkeypatch):
    """The cascade as separable.cascade_fits picks it by itself: more planes than 2 per SM (here
    3 per SM), db4 J=4 on 96 x 80, float32. One _cascade_kernel launch per call; the step
    matches the reference; three calls agree bit for bit (a race between a program's tiles, or
    a barrier the compiler dropped, would most likely show as a difference); the chain in pairs
    of stages (its route where the cascade does not run) gives the reference's step too, three
    calls bit for bit."""
    from wavefuse.kernels import pgd_step

    from wavefuse.ops import separable

    planes = 3 * separable.sm_count(torch.device(DEVICE))
    counts = count_launches(monkeypatch, pgd_step, "_cascade_kernel", "_pair_kernel")
    x_adv, g, x = _step_inputs((planes, 1, 96, 80), torch.float32)
    eps = 0.05 if norm == "Linf" else 0.5
    scales = [0.0, 0.5, -0.25, 0.75]
    results = []
    for _ in range(3):
        got, expected = _wavelet_step(x_adv, g, x, eps, 0.03, "db4", 4, "symmetric", scales, norm)
        results.append(got)
    assert counts["_cascade_kernel"].launches == 3 and counts["_pair_kernel"].launches == 0
    assert_wavelet_step(results[0], expected, norm, 0.03, f"cascade {planes} planes {norm}")
    assert all(torch.equal(results[0], r) for r in results[1:]), "repeated cascades differ"
    monkeypatch.setattr(pgd_step, "_CASCADE_MAX_DEPTH", 0)
    # each pair's window scratch starts as NaN: a slot read before the barrier that follows its
    # write would not find the previous call's (equal) values there
    monkeypatch.setattr(
        pgd_step,
        "_pair_scratch",
        lambda numel, dtype, device: torch.full((numel,), math.nan, dtype=dtype, device=device),
    )
    results = []
    for _ in range(3):
        got, expected = _wavelet_step(x_adv, g, x, eps, 0.03, "db4", 4, "symmetric", scales, norm)
        results.append(got)
    assert counts["_pair_kernel"].launches == 3 * 4
    assert_wavelet_step(results[0], expected, norm, 0.03, f"pairs {planes} planes {norm}")
    assert all(torch.equal(results[0], r) for r in results[1:]), "repeated pairs differ"
