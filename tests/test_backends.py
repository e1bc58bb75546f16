"""Backend choice: every backend either agrees with the reference or says why it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import wavefuse
from conftest import assert_close
from wavefuse import backends
from wavefuse.backends import BackendUnavailableError


def test_auto_resolves_to_a_live_backend():
    for op in backends.OPS:
        b = backends.resolve("auto", torch.device("cpu"), op)
        assert backends.why_not(b, op, "cpu") is None


@pytest.mark.parametrize("backend", backends.BACKENDS)
def test_each_backend_agrees_with_reference_or_explains(backend):
    x = torch.randn(2, 3, 24, 21, dtype=torch.float64)
    reason = backends.why_not(backend, "dwt2d", "cpu")
    if reason is not None:
        with pytest.raises(BackendUnavailableError, match=f"backend='{backend}' cannot run dwt2d"):
            wavefuse.wavedec2(x, "db3", "symmetric", 2, backend=backend)
        assert len(reason) > 20  # a sentence, not a code
        return
    ours = wavefuse.wavedec2(x, "db3", "symmetric", 2, backend=backend)
    ref = wavefuse.wavedec2(x, "db3", "symmetric", 2, backend="reference")
    assert_close(ours[0], ref[0], 1e-10)
    for d, dr in zip(ours[1:], ref[1:]):
        for a, b in zip(d, dr):
            assert_close(a, b, 1e-10)


def test_compiled_backend_on_wrong_device_says_so():
    with pytest.raises(BackendUnavailableError, match="runs on CUDA tensors, the input is on cpu"):
        wavefuse.dwt2(torch.randn(1, 1, 4, 4), "haar", backend="cuda")


def test_unavailable_extension_names_the_rebuild_command():
    if backends.extension_loaded():
        pytest.skip("the extension is loaded here; the message for a missing one is not reachable")
    reason = backends.why_not("cpu", "dwt2d", "cpu")
    assert backends.REBUILD in reason


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in (backends._reason("triton", "dwt2d", "cpu") or "TRITON_INTERPRET=1")


def test_wavefuse_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("WAVEFUSE_BACKEND", "reference")
    assert backends.resolve("auto", torch.device("cpu"), "dwt2d") == "reference"
    assert backends.resolve("reference", torch.device("cpu"), "dwt2d") == "reference"
    monkeypatch.setenv("WAVEFUSE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="WAVEFUSE_BACKEND='bogus'"):
        wavefuse.dwt2(torch.randn(1, 1, 4, 4), "haar")
    monkeypatch.setenv("WAVEFUSE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError):
        wavefuse.dwt2(torch.randn(1, 1, 4, 4), "haar")


def test_info_cli_reports_versions_and_backends():
    env = {k: v for k, v in os.environ.items() if k != "WAVEFUSE_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-m", "wavefuse.info"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert f"torch        {torch.__version__}" in out
    assert "PyWavelets" in out and "extension" in out
    for b in backends.BACKENDS:
        assert f"    {b:10}" in out
    assert "reference  all ops         live" in out
