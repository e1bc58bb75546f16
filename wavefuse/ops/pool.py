"""torch.library custom ops for wavelet pooling: a weighted sum of one level's four bands, fused.

    wavefuse::wavelet_pool2d(x, kernel, mode, backend)                            -> y
    wavefuse::wavelet_pool2d_adjoint(grad, kernel, mode, input_size, backend)     -> grad_x
    wavefuse::wavelet_pool2d_kernel_grad(grad, x, taps, mode, backend)            -> grad_kernel

Maths. With the analysis bank F = [lo; hi] (2, L) and per-channel band weights W_c (2 x 2, row =
filter along H, column = filter along W, 0 = lo, 1 = hi; so PyWavelets' bands sit at
LL = W[0, 0], cH = W[1, 0], cV = W[0, 1], cD = W[1, 1]), the pooled map

    y_c = sum_{i, j} W_c[i, j] * band_ij(x_c)

is one stride-2 correlation of the boundary-extended input with the L x L kernel
K_c = F^T W_c F (rank <= 2), so no band is ever formed. The published Wavelet Average Pooling
(W = 1/4 everywhere) is K = g g^T with g = (lo + hi) / 2, "ll" is lo lo^T.

x: (N, C, H, W); kernel: (C', L, L), C' in {1, C} (1: shared by every channel), taps in
PyWavelets' convolution order and in the compute dtype (float32, or float64 for float64 data):
``y[n, c, k, l] = sum_{m, q} K[c, m, q] * xe[2k + 1 - m, 2l + 1 - q]`` with xe extended by ``mode``
exactly as dwt2d (periodization: ``x[(2k + L/2 - m) mod H']``); y: (N, C, h, w) with
h = ``analysis_length(H, L, mode)``, in x's dtype and memory format. grad_kernel: (C, L, L) in the
compute dtype (per channel; the autograd formula sums it over channels for a shared kernel).

Autograd. The op is bilinear in (x, kernel). Its backward is the adjoint op (the transposed
correlation folded back through the extension: for non-periodic modes not an upsampling) for x,
and the kernel-gradient op (the per-channel correlation of grad with the extended input; saved
only when the kernel needs a gradient) for the kernel. The three ops' backwards are each other,
so double backward works to any order and the graph stays traceable by torch.compile.

Kernel contract for the compiled backends (schemas in csrc/ops.cpp; CPU kernels in
csrc/cpu/pool.cpp): ``_wavelet_pool2d_kernel``, ``_wavelet_pool2d_adjoint_kernel``,
``_wavelet_pool2d_kernel_grad_kernel`` with the arguments above minus ``backend``; Triton:
functions of the op names in ``wavefuse.kernels.pool`` (``backends.TRITON_MODULES``).
"""

from __future__ import annotations

import importlib

# Custom-op signatures say Sequence[int], not list[int]: torch 2.6's infer_schema knows only the
# typing spellings (list[int] was a ValueError at import).
from collections.abc import Sequence

import torch
from torch import Tensor

from wavefuse import backends, reference
from wavefuse.filters import compute_dtype, filter_bank
from wavefuse.ops._common import DirectOp, empty_4d, is_channels_last
from wavefuse.reference import analysis_length

BANDS = ("all", "ll")
#: Band order of user-facing weights (PyWavelets'): LL, cH, cV, cD.
BAND_NAMES = ("LL", "cH", "cV", "cD")


def _run(backend: str, name: str, *args):
    """The op on a concrete backend (see ``ops.dwt._run``)."""
    if backend == "reference":
        return getattr(reference, f"{name}_ref")(*args)
    if backend in ("cpu", "cuda"):
        return getattr(torch.ops.wavefuse, f"_{name}_kernel")(*args)
    if backend == "triton":
        module = importlib.import_module(f"wavefuse.kernels.{backends.TRITON_MODULES[name]}")
        return getattr(module, name)(*args)
    raise ValueError(f"backend={backend!r} is not a concrete backend")


def _in_layout(like: Tensor, y: Tensor) -> Tensor:
    """y in like's memory format (the reference's conv output may come in either)."""
    fmt = torch.channels_last if is_channels_last(like) else torch.contiguous_format
    return y.contiguous(memory_format=fmt)


# ---- kernels from band weights (validated once, in Python) ----------------------------------------


def band_matrix(weights: Tensor) -> Tensor:
    """(C', 4) band weights in PyWavelets' order (LL, cH, cV, cD) -> (C', 2, 2) matrices W with
    W[i, j] the weight of (filter i along H, filter j along W)."""
    return weights[:, [0, 2, 1, 3]].reshape(-1, 2, 2)


#: pool_kernel's constant kernels ("all" / "ll"), per (wavelet, bands, compute dtype, device).
_KERNELS: dict[tuple, Tensor] = {}


