"""Backend choice: every backend either agrees with the reference or says why it cannot run."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_close

import wavefuse
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


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = backends._reason("triton", "dwt2d", "cpu")
    assert reason is not None
    assert "TRITON_INTERPRET=1" in reason or "triton is not installed" in reason


def test_triton_on_cpu_with_the_interpreter_set_to_0_says_why(monkeypatch):
    """TRITON_INTERPRET=0 is set but off (as Triton reads it): the triton backend is not live for
    CPU tensors, and the reason says how to turn the interpreter on."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = backends._reason("triton", "dwt2d", "cpu")
    assert reason is not None and "TRITON_INTERPRET=1" in reason, reason


@pytest.mark.parametrize("value", ["true", "On", "YES"])
def test_triton_on_cpu_with_the_interpreter_on_by_another_spelling(monkeypatch, value):
    """A Triton with triton.knobs (3.8 does) turns the interpreter on for 1, true, on, yes (any
    case): the triton backend is then live on CPU tensors, as with TRITON_INTERPRET=1."""
    knobs = pytest.importorskip("triton.knobs", reason="a Triton without knobs reads only '1'")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if backends._reason("triton", "dwt2d", "cpu") is not None:
        pytest.skip(f"triton is not live here: {backends._reason('triton', 'dwt2d', 'cpu')}")
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert knobs.runtime.interpret  # Triton's own reading
    assert backends.triton_interpreting()
    assert backends._reason("triton", "dwt2d", "cpu") is None


@pytest.fixture
def triton_as(monkeypatch):
    """Pretend another Triton (and NumPy behaviour) is installed; the caches are cleared around."""
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    backends._triton_version_reason.cache_clear()

    def pretend(version, numpy_converts_1d=True):
        monkeypatch.setattr(backends, "triton_version", lambda: version)
        monkeypatch.setattr(backends, "_numpy_int_of_1d_array", lambda: numpy_converts_1d)
        backends._triton_version_reason.cache_clear()

    yield pretend
    backends._triton_version_reason.cache_clear()


def test_triton_too_old_is_not_live_and_says_why(triton_as):
    """torch 2.6 ships Triton 3.2, whose kernels reject tuple arguments: the other backends work."""
    triton_as((3, 2, 0))
    for device in ("cpu", "cuda"):
        reason = backends._reason("triton", "dwt2d", device)
        assert "Triton 3.2.0 is too old" in reason and "Triton >= 3.3" in reason, reason
    assert backends._reason("reference", "dwt2d", "cpu") is None
    triton_as((3, 3, 1))
    assert backends._reason("triton", "dwt2d", "cpu") is None


def test_triton_interpreter_with_a_numpy_it_cannot_run_on_says_why(triton_as):
    """Triton's interpreter before 3.7 calls int() on 1-element arrays, which NumPy 2.4 refuses;
    compiled Triton (CUDA tensors) is unaffected."""
    triton_as((3, 5, 0), numpy_converts_1d=False)
    reason = backends._reason("triton", "hf_penalty", "cpu")
    assert "interpreter" in reason and "numpy<2.4" in reason, reason
    assert backends._reason("triton", "hf_penalty", "cuda") is None
    triton_as((3, 7, 0), numpy_converts_1d=False)
    assert backends._reason("triton", "hf_penalty", "cpu") is None
    triton_as((3, 5, 0), numpy_converts_1d=True)
    assert backends._reason("triton", "hf_penalty", "cpu") is None


def test_numpy_probe_answers_what_this_numpy_does():
    """_numpy_int_of_1d_array (the interpreter check's NumPy half; the tests above pretend it)
    says whether int() of a 1-element array works here: refused since NumPy 2.4."""
    import numpy as np

    parts = tuple(int(p) for p in np.__version__.split(".")[:2])
    assert backends._numpy_int_of_1d_array() is (parts < (2, 4))


def test_triton_version_is_read_from_the_metadata():
    assert backends._version_tuple("3.6.0+git1234abc") == (3, 6, 0)
    assert backends._version_tuple("3.2.0rc1") == (3, 2, 0)
    import importlib.util

    if importlib.util.find_spec("triton") is not None:
        import triton

        assert backends.triton_version() == backends._version_tuple(triton.__version__)


