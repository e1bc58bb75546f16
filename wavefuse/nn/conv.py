"""``WaveletConv2d``: an nn.Conv2d whose stride-2 downsampling is wavelet pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wavefuse.nn import pool as _pool
from wavefuse.nn.dwt import _check_backend, _wave_and_mode
from wavefuse.ops.pool import BANDS


class WaveletConv2d(nn.Conv2d):
    """nn.Conv2d whose stride 2 is a stride-1 convolution followed by wavelet pooling.

    A stride-2 convolution keeps every other sample of the stride-1 response and so aliases its
    high frequencies into the output (the motivation of anti-aliased CNNs and of WaveCNet /
    WideWaveletResNet). Here the stride-1 response is pooled by a one-level wavelet transform
    instead: ``pool="ll"`` keeps the low-pass band (anti-aliased downsampling), ``"all"`` the
    published Wavelet Average Pooling (LL + LH + HL + HH) / 4 (with Haar a scaled subsampling,
    ``0.5 * y[..., ::2, ::2]``: no anti-aliasing, the paper's choice), ``"learned"`` per-channel band
    weights (parameter ``band_weight``, (out_channels, 4), order LL, cH, cV, cD, initialised to 1/4).
    With stride 1 the module is a plain nn.Conv2d.

    Takes nn.Conv2d's constructor unchanged plus ``wave``, ``mode``, ``pool``, ``backend``; its
    parameters are nn.Conv2d's (``weight``, ``bias``), so an nn.Conv2d state_dict loads unchanged
    (``band_weight`` keeps its initial value when absent), and ``isinstance(m, nn.Conv2d)`` holds.

    Output size. The stride-1 convolution keeps the layer's padding, padding_mode and dilation, so
    per axis it gives m = n + 2p - d(k - 1) samples, of which nn.Conv2d(stride=2) keeps
    ceil(m / 2). The pooling gives exactly ceil(m / 2) in periodization (any wavelet) and with Haar
    (any mode); other modes give L/2 - 1 more, half at each end, which are dropped
    (``fit_to_stride2``: output k then sits where periodization's output k does, within one
    stride-1 sample, in every mode). So the output shape equals
    nn.Conv2d's for every kernel, padding (ints, tuples, "valid"), padding_mode, dilation and
    input size that nn.Conv2d accepts with stride 2. (A response of 1 sample along an axis, which
    PyWavelets' reflect refuses, is extended in mode "reflect" as numpy.pad's reflect extends it:
    constant.) Costs: the convolution runs at stride 1
    (4x the multiply-adds of the stride-2 layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        wave="haar",
        mode: str = "periodization",
        pool: str = "all",
        backend: str = "auto",
    ):
        self.wave, self.mode = _wave_and_mode(wave, mode)
        if pool not in BANDS + ("learned",):
            raise ValueError(f"pool={pool!r} is not supported; allowed: all, ll, learned")
        self.pool = pool
        self.backend = _check_backend(backend)
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        if self.stride not in ((1, 1), (2, 2)):
            raise ValueError(
                f"WaveletConv2d supports stride 1 or 2 (on both axes), got {self.stride}"
            )
        if pool == "learned" and self.stride == (2, 2):
            self.band_weight = nn.Parameter(
                torch.full((out_channels, 4), 0.25, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("band_weight", None)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "band_weight", None) is not None:
            nn.init.constant_(self.band_weight, 0.25)

    def _conv_stride1(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return F.conv2d(x, self.weight, self.bias, 1, padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        y = self._conv_stride1(x)
        bands = self.band_weight if self.band_weight is not None else self.pool
        # through the module: the name torch.fx.wrap patches while symbolic_trace runs
        return _pool.pool_fitted(y, self.wave, self.mode, bands, True, self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # An nn.Conv2d state_dict has no band weights: keep the current ones rather than failing.
        if self.band_weight is not None and prefix + "band_weight" not in state_dict:
            state_dict[prefix + "band_weight"] = self.band_weight.detach()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", wave={self.wave!r}, mode={self.mode!r}, pool={self.pool!r}"
        )
