"""Helpers shared by the host emulations of the CUDA kernel bodies (tests/test_cuda_*emulation.py).

Each emulation compiles a harness (tests/cuda_*emulation_harness.cpp, which includes the
``__host__ __device__`` bodies of csrc/cuda/*.cuh) with g++ as plain C++17, writes each case to a
directory (params.txt and raw float64 storage), runs the harness over many directories at once
and reads its outputs back through the strides the kernels' host wrappers would allocate.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
MODE_CODE = {"zero": 0, "symmetric": 1, "reflect": 2, "periodic": 3, "periodization": 4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The reference on these small tensors is 10-20x faster on one intra-op thread than on
    several competing for a loaded 2-core machine (OpenMP spin-waits). Imported by each
    emulation module, where it applies to every test (autouse)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compile_harness(tmp_path_factory, source: str, flags=()) -> Path:
    """g++ -O1 -std=c++17 [flags] tests/<source> (csrc and torch's headers on the include path:
    common.h uses c10/util/Exception.h) into a temporary executable; skips where g++ is missing."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++ on PATH: the CUDA kernel bodies cannot be compiled for host emulation")
    exe = tmp_path_factory.mktemp(Path(source).stem) / Path(source).stem
    torch_include = Path(torch.__file__).parent / "include"
    cmd = [gxx, "-O1", "-std=c++17", *flags, f"-I{ROOT / 'csrc'}", f"-I{torch_include}"]
    result = subprocess.run(
        cmd + [str(ROOT / "tests" / source), "-o", str(exe)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"g++ failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}"
    return exe


def run_harness(harness: Path, dirs: list[Path]) -> None:
    """Run the harness over the case directories (200 per command line)."""
    for start in range(0, len(dirs), 200):
        chunk = [str(d) for d in dirs[start : start + 200]]
        result = subprocess.run(
            [str(harness), *chunk], check=False, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr


def tensor_in(shape, layout: str) -> torch.Tensor:
    """Random float64 (N, C, h, w) or (N, C, 3, h, w) tensor in ``layout``: contiguous,
    channels_last (5-D: band-major with C innermost, as the kernels allocate bands) or a strided,
    offset view of a larger tensor (every other column, from the second)."""
    if layout == "contiguous":
        return torch.randn(*shape, dtype=torch.float64)
    if layout == "strided":
        return torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64)[..., 1::2]
    if len(shape) == 4:
        return torch.randn(*shape, dtype=torch.float64).contiguous(
            memory_format=torch.channels_last
        )
    n, c, b, h, w = shape
    return torch.randn(b, n, h, w, c, dtype=torch.float64).permute(1, 4, 0, 2, 3)


def span(t: torch.Tensor) -> int:
    """1 + the largest element offset of t."""
    return 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def raw(t: torch.Tensor) -> np.ndarray:
    """The storage that t's strides address, from its first element on."""
    return torch.as_strided(t, (span(t),), (1,), t.storage_offset()).numpy()


def from_raw(path: Path, like: torch.Tensor) -> torch.Tensor:
    """A harness output file as a tensor with like's shape and strides."""
    data = torch.from_numpy(np.fromfile(path, dtype=np.float64))
    assert data.numel() == span(like), f"{path.name}: {data.numel()} values"
    return torch.as_strided(data, like.shape, like.stride(), 0)
