"""band_energy and hf_penalty: PyWavelets' coefficients as the oracle, gradients against autograd
through the reference transforms, gradcheck and gradgradcheck, opcheck, compile, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close, cpu_backends

import wavefuse
from wavefuse import backends, reference
from wavefuse.filters import filter_bank

# Levels above dwt_max_level are part of the grids on purpose; they warn as PyWavelets does.
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")

OPS = torch.ops.wavefuse
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
WAVES = ["haar", "db2", "db4", "sym5"]


BACKENDS = cpu_backends("hf_penalty")


def _quiet(fn, *args, **kwargs):
    """Levels above dwt_max_level warn (as PyWavelets); the grid uses them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _pywt_energies(x: torch.Tensor, wave: str, mode: str, level: int, p: int) -> np.ndarray:
    coeffs = _quiet(pywt.wavedec2, x.double().numpy(), wave, mode, level)
    out = np.zeros((x.shape[0], level, 3))
    for j in range(1, level + 1):
        for b, band in enumerate(coeffs[level - j + 1]):
            out[:, j - 1, b] = (np.abs(band) ** p).sum(axis=(1, 2, 3))
    return out


def _composed_penalty(x, wave, mode, level, p, weights, reduction):
    """The penalty from the public transforms (float64): weighted |d|^p sums of wavedec2."""
    coeffs = _quiet(wavefuse.wavedec2, x.double(), wave, mode, level, backend="reference")
    w = torch.ones(level, 3, dtype=torch.float64) if weights is None else weights.double()
    if w.dim() == 1:
        w = w[:, None].expand(level, 3)
    per_sample = sum(
        w[j - 1, b] * coeffs[-j][b].abs().pow(p).sum(dim=(1, 2, 3))
        for j in range(1, level + 1)
        for b in range(3)
    )
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


