"""pgd_step and wavelet_pgd_step: torchattacks' own attacks as the oracle (bit for bit in float32),
compositions of the transforms for the wavelet step, every dtype, opcheck, compile, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import pywt
import torch
import torch.nn.functional as F
from conftest import (
    ALL_MODES,
    TOL,
    assert_close,
    assert_step_close,
    cpu_backends,
    eps_telling_the_divisions_apart,
)

import wavefuse
from wavefuse import backends, reference
from wavefuse.filters import filter_bank
from wavefuse.ops import pgd_step as pgd_step_ops
from wavefuse.ops.pgd_step import _overlap, prepare_bounds

# Levels above dwt_max_level are part of the grids on purpose; they warn as PyWavelets does.
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")

torchattacks = pytest.importorskip("torchattacks")

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPE = (4, 3, 11, 9)  # odd sizes


STEP_BACKENDS = cpu_backends("pgd_step")
WAVELET_BACKENDS = cpu_backends("wavelet_pgd_step")


def _inputs(shape=SHAPE, dtype=torch.float32, spread=0.05):
    """x in [0, 1] (some pixels near the bounds, so the clamp acts), x_adv near it, a gradient."""
    x = torch.rand(*shape, dtype=torch.float64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    return x_adv.to(dtype), g.to(dtype), x.to(dtype)


# ----- torchattacks, the oracle -------------------------------------------------------------------


class _Linear(torch.nn.Module):
    """A model whose input gradient is a fixed random field (times the softmax error)."""

    def __init__(self, shape):
        super().__init__()
        self.fc = torch.nn.Linear(math.prod(shape[1:]), 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _input_grad(model, x_adv, labels):
    xa = x_adv.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(model(xa), labels), xa)
    return g


@pytest.mark.parametrize(
    "norm, eps, alpha, steps",
    [
        ("Linf", 8 / 255, 2 / 255, 7),
        ("Linf", 0.03, 0.01, 3),
        ("L2", 0.5, 0.2, 6),
        ("L2", 2.0, 0.7, 4),
    ],
)
@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_matches_torchattacks_bit_for_bit(norm, eps, alpha, steps, backend):
    """torchattacks.PGD / PGDL2 (steps > 1, so the projection and the [0, 1] clamp act) against the
    same loop with wavefuse.pgd_step: identical float32 bits at the end (for L2, kernels that sum
    the norms in another order than torch may differ in the last bits: see _assert_torchattacks)."""
    model = _Linear(SHAPE)
    x = torch.rand(*SHAPE)
    labels = torch.randint(0, 10, (SHAPE[0],))
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    expected = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, labels)

    x_adv = x.clone()
    for _ in range(steps):
        g = _input_grad(model, x_adv, labels)
        out = wavefuse.pgd_step(x_adv, g, x, eps, alpha, norm, backend=backend)
        assert out is x_adv
    assert not torch.equal(x_adv, x)
    delta = (x_adv - x).flatten(1)
    radius = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    assert (radius > 0.99 * eps).any(), "the projection never acted: the test would not see it"
    _assert_torchattacks(x_adv, expected, norm, backend)


def _assert_torchattacks(got, expected, norm, backend):
    """The reference is torchattacks op for op: bit-identical. A fused kernel's Linf update is
    elementwise and can be too; its L2 norms are reductions in its own order, so L2 results may
    differ from torch's by rounding (a few ulps), no more."""
    if backend == "reference" or norm == "Linf":
        assert torch.equal(got, expected), (got - expected).abs().max()
    else:
        assert_close(got, expected, 4 * torch.finfo(got.dtype).eps, f"{norm} {backend}")


