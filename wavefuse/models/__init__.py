"""Models for adversarial training: WideResNet (and the paper's WideWaveletResNet), PreActResNet-18.

Inputs are in [0, 1]; the models normalise them (``mean`` / ``std`` buffers), so attacks and their
eps work in pixel space.
"""

from wavefuse.models._common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Normalize,
)
from wavefuse.models.preact_resnet import PreActResNet18
from wavefuse.models.wide_resnet import WideResNet, WideWaveletResNet

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "Normalize",
    "PreActResNet18",
    "WideResNet",
    "WideWaveletResNet",
]
