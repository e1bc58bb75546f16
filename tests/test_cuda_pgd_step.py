"""The CUDA PGD-step kernels (csrc/cuda/pgd_step.cu) on CUDA tensors, against the reference.

Marked ``gpu``: every test skips at run time (never at collection) where no CUDA device is visible
or this build of wavefuse._C has no CUDA kernel for the op (``backends.why_not``). Where no GPU is
lent, tests/test_cuda_pgd_emulation.py runs the same kernel bodies on the CPU.

Tolerances as tests/test_triton_fused.py: Linf bit for bit in every dtype (one rounding of the
same float32 / float64 values); L2 1e-12 in float64, 1e-6 in float32 (the norms' summation order
differs from torch's), the tolerance table (one ulp) for the half types. The wavelet step's Linf
follows sign(g'), whose tiny entries the transforms' rounding may flip: a handful of elements may
differ, by at most 2 alpha.

Haar runs the fused kernel (haar_step_kernel: one launch for Linf, three for L2, counted with the
profiler) for levels 1-6 in every mode, size, dtype and layout, and beyond level 6 the separable
kernel or the approximation chain (tests ``test_haar_*``). Other banks run the separable kernel
(sep_step_kernel, the same launch counts) on planes up to 64 x 64 (``test_separable_*``; the
other wavelet tests' planes are all separable-sized), the approximation chain above
(``test_chain_*``: where separable.cascade_fits -- planes that fill the GPU, none over 2^18
samples -- ONE cascade_kernel launch for the whole filter, then the step; otherwise one
pair_kernel launch per level (the chain's stages two per launch), then the step; per level
split_kernel writing the approximation alone and chain_kernel only for a bank too long for the
pairs' shared memory), and the composition of the transforms for a bank without perfect
reconstruction. On the cascade and the pairs, a Linf step on a float32 or float64 x_adv runs inside
the filter's last launch (no linf_kernel launch); L2 and the half types keep the step kernels.
"""

from __future__ import annotations

import math
import warnings

import pytest
import pywt
import torch
from conftest import (
    ALL_MODES,
    TOL,
    assert_close,
    assert_step_close,
    assert_wavelet_step,
    reflect_too_deep,
    skip_unless_cuda,
)

import wavefuse
from wavefuse.filters import filter_bank
from wavefuse.ops import separable
from wavefuse.ops.pgd_step import prepare_bounds

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided", "mixed"]
# (N, C, H, W): one element, odd, several blocks and several L2 chunks per sample
SHAPES = [(1, 1, 1, 1), (3, 3, 11, 9), (2, 3, 67, 45)]
OPS = ("pgd_step", "wavelet_pgd_step")

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore:Level value of:UserWarning")]


@pytest.fixture(autouse=True)
def _cuda_live():
    skip_unless_cuda(OPS)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    n, c, h, w = t.shape
    view = torch.zeros(n, c, h, 2 * w + 1, dtype=t.dtype, device=t.device)[..., 1::2]
    view.copy_(t)
    return view


def _inputs(shape=(3, 3, 11, 9), dtype=torch.float32, spread=0.1, layout="contiguous"):
    """x in [0, 1], x_adv near it (some at the bounds), a gradient with a zero entry."""
    x = torch.rand(*shape, dtype=torch.float64)
    x_adv = (x + spread * torch.randn_like(x)).clamp(0, 1)
    g = torch.randn_like(x)
    g.view(-1)[0] = 0.0
    layouts = ("channels_last", "strided", "contiguous") if layout == "mixed" else (layout,) * 3
    return tuple(
        _layout(t.to(dtype).to("cuda"), lay) for t, lay in zip((x_adv, g, x), layouts, strict=True)
    )


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A copy with t's strides (clone would make a strided view dense)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    return out.copy_(t)


def _steps(x_adv, g, x, *args, **kwargs):
    """(cuda, reference) results of the same step; the cuda one in place on x_adv's layout."""
    got = wavefuse.pgd_step(_copy(x_adv), g, x, *args, **kwargs, backend="cuda")
    expected = wavefuse.pgd_step(x_adv.clone(), g, x, *args, **kwargs, backend="reference")
    return got, expected


