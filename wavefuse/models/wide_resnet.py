"""Wide ResNet (Zagoruyko & Komodakis) as the adversarial-training codebases define it, and the
WideWaveletResNet of Yan et al. (2023): WRN-34-10 with Wavelet Average Pooling before the final
average pooling.

Module names and parameters are those of the TRADES / MART ``WideResNet`` (without TRADES'
unused ``sub_block1``): WRN-34-10 has 46,160,474 parameters for 10 classes, and its checkpoints
load (``strict=False`` for TRADES' extra ``sub_block1`` keys). Those models take raw [0, 1]
images (no normalisation layer), while this one normalises by default (CIFAR-10's mean and std):
build it with ``mean=(0, 0, 0), std=(1, 1, 1)`` to run such a checkpoint as it was trained.
"""

from __future__ import annotations

import numbers

import torch.nn.functional as F
from torch import Tensor, nn

from wavefuse.models._common import (
    Normalize,
    check_count,
    check_model_options,
    conv_factory,
    final_pool,
    init_weights,
)


class BasicBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, identity or 1x1
    (strided) shortcut taken from the activated input when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float, conv):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = conv(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None if self.equal_in_out else conv(in_planes, out_planes, 1, stride, 0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate, conv):
        super().__init__()
        self.layer = nn.Sequential(
            *(
                BasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                    conv,
                )
                for i in range(n)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen; with ``wavelet`` set, a wavelet variant.

    x: (N, in_channels, H, W) in [0, 1] (normalised inside) -> logits (N, num_classes).
    Three groups of (depth - 4) / 6 blocks of widths 16k, 32k, 64k, strides 1, 2, 2, then
    BN-ReLU, [WAP,] global average pooling and a linear layer. For 32x32 inputs the final map is
    8x8 and the global average is the codebases' ``avg_pool2d(out, 8)``; other sizes (28x28
    Fashion-MNIST: 7x7) work too.

    Parameters
    ----------
    depth, widen, num_classes : int
        depth = 6n + 4 (34: n = 5).
    wavelet : str or None
        None: the standard WRN. A wavelet name (the paper: "haar"): see ``placement``.
    placement : {"paper", "all_downsample"}
        "paper": WideWaveletResNet, Wavelet Average Pooling (``WaveletAvgPool2d``) before the
        final pooling (8x8 -> 4x4 for 32x32 inputs, then the global average), nothing else
        changed. "all_downsample": every stride-2 convolution, shortcuts included, is a
        ``WaveletConv2d`` (no final WAP).
    in_channels : int
        3 (CIFAR) or 1 (Fashion-MNIST).
    mean, std : sequences of in_channels floats, optional
        Input normalisation; default CIFAR-10's for 3 channels, Fashion-MNIST's for 1.
        ``(0,) * c, (1,) * c`` for none (TRADES' and MART's checkpoints were trained without).
    drop_rate : float
    wavelet_mode, bands : str
        Boundary mode and bands ("all", "ll", "learned") of the wavelet layers.
    """

    def __init__(
        self,
        depth: int = 34,
        widen: int = 10,
        num_classes: int = 10,
        wavelet: str | None = None,
        placement: str = "paper",
        *,
        in_channels: int = 3,
        mean=None,
        std=None,
        drop_rate: float = 0.0,
        wavelet_mode: str = "periodization",
        bands: str = "all",
    ):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise TypeError(f"depth must be an int (10, 16, 28, 34, ...), got {depth!r}")
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 28, 34, ...), got {depth}")
        wavelet, wavelet_mode = check_model_options(wavelet, placement, wavelet_mode, bands)
        num_classes = check_count(num_classes, "num_classes")
        widen = check_count(widen, "widen")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        conv = conv_factory(wavelet, placement, wavelet_mode, bands)
        self.normalize = Normalize(mean, std, in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate, conv)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate, conv)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate, conv)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.wap = final_pool(wavelet, placement, wavelet_mode, bands, widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        self.wavelet, self.placement = wavelet, placement
        init_weights(self)

    def features(self, x: Tensor) -> Tensor:
        """The final feature map, before the global pooling: (N, 64 widen, h, w)."""
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        return self.wap(self.relu(self.bn1(out)))

    def forward(self, x: Tensor) -> Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.fc(out)


def WideWaveletResNet(depth: int = 34, widen: int = 10, num_classes: int = 10, **kwargs):
    """The paper's model: ``WideResNet(..., wavelet="haar", placement="paper")``."""
    kwargs.setdefault("wavelet", "haar")
    return WideResNet(depth, widen, num_classes, placement="paper", **kwargs)
