"""Validation and output layout shared by every op. Validation happens here, in Python, once,
before any kernel launches; messages name the argument and the allowed values."""

from __future__ import annotations

import torch
from torch import Tensor

from wavefuse.filters import MODES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor4d(x, argname: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{argname} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{argname} has dtype {x.dtype}; allowed: float16, bfloat16, float32, float64"
        )
    if x.dim() != 4:
        raise ValueError(f"{argname} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{argname} has an empty spatial dimension: shape {tuple(x.shape)}")
    return x


def check_mode(mode, argname: str = "mode") -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"{argname}={mode!r} is not supported; allowed: {', '.join(MODES)}")
    return mode


def check_same_device(tensors, argname: str) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(
            f"{argname}: all tensors must be on one device, got {sorted(map(str, devices))}"
        )


def check_same_dtype(tensors, argname: str) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(
            f"{argname}: all tensors must have one dtype, got {sorted(map(str, dtypes))}"
        )


def check_spatial(h: int, w: int, mode: str, argname: str) -> None:
    if mode == "reflect" and min(h, w) < 2:
        raise ValueError(
            f"{argname}: mode='reflect' needs at least 2 samples along each transformed axis "
            f"(as PyWavelets), got spatial size {(h, w)}"
        )


def check_synthesis_input(h: int, w: int, taps: int, mode: str, argname: str) -> None:
    """Synthesis of h x w coefficients must give a non-empty signal: 2m - L + 2 >= 1 per axis."""
    if mode != "periodization" and 2 * min(h, w) - taps + 2 < 1:
        raise ValueError(
            f"{argname}: {h}x{w} coefficients are too few to synthesise a signal with a "
            f"{taps}-tap wavelet in mode {mode!r} (need at least {taps // 2} per axis)"
        )


# --------------------------------------------------------------------------------------------------
# Output layout: outputs keep the memory format of the tensor they are computed from. The detail
# bands come as one (N, C, 3, h, w) tensor (pytorch_wavelets' yh layout) allocated band-major, so
# that each band hi[:, :, b] is itself contiguous (or channels_last) and the PyWavelets-style
# tuple (cH, cV, cD) = hi.unbind(2) costs no copy.
# --------------------------------------------------------------------------------------------------


def is_channels_last(x: Tensor) -> bool:
    """True when the channel dimension is the innermost of C, H, W: channels_last tensors and
    slices of them (waverec2 trims a row of a channels_last approximation, say)."""
    if x.dim() != 4 or x.shape[1] == 1 or x.is_contiguous():
        return False
    spatial = [s for s, n in zip(x.stride()[2:], x.shape[2:]) if n > 1]
    return all(x.stride(1) < s for s in spatial)


def empty_4d(like: Tensor, n: int, c: int, h: int, w: int) -> Tensor:
    fmt = torch.channels_last if is_channels_last(like) else torch.contiguous_format
    return torch.empty((n, c, h, w), dtype=like.dtype, device=like.device, memory_format=fmt)


def empty_bands(like: Tensor, n: int, c: int, h: int, w: int) -> Tensor:
    kw = {"dtype": like.dtype, "device": like.device}
    if is_channels_last(like):
        return torch.empty((3, n, h, w, c), **kw).permute(1, 4, 0, 2, 3)
    return torch.empty((3, n, c, h, w), **kw).permute(1, 2, 0, 3, 4)
