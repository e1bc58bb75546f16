"""The CUDA band-energy kernels (csrc/cuda/hf_penalty.cu) on CUDA tensors, against the reference
and PyWavelets: band_energy, band_energy_backward and hf_penalty with backend="cuda".

Marked ``gpu``: every test skips with a reason where no CUDA device is visible or this build of
wavefuse._C has no CUDA kernel for the ops (``backends.why_not``). Nothing touches the GPU at
collection time. Where no GPU is lent, tests/test_cuda_hf_emulation.py runs the same kernel bodies
on the CPU; the dtypes, the host wrappers and the launches are checked here. band_energy and its
backward have two CUDA routes, level by level and the one-launch cascade (one block per plane);
tests force one by monkeypatching separable.CASCADE_PLANES_PER_SM (``_route``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close, skip_unless_cuda

import wavefuse
from wavefuse.filters import filter_bank
from wavefuse.reference import analysis_length

OPS = torch.ops.wavefuse
WAVELETS = ["haar", "db2", "db4", "sym5", "db20"]
# 1 x 1, odd x odd shorter than most filters, odd x even, several 16 x 16 tiles per plane
SIZES = [(1, 1), (3, 5), (13, 10), (37, 70)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
CUDA_OPS = ("band_energy", "band_energy_backward", "hf_penalty")

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore:Level value of:UserWarning")]


@pytest.fixture(autouse=True)
def _cuda_live():
    skip_unless_cuda(CUDA_OPS)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _tensor(shape, layout: str = "contiguous", dtype=torch.float64) -> torch.Tensor:
    t = torch.randn(*shape, dtype=torch.float64, device="cuda")
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        t = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64, device="cuda")
        t = t[..., 1::2]
    return t.to(dtype)


def _valid(h: int, w: int, wave: str, mode: str, level: int) -> bool:
    from wavefuse.ops.hf_penalty import check_cascade

    taps = filter_bank(wave, "dec", torch.float64).shape[-1]
    try:
        check_cascade(h, w, taps, mode, level, "x")
    except ValueError:
        return False
    return True


def _sign_fragile(h: int, w: int, wave: str, mode: str, level: int) -> bool:
    """Whether some level reads an axis of one sample that its mode extends to a constant: the
    detail coefficients are then rounding noise, whose sum of |d| (p = 1) and sign depend on the
    summation order (see tests/test_cuda_hf_emulation.py); such cases compare p = 2 only."""
    taps = filter_bank(wave, "dec", torch.float64).shape[-1]
    for _ in range(level):
        if mode != "zero" and min(h, w) == 1:
            return True
        h, w = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    return False


def _pywt_energies(x: torch.Tensor, wave: str, mode: str, level: int, p: int) -> np.ndarray:
    coeffs = _quiet(pywt.wavedec2, x.double().cpu().numpy(), wave, mode, level)
    out = np.zeros((x.shape[0], level, 3))
    for j in range(1, level + 1):
        for b, band in enumerate(coeffs[level - j + 1]):
            out[:, j - 1, b] = (np.abs(band) ** p).sum(axis=(1, 2, 3))
    return out


def _energies(x, wave, mode, level, p, backend):
    return _quiet(wavefuse.band_energy, x, wave, level, mode, p, backend=backend)


def _grad_x(x, wave, mode, level, p, grad, backend):
    filters = filter_bank(wave, "dec", torch.float64 if x.dtype == torch.float64 else torch.float32,
                          x.device)  # fmt: skip
    return OPS.band_energy_backward(grad, x, filters, mode, level, p, backend)


# ----- agreement ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", WAVELETS)
def test_energies_and_gradient_match_reference_float64(wave, mode, layout):
    """float64: energies against pywt.wavedec2 at 1e-10 and the reference at 1e-12, grad_x
    against the reference at 1e-12 in x's layout; every size, levels 1-3, p 1 and 2."""
    for h, w in SIZES:
        for level in (1, 2, 3):
            if not _valid(h, w, wave, mode, level):
                continue
            x = _tensor((2, 3, h, w), layout)
            what = f"{wave} {mode} {layout} {h}x{w} J={level}"
            fragile = _sign_fragile(h, w, wave, mode, level)
            for p in (1, 2):
                got = _energies(x, wave, mode, level, p, "cuda")
                assert got.shape == (2, level, 3) and got.dtype == torch.float64, what
                pywt_e = _pywt_energies(x, wave, mode, level, p)
                assert_close(got, pywt_e, TOL[torch.float64], f"{what} pywt p={p}")
                if p == 2 or not fragile:
                    ref = _energies(x, wave, mode, level, p, "reference")
                    assert_close(got, ref, 1e-12, f"{what} p={p}")
            grad = torch.rand(2, level, 3, dtype=torch.float64, device="cuda")
            p = 2 if fragile else 1 + level % 2
            gx = _grad_x(x, wave, mode, level, p, grad, "cuda")
            ref = _grad_x(x, wave, mode, level, p, grad, "reference")
            assert gx.dtype == x.dtype and gx.stride() == ref.stride(), what
            assert_close(gx, ref, 1e-12, f"{what} grad p={p}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_lower_precision(mode, dtype, layout):
    """float32 accumulation (energies in float32) against float64 from the same rounded input;
    grad_x in x's dtype and memory format."""
    for wave in ["db2", "sym5", "db20"]:
        for h, w in [(3, 5), (37, 70)]:
            if not _valid(h, w, wave, mode, 2):
                continue
            x = _tensor((2, 3, h, w), layout, dtype)
            what = f"{wave} {mode} {dtype} {layout} {h}x{w}"
            for p in (1, 2):
                got = _energies(x, wave, mode, 2, p, "cuda")
                assert got.dtype == torch.float32, what
                assert_close(got, _energies(x.double(), wave, mode, 2, p, "reference"),
                             TOL[dtype], f"{what} p={p}")  # fmt: skip
            grad = torch.rand(2, 2, 3, device="cuda")
            gx = _grad_x(x, wave, mode, 2, 2, grad, "cuda")
            ref = _grad_x(x.double(), wave, mode, 2, 2, grad.double(), "reference")
            assert gx.dtype == dtype and gx.stride() == x.stride(), what
            assert_close(gx, ref, TOL[dtype], f"{what} grad")


@pytest.mark.parametrize("mode", ["symmetric", "periodic"])
def test_levels_that_grow_from_one_sample(mode):
    """1 x 1 with db4 grows to 4 x 4, 5 x 5, 6 x 6: every buffer is sized per level."""
    x = _tensor((2, 2, 1, 1))
    got = _energies(x, "db4", mode, 4, 2, "cuda")
    assert_close(got, _energies(x, "db4", mode, 4, 2, "reference"), 1e-12, mode)
    grad = torch.rand(2, 4, 3, dtype=torch.float64, device="cuda")
    assert_close(_grad_x(x, "db4", mode, 4, 2, grad, "cuda"),
                 _grad_x(x, "db4", mode, 4, 2, grad, "reference"), 1e-12, mode)  # fmt: skip


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    "weights",
    [None, [0.5, 2.0, 0.0], [[1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [4.0, 0.0, 1.0]]],
    ids=["none", "per-level", "per-band"],
)
def test_hf_penalty_weights_and_reductions(weights, reduction):
    """Values and gradients (a random cotangent for "none") against the reference."""
    x = _tensor((3, 2, 15, 11))
    for wave, mode, p in [("haar", "periodization", 2), ("db4", "reflect", 1), ("sym5", "zero", 2)]:
        xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        args = (wave, 3, mode, p, weights, reduction)
        got = _quiet(wavefuse.hf_penalty, xs, *args, backend="cuda")
        expected = _quiet(wavefuse.hf_penalty, xr, *args, backend="reference")
        assert got.shape == expected.shape
        assert_close(got, expected, 1e-12, f"{wave} {mode} p={p}")
        cot = torch.rand_like(got)
        (g,) = torch.autograd.grad(got, xs, cot)
        (g_ref,) = torch.autograd.grad(expected, xr, cot)
        assert_close(g, g_ref, 1e-12, f"{wave} {mode} p={p} gradient")


# ----- autograd, ops, compile ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "wave, mode, p",
    [
        ("haar", "zero", 2),
        ("db2", "reflect", 1),
        ("db2", "periodization", 2),
        ("db3", "symmetric", 1),
    ],
)
def test_gradcheck_and_gradgradcheck(wave, mode, p):
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.0, 1.5]], dtype=torch.float64, device="cuda")

    def penalty(t):
        return _quiet(wavefuse.hf_penalty, t, wave, 2, mode, p, w, "none", backend="cuda")

    def energies(t):
        return _quiet(wavefuse.band_energy, t, wave, 2, mode, p, backend="cuda")

    assert torch.autograd.gradcheck(energies, (x,))
    assert torch.autograd.gradcheck(penalty, (x,))
    assert torch.autograd.gradgradcheck(penalty, (x,), fast_mode=True)


