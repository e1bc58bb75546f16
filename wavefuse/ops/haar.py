"""torch.library custom ops for the multilevel 2-D Haar analysis in one pass, and its adjoint.

    wavefuse::haar_wavedec2(x, level, mode, backend)                   -> [ll_J, hi_J, ..., hi_1]
    wavefuse::haar_wavedec2_adjoint(grad_ll, grad_hi, input_size, mode, backend)  -> grad_x

x: (N, C, H, W); ll_J: (N, C, h_J, w_J); hi_j: (N, C, 3, h_j, w_j), bands cH, cV, cD, with
h_j = ceil(H / 2^j) in every mode (Haar has two taps). Both lists are coarsest first, as
``pywt.wavedec2`` (so ``[ll_J] + [hi.unbind(2) for hi in hi_list]`` is its result). level >= 1;
the caller validates mode and sizes (functional.wavedec2: reflect needs two samples per axis at
every level). ``backend`` is concrete (never "auto"). Outputs keep the input's memory format
(ops._common).

Backends: "triton" runs all J levels in one kernel launch (wavefuse.kernels.haar, which documents
the few deep-level cases that it runs per level instead); "cuda" runs them in one launch of
csrc/cuda/haar.cu (``_haar_wavedec2_kernel`` / ``_haar_wavedec2_adjoint_kernel``) for
1 <= level <= CUDA_MAX_LEVEL in every mode, size, dtype and layout, and per level (dwt.cu's
one-level kernels) for deeper levels or a build of wavefuse._C without those two kernels; every
other backend loops the one-level ops of its own (dwt2d / dwt2d_adjoint with the Haar filter
bank), so results agree with ``wavedec2`` on that backend.

Autograd: the pair is linear and mutually adjoint, so each op's backward is the other op: no
tensor is saved (sizes only) and double backward works to any order. The backward of
haar_wavedec2 is its true adjoint in every mode (for non-periodic modes with odd sizes the
boundary extension folds back: not the inverse transform).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

# Custom-op signatures say Sequence[...] and List[...], not list[...]: torch 2.6's infer_schema
# knows only those spellings (list[int] was a ValueError at import).
from typing import List  # noqa: UP035

import torch
from torch import Tensor

from wavefuse import backends
from wavefuse.filters import filter_bank, filter_length
from wavefuse.ops._common import DirectOp, check_spatial, empty_4d, empty_bands
from wavefuse.ops.dwt import _run

# The deepest level that csrc/cuda/haar.cu runs in one pass (kHaarMaxLevels in haar_body.cuh: its
# 2^J x 2^J analysis tile must fit the 48 KiB of shared memory a block gets in float64).
CUDA_MAX_LEVEL = 6


@functools.cache
def _cuda_kernel_built(op: str) -> bool:
    """Whether wavefuse._C has the CUDA kernel of ``op`` (decided once: the extension registers
    its kernels when backends imports it, before any call here)."""
    return backends._has_kernel(op, "CUDA")


def _cuda_one_pass(level: int, op: str) -> bool:
    """Whether backend "cuda" runs ``op`` (haar_wavedec2 or its adjoint) in one kernel launch."""
    return 1 <= level <= CUDA_MAX_LEVEL and _cuda_kernel_built(op)


def _lengths(n: int, level: int) -> list[int]:
    sizes = [n]
    for _ in range(level):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _in_layout(like: Tensor, t: Tensor, bands: bool) -> Tensor:
    """t in the layout ops._common gives outputs computed from ``like`` (what register_fake
    promises): a per-level loop follows each level's input, which differs at 1 x 1 levels."""
    shape = t.shape
    fresh = empty_bands(like, shape[0], shape[1], *shape[-2:]) if bands else empty_4d(like, *shape)
    return t if fresh.stride() == t.stride() else fresh.copy_(t)


def one_pass(x: Tensor, name: str, mode: str, level: int, backend: str, what: str):
    """``haar_wavedec2(x)`` (coarsest first) where the one-pass kernel serves: a two-tap wavelet
    (haar = db1), level >= 2, the Triton or CUDA backend; else None (the caller loops one level
    at a time). Checks the sizes as the per-level loop does, with the same messages (``what``:
    the argument's name)."""
    if backend not in ("triton", "cuda") or level < 2 or filter_length(name) != 2:
        return None
    h, w = x.shape[-2:]
    for _ in range(level):
        check_spatial(h, w, mode, what)
        h, w = (h + 1) // 2, (w + 1) // 2
    return run_haar_wavedec2(x, level, mode, backend)


# ---- haar_wavedec2 -------------------------------------------------------------------------------


