"""Validation and output layout shared by every op. Validation happens here, in Python, once,
before any kernel launches; messages name the argument and the allowed values."""

from __future__ import annotations

import numbers
import sys
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd import forward_ad

from wavefuse.filters import MODE_CODES, MODES, OLD_MODE_NAMES

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor4d(x, argname: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{argname} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{argname} has dtype {x.dtype}; allowed: float16, bfloat16, float32, float64"
        )
    if x.dim() != 4:
        raise ValueError(f"{argname} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{argname} has an empty spatial dimension: shape {tuple(x.shape)}")
    return x


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside wavefuse (the user's
    call), however deep inside the package the warning is raised: Python's default filters show
    a DeprecationWarning only when it is attributed to ``__main__``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__") or "").partition(".")[0] == (
        "wavefuse"
    ):
        frame, level = frame.f_back, level + 1
    return level


def check_mode(mode, argname: str = "mode") -> str:
    """The canonical mode name. Besides the names in MODES, PyWavelets' other spellings work as
    in pywt: its integer codes (``pywt.Modes.periodization``) and its deprecated short names
    ("per", "sym", "zpd", "ppd"; each with pywt's DeprecationWarning, skipped while tracing)."""
    if type(mode) is str and mode in MODES:  # the common case first
        return mode
    if isinstance(mode, str) and mode in MODES:  # a str subclass: np.str_, a str Enum member
        return MODES[MODES.index(mode)]
    name = None
    if isinstance(mode, str):  # (by ==: a str Enum member hashes by its name, not its value)
        name = next((v for k, v in OLD_MODE_NAMES.items() if k == mode), None)
        if name in MODES and not torch.compiler.is_compiling():
            warnings.warn(
                f"{argname}={mode!r}: PyWavelets renamed {mode} to {name} (the old name "
                f"will be unavailable in a future version of pywt); use {name!r}",
                DeprecationWarning,
                stacklevel=user_stacklevel(),
            )
    elif isinstance(mode, numbers.Integral) and not isinstance(mode, bool):
        name = MODE_CODES.get(int(mode))
    if name in MODES:
        return name
    spelled = f" (PyWavelets' {name!r})" if name is not None else ""
    raise ValueError(
        f"{argname}={mode!r}{spelled} is not supported; allowed: {', '.join(MODES)} (or "
        "PyWavelets' integer codes and old names for them)"
    )


def check_same_device(tensors, argname: str) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(
            f"{argname}: all tensors must be on one device, got {sorted(map(str, devices))}"
        )


def check_same_dtype(tensors, argname: str) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(
            f"{argname}: all tensors must have one dtype, got {sorted(map(str, dtypes))}"
        )


def check_spatial(h: int, w: int, mode: str, argname: str) -> None:
    if mode == "reflect" and min(h, w) < 2:
        raise ValueError(
            f"{argname}: mode='reflect' needs at least 2 samples along each transformed axis "
            f"(as PyWavelets), got spatial size {(h, w)}"
        )


def check_synthesis_input(h: int, w: int, taps: int, mode: str, argname: str) -> None:
    """Synthesis of h x w coefficients must give a non-empty signal: 2m - L + 2 >= 1 per axis."""
    if mode != "periodization" and 2 * min(h, w) - taps + 2 < 1:
        raise ValueError(
            f"{argname}: {h}x{w} coefficients are too few to synthesise a signal with a "
            f"{taps}-tap wavelet in mode {mode!r} (need at least {taps // 2} per axis)"
        )


# --------------------------------------------------------------------------------------------------
# Output layout: outputs keep the memory format of the tensor they are computed from. The detail
# bands come as one (N, C, 3, h, w) tensor (pytorch_wavelets' yh layout) allocated band-major, so
# that each band hi[:, :, b] is itself contiguous (or channels_last) and the PyWavelets-style
# tuple (cH, cV, cD) = hi.unbind(2) costs no copy.
# --------------------------------------------------------------------------------------------------


def is_channels_last(x: Tensor) -> bool:
    """True when the channel dimension is the innermost of C, H, W: channels_last tensors and
    slices of them (waverec2 trims a row of a channels_last approximation, say)."""
    if x.dim() != 4 or x.shape[1] == 1 or x.is_contiguous():
        return False
    spatial = [s for s, n in zip(x.stride()[2:], x.shape[2:]) if n > 1]
    return all(x.stride(1) < s for s in spatial)


def empty_4d(like: Tensor, n: int, c: int, h: int, w: int) -> Tensor:
    fmt = torch.channels_last if is_channels_last(like) else torch.contiguous_format
    return torch.empty((n, c, h, w), dtype=like.dtype, device=like.device, memory_format=fmt)


def empty_bands(like: Tensor, n: int, c: int, h: int, w: int) -> Tensor:
    kw = {"dtype": like.dtype, "device": like.device}
    if is_channels_last(like):
        return torch.empty((3, n, h, w, c), **kw).permute(1, 4, 0, 2, 3)
    return torch.empty((3, n, c, h, w), **kw).permute(1, 2, 0, 3, 4)


# --------------------------------------------------------------------------------------------------
# Plain eager calls without the custom ops' Python layers
# --------------------------------------------------------------------------------------------------


