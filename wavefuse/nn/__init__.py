"""Drop-in modules."""

from wavefuse.nn.dwt import DWTForward, DWTInverse

__all__ = ["DWTForward", "DWTInverse"]
