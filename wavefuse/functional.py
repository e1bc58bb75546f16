"""PyWavelets-compatible 2-D wavelet transforms on (N, C, H, W) tensors, and the fused ops.

Signatures, defaults, coefficient order and sizes are PyWavelets' (``pywt.dwt2``, ``pywt.idwt2``,
``pywt.wavedec2``, ``pywt.waverec2``) over the last two axes; every function also takes
``backend=`` ("auto", "reference", "cpu", "cuda", "triton"). All are differentiable (exact adjoints)
and traceable by ``torch.compile(fullgraph=True)``.

The fused ops: ``band_energy`` and ``hf_penalty`` (differentiable, twice for p=2), ``pgd_step`` and
``wavelet_pgd_step`` (in-place PGD updates on x_adv, not differentiable).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import pywt
import torch
from torch import Tensor

from wavefuse import backends, ops
from wavefuse.filters import filter_bank, filter_length, wavelet_name
from wavefuse.ops._common import (
    check_mode,
    check_same_device,
    check_same_dtype,
    check_spatial,
    check_synthesis_input,
    check_tensor4d,
)
from wavefuse.ops.haar import one_pass
from wavefuse.ops.hf_penalty import (
    check_cascade,
    check_p,
    check_reduction,
    prepare_weights,
)
from wavefuse.ops.hf_penalty import run_band_energy as _band_energy_op
from wavefuse.ops.hf_penalty import run_hf_penalty as _hf_penalty_op
from wavefuse.ops.pgd_step import (
    check_norm,
    check_step_tensors,
    prepare_bounds,
    run_pgd_step,
    run_wavelet_pgd_step,
)

__all__ = [
    "band_energy",
    "dwt2",
    "dwt_max_level",
    "hf_penalty",
    "idwt2",
    "pgd_step",
    "wavedec2",
    "wavelet_pgd_step",
    "waverec2",
]

Coeffs2 = tuple[Tensor, tuple[Tensor, Tensor, Tensor]]


def _check_axes(axes, ndim: int = 4) -> None:
    try:
        axes = tuple(int(a) % ndim for a in axes)
    except (TypeError, ValueError):
        raise TypeError(f"axes must be a pair of ints, got {axes!r}") from None
    if axes != (ndim - 2, ndim - 1):
        raise ValueError(f"axes must be (-2, -1) (the H and W axes of (N, C, H, W)), got {axes}")


def _max_level(data_len: int, filter_len: int) -> int:
    """``dwt_max_level`` on validated ints (traceable: no pywt call)."""
    if data_len < filter_len - 1:
        return 0
    return int(math.log2(data_len / (filter_len - 1)))


def _whole(value, argname: str, what: str) -> int:
    """An int, or a float with an integral value (as pywt takes them); else a TypeError."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value % 1 == 0:
        return int(value)
    raise TypeError(f"{argname} must be {what}, got {value!r}")


def dwt_max_level(data_len, filter_len) -> int:
    """``pywt.dwt_max_level``: the deepest level at which no coefficient sees only the boundary.

    ``filter_len`` is, as in pywt, a filter length (>= 2), a ``pywt.Wavelet`` or the name of a
    discrete wavelet (its ``dec_len``; any discrete wavelet pywt knows, not only those wavefuse
    transforms); ``data_len`` is the length of the axis (>= 0)."""
    if isinstance(filter_len, pywt.Wavelet):
        filter_len = filter_len.dec_len
    elif isinstance(filter_len, str):
        if filter_len not in pywt.wavelist(kind="discrete"):
            raise ValueError(
                f"filter_len={filter_len!r} is not the name of a discrete wavelet "
                "(pywt.wavelist(kind='discrete'))"
            )
        filter_len = pywt.Wavelet(filter_len).dec_len
    filter_len = _whole(filter_len, "filter_len", "an int, a pywt.Wavelet or a wavelet's name")
    if filter_len < 2:
        raise ValueError(f"filter_len={filter_len} is invalid: a wavelet filter has >= 2 taps")
    data_len = _whole(data_len, "data_len", "an int")
    if data_len < 0:
        raise ValueError(f"data_len={data_len} is invalid: a length is >= 0")
    return _max_level(data_len, filter_len)


