"""Edge policies (docs/edge_policies.md): NaN/Inf, empty batches, devices and dtypes, grad modes
and autocast, and more than 2**31 elements (GPU only).

Non-finite inputs. The transforms are linear, so PyWavelets on the same float64 input is the
oracle for where outputs are non-finite: every output whose stencil (the taps that multiply the
input, including those of the boundary extension) touches a NaN or Inf is non-finite. The policy
is two-sided: never silently finite where PyWavelets is not (``test_*_never_hides_*``: every
backend), and non-finite nowhere else (``test_*_exactly_*``; the known deviations are marked
xfail(strict=True), so fixing them turns the marks into failures that ask for their removal).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close

import wavefuse
from wavefuse import backends, filters
from wavefuse.functional import wavelet_pool2d

F64 = torch.float64
ALL = ("reference", "cpu", "triton")
NAN, INF = math.nan, math.inf
pytestmark = [
    pytest.mark.filterwarnings("ignore:Level value of:UserWarning"),
    # Triton's interpreter runs tl.dot through numpy, which warns on NaN operands.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def on(op: str, candidates=ALL) -> list:
    """The backends in ``candidates`` as params; one that cannot run ``op`` here skips."""
    out = []
    for b in candidates:
        reason = backends.why_not(b, op, "cpu")
        out.append(
            pytest.param(b, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))
        )
    return out


def _randn(*shape, dtype=F64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _nonfinite(t) -> np.ndarray:
    t = t.detach().to(F64).numpy() if torch.is_tensor(t) else np.asarray(t)
    return ~np.isfinite(t)


# Where the poisoned sample sits: inside the plane, and in a corner (where every boundary
# extension reads it, and zero padding sits next to it).
POSITIONS = {"interior": (4, 3), "corner": (0, 0)}

# Known deviations from the exact policy (reported 2026-11-23; see docs/edge_policies.md):
#  * Triton's dense path (planes of at most 64 samples or coefficients per axis, i.e. every plane
#    here) contracts whole folded operators with tl.dot (A X B^T), so 0 * NaN spreads a non-finite
#    input over every coefficient of every band of its plane.
KNOWN = {
    ("triton", None, None): "kernels/dwt.py dense path: 0 * NaN in the folded-operator tl.dot",
}


def _triton_dense_float64() -> bool:
    """Whether float64 planes this small take Triton's dense path (tl.dot takes float64 from
    Triton 3.5 on; with an older one they take the general path, which has no such deviation)."""
    try:
        from wavefuse.kernels import dwt
    except ImportError:
        return False
    return dwt.dense_fits(9, acc_float64=True)


def _known(backend: str, mode: str, where: str):
    if backend == "triton" and not _triton_dense_float64():
        return ()
    reason = KNOWN.get((backend, mode, where)) or KNOWN.get((backend, None, None))
    return pytest.mark.xfail(strict=True, reason=reason) if reason else ()


def _exact_params():
    out = []
    for b in ALL:
        for mode in ALL_MODES:
            for where in POSITIONS:
                reason = backends.why_not(b, "dwt2d", "cpu")
                marks = [pytest.mark.skipif(reason is not None, reason=str(reason))]
                marks += [m for m in [_known(b, mode, where)] if m]
                out.append(pytest.param(b, mode, where, marks=marks, id=f"{b}-{mode}-{where}"))
    return out


def _poisoned(value: float, where: str, shape=(2, 2, 9, 8)) -> torch.Tensor:
    x = _randn(*shape)
    i, j = POSITIONS[where]
    x[0, 1, i, j] = value
    x[1, 0, shape[2] - 1 - i, shape[3] - 1 - j] = -value if value == INF else value
    return x


def _dwt2_masks(x, wave, mode, backend):
    ours = wavefuse.dwt2(x, wave, mode, backend=backend)
    theirs = pywt.dwt2(x.numpy(), wave, mode)
    return [
        (_nonfinite(o), _nonfinite(t)) for o, t in zip((ours[0], *ours[1]), (theirs[0], *theirs[1]))
    ]


# ---- NaN / Inf: the transforms ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "coif1"])
@pytest.mark.parametrize("backend", on("dwt2d"))
def test_dwt2_never_hides_nonfinite_inputs(backend, wave, mode, where, value):
    for band, (ours, theirs) in enumerate(
        _dwt2_masks(_poisoned(value, where), wave, mode, backend)
    ):
        hidden = theirs & ~ours
        assert not hidden.any(), f"band {band}: {hidden.sum()} outputs finite where pywt's are not"


@pytest.mark.parametrize("backend, mode, where", _exact_params())
def test_dwt2_nonfinite_exactly_where_pywt(backend, mode, where):
    for wave in ("haar", "db2", "coif1"):
        for value in (NAN, INF):
            masks = _dwt2_masks(_poisoned(value, where), wave, mode, backend)
            for band, (ours, theirs) in enumerate(masks):
                extra = ours & ~theirs
                assert not extra.any(), (
                    f"{wave} {value} band {band}: {extra.sum()} outputs non-finite where pywt's "
                    f"are finite"
                )


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("backend", on("idwt2d"))
def test_idwt2_and_waverec2_never_hide_nonfinite_coefficients(backend, mode):
    x = _randn(2, 2, 11, 10)
    coeffs = wavefuse.wavedec2(x, "db2", mode, 2, backend="reference")
    coeffs[1] = tuple(c.clone() for c in coeffs[1])
    coeffs[1][0][0, 1, 2, 2] = NAN
    coeffs[2][2][1, 0, 0, 0] = INF
    as_np = [coeffs[0].numpy()] + [tuple(c.numpy() for c in d) for d in coeffs[1:]]
    y = wavefuse.waverec2(coeffs, "db2", mode, backend=backend)
    theirs = _nonfinite(pywt.waverec2(as_np, "db2", mode))
    assert theirs.any() and not (theirs & ~_nonfinite(y)).any()
    z = wavefuse.idwt2((coeffs[0], coeffs[1]), "db2", mode, backend=backend)
    theirs = _nonfinite(pywt.idwt2((as_np[0], as_np[1]), "db2", mode))
    assert theirs.any() and not (theirs & ~_nonfinite(z)).any()


@pytest.mark.parametrize("backend", on("dwt2d"))
def test_transform_gradients_propagate_nonfinite_cotangents(backend):
    """The backward of a linear map does not read x (a NaN in x leaves the gradient finite); a NaN
    in the incoming gradient reaches every input sample whose stencil covers it."""
    x = _randn(1, 2, 9, 8).requires_grad_()
    ll, hi = wavefuse.dwt2(x, "db2", "symmetric", backend=backend)
    g_ll, g_hi = torch.zeros_like(ll), torch.zeros_like(hi[0])
    g_ll[0, 1, 2, 2] = NAN
    (gx,) = torch.autograd.grad([ll, hi[0]], x, [g_ll, g_hi])
    assert torch.isnan(gx[0, 1, 3:6, 3:6]).all() and torch.isfinite(gx[0, 0]).all()
    x_bad = x.detach().clone()
    x_bad[0, 0, 0, 0] = NAN
    x_bad.requires_grad_()
    ll, hi = wavefuse.dwt2(x_bad, "db2", "symmetric", backend=backend)
    (gx,) = torch.autograd.grad(ll.sum(), x_bad)
    assert torch.isfinite(gx).all()


# ---- NaN / Inf: band energies, the penalty and its gradient ----------------------------------------


@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "inf"])
@pytest.mark.parametrize("backend", on("hf_penalty"))
def test_energies_and_penalty_propagate_nonfinite_per_sample(backend, value):
    """A non-finite sample poisons its own sample's energies (and penalty, and gradient), never
    another sample's."""
    x = _randn(3, 2, 12, 11)
    x[1, 1, 5, 6] = value
    e = wavefuse.band_energy(x, "db2", 2, "symmetric", 2, backend=backend)
    xn = x.numpy()
    expected = np.stack(
        [
            [
                [np.square(b[n]).sum() for b in d]
                for d in pywt.wavedec2(xn, "db2", "symmetric", 2)[:0:-1]
            ]
            for n in range(3)
        ]
    )
    assert (_nonfinite(e) == ~np.isfinite(expected)).all()
    assert _nonfinite(e[1]).any() and not _nonfinite(e[[0, 2]]).any()
    xr = x.clone().requires_grad_()
    pen = wavefuse.hf_penalty(xr, "db2", 2, "symmetric", 2, None, "none", backend=backend)
    assert _nonfinite(pen).tolist() == [False, True, False]
    (gx,) = torch.autograd.grad(pen, xr, torch.ones_like(pen))
    assert torch.isnan(gx[1, 1, 5, 6]) and torch.isfinite(gx[[0, 2]]).all()
    for reduction in ("sum", "mean"):
        total = wavefuse.hf_penalty(x, "db2", 2, "symmetric", 2, None, reduction, backend=backend)
        assert not torch.isfinite(total)