def _torchattacks_update(x_adv, g, x, eps, alpha, norm):
    """torchattacks 3.5.1's update, copied from PGD.forward / PGDL2.forward (one step)."""
    if norm == "Linf":
        adv_images = x_adv.detach() + alpha * g.sign()
        delta = torch.clamp(adv_images - x, min=-eps, max=eps)
        return torch.clamp(x + delta, min=0, max=1).detach()
    batch_size = len(x)
    grad_norms = torch.norm(g.view(batch_size, -1), p=2, dim=1) + 1e-10
    g = g / grad_norms.view(batch_size, 1, 1, 1)
    adv_images = x_adv.detach() + alpha * g
    delta = adv_images - x
    delta_norms = torch.norm(delta.view(batch_size, -1), p=2, dim=1)
    factor = eps / delta_norms
    factor = torch.min(factor, torch.ones_like(delta_norms))
    delta = delta * factor.view(-1, 1, 1, 1)
    return torch.clamp(x + delta, min=0, max=1).detach()


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm, eps, alpha", [("Linf", 0.03, 0.02), ("L2", 0.3, 0.25)])
def test_replays_the_torchattacks_update(norm, eps, alpha, dtype, backend):
    """Random starting points (not only torchattacks' own trajectory), float and per-sample tensor
    bounds of equal value: the same bits as torchattacks' update code."""
    x_adv, g, x = _inputs(dtype=dtype)
    g[0] = 0  # a zero gradient: L2 divides by 1e-10, sign gives 0
    expected = _torchattacks_update(x_adv, g, x, eps, alpha, norm)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, eps, alpha, norm, backend=backend)
    _assert_torchattacks(got, expected, norm, backend)
    n = x.shape[0]
    eps_t = torch.full((n, 1, 1, 1), eps, dtype=dtype)
    alpha_t = torch.full((n, 1, 1, 1), alpha, dtype=dtype)
    lo = torch.zeros(1, dtype=dtype)
    got_t = wavefuse.pgd_step(x_adv.clone(), g, x, eps_t, alpha_t, norm, lo, 1.0, backend=backend)
    _assert_torchattacks(got_t, expected, norm, backend)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_projection_factor_is_torch_scalar_division_bit_for_bit(dtype, backend):
    """torchattacks' ``eps / delta_norms`` with a Python eps is torch's scalar division, the
    reciprocal times eps, which differs from a true division eps / ||delta|| in the last bit for
    some eps. Where every norm is exact in any summation order (one gradient entry 2^20, so
    g / (||g|| + 1e-10) = 1 exactly; delta = (3/16, 1/4), ||delta|| = 5/16), no kernel has a
    rounding excuse: the step must be torchattacks' bits for eps values where the two divisions
    give different steps (the test finds them, so it can fail)."""
    apart = eps_telling_the_divisions_apart([0.25, 3 / 16], 5 / 16, dtype, 313)
    x = torch.full((2, 2, 3, 4), 0.5, dtype=dtype)
    x_adv = x.clone()
    x_adv[:, 1, 2, 3] += 3 / 16
    g = torch.zeros_like(x)
    g[:, 0, 1, 1] = 2.0**20
    for eps in apart[:8]:
        expected = _torchattacks_update(x_adv, g, x, eps, 0.25, "L2")
        got = wavefuse.pgd_step(x_adv.clone(), g, x, eps, 0.25, "L2", backend=backend)
        assert torch.equal(got, expected), (eps, (got - expected).abs().max())


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("wave", ["haar", "db2"])
def test_wavelet_l2_projection_factor_is_torch_scalar_division_bit_for_bit(wave, backend):
    """The same for the wavelet step's L2 passes (the fused Haar kernel's own and the db2 path's):
    a gradient constant over each 4 x 4 plane, periodization, filters to a constant g' (the
    transform is shift-invariant), so g' / ||g'|| = 1/4 exactly whatever g' is; delta = 1/16
    everywhere plus x_adv - x = (10/16, 2/16) at two samples: ||delta|| = 12/16 exactly. The
    reference (the composition, then torchattacks' update) has the same exact norms, so the
    kernel must give its bits where the two divisions give different steps. float32 only: there
    1e-10 vanishes next to ||g'|| and the sums of squares are exact; in float64 neither holds."""
    dtype = torch.float32
    apart = eps_telling_the_divisions_apart([11 / 16, 3 / 16, 1 / 16], 12 / 16, dtype, 500)
    x = torch.full((2, 1, 4, 4), 0.5, dtype=dtype)
    x_adv = x.clone()
    x_adv[:, 0, 1, 2] += 10 / 16
    x_adv[:, 0, 3, 0] += 2 / 16
    g = torch.full_like(x, 3.0)
    g[1] = -0.75
    filters = filter_bank(wave, "dec", dtype)
    for eps in apart[:6]:
        expected = reference.wavelet_pgd_step_ref(
            x_adv, g, x, eps, 0.25, filters, "periodization", 1, [0.5], 0.0, 1.0, "L2"
        )
        got = wavefuse.wavelet_pgd_step(
            x_adv.clone(), g, x, eps, 0.25, wave, 1, "periodization", 0.5, "L2", backend=backend
        )
        assert torch.equal(got, expected), (eps, (got - expected).abs().max())


@pytest.mark.parametrize("backend", STEP_BACKENDS)
def test_zero_radius_l2_with_zero_delta_stays_finite(backend):
    """torchattacks computes eps / 0 * ... = NaN here; pgd_step keeps x (documented), on every
    backend (the reference is the oracle of the others: it must keep x too)."""
    x_adv, g, x = _inputs()
    g.zero_()
    x_adv.copy_(x)
    assert torch.isnan(_torchattacks_update(x_adv, g, x, 0.0, 0.1, "L2")).all()
    assert torch.equal(wavefuse.pgd_step(x_adv, g, x, 0.0, 0.1, "L2", backend=backend), x)


# ----- per-sample and per-channel bounds ----------------------------------------------------------


