"""torch.library custom ops for the PGD update, in place on x_adv.

    wavefuse::pgd_step(x_adv!, grad, x_nat, eps, alpha, lo, hi,
                       eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm, backend)         -> ()
    wavefuse::wavelet_pgd_step(x_adv!, grad, x_nat, eps, alpha, lo, hi,
                               eps_tensor, alpha_tensor, lo_tensor, hi_tensor,
                               filters, wave_mode, level, hf_scale, norm, backend)            -> ()

x_adv, grad, x_nat: (N, C, H, W), one shape, dtype and device; x_adv is overwritten (declared
mutated, so torch.compile functionalises it) and nothing is returned. Each of eps, alpha, lo, hi
is a float, or, when its ``*_tensor`` is given, that tensor and the float is ignored (the Python
layer passes NaN there): 4-D, shape (N or 1, C or 1, 1, 1), the compute dtype (float32, float64
for float64 data), x's device. Floats stay kernel arguments, so a step with float bounds reads no
extra memory and launches nothing but the step. norm: "Linf" or "L2" (for L2, eps_tensor has one
entry per sample). filters: (2, L) dec [lo; hi] taps of an orthogonal wavelet in the compute dtype
(synthesis uses them reversed); wave_mode: the boundary mode (not named ``mode``: a mutating
op's arguments are passed as keywords to torch's auto_functionalized, whose handlers take the
dispatch mode as their first parameter, ``mode``); hf_scale: one factor per level, finest first.
The update is ``reference.pgd_step_ref`` (torchattacks 3.5.1's PGD and PGDL2 update op for op,
bit-identical in float32; half types compute in float32 and round once) and
``reference.wavelet_pgd_step_ref``.

No autograd: a step is not differentiable, and PyTorch refuses autograd formulas for ops that
mutate their inputs; the Python layer rejects an x_adv that requires grad while grad mode is on.

Kernel contract for the compiled backends (schemas in csrc/ops.cpp): the same arguments without
``backend``,

    _pgd_step_kernel(Tensor(a!) x_adv, Tensor grad, Tensor x_nat, float eps, float alpha,
                     float lo, float hi, Tensor? eps_tensor, Tensor? alpha_tensor,
                     Tensor? lo_tensor, Tensor? hi_tensor, str norm) -> ()
    _wavelet_pgd_step_kernel(<the same up to hi_tensor>, Tensor filters, str wave_mode, int level,
                             float[] hf_scale, str norm) -> ()
    _separable_pgd_step_kernel(<the same up to hi_tensor>, Tensor left, Tensor right_t,
                               float identity, str norm) -> ()      (CUDA only)
    _chain_pgd_step_kernel(<the same as _wavelet_pgd_step_kernel>)  (CUDA only)

The last is wavelet_pgd_step with its filter given as separable matrix pairs (g' = identity * G +
sum_k left[k] @ G @ right_t[k] per H x W plane, left (K, H, H) and right_t (K, W, W) contiguous
in the compute dtype on x's device; wavefuse/ops/separable.py builds and caches them), for planes
up to 64 x 64; this module calls it (``_cuda_separable``). The chain kernel is wavelet_pgd_step
for a bank with perfect reconstruction, which its caller has checked (``_cuda_chain_step``:
separable.perfect_reconstruction), level >= 1 (the levels past separable.chain_depth dropped):
per level one launch that writes the approximation band alone, then per level, coarsest first,
one launch of its synthesis combined with the finer approximation, then the step; no detail band
is formed.

L2 needs the per-sample norms of g and of the new delta: compute them in the same launch or one
extra small reduction, never with a host sync. Triton: ``pgd_step`` and ``wavelet_pgd_step`` in
``wavefuse.kernels.pgd_step``. The wavelet kernel is never called with every scale 1 (or level 0):
that is exactly pgd_step, and this module runs pgd_step's kernel instead. The C++ CPU kernel
(csrc/cpu/pgd_step.cpp) runs a two-tap orthogonal bank (haar, db1) as one fused pass, for every
mode, level and size: grad is read once and no band is formed; other wavelets run one pass per
plane (or per 8 small planes) that filters the gradient through every level in task-local buffers
and steps it (Linf: one pass; L2: that pass writes g', then the step), no band written to memory
either. The CUDA kernel (csrc/cuda/pgd_step.cu, never run on a GPU
yet) has pgd_step as Triton's launches and runs a two-tap bank (haar, db1) with 1 <= level <= 6 as
one fused kernel as Triton's (filter and step: one launch for Linf, three for L2, every mode, size,
dtype and layout, no host sync); other wavelets (and deeper Haar levels) on planes up to 64 x 64
run _separable_pgd_step_kernel (the filter of every level as the separable matrix pairs of
wavefuse/ops/separable.py, which this module builds and passes: one launch for Linf, three for L2),
larger planes _chain_pgd_step_kernel (one launch for every level, one block per plane, where
separable.cascade_fits; otherwise one launch per level, the chain's stages two per launch, or two
per level for a filter whose window does not fit in shared memory; then the step) or, for a bank
without perfect reconstruction, the CUDA transform kernels level by level, then the step. Triton
likewise: on planes up to 64 x 64 one launch for every level (Linf steps in it; L2: three
launches, that one also summing g'^2 per plane, then pgd_step's last two), larger planes the
approximation chain -- in one launch for every level (one program per plane, the same launch
counts) or, where the planes do not fill the GPU or one is too large (separable.cascade_fits), one
launch per level (the chain's analysis and synthesis stages two per launch, each program
recomputing its tile's halo; Linf steps in the last) -- or, without perfect reconstruction, level
by level. The separable kernels spread a non-finite gradient entry (NaN, +-inf) over its whole
plane as NaN (0 * inf in the matrix products), a superset of the
reference's NaN positions.
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers

# Custom-op signatures say Sequence[float], not list[float]: torch 2.6's infer_schema knows only
# the typing spellings (list[float] was a ValueError at import).
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from wavefuse import backends, reference
from wavefuse.filters import compute_dtype
from wavefuse.ops import separable
from wavefuse.ops._common import (
    FLOAT_DTYPES,
    check_same_device,
    check_same_dtype,
    check_tensor4d,
    eager_direct,
)

NORMS = ("Linf", "L2")


def _kernel(backend: str, name: str):
    if backend in ("cpu", "cuda"):
        return getattr(torch.ops.wavefuse, f"_{name}_kernel")
    if backend == "triton":
        module = importlib.import_module(f"wavefuse.kernels.{backends.TRITON_MODULES[name]}")
        return getattr(module, name)
    raise ValueError(f"backend={backend!r} is not a concrete backend")


# ---- validation (once, in Python, before any kernel) ---------------------------------------------


class Bounds(NamedTuple):
    """eps, alpha, lo, hi as the ops take them: floats, each replaced by its tensor when given."""

    eps: float
    alpha: float
    lo: float
    hi: float
    eps_tensor: Tensor | None
    alpha_tensor: Tensor | None
    lo_tensor: Tensor | None
    hi_tensor: Tensor | None

    # Attributes, not slices: torch 2.6's dynamo fails on a slice of a NamedTuple.
    def floats(self) -> tuple:
        return self.eps, self.alpha, self.lo, self.hi

    def tensors(self) -> tuple:
        return self.eps_tensor, self.alpha_tensor, self.lo_tensor, self.hi_tensor

    def values(self) -> tuple:
        """(eps, alpha, lo, hi), each the tensor where given, else the float."""
        return tuple(t if t is not None else f for f, t in zip(self.floats(), self.tensors()))


def check_norm(norm) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported; allowed: Linf, L2")
    return norm


def _plainly_valid(x_adv, grad, x_nat) -> bool:
    """The common case in one expression (a step is called every attack iteration, and the
    checks below cost microseconds of host time each): three plain tensors of one 4-D shape with
    non-empty planes, one float dtype, one device. False sends the call through the checks that
    say what is wrong."""
    return (
        type(x_adv) is Tensor
        and type(grad) is Tensor
        and type(x_nat) is Tensor
        and x_adv.dim() == 4
        and x_adv.shape[-2] > 0
        and x_adv.shape[-1] > 0
        and grad.shape == x_adv.shape
        and x_nat.shape == x_adv.shape
        and x_adv.dtype in FLOAT_DTYPES
        and grad.dtype == x_adv.dtype
        and x_nat.dtype == x_adv.dtype
        and grad.device == x_adv.device
        and x_nat.device == x_adv.device
    )


def check_step_tensors(x_adv, grad, x_nat) -> Tensor:
    """x_adv, grad and x_nat: 4-D float tensors of one shape, dtype and device; x_adv writable."""
    named = {"x_adv": x_adv, "grad": grad, "x_nat": x_nat}
    if not _plainly_valid(x_adv, grad, x_nat):  # the checks that name what is wrong
        for name, t in named.items():
            check_tensor4d(t, name)
        for name, t in named.items():
            if t.shape != x_adv.shape:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)} but x_adv has shape "
                    f"{tuple(x_adv.shape)}: x_adv, grad and x_nat must have one shape"
                )
        check_same_device(named.values(), "x_adv, grad, x_nat")
        check_same_dtype(named.values(), "x_adv, grad, x_nat")
    if x_adv.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "x_adv requires grad: the step updates it in place and is not differentiable; "
            "pass x_adv.detach() or call it under torch.no_grad()"
        )
    # Addresses are not traceable (eager only), and meta tensors have none (every data_ptr is 0).
    if not torch.compiler.is_compiling() and not x_adv.is_meta:
        if x_adv.is_inference() and not torch.is_inference_mode_enabled():
            raise ValueError(
                "x_adv is an inference tensor (made under torch.inference_mode()): it can be "
                "updated in place only inside inference_mode; pass x_adv.clone()"
            )
        if torch._debug_has_internal_overlap(x_adv) == 1:  # 1: yes (2: too hard to tell, no)
            raise ValueError(
                f"x_adv has elements that share memory (strides {x_adv.stride()}, e.g. an "
                "expand()ed tensor): the in-place step would write one location twice; pass "
                "x_adv.clone()"
            )
        storage = x_adv.untyped_storage().data_ptr()
        for name in ("grad", "x_nat"):
            if named[name].untyped_storage().data_ptr() != storage:
                continue
            if _overlap(x_adv, named[name]):
                raise ValueError(
                    f"x_adv overlaps {name} in memory: the in-place step would change {name} "
                    "while reading it; pass a copy (x_adv.clone())"
                )
    return x_adv


def _overlap(a: Tensor, b: Tensor) -> bool:
    """Whether two views of one buffer may share an element: disjoint byte spans never; views of
    one shape, strides and dtype exactly (their elements are one lattice shifted: interleaved
    ``buf[..., ::2]`` and ``buf[..., 1::2]``, or two slices of a stack, share none); any other
    pair whose spans meet is taken to overlap (refused: deciding it exactly is a knapsack
    problem, and a step through a real overlap gives silently wrong results)."""
    span, other = _byte_span(a), _byte_span(b)
    if not (span and other and span[0] < other[1] and other[0] < span[1]):
        return False
    if a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype:
        shift, rem = divmod(b.data_ptr() - a.data_ptr(), a.element_size())
        return rem == 0 and _on_lattice(shift, sorted(
            ((abs(st), n) for n, st in zip(a.shape, a.stride()) if n > 1 and st != 0),
            reverse=True,
        ))  # fmt: skip
    return True


def _on_lattice(d: int, dims: list[tuple[int, int]]) -> bool:
    """Whether d = sum k_i s_i with |k_i| < n_i over dims [(s_i, n_i)], largest stride first: a
    shift between two views of one shape and strides that maps an element onto an element. Only
    the multiples of s that leave a remainder within the smaller strides' reach are tried: two a
    level where the strides nest (a non-overlapping view's do), so 4-D takes at most 16 leaves."""
    if not dims:
        return d == 0
    (s, n), rest = dims[0], dims[1:]
    reach = sum((m - 1) * t for t, m in rest)
    lo_k = max(-(n - 1), -((reach - d) // s))  # ceil((d - reach) / s)
    hi_k = min(n - 1, (d + reach) // s)
    return any(_on_lattice(d - k * s, rest) for k in range(lo_k, hi_k + 1))


def _byte_span(t: Tensor) -> tuple[int, int] | None:
    """[first, last + 1) byte address that t's elements can occupy (None when empty): views of
    one buffer that lie in disjoint spans (buf[0] and buf[1]) do not overlap."""
    if t.numel() == 0:
        return None
    start = t.data_ptr()
    extent = sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))
    return start, start + (extent + 1) * t.element_size()


def _param(value, name: str, x: Tensor, per_sample_only: bool) -> tuple[float, Tensor | None]:
    """A float -> (float, None); a tensor -> (NaN, 4-D tensor in the compute dtype)."""
    if isinstance(value, Tensor):
        return math.nan, _param_tensor(value, name, x, per_sample_only)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    return float(value), None


def _param_tensor(t: Tensor, name: str, x: Tensor, per_sample_only: bool) -> Tensor:
    n, c = x.shape[:2]
    if not t.is_floating_point():
        raise TypeError(f"{name} has dtype {t.dtype}; allowed: a floating-point dtype")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device}, x_adv on {x.device}: use one device")
    shape = (1,) * (4 - t.dim()) + tuple(t.shape) if t.dim() <= 4 else tuple(t.shape)
    if per_sample_only:
        ok = len(shape) == 4 and shape[0] in (1, n) and shape[1:] == (1, 1, 1)
    else:
        ok = len(shape) == 4 and shape[0] in (1, n) and shape[1] in (1, c) and shape[2:] == (1, 1)
    if not ok:  # the message only now: formatting a symbolic N or C would specialise it
        if per_sample_only:
            allowed = f"a float, or a per-sample tensor of shape ({n}, 1, 1, 1) or (1, 1, 1, 1)"
            why = " (norm='L2' projects each sample onto one ball: one radius per sample)"
        else:
            allowed = (
                f"a float, or a tensor broadcastable to x of shape ({n}, 1, 1, 1) per sample, "
                f"(1, {c}, 1, 1) per channel, ({n}, {c}, 1, 1) or (1, 1, 1, 1)"
            )
            why = ""
        hint = " (a 1-D tensor broadcasts along W, not N: use .view(-1, 1, 1, 1))"
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; allowed: {allowed}{why}"
            + (hint if t.dim() == 1 and t.numel() > 1 else "")
        )
    return t.detach().reshape(shape).to(compute_dtype(x.dtype))