def _check_level(h: int, w: int, taps: int, level) -> int:
    """PyWavelets' ``_check_level``: None -> max level; negative raises; too high only warns."""
    max_level = min(_max_level(h, taps), _max_level(w, taps))
    if level is None:
        return max_level
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an int or None, got {type(level).__name__}")
    level = int(level)
    if level < 0:
        raise ValueError(f"Level value of {level} is too low . Minimum level is 0.")  # pywt's words
    # Dynamo cannot trace warnings.warn (a fullgraph compile would fail on it): the warning is
    # given by eager calls, and skipped while tracing.
    if not torch.compiler.is_compiling() and level > max_level:  # (no guard on it when tracing)
        warnings.warn(
            f"Level value of {level} is too high: all coefficients will experience "
            "boundary effects."
        )
    return level


def _analysis_level(x: Tensor, name: str, mode: str, backend: str, argname: str):
    check_spatial(x.shape[-2], x.shape[-1], mode, argname)
    filters = filter_bank(name, "dec", x.dtype, x.device)
    return ops.run_dwt2d(x, filters, mode, backend)


def _synthesis_level(ll: Tensor, hi: Tensor, name: str, mode: str, backend: str) -> Tensor:
    check_synthesis_input(ll.shape[-2], ll.shape[-1], filter_length(name), mode, "coeffs")
    return ops.run_idwt2d(ll, hi, filter_bank(name, "rec", ll.dtype, ll.device), mode, backend)


def dwt2(
    data: Tensor, wavelet, mode: str = "symmetric", axes=(-2, -1), *, backend: str = "auto"
) -> Coeffs2:
    """Single-level 2-D DWT, as ``pywt.dwt2``.

    data: (N, C, H, W) -> ``(cA, (cH, cV, cD))``, each (N, C, h, w) with h = ``pywt.dwt_coeff_len``.
    The three detail bands are views into one (N, C, 3, h, w) tensor.
    """
    x = check_tensor4d(data, "data")
    name, mode = wavelet_name(wavelet), check_mode(mode)
    _check_axes(axes)
    be = backends.resolve(backend, x.device, "dwt2d")
    ll, hi = _analysis_level(x, name, mode, be, "data")
    return ll, hi.unbind(2)


def _details(d, argname: str) -> tuple:
    if not isinstance(d, (list, tuple)) or len(d) != 3:
        raise ValueError(
            f"{argname}: detail coefficients must be a 3-tuple (cH, cV, cD) as returned by "
            f"wavedec2, got {type(d).__name__}"
        )
    for t in d:
        if t is not None:
            check_tensor4d(t, argname)
    return tuple(d)


def _stack_details(ll: Tensor | None, d: tuple, argname: str) -> tuple[Tensor, Tensor]:
    """(cA, (cH, cV, cD)) with Nones -> (ll, hi (N, C, 3, h, w)); None means zeros, as pywt."""
    present = [t for t in (ll, *d) if t is not None]
    if not present:
        raise ValueError(f"{argname} must contain at least one non-None band")
    check_same_device(present, argname)
    check_same_dtype(present, argname)
    shape = present[0].shape
    if any(t.shape != shape for t in present):
        shapes = [tuple(t.shape) for t in present]
        raise ValueError(f"{argname}: all bands must have one shape (or be None), got {shapes}")
    like = present[0]
    ll = torch.zeros_like(like) if ll is None else ll
    if all(t is not None for t in d):
        return ll, torch.stack(d, dim=2)
    return ll, torch.stack([torch.zeros_like(like) if t is None else t for t in d], dim=2)


def idwt2(
    coeffs, wavelet, mode: str = "symmetric", axes=(-2, -1), *, backend: str = "auto"
) -> Tensor:
    """Single-level 2-D inverse DWT, as ``pywt.idwt2``: ``(cA, (cH, cV, cD))`` -> (N, C, H, W).

    Output size per axis: 2h - L + 2 (2h for periodization), not cropped, as PyWavelets.
    """
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) != 2:
        raise ValueError("coeffs must be a pair (cA, (cH, cV, cD))")
    ll = coeffs[0]
    if ll is not None:
        check_tensor4d(ll, "coeffs")
    d = _details(coeffs[1], "coeffs")
    name, mode = wavelet_name(wavelet), check_mode(mode)
    _check_axes(axes)
    ll, hi = _stack_details(ll, d, "coeffs")
    be = backends.resolve(backend, ll.device, "idwt2d")
    return _synthesis_level(ll, hi, name, mode, be)