# ---- NaN / Inf: the PGD steps -------------------------------------------------------------------------


def _step_inputs(where: str, value: float):
    x_nat = torch.rand(2, 2, 6, 5, generator=torch.Generator().manual_seed(1))
    x_adv = (x_nat + 0.01).clamp(0, 1)
    grad = _randn(2, 2, 6, 5, dtype=torch.float32, seed=2)
    {"grad": grad, "x_adv": x_adv, "x_nat": x_nat}[where][0, 1, 3, 2] = value
    return x_adv, grad, x_nat


def _step_params():
    out = []
    for b in ("reference", "cpu"):
        reason = backends.why_not(b, "wavelet_pgd_step", "cpu")
        for norm in ("Linf", "L2"):
            for where in ("grad", "x_adv", "x_nat"):
                marks = [pytest.mark.skipif(reason is not None, reason=str(reason))]
                out.append(pytest.param(b, norm, where, marks=marks, id=f"{b}-{norm}-{where}"))
    return out


@pytest.mark.parametrize("backend, norm, where", _step_params())
def test_pgd_steps_propagate_nan(backend, norm, where):
    """Linf: the poisoned element of x_adv is NaN; L2: its whole sample (the norms); the other
    sample stays finite. Both steps (the wavelet step filters the gradient first)."""
    for step in ("pgd_step", "wavelet_pgd_step"):
        x_adv, grad, x_nat = _step_inputs(where, NAN)
        if step == "pgd_step":
            wavefuse.pgd_step(x_adv, grad, x_nat, 0.03, 0.01, norm, backend=backend)
        else:
            wavefuse.wavelet_pgd_step(
                x_adv, grad, x_nat, 0.03, 0.01, "haar", 1, "periodization", 0.0, norm,
                backend=backend,
            )  # fmt: skip
        assert torch.isnan(x_adv[0, 1, 3, 2]), f"{step}: the NaN was hidden"
        if norm == "L2":
            assert torch.isnan(x_adv[0]).all(), f"{step}: L2 poisons the whole sample"
        assert torch.isfinite(x_adv[1]).all(), f"{step}: NaN leaked into another sample"