def _assert_step(got, expected, norm, what=""):
    assert got.dtype == expected.dtype, what
    if norm == "Linf":
        same = (got == expected) | (got.isnan() & expected.isnan())
        assert same.all(), f"{what}: {int((~same).sum())} elements differ"
    else:
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, TOL[got.dtype])
        assert_step_close(got, expected, tol, what)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---- pgd_step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_matches_the_reference(norm, dtype, layout, shape):
    x_adv, g, x = _inputs(shape, dtype, layout=layout)
    eps, alpha = (0.03, 0.02) if norm == "Linf" else (0.3, 0.25)
    got, expected = _steps(x_adv, g, x, eps, alpha, norm)
    _assert_step(got, expected, norm, f"{norm} {dtype} {layout} {shape}")
    assert got.stride() == x_adv.stride()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_tensor_bounds(norm, dtype):
    """Per-sample eps, per-channel alpha and lo, a float hi; then (N, C) bounds everywhere."""
    x_adv, g, x = _inputs(dtype=dtype, spread=0.2, layout="channels_last")
    n, c = x.shape[:2]
    eps = (0.05 + 0.1 * torch.rand(n, 1, 1, 1, device="cuda")) * (4 if norm == "L2" else 1)
    alpha = torch.tensor([0.02, 0.03, 0.05], device="cuda").view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0], device="cuda").view(1, c, 1, 1)
    got, expected = _steps(x_adv, g, x, eps, alpha, norm, lo, 0.9)
    _assert_step(got, expected, norm, "per-sample/per-channel")
    hi = 0.8 + 0.2 * torch.rand(n, c, 1, 1, device="cuda")
    if norm == "Linf":
        eps = eps * torch.tensor([1.0, 0.5, 2.0], device="cuda").view(1, c, 1, 1)
    got, expected = _steps(x_adv, g, x, eps, alpha * 2, norm, lo - 0.1, hi)
    _assert_step(got, expected, norm, "(N, C) bounds")


def test_pgd_step_float64_bounds_are_not_rounded_to_float32():
    x = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64, device="cuda")
    eps = 0.1 + 1e-12
    got = wavefuse.pgd_step(x.clone(), torch.ones_like(x), x, eps, 1.0, backend="cuda")
    assert torch.equal(got, torch.full_like(x, 0.5 + eps))


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_nan_propagates_and_zero_delta(norm):
    x_adv, g, x = _inputs(shape=(2, 2, 6, 5))
    g[0, 1, 3, 2] = math.nan
    got, expected = _steps(x_adv, g, x, 0.03, 0.01, norm)
    assert torch.isnan(got[0, 1, 3, 2]) and torch.isfinite(got[1]).all()
    if norm == "L2":
        assert torch.isnan(got[0]).all()
    _assert_step(got.nan_to_num(), expected.nan_to_num(), norm, "NaN gradient")
    got = wavefuse.pgd_step(x.clone(), torch.zeros_like(g), x, 0.0, 0.1, norm, backend="cuda")
    assert torch.equal(got, x)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_pgd_step_repeated_calls_are_bitwise_identical(norm):
    x_adv, g, x = _inputs(shape=(4, 3, 64, 61))
    first = wavefuse.pgd_step(x_adv.clone(), g, x, 0.5, 0.3, norm, backend="cuda")
    for _ in range(3):
        again = wavefuse.pgd_step(x_adv.clone(), g, x, 0.5, 0.3, norm, backend="cuda")
        assert torch.equal(first, again)


# ---- wavelet_pgd_step ----------------------------------------------------------------------------


def _wavelet_steps(x_adv, g, x, eps, wave, level, mode, scales, norm, alpha=0.03):
    args = (x, eps, alpha, wave, level, mode, scales, norm)
    return [
        _quiet(wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend=backend)
        for backend in ("cuda", "reference")
    ]


def _wavelet_steps_or_error(x_adv, g, x, eps, wave, level, mode, scales, norm, alpha=0.03):
    """``_wavelet_steps``, or None where mode 'reflect' runs out of samples: then both backends
    must refuse the call with the ValueError that names the mode."""
    if mode == "reflect" and reflect_too_deep(x_adv.shape, wave, level):
        args = (x, eps, alpha, wave, level, mode, scales, norm)
        for backend in ("cuda", "reference"):
            with pytest.raises(ValueError, match="mode='reflect' needs at least 2 samples"):
                wavefuse.wavelet_pgd_step(_copy(x_adv), g, *args, backend=backend)
        return None
    return _wavelet_steps(x_adv, g, x, eps, wave, level, mode, scales, norm, alpha)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_matches_the_reference(norm, wave, mode):
    """Levels 1-3 (db4 grows past the size: levels above pywt's max), odd sizes, float64, the
    scale as one float and as a per-level list."""
    x_adv, g, x = _inputs(shape=(2, 2, 13, 10), dtype=torch.float64)
    eps = 0.05 if norm == "Linf" else 0.4
    for level in (1, 2, 3):
        for scales in (0.0, [0.0, 0.5, -0.25][:level]):
            got, expected = _wavelet_steps(x_adv, g, x, eps, wave, level, mode, scales, norm)
            what = f"{wave} level {level} {mode} {norm} {scales}"
            assert_wavelet_step(got, expected, norm, 0.03, what)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_wavelet_pgd_step_dtypes_and_layouts(norm, dtype, layout):
    """The half types step in float32 on the float32 filtered gradient and round once."""
    x_adv, g, x = _inputs(shape=(2, 3, 17, 12), dtype=dtype, layout=layout)
    eps = 0.05 if norm == "Linf" else 0.5
    for wave, mode in (("haar", "periodization"), ("db2", "symmetric")):
        got, expected = _wavelet_steps(x_adv, g, x, eps, wave, 2, mode, [0.0, 0.3], norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"{wave} {dtype} {layout} {norm}")
        assert got.stride() == x_adv.stride()