def _elementwise_oracle(x_adv, g, x, eps, alpha, lo, hi, norm):
    """The update in float64 written with torch.maximum/minimum (DESIGN.md's formula): equal to
    the torchattacks order of operations up to rounding."""
    x_adv, g, x = x_adv.double(), g.double(), x.double()
    eps, alpha, lo, hi = (torch.as_tensor(v, dtype=torch.float64) for v in (eps, alpha, lo, hi))
    if norm == "Linf":
        step = x_adv + alpha * g.sign()
        out = torch.minimum(torch.maximum(step, x - eps), x + eps)
    else:
        n = x.shape[0]
        g = g / (g.flatten(1).norm(dim=1) + 1e-10).view(n, 1, 1, 1)
        delta = x_adv + alpha * g - x
        norms = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        out = x + delta * torch.clamp(eps / norms, max=1)
    return torch.minimum(torch.maximum(out, lo), hi)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_unchecked_tensor_bounds_with_lo_above_hi_clamp_as_torch_does(norm, backend, monkeypatch):
    """Tensor bounds are value-checked only in eager mode on the CPU (docs/edge_policies.md): on
    a GPU or under torch.compile an entry with lo > hi reaches the kernel, which gives hi there,
    as torch.clamp(torch.clamp(v, min=lo), max=hi) does. The check is switched off here to stand
    for those callers."""
    monkeypatch.setattr(pgd_step_ops, "_check_values", lambda bounds: None)
    x_adv, g, x = _inputs(dtype=torch.float64, spread=0.2)
    lo = torch.tensor([0.7, 0.0, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
    hi = torch.tensor([0.3, 1.0, 0.9], dtype=torch.float64).view(1, 3, 1, 1)
    eps, alpha = (0.2, 0.05) if norm == "Linf" else (2.0, 0.5)
    expected = _elementwise_oracle(x_adv, g, x, eps, alpha, 0.0, 1.0, norm)
    expected = torch.clamp(torch.clamp(expected, min=lo), max=hi)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, eps, alpha, norm, lo, hi, backend=backend)
    assert_close(got, expected, 1e-12, norm)
    assert torch.equal(got[:, 0], torch.full_like(got[:, 0], 0.3))


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_per_sample_and_per_channel_bounds(norm, backend):
    """Normalised-space attacks: eps, alpha, lo, hi per channel (eps per sample for L2)."""
    x_adv, g, x = _inputs(dtype=torch.float64, spread=0.2)
    n, c = x.shape[:2]
    eps = (0.05 + 0.1 * torch.rand(n, 1, 1, 1, dtype=torch.float64)) * (2 if norm == "L2" else 1)
    if norm == "Linf":
        eps = eps * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64).view(1, c, 1, 1)
    alpha = torch.tensor([0.02, 0.03, 0.05], dtype=torch.float64).view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64).view(1, c, 1, 1)
    hi = torch.tensor([0.9, 1.0, 0.6], dtype=torch.float64).view(c, 1, 1)  # 3-D: broadcasts too
    expected = _elementwise_oracle(x_adv, g, x, eps, alpha, lo, hi, norm)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, eps, alpha, norm, lo, hi, backend=backend)
    assert_close(got, expected, 1e-12, norm)
    assert not torch.equal(got, x_adv)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_tensor_bounds_with_lo_equal_to_hi_are_valid(norm, backend):
    """lo <= hi is the contract (DESIGN.md): a channel whose range is one value (lo == hi, a
    tensor bound) is valid, and the step clamps it to that value."""
    x_adv, g, x = _inputs(dtype=torch.float64, spread=0.2)
    lo = torch.tensor([0.25, 0.0, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    hi = torch.tensor([0.25, 1.0, 0.9], dtype=torch.float64).view(1, 3, 1, 1)
    expected = _elementwise_oracle(x_adv, g, x, 0.3, 0.05, lo, hi, norm)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, 0.3, 0.05, norm, lo, hi, backend=backend)
    assert_close(got, expected, 1e-12, norm)
    assert torch.equal(got[:, 0], torch.full_like(got[:, 0], 0.25))


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_tensor_eps_entries_are_checked_and_float_lo_may_equal_hi(norm):
    """eps >= 0 entry by entry: a zero radius (a per-sample eps warm-up) keeps that sample at x,
    and one negative entry among valid ones is refused (every entry is checked, on CPU); float
    bounds lo == hi stay valid next to a tensor eps (the checks that tensor bounds take)."""
    x_adv, g, x = _inputs(dtype=torch.float64, spread=0.2)
    eps = torch.full((x.shape[0], 1, 1, 1), 0.1, dtype=torch.float64)
    eps[0] = 0.0
    expected = _elementwise_oracle(x_adv, g, x, eps, 0.05, 0.0, 1.0, norm)
    got = wavefuse.pgd_step(x_adv.clone(), g, x, eps, 0.05, norm, backend="reference")
    assert_close(got, expected, 1e-12, norm)
    assert torch.equal(got[0], x[0])
    flat = wavefuse.pgd_step(x_adv.clone(), g, x, eps, 0.05, norm, 0.5, 0.5)
    assert torch.equal(flat, torch.full_like(x, 0.5))
    eps[0] = -0.1
    with pytest.raises(ValueError, match="eps must be >= 0; the tensor eps has an entry"):
        wavefuse.pgd_step(x_adv.clone(), g, x, eps, 0.05, norm)


@pytest.mark.parametrize("backend", STEP_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_every_dtype(norm, dtype, backend):
    """Half types compute in float32 and round once: within the tolerance table of the float64
    update of the same (rounded) inputs; dtype and memory format kept, x_nat and grad untouched."""
    x_adv, g, x = _inputs(dtype=dtype, spread=0.1)
    x_adv = x_adv.contiguous(memory_format=torch.channels_last)
    g0, x0 = g.clone(), x.clone()
    expected = _elementwise_oracle(x_adv, g, x, 0.05, 0.02, 0.0, 1.0, norm)
    got = wavefuse.pgd_step(x_adv, g, x, 0.05, 0.02, norm, backend=backend)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert_step_close(got, expected, TOL[dtype], f"{norm} {dtype}")
    assert torch.equal(g, g0) and torch.equal(x, x0)


# ----- wavelet_pgd_step ---------------------------------------------------------------------------


def _filtered_grad(g, wave, mode, level, scales):
    """idwt(scale_hf(dwt(g))) from the public transforms (float64), cropped to g's size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coeffs = wavefuse.wavedec2(g.double(), wave, mode, level, backend="reference")
        for j in range(1, level + 1):  # coeffs[-j] is level j
            coeffs[-j] = tuple(b * scales[j - 1] for b in coeffs[-j])
        rec = wavefuse.waverec2(coeffs, wave, mode, backend="reference")
    return rec[..., : g.shape[-2], : g.shape[-1]]


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym5"])
def test_wavelet_step_matches_the_composition(wave, mode, backend):
    """Levels 1-3, both norms, odd sizes, float64: pgd_step on waverec2(scaled wavedec2(g))."""
    x_adv, g, x = _inputs(shape=(2, 2, 13, 10), dtype=torch.float64, spread=0.1)
    for level in (1, 2, 3):
        scales = [0.0, 0.5, -0.25][:level]
        g_f = _filtered_grad(g, wave, mode, level, scales)
        for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
            expected = wavefuse.pgd_step(x_adv.clone(), g_f, x, eps, 0.03, norm)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = wavefuse.wavelet_pgd_step(
                    x_adv.clone(), g, x, eps, 0.03, wave, level, mode, scales, norm, backend=backend
                )
            assert_close(got, expected, 1e-10, f"{wave} {mode} level {level} {norm}")


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("mode", ["symmetric", "periodization", "reflect"])
def test_wavelet_step_large_planes_and_strides(mode, layout, backend):
    """Both CPU paths of longer filters: planes of at most 128 x 128 samples run kLanes planes at
    once (75 x 41, 41 x 75), larger ones one plane per task in blocks of 32 rows (133 x 129); db4
    and sym5 down to 3 levels, a gradient in every layout, float64 against the composition of the
    reference transforms."""
    for shape in ((2, 3, 75, 41), (1, 2, 41, 75), (1, 2, 133, 129)):
        x_adv, g, x = _inputs(shape=shape, dtype=torch.float64, spread=0.1)
        if layout == "channels_last":
            g = g.contiguous(memory_format=torch.channels_last)
        elif layout == "transposed":
            g = g.transpose(-1, -2).contiguous().transpose(-1, -2)
        for wave, level, scales in (("db4", 3, [0.0, 0.5, 2.0]), ("sym5", 2, [0.25, -1.0])):
            g_f = _filtered_grad(g, wave, mode, level, scales)
            for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
                expected = wavefuse.pgd_step(x_adv.clone(), g_f, x, eps, 0.03, norm)
                got = wavefuse.wavelet_pgd_step(
                    x_adv.clone(),
                    g,
                    x,
                    eps,
                    0.03,
                    wave,
                    level,
                    mode,
                    scales,
                    norm,
                    backend=backend,
                )
                assert_close(got, expected, 1e-10, f"{shape} {wave} {mode} {level} {norm}")


def test_wavelet_step_defaults_are_one_haar_level_low_pass():
    """wavelet_pgd_step's defaults (haar, level=1, periodization, hf_scale=0, Linf, [0, 1]): the
    step follows the gradient's 2 x 2 block means (Haar's approximation band, inverted)."""
    x_adv, g, x = _inputs(shape=(2, 3, 8, 6), dtype=torch.float64, spread=0.2)
    blocks = F.avg_pool2d(g, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    expected = _elementwise_oracle(x_adv, blocks, x, 0.1, 0.05, 0.0, 1.0, "Linf")
    got = wavefuse.wavelet_pgd_step(x_adv.clone(), g, x, 0.1, 0.05)
    assert_close(got, expected, 1e-12, "defaults")


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_wavelet_step_every_dtype(dtype, backend):
    """L2 (a continuous function of g, unlike sign) against the float64 composition."""
    x_adv, g, x = _inputs(shape=(2, 3, 15, 12), dtype=dtype, spread=0.1)
    g_f = _filtered_grad(g, "db2", "symmetric", 2, [0.0, 0.3])
    expected = _elementwise_oracle(x_adv, g_f, x, 0.5, 0.3, 0.0, 1.0, "L2")
    scales = [0.0, 0.3]
    got = wavefuse.wavelet_pgd_step(
        x_adv, g, x, 0.5, 0.3, "db2", 2, "symmetric", scales, "L2", backend=backend
    )
    assert got.dtype == dtype
    assert_step_close(got, expected, TOL[dtype], str(dtype))


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_hf_scale_one_is_exactly_pgd_step(norm, dtype, backend):
    x_adv, g, x = _inputs(dtype=dtype)
    expected = wavefuse.pgd_step(x_adv.clone(), g, x, 0.04, 0.01, norm, backend=backend)
    for scale in (1.0, [1, 1, 1]):
        got = wavefuse.wavelet_pgd_step(
            x_adv.clone(), g, x, 0.04, 0.01, "db4", 3, "zero", scale, norm, backend=backend
        )
        assert torch.equal(got, expected)


def _pywt_filtered_grad(g, wave, mode, level, scales):
    """idwt(scale_hf(dwt(g))) by PyWavelets itself, plane by plane (float64), cropped to g's
    size: an oracle independent of wavefuse's transforms."""
    out = torch.empty(g.shape, dtype=torch.float64)
    for n in range(g.shape[0]):
        for c in range(g.shape[1]):
            coeffs = pywt.wavedec2(g[n, c].double().numpy(), wave, mode, level)
            for j in range(1, level + 1):  # coeffs[-j] is level j
                coeffs[-j] = tuple(b * scales[j - 1] for b in coeffs[-j])
            rec = pywt.waverec2(coeffs, wave, mode)[: g.shape[-2], : g.shape[-1]]
            out[n, c] = torch.from_numpy(rec)
    return out


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize(
    "wave, mode, scales",
    [
        ("haar", "periodization", [1.0, 0.0]),
        ("haar", "symmetric", [0.0, 1.0]),
        ("db2", "periodization", [1.0, 0.5, 1.0]),
        ("db2", "zero", [0.25, 1.0]),
    ],
)
def test_per_level_scales_with_some_levels_at_one(wave, mode, scales, backend):
    """A per-level hf_scale in which only some entries are 1 is no identity filter: the levels
    whose scale is not 1 still filter the gradient (PyWavelets' own transforms as the oracle)."""
    x_adv, g, x = _inputs(shape=(2, 2, 16, 12), dtype=torch.float64, spread=0.1)
    level = len(scales)
    g_f = _pywt_filtered_grad(g, wave, mode, level, scales)
    for norm, eps in (("Linf", 0.05), ("L2", 0.4)):
        expected = _elementwise_oracle(x_adv, g_f, x, eps, 0.03, 0.0, 1.0, norm)
        got = wavefuse.wavelet_pgd_step(
            x_adv.clone(), g, x, eps, 0.03, wave, level, mode, scales, norm, backend=backend
        )
        assert_close(got, expected, 1e-10, f"{wave} {mode} {scales} {norm}")


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("wave, level", [("haar", 1), ("haar", 3), ("db3", 2)])
def test_hf_scale_zero_l2_step_has_no_detail_content(wave, level, backend):
    """Periodization, L2, no projection and no clamp: every detail band of the step is zero."""
    x_adv, g, x = _inputs(shape=(3, 2, 16, 24), dtype=torch.float64)
    inf = math.inf
    before = x_adv.clone()
    wavefuse.wavelet_pgd_step(
        x_adv, g, x, inf, 0.5, wave, level, "periodization", 0.0, "L2", -inf, inf, backend=backend
    )
    step = x_adv - before
    coeffs = wavefuse.wavedec2(step, wave, "periodization", level)
    assert coeffs[0].abs().max() > 1e-3
    for bands in coeffs[1:]:
        for b in bands:
            assert b.abs().max() < 1e-12 * coeffs[0].abs().max()
    # and the plain step does have high-frequency content
    plain = wavefuse.pgd_step(before.clone(), g, x, inf, 0.5, "L2", -inf, inf) - before
    assert wavefuse.wavedec2(plain, wave, "periodization", level)[-1][2].abs().max() > 1e-3


def test_reference_functions_agree_with_the_ops():
    x_adv, g, x = _inputs(dtype=torch.float64)
    filters = filter_bank("sym5", "dec", torch.float64)
    for norm in ("Linf", "L2"):
        expected = reference.wavelet_pgd_step_ref(
            x_adv, g, x, 0.1, 0.05, filters, "reflect", 2, [0.2, 0.7], 0.0, 1.0, norm
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = wavefuse.wavelet_pgd_step(
                x_adv.clone(),
                g,
                x,
                0.1,
                0.05,
                "sym5",
                2,
                "reflect",
                [0.2, 0.7],
                norm,
                backend="reference",
            )
        assert torch.equal(got, expected)


# ----- the custom ops: opcheck, compile -----------------------------------------------------------


def _op_args(bounds_as_tensors: bool, norm: str = "Linf"):
    x_adv, g, x = _inputs(shape=(2, 3, 9, 6), dtype=torch.float64)
    if bounds_as_tensors:
        eps = torch.full((2, 1, 1, 1), 0.05, dtype=torch.float64)
        bounds = prepare_bounds(x, eps, 0.02, torch.zeros(1, 3, 1, 1).double(), 1.0, norm)
    else:
        bounds = prepare_bounds(x, 0.05, 0.02, 0.0, 1.0, norm)
    return x_adv, g, x, bounds


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("bounds_as_tensors", [False, True])
def test_opcheck(bounds_as_tensors, norm, backend):
    x_adv, g, x, bounds = _op_args(bounds_as_tensors, norm)
    torch.library.opcheck(
        torch.ops.wavefuse.pgd_step.default, (x_adv, g, x, *bounds, norm, backend)
    )
    filters = filter_bank("db2", "dec", torch.float64)
    for scales in ([0.0, 0.5], [1.0, 1.0]):
        args = (x_adv, g, x, *bounds, filters, "symmetric", 2, scales, norm, backend)
        torch.library.opcheck(torch.ops.wavefuse.wavelet_pgd_step.default, args)


def test_torch_compile_fullgraph_steps():
    """Both steps, float and tensor bounds, one compiled graph: x_adv is mutated in place exactly
    as in eager mode. aot_eager runs the same capture and functionalisation as inductor; inductor
    itself passes too but costs 30 s of C++ compilation from a cold cache on 2 cores."""

    def steps(x_adv, g1, g2, x, eps, alpha):
        wavefuse.wavelet_pgd_step(x_adv, g1, x, eps, 0.01, "haar", 2, "periodization", [0.0, 0.5])
        wavefuse.pgd_step(x_adv, g2, x, eps, alpha, "L2", lo=-1.0, hi=2.0)
        return x_adv

    x_adv, g, x = _inputs(shape=(2, 2, 8, 8), dtype=torch.float64)
    g2 = torch.randn_like(g)
    alpha = torch.tensor([0.1, 0.2], dtype=torch.float64).view(2, 1, 1, 1)
    expected = steps(x_adv.clone(), g, g2, x, 0.05, alpha)
    compiled = torch.compile(steps, fullgraph=True, backend="aot_eager")
    got = x_adv.clone()
    assert compiled(got, g, g2, x, 0.05, alpha) is got
    assert_close(got, expected, 1e-12, "compiled steps")
    assert not torch.equal(got, x_adv)
    # Another eps: the recompiled graph takes it as a symbolic float, which validation must trace.
    expected = steps(x_adv.clone(), g, g2, x, 0.07, alpha)
    assert_close(compiled(x_adv.clone(), g, g2, x, 0.07, alpha), expected, 1e-12, "eps=0.07")


# ----- eager calls skip the custom op's Python layers; anything that intercepts ops still sees it --


@pytest.mark.parametrize("backend", WAVELET_BACKENDS)
def test_eager_direct_path_bumps_the_version_and_agrees_with_the_op(backend):
    """Plain eager calls run the implementation directly (ops.pgd_step.eager_direct): the result
    is the op's, and x_adv's version counter moves as the op's ADInplaceOrView layer moves it, so
    autograd still notices a step on a tensor saved for backward."""
    from wavefuse.ops.pgd_step import eager_direct

    x_adv, g, x = _inputs(dtype=torch.float64)
    assert eager_direct(x_adv, g, x)
    for call, op_args in (
        (
            lambda t: wavefuse.pgd_step(t, g, x, 0.05, 0.01, "L2", backend=backend),
            lambda t: (t, g, x, *prepare_bounds(t, 0.05, 0.01, 0.0, 1.0, "L2"), "L2", backend),
        ),
        (
            lambda t: wavefuse.wavelet_pgd_step(
                t, g, x, 0.05, 0.01, "db2", 2, "symmetric", [0.0, 0.5], backend=backend
            ),
            lambda t: (
                t, g, x, *prepare_bounds(t, 0.05, 0.01, 0.0, 1.0, "Linf"),
                filter_bank("db2", "dec", torch.float64), "symmetric", 2, [0.0, 0.5], "Linf",
                backend,
            ),
        ),
    ):  # fmt: skip
        got, via_op = x_adv.clone(), x_adv.clone()
        version = got._version
        call(got)
        assert got._version > version
        op = (torch.ops.wavefuse.pgd_step if len(op_args(via_op)) == 13 else
              torch.ops.wavefuse.wavelet_pgd_step)  # fmt: skip
        op(*op_args(via_op))
        assert torch.equal(got, via_op)
    weight = torch.rand_like(x_adv, requires_grad=True)
    saved = x_adv.clone()
    loss = (weight * saved).sum()  # mul saves `saved` for weight's gradient
    wavefuse.pgd_step(saved, g, x, 0.05, 0.01, backend=backend)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_dispatch_modes_and_subclasses_still_see_the_op():
    """A TorchDispatchMode (what FakeTensor, functionalisation and torch.func build on) sees
    wavefuse::pgd_step and wavefuse::wavelet_pgd_step: with one active, calls go through the op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x_adv, g, x = _inputs(dtype=torch.float64)
    with Record():
        wavefuse.pgd_step(x_adv, g, x, 0.05, 0.01)
        wavefuse.wavelet_pgd_step(x_adv, g, x, 0.05, 0.01, "haar", 1, "periodization", 0.5)
    assert any("wavefuse.pgd_step" in f for f in seen), seen
    assert any("wavefuse.wavelet_pgd_step" in f for f in seen), seen


# ----- bad input ----------------------------------------------------------------------------------

X = torch.rand(2, 3, 8, 8)
G = torch.randn(2, 3, 8, 8)


_BUF = torch.rand(2, 2, 3, 9, 8)  # two samples' buffers side by side, overlapping by one row


def _inference(t: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return t.clone()


def _step(**kw):
    args = {"x_adv": X.clone(), "grad": G, "x_nat": X, "eps": 0.1, "alpha": 0.01}
    args.update(kw)
    return lambda: wavefuse.pgd_step(**args)


def _wstep(**kw):
    args = {"x_adv": X.clone(), "grad": G, "x_nat": X, "eps": 0.1, "alpha": 0.01, "level": 2}
    args.update(kw)
    return lambda: wavefuse.wavelet_pgd_step(**args)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (_step(grad=G[:, :2]), ValueError, "grad has shape (2, 2, 8, 8) but x_adv has shape"),
        (_step(x_nat=X[..., :7]), ValueError, "x_nat has shape (2, 3, 8, 7) but x_adv"),
        (_step(x_adv=X[:1].clone()), ValueError, "grad has shape (2, 3, 8, 8) but x_adv"),
        (_step(grad=G[0]), ValueError, "grad must be 4-D (N, C, H, W)"),
        (_step(grad=G.double()), TypeError, "x_adv, grad, x_nat: all tensors must have one dtype"),
        (_step(x_nat=X.to("meta")), ValueError, "x_adv, grad, x_nat: all tensors must be on one"),
        (_step(grad=G.int()), TypeError, "grad has dtype torch.int32; allowed: float16"),
        (_step(eps=-0.1), ValueError, "eps must be >= 0, got eps=-0.1"),
        (_step(eps=math.nan), ValueError, "eps must be >= 0, got eps=nan"),
        (_step(eps=-torch.ones(2, 1, 1, 1)), ValueError, "eps must be >= 0; the tensor eps"),
        (_step(eps="0.1"), TypeError, "eps must be a float or a tensor, got str"),
        (_step(eps=True), TypeError, "eps must be a float or a tensor, got bool"),
        (_step(alpha=math.inf), ValueError, "alpha must be finite"),
        (_step(eps=torch.ones(2)), ValueError, "eps has shape (2,); allowed: a float, or a tensor"),
        (_step(eps=torch.ones(2)), ValueError, "use .view(-1, 1, 1, 1)"),
        (_step(eps=torch.ones(3, 1, 1, 1)), ValueError, "eps has shape (3, 1, 1, 1); allowed"),
        (_step(alpha=torch.ones(1, 3, 8, 1)), ValueError, "alpha has shape (1, 3, 8, 1); allowed"),
        (_step(lo=torch.ones(1, 1, 1, 1, 1)), ValueError, "lo has shape (1, 1, 1, 1, 1)"),
        (_step(eps=torch.ones(1, 3, 1, 1), norm="L2"), ValueError, "eps has shape (1, 3, 1, 1)"),
        (_step(eps=torch.ones(1, 3, 1, 1), norm="L2"), ValueError, "one radius per sample"),
        (
            _step(eps=torch.ones(2, 1, 1, 1, dtype=torch.int64)),
            TypeError,
            "eps has dtype torch.int64",
        ),
        (
            _step(eps=torch.ones(2, 1, 1, 1, device="meta")),
            ValueError,
            "eps is on meta, x_adv on cpu",
        ),
        (
            _step(lo=1.0, hi=0.0),
            ValueError,
            "lo=1.0 > hi=0.0: the clamp range must satisfy lo <= hi",
        ),
        (_step(lo=torch.ones(1, 3, 1, 1), hi=0.5), ValueError, "lo > hi for some entries"),
        (_step(hi=math.nan), ValueError, "hi must not be NaN"),
        (_step(lo=math.nan), ValueError, "lo must not be NaN"),
        (_step(alpha=math.nan), ValueError, "alpha must be finite"),
        (_step(norm="l2"), ValueError, "norm='l2' is not supported; allowed: Linf, L2"),
        (_step(norm=2), ValueError, "norm=2 is not supported; allowed: Linf, L2"),
        (_step(backend="fast"), ValueError, "backend='fast' is not one of"),
        (_step(x_adv=X), ValueError, "x_adv overlaps x_nat in memory"),
        (_step(x_adv=X.clone().requires_grad_()), ValueError, "x_adv requires grad"),
        (
            _step(x_adv=X[:1].clone().expand(2, 3, 8, 8)),
            ValueError,
            "x_adv has elements that share",
        ),
        (_wstep(x_adv=X[:1].clone().expand(2, 3, 8, 8)), ValueError, "x_adv has elements that"),
        (_step(x_adv=_inference(X)), ValueError, "x_adv is an inference tensor"),
        (_step(x_nat=_BUF[0, :, :, 1:], x_adv=_BUF[0, :, :, :-1]), ValueError, "x_adv overlaps"),
        (_wstep(grad=_BUF[1, :, :, 1:], x_adv=_BUF[1, :, :, :-1]), ValueError, "overlaps grad"),
        (
            _wstep(hf_scale=[0.0]),
            ValueError,
            "hf_scale has 1 entries; allowed: a float or a sequence of 2",
        ),
        (_wstep(hf_scale="low"), TypeError, "hf_scale must be a float or a sequence of 2 floats"),
        (_wstep(hf_scale=[0.0, math.nan]), ValueError, "hf_scale must be finite"),
        (_wstep(wave="bior2.2"), ValueError, "wave='bior2.2' is not supported"),
        (_wstep(mode="smooth"), ValueError, "mode='smooth' is not supported; allowed: zero"),
        (_wstep(level=-1), ValueError, "Level value of -1 is too low"),
        (_wstep(eps=-1.0), ValueError, "eps must be >= 0"),
        (_wstep(grad=G[..., :5]), ValueError, "grad has shape (2, 3, 8, 5) but x_adv"),
        (
            _wstep(
                x_adv=torch.rand(1, 1, 2, 8),
                grad=torch.rand(1, 1, 2, 8),
                x_nat=torch.rand(1, 1, 2, 8),
                mode="reflect",
            ),
            ValueError,
            "grad (level 2): mode='reflect' needs at least 2 samples",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    escaped = match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    with pytest.raises(exc, match=escaped.replace("*", r"\*")):
        call()


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_disjoint_views_of_one_buffer_are_fine(norm, backend):
    """x_adv and x_nat halves of one buffer (torch.cat([x_nat, x_adv]), TRADES-style): no false
    alarm, and the same result as separate tensors."""
    both = torch.cat([X, X + 0.01 * G])
    expected = wavefuse.pgd_step(both[2:].clone(), G, X.clone(), 0.1, 0.01, norm, backend=backend)
    wavefuse.pgd_step(both[2:], G, both[:2], 0.1, 0.01, norm, backend=backend)
    assert torch.equal(both[2:], expected) and torch.equal(both[:2], X)


@pytest.mark.parametrize("backend", cpu_backends())
def test_adjacent_views_in_different_layouts_are_fine(backend):
    """x_nat and x_adv in back-to-back halves of one flat buffer, one of them channels_last:
    their byte spans touch but share no element (the span ends are exclusive), so no false
    alarm, and the result is the separate tensors'."""
    buf = torch.empty(2 * X.numel(), dtype=X.dtype)
    x_nat = buf[: X.numel()].view(X.shape)
    x_adv = buf[X.numel() :].view(2, 8, 8, 3).permute(0, 3, 1, 2)  # channels_last
    x_nat.copy_(X)
    x_adv.copy_((X + 0.05 * G).clamp(0, 1))
    expected = wavefuse.pgd_step(x_adv.clone(), G, X, 0.1, 0.01, backend=backend)
    wavefuse.pgd_step(x_adv, G, x_nat, 0.1, 0.01, backend=backend)
    assert torch.equal(x_adv, expected) and torch.equal(x_nat, X)


@pytest.mark.parametrize("backend", cpu_backends())
def test_interleaved_and_stacked_views_are_fine(backend):
    """Views that share a buffer's span but no element (interleaved columns, the slices of a
    stack along dim 1) are accepted, give the separate tensors' result and leave the others
    unchanged."""
    buf = torch.stack([X, (X + 0.05 * G).clamp(0, 1)], dim=1)  # (2, 2, 3, 8, 8)
    x_nat, x_adv = buf[:, 0], buf[:, 1]
    expected = wavefuse.pgd_step(x_adv.clone(), G, x_nat.clone(), 0.1, 0.01, backend=backend)
    wavefuse.pgd_step(x_adv, G, x_nat, 0.1, 0.01, backend=backend)
    assert torch.equal(x_adv, expected) and torch.equal(x_nat, X)
    cols = torch.stack([G, (X + 0.05 * G).clamp(0, 1)], dim=-1).flatten(-2)  # (2, 3, 8, 16)
    g, x_adv = cols[..., ::2], cols[..., 1::2]
    expected = wavefuse.wavelet_pgd_step(
        x_adv.clone(), g.clone(), X, 0.1, 0.01, "haar", 1, "zero", 0.5, backend=backend
    )
    wavefuse.wavelet_pgd_step(x_adv, g, X, 0.1, 0.01, "haar", 1, "zero", 0.5, backend=backend)
    assert torch.equal(x_adv, expected) and torch.equal(g, G)


@pytest.mark.parametrize("backend", cpu_backends())
def test_steps_never_put_x_adv_into_a_graph(backend):
    """A gradient that requires grad (create_graph=True) or an x_nat that does: x_adv stays out of
    autograd on every backend, so the next step runs."""
    g, x = G.clone().requires_grad_(), X.clone().requires_grad_()
    x_adv = X.clone()
    for _ in range(2):
        wavefuse.pgd_step(x_adv, g, x, 0.1, 0.01, backend=backend)
        wavefuse.wavelet_pgd_step(x_adv, g, x, 0.1, 0.01, "db2", 1, "zero", 0.5, backend=backend)
        assert not x_adv.requires_grad and x_adv.grad_fn is None


def test_overlap_check_is_exact_for_views_of_one_shape():
    """_overlap against the element sets themselves, on random pairs of views of one buffer
    with one shape and strides (what a lattice test decides) and on dense views."""
    gen = torch.Generator().manual_seed(0)
    buf = torch.arange(4000, dtype=torch.float32)

    def elements(t):
        return set(t.flatten().tolist())  # buf holds each index once: values are addresses

    for _ in range(400):
        sizes = [int(v) for v in torch.randint(1, 4, (4,), generator=gen)]
        steps = [int(v) for v in torch.randint(1, 3, (4,), generator=gen)]
        base = buf[:2000].view(10, 10, 4, 5)[: sizes[0] * steps[0] : steps[0]]
        view = base[:, : sizes[1] * steps[1] : steps[1], :: steps[2], :: steps[3]]
        shift = int(torch.randint(0, 300, (), generator=gen))
        other = buf[shift : shift + 2000].view(10, 10, 4, 5)[: sizes[0] * steps[0] : steps[0]]
        other = other[:, : sizes[1] * steps[1] : steps[1], :: steps[2], :: steps[3]]
        assert _overlap(view, other) == bool(elements(view) & elements(other)), (sizes, steps)
    dense = buf[:120].view(2, 3, 4, 5)
    assert _overlap(dense, buf[60:180].view(2, 3, 4, 5).transpose(2, 3))  # dense, spans meet
    assert not _overlap(dense, buf[120:240].view(2, 3, 4, 5))  # spans apart
    # other strides whose spans meet: refused (a real overlap would be stepped silently)
    cols = buf[:768].view(2, 3, 8, 16)
    assert _overlap(cols[..., ::2], cols[..., :8])
    with pytest.raises(ValueError, match="x_adv overlaps grad"):
        wavefuse.pgd_step(cols[..., ::2], cols[..., :8], X, 0.1, 0.01)
    x_adv = buf[1000:1384].view(2, 3, 8, 8)
    with pytest.raises(ValueError, match="x_adv overlaps grad"):
        wavefuse.pgd_step(x_adv, x_adv[:1].expand_as(x_adv), X, 0.1, 0.01)


@pytest.mark.skipif(
    backends.why_not("cpu", "pgd_step", "cpu") is not None, reason="no C++ pgd_step kernel"
)
@pytest.mark.parametrize("kernel", ["_pgd_step_kernel", "_wavelet_pgd_step_kernel"])
def test_cpu_kernels_refuse_overlapping_x_adv(kernel):
    """The C++ kernels' own check (direct calls, compiled graphs): parallel tasks would race."""
    filters = filter_bank("db2", "dec", torch.float32)
    wave = (filters, "symmetric", 1, [0.5]) if kernel.startswith("_wavelet") else ()
    op = getattr(torch.ops.wavefuse, kernel)
    expanded = X[:1].clone().expand(2, 3, 8, 8)
    for x_adv, x_nat, what in ((expanded, X, "unsupported operation"), (X, X, "unsupported")):
        with pytest.raises(RuntimeError, match=what):
            op(x_adv, G, x_nat, 0.1, 0.01, 0.0, 1.0, None, None, None, None, *wave, "Linf")


def test_bad_input_leaves_x_adv_untouched():
    x_adv = X.clone()
    with pytest.raises(ValueError):
        wavefuse.pgd_step(x_adv, G, X, 0.1, 0.01, lo=1.0, hi=0.0)
    assert torch.equal(x_adv, X)


def test_cuda_chain_dispatch_rule(monkeypatch):
    """wavefuse.ops.pgd_step's choice of the CUDA approximation chain (_chain_pgd_step_kernel),
    checked on the CPU with the kernel replaced by a recorder: a bank the fused Haar kernel does
    not take (not two taps, or deeper than its 6 levels) with perfect reconstruction gets the
    chain, cut to the levels its scales need (separable.chain_depth); Haar within 6 levels, a
    bank without perfect reconstruction and an empty tensor do not (the composition runs). The
    last argument asks for the one-launch cascade where separable.cascade_fits: on CPU tensors one
    "SM", so 6 planes fit at 2 per SM, not at 7; never for a plane over CASCADE_MAX_PLANE or
    more levels than the CUDA cascade takes."""
    from wavefuse.ops import pgd_step as ops
    from wavefuse.ops import separable

    calls = []
    monkeypatch.setattr(ops, "_has_cuda_chain", lambda: True)
    monkeypatch.setattr(
        torch.ops.wavefuse, "_chain_pgd_step_kernel", lambda *a: calls.append(a[11:])
    )
    x = torch.rand(2, 3, 80, 70, dtype=torch.float64)
    bounds = prepare_bounds(x, 0.05, 0.01, 0.0, 1.0, "Linf")
    db4 = filter_bank("db4", "dec", torch.float64)
    haar = filter_bank("haar", "dec", torch.float64)
    bad = torch.tensor([[0.3, 0.9, 0.1, -0.2], [0.5, -0.4, 0.2, 0.7]], dtype=torch.float64)

    def chain(filters, level, scales, x=x):
        calls.clear()
        args = (filters, "symmetric", level, scales, "Linf")
        used = ops._cuda_chain_step(x.clone(), x, x, bounds, *args)
        assert used == bool(calls)
        return calls[0][1:4] if calls else None

    def cascade():
        return calls[0][-1]

    assert chain(db4, 3, [0.0, 0.5, -0.25]) == ("symmetric", 3, [0.0, 0.5, -0.25])
    assert chain(db4, 3, [0.5, 1.0, 1.0]) == ("symmetric", 1, [0.5])
    assert chain(db4, 3, [0.3, 0.3, 1.0]) == ("symmetric", 2, [0.3, 0.3])
    assert chain(haar, 7, [0.5] * 7) == ("symmetric", 7, [0.5] * 7)
    assert chain(haar, 6, [0.5] * 6) is None
    assert chain(bad, 2, [0.3, 0.6]) is None
    assert chain(db4, 2, [0.3, 0.6], x=x[:0]) is None
    chain(db4, 3, [0.0, 0.5, -0.25])
    assert cascade() is True
    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 7)
    chain(db4, 3, [0.0, 0.5, -0.25])
    assert cascade() is False
    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0)
    monkeypatch.setattr(separable, "CASCADE_MAX_PLANE", 80 * 70 - 1)
    chain(db4, 3, [0.0, 0.5, -0.25])
    assert cascade() is False
    monkeypatch.setattr(separable, "CASCADE_MAX_PLANE", 80 * 70)
    chain(db4, 3, [0.0, 0.5, -0.25])
    assert cascade() is True
    monkeypatch.setattr(ops, "_CUDA_CASCADE_MAX_LEVELS", 2)
    chain(db4, 3, [0.0, 0.5, -0.25])
    assert cascade() is False


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_op_refuses_hf_scale_of_another_length(backend):
    """The op (below the public function, which expands a float) takes one scale per level: a
    shorter or longer list is a ValueError on every backend, before any kernel."""
    if backends.why_not(backend, "wavelet_pgd_step", "cpu"):
        pytest.skip(backends.why_not(backend, "wavelet_pgd_step", "cpu"))
    x = torch.rand(1, 2, 9, 8, dtype=torch.float64)
    bounds = prepare_bounds(x, 0.5, 0.03, 0.0, 1.0, "L2")
    filters = filter_bank("db2", "dec", torch.float64)
    for scales in ([0.5], [0.5, 0.5, 0.5]):
        x_adv = x.clone()
        with pytest.raises(ValueError, match="one per level"):
            args = (*bounds, filters, "symmetric", 2, scales, "L2", backend)
            torch.ops.wavefuse.wavelet_pgd_step(x_adv, x, x, *args)
        assert torch.equal(x_adv, x)
