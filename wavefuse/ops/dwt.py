"""torch.library custom ops for one 2-D wavelet level and their adjoints.

    wavefuse::dwt2d(x, filters, mode, backend)                             -> (ll, hi)
    wavefuse::dwt2d_adjoint(grad_ll, grad_hi, filters, mode, input_size, backend) -> grad_x
    wavefuse::idwt2d(ll, hi, filters, mode, backend)                       -> y
    wavefuse::idwt2d_adjoint(grad_y, filters, mode, backend)               -> (grad_ll, grad_hi)

x: (N, C, H, W); ll: (N, C, h, w); hi: (N, C, 3, h, w) with bands cH, cV, cD (PyWavelets' order);
filters: (2, L) [lo; hi] taps in the compute dtype (float32, or float64 for float64 data): dec taps
for dwt2d and its adjoint, rec taps for idwt2d and its adjoint. ``backend`` is a concrete backend
(never "auto": the functional layer resolves it). Filters are constants: no gradient flows to them.

Plain eager callers use ``run_<op>`` (``_common.DirectOp``): the same implementation, setup and
backward without the custom op's Python layers whenever nothing intercepts ops.

Autograd: each op's backward is the other op of its pair (the transforms are linear), so backward
saves no activations (only sizes and the filter bank) and double backward works to any order.
The backward of dwt2d is its true adjoint in every mode: for non-periodic modes that folds the
boundary extension back and is not the inverse transform.
"""

from __future__ import annotations

# Custom-op signatures say Sequence[int], not list[int]: torch 2.6's infer_schema knows only the
# typing spellings (list[int] was a ValueError at import).
from collections.abc import Sequence

import torch
from torch import Tensor

from wavefuse import reference
from wavefuse.ops._common import DirectOp, empty_4d, empty_bands
from wavefuse.reference import analysis_length, synthesis_length


def _run(backend: str, name: str, *args):
    """The op on a concrete backend. Compiled and Triton kernels allocate their outputs in the
    layout of ``ops._common`` themselves; the reference's outputs are views of its work tensors,
    so they are copied into that layout here, following the first argument's memory format."""
    if backend == "reference":
        out = getattr(reference, f"{name}_ref")(*args)
        return _fresh_pair(args[0], *out) if isinstance(out, tuple) else _fresh(args[0], out)
    if backend in ("cpu", "cuda"):
        return getattr(torch.ops.wavefuse, f"_{name}_kernel")(*args)
    if backend == "triton":
        from wavefuse.kernels import dwt as triton_dwt

        return getattr(triton_dwt, name)(*args)
    raise ValueError(f"backend={backend!r} is not a concrete backend")


def _check_synthesis_size(n: int, taps: int, mode: str) -> int:
    """Coefficients per axis of a synthesis output of length n (the inverse of synthesis_length)."""
    m = n // 2 if mode == "periodization" else (n + taps - 2) // 2
    torch._check(
        synthesis_length(m, taps, mode) == n,
        lambda: (
            f"idwt2d_adjoint: length {n} is not a synthesis output length for {taps} taps "
            f"in mode {mode!r}"
        ),
    )
    return m