def test_wavelet_pgd_step_repeated_calls_are_bitwise_identical():
    x_adv, g, x = _inputs(shape=(3, 3, 40, 36))
    first = _wavelet_steps(x_adv, g, x, 0.5, "db4", 2, "reflect", [0.0, 0.5], "L2")[0]
    again = _wavelet_steps(x_adv, g, x, 0.5, "db4", 2, "reflect", [0.0, 0.5], "L2")[0]
    assert torch.equal(first, again)


# ---- wavelet_pgd_step, other banks on planes up to 64 x 64: the separable kernel -----------------


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_separable_kernel_launches_and_sizes(norm):
    """db4 J=3 on 32 x 32 and 64 x 64 planes (float64 at 64 x 64: 64 KiB of shared memory, the
    opt-in) runs sep_step_kernel only (one launch for Linf, three for L2: no transform kernel);
    65 x 64 takes the approximation chain. All match the reference."""
    for shape, dtype, sep_sized in (
        ((4, 3, 32, 32), torch.float32, True),
        ((2, 2, 64, 64), torch.float64, True),
        ((2, 3, 33, 20), torch.bfloat16, True),
        ((1, 2, 65, 64), torch.float64, False),
    ):
        x_adv, g, x = _inputs(shape=shape, dtype=dtype)
        eps = 0.05 if norm == "Linf" else 0.5
        args = (x, eps, 0.03, "db4", 3, "symmetric", [0.0, 0.5, -0.25], norm)
        target = _copy(x_adv)
        _quiet(wavefuse.wavelet_pgd_step, target, g, *args, backend="cuda")  # builds the pairs
        names = _kernel_launches(
            lambda target=target, g=g, args=args: _quiet(
                wavefuse.wavelet_pgd_step, target, g, *args, backend="cuda"
            )
        )
        kernels = [n for n in names if not n.startswith(("Memcpy", "Memset"))]
        sep = sum("sep_step_kernel" in n for n in kernels)
        assert sep == ((1 if norm == "Linf" else 3) if sep_sized else 0), (shape, kernels)
        if sep_sized:
            assert len(kernels) == sep, kernels
        got, expected = _wavelet_steps(x_adv, g, x, eps, "db4", 3, "symmetric",
                                       [0.0, 0.5, -0.25], norm)  # fmt: skip
        assert_wavelet_step(got, expected, norm, 0.03, f"{shape} {dtype} {norm}")


@pytest.mark.parametrize(
    "path, shape, level, mode, hf_scale",
    [
        ("separable", (8, 3, 32, 32), 3, "periodization", 0.0),
        ("chain", (4, 3, 96, 96), 2, "symmetric", [0.0, 0.5]),
    ],
)
def test_wavelet_step_under_cuda_graph_capture(path, shape, level, mode, hf_scale):
    """After one warm-up call (which builds and caches the separable matrix pairs, or checks and
    caches the bank's perfect reconstruction for the chain), the step launches nothing but
    kernels: it captures in a CUDA graph and replays to the eager result."""
    x_adv, g, x = _inputs(shape=shape)
    args = (x, 0.5, 0.03, "db4", level, mode, hf_scale, "L2")
    eager = _quiet(wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend="cuda")
    target = _copy(x_adv)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _quiet(wavefuse.wavelet_pgd_step, target, g, *args, backend="cuda")
    target.copy_(x_adv)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(target, eager)


def test_separable_matrices_cached_by_bank_values(monkeypatch):
    """A bank re-created for every call (as torch.compile's graphs do) is read once per tensor and
    finds the matrices built for the first; under CUDA graph capture a bank never seen before
    falls back to the per-level composition (no synchronising read) and replays correctly."""
    from wavefuse.ops import separable

    builds = []
    build = separable.separable_terms
    monkeypatch.setattr(
        separable, "separable_terms", lambda *a, **k: builds.append(1) or build(*a, **k)
    )
    x_adv, g, x = _inputs(shape=(2, 3, 16, 16))
    bank = filter_bank("db4", "dec", torch.float32, "cuda")
    bounds = prepare_bounds(x, 0.05, 0.01, 0.0, 1.0, "Linf")
    expected = _quiet(
        wavefuse.wavelet_pgd_step, _copy(x_adv), g, x, 0.05, 0.01, "db4", 2, "reflect", 0.5,
        "Linf", backend="reference",
    )  # fmt: skip
    args = ("reflect", 2, [0.5, 0.5], "Linf", "cuda")
    for _ in range(3):
        got = _copy(x_adv)
        torch.ops.wavefuse.wavelet_pgd_step(got, g, x, *bounds, bank.clone(), *args)
        assert_wavelet_step(got, expected, "Linf", 0.01, "re-created bank")
    assert len(builds) == 1
    fresh = bank.clone()
    target = _copy(x_adv)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _quiet(torch.ops.wavefuse.wavelet_pgd_step, target, g, x, *bounds, fresh, *args)
    target.copy_(x_adv)
    graph.replay()
    torch.cuda.synchronize()
    assert_wavelet_step(target, expected, "Linf", 0.01, "captured with a new bank")