def _check_values(b: Bounds) -> None:
    """eps >= 0, alpha finite, lo <= hi (no NaN anywhere). Float checks are comparisons, which
    torch.compile traces; tensor values are checked only in eager mode on CPU, where reading them
    costs no device sync (on a GPU a check would stall the attack loop every step)."""
    eps, alpha, lo, hi = b.values()
    checks = (
        (eps, lambda v: v >= 0, "eps must be >= 0", "eps"),
        (alpha, lambda v: abs(v) < math.inf, "alpha must be finite", "alpha"),
        (lo, lambda v: abs(v) <= math.inf, "lo must not be NaN", "lo"),
        (hi, lambda v: abs(v) <= math.inf, "hi must not be NaN", "hi"),
    )
    eager_cpu = not torch.compiler.is_compiling()
    for value, ok, message, name in checks:
        if isinstance(value, Tensor):
            if eager_cpu and value.device.type == "cpu" and not bool(ok(value).all()):
                raise ValueError(f"{message}; the tensor {name} has an entry that is not")
        elif not ok(value):
            raise ValueError(f"{message}, got {name}={value!r}")
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        t = lo if isinstance(lo, Tensor) else hi
        if eager_cpu and t.device.type == "cpu" and not bool((lo <= hi).all()):
            raise ValueError("lo > hi for some entries: the clamp range must satisfy lo <= hi")
    elif not lo <= hi:
        raise ValueError(f"lo={lo!r} > hi={hi!r}: the clamp range must satisfy lo <= hi")


