"""What the models share: input normalisation inside the model, the wavelet options, the init."""

from __future__ import annotations

import math
import numbers
from functools import partial

import pywt
import torch
from torch import Tensor, nn

from wavefuse.filters import wavelet_name
from wavefuse.nn.conv import WaveletConv2d
from wavefuse.nn.pool import WaveletAvgPool2d
from wavefuse.ops._common import check_mode
from wavefuse.ops.pool import BANDS

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
PLACEMENTS = ("paper", "all_downsample")


class Normalize(nn.Module):
    """(x - mean) / std per channel, so that attacks work on inputs in [0, 1].

    mean and std are non-persistent buffers: state_dicts keep the keys of the standard models
    (and checkpoints of those load unchanged); they are constructor arguments instead."""

    def __init__(self, mean, std, in_channels: int):
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError(
                "mean and std go together: give both (per-channel lists) or neither (the "
                "dataset's defaults)"
            )
        in_channels = check_count(in_channels, "in_channels")
        if mean is None and std is None:
            if in_channels == 3:
                mean, std = CIFAR10_MEAN, CIFAR10_STD
            elif in_channels == 1:
                mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
            else:
                mean, std = (0.0,) * in_channels, (1.0,) * in_channels
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"mean and std need {in_channels} values (in_channels), got {len(mean)} "
                f"and {len(std)}"
            )
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def check_count(value, argname: str) -> int:
    """A positive int (a class or channel count, a width factor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{argname} must be an int >= 1, got {value}")
    return int(value)


def check_model_options(wavelet, placement: str, wavelet_mode: str, bands: str):
    """The models' wavelet arguments, named as the models take them (checked also without a
    wavelet, so that a typo never passes silently): (wavelet name or None, mode)."""
    if placement not in PLACEMENTS:
        raise ValueError(
            f"placement={placement!r} is not supported; allowed: paper, all_downsample"
        )
    if wavelet is not None and not isinstance(wavelet, (str, pywt.Wavelet)):
        raise TypeError(
            f"wavelet must be None, a wavelet name or a pywt.Wavelet, got {type(wavelet).__name__}"
        )
    if not isinstance(bands, str) or bands not in BANDS + ("learned",):
        raise ValueError(f"bands={bands!r} is not supported; allowed: all, ll, learned")
    mode = check_mode(wavelet_mode, "wavelet_mode")
    return (None if wavelet is None else wavelet_name(wavelet, "wavelet")), mode


def conv_factory(wavelet, placement: str, mode: str, bands: str):
    """Builds the blocks' convolutions: nn.Conv2d, except stride-2 ones for "all_downsample",
    which are WaveletConv2d (same parameters). Arguments as nn.Conv2d's, stride fourth."""
    if wavelet is None or placement != "all_downsample":
        return nn.Conv2d
    wavelet_conv = partial(WaveletConv2d, wave=wavelet, mode=mode, pool=bands)

    def conv(in_channels, out_channels, kernel_size, stride=1, *args, **kwargs):
        make = nn.Conv2d if stride == 1 else wavelet_conv
        return make(in_channels, out_channels, kernel_size, stride, *args, **kwargs)

    return conv


def final_pool(wavelet, placement: str, mode: str, bands: str, channels: int) -> nn.Module:
    """The paper's WAP before the global average pooling, or nothing."""
    if wavelet is None or placement != "paper":
        return nn.Identity()
    return WaveletAvgPool2d(wavelet, mode, bands, channels=channels if bands == "learned" else None)


def init_weights(model: nn.Module) -> None:
    """The WRN codebases' init: He normal (fan_out) convs, BN (1, 0), zero linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