# ---- wavelet_pgd_step, other banks on larger planes: the approximation chain ---------------------


def _chain_launches(x_adv, g, x, eps, wave, level, mode, scales, norm) -> dict:
    """{kernel kind: launches} of one CUDA wavelet step (after a warm-up call)."""
    args = (x, eps, 0.03, wave, level, mode, scales, norm)
    _quiet(wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend="cuda")
    names = _kernel_launches(
        lambda: _quiet(wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend="cuda")
    )
    kinds = ("cascade_kernel", "pair_kernel", "chain_kernel", "split_kernel", "merge_kernel")
    kinds += ("sep_step_kernel", "linf_kernel", "l2_")
    return {k: sum(k in n for n in names) for k in kinds}


def _cascade(norm: str) -> dict:
    """The launches of the cascade route on a float32 / float64 x_adv: one cascade_kernel, with
    the Linf step inside it; L2's three step launches after it."""
    return {"cascade_kernel": 1, "pair_kernel": 0, "chain_kernel": 0, "split_kernel": 0,
            "merge_kernel": 0, "sep_step_kernel": 0, "linf_kernel": 0,
            "l2_": 0 if norm == "Linf" else 3}  # fmt: skip


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_chain_every_mode_and_launches(norm, monkeypatch):
    """Planes over 64 with a perfect-reconstruction bank, where separable.cascade_fits (forced
    here: 4 planes do not fill a GPU), run _chain_pgd_step_kernel as the whole cascade: ONE
    cascade_kernel launch for the filter (no split_kernel, chain_kernel or merge_kernel), then the
    step (Linf: inside it). db4 J=3 in every mode (float64, odd sizes, one side under 64), db2 J=5, coif3 J=2 against
    the reference; the levels past the last change of scale are skipped ([0.5, 1, 1]: one level,
    still one launch)."""
    monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0)
    x_adv, g, x = _inputs(shape=(2, 2, 131, 45), dtype=torch.float64)
    eps = 0.05 if norm == "Linf" else 0.5
    scales = [0.0, 0.5, -0.25]
    for mode in ALL_MODES:
        got, expected = _wavelet_steps(x_adv, g, x, eps, "db4", 3, mode, scales, norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"cascade db4 {mode} {norm}")
    for wave, level, mode, sc in (
        ("db2", 5, "periodization", [0.0, 0.5, -0.25, 1.0, 0.3]),
        ("coif3", 2, "zero", [0.25, 0.0]),
    ):
        got, expected = _wavelet_steps(x_adv, g, x, eps, wave, level, mode, sc, norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"cascade {wave} J={level} {norm}")
        launches = _chain_launches(x_adv, g, x, eps, wave, level, mode, sc, norm)
        assert launches == _cascade(norm), (wave, launches)
    launches = _chain_launches(x_adv, g, x, eps, "db4", 3, "symmetric", scales, norm)
    assert launches == _cascade(norm), launches
    target = _copy(x_adv)  # float64: no conversion; every kernel but the step's is the filter's
    names = _kernel_launches(
        lambda: _quiet(wavefuse.wavelet_pgd_step, target, g, x, eps, 0.03, "db4", 3, "symmetric",
                       scales, norm, backend="cuda")
    )  # fmt: skip
    kernels = [n for n in names if not n.startswith(("Memcpy", "Memset"))]
    assert len(kernels) == 1 + (0 if norm == "Linf" else 3), kernels  # Linf: fused
    launches = _chain_launches(x_adv, g, x, eps, "sym5", 3, "reflect", [0.5, 1.0, 1.0], norm)
    assert launches == _cascade(norm), launches
    got, expected = _wavelet_steps(x_adv, g, x, eps, "sym5", 3, "reflect", [0.5, 1.0, 1.0], norm)
    assert_wavelet_step(got, expected, norm, 0.03, f"cascade sym5 one level {norm}")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_chain_per_level_or_cascade(norm, monkeypatch):
    """separable.cascade_fits on a GPU: 4 planes of 131 x 45 do not fill it (2 planes per SM), so
    the chain runs in pairs of stages (one pair_kernel per level, no cascade, split or
    chain_kernel); with the planes-per-SM rule off, the cascade (one launch); with it off but the
    plane one sample over CASCADE_MAX_PLANE (lowered), in pairs again. All match the reference.
    A bank whose pair window does not fit in shared memory (PyWavelets' db24, 48 taps, float64,
    through the op: wavefuse names no wavelet that long) runs level by level (per level one
    split_kernel and one chain_kernel)."""
    eps = 0.05 if norm == "Linf" else 0.5
    scales = [0.0, 0.5]
    x_adv, g, x = _inputs(shape=(2, 2, 131, 45), dtype=torch.float64)  # no float32 sign flips
    step = {"linf_kernel": 0, "l2_": 0 if norm == "Linf" else 3}  # Linf: in the last launch
    pairs = {"cascade_kernel": 0, "pair_kernel": 2, "chain_kernel": 0, "split_kernel": 0, **step}
    cascade = {"cascade_kernel": 1, "pair_kernel": 0, "chain_kernel": 0, "split_kernel": 0, **step}
    for per_sm, max_plane, expected_launches in (
        (separable.CASCADE_PLANES_PER_SM, separable.CASCADE_MAX_PLANE, pairs),
        (0, separable.CASCADE_MAX_PLANE, cascade),
        (0, 131 * 45 - 1, pairs),
    ):
        monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", per_sm)
        monkeypatch.setattr(separable, "CASCADE_MAX_PLANE", max_plane)
        got, expected = _wavelet_steps(x_adv, g, x, eps, "db4", 2, "symmetric", scales, norm)
        assert_wavelet_step(got, expected, norm, 0.03, f"chain {per_sm} {max_plane} {norm}")
        launches = _chain_launches(x_adv, g, x, eps, "db4", 2, "symmetric", scales, norm)
        for kind, count in expected_launches.items():
            assert launches[kind] == count, (per_sm, max_plane, launches)
    db24 = pywt.Wavelet("db24")
    bank = torch.tensor([db24.dec_lo, db24.dec_hi], dtype=torch.float64, device=x.device)
    bounds = prepare_bounds(x, eps, 0.03, 0.0, 1.0, norm)
    results = {}
    for backend in ("cuda", "reference"):
        out = _copy(x_adv)
        args = (*bounds, bank, "symmetric", 2, scales, norm, backend)
        names = _kernel_launches(lambda out=out, args=args: torch.ops.wavefuse.wavelet_pgd_step(
            out, g, x, *args))  # fmt: skip
        if backend == "cuda":
            launches = {k: sum(k in n for n in names) for k in pairs}
            assert launches["chain_kernel"] == launches["split_kernel"] == 2, launches
            assert launches["pair_kernel"] == launches["cascade_kernel"] == 0, launches
            # the level route keeps the step kernels
            assert sum("linf_kernel" in n for n in names) == (norm == "Linf"), names
        results[backend] = out
    assert_wavelet_step(results["cuda"], results["reference"], norm, 0.03, f"db24 levels {norm}")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_chain_cascade_many_planes_repeatable(norm):
    """The cascade as separable.cascade_fits picks it by itself: more planes than 2 per SM (here
    3 per SM), db4 J=4 on 96 x 80, float32. One cascade_kernel launch; the step matches the
    reference; three calls agree bit for bit (a race between a block's tiles, or a missing
    barrier, would most likely show as a difference). The same planes in pairs of stages (the
    cascade's rule lowered out of reach): four pair_kernel launches, three calls bit for bit."""
    planes = 3 * separable.sm_count(torch.device("cuda"))
    x_adv, g, x = _inputs(shape=(planes, 1, 96, 80), dtype=torch.float32)
    eps = 0.05 if norm == "Linf" else 0.5
    scales = [0.0, 0.5, -0.25, 0.75]
    launches = _chain_launches(x_adv, g, x, eps, "db4", 4, "symmetric", scales, norm)
    assert launches == _cascade(norm), launches
    results = []
    for _ in range(3):
        got, expected = _wavelet_steps(x_adv, g, x, eps, "db4", 4, "symmetric", scales, norm)
        results.append(got)
    assert_wavelet_step(results[0], expected, norm, 0.03, f"cascade {planes} planes {norm}")
    assert all(torch.equal(results[0], r) for r in results[1:]), "repeated cascades differ"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(separable, "CASCADE_PLANES_PER_SM", 2**40)
        launches = _chain_launches(x_adv, g, x, eps, "db4", 4, "symmetric", scales, norm)
        assert launches["pair_kernel"] == 4 and launches["cascade_kernel"] == 0, launches
        assert launches["linf_kernel"] == 0, launches  # Linf: in the last pair
        results = []
        for _ in range(3):
            got, expected = _wavelet_steps(x_adv, g, x, eps, "db4", 4, "symmetric", scales, norm)
            results.append(got)
    assert_wavelet_step(results[0], expected, norm, 0.03, f"pairs {planes} planes {norm}")
    assert all(torch.equal(results[0], r) for r in results[1:]), "repeated pairs differ"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("route", ["pairs", "cascade"])