def _traced_bounds(x: Tensor, eps, alpha, lo, hi) -> Bounds:
    """Valid float bounds while torch.compile traces: (1, 1, 1, 1) tensors made by arithmetic, so
    that a float that changes between calls (an eps schedule) is a graph input, not a constant
    baked into the graph (a float argument of the op is: each new value recompiled, and
    fullgraph=True failed at the 9th). Infinite bounds (no clamp) stay floats."""
    one = x.new_ones((1, 1, 1, 1), dtype=compute_dtype(x.dtype))
    floats, tensors = [], []
    for v in (eps, alpha, lo, hi):
        if abs(v) == math.inf:
            floats.append(v)
            tensors.append(None)
        else:
            floats.append(math.nan)
            tensors.append(one * v)
    return Bounds(*floats, *tensors)


def prepare_bounds(x: Tensor, eps, alpha, lo, hi, norm: str) -> Bounds:
    """Validate eps, alpha, lo, hi against x (N, C, H, W) and the norm; floats stay floats."""
    if (
        type(eps) is float
        and type(alpha) is float
        and type(lo) is float
        and type(hi) is float
        and eps >= 0
        and abs(alpha) < math.inf
        and lo <= hi  # False for a NaN bound
    ):  # four valid Python floats, the common case: no per-argument dispatch
        if torch.compiler.is_compiling():
            return _traced_bounds(x, eps, alpha, lo, hi)
        return Bounds(eps, alpha, lo, hi, None, None, None, None)
    parts = [
        _param(eps, "eps", x, per_sample_only=norm == "L2"),
        _param(alpha, "alpha", x, per_sample_only=False),
        _param(lo, "lo", x, per_sample_only=False),
        _param(hi, "hi", x, per_sample_only=False),
    ]
    b = Bounds(*(f for f, _ in parts), *(t for _, t in parts))
    _check_values(b)
    return b


