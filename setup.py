"""Build the compiled part of wavefuse: the extension ``wavefuse._C`` from csrc/.

Metadata lives in pyproject.toml; this file only decides what to compile.

* CPU sources (csrc/*.cpp, csrc/cpu/*.cpp) are always built.
* CUDA sources (csrc/cuda/*.cu) are built when torch is a CUDA build (torch.version.cuda) and a
  CUDA toolkit is found -- also on a machine without a GPU. Nothing here asks for a device (torch's
  cpp_extension, when imported with CUDA_HOME set, calls torch.cuda.is_available() once, only to
  log a warning; that is torch's, and it creates no context).
* WAVEFUSE_CUDA=0 skips CUDA; WAVEFUSE_CUDA=1 requires it (error if impossible).
* TORCH_CUDA_ARCH_LIST is honoured; unset, it defaults to DEFAULT_CUDA_ARCHS rather than torch's
  default of asking the visible GPUs: native code for the A100 (sm_80, which also runs on sm_86 and
  sm_89) and the H100/H200 (sm_90), and sm_90 PTX, which the driver compiles at first use for newer
  GPUs (Blackwell). Older GPUs (a T4 is sm_75) need their own build (TORCH_CUDA_ARCH_LIST=7.5);
  without it wavefuse asks the CUDA runtime (csrc/cuda/probe.cu) and says so, "auto" falling back.

The toolkit is located here, before torch.utils.cpp_extension is imported, because that module
fixes CUDA_HOME at import time from the first `nvcc` on PATH -- wrong when that `nvcc` is a wrapper
script (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda-13.0/bin/nvcc gives CUDA_HOME=/usr/local).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import torch
from setuptools import find_packages, setup

DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
ROOT = os.path.dirname(os.path.abspath(__file__))


def _has_cudart(home: str) -> bool:
    """A CUDA toolkit root has the runtime library in lib64/ (or lib/)."""
    return any(glob.glob(os.path.join(home, lib, "libcudart*")) for lib in ("lib64", "lib"))


def _script_exec_target(path: str) -> str | None:
    """If `path` is a shell-script wrapper, the nvcc binary it execs (absolute path), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    match = re.search(rb"exec\s+[\"']?(/[^\s\"']*nvcc)\b", head)
    return os.path.realpath(match.group(1).decode()) if match else None


def _toolkit_candidates() -> list[str]:
    """Possible toolkit roots, most specific first: the nvcc on PATH, then /usr/local/cuda*."""
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        target = _script_exec_target(real)
        for binary in (target, real):
            if binary:
                candidates.append(os.path.dirname(os.path.dirname(binary)))
    candidates.append("/usr/local/cuda")
    versioned = glob.glob("/usr/local/cuda-*")
    versioned.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", os.path.basename(p))])
    candidates.extend(reversed(versioned))  # newest first
    return candidates


