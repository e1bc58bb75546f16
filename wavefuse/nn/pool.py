"""Wavelet Average Pooling (WAP) as a module: a drop-in for a 2x2, stride-2 pooling layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wavefuse.filters import filter_length
from wavefuse.functional import wavelet_pool2d
from wavefuse.nn.dwt import _check_backend, _wave_and_mode
from wavefuse.ops.pool import BANDS


def fit_to_stride2(y: Tensor, size: tuple[int, int], taps: int, mode: str, ceil: bool) -> Tensor:
    """Crop a pooled map of an (H, W) input to a stride-2 layer's size, ceil(n/2) or floor(n/2).

    Coefficient k of periodization (any wavelet) and of Haar (any mode) is centred on samples
    2k, 2k+1 (its taps span 2k + 1 - L/2 .. 2k + L/2). The other modes give L/2 - 1 more
    coefficients per axis, half of them at each end (they see mostly the boundary extension):
    coefficient m spans 2m + 2 - L .. 2m + 1, so dropping the first ceil((L - 2) / 4) leaves output
    k equal to periodization's output k away from the boundaries where L = 2 mod 4 (haar, db3,
    coif1, ...), and to periodization's of the input moved one sample back (``x[i + 1]``) where
    L = 0 mod 4 (db2, db4, ...), half a coefficient having no whole shift. The mode then changes
    only the boundary handling, never where a feature lands. floor keeps one fewer on an odd
    axis, dropping the one that covers the last sample (as nn.AvgPool2d(2) drops the last row)."""
    start = 0 if mode == "periodization" else taps // 4  # ceil((taps - 2) / 4) for even taps
    h, w = ((n + 1) // 2 if ceil else n // 2 for n in size)
    if start == 0 and y.shape[-2] == h and y.shape[-1] == w:
        return y
    return y[..., start : start + h, start : start + w]


@torch.fx.wrap  # one opaque call in a torch.fx graph (symbolic_trace cannot see into the checks)
def pool_fitted(x: Tensor, wave: str, mode: str, bands, ceil_mode: bool | None, backend: str):
    """``wavelet_pool2d`` of x, cropped by ``fit_to_stride2`` unless ``ceil_mode`` is None: the
    forward of WaveletAvgPool2d and the pooling of WaveletConv2d (call it as
    ``wavefuse.nn.pool.pool_fitted``, which torch.fx patches while it traces). An unbatched
    (C, H, W) x gives a (C, h, w) result, as torch's pooling and convolution layers do."""
    if isinstance(x, Tensor) and x.dim() == 3:
        return pool_fitted(x.unsqueeze(0), wave, mode, bands, ceil_mode, backend).squeeze(0)
    if ceil_mode is None:
        return wavelet_pool2d(x, wave, mode, bands, backend=backend)
    size = (x.shape[-2], x.shape[-1])
    if mode == "reflect" and min(size) == 1:
        # As a stride-2 layer, every input size works: PyWavelets' reflect needs 2 samples per
        # axis, so a 1-sample axis is extended as numpy.pad's reflect extends it (constant), i.e.
        # as the sample twice (a stride-0 view; reflect gives it the same L/2 coefficients, all
        # equal), and the gradient sums over both copies.
        x = x.expand(*x.shape[:-2], max(size[0], 2), max(size[1], 2))
    y = wavelet_pool2d(x, wave, mode, bands, backend=backend)
    return fit_to_stride2(y, size, filter_length(wave), mode, ceil_mode)


class WaveletAvgPool2d(nn.Module):
    """Wavelet pooling: a weighted sum of the four bands of a one-level DWT, fused in one pass.

    ``bands="all"`` is the published Wavelet Average Pooling (LL + LH + HL + HH) / 4 (Yan et al.,
    WideWaveletResNet). With the orthonormal Haar wavelet that is exactly ``0.5 * x[..., ::2, ::2]``
    (any mode, even sizes; bit for bit in float32 and the half types; in float64 it is
    ``x * 0.5000000000000001``, PyWavelets' tap 0.7071067811865476 squared, 3e-16 relative): Haar
    WAP keeps the top-left sample of every 2x2 block, scaled. ``bands="ll"`` keeps the approximation LL
    (Haar: twice the 2x2 average, a low-pass that anti-aliases). ``bands="learned"``: per-channel
    band weights (a ``weight`` parameter of shape (channels, 4), order LL, cH, cV, cD),
    initialised to 1/4, i.e. starting as "all".

    x: (N, C, H, W) -> (N, C, h, w), x's dtype and memory format; or unbatched, (C, H, W) ->
    (C, h, w), as nn.AvgPool2d.

    Parameters
    ----------
    wave : str or pywt.Wavelet
        An orthogonal wavelet (haar, db1-db20, sym2-sym20, coif1-coif6).
    mode : str
        zero, symmetric, reflect, periodic, periodization (or "per").
    bands : {"all", "ll", "learned"}
    channels : int, optional
        C, needed for ``bands="learned"``.
    ceil_mode : bool or None
        None: PyWavelets' coefficient count per axis (``pywt.dwt_coeff_len``: ceil(n/2) in
        periodization). True / False: ceil(n/2) / floor(n/2), the size of a stride-2 layer,
        aligned as periodization's output k, whatever the mode (within one sample:
        ``fit_to_stride2``). For periodization or Haar None and True agree. With True / False,
        mode "reflect" also takes an axis of 1 sample (None refuses it, as PyWavelets does),
        extended as numpy.pad's reflect extends it: constant.
    backend : str
        auto, reference, cpu, cuda, triton.
    """

    def __init__(
        self,
        wave="haar",
        mode: str = "periodization",
        bands: str = "all",
        *,
        channels: int | None = None,
        ceil_mode: bool | None = None,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.wave, self.mode = _wave_and_mode(wave, mode)
        if bands not in BANDS + ("learned",):
            raise ValueError(f"bands={bands!r} is not supported; allowed: all, ll, learned")
        if ceil_mode not in (None, True, False):
            raise ValueError(f"ceil_mode must be None, True or False, got {ceil_mode!r}")
        self.bands, self.ceil_mode = bands, ceil_mode
        self.backend = _check_backend(backend)
        self.channels = channels
        if bands == "learned":
            if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
                raise ValueError(
                    f"bands='learned' needs channels= (an int >= 1, the input's C), got {channels!r}"
                )
            self.weight = nn.Parameter(torch.empty(channels, 4, device=device, dtype=dtype))
            self.reset_parameters()
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.constant_(self.weight, 0.25)

    def forward(self, x: Tensor) -> Tensor:
        learned = self.bands == "learned" and isinstance(x, Tensor) and x.dim() in (3, 4)
        if learned and x.shape[-3] != self.channels:
            raise ValueError(
                f"WaveletAvgPool2d(bands='learned', channels={self.channels}) got an input "
                f"with {x.shape[-3]} channels (shape {tuple(x.shape)}); build it with "
                f"channels={x.shape[-3]}"
            )
        bands = self.weight if self.bands == "learned" else self.bands
        return pool_fitted(x, self.wave, self.mode, bands, self.ceil_mode, self.backend)

    def extra_repr(self) -> str:
        s = f"wave={self.wave!r}, mode={self.mode!r}, bands={self.bands!r}"
        if self.channels is not None:
            s += f", channels={self.channels}"
        if self.ceil_mode is not None:
            s += f", ceil_mode={self.ceil_mode}"
        return s