# ---- eager calls without the custom op's Python layers ---------------------------------------------


def run_pgd_step(x_adv, grad, x_nat, bounds: Bounds, norm: str, backend: str) -> None:
    """``pgd_step`` on validated arguments: directly in plain eager mode, else through the op."""
    if eager_direct(x_adv, grad, x_nat, *bounds.tensors()):
        _pgd_step_impl(x_adv, grad, x_nat, bounds, norm, backend)
        torch.autograd.graph.increment_version(x_adv)
    else:
        pgd_step(x_adv, grad, x_nat, *bounds, norm, backend)


# ---- pgd_step ------------------------------------------------------------------------------------


def _pgd_step_impl(x_adv, grad, x_nat, bounds: Bounds, norm: str, backend: str) -> None:
    if backend == "reference":
        eps, alpha, lo, hi = bounds.values()
        with torch.no_grad():  # a step is not differentiable: x_adv never joins a graph
            x_adv.copy_(reference.pgd_step_ref(x_adv, grad, x_nat, eps, alpha, lo, hi, norm))
    else:
        _kernel(backend, "pgd_step")(x_adv, grad, x_nat, *bounds, norm)


@torch.library.custom_op("wavefuse::pgd_step", mutates_args=("x_adv",))
def pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps: float,
    alpha: float,
    lo: float,
    hi: float,
    eps_tensor: Tensor | None,
    alpha_tensor: Tensor | None,
    lo_tensor: Tensor | None,
    hi_tensor: Tensor | None,
    norm: str,
    backend: str,
) -> None:
    bounds = Bounds(eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor)
    _pgd_step_impl(x_adv, grad, x_nat, bounds, norm, backend)