@pytest.mark.parametrize("backend", on("pgd_step", ("reference", "cpu")))
def test_pgd_step_inf_is_an_ordinary_value(backend):
    """Inf is not hidden, it is computed with: sign(inf) = 1 takes an ordinary Linf step (as
    torchattacks); L2 normalises by an infinite norm: inf / inf = NaN for the sample; an infinite
    x_nat stays infinite up to the clamp to [lo, hi]."""
    x_adv, grad, x_nat = _step_inputs("grad", INF)
    expected = x_adv.clone()
    wavefuse.pgd_step(expected, grad.clamp(-1, 1), x_nat, 0.03, 0.01, backend="reference")
    wavefuse.pgd_step(x_adv, grad, x_nat, 0.03, 0.01, "Linf", backend=backend)
    assert torch.equal(x_adv, expected)
    x_adv, grad, x_nat = _step_inputs("grad", INF)
    wavefuse.pgd_step(x_adv, grad, x_nat, 0.5, 0.1, "L2", backend=backend)
    assert torch.isnan(x_adv[0]).all() and torch.isfinite(x_adv[1]).all()
    x_adv, grad, x_nat = _step_inputs("x_nat", INF)
    wavefuse.pgd_step(x_adv, grad, x_nat, 0.03, 0.01, "Linf", -INF, INF, backend=backend)
    assert x_adv[0, 1, 3, 2] == INF


