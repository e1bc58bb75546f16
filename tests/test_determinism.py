"""Determinism: repeated calls give the same bits, on every backend that runs here, and the C++
kernels give the same bits whatever the number of intra-op threads.

The C++ kernels promise deterministic reductions (band energies summed per plane in a fixed order,
then over channels in channel order; the L2 step's norms by the task that owns the sample; the
adjoints gather, no atomics), so hf_penalty / band_energy and their gradients, the PGD steps and
the transforms must not change by a bit between torch.set_num_threads(1) and 2 (or 3: more
threads than this machine's cores, so the work is split differently again). Shapes are large
enough for at::parallel_for to split the planes / rows across threads.
"""

from __future__ import annotations

import pytest
import torch
from conftest import cpu_backends

import wavefuse
from wavefuse import backends
from wavefuse.functional import wavelet_pool2d

F64 = torch.float64
# Levels above dwt_max_level are allowed (with PyWavelets' warning); they do not matter here.
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise: same dtype, shape, and bits (NaN == NaN of the same payload)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        width = {8: torch.int64, 4: torch.int32, 2: torch.int16}[a.element_size()]
        return torch.equal(a.contiguous().view(width), b.contiguous().view(width))
    return torch.equal(a, b)


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64).to(dtype)


# Each op: a function (backend, shape, dtype) -> tuple of tensors (outputs and gradients).


def _transforms(backend, shape, dtype):
    x = _inputs(shape, dtype).requires_grad_()
    coeffs = wavefuse.wavedec2(x, "db3", "symmetric", 2, backend=backend)
    y = wavefuse.waverec2(coeffs, "db3", "symmetric", backend=backend)
    outs = [coeffs[0], *(b for d in coeffs[1:] for b in d), y]
    cots = [_inputs(o.shape, dtype, seed=i + 1) for i, o in enumerate(outs)]
    (gx,) = torch.autograd.grad(outs, x, cots)
    ll, (ch, cv, cd) = wavefuse.dwt2(x.detach(), "coif2", "periodization", backend=backend)
    z = wavefuse.idwt2((ll, (ch, None, cd)), "coif2", "periodization", backend=backend)
    return (*(o.detach() for o in outs), gx, ll, ch, cv, cd, z)


def _energy(backend, shape, dtype):
    x = _inputs(shape, dtype).requires_grad_()
    outs = []
    for p, mode in ((2, "symmetric"), (1, "zero"), (2, "periodization")):
        e = wavefuse.band_energy(x, "db2", 3, mode, p, backend=backend)
        pen = wavefuse.hf_penalty(x, "sym4", 2, mode, p, [1.0, 0.5], "none", backend=backend)
        (gx,) = torch.autograd.grad([e, pen], x, [torch.ones_like(e), torch.ones_like(pen)])
        outs += [e.detach(), pen.detach(), gx]
    # double backward (p = 2)
    pen = wavefuse.hf_penalty(x, "haar", 2, "periodization", 2, None, "mean", backend=backend)
    (gx,) = torch.autograd.grad(pen, x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.square().sum(), x)
    return (*outs, gx.detach(), ggx)


def _steps(backend, shape, dtype):
    x_nat = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=F64).to(dtype)
    grad = _inputs(shape, dtype, seed=4)
    outs = []
    for norm in ("Linf", "L2"):
        x_adv = x_nat.clone()
        for _ in range(3):
            wavefuse.pgd_step(x_adv, grad, x_nat, 8 / 255, 2 / 255, norm, backend=backend)
        outs.append(x_adv)
        x_adv = x_nat.clone()
        wavefuse.wavelet_pgd_step(
            x_adv, grad, x_nat, 0.5, 0.1, "db2", 2, "symmetric", [0.0, 0.5], norm, backend=backend
        )
        outs.append(x_adv)
    return tuple(outs)


def _pool(backend, shape, dtype):
    x = _inputs(shape, dtype).requires_grad_()
    w = torch.tensor([[0.25, 0.5, -0.25, 1.0]] * shape[1], dtype=F64, requires_grad=True)
    outs = []
    for bands, mode in (("all", "zero"), ("ll", "periodization"), (w, "symmetric")):
        y = wavelet_pool2d(x, "db2", mode, bands, backend=backend)
        leaves = [x] + ([w] if isinstance(bands, torch.Tensor) else [])
        outs += [y.detach(), *torch.autograd.grad(y, leaves, torch.ones_like(y))]
    return tuple(outs)


OPS = {  # name: (function, the op whose backends run it)
    "transforms": (_transforms, "dwt2d"),
    "band_energy_hf_penalty": (_energy, "hf_penalty"),
    "pgd_steps": (_steps, "wavelet_pgd_step"),
    "wavelet_pool2d": (_pool, "wavelet_pool2d"),
}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _assert_same(first, second, what: str) -> None:
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert _equal(a, b), (
            f"{what}: output {i} differs (max {(a.double() - b.double()).abs().max().item():.3e})"
        )


@pytest.fixture
def threads():
    """Restore the intra-op thread count after the test."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("backend", cpu_backends())
def test_repeated_calls_are_bitwise_identical(backend, name, dtype):
    fn, op = OPS[name]
    if backends.why_not(backend, op, "cpu") is not None:
        pytest.skip(backends.why_not(backend, op, "cpu"))
    shape = (3, 4, 29, 22)
    first = fn(backend, shape, dtype)
    for _ in range(2):
        _assert_same(first, fn(backend, shape, dtype), f"{name} {backend} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("backend", cpu_backends())
def test_thread_count_does_not_change_the_bits(backend, name, dtype, threads):
    """1, 2 and 3 intra-op threads. C++ kernels: planes 4 x 6 = 24 in groups of vector lanes
    (energies; L2 steps per sample: 4), and 230 x 229 planes, which take the row path
    (csrc/cpu/planes.h: above 128 x 128) and split their rows in chunks of 16. The reference (torch's own kernels) on a smaller input:
    oversubscribed threads make it slow, not different."""
    fn, op = OPS[name]
    if backends.why_not(backend, op, "cpu") is not None:
        pytest.skip(backends.why_not(backend, op, "cpu"))
    shapes = [(4, 6, 57, 38), (1, 3, 230, 229)] if backend == "cpu" else [(2, 3, 29, 22)]
    for shape in shapes:
        threads(1)
        serial = fn(backend, shape, dtype)
        for n in (2, 3):
            threads(n)
            what = f"{name} {backend} {dtype} {shape} threads={n}"
            _assert_same(serial, fn(backend, shape, dtype), what)


@pytest.mark.skipif(
    backends.why_not("triton", "dwt2d", "cpu") is not None,
    reason=str(backends.why_not("triton", "dwt2d", "cpu")),
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_triton_repeated_calls_are_bitwise_identical(dtype):
    """The Triton transforms (interpreter here): small planes, the dense and the tiled paths."""
    from wavefuse.kernels import dwt as kernels

    x = _inputs((1, 2, 9, 7), dtype).requires_grad_()

    def run():
        ll, hi = wavefuse.dwt2(x, "db2", "reflect", backend="triton")
        y = wavefuse.idwt2((ll, hi), "db2", "reflect", backend="triton")
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        return ll.detach(), *(h.detach() for h in hi), y.detach(), gx

    first = run()
    _assert_same(first, run(), f"triton dense {dtype}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "_DENSE_MAX_FULL", 0)
        mp.setattr(kernels, "_MAX_TILE_OUTPUTS", 32)
        mp.setattr(kernels, "_MAX_TILE_W", 8)
        tiled = run()
        _assert_same(tiled, run(), f"triton tiled {dtype}")
