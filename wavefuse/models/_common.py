"""What the models share: input normalisation inside the model, the wavelet options, the init."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from wavefuse.nn.conv import WaveletConv2d
from wavefuse.nn.pool import WaveletAvgPool2d

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


def check_wavelet_options(wavelet, placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(
            f"placement={placement!r} is not supported; allowed: paper, all_downsample"
        )
    if wavelet is not None and not isinstance(wavelet, str):
        raise TypeError(f"wavelet must be None or a wavelet name, got {type(wavelet).__name__}")


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
