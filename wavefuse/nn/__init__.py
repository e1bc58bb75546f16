"""Drop-in modules."""

from wavefuse.nn.conv import WaveletConv2d
from wavefuse.nn.convert import Replacement, convert
from wavefuse.nn.dwt import DWTForward, DWTInverse
from wavefuse.nn.penalty import HFPenalty
from wavefuse.nn.pool import WaveletAvgPool2d

__all__ = [
    "DWTForward",
    "DWTInverse",
    "HFPenalty",
    "Replacement",
    "WaveletAvgPool2d",
    "WaveletConv2d",
    "convert",
]