@pgd_step.register_fake
def _(x_adv, grad, x_nat, *args):
    return None


# ---- wavelet_pgd_step ----------------------------------------------------------------------------


@torch.library.custom_op("wavefuse::wavelet_pgd_step", mutates_args=("x_adv",))
def wavelet_pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps: float,
    alpha: float,
    lo: float,
    hi: float,
    eps_tensor: Tensor | None,
    alpha_tensor: Tensor | None,
    lo_tensor: Tensor | None,
    hi_tensor: Tensor | None,
    filters: Tensor,
    wave_mode: str,
    level: int,
    hf_scale: Sequence[float],
    norm: str,
    backend: str,
) -> None:
    bounds = Bounds(eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor)
    _wavelet_pgd_step_impl(
        x_adv, grad, x_nat, bounds, filters, wave_mode, level, hf_scale, norm, backend
    )


def _wavelet_pgd_step_impl(
    x_adv, grad, x_nat, bounds: Bounds, filters, wave_mode, level, hf_scale, norm, backend
) -> None:
    if len(hf_scale) != level:  # the public function expands a float; the op takes the list
        raise ValueError(
            f"wavelet_pgd_step: hf_scale has {len(hf_scale)} entries for level={level}: "
            "one per level, finest first"
        )
    if level == 0 or all(s == 1.0 for s in hf_scale):  # the identity filter: exactly pgd_step
        _pgd_step_impl(x_adv, grad, x_nat, bounds, norm, backend)
    elif backend == "reference":
        eps, alpha, lo, hi = bounds.values()
        with torch.no_grad():  # a step is not differentiable: x_adv never joins a graph
            x_adv.copy_(
                reference.wavelet_pgd_step_ref(
                    x_adv,
                    grad,
                    x_nat,
                    eps,
                    alpha,
                    filters,
                    wave_mode,
                    level,
                    list(hf_scale),
                    lo,
                    hi,
                    norm,
                )
            )
    else:
        args = (filters, wave_mode, level, list(hf_scale), norm)
        if not (
            backend == "cuda"
            and (
                _cuda_separable_step(x_adv, grad, x_nat, bounds, *args)
                or _cuda_chain_step(x_adv, grad, x_nat, bounds, *args)
            )
        ):
            _kernel(backend, "wavelet_pgd_step")(x_adv, grad, x_nat, *bounds, *args)