# ----- agreement ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", WAVES)
def test_band_energy_matches_pywt(wave, mode, level, backend):
    """float64, odd sizes (and a size smaller than db4/sym5 at level 3): 1e-10 of pywt's sums."""
    x = torch.randn(2, 3, 13, 10, dtype=torch.float64)
    for p in (1, 2):
        got = _quiet(wavefuse.band_energy, x, wave, level, mode, p, backend=backend)
        assert got.shape == (2, level, 3) and got.dtype == torch.float64
        assert_close(got, _pywt_energies(x, wave, mode, level, p), TOL[torch.float64], f"p={p}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_band_energy_every_dtype(mode, dtype, backend):
    """Against pywt on the rounded input; half types accumulate (and return) float32."""
    x = torch.randn(2, 4, 17, 12).to(dtype)
    for p in (1, 2):
        got = wavefuse.band_energy(x, "db2", 2, mode, p, backend=backend)
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert_close(got, _pywt_energies(x, "db2", mode, 2, p), TOL[dtype], f"{dtype} p={p}")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    "weights",
    [None, [0.5, 2.0, 0.0], torch.tensor([[1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [4.0, 0.0, 1.0]])],
    ids=["none", "per-level", "per-band"],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_hf_penalty_matches_the_composition(backend, weights, reduction):
    x = torch.randn(3, 2, 15, 11, dtype=torch.float64)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    for wave, mode, p in [("haar", "periodization", 2), ("db4", "reflect", 1), ("sym5", "zero", 2)]:
        got = _quiet(wavefuse.hf_penalty, x, wave, 3, mode, p, weights, reduction, backend=backend)
        expected = _composed_penalty(x, wave, mode, 3, p, w, reduction)
        assert got.shape == expected.shape
        assert_close(got, expected, TOL[torch.float64], f"{wave} {mode} p={p}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_of_half_inputs_stay_in_float32(dtype):
    """Half inputs compute in float32, their weights too (0.1 is no float16 or bfloat16 number):
    the penalty is the float32 weighted sum of the (float32) energies."""
    x = torch.randn(2, 3, 8, 6).to(dtype)
    weights = [[0.1, 0.3, 0.7]]
    expected = (wavefuse.band_energy(x) * torch.tensor(weights)).sum(dim=(1, 2)).mean()
    got = wavefuse.hf_penalty(x, weights=weights)
    assert got.dtype == torch.float32
    assert_close(got, expected, 1e-6)


def test_hf_penalty_defaults():
    """haar, level 1, periodization, p=2, mean over samples: (x - its 2x2 block means)^2 summed,
    for Haar's orthonormal detail bands carry all the energy that the block means do not."""
    x = torch.randn(4, 3, 8, 6, dtype=torch.float64)
    means = torch.nn.functional.avg_pool2d(x, 2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    expected = (x - means).square().sum(dim=(1, 2, 3)).mean()
    assert_close(wavefuse.hf_penalty(x), expected, 1e-12)


def test_band_energy_defaults():
    """band_energy's defaults are hf_penalty's (haar, level 1, periodization, p=2): PyWavelets'
    level-1 sums, on a plane deep enough that level=None would give more levels."""
    x = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    expected = _pywt_energies(x, "haar", "periodization", 1, 2)
    assert_close(wavefuse.band_energy(x), torch.from_numpy(expected), 1e-10)
    assert_close(wavefuse.band_energy(x).sum(dim=(1, 2)).mean(), wavefuse.hf_penalty(x), 1e-12)


# ----- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_gradient_matches_autograd_through_the_reference(mode, p, dtype, backend):
    """The fused backward (one adjoint cascade) against plain autograd through dwt2d_ref, float64
    on the rounded input; grad_x in x's dtype and memory format."""
    x = torch.randn(2, 3, 13, 10).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.tensor([1.0, 0.5])
    xr = x.double().requires_grad_()
    expected_value = _composed_penalty(xr, "db2", mode, 2, p, w, "sum")
    (expected,) = torch.autograd.grad(expected_value, xr)
    xs = x.clone().requires_grad_()
    got_value = wavefuse.hf_penalty(xs, "db2", 2, mode, p, w, "sum", backend=backend)
    (got,) = torch.autograd.grad(got_value, xs)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert_close(got, expected, TOL[dtype], f"{mode} p={p} {dtype}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradient_of_every_reduction(reduction, backend):
    """The backward of each reduction, the default "mean" (over samples) included, against plain
    autograd through dwt2d_ref, with per-band weights and a random cotangent."""
    x = torch.randn(3, 2, 9, 8, dtype=torch.float64)
    w = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.0, 1.5]], dtype=torch.float64)
    xr = x.clone().requires_grad_()
    expected_value = _composed_penalty(xr, "db2", "symmetric", 2, 2, w, reduction)
    cot = torch.rand_like(expected_value)
    (expected,) = torch.autograd.grad(expected_value, xr, cot)
    xs = x.clone().requires_grad_()
    got_value = wavefuse.hf_penalty(xs, "db2", 2, "symmetric", 2, w, reduction, backend=backend)
    (got,) = torch.autograd.grad(got_value, xs, cot)
    assert_close(got, expected, 1e-10, reduction)


@pytest.mark.parametrize(
    "wave, mode, p",
    [
        ("haar", "zero", 2),
        ("db2", "zero", 1),
        ("db2", "symmetric", 2),
        ("db2", "reflect", 1),
        ("haar", "periodic", 1),
        ("db2", "periodic", 2),
        ("db2", "periodization", 2),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend, wave, mode, p):
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0, 2.0, 0.5], [0.3, 1.0, 1.5]], dtype=torch.float64)

    def penalty(t):
        return _quiet(wavefuse.hf_penalty, t, wave, 2, mode, p, w, "none", backend=backend)

    def energies(t):
        return _quiet(wavefuse.band_energy, t, wave, 2, mode, p, backend=backend)

    assert torch.autograd.gradcheck(energies, (x,))
    assert torch.autograd.gradcheck(penalty, (x,))
    # p=1 is piecewise linear: its second derivative in x is 0, in the incoming gradient it is not.
    # (Fast mode: random projections of the Jacobian; the full check costs minutes on 2 cores.)
    assert torch.autograd.gradgradcheck(penalty, (x,), fast_mode=True)