def test_chain_dtypes_layouts_and_bounds(norm, dtype, route, monkeypatch):
    """The chain (70 x 97 planes), in pairs of stages and as the cascade (forced: 6 planes do not
    fill a GPU), in every dtype (half types: a float32 chain, x_adv rounded once) and layout
    (x_adv and grad in different ones; g' follows grad's) with per-sample eps and per-channel
    alpha and lo; the gradient is left as it was."""
    if route == "cascade":
        monkeypatch.setattr(separable, "CASCADE_PLANES_PER_SM", 0)
    n, c = 2, 3
    eps = (0.05 if norm == "Linf" else 0.5) * torch.linspace(0.5, 1.5, n).view(n, 1, 1, 1)
    alpha = torch.tensor([0.02, 0.03, 0.05]).view(1, c, 1, 1).cuda()
    lo = torch.tensor([0.1, -0.2, 0.0]).view(1, c, 1, 1).cuda()
    for layout, g_layout in (("channels_last", "strided"), ("contiguous", "channels_last")):
        x_adv, g, x = _inputs(shape=(n, c, 70, 97), dtype=dtype, spread=0.2, layout=layout)
        g = _layout(g, g_layout)
        before = g.clone()
        args = (x, eps.cuda(), alpha, "db2", 2, "periodic", [0.0, 0.5], norm, lo, 0.95)
        got, expected = _steps_of(wavefuse.wavelet_pgd_step, x_adv, g, *args)
        assert torch.equal(g, before)
        assert_wavelet_step(got, expected, norm, 0.05, f"chain {dtype} {layout} {norm}")
        names = _kernel_launches(
            lambda x_adv=x_adv, g=g, args=args: _quiet(
                wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend="cuda"
            )
        )
        # Linf on a compute-type x_adv: the step inside the last launch; half types convert
        fused = norm == "Linf" and dtype in (torch.float32, torch.float64)
        assert sum("linf_kernel" in n for n in names) == (norm == "Linf" and not fused), names