def find_cuda_home() -> tuple[str | None, str]:
    """The CUDA toolkit root (whose lib64 or lib holds libcudart) and how it was found."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value and _has_cudart(value):
            return os.path.realpath(value), f"{var}={value}"
        if value:
            print(f"wavefuse: ignoring {var}={value}: no libcudart in its lib64/ or lib/")
    for home in _toolkit_candidates():
        if os.path.isdir(home) and _has_cudart(home):
            return os.path.realpath(home), f"found at {home}"
    return None, "no CUDA toolkit (a folder whose lib64/ has libcudart) found"


def _nvcc_version(nvcc: str) -> str | None:
    """'13.0' from `nvcc --version` ("Cuda compilation tools, release 13.0, ..."), or None."""
    try:
        out = subprocess.run(
            [nvcc, "--version"], check=False, capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def decide_cuda() -> tuple[bool, str]:
    """Whether to compile csrc/cuda, and why. Sets CUDA_HOME for torch when the answer is yes."""
    request = os.environ.get("WAVEFUSE_CUDA", "").strip().lower()
    if request not in ("", "auto", "0", "1"):
        raise SystemExit(f"wavefuse: WAVEFUSE_CUDA must be 0, 1 or unset; got {request!r}")
    if request == "0":
        return False, "WAVEFUSE_CUDA=0"
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is not a CUDA build (torch.version.cuda is None)"
    else:
        home, how = find_cuda_home()
        nvcc = os.path.join(home, "bin", "nvcc") if home else None
        toolkit = _nvcc_version(nvcc) if home is not None and os.path.isfile(nvcc) else None
        torch_major = torch.version.cuda.split(".")[0]
        if toolkit is not None and toolkit.split(".")[0] == torch_major:
            os.environ["CUDA_HOME"] = home  # read by torch.utils.cpp_extension at import
            return True, f"torch CUDA {torch.version.cuda}, toolkit {toolkit} at {home} ({how})"
        if home is None:
            reason = how
        elif toolkit is None:
            reason = f"{nvcc} is missing or does not report its version"
        else:  # torch's cpp_extension refuses a major-version mismatch: build CPU-only instead
            reason = (
                f"the CUDA toolkit at {home} is {toolkit} but torch was built with CUDA "
                f"{torch.version.cuda} (major versions must match)"
            )
    if request == "1":
        raise SystemExit(f"wavefuse: WAVEFUSE_CUDA=1 but CUDA cannot be built: {reason}")
    return False, reason


def _wheel_cuda_include_dirs() -> list[str]:
    """<site-packages>/nvidia/cu*/include from torch's CUDA wheels, if present.

    A bare toolkit may lack library headers that ATen's CUDA headers include (cuBLAS, cuSPARSE,
    cuRAND, ...); torch's wheels ship them. Added after the toolkit's own include dir (see below),
    so the toolkit's headers still win wherever both have one.
    """
    try:
        import nvidia  # namespace package installed by torch's nvidia-* dependencies
    except ImportError:
        return []
    found = []
    for base in getattr(nvidia, "__path__", []):
        for include in sorted(glob.glob(os.path.join(base, "cu*", "include"))):
            # nvidia/cu12, nvidia/cu13 -- not nvidia/cudnn, nvidia/cusparselt (torch adds those).
            if re.fullmatch(r"cu\d+", os.path.basename(os.path.dirname(include))):
                found.append(include)
    return [d for d in found if os.path.isdir(d)]


def _relative_glob(pattern: str) -> list[str]:
    # setuptools wants source paths relative to the project root, which is the working directory
    # whenever pip or a PEP 517 frontend runs this file.
    matches = glob.glob(os.path.join(ROOT, pattern), recursive=True)
    return sorted(os.path.relpath(p, ROOT) for p in matches)


def make_extension(with_cuda: bool):
    # Imported only now: the module reads CUDA_HOME when imported.
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = _relative_glob("csrc/*.cpp") + _relative_glob("csrc/cpu/*.cpp")
    depends = _relative_glob("csrc/**/*.h") + _relative_glob("csrc/**/*.cuh")
    # No -std: torch's BuildExtension adds the standard its own headers need -- C++17 for older
    # torch, C++20 since torch 2.13 (torch 2.14's c10/util/intrusive_ptr.h uses operator<=>, so a
    # pinned -std=c++17 fails). wavefuse's own sources stay within C++17.
    # -g0 undoes the -g in Python's CFLAGS: debug info for torch's templates costs compile time and
    # library size, and nobody steps through the op registrations.
    # -ffp-contract=off: no fused multiply-adds behind the source's back. The CPU kernels' AVX2
    # clones and their baseline versions then round identically (results do not depend on the
    # CPU), and a Haar detail of two equal samples is exactly 0, as in PyTorch and PyWavelets --
    # which the sign in the p=1 penalty's gradient depends on (an FMA leaves a 1e-9 residue there).
    extra_compile_args = {"cxx": ["-O3", "-g0", "-ffp-contract=off"]}
    extra_link_args = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is a header template: without -fopenmp it compiles to a plain serial
        # call (ATen/ParallelOpenMP.h needs _OPENMP), and every CPU kernel ran on one core whatever
        # torch.get_num_threads() said. torch's own wheels use OpenMP (libgomp.so.1, loaded by
        # torch before wavefuse._C, so the extension binds to that copy).
        extra_compile_args["cxx"].append("-fopenmp")
        extra_link_args.append("-fopenmp")
    define_macros = []
    factory = CppExtension
    if with_cuda:
        factory = CUDAExtension
        sources += _relative_glob("csrc/cuda/*.cu")
        define_macros.append(("WAVEFUSE_WITH_CUDA", "1"))
        # -O3 only: no --use_fast_math, the transforms are checked against PyWavelets to 1e-10.
        extra_compile_args["nvcc"] = ["-O3"]
    ext = factory(
        "wavefuse._C",
        sources,
        depends=depends,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
        py_limited_api=True,  # no pybind11, so one abi3 module serves every CPython >= 3.10
    )
    if with_cuda:
        # Appended after torch's and the toolkit's include dirs, which the factory put in place.
        ext.include_dirs += _wheel_cuda_include_dirs()
    return ext


def main() -> None:
    # torch.utils.cpp_extension, once imported with CUDA_HOME set, asks torch.cuda.is_available()
    # (only for a warning); the NVML-based check answers without creating a CUDA context.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with_cuda, reason = decide_cuda()
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # torch would otherwise query the visible GPUs for their capability.
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        print(f"wavefuse: building CUDA kernels: {reason}; TORCH_CUDA_ARCH_LIST={archs}")
    else:
        print(f"wavefuse: NOT building CUDA kernels: {reason}")

    from torch.utils.cpp_extension import BuildExtension

    packages = find_packages(where=ROOT, include=["wavefuse", "wavefuse.*"])
    setup(
        # Triton kernels live in the top-level folder kernels/ but install as wavefuse.kernels only.
        packages=sorted(set(packages) | {"wavefuse.kernels"}),
        package_dir={"wavefuse.kernels": "kernels"},
        ext_modules=[make_extension(with_cuda)],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        options={"bdist_wheel": {"py_limited_api": "cp310"}},
    )


if __name__ == "__main__":
    main()
