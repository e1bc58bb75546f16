"""wavefuse: fused wavelet transforms and wavelet-regularised adversarial training for PyTorch.

Public API: PyWavelets-compatible ``dwt2``, ``idwt2``, ``wavedec2``, ``waverec2`` on (N, C, H, W)
tensors, and pytorch_wavelets-compatible ``DWTForward`` / ``DWTInverse`` modules.
"""

from wavefuse.functional import dwt2, idwt2, wavedec2, waverec2
from wavefuse.nn import DWTForward, DWTInverse

__version__ = "0.1.0"

__all__ = ["dwt2", "idwt2", "wavedec2", "waverec2", "DWTForward", "DWTInverse", "__version__"]