@pytest.mark.parametrize("cascade", [False, True])
def test_chain_keeps_the_separate_step_where_x_adv_shares_the_gradients_storage(cascade):
    """x_adv and the gradient as interleaved columns of one storage: disjoint, but strided views
    whose overlap at::assert_no_overlap cannot judge (the Python layer refuses them in eager
    mode; compiled graphs and direct calls reach the kernel). The chain's last launch reads the
    gradient, so the Linf step is not fused into it: one linf_kernel launch, the reference's
    result, the gradient untouched. Both routes, called directly."""
    n, c, h, w = 2, 3, 70, 97
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(n, c, h, w, dtype=torch.float64, device="cuda", generator=gen)
    base = torch.randn(n, c, h, 2 * w, dtype=torch.float64, device="cuda", generator=gen)
    x_adv, g = base[..., 0::2], base[..., 1::2]
    x_adv.copy_((x + 0.1 * torch.randn_like(x)).clamp(0, 1))
    before, g_before = x_adv.clone(), g.clone()
    scales = [0.0, 0.5]
    expected = _quiet(wavefuse.wavelet_pgd_step, before.clone(), g_before, x, 0.05, 0.03, "db4", 2,
                      "symmetric", scales, "Linf", backend="reference")  # fmt: skip
    bank = filter_bank("db4", "dec", torch.float64, "cuda")
    bounds = prepare_bounds(x, 0.05, 0.03, 0.0, 1.0, "Linf")
    names = _kernel_launches(
        lambda: torch.ops.wavefuse._chain_pgd_step_kernel(
            x_adv, g, x, *bounds, bank, "symmetric", 2, scales, "Linf", cascade
        )
    )
    assert sum("linf_kernel" in n for n in names) == 1, names
    assert sum(("cascade_kernel" if cascade else "pair_kernel") in n for n in names) >= 1, names
    assert torch.equal(g, g_before)
    assert_wavelet_step(x_adv, expected, "Linf", 0.03, f"shared storage, cascade={cascade}")


def _steps_of(fn, x_adv, g, *args):
    """(cuda, reference) results of fn on copies of x_adv."""
    got = _quiet(fn, _copy(x_adv), g, *args, backend="cuda")
    expected = _quiet(fn, _copy(x_adv), g, *args, backend="reference")
    return got, expected


def test_chain_bank_without_perfect_reconstruction_composes_the_transforms():
    """A bank without perfect reconstruction (through the op directly) runs the composition of
    the transforms on a large plane (merge_kernel launches, no chain_kernel)."""
    x_adv, g, x = _inputs(shape=(1, 2, 80, 70), dtype=torch.float64)
    bank = torch.tensor([[0.3, 0.9, 0.1, -0.2], [0.5, -0.4, 0.2, 0.7]], dtype=torch.float64)
    bounds = prepare_bounds(x, 0.5, 0.03, 0.0, 1.0, "L2")
    results = []
    for backend in ("cuda", "reference"):
        out = _copy(x_adv)
        args = (*bounds, bank.to(x.device), "symmetric", 2, [0.3, 0.6], "L2", backend)
        names = _kernel_launches(lambda out=out, args=args: torch.ops.wavefuse.wavelet_pgd_step(
            out, g, x, *args))  # fmt: skip
        if backend == "cuda":
            assert not any("chain_kernel" in n for n in names)
            assert any("merge_kernel" in n for n in names)
        results.append(out)
    assert_close(results[0], results[1], 1e-12, "non-PR bank")


# ---- wavelet_pgd_step, Haar: the fused kernel (haar_step_kernel) and its deep-level fallback -------

HAAR_SCALES = [0.5, -0.25, 2.0, 0.0, 1.0, 0.3]  # per level, finest first (cut to the level)


