"""The CPU kernels' AVX-512 copies against their AVX2 code (csrc/cpu/planes.h, avx512_setting).

On a CPU with AVX-512, the filtering tasks have x86-64-v4 copies: the plane-vector tasks (planes
up to 128 x 128: one level of a transform or its adjoint, band_energy and its fused backward, the
wavelet PGD step's filter) with 64-byte vectors, 16 float planes per group, and the row-vector
tasks (larger planes) at the AVX2 width with AVX-512's 32 registers. ``WAVEFUSE_CPU_VECTOR_BITS``
picks them: "256" never, "512" always, unset where they pay (the wide plane groups only when there
are enough of them to keep the threads busy). Every lane does the same operations in the same
order in every copy, so the results are bitwise the same. The other test files check the default
against the oracles (PyWavelets, the reference); these pin the other settings to "256".

The cases cover the ways planes move into and out of the lane-interleaved buffer (planes_layout):
contiguous planes, channels-last groups of consecutive channels (20 channels: one whole group of 16
per sample and one partial), row slices, and bfloat16 (converted one scalar at a time); partial
groups (7 planes) and groups that straddle two samples; and planes over 128 x 128 (133 x 137),
whose first level runs the row-vector tasks, strided in channels-last and row slices.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import wavefuse
from wavefuse import backends

WIDTHS = ("256", "512", None)  # None: unset
SHAPES = [(2, 20, 32, 32), (1, 7, 19, 13), (1, 3, 133, 137)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
CASES = [("db4", "symmetric"), ("db2", "periodization"), ("sym3", "zero")]


def _require_avx512():
    reason = backends.why_not("cpu", "dwt2d", "cpu")
    if reason is not None:
        pytest.skip(str(reason))
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("this CPU has no AVX-512: both settings run the same 32-byte code")


def _layouts(shape, dtype):
    gen = torch.Generator().manual_seed(shape[1] * 100 + shape[2])
    base = torch.randn(*shape, dtype=torch.float64, generator=gen).to(dtype)
    padded = torch.zeros(*shape[:3], shape[3] + 3, dtype=dtype)
    padded[..., 1 : 1 + shape[3]] = base
    return {
        "contiguous": base,
        "channels last": base.contiguous(memory_format=torch.channels_last),
        "row slice": padded[..., 1 : 1 + shape[3]],
    }


def _at_each_width(monkeypatch, fn):
    out = {}
    for bits in WIDTHS:
        if bits is None:
            monkeypatch.delenv("WAVEFUSE_CPU_VECTOR_BITS", raising=False)
        else:
            monkeypatch.setenv("WAVEFUSE_CPU_VECTOR_BITS", bits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # levels above dwt_max_level warn, as PyWavelets
            out[bits] = [t.detach() for t in fn()]
    return out


def _assert_bitwise(out, what):
    for bits in WIDTHS[1:]:
        assert len(out[bits]) == len(out["256"])
        for i, (a, b) in enumerate(zip(out["256"], out[bits])):
            assert torch.equal(a, b), f"{what}: output {i} differs between 256 and {bits}"


def _flat(coeffs):
    return [coeffs[0]] + [band for level in coeffs[1:] for band in level]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_transforms_bitwise(shape, dtype, monkeypatch):
    """wavedec2 (analysis), its gradient (the adjoint) and waverec2 (synthesis)."""
    _require_avx512()
    for name, x in _layouts(shape, dtype).items():
        for wave, mode in CASES:

            def run(x=x, wave=wave, mode=mode):
                xs = x.detach().requires_grad_()
                coeffs = wavefuse.wavedec2(xs, wave, mode, 2, backend="cpu")
                bands = _flat(coeffs)
                weights = [
                    torch.linspace(-1, 1, b.numel(), dtype=b.dtype).view_as(b) for b in bands
                ]
                (grad,) = torch.autograd.grad(bands, xs, weights)
                detached = [coeffs[0].detach()] + [
                    tuple(b.detach() for b in level) for level in coeffs[1:]
                ]
                rec = wavefuse.waverec2(detached, wave, mode, backend="cpu")
                return [*bands, grad, rec]

            _assert_bitwise(_at_each_width(monkeypatch, run), f"{name} {dtype} {wave} {mode}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_hf_penalty_bitwise(shape, dtype, monkeypatch):
    """band_energy and hf_penalty's fused backward."""
    _require_avx512()
    weights = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    for name, x in _layouts(shape, dtype).items():
        for (wave, mode), p in zip(CASES, (2, 1, 2)):

            def run(x=x, wave=wave, mode=mode, p=p):
                energies = wavefuse.band_energy(x, wave, 3, mode, p, backend="cpu")
                xs = x.detach().requires_grad_()
                value = wavefuse.hf_penalty(xs, wave, 3, mode, p, weights, "sum", backend="cpu")
                return [energies, torch.autograd.grad(value, xs)[0]]

            _assert_bitwise(_at_each_width(monkeypatch, run), f"{name} {dtype} {wave} {mode} p={p}")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_wavelet_pgd_step_bitwise(shape, dtype, norm, monkeypatch):
    """wavelet_pgd_step's filter (non-Haar wavelets: the plane-vector or the row-vector cascade)."""
    _require_avx512()
    for name, x in _layouts(shape, dtype).items():
        gen = torch.Generator().manual_seed(7)
        grad = torch.randn(x.shape, dtype=torch.float64, generator=gen).to(dtype)
        for wave, mode in CASES:

            def run(x=x, grad=grad, wave=wave, mode=mode):
                x_adv = x.clone()
                wavefuse.wavelet_pgd_step(
                    x_adv, grad, x, 0.1, 0.02, wave=wave, level=2, mode=mode, hf_scale=0.5,
                    norm=norm, lo=-10.0, hi=10.0, backend="cpu",
                )  # fmt: skip
                return [x_adv]

            _assert_bitwise(
                _at_each_width(monkeypatch, run), f"{name} {dtype} {wave} {mode} {norm}"
            )


def test_vector_bits_must_be_256_or_512(monkeypatch):
    reason = backends.why_not("cpu", "dwt2d", "cpu")
    if reason is not None:
        pytest.skip(str(reason))
    monkeypatch.setenv("WAVEFUSE_CPU_VECTOR_BITS", "128")
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(RuntimeError, match="WAVEFUSE_CPU_VECTOR_BITS must be 256 or 512"):
        wavefuse.band_energy(x, "db2", 1, "symmetric", 2, backend="cpu")
    with pytest.raises(RuntimeError, match="WAVEFUSE_CPU_VECTOR_BITS must be 256 or 512"):
        wavefuse.dwt2(x, "db2", "symmetric", backend="cpu")