# ---- NaN / Inf: wavelet pooling --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("backend", on("wavelet_pool2d", ("reference", "cpu")))
def test_wavelet_pool2d_nonfinite_exactly_where_pywt(backend, mode):
    for wave in ("haar", "db3"):
        for value in (NAN, INF):
            for where in POSITIONS:
                x = _poisoned(value, where)
                y = wavelet_pool2d(x, wave, mode, "all", backend=backend)
                ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), wave, mode)
                theirs = _nonfinite(ca) | _nonfinite(ch) | _nonfinite(cv) | _nonfinite(cd)
                assert theirs.any() and (theirs == _nonfinite(y)).all(), (wave, value, where)


# ---- empty batches ------------------------------------------------------------------------------------

EMPTY = [(0, 3, 9, 8), (2, 0, 9, 8), (0, 0, 5, 4)]


@pytest.mark.parametrize("shape", EMPTY, ids=str)
@pytest.mark.parametrize("backend", on("dwt2d"))
def test_empty_batch_transforms(backend, shape):
    x = torch.zeros(shape, requires_grad=True)
    ll, hi = wavefuse.dwt2(x, "db2", "symmetric", backend=backend)
    expected = pywt.dwt2(np.zeros(shape), "db2", "symmetric")
    assert ll.shape == expected[0].shape and all(h.shape == expected[0].shape for h in hi)
    coeffs = wavefuse.wavedec2(x, "db2", "zero", 2, backend=backend)
    ref = pywt.wavedec2(np.zeros(shape), "db2", "zero", 2)
    assert [tuple(c.shape) for c in coeffs[:1]] == [ref[0].shape]
    assert [tuple(b.shape) for d in coeffs[1:] for b in d] == [b.shape for d in ref[1:] for b in d]
    y = wavefuse.waverec2(coeffs, "db2", "zero", backend=backend)
    assert y.shape == pywt.waverec2(ref, "db2", "zero").shape
    z = wavefuse.idwt2((ll, hi), "db2", "symmetric", backend=backend)
    (gx,) = torch.autograd.grad([y.sum() + z.sum() + ll.sum()], x)
    assert gx.shape == x.shape and gx.dtype == x.dtype


@pytest.mark.parametrize("shape", EMPTY, ids=str)
@pytest.mark.parametrize("backend", on("hf_penalty", ("reference", "cpu")))
def test_empty_batch_energies_and_penalty(backend, shape):
    """(N, J, 3) energies; no channel sums to 0. The penalty's "mean" over no sample is NaN, as
    torch's mean of an empty tensor ("sum" is 0)."""
    n = shape[0]
    x = torch.zeros(shape, requires_grad=True)
    e = wavefuse.band_energy(x, "db2", 2, "symmetric", 2, backend=backend)
    assert e.shape == (n, 2, 3) and (e == 0).all()
    none = wavefuse.hf_penalty(x, "db2", 2, "symmetric", 2, None, "none", backend=backend)
    total = wavefuse.hf_penalty(x, "db2", 2, "symmetric", 2, None, "sum", backend=backend)
    mean = wavefuse.hf_penalty(x, "db2", 2, "symmetric", 2, None, "mean", backend=backend)
    assert none.shape == (n,) and total.shape == () and total == 0
    assert torch.isnan(mean) if n == 0 else mean == 0
    (gx,) = torch.autograd.grad(total + e.sum(), x)
    assert gx.shape == x.shape and (gx == 0).all()


@pytest.mark.parametrize("shape", EMPTY, ids=str)
@pytest.mark.parametrize("backend", on("wavelet_pgd_step", ("reference", "cpu")))
def test_empty_batch_steps_are_no_ops(backend, shape):
    for norm in ("Linf", "L2"):
        x_nat, grad = torch.rand(shape), torch.randn(shape)
        x_adv = x_nat.clone()
        assert wavefuse.pgd_step(x_adv, grad, x_nat, 0.1, 0.1, norm, backend=backend) is x_adv
        out = wavefuse.wavelet_pgd_step(
            x_adv, grad, x_nat, 0.1, 0.1, "db2", 1, "symmetric", 0.5, norm, backend=backend
        )
        assert out is x_adv and x_adv.shape == shape


