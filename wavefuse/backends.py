"""Which backends are live, why the others are not, and how "auto" chooses.

Backends: "reference" (pure PyTorch, always live), "cpu" and "cuda" (the C++/CUDA kernels in
``wavefuse._C``), "triton" (``wavefuse.kernels``). A backend is live for an op when its code is
built or importable *and* has a kernel for that op; liveness is decided once, at import, without
touching a GPU, so that resolving a backend is a dictionary lookup that torch.compile traces. One
thing depends on the GPU itself: whether the build holds code for its architecture. The first CUDA
call on each device asks the CUDA runtime (``cuda_device_reason``, a constant for torch.compile);
"auto" skips "cuda" on a GPU the build cannot run, and backend="cuda" says why and how to rebuild.

Choice rule for ``backend="auto"`` (per op and device type), first live wins:

* CUDA tensors: cuda, reference (Triton on CUDA tensors only when asked for: see the evidence);
* CPU tensors: cpu, reference (Triton on CPU means the interpreter: only when asked for explicitly).

Evidence. CPU: bench/results/cpu.csv (2-core EPYC; first run 2026-11-23, rows of 2026-12-05)
has the C++ kernels faster than the reference and every peer on every row, so "cpu" leads on CPU
tensors wherever it has a kernel (the transforms, band_energy/hf_penalty, pgd_step,
wavelet_pgd_step). The pooling kernels have no CSV rows yet; a spot check on the same machine
(load ~4, so rough) had them 1.6-68x faster than the reference forward and 1.0-13x on the
adjoint, contiguous and channels_last, haar/db2/db4.
GPU: bench/results/gpu-nvidia-h200.csv (one H200, torch 2.11, 2026-12-04; the first GPU run).
The CUDA kernels passed the GPU test suite there (tests marked gpu: every op against the
reference, autograd, opcheck, torch.compile, CUDA-graph capture; the 12 failures were tests that
asked for invalid reflect levels, fixed since) and were faster than the reference on every
benchmark row: geometric means (reference ms / cuda ms) 15.8x dwt2d forward (48 cases), 6.9x its
adjoint, 6.7x hf_penalty forward + backward (32), 3.7x pgd_step (8), 18.5x / 15.1x
wavelet_pgd_step Linf / L2 (8 each), never under 1.8x. So "cuda" leads on CUDA tensors wherever
it has a kernel (every op but pooling). Triton on the GPU was checked only by the benchmarks' own
oracle checks (bench_gpu.py compares every implementation before timing it; all agreed) and was
slower than "cuda" in geometric mean on every op (2.6x dwt2d forward, 46 cases; 2.1x hf_penalty,
5; 1.35x pgd_step, 8; 3.7x wavelet_pgd_step, 16); it was faster only on the large pgd_step cases
(512 x 3 x 224 x 224: 0.29 vs 0.34 ms Linf, 0.58 vs 1.06 ms L2, float32) and on 3 of the 46
dwt2d forward cases (db4 symmetric J=1 on 128 x 64 x 32 x 32 in float32 and bfloat16, haar
periodization J=3 on 16 x 3 x 224 x 224), so it stays out of "auto". Pooling has no CUDA
kernels and no GPU measurements: CUDA tensors pool with "reference".

``WAVEFUSE_BACKEND`` (one of auto, reference, cpu, cuda, triton) replaces "auto" when set, for
the ops that backend has kernels for: an op it has none for in this version (pooling on "cuda"
and "triton") keeps auto's own choice, so that WAVEFUSE_BACKEND=cuda on a GPU does not break the
models' pooling layers. Where the backend has the op but cannot run it (CPU tensors under
WAVEFUSE_BACKEND=cuda, an extension that did not build), the error names WAVEFUSE_BACKEND. An
explicit ``backend=`` argument always wins, and is never replaced.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import os
import warnings

import torch

BACKENDS = ("reference", "cpu", "cuda", "triton")
CHOICES = ("auto",) + BACKENDS
TRANSFORM_OPS = ("dwt2d", "dwt2d_adjoint", "idwt2d", "idwt2d_adjoint")
FUSED_OPS = ("band_energy", "band_energy_backward", "hf_penalty", "pgd_step", "wavelet_pgd_step")
POOL_OPS = ("wavelet_pool2d", "wavelet_pool2d_adjoint", "wavelet_pool2d_kernel_grad")
OPS = TRANSFORM_OPS + FUSED_OPS + POOL_OPS
# Triton kernels live in wavefuse.kernels.<module>; each module exposes one launcher per op name.
# Each family has its own module, so that one module's arrival does not mark another's ops live.
TRITON_MODULES = {
    **{op: "dwt" for op in TRANSFORM_OPS},
    "band_energy": "hf_penalty",
    "band_energy_backward": "hf_penalty",
    "hf_penalty": "hf_penalty",
    "pgd_step": "pgd_step",
    "wavelet_pgd_step": "pgd_step",
    **{op: "pool" for op in POOL_OPS},
}
# An op's backward (and double backward) runs the other op of its pair on the same backend, so a
# backend is chosen for a forward op only if it can run the whole pair.
FAMILIES = {
    "dwt2d": ("dwt2d", "dwt2d_adjoint"),
    "dwt2d_adjoint": ("dwt2d_adjoint", "dwt2d"),
    "idwt2d": ("idwt2d", "idwt2d_adjoint"),
    "idwt2d_adjoint": ("idwt2d_adjoint", "idwt2d"),
    # hf_penalty has no kernel of its own: it runs band_energy's and weights the (N, J, 3) result.
    # band_energy_backward's own backward uses dwt2d where the backend has it, else the reference.
    "band_energy": ("band_energy", "band_energy_backward"),
    "band_energy_backward": ("band_energy_backward",),
    "hf_penalty": ("band_energy", "band_energy_backward"),
    "pgd_step": ("pgd_step",),
    # With every hf_scale 1 the wavelet step is exactly pgd_step, and runs pgd_step's kernel.
    "wavelet_pgd_step": ("wavelet_pgd_step", "pgd_step"),
    # The pooling ops' backwards are each other (bilinear in input and kernel).
    **{op: POOL_OPS for op in POOL_OPS},
}
# CUDA: the CUDA kernels where they exist, tested and measured on a GPU (see above).
AUTO_ORDER = {"cuda": ("cuda", "reference"), "cpu": ("cpu", "reference")}
REBUILD = "pip install --no-build-isolation -e ."


class BackendUnavailableError(RuntimeError):
    """A backend that cannot run this op here was asked for; the message says why and the fix."""


try:
    _C = importlib.import_module("wavefuse._C")  # loading it registers the C++/CUDA kernels

    EXTENSION_ERROR: str | None = None
except Exception as e:  # noqa: BLE001 (ImportError, or OSError for an extension built against another torch)
    _C = None
    EXTENSION_ERROR = f"{type(e).__name__}: {e}"


def extension_loaded() -> bool:
    return _C is not None


def built_with_cuda() -> bool:
    return _C is not None and bool(torch.ops.wavefuse._built_with_cuda())


def no_cuda_build_reason() -> str:
    """Why the cuda backend is missing from a build without CUDA kernels, and the fix. setup.py
    builds CPU-only, printing why, where torch is a CPU build, no toolkit is found, the toolkit's
    major version differs from torch's CUDA, or WAVEFUSE_CUDA=0; WAVEFUSE_CUDA=1 makes it stop with
    that reason instead."""
    if torch.version.cuda is None:
        return (
            f"wavefuse was built without CUDA kernels: torch {torch.__version__} is not a CUDA "
            "build (torch.version.cuda is None); install a CUDA build of torch, then rebuild: "
            + REBUILD
        )
    return (
        "wavefuse was built without CUDA kernels (setup.py printed why: no CUDA toolkit found, "
        f"a toolkit whose major version is not torch's CUDA {torch.version.cuda}, or "
        f"WAVEFUSE_CUDA=0): rebuild with WAVEFUSE_CUDA=1 {REBUILD}, which stops with the reason "
        "where the kernels cannot be built"
    )


def _has_kernel(op: str, dispatch_key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(
            f"wavefuse::_{op}_kernel", dispatch_key
        )
    except RuntimeError:  # "operator ... does not exist": no schema in this build of wavefuse._C
        return False


# The oldest Triton the kernels run on: tuples of pointers as kernel arguments (kernels/haar.py)
# came with Triton 3.3 (torch 2.7); torch 2.6 ships 3.2. Float64 tl.dot came with 3.5: before it,
# kernels/dwt.py sends float64 planes down its general path (dense_fits).
TRITON_MIN = (3, 3)
# Triton's interpreter turns a 1-element array into a Python int with int(), which NumPy 2.4
# refuses ("only 0-dimensional arrays can be converted to Python scalars"); Triton 3.7 fixed it.
TRITON_INTERPRETER_NUMPY_FIX = (3, 7)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def triton_version() -> tuple[int, ...] | None:
    """The installed Triton's (major, minor, patch), without importing it; None if unknown."""
    for dist in ("triton", "pytorch-triton"):
        try:
            return _version_tuple(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _numpy_int_of_1d_array() -> bool:
    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            int(np.array([0]))
    except TypeError:
        return False
    return True


@functools.cache
def _triton_version_reason(device_type: str) -> str | None:
    version = triton_version()
    if version is None:
        return None
    text = ".".join(map(str, version))
    if version < TRITON_MIN:
        return (
            f"Triton {text} is too old for wavefuse's Triton kernels: they need Triton >= "
            f"{'.'.join(map(str, TRITON_MIN))} (torch >= 2.7); the other backends work"
        )
    if (
        device_type == "cpu"
        and version < TRITON_INTERPRETER_NUMPY_FIX
        and not _numpy_int_of_1d_array()
    ):
        import numpy as np

        return (
            f"Triton {text}'s interpreter (TRITON_INTERPRET=1) fails on NumPy {np.__version__} "
            "(int() of a 1-element array, refused since NumPy 2.4; fixed in Triton 3.7): "
            "pip install 'numpy<2.4', or a newer Triton"
        )
    return None


def triton_interpreting() -> bool:
    """Whether TRITON_INTERPRET turns Triton's interpreter on, as the installed Triton reads it:
    a Triton with ``triton.knobs`` (3.8 does) takes 1, true, on and yes in any case; "1" else."""
    value = os.environ.get("TRITON_INTERPRET")
    if value is None or value == "1":
        return value is not None
    try:
        from triton import knobs
    except ImportError:  # before triton.knobs
        return False
    return bool(knobs.runtime.interpret)


def _triton_reason(op: str, device_type: str) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton; it comes with torch's CUDA wheels)"
    if device_type == "cpu" and not triton_interpreting():
        return "Triton kernels run on CUDA tensors, or on CPU tensors with TRITON_INTERPRET=1"
    if device_type not in ("cpu", "cuda"):
        return f"Triton kernels run on CUDA tensors, not {device_type}"
    reason = _triton_version_reason(device_type)
    if reason is not None:
        return reason
    module = f"wavefuse.kernels.{TRITON_MODULES[op]}"
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # wavefuse.kernels itself is missing: not installed with setup.py
        return "wavefuse.kernels is not installed (reinstall: " + REBUILD + ")"
    if not found:
        return f"no Triton kernel for {op} yet ({module} does not exist in this version)"
    return None


def _compiled_reason(backend: str, op: str, device_type: str) -> str | None:
    if device_type != backend:
        return (
            f"backend={backend!r} runs on {backend.upper()} tensors, the input is on {device_type}"
        )
    if _C is None:
        return f"the C++ extension wavefuse._C did not load ({EXTENSION_ERROR}); rebuild: {REBUILD}"
    if backend == "cuda" and not built_with_cuda():
        return no_cuda_build_reason()
    if not _has_kernel(op, backend.upper()):
        return f"no {backend.upper()} kernel for {op} yet (wavefuse._C in this version has none)"
    return None


def _reason(backend: str, op: str, device_type: str) -> str | None:
    if backend == "reference":
        return None
    if backend == "triton":
        return _triton_reason(op, device_type)
    return _compiled_reason(backend, op, device_type)


def _status_table() -> dict[tuple[str, str, str], str | None]:
    return {
        (b, op, dev): _reason(b, op, dev) for b in BACKENDS for op in OPS for dev in ("cpu", "cuda")
    }


_STATUS = _status_table()


def refresh() -> None:
    """Recompute liveness (after changing TRITON_INTERPRET, say)."""
    _STATUS.clear()
    _STATUS.update(_status_table())


def why_not(backend: str, op: str, device_type: str) -> str | None:
    """None when ``backend`` can run ``op`` and the ops its autograd calls (``FAMILIES``) on
    ``device_type`` tensors, else the reason."""
    for member in FAMILIES.get(op, (op,)):
        key = (backend, member, device_type)
        reason = _STATUS[key] if key in _STATUS else _reason(backend, member, device_type)
        if reason is not None:
            return reason
    return None


def live_backends(op: str, device_type: str) -> list[str]:
    return [b for b in BACKENDS if why_not(b, op, device_type) is None]


# ---- can this GPU run the build's CUDA code? --------------------------------------------------------
#
# Liveness above is per device type and decided at import, without touching a GPU. One more thing
# depends on the device itself: whether the extension holds code for its architecture. The default
# build (setup.py) has native code for sm_80 and sm_90 and sm_90 PTX; a T4 (sm_75), or any GPU with
# a build lacking its architecture, would fail at the first kernel launch with "no kernel image is
# available". So the first CUDA call on each device asks the CUDA runtime (csrc/cuda/probe.cu) and
# keeps the answer: "auto" skips "cuda" on such a device, and backend="cuda" names the reason.

#: The cudaError_t codes (driver_types.h) by which the probe says that a GPU cannot run the build:
#: no image for its architecture, or PTX the driver cannot compile. Other errors are inconclusive.
_CUDA_ERRORS = {
    98: "cudaErrorInvalidDeviceFunction",
    209: "cudaErrorNoKernelImageForDevice",
    218: "cudaErrorInvalidPtx",
    221: "cudaErrorJitCompilerNotFound",
    222: "cudaErrorUnsupportedPtxVersion",
}
_NO_IMAGE = (98, 209)  # the rest: PTX refused
_CUDA_IMAGE: dict[int, str | None] = {}


def _sm(arch: int) -> str:
    """nvcc's __CUDA_ARCH__ value (800, 1000) or a cudaFuncAttributes version / 10 * major + minor
    (80, 100) as sm_80, sm_100 (__CUDA_ARCH__ is at least 500; versions are at most 2 digits of
    major)."""
    return f"sm_{arch // 10 if arch >= 500 else arch}"


def _gpu_visible() -> bool:
    return torch.cuda.is_available()


def _capturing() -> bool:
    return torch.cuda.is_current_stream_capturing()


def _query_cuda_image(index: int) -> list[int]:
    """[status, binary_version, ptx_version, compiled archs...] for CUDA device ``index``
    (csrc/cuda/probe.cu). torch.cuda.device switches back without creating a context on a device
    that had none (cudaSetDevice would: hundreds of MiB on GPU 0 for a job on cuda:1)."""
    with torch.cuda.device(index):
        return list(torch.ops.wavefuse._cuda_kernel_image())


def compiled_cuda_archs() -> list[str]:
    """The architectures nvcc compiled the extension's CUDA code for (sm_80, sm_90, ...); asks no
    device. Empty for a build without CUDA."""
    try:
        image = list(torch.ops.wavefuse._cuda_kernel_image())
    except (AttributeError, RuntimeError):  # no extension, or one from before the probe
        return []
    return [_sm(a) for a in image[3:]]


def cuda_image_reason(image: list[int], capability: tuple[int, int], name: str) -> str | None:
    """Why a GPU (``name``, compute ``capability``) cannot run the build's CUDA kernels, from the
    probe's answer ``image`` for it; None when it can, and when the probe could not tell (another
    CUDA error, or an unread error of an earlier launch: the kernels then report their own)."""
    status = image[0]
    if status == -1:
        return no_cuda_build_reason()
    if status not in _CUDA_ERRORS:
        return None
    built = ", ".join(_sm(a) for a in image[3:]) or "architectures the probe cannot list"
    gpu = f"{name} ({_sm(10 * capability[0] + capability[1])})"
    code = f"{_CUDA_ERRORS[status]} = {status}"
    rebuild = f'TORCH_CUDA_ARCH_LIST="{capability[0]}.{capability[1]}" {REBUILD}'
    if status in _NO_IMAGE:
        return (
            f"wavefuse's CUDA kernels were built for {built} and hold no code that the {gpu} "
            f"can run ({code}): rebuild for it with {rebuild}"
        )
    return (
        f"the NVIDIA driver cannot compile the PTX of wavefuse's CUDA kernels (built for "
        f"{built}) for the {gpu} ({code}): update the driver, or rebuild with native code for "
        f"this GPU: {rebuild}"
    )


@torch.compiler.assume_constant_result
def cuda_device_reason(index: int) -> str | None:
    """None when CUDA device ``index`` can run the build's CUDA kernels, else why not (asked of
    the CUDA runtime once per device and kept). A constant for torch.compile: a graph keeps the
    answer it saw when traced, also an inconclusive one (the kernels then report their own
    errors)."""
    if index in _CUDA_IMAGE:
        return _CUDA_IMAGE[index]
    if not (built_with_cuda() and _gpu_visible()):
        return None  # no CUDA tensor can exist; resolve() on torch.device("cuda") from info, say
    if _capturing():
        return None  # the first call inside a CUDA graph capture: ask after it
    try:
        image = _query_cuda_image(index)
    except (AttributeError, RuntimeError):  # a wavefuse._C from before the probe
        image = [0]
    status = image[0]
    if status != 0 and status not in _CUDA_ERRORS:
        return None  # the probe could not tell (see cuda_image_reason): ask again next time
    reason = None
    if status != 0:
        try:
            capability = torch.cuda.get_device_capability(index)
            name = torch.cuda.get_device_name(index)
        except (AssertionError, RuntimeError):
            capability, name = (0, 0), f"CUDA device {index}"
        reason = cuda_image_reason(image, capability, name)
    _CUDA_IMAGE[index] = reason
    return reason


def _device_reason(backend: str, device: torch.device) -> str | None:
    """The device-specific reason ``backend`` cannot run on ``device`` (only "cuda" has one)."""
    if backend != "cuda" or device.type != "cuda":
        return None
    index = device.index
    if index is None:
        index = torch.cuda.current_device() if _gpu_visible() else 0
    return cuda_device_reason(index)


@functools.cache
def lacks_kernel(backend: str, op: str) -> bool:
    """Whether this version of wavefuse has no ``backend`` kernel for ``op`` (or an op of its
    autograd family) at all, on any device: pooling on "cuda" and "triton". False where it
    cannot tell (the extension did not load, a build without CUDA, wavefuse.kernels missing):
    those are installation problems that resolve() reports. Fixed for the process."""
    members = FAMILIES.get(op, (op,))
    if backend == "triton":
        try:
            return any(
                importlib.util.find_spec(f"wavefuse.kernels.{TRITON_MODULES[m]}") is None
                for m in members
            )
        except ModuleNotFoundError:  # wavefuse.kernels itself is missing
            return False
    if backend in ("cpu", "cuda"):
        if _C is None or (backend == "cuda" and not built_with_cuda()):
            return False
        return any(not _has_kernel(m, backend.upper()) for m in members)
    return False


def resolve(backend: str, device: torch.device, op: str) -> str:
    """The concrete backend that runs ``op`` for tensors on ``device``; raises if it cannot."""
    if not isinstance(backend, str) or backend not in CHOICES:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(CHOICES)}")
    device_type = device.type
    source = f"backend={backend!r}"
    if backend == "auto":
        env = os.environ.get("WAVEFUSE_BACKEND") or "auto"  # set but empty: unset
        if env not in CHOICES:
            raise ValueError(f"WAVEFUSE_BACKEND={env!r} is not one of {', '.join(CHOICES)}")
        if env != "auto" and not lacks_kernel(env, op):
            backend = env
            source = f"WAVEFUSE_BACKEND={env!r} (what backend='auto' means while it is set)"
    if backend == "auto":
        for b in AUTO_ORDER.get(device_type, ("reference",)):
            if why_not(b, op, device_type) is None and _device_reason(b, device) is None:
                return b
        return "reference"
    reason = why_not(backend, op, device_type) or _device_reason(backend, device)
    if reason is not None:
        raise BackendUnavailableError(
            f"{source} cannot run {op} on {device_type} tensors: {reason}"
        )
    return backend
