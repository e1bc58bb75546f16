"""Drop-in replacements for pytorch_wavelets' ``DWTForward`` / ``DWTInverse``.

Same constructor arguments and the same ``(yl, yh)`` layout: ``yl`` (N, C, h_J, w_J) and ``yh``,
a list (finest level first) of (N, C, 3, h_j, w_j) tensors with bands cH, cV, cD (PyWavelets'
order). Unlike
pytorch_wavelets, gradients are exact adjoints in every mode, and half types work.
"""

from __future__ import annotations

import numbers

import numpy as np
from torch import Tensor, nn

from wavefuse import backends, ops
from wavefuse.filters import ALLOWED, FILTER_BANKS, filter_bank, wavelet_name
from wavefuse.ops._common import (
    check_mode,
    check_spatial,
    check_synthesis_input,
    check_tensor4d,
)
from wavefuse.ops.haar import one_pass

# pytorch_wavelets spells periodization "per" too.
_MODE_ALIASES = {"per": "periodization"}
# pytorch_wavelets keeps its filters as buffers; a state_dict saved with it loads here unchanged.
_PEER_BUFFERS = ("h0_col", "h1_col", "h0_row", "h1_row", "g0_col", "g1_col", "g0_row", "g1_row")


def _named_taps(wave, kind: str):
    """pytorch_wavelets' third spelling of a wavelet, its filter taps: (lo, hi), or (lo_col, hi_col,
    lo_row, hi_row) with rows equal to columns; analysis taps (dec) for DWTForward, synthesis
    taps (rec) for DWTInverse, as there. Taps equal to a supported bank's (to float32 rounding:
    a pytorch_wavelets module's buffers qualify) name it; other taps are refused. Anything that
    is not a tuple or list passes through to ``wavelet_name``."""
    if not isinstance(wave, (tuple, list)):
        return wave
    allowed = (
        f"a wavelet name, a pywt.Wavelet, or the {kind} taps of one as pytorch_wavelets takes "
        "them, (lo, hi) or (lo_col, hi_col, lo_row, hi_row) with rows equal to columns"
    )
    try:
        taps = [np.asarray(t, dtype=np.float64).reshape(-1) for t in wave]
    except (TypeError, ValueError):
        raise TypeError(f"wave: {allowed}; got a {type(wave).__name__} of non-numbers") from None
    if len(taps) == 4:
        if not all(a.shape == b.shape and np.allclose(a, b) for a, b in zip(taps[:2], taps[2:])):
            raise ValueError(
                "wave: different row and column filters are not supported (the kernels are "
                f"separable with one bank); allowed: {allowed}"
            )
        taps = taps[:2]
    if len(taps) != 2:
        raise ValueError(f"wave: {len(taps)} filters; allowed: {allowed}")
    first = 0 if kind == "dec" else 2
    for name, bank in FILTER_BANKS.items():
        lo, hi = (np.asarray(bank[first + i]) for i in (0, 1))
        if all(t.shape == b.shape for t, b in zip(taps, (lo, hi))) and all(
            np.abs(t - b).max() <= 1e-6 * np.abs(b).max() for t, b in zip(taps, (lo, hi))
        ):
            return name
    raise ValueError(
        f"wave: these {len(taps[0])}-tap filters are not the {kind} taps of a supported "
        f"wavelet ({ALLOWED}); custom filter banks are not supported"
    )


def _wave_and_mode(wave, mode) -> tuple[str, str]:
    if isinstance(mode, str):
        mode = _MODE_ALIASES.get(mode, mode)
    return wavelet_name(wave, "wave"), check_mode(mode)


def _check_backend(backend) -> str:
    if not isinstance(backend, str) or backend not in backends.CHOICES:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(backends.CHOICES)}")
    return backend