def _constant_kernel(name: str, bands: str, dtype: torch.dtype, device) -> Tensor:
    f = filter_bank(name, "dec", torch.float64, device)
    g = f.sum(0) * 0.5 if bands == "all" else f[0]
    return (g[:, None] * g[None, :]).unsqueeze(0).to(compute_dtype(dtype))


def pool_kernel(name: str, bands, dtype: torch.dtype, device) -> Tensor:
    """The (C', L, L) kernel K = F^T W F in the compute dtype of ``dtype``.

    ``bands``: "all" (W = 1/4 everywhere), "ll" (LL only) or a (C', 4) tensor of band weights.
    Built in float64 from PyWavelets' taps and rounded once, so Haar "all" rounds to exactly 0.5 in
    float32 (in float64 it is 0.7071067811865476**2 = 0.5000000000000001). Differentiable with
    respect to tensor weights."""
    if isinstance(bands, str):
        if torch.compiler.is_compiling():
            return _constant_kernel(name, bands, dtype, device)
        key = (name, bands, compute_dtype(dtype), str(device))
        k = _KERNELS.get(key)
        if k is None:  # a constant: built once per wavelet, bands, dtype and device
            with torch.inference_mode(False):  # (as filter_bank: never an inference tensor)
                k = _KERNELS.setdefault(key, _constant_kernel(name, bands, dtype, device))
        return k
    f = filter_bank(name, "dec", torch.float64, device)
    w = band_matrix(bands.to(torch.float64))
    # Elementwise products, not einsum: autocast would run a matmul in the half type.
    k = (w[:, :, :, None, None] * f[None, :, None, :, None] * f[None, None, :, None, :]).sum(
        dim=(1, 2)
    )
    return k.to(compute_dtype(dtype))


def check_bands(bands, channels: int, like: Tensor):
    """ "all" / "ll" / a tensor of shape (4,) or (C, 4) -> "all" / "ll" / a (C', 4) tensor."""

    def allowed() -> str:  # formatted only for a message: a symbolic C would be specialised
        return f'"all", "ll", or a tensor of band weights of shape (4,) or ({channels}, 4)'

    if isinstance(bands, str):
        if bands not in BANDS:
            raise ValueError(f"bands={bands!r} is not supported; allowed: {allowed()}")
        return bands
    if not isinstance(bands, Tensor):
        raise TypeError(f"bands must be {allowed()}, got {type(bands).__name__}")
    if not bands.is_floating_point():
        raise TypeError(f"bands has dtype {bands.dtype}; allowed: a floating-point dtype")
    if bands.device != like.device:
        raise ValueError(f"bands is on {bands.device}, x on {like.device}: use one device")
    w = bands.unsqueeze(0) if bands.dim() == 1 else bands
    if w.dim() != 2 or w.shape[1] != 4 or w.shape[0] not in (1, channels):
        raise ValueError(f"bands has shape {tuple(bands.shape)}; allowed: {allowed()}")
    return w


# ---- wavelet_pool2d ------------------------------------------------------------------------------


def _check_kernel(x_channels: int, kernel: Tensor) -> None:
    torch._check(
        kernel.dim() == 3 and kernel.shape[-1] == kernel.shape[-2],
        lambda: f"kernel must be (C', L, L), got {tuple(kernel.shape)}",
    )
    torch._check(
        kernel.shape[0] in (1, x_channels),
        lambda: f"kernel has {kernel.shape[0]} channels; allowed: 1 or {x_channels}",
    )


def _wavelet_pool2d(x: Tensor, kernel: Tensor, mode: str, backend: str) -> Tensor:
    _check_kernel(x.shape[1], kernel)
    return _in_layout(x, _run(backend, "wavelet_pool2d", x, kernel, mode))


wavelet_pool2d = torch.library.custom_op("wavefuse::wavelet_pool2d", mutates_args=())(
    _wavelet_pool2d
)


@wavelet_pool2d.register_fake
def _(x, kernel, mode, backend):
    _check_kernel(x.shape[1], kernel)
    n, c, h, w = x.shape
    taps = kernel.shape[-1]
    return empty_4d(x, n, c, analysis_length(h, taps, mode), analysis_length(w, taps, mode))


def _reduce_kernel_grad(g: Tensor, kernel: Tensor) -> Tensor:
    """(C, L, L) per-channel gradient -> the kernel's shape (summed for a shared kernel)."""
    if kernel.shape[0] == 1 and g.shape[0] != 1:
        g = g.sum(0, keepdim=True)
    return g.to(kernel.dtype)


def _wavelet_pool2d_setup(ctx, inputs, output):
    x, kernel, mode, backend = inputs
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, kernel)
    ctx.input_size = [x.shape[-2], x.shape[-1]]
    ctx.mode, ctx.backend = mode, backend