def wavedec2(
    data: Tensor,
    wavelet,
    mode: str = "symmetric",
    level: int | None = None,
    axes=(-2, -1),
    *,
    backend: str = "auto",
) -> list:
    """Multilevel 2-D DWT, as ``pywt.wavedec2``.

    data: (N, C, H, W) -> ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]`` (coarsest first).
    ``level=None`` is ``dwt_max_level``; a level above it warns exactly as PyWavelets does.
    """
    x = check_tensor4d(data, "data")
    name, mode = wavelet_name(wavelet), check_mode(mode)
    _check_axes(axes)
    level = _check_level(x.shape[-2], x.shape[-1], filter_length(name), level)
    be = backends.resolve(backend, x.device, "dwt2d")
    fused = one_pass(x, name, mode, level, be, "data")  # haar (= db1) on Triton or CUDA: one pass
    if fused is not None:
        return [fused[0]] + [hi.unbind(2) for hi in fused[1:]]
    details = []
    a = x
    for _ in range(level):
        a, hi = _analysis_level(a, name, mode, be, "data")
        details.append(hi.unbind(2))
    return [a] + details[::-1]


def waverec2(
    coeffs: Sequence, wavelet, mode: str = "symmetric", axes=(-2, -1), *, backend: str = "auto"
) -> Tensor:
    """Multilevel 2-D inverse DWT, as ``pywt.waverec2``.

    An approximation one row/column larger than the next details is trimmed (PyWavelets' rule);
    ``None`` detail bands are zeros; odd sizes can come back one larger (PyWavelets does not crop).
    """
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) < 1:
        raise ValueError("coeffs must be a non-empty list [cA_J, (cH_J, cV_J, cD_J), ...]")
    name, mode = wavelet_name(wavelet), check_mode(mode)
    _check_axes(axes)
    a = coeffs[0]
    if len(coeffs) == 1:
        return check_tensor4d(a, "coeffs")
    if a is not None:
        check_tensor4d(a, "coeffs")
    levels = [_details(d, "coeffs") for d in coeffs[1:]]
    tensors = [t for t in (a, *(t for d in levels for t in d)) if t is not None]
    if not tensors:
        raise ValueError("coeffs must contain at least one non-None band")
    check_same_device(tensors, "coeffs")
    check_same_dtype(tensors, "coeffs")
    be = backends.resolve(backend, tensors[0].device, "idwt2d")
    for d in levels:
        present = [t.shape for t in d if t is not None]  # not next(..., None): dynamo in torch 2.6
        shape = present[0] if present else None
        if shape is not None and a is not None:
            trim_h = a.shape[-2] == shape[-2] + 1
            trim_w = a.shape[-1] == shape[-1] + 1
            a = a[..., : a.shape[-2] - trim_h, : a.shape[-1] - trim_w]
        ll, hi = _stack_details(a, d, "coeffs")
        a = _synthesis_level(ll, hi, name, mode, be)
    return a


# --------------------------------------------------------------------------------------------------
# Fused ops: band energies, the high-frequency penalty, PGD steps (DESIGN.md contracts 4-6)
# --------------------------------------------------------------------------------------------------


def _cascade_args(x: Tensor, wave, level, mode, argname: str = "x") -> tuple[str, str, int]:
    """Validated (wavelet name, mode, level) for an analysis cascade of x; level as wavedec2's."""
    name, mode = wavelet_name(wave, "wave"), check_mode(mode)
    taps = filter_length(name)
    asked = level
    level = _check_level(x.shape[-2], x.shape[-1], taps, level)
    if asked is None and level == 0 and not torch.compiler.is_compiling():
        # pywt's rule, but a penalty or a band-limited step with no detail band is a no-op that
        # nobody means: say so (an explicit level=0 is taken as meant).
        warnings.warn(
            f"level=None is 0 levels for {argname} of {x.shape[-2]}x{x.shape[-1]} with {name!r} "
            f"({taps} taps; pywt.dwt_max_level): there is no detail band, so the result is that "
            "of no wavelet at all; pass a shorter wavelet or level >= 1"
        )
    check_cascade(x.shape[-2], x.shape[-1], taps, mode, level, argname)
    return name, mode, level