def run_wavelet_pgd_step(x_adv, grad, x_nat, bounds: Bounds, *args) -> None:
    """``wavelet_pgd_step`` on validated arguments (args: filters, mode, level, hf_scale, norm,
    backend): directly in plain eager mode (``eager_direct``), else through the op."""
    if eager_direct(x_adv, grad, x_nat, args[0], *bounds.tensors()):
        _wavelet_pgd_step_impl(x_adv, grad, x_nat, bounds, *args)
        torch.autograd.graph.increment_version(x_adv)
    else:
        wavelet_pgd_step(x_adv, grad, x_nat, *bounds, *args)


# csrc/cuda: the fused Haar step's deepest level (cuda_haar::kHaarMaxLevels) and the separable
# kernel's largest plane side (kSepMaxSide).
_CUDA_HAAR_MAX_LEVELS = 6
_CUDA_SEPARABLE_MAX_SIDE = 64
# csrc/cuda/cascade_body.cuh's kCascadeMaxLevels: the most levels its one-launch chain takes.
_CUDA_CASCADE_MAX_LEVELS = 16


def _cuda_separable_step(x_adv, grad, x_nat, bounds, filters, mode, level, hf_scale, norm) -> bool:
    """The CUDA separable kernel where it applies (``_cuda_separable``) and its matrices can be
    had (separable.filter_terms: not a new bank under CUDA graph capture); False otherwise."""
    if not _cuda_separable(x_adv, filters, level):
        return False
    h, w = x_adv.shape[-2:]
    cdtype = compute_dtype(x_adv.dtype)
    terms = separable.filter_terms(
        filters, mode, level, h, w, list(hf_scale), cdtype, h, w, x_adv.device
    )
    if terms is None:
        return False
    torch.ops.wavefuse._separable_pgd_step_kernel(
        x_adv, grad, x_nat, *bounds, terms.left, terms.right_t, terms.identity, norm
    )
    return True