def _wavelet_pool2d_backward(ctx, grad):
    x, kernel = ctx.saved_tensors
    grad_x = grad_k = None
    if ctx.needs_input_grad[0]:
        grad_x = run_wavelet_pool2d_adjoint(grad, kernel, ctx.mode, ctx.input_size, ctx.backend)
    if ctx.needs_input_grad[1]:
        g = run_wavelet_pool2d_kernel_grad(grad, x, kernel.shape[-1], ctx.mode, ctx.backend)
        grad_k = _reduce_kernel_grad(g, kernel)
    return grad_x, grad_k, None, None


wavelet_pool2d.register_autograd(_wavelet_pool2d_backward, setup_context=_wavelet_pool2d_setup)
run_wavelet_pool2d = DirectOp(
    wavelet_pool2d, _wavelet_pool2d, _wavelet_pool2d_setup, _wavelet_pool2d_backward
)


# ---- wavelet_pool2d_adjoint ----------------------------------------------------------------------


def _wavelet_pool2d_adjoint(
    grad: Tensor, kernel: Tensor, mode: str, input_size: Sequence[int], backend: str
) -> Tensor:
    _check_kernel(grad.shape[1], kernel)
    out = _run(backend, "wavelet_pool2d_adjoint", grad, kernel, mode, list(input_size))
    return _in_layout(grad, out)


wavelet_pool2d_adjoint = torch.library.custom_op(
    "wavefuse::wavelet_pool2d_adjoint", mutates_args=()
)(_wavelet_pool2d_adjoint)


@wavelet_pool2d_adjoint.register_fake
def _(grad, kernel, mode, input_size, backend):
    _check_kernel(grad.shape[1], kernel)
    n, c = grad.shape[:2]
    return empty_4d(grad, n, c, input_size[0], input_size[1])


def _adjoint_setup(ctx, inputs, output):
    grad, kernel, mode, _, backend = inputs
    ctx.save_for_backward(grad if ctx.needs_input_grad[1] else None, kernel)
    ctx.mode, ctx.backend = mode, backend


def _adjoint_backward(ctx, v):
    grad, kernel = ctx.saved_tensors
    grad_grad = grad_k = None
    if ctx.needs_input_grad[0]:
        grad_grad = run_wavelet_pool2d(v, kernel, ctx.mode, ctx.backend)
    if ctx.needs_input_grad[1]:  # <v, A_K^T g> = <A_K v, g>: the kernel gradient of (g, v)
        g = run_wavelet_pool2d_kernel_grad(grad, v, kernel.shape[-1], ctx.mode, ctx.backend)
        grad_k = _reduce_kernel_grad(g, kernel)
    return grad_grad, grad_k, None, None, None


wavelet_pool2d_adjoint.register_autograd(_adjoint_backward, setup_context=_adjoint_setup)
run_wavelet_pool2d_adjoint = DirectOp(
    wavelet_pool2d_adjoint, _wavelet_pool2d_adjoint, _adjoint_setup, _adjoint_backward
)


# ---- wavelet_pool2d_kernel_grad ------------------------------------------------------------------


def _wavelet_pool2d_kernel_grad(
    grad: Tensor, x: Tensor, taps: int, mode: str, backend: str
) -> Tensor:
    return _run(backend, "wavelet_pool2d_kernel_grad", grad, x, taps, mode)


wavelet_pool2d_kernel_grad = torch.library.custom_op(
    "wavefuse::wavelet_pool2d_kernel_grad", mutates_args=()
)(_wavelet_pool2d_kernel_grad)


@wavelet_pool2d_kernel_grad.register_fake
def _(grad, x, taps, mode, backend):
    return x.new_empty((x.shape[1], taps, taps), dtype=compute_dtype(x.dtype))


def _kernel_grad_setup(ctx, inputs, output):
    grad, x, _, mode, backend = inputs
    ctx.save_for_backward(grad, x)
    ctx.mode, ctx.backend = mode, backend


def _kernel_grad_backward(ctx, v):
    """G(grad, x) is bilinear: d<G, V>/dgrad = pool(x; V), d<G, V>/dx = adjoint(grad; V)."""
    grad, x = ctx.saved_tensors
    kernel = v.to(compute_dtype(x.dtype))
    grad_grad = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_grad = run_wavelet_pool2d(x, kernel, ctx.mode, ctx.backend).to(grad.dtype)
    if ctx.needs_input_grad[1]:
        size = [x.shape[-2], x.shape[-1]]
        grad_x = run_wavelet_pool2d_adjoint(grad, kernel, ctx.mode, size, ctx.backend).to(x.dtype)
    return grad_grad, grad_x, None, None, None


wavelet_pool2d_kernel_grad.register_autograd(
    _kernel_grad_backward, setup_context=_kernel_grad_setup
)
run_wavelet_pool2d_kernel_grad = DirectOp(
    wavelet_pool2d_kernel_grad,
    _wavelet_pool2d_kernel_grad,
    _kernel_grad_setup,
    _kernel_grad_backward,
)