def band_energy(
    x: Tensor,
    wave="haar",
    level: int | None = 1,
    mode: str = "periodization",
    p: int = 2,
    *,
    backend: str = "auto",
) -> Tensor:
    """Per-sample, per-level, per-band sums of ``|d|^p`` of the 2-D DWT detail coefficients.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W), float16, bfloat16, float32 or float64.
    wave : str or pywt.Wavelet
        An orthogonal wavelet (haar, db1-db20, sym2-sym20, coif1-coif6).
    level : int or None
        Number of levels J; None is ``dwt_max_level`` and a level above it warns, as
        ``pywt.wavedec2``.
    mode : str
        Boundary mode, PyWavelets' meaning: zero, symmetric, reflect, periodic, periodization.
    p : {1, 2}
        The power: 2 sums squares (energy), 1 sums absolute values. For p=1 the gradient uses
        the subgradient sign(d), 0 only where a coefficient is exactly 0: the reference and C++
        backends give exact zeros on a flat Haar region, Triton's folded float32 operators may
        leave ~1e-8 of rounding there (seen on a constant image), whose sign is +-1.
    backend : str
        "auto", "reference", "cpu", "cuda" or "triton".

    Returns
    -------
    Tensor
        (N, J, 3): ``[n, j - 1, b]`` is the sum over channels and positions of ``|d|^p`` for band
        b of level j (finest first), bands in PyWavelets' order cH, cV, cD; that is, the sums over
        the arrays ``pywt.wavedec2(x[n], wave, mode, J)[J - j + 1][b]``. float32 for float16 and
        bfloat16 inputs (a sum of squares overflows float16 easily), else x's dtype.
        Differentiable with respect to x (twice for p=2).
    """
    x = check_tensor4d(x, "x")
    name, mode, level = _cascade_args(x, wave, level, mode)
    p = check_p(p)
    be = backends.resolve(backend, x.device, "band_energy")
    return _band_energy_op(x, filter_bank(name, "dec", x.dtype, x.device), mode, level, p, be)


def hf_penalty(
    x: Tensor,
    wave="haar",
    level: int | None = 1,
    mode: str = "periodization",
    p: int = 2,
    weights=None,
    reduction: str = "mean",
    *,
    backend: str = "auto",
) -> Tensor:
    """The high-frequency penalty: the weighted sum of ``band_energy`` over levels and bands.

    ``penalty[n] = sum_{j, b} weights[j - 1, b] * band_energy(x, ...)[n, j - 1, b]``, then reduced
    over samples. The backward recomputes the coefficients and writes grad_x once; it saves only x.

    Parameters
    ----------
    x, wave, level, mode, p, backend
        As ``band_energy``.
    weights : None, sequence or Tensor
        None: every level and band weighs 1. Shape (J,): one weight per level (finest first) for
        its three bands. Shape (J, 3): per level and band (cH, cV, cD). Constants: no gradient.
    reduction : {"mean", "sum", "none"}
        "none": the per-sample penalties, shape (N,); "sum": their sum; "mean": their mean over
        the N samples (not over elements).

    Returns
    -------
    Tensor
        (N,) or 0-d; float32 for float16 and bfloat16 inputs, else x's dtype.
    """
    x = check_tensor4d(x, "x")
    name, mode, level = _cascade_args(x, wave, level, mode)
    p = check_p(p)
    reduction = check_reduction(reduction)
    filters = filter_bank(name, "dec", x.dtype, x.device)
    w = prepare_weights(weights, level, x, filters.dtype)
    be = backends.resolve(backend, x.device, "hf_penalty")
    return _hf_penalty_op(x, filters, mode, level, p, w, reduction, be)


def pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps,
    alpha,
    norm: str = "Linf",
    lo=0.0,
    hi=1.0,
    *,
    backend: str = "auto",
) -> Tensor:
    """One projected-gradient (PGD) step, in place on ``x_adv``: torchattacks' PGD / PGDL2 update.

    Linf: ``x_adv = clamp(x + clamp(x_adv + alpha * sign(g) - x, -eps, eps), lo, hi)``.
    L2: ``g = g / (||g||_2 + 1e-10)`` per sample (torchattacks' ``eps_for_division``),
    ``delta = x_adv + alpha * g - x``, ``delta *= min(eps / ||delta||_2, 1)`` per sample,
    ``x_adv = clamp(x + delta, lo, hi)``. The operations are torchattacks 3.5.1's, in its order,
    so float32 results are bit-identical to ``torchattacks.PGD`` on the same inputs, and to
    ``PGDL2`` with ``backend="reference"``; the fused kernels sum L2's per-sample norms in their
    own order (the CPU kernel in float64), so their L2 results may differ in the last bits.
    Deliberate differences on every backend: a zero delta with eps = 0 stays zero where
    torchattacks gives NaN, and a NaN in grad makes x_adv NaN where torchattacks'
    ``sign(NaN) = 0`` would hide it (docs/edge_policies.md). float16 and bfloat16 compute in float32 and round once. No host sync.

    Parameters
    ----------
    x_adv : Tensor
        (N, C, H, W), the current adversarial example; overwritten. Must not require grad while
        grad mode is on (detach it, or call under ``torch.no_grad()``).
    grad : Tensor
        (N, C, H, W), the loss gradient at x_adv (same dtype and device).
    x_nat : Tensor
        (N, C, H, W), the clean input, centre of the eps-ball.
    eps, alpha : float or Tensor
        Radius (>= 0) and step size (finite). Tensors broadcast to x by torch's rules with shape
        (N, 1, 1, 1) (per sample), (1, C, 1, 1) (per channel, for attacks in normalised space),
        (N, C, 1, 1) or (1, 1, 1, 1); for ``norm="L2"`` eps is per sample only.
    norm : {"Linf", "L2"}
    lo, hi : float or Tensor
        The valid input range, ``lo <= hi`` (as eps; +-inf for none). Float values are checked
        always; tensor values only in eager mode on CPU (on a GPU the check would sync the host
        every step).
    backend : str
        "auto", "reference", "cpu", "cuda" or "triton".

    Returns
    -------
    Tensor
        x_adv itself, updated.
    """
    check_step_tensors(x_adv, grad, x_nat)
    norm = check_norm(norm)
    bounds = prepare_bounds(x_adv, eps, alpha, lo, hi, norm)
    be = backends.resolve(backend, x_adv.device, "pgd_step")
    run_pgd_step(x_adv, grad, x_nat, bounds, norm, be)
    return x_adv


def _check_hf_scale(hf_scale, level: int) -> list[float]:
    allowed = f"a float or a sequence of {level} floats (one per level, finest first)"
    if isinstance(hf_scale, numbers.Real) and not isinstance(hf_scale, bool):
        scales = [float(hf_scale)] * level
    elif isinstance(hf_scale, (list, tuple)) and all(
        isinstance(s, numbers.Real) and not isinstance(s, bool) for s in hf_scale
    ):
        if len(hf_scale) != level:
            raise ValueError(f"hf_scale has {len(hf_scale)} entries; allowed: {allowed}")
        scales = [float(s) for s in hf_scale]
    else:
        raise TypeError(f"hf_scale must be {allowed}, got {type(hf_scale).__name__}")
    if not all(abs(s) < math.inf for s in scales):
        raise ValueError(f"hf_scale must be finite, got {hf_scale!r}")
    return scales


