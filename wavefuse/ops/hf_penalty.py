"""torch.library custom ops for the per-band energies and the high-frequency penalty.

    wavefuse::band_energy(x, filters, mode, level, p, backend)                    -> energies
    wavefuse::band_energy_backward(grad, x, filters, mode, level, p, backend)     -> grad_x
    wavefuse::hf_penalty(x, filters, mode, level, p, weights, reduction, backend) -> penalty

x: (N, C, H, W); filters: (2, L) dec [lo; hi] taps in the compute dtype (float32, or float64 for
float64 data); p: 1 or 2; energies: (N, J, 3) with J = level, ``[:, j - 1, b]`` the sum over
channels and positions of ``|d|^p`` for band b (cH, cV, cD) of level j (finest first);
grad: (N, J, 3); weights: (J, 3) or None (all ones); reduction: "none" -> (N,), "sum" or "mean"
(over samples) -> 0-d. Energies and penalties come in the compute dtype (float32 for half inputs:
a per-sample sum of squares overflows float16 easily), gradients in x's dtype and memory format.

Autograd. band_energy and hf_penalty save only x (and the constant filters and weights); their
backward is band_energy_backward, which recomputes the coefficients and writes grad_x once.
band_energy_backward is differentiable in turn: with respect to x it is band_energy_backward again
(p=2; zero for p=1, whose derivative is piecewise constant), with respect to grad it is the
per-band inner product of the two inputs' coefficients, built from wavefuse::dwt2d. So double
backward works, and the graph stays traceable by torch.compile. Weights get no gradient.

Kernel contract for the compiled backends (schemas in csrc/ops.cpp; CPU: csrc/cpu/hf_penalty.cpp,
CUDA: csrc/cuda/hf_penalty.cu, never run on a GPU yet):

    _band_energy_kernel(Tensor x, Tensor filters, str mode, int level, int p) -> Tensor
    _band_energy_backward_kernel(Tensor grad, Tensor x, Tensor filters, str mode, int level,
                                 int p) -> Tensor

and, CUDA only, ``_band_energy_cascade_kernel`` and ``_band_energy_backward_cascade_kernel`` with
the same signatures: one launch, one block per plane through every level (``_kernel_name`` says
where they run).

with the shapes, dtypes and layouts above (grad contiguous); Triton: ``band_energy`` and
``band_energy_backward`` in ``wavefuse.kernels.hf_penalty`` (``backends.TRITON_MODULES``).
The forward should keep only the approximation that the next level needs (in the compute dtype),
never the detail bands. hf_penalty has no kernel of its own: it runs the band_energy kernel and
weights and reduces the (N, J, 3) result here.
"""

from __future__ import annotations

import functools
import importlib
import numbers

import torch
from torch import Tensor

from wavefuse import backends, reference
from wavefuse.ops import separable
from wavefuse.ops._common import DirectOp, check_spatial, empty_4d
from wavefuse.ops.dwt import run_dwt2d
from wavefuse.reference import analysis_length

REDUCTIONS = ("none", "sum", "mean")
POWERS = (1, 2)


# csrc/cuda/hf_cascade_body.cuh's kHfCascadeMaxLevels: the most levels the CUDA one-launch
# cascade takes (its argument block's level tables); deeper cascades run level by level.
_CUDA_CASCADE_MAX_LEVELS = 16
# Where x and level sit in the arguments of the ops that have a CUDA cascade.
_CASCADE_ARGS = {"band_energy": (0, 3), "band_energy_backward": (1, 4)}


def _kernel_name(backend: str, name: str, args) -> str:
    """The compiled op that runs ``name`` on backend "cpu" or "cuda". On CUDA, band_energy and its
    backward run as ONE launch with one block per (n, c) plane sweeping every level
    (``_<name>_cascade_kernel``) where separable.cascade_fits says the planes fill the GPU (the
    rule the wavelet step's cascades share; BLIND, unmeasured), else with one or two launches per
    level (``_<name>_kernel``, every level's tiles spread over the GPU)."""
    if backend == "cuda" and name in _CASCADE_ARGS and _has_cuda_cascade(name):
        x_at, level_at = _CASCADE_ARGS[name]
        if separable.cascade_fits(args[x_at], args[level_at], _CUDA_CASCADE_MAX_LEVELS):
            return f"_{name}_cascade_kernel"
    return f"_{name}_kernel"


@functools.cache
def _has_cuda_cascade(name: str) -> bool:
    """Whether this build of wavefuse._C has ``_<name>_cascade_kernel`` for CUDA (an extension
    built before the cascades, loaded by this Python, still runs the level ops)."""
    return backends._has_kernel(f"{name}_cascade", "CUDA")