@pytest.mark.parametrize("shape", EMPTY, ids=str)
@pytest.mark.parametrize("backend", on("wavelet_pool2d", ("reference", "cpu")))
def test_empty_batch_wavelet_pool2d(backend, shape):
    x = torch.zeros(shape, requires_grad=True)
    w = torch.ones(4, requires_grad=True)
    y = wavelet_pool2d(x, "db2", "symmetric", w, backend=backend)
    size = tuple(pywt.dwt_coeff_len(n, 4, "symmetric") for n in shape[2:])
    assert y.shape == (*shape[:2], *size)
    gx, gw = torch.autograd.grad(y.sum(), [x, w])
    assert gx.shape == x.shape and gw.shape == w.shape and (gw == 0).all()


def test_empty_spatial_axes_are_refused():
    """An axis of length 0 has no PyWavelets meaning (pywt raises too): a ValueError naming it."""
    with pytest.raises(ValueError, match="data has an empty spatial dimension"):
        wavefuse.dwt2(torch.zeros(1, 1, 0, 4), "haar")
    with pytest.raises(ValueError, match="x has an empty spatial dimension"):
        wavefuse.hf_penalty(torch.zeros(1, 1, 4, 0))
    for shape in ((1, 1, 0, 4), (1, 1, 4, 0)):  # not a silent no-op step
        z = torch.zeros(shape)
        with pytest.raises(ValueError, match="x_adv has an empty spatial dimension"):
            wavefuse.pgd_step(z.clone(), z, z, 0.1, 0.1)


# ---- devices and dtypes -------------------------------------------------------------------------------
#
# Without a second real device here, "meta" tensors stand for "another device"; the same checks
# with CUDA run where a GPU is (marked gpu).


def _mixed_device_calls(other: str):
    x = torch.rand(2, 3, 8, 8)

    def o(t):
        return t.to(other)

    ll, hi = wavefuse.dwt2(x, "haar")
    return [
        (lambda: wavefuse.idwt2((ll, (o(hi[0]), hi[1], hi[2])), "haar"), ValueError, "coeffs"),
        (lambda: wavefuse.waverec2([ll, (hi[0], o(hi[1]), hi[2])], "haar"), ValueError, "coeffs"),
        (lambda: wavefuse.pgd_step(x.clone(), o(x), x, 0.1, 0.1), ValueError, "x_adv, grad, x_nat"),
        (lambda: wavefuse.pgd_step(x.clone(), x, o(x), 0.1, 0.1), ValueError, "x_adv, grad, x_nat"),
        (
            lambda: wavefuse.pgd_step(x.clone(), x, x, o(torch.full((2, 1, 1, 1), 0.1)), 0.1),
            ValueError,
            "eps is on",
        ),
        (
            lambda: wavefuse.pgd_step(
                x.clone(), x, x, 0.1, 0.1, "Linf", o(torch.zeros(1, 3, 1, 1))
            ),
            ValueError,
            "lo is on",
        ),
        (
            lambda: wavefuse.hf_penalty(x, "haar", 2, weights=o(torch.ones(2))),
            ValueError,
            "weights is on",
        ),
        (lambda: wavelet_pool2d(x, "haar", bands=o(torch.ones(4))), ValueError, "bands is on"),
        (
            lambda: wavefuse.wavelet_pgd_step(x.clone(), o(x), x, 0.1, 0.1),
            ValueError,
            "x_adv, grad, x_nat",
        ),
    ]


@pytest.mark.parametrize("case", range(len(_mixed_device_calls("meta"))))
def test_mixed_devices_raise_naming_the_argument(case):
    call, exc, name = _mixed_device_calls("meta")[case]
    with pytest.raises(exc, match=name):
        call()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", range(9))
def test_mixed_cpu_and_cuda_raise_naming_the_argument(case):
    call, exc, name = _mixed_device_calls("cuda")[case]
    with pytest.raises(exc, match=name):
        call()