def _cuda_separable(x_adv: Tensor, filters: Tensor, level: int) -> bool:
    """Whether the CUDA backend runs the separable one-plane kernel: a bank that the fused Haar
    kernel does not take (longer than two taps, or deeper than its levels) on planes up to
    _CUDA_SEPARABLE_MAX_SIDE; otherwise _wavelet_pgd_step_kernel (the fused Haar step, or the
    per-level composition)."""
    haar = filters.shape[-1] == 2 and level <= _CUDA_HAAR_MAX_LEVELS
    small = max(x_adv.shape[-2:]) <= _CUDA_SEPARABLE_MAX_SIDE
    # an empty x_adv goes to _wavelet_pgd_step_kernel, which checks the arguments and returns
    return not haar and small and x_adv.numel() > 0 and _has_cuda_separable()


def _cuda_chain_step(x_adv, grad, x_nat, bounds, filters, mode, level, hf_scale, norm) -> bool:
    """_chain_pgd_step_kernel (the approximation chain, csrc/cuda/pgd_step.cu) for a bank that
    the fused Haar kernel does not take, on planes the separable kernel does not (or where its
    matrices cannot be had), when the bank has perfect reconstruction at these sizes
    (separable.perfect_reconstruction: checked on the host once per bank, mode and size and cached;
    None, i.e. not known, for a new device bank under CUDA graph capture); only the levels the
    filter needs (separable.chain_depth); in one cascade launch where separable.cascade_fits
    (planes that fill the GPU), otherwise in pairs of stages (one launch per level; level by level
    for a bank over 46 taps in float64 or 80 in float32, whose window does not fit in shared
    memory: no named wavelet). False otherwise:
    _wavelet_pgd_step_kernel's composition of the transforms runs then."""
    haar = filters.shape[-1] == 2 and level <= _CUDA_HAAR_MAX_LEVELS
    if haar or x_adv.numel() == 0 or not _has_cuda_chain():
        return False
    depth = separable.chain_depth(level, hf_scale)
    h, w = x_adv.shape[-2:]
    if depth == 0 or not separable.perfect_reconstruction(filters, mode, level, h, w):
        return False
    scales = [float(s) for s in hf_scale[:depth]]
    cascade = separable.cascade_fits(x_adv, depth, _CUDA_CASCADE_MAX_LEVELS)
    torch.ops.wavefuse._chain_pgd_step_kernel(
        x_adv, grad, x_nat, *bounds, filters, mode, depth, scales, norm, cascade
    )
    return True


@functools.cache
def _has_cuda_chain() -> bool:
    """Whether this build of wavefuse._C has the CUDA approximation chain."""
    return backends._has_kernel("chain_pgd_step", "CUDA")


@functools.cache
def _has_cuda_separable() -> bool:
    """Whether this build of wavefuse._C has the separable CUDA kernel (an extension built before
    it still runs the per-level composition)."""
    return backends._has_kernel("separable_pgd_step", "CUDA")


@wavelet_pgd_step.register_fake
def _(x_adv, grad, x_nat, *args):
    return None