def wavelet_pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps,
    alpha,
    wave="haar",
    level: int | None = 1,
    mode: str = "periodization",
    hf_scale=0.0,
    norm: str = "Linf",
    lo=0.0,
    hi=1.0,
    *,
    backend: str = "auto",
) -> Tensor:
    """A PGD step along a wavelet-filtered gradient, in place on ``x_adv``.

    ``g' = idwt(scale_hf(dwt(g)))``: the three detail bands of every level j are multiplied by
    ``hf_scale`` (or ``hf_scale[j - 1]``) and the multilevel transform inverted (cropped to the
    input size, as ``waverec2(...)[..., :H, :W]``); then ``pgd_step(x_adv, g', x_nat, ...)``.
    ``hf_scale=1`` is exactly ``pgd_step`` (the transform is skipped); ``hf_scale=0`` keeps only
    the level-J approximation of the gradient: a low-frequency (band-limited) attack. With
    ``mode="periodization"``, L2 and no active clamp or projection, that step has no detail content.

    Parameters
    ----------
    x_adv, grad, x_nat, eps, alpha, norm, lo, hi, backend
        As ``pgd_step``.
    wave, level, mode
        As ``band_energy`` (the transform of the gradient).
    hf_scale : float or sequence of float
        One factor for every level, or one per level (finest first, length ``level``).

    Returns
    -------
    Tensor
        x_adv itself, updated.

    Notes
    -----
    A non-finite gradient entry makes x_adv NaN where g' is: near that entry in the reference
    backend and the CPU backend's wavelets other than Haar (its fused Haar kernel, like Triton's
    and CUDA's, may step at an infinite entry instead: see below); over its whole plane in the
    Triton and CUDA kernels for wavelets other than Haar on planes up to 64 x 64, which apply the
    filter as dense matrix products (0 * inf is NaN).
    On larger planes the Triton and CUDA kernels filter through the approximations alone, as the
    fused Haar kernels do: an infinite entry may then step where the reference is NaN
    (docs/edge_policies.md).
    """
    check_step_tensors(x_adv, grad, x_nat)
    name, mode, level = _cascade_args(grad, wave, level, mode, "grad")
    scales = _check_hf_scale(hf_scale, level)
    norm = check_norm(norm)
    bounds = prepare_bounds(x_adv, eps, alpha, lo, hi, norm)
    be = backends.resolve(backend, x_adv.device, "wavelet_pgd_step")
    filters = filter_bank(name, "dec", x_adv.dtype, x_adv.device)
    run_wavelet_pgd_step(x_adv, grad, x_nat, bounds, filters, mode, level, scales, norm, be)
    return x_adv


# --------------------------------------------------------------------------------------------------
# Wavelet pooling (the op lives in wavefuse/ops/pool.py; the modules in wavefuse/nn/pool.py)
# --------------------------------------------------------------------------------------------------


def wavelet_pool2d(
    x: Tensor, wave="haar", mode: str = "periodization", bands="all", *, backend: str = "auto"
) -> Tensor:
    """Wavelet pooling: a weighted sum of the four bands of a one-level 2-D DWT, in one pass.

    ``y = sum_b w_b * band_b`` over PyWavelets' bands (LL, cH, cV, cD) of ``dwt2(x, wave, mode)``,
    computed as one stride-2 correlation with the kernel F^T W F (no band is formed).

    Parameters
    ----------
    x : Tensor
        (N, C, H, W), float16, bfloat16, float32 or float64, contiguous or channels_last.
    wave : str or pywt.Wavelet
        An orthogonal wavelet (haar, db1-db20, sym2-sym20, coif1-coif6).
    mode : str
        Boundary mode, PyWavelets' meaning: zero, symmetric, reflect, periodic, periodization.
    bands : "all", "ll" or Tensor
        "all": the published Wavelet Average Pooling (LL + cH + cV + cD) / 4 (with Haar and
        periodization on even sizes that is ``0.5 * x[..., ::2, ::2]``); "ll": the approximation
        LL; a tensor of shape (4,) or (C, 4): band weights (per channel) in the order LL, cH, cV, cD,
        differentiable.
    backend : str
        "auto", "reference", "cpu", "cuda" or "triton".

    Returns
    -------
    Tensor
        (N, C, h, w) with h, w = ``pywt.dwt_coeff_len`` of H, W; x's dtype and memory format.
    """
    from wavefuse.ops import pool as _pool_ops

    x = check_tensor4d(x, "x")
    name, mode = wavelet_name(wave, "wave"), check_mode(mode)
    check_spatial(x.shape[-2], x.shape[-1], mode, "x")
    bands = _pool_ops.check_bands(bands, x.shape[1], x)
    be = backends.resolve(backend, x.device, "wavelet_pool2d")
    kernel = _pool_ops.pool_kernel(name, bands, x.dtype, x.device)
    return _pool_ops.run_wavelet_pool2d(x, kernel, mode, be)