def _run(backend: str, name: str, *args):
    """The op on a concrete backend (see ``ops.dwt._run``)."""
    if backend == "reference":
        return getattr(reference, f"{name}_ref")(*args)
    if backend in ("cpu", "cuda"):
        return getattr(torch.ops.wavefuse, _kernel_name(backend, name, args))(*args)
    if backend == "triton":
        module = importlib.import_module(f"wavefuse.kernels.{backends.TRITON_MODULES[name]}")
        return getattr(module, name)(*args)
    raise ValueError(f"backend={backend!r} is not a concrete backend")


# ---- validation (once, in Python, before any kernel) ---------------------------------------------


def check_p(p) -> int:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or p not in POWERS:
        raise ValueError(f"p={p!r} is not supported; allowed: 1, 2")
    return int(p)


def check_reduction(reduction) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not supported; allowed: none, sum, mean")
    return reduction


def check_cascade(h: int, w: int, taps: int, mode: str, level: int, argname: str) -> None:
    """Every level of the analysis cascade must be computable (reflect needs 2 samples)."""
    for j in range(1, level + 1):
        check_spatial(h, w, mode, f"{argname} (level {j})" if j > 1 else argname)
        h, w = analysis_length(h, taps, mode), analysis_length(w, taps, mode)


def prepare_weights(weights, level: int, like: Tensor, dtype: torch.dtype) -> Tensor | None:
    """None -> None (every level and band weighs 1); a (J,) sequence or tensor -> one weight per
    level for all three bands; a (J, 3) one -> per level and band. Returned as (J, 3) in the compute
    dtype on x's device."""
    if weights is None:
        return None
    allowed = f"None, or a sequence or tensor of shape ({level},) or ({level}, 3) (J = level)"
    if isinstance(weights, Tensor):
        if weights.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "weights must not require grad: hf_penalty does not differentiate them"
            )
        if not weights.is_floating_point():
            raise TypeError(f"weights has dtype {weights.dtype}; allowed: a floating-point dtype")
        if weights.device != like.device:
            raise ValueError(f"weights is on {weights.device}, x on {like.device}: use one device")
        w = weights.detach().to(dtype)
    else:
        try:
            w = torch.tensor(weights, dtype=dtype)  # on the host: no device copy yet
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"weights must be {allowed}; got {weights!r}") from None
    if w.dim() == 1 and w.shape[0] == level:
        w = w[:, None].expand(level, 3)
    if w.shape != (level, 3):
        raise ValueError(f"weights has shape {tuple(w.shape)}; allowed: {allowed}")
    if isinstance(weights, Tensor):
        return w.contiguous()
    if like.device.type == "cpu" or torch.compiler.is_compiling():
        return w.contiguous().to(like.device)
    # Python numbers on a GPU: copying them every call would be a blocking host-to-device copy
    # per training step (and an error under CUDA graph capture): one copy per distinct weights.
    return _device_weights(tuple(w.flatten().tolist()), dtype, like.device)


@functools.lru_cache(maxsize=64)
def _device_weights(values: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    # A normal tensor even if first asked for under inference_mode (it is saved for backward).
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=dtype, device=device).reshape(-1, 3)


# ---- band_energy ---------------------------------------------------------------------------------


def _band_energy(x: Tensor, filters: Tensor, mode: str, level: int, p: int, backend: str) -> Tensor:
    return _run(backend, "band_energy", x, filters, mode, level, p)


band_energy = torch.library.custom_op("wavefuse::band_energy", mutates_args=())(_band_energy)


@band_energy.register_fake
def _(x, filters, mode, level, p, backend):
    return x.new_empty((x.shape[0], level, 3), dtype=filters.dtype)


def _band_energy_setup(ctx, inputs, output):
    x, filters, mode, level, p, backend = inputs
    ctx.save_for_backward(x if ctx.needs_input_grad[0] else None, filters)
    ctx.mode, ctx.level, ctx.p, ctx.backend = mode, level, p, backend


def _band_energy_backward(ctx, grad):
    x, filters = ctx.saved_tensors
    if x is None:
        return None, None, None, None, None, None
    grad_x = run_band_energy_backward(grad, x, filters, ctx.mode, ctx.level, ctx.p, ctx.backend)
    return grad_x, None, None, None, None, None


band_energy.register_autograd(_band_energy_backward, setup_context=_band_energy_setup)
run_band_energy = DirectOp(band_energy, _band_energy, _band_energy_setup, _band_energy_backward)


# ---- band_energy_backward ------------------------------------------------------------------------