def test_double_backward_is_the_hessian_vector_product():
    """p = 2: the gradient is linear in x, so double backward's H v = grad(x + v) - grad(x)."""
    x = torch.randn(2, 3, 12, 9, dtype=torch.float64, device="cuda", requires_grad=True)
    v = torch.randn_like(x)

    def grad_of(t, create_graph=False):
        value = wavefuse.hf_penalty(t, "db3", 2, "symmetric", backend="cuda")
        return torch.autograd.grad(value, t, create_graph=create_graph)[0]

    g = grad_of(x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    g2 = grad_of((x + v).detach().requires_grad_())
    assert_close(hv, g2 - g.detach(), 1e-12)


@pytest.mark.parametrize("route", ["levels", "cascade"])
@pytest.mark.parametrize(
    "mode, p, requires_grad",
    [("zero", 1, True), ("periodization", 2, True), ("symmetric", 2, False)],
)
def test_opcheck(monkeypatch, mode, p, requires_grad, route):
    _route(monkeypatch, route)
    x = torch.randn(2, 3, 9, 6, dtype=torch.float64, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    filters = filter_bank("db2", "dec", torch.float64, "cuda")
    w = torch.rand(2, 3, dtype=torch.float64, device="cuda")
    grad = torch.randn(2, 2, 3, dtype=torch.float64, device="cuda", requires_grad=requires_grad)
    torch.library.opcheck(OPS.band_energy.default, (x, filters, mode, 2, p, "cuda"))
    torch.library.opcheck(OPS.band_energy_backward.default, (grad, x, filters, mode, 2, p, "cuda"))
    for weights, reduction in [(None, "mean"), (w, "none"), (w, "sum")]:
        args = (x, filters, mode, 2, p, weights, reduction, "cuda")
        torch.library.opcheck(OPS.hf_penalty.default, args)


def test_torch_compile_fullgraph():
    def loss(t):
        e = wavefuse.band_energy(t, "db2", 2, "symmetric", 1, backend="cuda")
        penalty = wavefuse.hf_penalty(t, "db2", 2, "symmetric", weights=[1.0, 0.5], backend="cuda")
        return penalty + e[:, 0].sum()

    x = torch.randn(2, 3, 15, 16, device="cuda", requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(x)
    (g,) = torch.autograd.grad(value, x)
    xe = x.detach().requires_grad_()
    (g_e,) = torch.autograd.grad(loss(xe), xe)
    torch.testing.assert_close(value, loss(xe.detach()))
    torch.testing.assert_close(g, g_e)


# ----- determinism, streams, edge cases -----------------------------------------------------------


def test_deterministic_and_keeps_the_memory_format():
    """Fixed reduction orders and gathers, no atomics: bitwise identical results."""
    x = _tensor((4, 5, 67, 90), "channels_last", torch.float32)
    grad = torch.rand(4, 3, 3, device="cuda")
    e = _energies(x, "db4", "symmetric", 3, 2, "cuda")
    g = _grad_x(x, "db4", "symmetric", 3, 1, grad, "cuda")
    assert g.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        assert torch.equal(_energies(x, "db4", "symmetric", 3, 2, "cuda"), e)
        assert torch.equal(_grad_x(x, "db4", "symmetric", 3, 1, grad, "cuda"), g)


def test_nan_is_kept_for_p1():
    """psi(NaN) = NaN * g (as the CPU and Triton kernels): a poisoned input is never hidden."""
    x = _tensor((1, 2, 9, 12))
    x[0, 1, 4, 5] = float("nan")
    grad = torch.rand(1, 2, 3, dtype=torch.float64, device="cuda")
    assert _energies(x, "db2", "periodic", 2, 1, "cuda").isnan().all()
    g1 = _grad_x(x, "db2", "periodic", 2, 1, grad, "cuda")
    g2 = _grad_x(x, "db2", "periodic", 2, 2, grad, "cuda")
    assert g1.isnan().any() and torch.equal(g1.isnan(), g2.isnan())


def test_runs_on_the_current_stream():
    x = _tensor((4, 3, 64, 64), dtype=torch.float32)
    expected = _energies(x, "db4", "periodic", 2, 2, "reference")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = _energies(x, "db4", "periodic", 2, 2, "cuda")
    stream.synchronize()
    assert_close(got, expected, TOL[torch.float32], "non-default stream")


def test_empty_batch_level_zero_and_bad_inputs():
    filters = filter_bank("db2", "dec", torch.float32, "cuda")
    empty = torch.randn(0, 3, 8, 8, device="cuda")
    assert OPS._band_energy_kernel(empty, filters, "zero", 2, 2).shape == (0, 2, 3)
    no_channels = torch.randn(2, 0, 8, 8, device="cuda")
    assert torch.equal(OPS._band_energy_kernel(no_channels, filters, "zero", 2, 2),
                       torch.zeros(2, 2, 3, device="cuda"))  # fmt: skip
    g = OPS._band_energy_backward_kernel(torch.rand(0, 2, 3, device="cuda"), empty, filters,
                                         "zero", 2, 2)  # fmt: skip
    assert g.shape == empty.shape
    x = torch.randn(2, 3, 8, 8, device="cuda")
    assert OPS._band_energy_kernel(x, filters, "zero", 0, 2).shape == (2, 0, 3)
    g0 = OPS._band_energy_backward_kernel(torch.rand(2, 0, 3, device="cuda"), x, filters, "zero",
                                          0, 2)  # fmt: skip
    assert torch.equal(g0, torch.zeros_like(x))
    with pytest.raises(RuntimeError, match="mode must be one of"):
        OPS._band_energy_kernel(x, filters, "wrap", 1, 2)
    with pytest.raises(RuntimeError, match="p must be 1 or 2"):
        OPS._band_energy_kernel(x, filters, "zero", 1, 3)
    with pytest.raises(RuntimeError, match="grad must be"):
        OPS._band_energy_backward_kernel(torch.rand(2, 1, 3, device="cuda"), x, filters, "zero",
                                         2, 2)  # fmt: skip


def test_one_level_kernel_per_level_and_one_reduction(monkeypatch):
    """band_energy: J energy kernels and one row reduction; its backward: J split and J adjoint
    kernels (torch.profiler's CUDA activity), on the level route."""
    _route(monkeypatch, "levels")
    x = torch.randn(2, 3, 67, 90, device="cuda", requires_grad=True)
    names = _cuda_kernels(
        lambda: wavefuse.hf_penalty(x, "db4", 3, "symmetric", backend="cuda").backward()
    )
    assert not any("cascade" in n for n in names), names
    assert sum("energy_kernel" in n for n in names) == 3, names
    assert sum("rows_kernel" in n for n in names) == 1, names
    assert sum("grad_split_kernel" in n for n in names) == 3, names
    assert sum("adjoint_kernel" in n for n in names) == 3, names


# ----- the one-launch cascade (csrc/cuda/hf_cascade_body.cuh) -------------------------------------


def _route(monkeypatch, route: str) -> None:
    """ "cascade": the CUDA band energies run as the one-launch cascade for any number of planes
    (separable.cascade_fits's planes-per-SM rule off); "levels": level by level (rule never met)."""
    from wavefuse.ops import separable

    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0 if route == "cascade" else 10**9)


def _cuda_kernels(fn) -> list:
    """Names of the CUDA kernels fn launches (torch.profiler's CUDA activity)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


# (N, C, H, W): 512 planes of 32 x 32 (what the cascade is for), and 6 planes with several tiles
ROUTE_SHAPES = {"many-planes": (64, 8, 32, 32), "few-planes": (2, 3, 37, 70)}
ROUTE_CASES = [("db4", "symmetric", 3), ("haar", "periodization", 2), ("coif3", "reflect", 3),
               ("sym5", "zero", 1), ("db2", "periodic", 5)]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", list(ROUTE_SHAPES), ids=list(ROUTE_SHAPES))
@pytest.mark.parametrize("route", ["cascade", "levels"])
def test_routes_match_reference(monkeypatch, route, shape, dtype):
    """Both routes: energies (p 1 and 2) and grad_x against the reference in float64 on the same
    (rounded) input; grad_x in x's dtype and memory format."""
    _route(monkeypatch, route)
    tol = 1e-12 if dtype == torch.float64 else TOL[dtype]
    for k, (wave, mode, level) in enumerate(ROUTE_CASES):
        layout = "channels_last" if k % 2 else "contiguous"
        x = _tensor(ROUTE_SHAPES[shape], layout, dtype)
        what = f"{route} {shape} {wave} {mode} J={level} {dtype} {layout}"
        for p in (1, 2):
            got = _energies(x, wave, mode, level, p, "cuda")
            assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
            expected = _energies(x.double(), wave, mode, level, p, "reference")
            assert_close(got, expected, tol, f"{what} p={p}")
        grad = torch.rand(x.shape[0], level, 3, dtype=torch.float64, device="cuda")
        p = 1 if dtype == torch.float64 else 2  # a float32 d at rounding level flips sign(d)
        gx = _grad_x(x, wave, mode, level, p, grad.to(got.dtype), "cuda")
        ref = _grad_x(x.double(), wave, mode, level, p, grad, "reference")
        assert gx.dtype == dtype and gx.stride() == x.stride(), what
        assert_close(gx, ref, tol, f"{what} grad p={p}")


def test_cascade_is_deterministic_and_matches_the_levels(monkeypatch):
    """Repeated cascade calls are bitwise equal; both routes agree to float32 rounding."""
    x = _tensor((64, 8, 32, 32), "channels_last", torch.float32)
    grad = torch.rand(64, 3, 3, device="cuda")
    results = {}
    for route in ("levels", "cascade"):
        _route(monkeypatch, route)
        e = _energies(x, "db4", "symmetric", 3, 2, "cuda")
        g = _grad_x(x, "db4", "symmetric", 3, 1, grad, "cuda")
        for _ in range(3):
            assert torch.equal(_energies(x, "db4", "symmetric", 3, 2, "cuda"), e), route
            assert torch.equal(_grad_x(x, "db4", "symmetric", 3, 1, grad, "cuda"), g), route
        results[route] = (e, g)
    assert_close(results["cascade"][0], results["levels"][0], TOL[torch.float32], "energies")
    assert_close(results["cascade"][1], results["levels"][1], TOL[torch.float32], "grad_x")


def test_cascade_launches_one_kernel_each_way(monkeypatch):
    """The cascade route: band_energy is ONE energy_cascade_kernel and one rows_kernel, its
    backward ONE grad_cascade_kernel; no per-level kernel runs."""
    _route(monkeypatch, "cascade")
    x = torch.randn(4, 3, 67, 90, device="cuda", requires_grad=True)
    names = _cuda_kernels(
        lambda: wavefuse.hf_penalty(x, "db4", 3, "symmetric", backend="cuda").backward()
    )
    assert sum("energy_cascade_kernel" in n for n in names) == 1, names
    assert sum("rows_kernel" in n for n in names) == 1, names
    assert sum("grad_cascade_kernel" in n for n in names) == 1, names
    for level_kernel in ("energy_kernel", "grad_split_kernel", "adjoint_kernel"):
        assert not any(level_kernel in n for n in names), names


def test_default_route_follows_cascade_fits():
    """Without forcing: the cascade exactly where separable.cascade_fits says so."""
    from wavefuse.ops import hf_penalty, separable

    for shape in ROUTE_SHAPES.values():
        x = _tensor(shape, dtype=torch.float32)
        fits = separable.cascade_fits(x, 3, hf_penalty._CUDA_CASCADE_MAX_LEVELS)
        names = _cuda_kernels(lambda x=x: _energies(x, "db4", "symmetric", 3, 2, "cuda"))
        assert any("energy_cascade_kernel" in n for n in names) == fits, (shape, names)


def test_cascade_gradcheck(monkeypatch):
    _route(monkeypatch, "cascade")
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _energies(t, "db2", "symmetric", 2, 2, "cuda"), (x,))


def test_cascade_ops_edge_cases_and_bad_inputs():
    """The cascade ops' own contract: as the level ops' (shared checks), plus their level limit."""
    from wavefuse.ops import hf_penalty

    filters = filter_bank("db2", "dec", torch.float32, "cuda")
    fwd, bwd = OPS._band_energy_cascade_kernel, OPS._band_energy_backward_cascade_kernel
    empty = torch.randn(0, 3, 8, 8, device="cuda")
    assert fwd(empty, filters, "zero", 2, 2).shape == (0, 2, 3)
    no_channels = torch.randn(2, 0, 8, 8, device="cuda")
    assert torch.equal(fwd(no_channels, filters, "zero", 2, 2), torch.zeros(2, 2, 3, device="cuda"))
    assert (
        bwd(torch.rand(0, 2, 3, device="cuda"), empty, filters, "zero", 2, 2).shape == empty.shape
    )
    x = torch.randn(2, 3, 8, 8, device="cuda")
    assert fwd(x, filters, "zero", 0, 2).shape == (2, 0, 3)
    assert torch.equal(bwd(torch.rand(2, 0, 3, device="cuda"), x, filters, "zero", 0, 2),
                       torch.zeros_like(x))  # fmt: skip
    with pytest.raises(RuntimeError, match="mode must be one of"):
        fwd(x, filters, "wrap", 1, 2)
    with pytest.raises(RuntimeError, match="p must be 1 or 2"):
        fwd(x, filters, "zero", 1, 3)
    with pytest.raises(RuntimeError, match="grad must be"):
        bwd(torch.rand(2, 1, 3, device="cuda"), x, filters, "zero", 2, 2)
    deep = hf_penalty._CUDA_CASCADE_MAX_LEVELS + 1
    with pytest.raises(RuntimeError, match="at most"):
        fwd(x, filters, "zero", deep, 2)
