"""Every Triton kernel compiles for sm_90 with the installed Triton, on a machine without a GPU.

The interpreted tests (tests/test_triton*.py) check the kernels' values but not their
compilation: bench/triton_compile.py turns every launch into a compile-only warm-up for a GPU
target and sweeps the ops (here its --quick sweep in two processes: about 230 variants, under 2
minutes on 2 cores with a cold Triton cache). It fails on a variant that does not compile, on an
op that raises, and on a kernel of wavefuse.kernels that no case launches. It runs in
subprocesses: the kernels must be decorated without TRITON_INTERPRET, which tests/conftest.py
sets for this process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "triton_compile.py"


def _cuda_compiler_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        from triton.backends import backends as triton_backends
    except ImportError as e:  # a Triton without the backends registry
        return f"triton.backends is missing ({e})"
    if "nvidia" not in triton_backends:
        return "this Triton has no CUDA backend"
    from wavefuse import backends

    # the kernels' Triton requirement (TRITON_MIN); CUDA tensors' answer needs no GPU
    return backends.why_not("triton", "wavelet_pgd_step", "cuda")


def _listed(out: str, heading: str) -> set[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(heading))
    return {name.strip() for name in line[len(heading) :].split(",") if name.strip()}


@pytest.mark.skipif(_cuda_compiler_reason() is not None, reason=str(_cuda_compiler_reason()))
def test_every_kernel_compiles_for_sm90():
    """Two shards in parallel (CI has 2 cores); together they must launch every kernel."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-W", "ignore", str(SCRIPT), "--quick", "--arch", "90"]
    procs = [
        subprocess.Popen(
            [*command, "--shard", f"{k}/2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    try:
        outs = [p.communicate(timeout=1200)[0] for p in procs]
    finally:
        for p in procs:  # a shard past the timeout (or an interrupted test) is not left running
            if p.poll() is None:
                p.kill()
                p.wait()
    compiled = set()
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0, out[-6000:]
        assert " 0 failed launches, 0 op errors" in out, out[-3000:]
        compiled |= _listed(out, "kernels compiled: ")
    every = _listed(outs[0], "kernels of wavefuse.kernels: ")
    assert len(every) >= 12 and every <= compiled, sorted(every - compiled)