def test_a_backend_must_run_the_whole_autograd_pair(monkeypatch):
    """A forward kernel without its adjoint would fail in backward: such a backend is not live."""
    monkeypatch.setitem(backends._STATUS, ("cpu", "dwt2d", "cpu"), None)
    monkeypatch.setitem(backends._STATUS, ("cpu", "dwt2d_adjoint", "cpu"), "no adjoint kernel")
    assert backends.why_not("cpu", "dwt2d", "cpu") == "no adjoint kernel"
    assert backends.resolve("auto", torch.device("cpu"), "dwt2d") == "reference"


def test_wavefuse_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("WAVEFUSE_BACKEND", "reference")
    assert backends.resolve("auto", torch.device("cpu"), "dwt2d") == "reference"
    assert backends.resolve("reference", torch.device("cpu"), "dwt2d") == "reference"
    monkeypatch.delenv("WAVEFUSE_BACKEND")
    unset = backends.resolve("auto", torch.device("cpu"), "dwt2d")
    monkeypatch.setenv("WAVEFUSE_BACKEND", "")  # set but empty: as if unset
    assert backends.resolve("auto", torch.device("cpu"), "dwt2d") == unset
    monkeypatch.setenv("WAVEFUSE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="WAVEFUSE_BACKEND='bogus'"):
        wavefuse.dwt2(torch.randn(1, 1, 4, 4), "haar")
    monkeypatch.setenv("WAVEFUSE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="WAVEFUSE_BACKEND='cuda'"):
        wavefuse.dwt2(torch.randn(1, 1, 4, 4), "haar")


@pytest.mark.parametrize("env", ["cuda", "triton"])
def test_wavefuse_backend_leaves_ops_it_has_no_kernel_for_to_auto(monkeypatch, env):
    """WAVEFUSE_BACKEND replaces "auto" only for the ops that backend has kernels for: pooling has
    no CUDA or Triton kernel, so the models' pooling layers keep working under it (they cannot
    be given backend=); an explicit backend= is never replaced; ops the backend has but cannot
    run on these tensors raise, naming the variable."""
    cpu = torch.device("cpu")
    monkeypatch.delenv("WAVEFUSE_BACKEND", raising=False)
    auto = {op: backends.resolve("auto", cpu, op) for op in backends.POOL_OPS}
    monkeypatch.setenv("WAVEFUSE_BACKEND", env)
    for op in backends.POOL_OPS:
        assert backends.lacks_kernel(env, op), op
        assert backends.resolve("auto", cpu, op) == auto[op], op
        with pytest.raises(BackendUnavailableError, match=f"backend='{env}' cannot run {op}"):
            backends.resolve(env, cpu, op)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(wavefuse.WaveletAvgPool2d()(x), 0.5 * x[..., ::2, ::2])
    if env == "cuda" and not backends.built_with_cuda():
        return  # without a CUDA build lacks_kernel cannot tell, and says False
    assert not backends.lacks_kernel(env, "dwt2d")
    interpreted = env == "triton" and backends.triton_interpreting()
    if not interpreted and backends.why_not(env, "dwt2d", "cpu") is not None:
        with pytest.raises(BackendUnavailableError, match=f"WAVEFUSE_BACKEND='{env}'"):
            backends.resolve("auto", cpu, "dwt2d")


def _run(args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k != "WAVEFUSE_BACKEND"}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=True
    ).stdout


def test_info_cli_reports_versions_and_backends():
    out = _run(["-m", "wavefuse.info"])
    assert f"torch        {torch.__version__}" in out
    assert "PyWavelets" in out and "extension" in out
    assert f"PyWavelets   {importlib.metadata.version('PyWavelets')}\n" in out  # the installed one
    assert "  cpu tensors: auto -> " in out and "  cuda tensors: auto -> " in out
    for b in backends.BACKENDS:
        assert f"    {b:10}" in out
    assert "reference  all ops         live" in out


@pytest.mark.parametrize("value", ["cuda", "bogus"])
def test_info_cli_explains_a_bad_wavefuse_backend(value):
    out = _run(["-m", "wavefuse.info"], WAVEFUSE_BACKEND=value)
    assert "auto -> error:" in out and value in out
    assert f"environment  {{'WAVEFUSE_BACKEND': {value!r}" in out  # the variable is shown


def test_package_works_without_the_extension():
    """As if the build had failed: import, transform, and info all work on the reference."""
    script = (
        "import sys; sys.modules['wavefuse._C'] = None\n"
        "import torch, wavefuse\n"
        "from wavefuse import backends, info\n"
        "assert not backends.extension_loaded()\n"
        "x = torch.randn(1, 2, 9, 8, dtype=torch.float64, requires_grad=True)\n"
        "y = wavefuse.waverec2(wavefuse.wavedec2(x, 'db2', level=1), 'db2')\n"
        "y.sum().backward()\n"
        "assert torch.allclose(y[..., :9, :8], x)\n"
        "assert backends.REBUILD in backends.why_not('cpu', 'dwt2d', 'cpu')\n"
        "print(info.report())\n"
    )
    out = _run(["-c", script])
    assert "extension    not loaded" in out


def test_auto_order_on_cuda_tensors_is_cuda_then_reference():
    """The rule that the H200 run (bench/results/gpu-nvidia-h200.csv) supports: the CUDA kernels
    where they exist, else the reference; Triton only on request (module docstring)."""
    assert backends.AUTO_ORDER["cuda"] == ("cuda", "reference")


@pytest.mark.gpu
def test_auto_resolves_cuda_tensors_to_the_cuda_kernels():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")
    for op in backends.OPS:
        live = backends.why_not("cuda", op, "cuda") is None
        assert backends.resolve("auto", device, op) == ("cuda" if live else "reference"), op
    x = torch.randn(2, 3, 20, 17, dtype=torch.float64, device="cuda")
    got = wavefuse.wavedec2(x, "db2", "symmetric", 2)  # auto
    ref = wavefuse.wavedec2(x, "db2", "symmetric", 2, backend="reference")
    assert_close(got[0], ref[0], 1e-10)
    for d, dr in zip(got[1:], ref[1:]):
        for a, b in zip(d, dr):
            assert_close(a, b, 1e-10)


# ---- whether a GPU can run the build's CUDA code (csrc/cuda/probe.cu) ------------------------------


def test_cuda_image_reason_names_the_build_the_gpu_and_the_rebuild():
    assert backends.cuda_image_reason([0, 90, 90, 800, 900], (9, 0), "NVIDIA H100") is None
    assert backends.cuda_image_reason([0, 100, 90, 800, 900], (10, 0), "NVIDIA B200") is None
    t4 = backends.cuda_image_reason([209, 0, 0, 800, 900], (7, 5), "Tesla T4")
    for part in (
        "sm_80, sm_90",
        "Tesla T4 (sm_75)",
        "cudaErrorNoKernelImageForDevice = 209",
        'TORCH_CUDA_ARCH_LIST="7.5"',
        backends.REBUILD,
    ):
        assert part in t4, (part, t4)
    old = backends.cuda_image_reason([98, 0, 0], (7, 0), "Tesla V100")
    assert "architectures the probe cannot list" in old and "cudaErrorInvalidDeviceFunction" in old
    driver = backends.cuda_image_reason([222, 0, 0, 900], (12, 0), "RTX 5090")
    assert "update the driver" in driver and 'TORCH_CUDA_ARCH_LIST="12.0"' in driver
    assert "RTX 5090 (sm_120)" in driver
    hopper_only = backends.cuda_image_reason([209, 0, 0, 900, 1000, 1200], (8, 6), "A10")
    assert "built for sm_90, sm_100, sm_120" in hopper_only and "A10 (sm_86)" in hopper_only
    # not asked: an earlier launch left an error that is its owner's to read
    assert backends.cuda_image_reason([-2, 0, 0, 800, 900], (7, 5), "Tesla T4") is None
    # another error (900: cudaErrorStreamCaptureUnsupported, say) does not say the GPU cannot
    assert backends.cuda_image_reason([900, 0, 0, 900], (9, 0), "NVIDIA H100") is None
    assert backends.cuda_image_reason([-1], (9, 0), "H100") == backends.no_cuda_build_reason()


def test_no_cuda_build_reason_names_the_cause_it_can_see(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    cpu_torch = backends.no_cuda_build_reason()
    assert "is not a CUDA build" in cpu_torch and backends.REBUILD in cpu_torch
    assert "WAVEFUSE_CUDA=1" not in cpu_torch  # it would only stop with the same reason
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    cuda_torch = backends.no_cuda_build_reason()
    for part in ("WAVEFUSE_CUDA=1", "torch's CUDA 12.6", "major version", backends.REBUILD):
        assert part in cuda_torch, (part, cuda_torch)


def test_a_build_without_cuda_kernels_says_so(monkeypatch):
    """A build without CUDA kernels (simulated: none registered, built_with_cuda False):
    backend="cuda" gives the rebuild reason, not "no CUDA kernel for this op"; lacks_kernel cannot
    tell, so WAVEFUSE_BACKEND=cuda stays an error naming the variable, not a silent fallback."""
    has_kernel = backends._has_kernel
    monkeypatch.setattr(backends, "built_with_cuda", lambda: False)
    monkeypatch.setattr(
        backends, "_has_kernel", lambda op, key: key != "CUDA" and has_kernel(op, key)
    )
    backends.lacks_kernel.cache_clear()
    try:
        assert backends._reason("cuda", "dwt2d", "cuda") == backends.no_cuda_build_reason()
        assert not backends.lacks_kernel("cuda", "dwt2d")
        monkeypatch.setenv("WAVEFUSE_BACKEND", "cuda")
        with pytest.raises(BackendUnavailableError, match="WAVEFUSE_BACKEND='cuda'"):
            backends.resolve("auto", torch.device("cpu"), "dwt2d")
    finally:
        backends.lacks_kernel.cache_clear()


def test_sm_names_of_both_encodings():
    """_sm reads nvcc's __CUDA_ARCH__ (500 and up) and cudaFuncAttributes' 10 * major + minor."""
    for arch, name in ((500, "sm_50"), (800, "sm_80"), (1200, "sm_120"), (75, "sm_75")):
        assert backends._sm(arch) == name, arch
    assert backends._sm(100) == "sm_100"


@pytest.fixture
def gpu_as(monkeypatch):
    """gpu_as(image, capability, name): pretend that CUDA device 0 is that GPU and that the probe
    answers ``image`` for it; returns the list of probed device indices."""
    if backends.why_not("cuda", "dwt2d", "cuda") is not None:
        pytest.skip("needs a build with the CUDA kernels (nvcc and a CUDA torch at build time)")
    probed = []

    def pretend(image, capability, name):
        def query(index):
            probed.append(index)
            return list(image)

        monkeypatch.setattr(backends, "_CUDA_IMAGE", {})
        monkeypatch.setattr(backends, "_query_cuda_image", query)
        monkeypatch.setattr(backends, "_gpu_visible", lambda: True)
        monkeypatch.setattr(backends, "_capturing", lambda: False)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
        return probed

    return pretend


def test_auto_skips_the_cuda_kernels_on_a_gpu_the_build_cannot_run(gpu_as):
    probed = gpu_as([209, 0, 0, 800, 900], (7, 5), "Tesla T4")
    for device in (torch.device("cuda", 0), torch.device("cuda")):
        for op in ("dwt2d", "pgd_step", "hf_penalty"):
            assert backends.resolve("auto", device, op) == "reference", (device, op)
    assert probed == [0], "asked once per device, then kept"
    with pytest.raises(BackendUnavailableError, match=r'Tesla T4 \(sm_75\).*"7\.5"'):
        backends.resolve("cuda", torch.device("cuda", 0), "dwt2d")
    # CPU tensors are not concerned
    assert backends.resolve("auto", torch.device("cpu"), "dwt2d") == "cpu"


def test_only_the_cuda_backend_asks_the_probe(gpu_as):
    """On a GPU the build cannot run, backend="reference" (and "triton", where live) resolve as
    ever for CUDA tensors: the probe concerns the CUDA kernels only, and is not even asked."""
    probed = gpu_as([209, 0, 0, 800, 900], (7, 5), "Tesla T4")
    device = torch.device("cuda", 0)
    assert backends.resolve("reference", device, "dwt2d") == "reference"
    if backends.why_not("triton", "dwt2d", "cuda") is None:
        assert backends.resolve("triton", device, "dwt2d") == "triton"
    assert probed == []


def test_auto_keeps_the_cuda_kernels_on_a_gpu_the_build_runs(gpu_as):
    probed = gpu_as([0, 90, 90, 800, 900], (9, 0), "NVIDIA H100")
    assert backends.resolve("auto", torch.device("cuda", 0), "dwt2d") == "cuda"
    assert backends.resolve("cuda", torch.device("cuda", 0), "wavelet_pgd_step") == "cuda"
    assert probed == [0]


def test_an_inconclusive_probe_is_asked_again_and_does_not_disable_the_kernels(gpu_as):
    probed = gpu_as([900, 0, 0, 800, 900], (9, 0), "NVIDIA H100")
    assert backends.resolve("auto", torch.device("cuda", 0), "dwt2d") == "cuda"
    assert backends.resolve("auto", torch.device("cuda", 0), "dwt2d") == "cuda"
    assert probed == [0, 0] and backends._CUDA_IMAGE == {}


def test_no_probe_inside_a_cuda_graph_capture(gpu_as, monkeypatch):
    probed = gpu_as([209, 0, 0, 800, 900], (7, 5), "Tesla T4")
    monkeypatch.setattr(backends, "_capturing", lambda: True)
    assert backends.resolve("auto", torch.device("cuda", 0), "dwt2d") == "cuda"
    assert probed == [] and backends._CUDA_IMAGE == {}
    monkeypatch.setattr(backends, "_capturing", lambda: False)
    assert backends.resolve("auto", torch.device("cuda", 0), "dwt2d") == "reference"
    assert probed == [0]


def test_the_probe_answer_is_a_constant_for_torch_compile(gpu_as):
    """resolve() runs while dynamo traces the functional API: the probe must not break the graph
    (fullgraph=True) nor be re-asked per call."""
    probed = gpu_as([209, 0, 0, 800, 900], (7, 5), "Tesla T4")

    def f(x):
        chosen = backends.resolve("auto", torch.device("cuda", 0), "dwt2d")
        return x + (1.0 if chosen == "reference" else 2.0)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="eager")
    x = torch.zeros(3)
    assert torch.equal(compiled(x), x + 1.0)
    assert torch.equal(compiled(x), x + 1.0)
    assert probed == [0]


def test_the_probe_on_this_machine():
    """The real probe (no mock): on a GPU the build must run (CI builds for sm_80 and sm_90 with
    sm_90 PTX; the GPU image builds for its own chip); without one it reports the CUDA runtime's
    error and lists the architectures nvcc compiled for."""
    if not backends.built_with_cuda():
        assert list(torch.ops.wavefuse._cuda_kernel_image()) == [-1]
        assert backends.compiled_cuda_archs() == []
        return
    archs = backends.compiled_cuda_archs()
    assert archs and all(a.startswith("sm_") and int(a[3:]) >= 75 for a in archs), archs
    if not torch.cuda.is_available():
        assert torch.ops.wavefuse._cuda_kernel_image()[0] != 0
        return
    last, before = torch.cuda.device_count() - 1, torch.cuda.current_device()
    image = backends._query_cuda_image(last)
    capability = torch.cuda.get_device_capability(last)
    assert image[0] == 0, backends.cuda_image_reason(
        image, capability, torch.cuda.get_device_name(last)
    )
    # native code of the device's major version (sm_80 runs on sm_86), or PTX compiled for it
    assert image[1] // 10 == capability[0] and image[1] <= 10 * capability[0] + capability[1]
    assert torch.cuda.current_device() == before, "the probe switches back"
    assert backends.cuda_device_reason(last) is None
    x = torch.randn(1, 1, 8, 8, device=f"cuda:{last}")
    wavefuse.dwt2(x, "haar", backend="cuda")
    torch.cuda.synchronize()