class _DropIn(nn.Module):
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in _PEER_BUFFERS:
            state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DWTForward(_DropIn):
    """J-level 2-D DWT. x: (N, C, H, W) -> (yl, yh), yh[j]: (N, C, 3, h_j, w_j), finest first.

    Parameters
    ----------
    J : int
        Number of levels (>= 0; 0 returns ``(x, [])``, as pytorch_wavelets does).
    wave : str, pywt.Wavelet or filter taps
        An orthogonal wavelet: haar, db1-db20, sym2-sym20, coif1-coif6; or its analysis taps as
        pytorch_wavelets takes them, (dec_lo, dec_hi) or four with rows equal to columns.
    mode : str
        zero, symmetric, reflect, periodic, periodization (or "per").
    backend : str
        auto, reference, cpu, cuda, triton.
    """

    def __init__(self, J: int = 1, wave="db1", mode: str = "zero", backend: str = "auto"):
        super().__init__()
        if isinstance(J, bool) or not isinstance(J, numbers.Integral):
            raise TypeError(f"J must be an int >= 0, got {type(J).__name__} {J!r}")
        if J < 0:
            raise ValueError(f"J must be an int >= 0, got {J}")
        self.J = int(J)
        self.wave, self.mode = _wave_and_mode(_named_taps(wave, "dec"), mode)
        self.backend = _check_backend(backend)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = check_tensor4d(x, "x")
        be = backends.resolve(self.backend, x.device, "dwt2d")
        fused = one_pass(x, self.wave, self.mode, self.J, be, "x")  # haar on Triton/CUDA: one pass
        if fused is not None:
            return fused[0], fused[1:][::-1]
        filters = filter_bank(self.wave, "dec", x.dtype, x.device)
        yh = []
        ll = x
        for _ in range(self.J):
            check_spatial(ll.shape[-2], ll.shape[-1], self.mode, "x")
            ll, hi = ops.run_dwt2d(ll, filters, self.mode, be)
            yh.append(hi)
        return ll, yh

    def extra_repr(self) -> str:
        return f"J={self.J}, wave={self.wave!r}, mode={self.mode!r}"


class DWTInverse(_DropIn):
    """Inverse of ``DWTForward``: (yl, yh) -> (N, C, H, W).

    ``yh[j]`` may be None (zeros). An approximation one row/column larger than the next detail
    level is trimmed, as pytorch_wavelets and PyWavelets do. ``wave``: as DWTForward's, but taps
    are the synthesis taps (rec_lo, rec_hi), as pytorch_wavelets' DWTInverse takes them.
    """

    def __init__(self, wave="db1", mode: str = "zero", backend: str = "auto"):
        super().__init__()
        self.wave, self.mode = _wave_and_mode(_named_taps(wave, "rec"), mode)
        self.backend = _check_backend(backend)

    def forward(self, coeffs) -> Tensor:
        if not isinstance(coeffs, (list, tuple)) or len(coeffs) != 2:
            raise ValueError("coeffs must be a pair (yl, yh)")
        ll, yh = coeffs
        ll = check_tensor4d(ll, "yl")
        if not isinstance(yh, (list, tuple)) or not all(
            h is None or isinstance(h, Tensor) for h in yh
        ):
            got = type(yh).__name__
            if isinstance(yh, (list, tuple)):
                bad = {type(h).__name__ for h in yh if h is not None and not isinstance(h, Tensor)}
                got = f"entries of type {', '.join(sorted(bad))}"
            raise TypeError(
                "yh must be a list or tuple of (N, C, 3, h, w) tensors (or None for a level "
                f"of zeros), finest first, as DWTForward returns it; got {got}"
            )
        be = backends.resolve(self.backend, ll.device, "idwt2d")
        filters = filter_bank(self.wave, "rec", ll.dtype, ll.device)
        for hi in reversed(list(yh)):
            if hi is None:
                hi = ll.new_zeros(*ll.shape[:2], 3, *ll.shape[-2:])
            elif hi.dim() != 5 or hi.shape[2] != 3 or hi.shape[:2] != ll.shape[:2]:
                raise ValueError(
                    f"yh entries must be (N, C, 3, h, w) matching yl's (N, C) = "
                    f"{tuple(ll.shape[:2])}, got {tuple(hi.shape)}"
                )
            if hi.device != ll.device:
                raise ValueError(f"yh entries must be on yl's device {ll.device}, got {hi.device}")
            if hi.dtype != ll.dtype:
                raise TypeError(f"yh entries must have yl's dtype {ll.dtype}, got {hi.dtype}")
            trim_h = ll.shape[-2] == hi.shape[-2] + 1
            trim_w = ll.shape[-1] == hi.shape[-1] + 1
            ll = ll[..., : ll.shape[-2] - trim_h, : ll.shape[-1] - trim_w]
            if ll.shape[-2:] != hi.shape[-2:]:
                raise ValueError(
                    f"yl spatial size {tuple(ll.shape[-2:])} does not fit yh's "
                    f"{tuple(hi.shape[-2:])}"
                )
            check_synthesis_input(ll.shape[-2], ll.shape[-1], filters.shape[-1], self.mode, "yl")
            ll = ops.run_idwt2d(ll, hi, filters, self.mode, be)
        return ll

    def extra_repr(self) -> str:
        return f"wave={self.wave!r}, mode={self.mode!r}"
