"""PreActResNet-18 (He et al. 2016) as the adversarial-training codebases define it (kuangliu's
``PreActResNet18``: 11,171,146 parameters for 10 classes; Rice et al.'s variant adds a final
BatchNorm, 1,024 more), with the wavelet options of ``WideResNet``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from wavefuse.models._common import (
    Normalize,
    check_count,
    check_model_options,
    conv_factory,
    final_pool,
)


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, conv):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(conv(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet-18; with ``wavelet`` set, a wavelet variant.

    x: (N, in_channels, H, W) in [0, 1] (normalised inside) -> logits (N, num_classes).
    conv3x3(64), four stages of two pre-activation blocks (64, 128, 256, 512; strides 1, 2, 2, 2),
    [WAP,] global average pooling (the codebases' ``avg_pool2d(out, 4)`` on 32x32 inputs), linear.
    Arguments as ``WideResNet``: ``placement="paper"`` puts WAP before the final pooling
    (4x4 -> 2x2 for 32x32 inputs), ``"all_downsample"`` makes every stride-2 convolution,
    shortcuts included, a ``WaveletConv2d``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        wavelet: str | None = None,
        placement: str = "paper",
        *,
        in_channels: int = 3,
        mean=None,
        std=None,
        wavelet_mode: str = "periodization",
        bands: str = "all",
    ):
        super().__init__()
        wavelet, wavelet_mode = check_model_options(wavelet, placement, wavelet_mode, bands)
        num_classes = check_count(num_classes, "num_classes")
        conv = conv_factory(wavelet, placement, wavelet_mode, bands)
        self.normalize = Normalize(mean, std, in_channels)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.layer1 = self._make_layer(64, 1, conv)
        self.layer2 = self._make_layer(128, 2, conv)
        self.layer3 = self._make_layer(256, 2, conv)
        self.layer4 = self._make_layer(512, 2, conv)
        self.wap = final_pool(wavelet, placement, wavelet_mode, bands, 512)
        self.linear = nn.Linear(512, num_classes)
        self.wavelet, self.placement = wavelet, placement

    def _make_layer(self, planes: int, stride: int, conv) -> nn.Sequential:
        blocks = []
        for s in (stride, 1):
            blocks.append(PreActBlock(self.in_planes, planes, s, conv))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def features(self, x: Tensor) -> Tensor:
        """The final feature map, before the global pooling: (N, 512, h, w)."""
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.wap(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