def test_double_backward_is_the_hessian_vector_product():
    """p=2 makes the penalty a quadratic form, so its gradient is linear in x and the Hessian-vector
    product that double backward gives, d<grad(x), v>/dx = H v, equals grad(x + v) - grad(x)."""
    x = torch.randn(2, 3, 12, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(x)
    (g,) = torch.autograd.grad(wavefuse.hf_penalty(x, "db3", 2, "symmetric"), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    xv = (x + v).detach().requires_grad_()
    (g2,) = torch.autograd.grad(wavefuse.hf_penalty(xv, "db3", 2, "symmetric"), xv)
    assert_close(hv, g2 - g.detach(), 1e-12)


def test_backward_saves_only_the_input():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        wavefuse.hf_penalty(x, "db4", 3, "symmetric")
    big = [t for t in saved if t.numel() > 64]
    assert len(big) == 1 and big[0] is x


# ----- ops: opcheck, compile, edge cases ----------------------------------------------------------


@pytest.mark.parametrize(
    "mode, p, requires_grad",
    [("zero", 1, True), ("periodization", 2, True), ("symmetric", 2, False)],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, mode, p, requires_grad):
    x = torch.randn(2, 3, 9, 6, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(requires_grad)
    filters = filter_bank("db2", "dec", torch.float64)
    w = torch.rand(2, 3, dtype=torch.float64)
    grad = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=requires_grad)
    torch.library.opcheck(OPS.band_energy.default, (x, filters, mode, 2, p, backend))
    torch.library.opcheck(OPS.band_energy_backward.default, (grad, x, filters, mode, 2, p, backend))
    for weights, reduction in [(None, "mean"), (w, "none"), (w, "sum")]:
        args = (x, filters, mode, 2, p, weights, reduction, backend)
        torch.library.opcheck(OPS.hf_penalty.default, args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_half_inputs(backend, dtype):
    """Half inputs: the energies and the penalty come in float32 (the compute dtype), grad_x in
    x's dtype; the fake (meta) registrations must say the same, or torch.compile would trace
    float16 energies that the kernels never return."""
    x = torch.randn(2, 3, 9, 6).to(dtype)
    filters = filter_bank("db2", "dec", dtype)
    grad = torch.randn(2, 2, 3)
    torch.library.opcheck(OPS.band_energy.default, (x, filters, "symmetric", 2, 2, backend))
    args = (grad, x, filters, "symmetric", 2, 2, backend)
    torch.library.opcheck(OPS.band_energy_backward.default, args)
    for reduction in ("none", "mean"):
        args = (x, filters, "symmetric", 2, 2, None, reduction, backend)
        torch.library.opcheck(OPS.hf_penalty.default, args)


def test_torch_compile_fullgraph_penalty_in_a_loss():
    def loss(t):
        e = wavefuse.band_energy(t, "db2", 2, "symmetric", 1)
        return wavefuse.hf_penalty(t, "db2", 2, "symmetric", weights=[1.0, 0.5]) + e[:, 0].sum()

    x = torch.randn(2, 3, 15, 16, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    value = compiled(x)
    (g,) = torch.autograd.grad(value, x)
    xe = x.detach().requires_grad_()
    value_e = loss(xe)
    (g_e,) = torch.autograd.grad(value_e, xe)
    torch.testing.assert_close(value, value_e)
    torch.testing.assert_close(g, g_e)


def test_torch_compile_fullgraph_through_the_backward_op():
    """The backward op in a compiled graph, differentiated: its own autograd formula (the
    backward op again, and the band products built from dwt2d) traces too. (Double backward
    through a compiled graph is not supported by torch.compile itself.)"""
    filters = filter_bank("db2", "dec", torch.float64)

    def f(grad, t, v):
        gx = torch.ops.wavefuse.band_energy_backward(
            grad, t, filters, "symmetric", 2, 2, "reference"
        )
        return (gx * v).sum()

    grad = torch.rand(2, 2, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(x)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(grad, x, v), [grad, x])
    expected = torch.autograd.grad(f(grad, x, v), [grad, x])
    for a, b in zip(got, expected):
        assert_close(a, b, 1e-12)
    assert expected[0].abs().sum() > 0 and expected[1].abs().sum() > 0


def test_level_zero_empty_batch_and_reference_functions():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert wavefuse.band_energy(x, "haar", 0).shape == (2, 0, 3)
    zero = wavefuse.hf_penalty(x, "haar", 0, reduction="sum")
    assert zero.item() == 0
    (g,) = torch.autograd.grad(zero, x)
    assert torch.equal(g, torch.zeros_like(x))
    assert wavefuse.hf_penalty(torch.randn(0, 3, 8, 8), reduction="none").shape == (0,)
    filters = filter_bank("sym5", "dec", torch.float64)
    assert_close(
        reference.hf_penalty_ref(x, filters, "reflect", 2, 2),
        _composed_penalty(x, "sym5", "reflect", 2, 2, None, "mean"),
        1e-10,
    )


@pytest.mark.filterwarnings("default")
def test_too_high_level_warns_as_pywt():
    with pytest.warns(UserWarning, match="Level value of 3 is too high"):
        wavefuse.band_energy(torch.randn(1, 1, 8, 8), "db4", 3)


def test_level_none_is_the_max_level():
    x = torch.randn(1, 1, 64, 40, dtype=torch.float64)
    assert wavefuse.band_energy(x, "db2", None).shape[1] == pywt.dwt_max_level(40, 4)


def test_python_weights_go_to_a_device_once():
    """weights as Python numbers for x on a device: one cached copy per distinct weights (a copy
    per call would block the host every step and break CUDA graph capture); meta stands in for
    a GPU here. On the CPU there is nothing to copy."""
    from wavefuse.ops.hf_penalty import prepare_weights

    like = torch.empty(1, 1, 8, 8, device="meta")
    with torch.inference_mode():  # first asked for there: still a normal tensor
        first = prepare_weights([1.0, 0.5], 2, like, torch.float32)
    assert not first.is_inference() and first.device.type == "meta"
    assert prepare_weights((1.0, 0.5), 2, like, torch.float32) is first
    per_band = prepare_weights([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]], 2, like, torch.float32)
    assert per_band is first and first.shape == (2, 3)
    assert prepare_weights([1.0, 0.25], 2, like, torch.float32) is not first
    assert prepare_weights([1.0, 0.5], 2, like, torch.float64).dtype == torch.float64
    host = prepare_weights([1.0, 0.5], 2, torch.empty(1, 1, 8, 8), torch.float64)
    assert torch.equal(host, torch.tensor([[1.0] * 3, [0.5] * 3], dtype=torch.float64))


@pytest.mark.filterwarnings("default")
def test_level_none_with_no_level_warns():
    """pywt's max level of 28x28 with db8 (16 taps) is 0: a penalty of 0, a step with no band."""
    x = torch.randn(2, 1, 28, 28)
    assert pywt.dwt_max_level(28, 16) == 0
    with pytest.warns(UserWarning, match=r"level=None is 0 levels for x of 28x28 with 'db8'"):
        assert wavefuse.hf_penalty(x, "db8", None).item() == 0
    with pytest.warns(UserWarning, match="level=None is 0 levels for x"):
        assert wavefuse.band_energy(x, "db8", None).shape == (2, 0, 3)
    with pytest.warns(UserWarning, match="level=None is 0 levels for grad"):
        wavefuse.wavelet_pgd_step(x.clone(), x, x.clone(), 0.1, 0.01, "db8", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit level 0 is taken as meant
        wavefuse.hf_penalty(x, "db8", 0)


# ----- bad input ----------------------------------------------------------------------------------

X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: wavefuse.band_energy(X, p=3), ValueError, "p=3 is not supported; allowed: 1, 2"),
        (lambda: wavefuse.hf_penalty(X, p=0), ValueError, "p=0 is not supported; allowed: 1, 2"),
        (lambda: wavefuse.hf_penalty(X, p="2"), ValueError, "p='2' is not supported"),
        (lambda: wavefuse.hf_penalty(X, p=True), ValueError, "p=True is not supported"),
        (
            lambda: wavefuse.hf_penalty(X, reduction="avg"),
            ValueError,
            "reduction='avg' is not supported; allowed: none, sum, mean",
        ),
        (
            lambda: wavefuse.hf_penalty(X, level=2, weights=[1.0]),
            ValueError,
            (
                "weights has shape (1,); allowed: None, or a sequence or tensor of shape "
                "(2,) or (2, 3) (J = level)"
            ),
        ),
        (
            lambda: wavefuse.hf_penalty(X, weights=torch.ones(1, 2)),
            ValueError,
            "weights has shape (1, 2); allowed",
        ),
        (lambda: wavefuse.hf_penalty(X, weights="heavy"), TypeError, "weights must be None, or"),
        (
            lambda: wavefuse.hf_penalty(X, weights=torch.ones(1, 3, dtype=torch.int64)),
            TypeError,
            "weights has dtype torch.int64",
        ),
        (
            lambda: wavefuse.hf_penalty(X, weights=torch.ones(1, requires_grad=True)),
            ValueError,
            "weights must not require grad",
        ),
        (
            lambda: wavefuse.hf_penalty(X, weights=torch.ones(1, device="meta")),
            ValueError,
            "weights is on meta, x on cpu",
        ),
        (lambda: wavefuse.band_energy(X[0]), ValueError, "x must be 4-D"),
        (lambda: wavefuse.band_energy(X.int()), TypeError, "x has dtype torch.int32"),
        (lambda: wavefuse.band_energy(X, "bior2.2"), ValueError, "wave='bior2.2' is not supported"),
        (lambda: wavefuse.band_energy(X, wave=3), TypeError, "wave must be a wavelet name"),
        (lambda: wavefuse.hf_penalty(X, mode="smooth"), ValueError, "mode='smooth' is not"),
        (lambda: wavefuse.hf_penalty(X, level=-1), ValueError, "Level value of -1 is too low"),
        (lambda: wavefuse.hf_penalty(X, level=1.5), TypeError, "level must be an int"),
        (
            lambda: wavefuse.band_energy(torch.randn(1, 1, 2, 6), "haar", 2, "reflect"),
            ValueError,
            "x (level 2): mode='reflect' needs at least 2 samples",
        ),
        (lambda: wavefuse.hf_penalty(X, backend="gpu"), ValueError, "backend='gpu' is not one"),
    ],
)
def test_bad_input_raises_a_clear_error(call, exc, match):
    escaped = match.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    with pytest.raises(exc, match=escaped):
        _quiet(call)


@pytest.mark.parametrize("backend", cpu_backends("band_energy"))
def test_levels_that_grow(backend):
    """An input shorter than the filter grows level by level in the non-periodization modes
    (1 x 1 with db4: 4 x 4, 5 x 5, 6 x 6, 6 x 6). The C++ cascade once sized its buffers by level 1
    and corrupted the heap ("free(): invalid next size"), so this runs in a subprocess: a
    regression fails this test instead of aborting the run. Energies and gradients against the
    reference, every mode that grows, repeated calls."""
    code = textwrap.dedent(
        f"""
        import torch, warnings, wavefuse
        warnings.simplefilter("ignore")
        for mode in ("symmetric", "zero", "reflect", "periodic"):
            for shape, wave, level in (((1, 1, 1, 1), "db4", 4), ((2, 3, 2, 5), "db3", 3)):
                if mode == "reflect" and min(shape[-2:]) < 2:
                    continue
                x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                ref = wavefuse.band_energy(x, wave, level, mode, 2, backend="reference")
                (g_ref,) = torch.autograd.grad(ref.sum(), x)
                for _ in range(3):
                    e = wavefuse.band_energy(x, wave, level, mode, 2, backend="{backend}")
                    (g,) = torch.autograd.grad(e.sum(), x)
                    torch.testing.assert_close(e, ref, rtol=1e-12, atol=1e-12)
                    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


# The CPU kernels run planes of at most 128 x 128 samples V at a time, one plane per vector lane,
# and larger ones row by row (csrc/cpu/planes.h). The grids above use small planes; these sizes
# sit on both sides of the switch (128 x 128 and 128 x 127 on the plane-vector path, 129 x 128 and
# 128 x 129 on the row path), with 7 planes per call (no whole group of lanes) and a strided
# layout, so each path is checked on its own: energies against pywt, the fused gradient against
# autograd through the reference transforms.
@pytest.mark.parametrize("size", [(128, 128), (129, 128), (128, 127), (128, 129)])
@pytest.mark.parametrize(
    "wave, mode", [("db3", "symmetric"), ("sym5", "periodization"), ("db1", "zero")]
)
def test_cpu_paths_either_side_of_the_plane_switch(size, wave, mode):
    reason = backends.why_not("cpu", "hf_penalty", "cpu")
    if reason is not None:
        pytest.skip(str(reason))
    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    base = torch.randn(1, 7, h, w, dtype=torch.float64, generator=gen)
    weights = torch.tensor([1.0, 0.25], dtype=torch.float64)
    for x in (base, base.contiguous(memory_format=torch.channels_last)):
        for p in (1, 2):
            what = f"{wave} {mode} {h}x{w} p={p} channels_last={not x.is_contiguous()}"
            got = _quiet(wavefuse.band_energy, x, wave, 2, mode, p, backend="cpu")
            assert_close(got, _pywt_energies(base, wave, mode, 2, p), TOL[torch.float64], what)
            xs = x.clone().requires_grad_()
            value = _quiet(wavefuse.hf_penalty, xs, wave, 2, mode, p, weights, "sum", backend="cpu")
            (grad,) = torch.autograd.grad(value, xs)
            xr = base.clone().requires_grad_()
            (expected,) = torch.autograd.grad(
                _composed_penalty(xr, wave, mode, 2, p, weights, "sum"), xr
            )
            assert_close(grad, expected, TOL[torch.float64], what + " gradient")


# band_energy and its fused backward move planes into and out of the lane-interleaved buffer by
# dtype and strides (csrc/cpu/planes.h, planes_layout; see tests/test_dwt.py): whole planes or rows
# transposed in registers, channels-last groups copied a vector at a time, the rest one scalar at a
# time. 2 x 12 planes put a group of 8 across the two samples. The moves are exact, so every layout
# gives bitwise the energies and gradient of the contiguous input, and those match the reference.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(32, 32), (19, 13), (5, 5)])
def test_cpu_plane_moves_every_layout_bitwise(size, dtype):
    reason = backends.why_not("cpu", "hf_penalty", "cpu")
    if reason is not None:
        pytest.skip(str(reason))
    h, w = size
    gen = torch.Generator().manual_seed(h * 100 + w)
    base = torch.randn(2, 12, h, w, dtype=dtype, generator=gen)
    wide = torch.zeros(2, 12, h, w + 3, dtype=dtype)
    wide[..., 2 : 2 + w] = base
    layouts = {
        "channels last": base.contiguous(memory_format=torch.channels_last),
        "row slice": wide[..., 2 : 2 + w],
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
    }
    weights = torch.tensor([1.0, 0.25], dtype=dtype)

    def energies_and_grad(x):
        e = _quiet(wavefuse.band_energy, x, "db4", 2, "symmetric", 2, backend="cpu")
        xs = x.detach().requires_grad_()
        value = _quiet(
            wavefuse.hf_penalty, xs, "db4", 2, "symmetric", 2, weights, "sum", backend="cpu"
        )
        return e, torch.autograd.grad(value, xs)[0]

    e0, g0 = energies_and_grad(base)
    tol = TOL[dtype]
    assert_close(e0, _pywt_energies(base.double(), "db4", "symmetric", 2, 2), tol, "energies")
    xr = base.double().requires_grad_()
    (expected,) = torch.autograd.grad(
        _composed_penalty(xr, "db4", "symmetric", 2, 2, weights.double(), "sum"), xr
    )
    assert_close(g0, expected, tol, "gradient")
    for name, x in layouts.items():
        e, g = energies_and_grad(x)
        assert torch.equal(e, e0), f"{name} {dtype}: energies differ"
        assert torch.equal(g, g0), f"{name} {dtype}: gradient differs"


def test_weights_that_require_grad_work_under_no_grad():
    """Refused with grad mode on (they are not differentiated); under no_grad they are numbers."""
    x = torch.randn(2, 3, 8, 8)
    w = torch.nn.Parameter(torch.tensor([2.0]))
    with torch.no_grad():
        got = wavefuse.hf_penalty(x, "haar", 1, weights=w)
    assert torch.equal(got, wavefuse.hf_penalty(x, "haar", 1, weights=[2.0]))