def _kernel_launches(fn) -> list[str]:
    """Names of the CUDA kernels that fn launches (one entry per launch)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def _haar_launches(x_adv, g, x, eps, level, mode, scales, norm) -> int:
    names = _kernel_launches(
        lambda: _quiet(
            wavefuse.wavelet_pgd_step, _copy(x_adv), g, x, eps, 0.03, "haar", level, mode,
            scales, norm, backend="cuda",
        )
    )  # fmt: skip
    return sum("haar_step_kernel" in n for n in names)


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_fused_every_mode_and_level(norm, mode):
    """Levels 1-3 and 6 (64 x 64 tiles), odd and 1-wide planes and one of several tiles, float64;
    the scale as one float and as a per-level list. One launch for Linf, three for L2."""
    eps = 0.05 if norm == "Linf" else 0.4
    for shape in ((2, 3, 13, 10), (1, 2, 1, 7), (2, 2, 70, 45)):
        x_adv, g, x = _inputs(shape=shape, dtype=torch.float64)
        for level in (1, 2, 3, 6):
            for scales in (0.0, HAAR_SCALES[:level]):
                args = (x_adv, g, x, eps, "haar", level, mode, scales, norm)
                if (steps := _wavelet_steps_or_error(*args)) is None:
                    continue  # reflect on a plane too small for this level: refused (checked)
                what = f"haar {shape} level {level} {mode} {norm} {scales}"
                assert_wavelet_step(*steps, norm, 0.03, what)
        if mode == "reflect" and reflect_too_deep(shape, "haar", 2):
            continue
        launches = _haar_launches(x_adv, g, x, eps, 2, mode, [0.0, 0.5], norm)
        assert launches == (1 if norm == "Linf" else 3), f"{shape} {mode}: {launches} launches"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_fused_dtypes_layouts_and_bounds(norm, dtype):
    """Every dtype (half types read, computed in float32, rounded once at the store) and layout,
    levels 1, 3 and 6 on an odd plane, then tensor bounds (per sample, per channel, (N, C))."""
    eps = 0.05 if norm == "Linf" else 0.5
    for k, layout in enumerate(LAYOUTS):
        x_adv, g, x = _inputs(shape=(2, 3, 37, 29), dtype=dtype, layout=layout)
        for level in (1, 3, 6):
            mode = ALL_MODES[(k + level) % len(ALL_MODES)]
            scales = HAAR_SCALES[:level]
            if _wavelet_steps_or_error(x_adv, g, x, eps, "haar", level, mode, scales, norm) is None:
                mode = "symmetric"  # reflect refused this level (checked): step in another mode
            got, expected = _wavelet_steps(x_adv, g, x, eps, "haar", level, mode, scales, norm)
            assert_wavelet_step(got, expected, norm, 0.03, f"haar {dtype} {layout} {level} {mode}")
            assert got.stride() == x_adv.stride()
    x_adv, g, x = _inputs(shape=(3, 3, 19, 22), dtype=dtype, spread=0.2, layout="mixed")
    n, c = x.shape[:2]
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    eps_t = torch.linspace(0.5, 1.5, n, dtype=cdtype, device="cuda").view(n, 1, 1, 1) * eps
    alpha = torch.tensor([0.02, 0.03, 0.05], dtype=cdtype, device="cuda").view(1, c, 1, 1)
    lo = torch.tensor([0.1, -0.2, 0.0], dtype=cdtype, device="cuda").view(1, c, 1, 1)
    hi = 0.8 + 0.2 * torch.rand(n, c, 1, 1, dtype=cdtype, device="cuda")
    for mode in ("symmetric", "periodic"):
        args = (x, eps_t, alpha, "haar", 2, mode, [0.0, 0.5], norm, lo, hi)
        got, expected = (
            _quiet(wavefuse.wavelet_pgd_step, _copy(x_adv), g, *args, backend=backend)
            for backend in ("cuda", "reference")
        )
        assert_wavelet_step(got, expected, norm, 0.05, f"haar tensor bounds {dtype} {mode}")


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_fused_nan_spreads_over_its_block(norm):
    x_adv, g, x = _inputs(shape=(2, 2, 11, 9), dtype=torch.float64)
    g[0, 1, 5, 8] = math.nan
    got, expected = _wavelet_steps(x_adv, g, x, 0.05, "haar", 2, "symmetric", [0.0, 0.5], norm)
    assert torch.equal(got.isnan(), expected.isnan())
    assert got.isnan()[0, 1, 4:8, 8].all() and torch.isfinite(got[1]).all()


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_haar_level_7_falls_back_to_the_composition(norm):
    """2^7 > 64: beyond kHaarMaxLevels the separable kernel or the approximation chain runs (no
    haar_step_kernel launch)."""
    x_adv, g, x = _inputs(shape=(2, 2, 13, 10), dtype=torch.float64)
    eps = 0.05 if norm == "Linf" else 0.4
    scales = HAAR_SCALES + [0.0]
    for mode in ALL_MODES:
        if steps := _wavelet_steps_or_error(x_adv, g, x, eps, "haar", 7, mode, scales, norm):
            assert_wavelet_step(*steps, norm, 0.03, f"haar level 7 {mode} {norm}")
    assert _haar_launches(x_adv, g, x, eps, 7, "symmetric", scales, norm) == 0
    assert _haar_launches(x_adv, g, x, eps, 6, "symmetric", scales[:6], norm) > 0
    # reflect reaches level 7 on a plane of at least 65 samples a side (refused above on 13 x 10)
    x_adv, g, x = _inputs(shape=(1, 2, 70, 66), dtype=torch.float64)
    steps = _wavelet_steps(x_adv, g, x, eps, "haar", 7, "reflect", scales, norm)
    assert_wavelet_step(*steps, norm, 0.03, f"haar level 7 reflect 70 x 66 {norm}")


def test_haar_fused_repeated_calls_are_bitwise_identical():
    """L2 with more tiles per sample (300) than partial slots (256)."""
    x_adv, g, x = _inputs(shape=(2, 3, 300, 310))
    first = _wavelet_steps(x_adv, g, x, 0.5, "haar", 1, "reflect", [0.25], "L2")[0]
    for _ in range(2):
        again = _wavelet_steps(x_adv, g, x, 0.5, "haar", 1, "reflect", [0.25], "L2")[0]
        assert torch.equal(first, again)


# ---- the custom ops: opcheck, compile ------------------------------------------------------------


@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("bounds_as_tensors", [False, True])
def test_opcheck(bounds_as_tensors, norm):
    x_adv, g, x = _inputs(shape=(2, 3, 9, 6), dtype=torch.float64)
    if bounds_as_tensors:
        eps = torch.full((2, 1, 1, 1), 0.05, dtype=torch.float64, device="cuda")
        lo = torch.zeros(1, 3, 1, 1, dtype=torch.float64, device="cuda")
        bounds = prepare_bounds(x, eps, 0.02, lo, 1.0, norm)
    else:
        bounds = prepare_bounds(x, 0.05, 0.02, 0.0, 1.0, norm)
    torch.library.opcheck(torch.ops.wavefuse.pgd_step.default, (x_adv, g, x, *bounds, norm, "cuda"))
    for wave in ("haar", "db2"):
        filters = filter_bank(wave, "dec", torch.float64, "cuda")
        args = (x_adv, g, x, *bounds, filters, "symmetric", 2, [0.0, 0.5], norm, "cuda")
        torch.library.opcheck(torch.ops.wavefuse.wavelet_pgd_step.default, args)


def test_torch_compile_fullgraph_steps():
    """Both steps, float and tensor bounds, one compiled graph: x_adv mutated as in eager mode."""

    def steps(x_adv, g1, g2, x, eps, alpha):
        wavefuse.wavelet_pgd_step(
            x_adv, g1, x, eps, 0.01, "haar", 2, "periodization", [0.0, 0.5], backend="cuda"
        )
        wavefuse.wavelet_pgd_step(
            x_adv, g2, x, eps, 0.01, "db2", 1, "symmetric", 0.25, backend="cuda"
        )  # the separable kernel: its bank is a graph constant, re-created every call
        wavefuse.pgd_step(x_adv, g2, x, eps, alpha, "L2", lo=-1.0, hi=2.0, backend="cuda")
        return x_adv

    x_adv, g, x = _inputs(shape=(2, 2, 8, 8), dtype=torch.float64)
    g2 = torch.randn_like(g)
    alpha = torch.tensor([0.1, 0.2], dtype=torch.float64, device="cuda").view(2, 1, 1, 1)
    expected = steps(x_adv.clone(), g, g2, x, 0.05, alpha)
    compiled = torch.compile(steps, fullgraph=True, backend="aot_eager")
    got = x_adv.clone()
    assert compiled(got, g, g2, x, 0.05, alpha) is got
    assert torch.equal(got, expected)
    assert not torch.equal(got, x_adv)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_steps_capture_in_a_cuda_graph(norm):
    """The attack loop's steps are capturable (no host sync, nothing allocated on the host side
    per call): pgd_step, the fused Haar step and the db2 step (separable), captured once in a CUDA
    graph and replayed, give the eager results. Filter banks are built by a warm-up call first
    (their first construction copies taps to the device)."""

    def steps(x_adv, g, x):
        wavefuse.wavelet_pgd_step(x_adv, g, x, 0.05, 0.01, "haar", 2, "symmetric", 0.5, norm,
                                  backend="cuda")  # fmt: skip
        wavefuse.wavelet_pgd_step(x_adv, g, x, 0.05, 0.01, "db2", 1, "periodization", 0.0, norm,
                                  backend="cuda")  # fmt: skip
        wavefuse.pgd_step(x_adv, g, x, 0.05, 0.01, norm, backend="cuda")

    x_adv, g, x = _inputs(shape=(2, 3, 17, 24), dtype=torch.float32)
    expected = x_adv.clone()
    steps(expected, g, x)  # eager, and the warm-up
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        steps(x_adv.clone(), g, x)  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(side)
    static = x_adv.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        steps(static, g, x)
    static.copy_(x_adv)
    graph.replay()
    torch.cuda.synchronize()
    _assert_step(static, expected, norm, "captured vs eager")