def _functorch_level() -> int | None:
    """The innermost torch.func transform (grad, vmap, jvp) around this call; None outside all.
    Tensors under a transform look like plain tensors (type Tensor, no dispatch mode), so this is
    the only way to see one."""
    return torch._C._functorch.maybe_current_level()


def eager_direct(*tensors: Tensor) -> bool:
    """Whether an op may run its implementation directly instead of through its custom op.

    Through ``torch.ops.wavefuse.*`` a call crosses the Python layers that
    ``torch.library.custom_op`` registers (ADInplaceOrView, Autograd, the backend wrapper): 12 us
    of host time per call on our 2-core CPU when it is quiet (pgd_step on a tiny tensor: 30 us
    through the op, 17.6 directly), more when it is busy; on a small batch that is most of a
    step (on an H200, 2026-12-04, the CUDA Linf step on 128 x 3 x 32 x 32 took 59 us a call
    against torchattacks' 27 us). Those layers matter only to what intercepts ops: torch.compile, a
    TorchDispatchMode (FakeTensorMode, functionalization), a TorchFunctionMode, a torch.func
    transform, a tensor subclass. Without any of them the implementation is called directly
    (``DirectOp``; the in-place steps bump x_adv's version counter as the ADInplaceOrView layer
    would, ``torch.autograd.graph.increment_version``)."""
    return (
        not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and torch._C._len_torch_function_stack() == 0
        and _functorch_level() is None
        and all(type(t) is Tensor for t in tensors if t is not None)
    )


def _tensors(args) -> tuple[list[Tensor], bool]:
    """The tensors among an op's arguments (also inside list arguments), and whether any list
    holds one (autograd.Function does not track tensors inside lists)."""
    found, in_list = [], False
    for a in args:
        if isinstance(a, Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            inner = [t for t in a if isinstance(t, Tensor)]
            found += inner
            in_list = in_list or bool(inner)
    return found, in_list


def refuse_forward_ad(tensors, backend) -> None:
    """Forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) is an error, never a silent
    zero: the custom ops and the kernels have no forward derivative, and torch drops the tangent
    (torch.func.jvp gave 0 for a linear transform). With torch.autograd.forward_ad the reference
    backend runs plain differentiable torch code eagerly, so it is allowed there."""
    if _functorch_level() is not None:
        stack = torch._C._functorch.get_interpreter_stack() or ()
        refused = any(i.key() == torch._C._functorch.TransformType.Jvp for i in stack)
    else:
        refused = (
            forward_ad._current_level >= 0
            and backend != "reference"
            and any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)
        )
    if not refused:
        return
    raise NotImplementedError(
        "forward-mode AD (torch.func.jvp / jvp-based transforms, torch.autograd.forward_ad) is "
        "not supported by wavefuse's ops: they have no forward derivative, and torch would "
        "silently drop the tangent. Use reverse mode (torch.autograd.grad, backward), or, with "
        "torch.autograd.forward_ad in eager mode, backend='reference'"
    )


class DirectOp:
    """A functional (non-mutating) custom op, called directly in plain eager mode.

    ``op`` is the ``torch.library.custom_op``; ``impl``, ``setup_context`` and ``backward`` are the
    functions it was built and registered with. A call runs ``op`` whenever anything intercepts ops
    (``eager_direct`` is false): torch.compile and export, fake tensors, functionalization,
    torch.func, modes and subclasses see the op as before. Otherwise it runs ``impl`` itself when
    no gradient is needed, and the same setup_context and backward as a ``torch.autograd.Function``
    when one is (except with tensors inside list arguments, which that class cannot track: those
    calls go through ``op``). Results, gradients and double backward are the op's
    (tests/test_direct_ops.py); the host time is lower. Per call on a 1 x 1 x 8 x 8 CPU tensor
    (2-core EPYC, 2026-12-04, through the op -> direct): dwt2 25 -> 18 us, wavedec2 haar J=3
    125 -> 51 us, hf_penalty 37 -> 25 us, hf_penalty of an input that requires grad (the
    forward, recording the graph) 73 -> 38 us; bench/bench_host.py keeps such rows (forward +
    backward included) against the peers' calls.

    ``list_output``: the op returns ``list[Tensor]`` (a Function returns a tuple: converted).
    """

    def __init__(
        self,
        op,
        impl: Callable,
        setup_context: Callable,
        backward: Callable,
        list_output: bool = False,
    ) -> None:
        self.op, self.impl, self.list_output = op, impl, list_output

        # forward(ctx, *args) doing the setup itself, not a separate setup_context: with one,
        # every apply binds the arguments with inspect.signature (7 us per call on our CPU).
        # Plain autograd needs no more; torch.func never reaches this class (eager_direct).
        def forward(ctx, *args):
            out = impl(*args)
            setup_context(ctx, args, out)
            return tuple(out) if list_output else out

        def function_backward(ctx, *grads):
            return backward(ctx, list(grads)) if list_output else backward(ctx, *grads)

        name = str(getattr(op, "_name", "op")).replace("::", "_")
        self.function = type(
            f"{name}_direct",
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(function_backward)},
        )

    def __call__(self, *args):
        tensors, in_list = _tensors(args)
        refuse_forward_ad(tensors, args[-1])
        if not eager_direct(*tensors):
            return self.op(*args)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            if in_list:
                return self.op(*args)
            out = self.function.apply(*args)
            return list(out) if self.list_output else out
        return self.impl(*args)
