"""The torch.library custom ops themselves: opcheck, adjoint identities, layouts, backends."""

from __future__ import annotations

import pytest
import torch
from conftest import ALL_MODES, CPU_BACKENDS, TOL, assert_close

from wavefuse import ops, reference
from wavefuse.filters import filter_bank

SHAPE = (2, 3, 9, 6)  # odd and even


def _sample(mode, wave="db2", dtype=torch.float64, channels_last=False, backend="reference"):
    x = torch.randn(*SHAPE, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dec, rec = filter_bank(wave, "dec", dtype), filter_bank(wave, "rec", dtype)
    ll, hi = ops.dwt2d(x, dec, mode, backend)
    y = ops.idwt2d(ll, hi, rec, mode, backend)
    return x, dec, rec, ll, hi, y


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_opcheck_every_op(mode, channels_last, requires_grad, backend):
    x, dec, rec, ll, hi, y = _sample(mode, channels_last=channels_last, backend=backend)
    rg = requires_grad

    def g(t):
        return t.detach().clone().requires_grad_(rg)

    cases = [
        (ops.dwt2d, (g(x), dec, mode, backend)),
        (ops.dwt2d_adjoint, (g(ll), g(hi), dec, mode, list(SHAPE[-2:]), backend)),
        (ops.idwt2d, (g(ll), g(hi), rec, mode, backend)),
        (ops.idwt2d_adjoint, (g(y), rec, mode, backend)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db4", "coif2", "db20"])
def test_adjoint_ops_are_exact_transposes(wave, mode, backend):
    """<A x, g> == <x, A^T g> for analysis and for synthesis, to float64 rounding."""
    x, dec, rec, ll, hi, y = _sample(mode, wave, backend=backend)
    gl, gh = torch.randn_like(ll), torch.randn_like(hi)
    ax = (ll * gl).sum() + (hi * gh).sum()
    atg = (x * ops.dwt2d_adjoint(gl, gh, dec, mode, list(SHAPE[-2:]), backend)).sum()
    torch.testing.assert_close(ax, atg, rtol=1e-12, atol=1e-12)

    gy = torch.randn_like(y)
    sl, sh = ops.idwt2d_adjoint(gy, rec, mode, backend)
    torch.testing.assert_close(
        (y * gy).sum(), (ll * sl).sum() + (hi * sh).sum(), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("mode", ALL_MODES)
def test_adjoint_matches_autograd_of_the_reference(mode):
    """The reference is plain torch ops, so autograd through it gives an independent transpose."""
    x, dec, rec, ll, hi, y = _sample(mode, "sym4")
    xr = x.clone().requires_grad_()
    ll_r, hi_r = reference.dwt2d_ref(xr, dec, mode)
    gl, gh = torch.randn_like(ll), torch.randn_like(hi)
    (expected,) = torch.autograd.grad([ll_r, hi_r], xr, [gl, gh])
    got = ops.dwt2d_adjoint(gl, gh, dec, mode, list(SHAPE[-2:]), "reference")
    assert_close(got, expected, 1e-12, "dwt2d adjoint")

    llr, hir = ll.clone().requires_grad_(), hi.clone().requires_grad_()
    gy = torch.randn_like(y)
    exp_l, exp_h = torch.autograd.grad(reference.idwt2d_ref(llr, hir, rec, mode), [llr, hir], gy)
    got_l, got_h = ops.idwt2d_adjoint(gy, rec, mode, "reference")
    assert_close(got_l, exp_l, 1e-12, "idwt2d adjoint ll")
    assert_close(got_h, exp_h, 1e-12, "idwt2d adjoint hi")


def test_periodization_adjoint_is_the_inverse():
    """Orthogonal wavelets with periodization: analysis is orthogonal, so A^T = A^-1 (even sizes)."""
    x = torch.randn(1, 2, 12, 10, dtype=torch.float64)
    dec, rec = filter_bank("db3", "dec", x.dtype), filter_bank("db3", "rec", x.dtype)
    ll, hi = ops.dwt2d(x, dec, "periodization", "reference")
    adj = ops.dwt2d_adjoint(ll, hi, dec, "periodization", [12, 10], "reference")
    inv = ops.idwt2d(ll, hi, rec, "periodization", "reference")
    assert_close(adj, inv, 1e-12)
    assert_close(adj, x, 1e-12)


def test_outputs_are_fresh_and_in_input_layout():
    x, _dec, _rec, ll, hi, y = _sample("symmetric", channels_last=True)
    assert ll.is_contiguous(memory_format=torch.channels_last)
    assert hi.shape == (SHAPE[0], SHAPE[1], 3, *ll.shape[-2:])
    for b in hi.unbind(2):
        assert b.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert ll.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()


def test_synthesis_adjoint_rejects_impossible_lengths():
    dec = filter_bank("db2", "rec", torch.float64)
    with pytest.raises(RuntimeError, match="not a synthesis output length"):
        ops.idwt2d_adjoint(torch.randn(1, 1, 7, 8, dtype=torch.float64), dec, "zero", "reference")


# ----- backends against each other ------------------------------------------------------------------

VIEWS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "strided": lambda t: t[:, :, 1::2, ::3],
    "transposed": lambda t: t.transpose(-1, -2),
}


def _random_like(layout: str, ref: torch.Tensor) -> torch.Tensor:
    """Random float64 tensor of ref's shape in the given layout (a gradient, say)."""
    shape = list(ref.shape)
    if layout == "strided":
        return torch.randn(*shape[:-1], 2 * shape[-1], dtype=torch.float64)[..., ::2]
    if layout == "transposed":
        return torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=torch.float64).transpose(-1, -2)
    t = torch.randn(*shape, dtype=torch.float64)
    return VIEWS[layout](t) if t.dim() == 4 else t


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", list(VIEWS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("case", ["general", "haar-even"])
def test_backend_agrees_with_reference_on_every_op(case, mode, dtype, layout, backend):
    """Every op on random inputs, every dtype and layout, against the reference computed in float64
    from the same (rounded) inputs; outputs keep the dtype and the reference's strides. "haar-even"
    takes the kernels' 2 x 2 block path (identity index maps), "general" the extension path."""
    if case == "haar-even":
        wave, size = "haar", (16, 26)
    else:
        wave = {"zero": "db3", "symmetric": "sym4", "reflect": "haar", "periodic": "coif1"}
        wave, size = wave.get(mode, "db2"), (19, 24)
    x = _random_like(layout, torch.empty(2, 3, *size)).to(dtype)
    assert x.shape[-2:] == size
    tol = TOL[dtype]
    dec, rec = filter_bank(wave, "dec", dtype), filter_bank(wave, "rec", dtype)
    dec64, rec64 = filter_bank(wave, "dec", torch.float64), filter_bank(wave, "rec", torch.float64)

    ll, hi = ops.dwt2d(x, dec, mode, backend)
    ll_r, hi_r = ops.dwt2d(x.double(), dec64, mode, "reference")
    assert ll.dtype == hi.dtype == dtype
    assert ll.stride() == ops.dwt2d(x, dec, mode, "reference")[0].stride()
    assert_close(ll, ll_r, tol, "dwt2d ll")
    assert_close(hi, hi_r, tol, "dwt2d hi")

    gl = _random_like(layout, ll_r).to(dtype)
    gh = _random_like(layout, hi_r).to(dtype)
    size = list(x.shape[-2:])
    expected = ops.dwt2d_adjoint(gl.double(), gh.double(), dec64, mode, size, "reference")
    assert_close(ops.dwt2d_adjoint(gl, gh, dec, mode, size, backend), expected, tol, "adjoint")

    y = ops.idwt2d(gl, gh, rec, mode, backend)
    y_r = ops.idwt2d(gl.double(), gh.double(), rec64, mode, "reference")
    assert y.dtype == dtype
    assert_close(y, y_r, tol, "idwt2d")

    gy = _random_like(layout, y_r).to(dtype)
    a, b = ops.idwt2d_adjoint(gy, rec, mode, backend)
    a_r, b_r = ops.idwt2d_adjoint(gy.double(), rec64, mode, "reference")
    assert_close(a, a_r, tol, "idwt2d adjoint ll")
    assert_close(b, b_r, tol, "idwt2d adjoint hi")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ["symmetric", "zero", "periodization"])
@pytest.mark.parametrize("wave", ["db2", "db4", "db20"])
@pytest.mark.parametrize(
    "shape", [(3, 29, 9, 10), (1, 2, 5, 300), (1, 2, 150, 7)], ids=["many-planes", "wide", "tall"]
)
def test_many_small_planes_and_wide_or_tall_planes(shape, wave, mode, backend):
    """Many small planes per call, wide rows, and tall planes (several row blocks per plane, the
    interior and boundary rows of each block handled apart), with filters of one and of several
    tap chunks (db20: 40 taps, longer than some axes), agree with the reference on every op."""
    x = torch.randn(*shape, dtype=torch.float64)
    dec, rec = filter_bank(wave, "dec", x.dtype), filter_bank(wave, "rec", x.dtype)
    size = list(shape[-2:])
    ll, hi = ops.dwt2d(x, dec, mode, backend)
    ll_r, hi_r = reference.dwt2d_ref(x, dec, mode)
    assert_close(ll, ll_r, 1e-12, "ll")
    assert_close(hi, hi_r, 1e-12, "hi")
    gx = ops.dwt2d_adjoint(ll, hi, dec, mode, size, backend)
    assert_close(gx, reference.dwt2d_adjoint_ref(ll_r, hi_r, dec, mode, size), 1e-12, "adjoint")
    y = ops.idwt2d(ll, hi, rec, mode, backend)
    assert_close(y, reference.idwt2d_ref(ll_r, hi_r, rec, mode), 1e-12, "idwt2d")
    a, b = ops.idwt2d_adjoint(y, rec, mode, backend)
    a_r, b_r = reference.idwt2d_adjoint_ref(y, rec, mode)
    assert_close(a, a_r, 1e-12, "idwt2d adjoint ll")
    assert_close(b, b_r, 1e-12, "idwt2d adjoint hi")