def _mixed_dtype_calls():
    x = torch.rand(2, 3, 8, 8)
    ll, hi = wavefuse.dwt2(x, "haar")
    return [
        (lambda: wavefuse.idwt2((ll.double(), hi), "haar"), TypeError, "coeffs: all tensors must have one dtype"),
        (lambda: wavefuse.waverec2([ll, (hi[0], hi[1].half(), hi[2])], "haar"), TypeError, "coeffs"),
        (lambda: wavefuse.pgd_step(x.clone(), x.double(), x, 0.1, 0.1), TypeError, "x_adv, grad, x_nat"),
        (lambda: wavefuse.pgd_step(x.clone(), x, x.bfloat16(), 0.1, 0.1), TypeError, "x_adv, grad, x_nat"),
        (lambda: wavefuse.pgd_step(x.clone(), x, x, torch.ones(2, 1, 1, 1, dtype=torch.int64), 0.1), TypeError, "eps has dtype"),
        (lambda: wavefuse.hf_penalty(x, "haar", 2, weights=torch.ones(2, dtype=torch.int32)), TypeError, "weights has dtype"),
        (lambda: wavelet_pool2d(x, "haar", bands=torch.ones(4, dtype=torch.int64)), TypeError, "bands has dtype"),
        (lambda: wavefuse.dwt2(x.to(torch.int32), "haar"), TypeError, "data has dtype"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(len(_mixed_dtype_calls())))
def test_mixed_dtypes_raise_naming_the_argument(case):
    call, exc, name = _mixed_dtype_calls()[case]
    with pytest.raises(exc, match=name):
        call()


def test_float_parameters_of_another_precision_are_converted():
    """Parameters (eps, alpha, lo, hi, weights, bands) may come in any float dtype: they are
    converted to the compute dtype (float32 for float32 data), like a Python float."""
    x = torch.rand(2, 3, 8, 8)
    a, b = x.clone(), x.clone()
    g = torch.randn_like(x)
    wavefuse.pgd_step(a, g, x, torch.full((2, 1, 1, 1), 0.1, dtype=F64), 0.05)
    wavefuse.pgd_step(b, g, x, 0.1, 0.05)
    assert torch.equal(a, b)
    p64 = wavefuse.hf_penalty(x, "haar", 2, weights=torch.tensor([1.0, 0.5], dtype=F64))
    p32 = wavefuse.hf_penalty(x, "haar", 2, weights=[1.0, 0.5])
    assert torch.equal(p64, p32) and p64.dtype == torch.float32


def test_meta_tensors_give_shapes():
    """Meta tensors run the ops' fake (shape) functions: shapes and dtypes, no data."""
    x = torch.empty(2, 3, 9, 8, device="meta")
    ll, bands = wavefuse.dwt2(x, "db2", "symmetric")
    assert ll.device.type == "meta" and ll.shape == (2, 3, 6, 5)
    assert all(b.shape == ll.shape for b in bands)
    assert wavefuse.hf_penalty(x, "db2", 2, "symmetric", reduction="none").shape == (2,)
    assert wavefuse.band_energy(x, "db2", 2, "symmetric").shape == (2, 2, 3)
    coeffs = wavefuse.wavedec2(x, "db2", "symmetric", 2)
    assert wavefuse.waverec2(coeffs, "db2", "symmetric").shape == (2, 3, 10, 8)  # pywt's +1
    assert wavelet_pool2d(x, "db2", "zero").shape == (2, 3, 6, 5)
    # the in-place steps: no data to check for overlap (every meta data_ptr is 0), no error
    x_adv, g = torch.empty_like(x), torch.empty_like(x)
    for norm in ("Linf", "L2"):
        wavefuse.pgd_step(x_adv, g, x, 0.1, 0.01, norm=norm)
        wavefuse.wavelet_pgd_step(x_adv, g, x, 0.1, 0.01, "db2", 2, "symmetric", 0.5, norm=norm)
        assert x_adv.device.type == "meta" and x_adv.shape == x.shape


# ---- grad modes and autocast ---------------------------------------------------------------------------


def _everything(x: torch.Tensor, backend_for):
    """Every differentiable op's outputs on x (backend_for(op) -> backend)."""
    coeffs = wavefuse.wavedec2(x, "db2", "symmetric", 2, backend=backend_for("dwt2d"))
    y = wavefuse.waverec2(coeffs, "db2", "symmetric", backend=backend_for("dwt2d"))
    e = wavefuse.band_energy(x, "db2", 2, "symmetric", 2, backend=backend_for("hf_penalty"))
    pen = wavefuse.hf_penalty(
        x, "db2", 2, "zero", 1, None, "none", backend=backend_for("hf_penalty")
    )
    pool = wavelet_pool2d(x, "db2", "zero", "all", backend=backend_for("wavelet_pool2d"))
    return [coeffs[0], *(b for d in coeffs[1:] for b in d), y, e, pen, pool]


def _backend_of(backend):
    return lambda op: backend if backends.why_not(backend, op, "cpu") is None else "reference"


@pytest.mark.parametrize("backend", on("dwt2d", ("reference", "cpu")))
def test_no_grad_and_inference_mode_give_the_same_values(backend):
    x = _randn(2, 3, 12, 10, dtype=torch.float32).requires_grad_()
    with_grad = _everything(x, _backend_of(backend))
    with torch.no_grad():
        no_grad = _everything(x, _backend_of(backend))
    with torch.inference_mode():
        inference = _everything(x, _backend_of(backend))
    for a, b, c in zip(with_grad, no_grad, inference):
        assert a.requires_grad and not b.requires_grad and c.is_inference()
        assert torch.equal(a.detach(), b) and torch.equal(b, c)


@pytest.mark.parametrize("backend", on("wavelet_pgd_step", ("reference", "cpu")))
def test_steps_under_no_grad_and_inference_mode(backend):
    """The steps mutate x_adv: under no_grad even an x_adv that requires grad is allowed; under
    inference_mode x_adv is an inference tensor, updated in place as usual."""
    x_nat, g = torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    expected = x_nat.clone()
    wavefuse.wavelet_pgd_step(expected, g, x_nat, 0.1, 0.05, hf_scale=0.5, backend=backend)
    leaf = x_nat.clone().requires_grad_()
    with torch.no_grad():
        wavefuse.wavelet_pgd_step(leaf, g, x_nat, 0.1, 0.05, hf_scale=0.5, backend=backend)
    assert torch.equal(leaf.detach(), expected)
    with torch.inference_mode():
        x_adv = x_nat.clone()
        wavefuse.wavelet_pgd_step(x_adv, g, x_nat, 0.1, 0.05, hf_scale=0.5, backend=backend)
    assert x_adv.is_inference() and torch.equal(x_adv, expected)


@pytest.mark.parametrize("backend", on("dwt2d", ALL))
def test_first_use_under_inference_mode_does_not_break_training(backend, monkeypatch):
    """Regression: a filter bank first built under inference_mode was cached as an inference
    tensor, and every later autograd call that saved it failed ("Inference tensors cannot be
    saved for backward")."""
    monkeypatch.setattr(filters, "_CACHE", {})
    x = _randn(1, 2, 8, 8, dtype=torch.float32)
    with torch.inference_mode():
        wavefuse.dwt2(x, "db3", "symmetric", backend=backend)
        wavefuse.hf_penalty(x, "sym3", 1, "symmetric")
    xr = x.clone().requires_grad_()
    ll, _ = wavefuse.dwt2(xr, "db3", "symmetric", backend=backend)
    pen = wavefuse.hf_penalty(xr, "sym3", 1, "symmetric")
    (gx,) = torch.autograd.grad(ll.sum() + pen, xr)
    assert torch.isfinite(gx).all()


@pytest.mark.parametrize("backend", on("dwt2d", ("reference", "cpu")))
def test_autocast_runs_in_the_input_dtype(backend):
    """Under torch.autocast("cpu", bfloat16) the ops are not on autocast's lists: float32 inputs
    give float32 outputs with the same bits as without autocast (the reference used to run its
    matmuls in bfloat16 there: errors of 4e-2); bfloat16 inputs run in bfloat16 as always."""
    x = _randn(2, 3, 16, 14, dtype=torch.float32)
    plain = _everything(x, _backend_of(backend))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = _everything(x, _backend_of(backend))
        half = _everything(x.bfloat16(), _backend_of(backend))
    for a, b in zip(plain, cast):
        assert b.dtype == a.dtype and torch.equal(a, b)
    plain_half = _everything(x.bfloat16(), _backend_of(backend))
    for a, b in zip(plain_half, half):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", on("dwt2d", ("reference", "cpu")))
def test_autocast_gradients_and_steps(backend):
    """Backward after an autocast region, and the steps inside one, are as without autocast."""
    x = _randn(2, 3, 16, 14, dtype=torch.float32).requires_grad_()
    be = _backend_of(backend)
    (plain,) = torch.autograd.grad(sum(o.float().sum() for o in _everything(x, be)), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total = sum(o.float().sum() for o in _everything(x, be))
    (cast,) = torch.autograd.grad(total, x)
    assert_close(cast, plain, TOL[torch.float32], "gradient under autocast")
    x_nat, g = torch.rand(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    a, b = x_nat.clone(), x_nat.clone()
    wavefuse.wavelet_pgd_step(
        a, g, x_nat, 0.1, 0.05, hf_scale=0.5, norm="L2", backend=be("wavelet_pgd_step")
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        wavefuse.wavelet_pgd_step(
            b, g, x_nat, 0.1, 0.05, hf_scale=0.5, norm="L2", backend=be("wavelet_pgd_step")
        )
    assert torch.equal(a, b)


def test_autocast_mixed_coefficient_dtypes_are_refused():
    """Autocast can hand idwt2 an approximation in bfloat16 and details in float32: the ops do
    not guess a common dtype, they raise (cast the coefficients to one dtype first)."""
    ll, hi = wavefuse.dwt2(torch.rand(1, 2, 8, 8), "haar")
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="coeffs"):
        wavefuse.idwt2((ll.bfloat16(), hi), "haar")


# ---- more than 2**31 elements (GPU) ---------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
def test_more_than_2_31_elements(backend):
    """(1, 2, 32768, 32770) float16 = 2**31 + 131072 elements (4 GiB): int64 offsets. Haar with
    periodization on even sizes is local (each output reads one 2 x 2 block), so the last rows
    of the big result must equal the same backend's transform of the last rows alone (an index
    that wrapped reads another block: far more than rounding apart) and the reference's to one
    float16 rounding (the Triton kernel's arithmetic order differs from the reference's: on an
    H200 its result was an ulp off the reference's in the last row), and the step likewise."""
    reason = backends.why_not(backend, "dwt2d", "cuda")
    if reason is not None:
        pytest.skip(reason)
    torch.cuda.empty_cache()
    x = torch.randn(1, 2, 32768, 32770, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    ll, (ch, cv, cd) = wavefuse.dwt2(x, "haar", "periodization", backend=backend)
    tail = x[:, :, -8:, :]
    same = wavefuse.dwt2(tail, "haar", "periodization", backend=backend)
    ref = wavefuse.dwt2(tail, "haar", "periodization", backend="reference")
    for band, big in enumerate((ll, ch, cv, cd)):
        small, oracle = (same[0], *same[1])[band], (ref[0], *ref[1])[band]
        assert torch.equal(big[:, :, -4:, :], small), f"band {band}: not the tail's transform"
        assert_close(small, oracle, TOL[torch.float16], f"band {band} against the reference")
    del ll, ch, cv, cd
    step_backend = backend if backends.why_not(backend, "pgd_step", "cuda") is None else "reference"
    x_adv, g = x.clone(), torch.randn_like(x)
    wavefuse.pgd_step(x_adv, g, x, 0.03, 0.01, "Linf", -INF, INF, backend=step_backend)
    expected = tail.clone()
    wavefuse.pgd_step(
        expected, g[:, :, -8:, :], tail, 0.03, 0.01, "Linf", -INF, INF, backend="reference"
    )
    assert torch.equal(x_adv[:, :, -8:, :], expected)
    del x_adv, g
    e = wavefuse.band_energy(
        x,
        "haar",
        1,
        "periodization",
        backend=backend
        if backends.why_not(backend, "band_energy", "cuda") is None
        else "reference",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.isfinite(e).all() and e.shape == (1, 1, 3)