def _fresh_pair(like: Tensor, ll: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    n, c, h, w = ll.shape
    out_ll, out_hi = empty_4d(like, n, c, h, w), empty_bands(like, n, c, h, w)
    return out_ll.copy_(ll), out_hi.copy_(hi)


def _fresh(like: Tensor, y: Tensor) -> Tensor:
    return empty_4d(like, *y.shape).copy_(y)


# ---- dwt2d ---------------------------------------------------------------------------------------


def _dwt2d(x: Tensor, filters: Tensor, mode: str, backend: str) -> tuple[Tensor, Tensor]:
    return _run(backend, "dwt2d", x, filters, mode)


dwt2d = torch.library.custom_op("wavefuse::dwt2d", mutates_args=())(_dwt2d)


@dwt2d.register_fake
def _(x, filters, mode, backend):
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    return empty_4d(x, n, c, kh, kw), empty_bands(x, n, c, kh, kw)


def _dwt2d_setup(ctx, inputs, output):
    x, filters, mode, backend = inputs
    ctx.save_for_backward(filters)
    ctx.input_size = [x.shape[-2], x.shape[-1]]
    ctx.mode, ctx.backend = mode, backend


def _dwt2d_backward(ctx, grad_ll, grad_hi):
    (filters,) = ctx.saved_tensors
    grad_x = run_dwt2d_adjoint(grad_ll, grad_hi, filters, ctx.mode, ctx.input_size, ctx.backend)
    return grad_x, None, None, None


dwt2d.register_autograd(_dwt2d_backward, setup_context=_dwt2d_setup)
run_dwt2d = DirectOp(dwt2d, _dwt2d, _dwt2d_setup, _dwt2d_backward)


# ---- dwt2d_adjoint -------------------------------------------------------------------------------


def _dwt2d_adjoint(
    grad_ll: Tensor,
    grad_hi: Tensor,
    filters: Tensor,
    mode: str,
    input_size: Sequence[int],
    backend: str,
) -> Tensor:
    return _run(backend, "dwt2d_adjoint", grad_ll, grad_hi, filters, mode, list(input_size))


dwt2d_adjoint = torch.library.custom_op("wavefuse::dwt2d_adjoint", mutates_args=())(_dwt2d_adjoint)


@dwt2d_adjoint.register_fake
def _(grad_ll, grad_hi, filters, mode, input_size, backend):
    n, c = grad_ll.shape[:2]
    return empty_4d(grad_ll, n, c, input_size[0], input_size[1])


def _dwt2d_adjoint_setup(ctx, inputs, output):
    _, _, filters, mode, _, backend = inputs
    ctx.save_for_backward(filters)
    ctx.mode, ctx.backend = mode, backend


def _dwt2d_adjoint_backward(ctx, grad):
    (filters,) = ctx.saved_tensors
    gll, ghi = run_dwt2d(grad, filters, ctx.mode, ctx.backend)
    return gll, ghi, None, None, None, None


dwt2d_adjoint.register_autograd(_dwt2d_adjoint_backward, setup_context=_dwt2d_adjoint_setup)
run_dwt2d_adjoint = DirectOp(
    dwt2d_adjoint, _dwt2d_adjoint, _dwt2d_adjoint_setup, _dwt2d_adjoint_backward
)


# ---- idwt2d --------------------------------------------------------------------------------------


def _idwt2d(ll: Tensor, hi: Tensor, filters: Tensor, mode: str, backend: str) -> Tensor:
    return _run(backend, "idwt2d", ll, hi, filters, mode)


idwt2d = torch.library.custom_op("wavefuse::idwt2d", mutates_args=())(_idwt2d)


@idwt2d.register_fake
def _(ll, hi, filters, mode, backend):
    n, c, h, w = ll.shape
    taps = filters.shape[-1]
    return empty_4d(ll, n, c, synthesis_length(h, taps, mode), synthesis_length(w, taps, mode))


def _idwt2d_setup(ctx, inputs, output):
    _, _, filters, mode, backend = inputs
    ctx.save_for_backward(filters)
    ctx.mode, ctx.backend = mode, backend


def _idwt2d_backward(ctx, grad_y):
    (filters,) = ctx.saved_tensors
    gll, ghi = run_idwt2d_adjoint(grad_y, filters, ctx.mode, ctx.backend)
    return gll, ghi, None, None, None


idwt2d.register_autograd(_idwt2d_backward, setup_context=_idwt2d_setup)
run_idwt2d = DirectOp(idwt2d, _idwt2d, _idwt2d_setup, _idwt2d_backward)


# ---- idwt2d_adjoint ------------------------------------------------------------------------------


def _idwt2d_adjoint(
    grad_y: Tensor, filters: Tensor, mode: str, backend: str
) -> tuple[Tensor, Tensor]:
    for n in grad_y.shape[-2:]:
        _check_synthesis_size(n, filters.shape[-1], mode)
    return _run(backend, "idwt2d_adjoint", grad_y, filters, mode)


idwt2d_adjoint = torch.library.custom_op("wavefuse::idwt2d_adjoint", mutates_args=())(
    _idwt2d_adjoint
)


@idwt2d_adjoint.register_fake
def _(grad_y, filters, mode, backend):
    n, c, h, w = grad_y.shape
    taps = filters.shape[-1]
    mh, mw = _check_synthesis_size(h, taps, mode), _check_synthesis_size(w, taps, mode)
    return empty_4d(grad_y, n, c, mh, mw), empty_bands(grad_y, n, c, mh, mw)


def _idwt2d_adjoint_setup(ctx, inputs, output):
    _, filters, mode, backend = inputs
    ctx.save_for_backward(filters)
    ctx.mode, ctx.backend = mode, backend


def _idwt2d_adjoint_backward(ctx, grad_ll, grad_hi):
    (filters,) = ctx.saved_tensors
    return run_idwt2d(grad_ll, grad_hi, filters, ctx.mode, ctx.backend), None, None, None


idwt2d_adjoint.register_autograd(_idwt2d_adjoint_backward, setup_context=_idwt2d_adjoint_setup)
run_idwt2d_adjoint = DirectOp(
    idwt2d_adjoint, _idwt2d_adjoint, _idwt2d_adjoint_setup, _idwt2d_adjoint_backward
)