def _band_energy_backward_impl(
    grad: Tensor, x: Tensor, filters: Tensor, mode: str, level: int, p: int, backend: str
) -> Tensor:
    out = _run(backend, "band_energy_backward", grad.contiguous(), x, filters, mode, level, p)
    if backend == "reference":  # the reference's result is contiguous: copy into x's layout
        out = empty_4d(x, *x.shape).copy_(out)
    return out


band_energy_backward = torch.library.custom_op("wavefuse::band_energy_backward", mutates_args=())(
    _band_energy_backward_impl
)


@band_energy_backward.register_fake
def _(grad, x, filters, mode, level, p, backend):
    return empty_4d(x, *x.shape)


def _band_products(x: Tensor, v: Tensor, filters: Tensor, mode: str, level: int, p: int, backend):
    """(N, J, 3): per band, sum over channels and positions of phi'(d(x)) * d(v), the derivative
    of <band_energy_backward(grad, x), v> with respect to grad. Built from the dwt2d op (on the
    same backend where it has the transforms, else the reference), so it is differentiable too."""
    be = backend if backends.why_not(backend, "dwt2d", x.device.type) is None else "reference"
    a, b = x.to(filters.dtype), v.to(filters.dtype)
    sums = []
    for _ in range(level):
        a, da = run_dwt2d(a, filters, mode, be)
        b, db = run_dwt2d(b, filters, mode, be)
        sums.append(((2 * da if p == 2 else da.sign()) * db).sum(dim=(1, 3, 4)))
    if not sums:
        return x.new_zeros((x.shape[0], 0, 3), dtype=filters.dtype)
    return torch.stack(sums, dim=1)


def _band_energy_backward_setup(ctx, inputs, output):
    grad, x, filters, mode, level, p, backend = inputs
    ctx.save_for_backward(grad, x, filters)
    ctx.mode, ctx.level, ctx.p, ctx.backend = mode, level, p, backend


def _band_energy_backward_backward(ctx, v):
    grad, x, filters = ctx.saved_tensors
    args = (filters, ctx.mode, ctx.level, ctx.p, ctx.backend)
    grad_grad = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_grad = _band_products(x, v, *args).to(grad.dtype)
    if ctx.needs_input_grad[1] and ctx.p == 2:  # linear in x: the same op applied to v
        grad_x = run_band_energy_backward(grad, v, *args)
    return grad_grad, grad_x, None, None, None, None, None


band_energy_backward.register_autograd(
    _band_energy_backward_backward, setup_context=_band_energy_backward_setup
)
run_band_energy_backward = DirectOp(
    band_energy_backward,
    _band_energy_backward_impl,
    _band_energy_backward_setup,
    _band_energy_backward_backward,
)


# ---- hf_penalty ----------------------------------------------------------------------------------


def _hf_penalty(
    x: Tensor,
    filters: Tensor,
    mode: str,
    level: int,
    p: int,
    weights: Tensor | None,
    reduction: str,
    backend: str,
) -> Tensor:
    energies = _run(backend, "band_energy", x, filters, mode, level, p)
    return reference.weighted_penalty(energies, weights, reduction)


hf_penalty = torch.library.custom_op("wavefuse::hf_penalty", mutates_args=())(_hf_penalty)


@hf_penalty.register_fake
def _(x, filters, mode, level, p, weights, reduction, backend):
    return x.new_empty((x.shape[0],) if reduction == "none" else (), dtype=filters.dtype)


def _hf_penalty_setup(ctx, inputs, output):
    x, filters, mode, level, p, weights, reduction, backend = inputs
    ctx.save_for_backward(x if ctx.needs_input_grad[0] else None, filters, weights)
    ctx.mode, ctx.level, ctx.p, ctx.backend = mode, level, p, backend
    ctx.reduction = reduction


def _hf_penalty_backward(ctx, grad_out):
    x, filters, weights = ctx.saved_tensors
    nones = (None,) * 7
    if x is None:
        return (None, *nones)
    n = x.shape[0]
    g = grad_out.reshape(-1, 1, 1)  # (N, 1, 1) for "none", (1, 1, 1) otherwise
    if ctx.reduction == "mean":
        g = g / n
    if weights is not None:
        g = g * weights
    grad_e = g.expand(n, ctx.level, 3).contiguous()
    grad_x = run_band_energy_backward(grad_e, x, filters, ctx.mode, ctx.level, ctx.p, ctx.backend)
    return (grad_x, *nones)


hf_penalty.register_autograd(_hf_penalty_backward, setup_context=_hf_penalty_setup)
run_hf_penalty = DirectOp(hf_penalty, _hf_penalty, _hf_penalty_setup, _hf_penalty_backward)
