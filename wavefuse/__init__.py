"""wavefuse: fused wavelet transforms and wavelet-regularised adversarial training for PyTorch.

Public API: PyWavelets-compatible ``dwt2``, ``idwt2``, ``wavedec2``, ``waverec2`` on (N, C, H, W)
tensors, pytorch_wavelets-compatible ``DWTForward`` / ``DWTInverse`` modules, and the fused ops
``band_energy``, ``hf_penalty`` (the wavelet high-frequency penalty), ``pgd_step`` and
``wavelet_pgd_step`` (in-place PGD updates, torchattacks-compatible). Wavelet pooling:
``wavelet_pool2d``, the drop-in modules ``WaveletAvgPool2d`` and ``WaveletConv2d``, ``convert``
(swaps a model's stride-2 convolutions and pools), ``HFPenalty`` (the penalty of chosen
activations by hooks); models in ``wavefuse.models``.
"""

from wavefuse import attacks, models
from wavefuse.functional import (
    band_energy,
    dwt2,
    hf_penalty,
    idwt2,
    pgd_step,
    wavedec2,
    wavelet_pgd_step,
    wavelet_pool2d,
    waverec2,
)
from wavefuse.nn import (
    DWTForward,
    DWTInverse,
    HFPenalty,
    WaveletAvgPool2d,
    WaveletConv2d,
    convert,
)

__version__ = "0.1.0"

__all__ = [
    "DWTForward",
    "DWTInverse",
    "HFPenalty",
    "WaveletAvgPool2d",
    "WaveletConv2d",
    "__version__",
    "attacks",
    "band_energy",
    "convert",
    "dwt2",
    "hf_penalty",
    "idwt2",
    "models",
    "pgd_step",
    "wavedec2",
    "wavelet_pgd_step",
    "wavelet_pool2d",
    "waverec2",
]
