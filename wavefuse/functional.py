"""PyWavelets-compatible 2-D wavelet transforms on (N, C, H, W) tensors.

Signatures, defaults, coefficient order and sizes are PyWavelets' (``pywt.dwt2``, ``pywt.idwt2``,
``pywt.wavedec2``, ``pywt.waverec2``) over the last two axes; every function also takes
``backend=`` ("auto", "reference", "cpu", "cuda", "triton"). All are differentiable (exact adjoints)
and traceable by ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

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

__all__ = ["dwt2", "idwt2", "wavedec2", "waverec2", "dwt_max_level"]

Coeffs2 = tuple[Tensor, tuple[Tensor, Tensor, Tensor]]


def _check_axes(axes, ndim: int = 4) -> None:
    try:
        axes = tuple(int(a) % ndim for a in axes)
    except (TypeError, ValueError):
        raise TypeError(f"axes must be a pair of ints, got {axes!r}") from None
    if axes != (ndim - 2, ndim - 1):
        raise ValueError(f"axes must be (-2, -1) (the H and W axes of (N, C, H, W)), got {axes}")


def dwt_max_level(data_len: int, filter_len: int) -> int:
    """``pywt.dwt_max_level``: the deepest level at which no coefficient sees only the boundary."""
    if data_len < filter_len - 1:
        return 0
    return int(math.log2(data_len / (filter_len - 1)))


def _check_level(h: int, w: int, taps: int, level) -> int:
    """PyWavelets' ``_check_level``: None -> max level; negative raises; too high only warns."""
    max_level = min(dwt_max_level(h, taps), dwt_max_level(w, taps))
    if level is None:
        return max_level
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an int or None, got {type(level).__name__}")
    level = int(level)
    if level < 0:
        raise ValueError("Level value of %d is too low . Minimum level is 0." % level)
    # Dynamo cannot trace warnings.warn (a fullgraph compile would fail on it): the warning is
    # given by eager calls, and skipped while tracing.
    if level > max_level and not torch.compiler.is_compiling():
        warnings.warn(
            f"Level value of {level} is too high: all coefficients will experience "
            "boundary effects."
        )
    return level


def _analysis_level(x: Tensor, name: str, mode: str, backend: str, argname: str):
    check_spatial(x.shape[-2], x.shape[-1], mode, argname)
    filters = filter_bank(name, "dec", x.dtype, x.device)
    return ops.dwt2d(x, filters, mode, backend)


def _synthesis_level(ll: Tensor, hi: Tensor, name: str, mode: str, backend: str) -> Tensor:
    check_synthesis_input(ll.shape[-2], ll.shape[-1], filter_length(name), mode, "coeffs")
    return ops.idwt2d(ll, hi, filter_bank(name, "rec", ll.dtype, ll.device), mode, backend)


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
        shape = next((t.shape for t in d if t is not None), None)
        if shape is not None and a is not None:
            trim_h = a.shape[-2] == shape[-2] + 1
            trim_w = a.shape[-1] == shape[-1] + 1
            a = a[..., : a.shape[-2] - trim_h, : a.shape[-1] - trim_w]
        ll, hi = _stack_details(a, d, "coeffs")
        a = _synthesis_level(ll, hi, name, mode, be)
    return a
