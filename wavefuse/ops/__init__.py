"""torch.library custom ops (schema, fake, autograd) and the validation shared by them.

``run_<op>``: the same op for plain eager callers, without the custom op's Python layers when
nothing intercepts ops (``_common.DirectOp``)."""

from wavefuse.ops.dwt import (
    dwt2d,
    dwt2d_adjoint,
    idwt2d,
    idwt2d_adjoint,
    run_dwt2d,
    run_dwt2d_adjoint,
    run_idwt2d,
    run_idwt2d_adjoint,
)
from wavefuse.ops.haar import haar_wavedec2, haar_wavedec2_adjoint

__all__ = [
    "dwt2d",
    "dwt2d_adjoint",
    "haar_wavedec2",
    "haar_wavedec2_adjoint",
    "idwt2d",
    "idwt2d_adjoint",
    "run_dwt2d",
    "run_dwt2d_adjoint",
    "run_idwt2d",
    "run_idwt2d_adjoint",
]
