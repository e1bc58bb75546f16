"""``python -m wavefuse.info``: versions, the extension build, which backends are live, why not.

This is a command run by a person, so unlike ``import wavefuse`` it may ask the CUDA driver
whether a GPU is visible.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

import wavefuse
from wavefuse import backends


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _auto(device_type: str) -> str:
    """What "auto" resolves to per op, or why it cannot (a bad WAVEFUSE_BACKEND, say)."""
    try:
        autos = {backends.resolve("auto", torch.device(device_type), op) for op in backends.OPS}
    except (ValueError, backends.BackendUnavailableError) as e:
        return f"error: {e}"
    return ", ".join(sorted(autos))


def report() -> str:
    lines = [
        f"wavefuse     {wavefuse.__version__}",
        f"python       {platform.python_version()} ({sys.executable})",
        f"torch        {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"triton       {_version('triton')}",
        f"PyWavelets   {_version('PyWavelets')}",
        f"numpy        {_version('numpy')}",
    ]
    gpu = torch.cuda.is_available()
    devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    lines.append(f"GPU          {devices if gpu else 'none visible'}")
    if gpu and backends.built_with_cuda():
        for i in range(torch.cuda.device_count()):
            reason = backends.cuda_device_reason(i)
            state = "runs them" if reason is None else f"cannot run them: {reason}"
            lines.append(f"  cuda:{i} and the extension's CUDA kernels: {state}")
    if backends.extension_loaded():
        cuda = "not compiled in"
        if backends.built_with_cuda():
            archs = ", ".join(backends.compiled_cuda_archs())
            cuda = f"compiled in (for {archs})" if archs else "compiled in"
        lines.append(f"extension    wavefuse._C loaded; CUDA code {cuda}")
    else:
        lines.append(f"extension    not loaded: {backends.EXTENSION_ERROR}")
    env = {k: os.environ[k] for k in ("WAVEFUSE_BACKEND", "TRITON_INTERPRET") if k in os.environ}
    if env:
        lines.append(f"environment  {env}")
    lines.append("")
    lines.append(f"backends     (ops: {', '.join(backends.OPS)})")
    for device_type in ("cpu", "cuda"):
        lines.append(f"  {device_type} tensors: auto -> {_auto(device_type)}")
        for b in backends.BACKENDS:
            reasons = {op: backends.why_not(b, op, device_type) for op in backends.OPS}
            if len(set(reasons.values())) == 1:
                reasons = {"all ops": reasons[backends.OPS[0]]}
            for op, reason in reasons.items():
                state = "live" if reason is None else "not live: " + reason
                lines.append(f"    {b:10} {op:15} {state}")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