def _haar_wavedec2(x: Tensor, level: int, mode: str, backend: str) -> List[Tensor]:  # noqa: UP006
    torch._check(level >= 1, lambda: f"haar_wavedec2: level must be >= 1, got {level}")
    if backend == "triton":
        from wavefuse.kernels import haar as triton_haar

        return triton_haar.haar_wavedec2(x, level, mode)
    if backend == "cuda" and _cuda_one_pass(level, "haar_wavedec2"):
        ll, *his = torch.ops.wavefuse._haar_wavedec2_kernel(x, level, mode)
        return [_in_layout(x, ll, bands=False)] + [_in_layout(x, hi, bands=True) for hi in his]
    filters = filter_bank("haar", "dec", x.dtype, x.device)
    a, his = x, []
    for _ in range(level):
        a, hi = _run(backend, "dwt2d", a, filters, mode)
        his.append(_in_layout(x, hi, bands=True))
    return [_in_layout(x, a, bands=False)] + his[::-1]


haar_wavedec2 = torch.library.custom_op("wavefuse::haar_wavedec2", mutates_args=())(_haar_wavedec2)


@haar_wavedec2.register_fake
def _(x, level, mode, backend):
    torch._check(level >= 1, lambda: f"haar_wavedec2: level must be >= 1, got {level}")
    n, c, h, w = x.shape
    hs, ws = _lengths(h, level), _lengths(w, level)
    his = [empty_bands(x, n, c, hs[j], ws[j]) for j in range(level, 0, -1)]
    return [empty_4d(x, n, c, hs[-1], ws[-1])] + his


def _haar_wavedec2_setup(ctx, inputs, output):
    x, _, mode, backend = inputs
    ctx.input_size = [x.shape[-2], x.shape[-1]]
    ctx.mode, ctx.backend = mode, backend


def _haar_wavedec2_backward(ctx, grads):
    grad_x = run_haar_wavedec2_adjoint(
        grads[0], list(grads[1:]), ctx.input_size, ctx.mode, ctx.backend
    )
    return grad_x, None, None, None


haar_wavedec2.register_autograd(_haar_wavedec2_backward, setup_context=_haar_wavedec2_setup)
run_haar_wavedec2 = DirectOp(
    haar_wavedec2,
    _haar_wavedec2,
    _haar_wavedec2_setup,
    _haar_wavedec2_backward,
    list_output=True,
)


# ---- haar_wavedec2_adjoint -----------------------------------------------------------------------


def _haar_wavedec2_adjoint(
    grad_ll: Tensor, grad_hi: Sequence[Tensor], input_size: Sequence[int], mode: str, backend: str
) -> Tensor:
    torch._check(len(grad_hi) >= 1, lambda: "haar_wavedec2_adjoint: grad_hi must not be empty")
    if backend == "triton":
        from wavefuse.kernels import haar as triton_haar

        return triton_haar.haar_wavedec2_adjoint(grad_ll, list(grad_hi), mode, list(input_size))
    level = len(grad_hi)
    if backend == "cuda" and _cuda_one_pass(level, "haar_wavedec2_adjoint"):
        g = torch.ops.wavefuse._haar_wavedec2_adjoint_kernel(
            grad_ll, list(grad_hi), list(input_size), mode
        )
        return _in_layout(grad_ll, g, bands=False)
    hs, ws = _lengths(input_size[0], level), _lengths(input_size[1], level)
    filters = filter_bank("haar", "dec", grad_ll.dtype, grad_ll.device)
    g = grad_ll
    for j in reversed(range(level)):  # grad_hi[level - 1 - j] is level j + 1
        g = _run(backend, "dwt2d_adjoint", g, grad_hi[level - 1 - j], filters, mode, [hs[j], ws[j]])
    return _in_layout(grad_ll, g, bands=False)


haar_wavedec2_adjoint = torch.library.custom_op("wavefuse::haar_wavedec2_adjoint", mutates_args=())(
    _haar_wavedec2_adjoint
)


@haar_wavedec2_adjoint.register_fake
def _(grad_ll, grad_hi, input_size, mode, backend):
    torch._check(len(grad_hi) >= 1, lambda: "haar_wavedec2_adjoint: grad_hi must not be empty")
    n, c = grad_ll.shape[:2]
    return empty_4d(grad_ll, n, c, input_size[0], input_size[1])


def _haar_wavedec2_adjoint_setup(ctx, inputs, output):
    _, grad_hi, _, mode, backend = inputs
    ctx.level, ctx.mode, ctx.backend = len(grad_hi), mode, backend


def _haar_wavedec2_adjoint_backward(ctx, grad):
    ll, *his = run_haar_wavedec2(grad, ctx.level, ctx.mode, ctx.backend)
    return ll, his, None, None, None


haar_wavedec2_adjoint.register_autograd(
    _haar_wavedec2_adjoint_backward, setup_context=_haar_wavedec2_adjoint_setup
)
run_haar_wavedec2_adjoint = DirectOp(
    haar_wavedec2_adjoint,
    _haar_wavedec2_adjoint,
    _haar_wavedec2_adjoint_setup,
    _haar_wavedec2_adjoint_backward,
)
