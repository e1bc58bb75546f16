"""The Triton kernels (wavefuse.kernels.dwt) against the reference backend and PyWavelets.

They run everywhere: compiled where CUDA is present, and on CPU-only CI through Triton's
interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before the kernels are imported). The
interpreter costs about 0.2 ms per Triton operation whatever the block size, so the grid is chosen
for coverage per second rather than shrunk: every mode x every family (haar to db20) at one
odd x even size, signals shorter than the filter, then each of the kernels' paths forced on small
planes -- "dense" (tiny planes: folded operators and tl.dot), "general" (the tiled gather that large
planes take, as one tile) and "tiled" (the general path cut into many small tiles, so that interior
and boundary tiles and their preimage-copy bounds are exercised) -- plus dtypes, layouts, int64
offsets, PyWavelets, gradcheck and opcheck.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close, count_launches

import wavefuse
from wavefuse import backends, ops
from wavefuse.filters import filter_bank

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_REASON = backends.why_not("triton", "dwt2d", DEVICE.type) or backends.why_not(
    "triton", "idwt2d", DEVICE.type
)
needs_triton = pytest.mark.skipif(
    _REASON is not None, reason=f"backend='triton' is not live here: {_REASON}"
)

# The kernels' path switches and block-size rule (module constants of wavefuse.kernels.dwt).
PATHS = {
    "dense": {},  # the default for planes of at most 64 samples / coefficients per axis
    "general": {  # the large-plane path, one tile per small plane (cheap under the interpreter)
        "_DENSE_MAX_FULL": 0,
        "_BLOCK_ELEMENTS": 2**16,
        "_MAX_TILE_OUTPUTS": 2**12,
        "_MAX_TILE_W": 64,
    },
    "tiled": {  # the large-plane path in 4 x 8 tiles; dense tiles of 16 where dense applies
        "_DENSE_MAX_FULL": 0,
        "_MAX_TILE_OUTPUTS": 32,
        "_MAX_TILE_W": 8,
        "_DENSE_MAX_TILE": 16,
    },
}


def _use_path(monkeypatch, path: str) -> None:
    from wavefuse.kernels import dwt as kernels

    for name, value in PATHS[path].items():
        assert hasattr(kernels, name), name
        monkeypatch.setattr(kernels, name, value)


def _randn(*shape, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).to(dtype).to(DEVICE)


def _check_all_ops(x: torch.Tensor, wave: str, mode: str, tol: float | None = None) -> None:
    """All four ops on ``backend="triton"`` against the reference in float64 from the same (rounded)
    inputs; outputs keep the dtype and the layout the reference gives them."""
    dtype = x.dtype
    tol = TOL[dtype] if tol is None else tol
    dec, rec = filter_bank(wave, "dec", dtype, DEVICE), filter_bank(wave, "rec", dtype, DEVICE)
    dec64 = filter_bank(wave, "dec", torch.float64, DEVICE)
    rec64 = filter_bank(wave, "rec", torch.float64, DEVICE)
    size = list(x.shape[-2:])
    what = f"{wave}/{mode}/{tuple(x.shape)}/{dtype}"

    ll, hi = ops.dwt2d(x, dec, mode, "triton")
    ll_r, hi_r = ops.dwt2d(x.double(), dec64, mode, "reference")
    assert ll.dtype == hi.dtype == dtype
    ll_layout, hi_layout = ops.dwt2d(x, dec, mode, "reference")
    assert ll.stride() == ll_layout.stride() and hi.stride() == hi_layout.stride(), what
    assert_close(ll, ll_r, tol, f"dwt2d ll {what}")
    assert_close(hi, hi_r, tol, f"dwt2d hi {what}")

    gl, gh = torch.randn_like(ll_r).to(dtype), torch.randn_like(hi_r).to(dtype)
    gx = ops.dwt2d_adjoint(gl, gh, dec, mode, size, "triton")
    gx_r = ops.dwt2d_adjoint(gl.double(), gh.double(), dec64, mode, size, "reference")
    assert gx.dtype == dtype and gx.shape == x.shape
    assert_close(gx, gx_r, tol, f"dwt2d_adjoint {what}")

    y = ops.idwt2d(gl, gh, rec, mode, "triton")
    y_r = ops.idwt2d(gl.double(), gh.double(), rec64, mode, "reference")
    assert y.dtype == dtype
    assert_close(y, y_r, tol, f"idwt2d {what}")

    gy = torch.randn_like(y_r).to(dtype)
    a, b = ops.idwt2d_adjoint(gy, rec, mode, "triton")
    a_r, b_r = ops.idwt2d_adjoint(gy.double(), rec64, mode, "reference")
    assert_close(a, a_r, tol, f"idwt2d_adjoint ll {what}")
    assert_close(b, b_r, tol, f"idwt2d_adjoint hi {what}")


# ---- every mode x every family ---------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "db4", "sym5", "coif3", "db20"])
def test_every_mode_and_wavelet(wave, mode):
    """13 x 8 (odd x even; shorter than coif3's and db20's filters along both axes)."""
    _check_all_ops(_randn(1, 2, 13, 8), wave, mode)


@needs_triton
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave, size", [("db4", (3, 5)), ("db20", (2, 2)), ("db20", (1, 4))])
def test_signals_shorter_than_the_filter(wave, size, mode):
    """The extension wraps (and symmetric/reflect reflect) many times: the maps must repeat."""
    if mode == "reflect" and min(size) < 2:
        pytest.skip("reflect needs 2 samples per axis (as PyWavelets)")
    _check_all_ops(_randn(1, 1, *size), wave, mode)


# ---- each path of the kernels ------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave, size", [("haar", (13, 8)), ("db3", (9, 14)), ("coif3", (19, 18))])
def test_general_path(wave, size, mode, monkeypatch):
    """The path large planes take (preimage-copy gather), as one tile per plane."""
    _use_path(monkeypatch, "general")
    _check_all_ops(_randn(1, 1, *size), wave, mode)


@needs_triton
def test_general_path_with_the_longest_filter(monkeypatch):
    """db20 (40 taps: a padded tap block, 20 H taps per copy) on a plane longer than the filter.
    Mode zero: one preimage copy per axis (the mirror copies are covered above, with coif3; with
    db20 they would cost the interpreter ~10 s)."""
    _use_path(monkeypatch, "general")
    _check_all_ops(_randn(1, 1, 41, 42), "db20", "zero")


@needs_triton
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave, size", [("db2", (19, 24)), ("sym4", (11, 18))])
def test_general_path_in_many_tiles(wave, size, mode, monkeypatch):
    """4 x 8 tiles: interior tiles run one preimage copy, boundary tiles more; partial tiles."""
    _use_path(monkeypatch, "tiled")
    _check_all_ops(_randn(1, 1, *size), wave, mode)


@needs_triton
@pytest.mark.parametrize("wave, mode", [("haar", "symmetric"), ("db2", "periodization")])
def test_default_rule_on_a_plane_too_large_for_the_dense_path(wave, mode):
    """Untouched block-size rule, a 150-sample axis (the general path), odd height."""
    _check_all_ops(_randn(1, 2, 5, 150), wave, mode)


@needs_triton
def test_dense_path_in_several_tiles(monkeypatch):
    _use_path(monkeypatch, "tiled")
    monkeypatch.setattr("wavefuse.kernels.dwt._DENSE_MAX_FULL", 64)
    _check_all_ops(_randn(1, 1, 33, 31), "sym3", "symmetric")


# ---- dtypes, layouts, 64-bit offsets, empty inputs ----------------------------------------------------


@needs_triton
@pytest.mark.parametrize(
    "path, wave, mode, shape",
    [("dense", "sym4", "symmetric", (2, 2, 13, 10)), ("general", "db2", "reflect", (1, 2, 9, 6))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype, path, wave, mode, shape, monkeypatch):
    """Half types load as such, accumulate in float32 and round once at the store."""
    _use_path(monkeypatch, path)
    _check_all_ops(_randn(*shape, dtype=dtype), wave, mode)


@needs_triton
def test_float64_without_float64_dot_takes_the_general_path(monkeypatch):
    """Triton before 3.5 (torch 2.6 to 2.8) has no float64 tl.dot: float64 planes of any size
    take the general path there (every op, hf_penalty's levels included), other dtypes stay dense."""
    from wavefuse.kernels import dwt as kernels

    monkeypatch.setattr(kernels, "_DOT_FLOAT64", False)
    assert kernels.dense_fits(9, acc_float64=False) and not kernels.dense_fits(9, acc_float64=True)
    launched = []
    real = kernels._launch_dense_or

    def spy(t, dense, *args):
        launched.append((t.dtype, dense))
        return real(t, dense, *args)

    monkeypatch.setattr(kernels, "_launch_dense_or", spy)
    _check_all_ops(_randn(1, 2, 9, 8, dtype=torch.float64), "db2", "symmetric")
    assert launched and not any(dense for _, dense in launched), launched
    launched.clear()
    _check_all_ops(_randn(1, 2, 9, 8, dtype=torch.float32), "db2", "symmetric")
    assert launched and all(dense for _, dense in launched), launched

    from wavefuse.kernels import hf_penalty as hf

    assert not any(
        lv.dense for lv in hf._levels(9, 8, filter_bank("db2", "dec", torch.float64), "zero", 2)
    )
    x = _randn(2, 2, 9, 8, dtype=torch.float64)
    got = wavefuse.hf_penalty(x, "db2", 2, "zero", backend="triton")
    assert_close(got, wavefuse.hf_penalty(x, "db2", 2, "zero", backend="reference"), 1e-12, "hf")

    from wavefuse.kernels import pgd_step as steps

    fused = []
    real_step = steps._separable_step
    monkeypatch.setattr(
        steps, "_separable_step", lambda *a: fused.append(real_step(*a)) or fused[-1]
    )
    g, x_nat = _randn(2, 2, 9, 8, dtype=torch.float64), x.clone()
    ours, ref = x.clone(), x.clone()
    kw = {"eps": 0.1, "alpha": 0.05, "wave": "db2", "level": 2, "mode": "zero", "hf_scale": 0.5}
    wavefuse.wavelet_pgd_step(ours, g, x_nat, **kw, norm="L2", backend="triton")
    wavefuse.wavelet_pgd_step(ref, g, x_nat, **kw, norm="L2", backend="reference")
    assert fused == [False]
    assert_close(ours, ref, 1e-12, "wavelet_pgd_step")


def test_every_dot_names_its_out_dtype():
    """Triton 3.5 to 3.7 (torch 2.9 to 2.13) assert in tl.dot that an accumulator's dtype is
    out_dtype, which defaults to float32, so a float64 accumulator fails there: the dense merge of
    float64 planes failed on torch 2.13 / Triton 3.7.1 (2026-12-06), while CI's Triton 3.8 and the
    Triton before 3.5 (no float64 dot: float64 takes the general path) never reach it. A source
    check, since CI runs one Triton: every tl.dot in the kernels names out_dtype."""
    import ast
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "kernels").glob("*.py"))
    dots = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = getattr(node, "func", None)
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "dot"
                and isinstance(func.value, ast.Name)
                and func.value.id == "tl"
            ):
                named = {k.arg for k in node.keywords}
                dots.append((f"{path.name}:{node.lineno}", "out_dtype" in named))
    assert len(dots) >= 14, dots  # kernels/dwt.py's dense paths and pgd_step's separable kernel
    assert all(ok for _, ok in dots), [where for where, ok in dots if not ok]


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a strided view (every 2nd row, every 3rd column) of a larger tensor."""
    n, c, h, w = t.shape
    big = torch.zeros(n, c, 2 * h, 3 * w, dtype=t.dtype, device=t.device)
    big[:, :, ::2, ::3] = t
    return big[:, :, ::2, ::3]


LAYOUTS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "strided": _strided,
    "transposed": lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2),
    "sliced": lambda t: torch.nn.functional.pad(t, (1, 2, 3, 0))[:, :, 3:, 1:-2],
}


@needs_triton
@pytest.mark.parametrize("path", ["dense", "general"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_are_read_through_strides(layout, path, monkeypatch):
    """Non-contiguous inputs are read in place through their strides; outputs follow the input's
    memory format (channels_last in, channels_last out; each detail band contiguous)."""
    _use_path(monkeypatch, path)
    x = LAYOUTS[layout](_randn(2, 2, 11, 8))
    assert x.shape == (2, 2, 11, 8) and (layout == "channels_last" or not x.is_contiguous())
    _check_all_ops(x, "db2", "symmetric")
    if layout == "channels_last":
        dec = filter_bank("db2", "dec", x.dtype, DEVICE)
        ll, hi = ops.dwt2d(x, dec, "symmetric", "triton")
        assert ll.is_contiguous(memory_format=torch.channels_last)
        assert all(b.is_contiguous(memory_format=torch.channels_last) for b in hi.unbind(2))


@needs_triton
@pytest.mark.parametrize("path", ["dense", "general"])
def test_int64_offsets(path, monkeypatch):
    """Planes of 2**31 elements do not fit a test; lowering the limit takes the same code path."""
    _use_path(monkeypatch, path)
    monkeypatch.setattr("wavefuse.kernels.dwt._INT32_LIMIT", 0)
    _check_all_ops(LAYOUTS["channels_last"](_randn(1, 2, 9, 6)), "db2", "periodic")


@needs_triton
def test_empty_batch_launches_nothing(monkeypatch):
    from wavefuse.kernels import dwt

    counts = count_launches(monkeypatch, dwt, "_dwt2d_fwd_kernel", "_dwt2d_adjoint_kernel")
    x = _randn(0, 3, 8, 8)
    dec = filter_bank("db2", "dec", x.dtype, DEVICE)
    ll, hi = ops.dwt2d(x, dec, "zero", "triton")
    assert ll.shape == (0, 3, 5, 5) and hi.shape == (0, 3, 3, 5, 5)
    assert ops.dwt2d_adjoint(ll, hi, dec, "zero", [8, 8], "triton").shape == x.shape
    assert [c.launches for c in counts.values()] == [0, 0]
    ops.dwt2d(_randn(1, 3, 8, 8), dec, "zero", "triton")  # the counters do count
    assert counts["_dwt2d_fwd_kernel"].launches == 1


# ---- the public API against PyWavelets; autograd ----------------------------------------------------


@needs_triton
@pytest.mark.filterwarnings("ignore:Level value of")  # deeper than dwt_max_level, as pywt allows
@pytest.mark.parametrize(
    "wave, mode, level, size",
    [
        ("db2", "symmetric", None, (23, 18)),
        ("haar", "periodization", 3, (17, 12)),
        ("coif1", "reflect", 2, (20, 15)),
        ("sym3", "zero", 2, (16, 21)),
        ("db4", "periodic", 1, (11, 9)),
    ],
)
def test_wavedec2_waverec2_match_pywt(wave, mode, level, size):
    x = _randn(1, 2, *size)
    ours = wavefuse.wavedec2(x, wave, mode, level, backend="triton")
    theirs = pywt.wavedec2(x.cpu().numpy(), wave, mode, level)
    assert len(ours) == len(theirs)
    assert_close(ours[0], theirs[0], 1e-10, "cA")
    for j, (d, dp) in enumerate(zip(ours[1:], theirs[1:])):
        for name, a, b in zip("HVD", d, dp):
            assert_close(a, b, 1e-10, f"level {len(ours) - 1 - j} c{name}")
    rec = wavefuse.waverec2(ours, wave, mode, backend="triton")
    assert_close(rec, pywt.waverec2(theirs, wave, mode), 1e-10, "waverec2")
    if mode == "periodization" or size[0] % 2 == size[1] % 2 == 0:
        assert_close(rec[..., : size[0], : size[1]], x, 1e-10, "perfect reconstruction")


@needs_triton
@pytest.mark.filterwarnings("ignore:Level value of")
@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_gradcheck_through_the_public_api(mode):
    """float64 gradcheck of wavedec2 -> waverec2 (two levels) with every op on Triton."""
    x = _randn(1, 1, 9, 8).requires_grad_()

    def f(t):
        coeffs = wavefuse.wavedec2(t, "db2", mode, 2, backend="triton")
        flat = [coeffs[0]] + [b for d in coeffs[1:] for b in d]
        return (*flat, wavefuse.waverec2(coeffs, "db2", mode, backend="triton"))

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)


@needs_triton
def test_double_backward():
    x = _randn(1, 2, 7, 6).requires_grad_()

    def f(t):
        ll, (h, v, d) = wavefuse.dwt2(t, "sym2", "reflect", backend="triton")
        return ll, h, v, d

    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


@needs_triton
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_on_triton(requires_grad):
    mode, shape = "symmetric", (1, 2, 7, 6)
    x = _randn(*shape)
    dec = filter_bank("db2", "dec", x.dtype, DEVICE)
    rec = filter_bank("db2", "rec", x.dtype, DEVICE)
    ll, hi = ops.dwt2d(x, dec, mode, "reference")
    y = ops.idwt2d(ll, hi, rec, mode, "reference")

    def g(t):
        return t.detach().clone().requires_grad_(requires_grad)

    cases = [
        (torch.ops.wavefuse.dwt2d, (g(x), dec, mode, "triton")),
        (torch.ops.wavefuse.dwt2d_adjoint, (g(ll), g(hi), dec, mode, list(shape[-2:]), "triton")),
        (torch.ops.wavefuse.idwt2d, (g(ll), g(hi), rec, mode, "triton")),
        (torch.ops.wavefuse.idwt2d_adjoint, (g(y), rec, mode, "triton")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@needs_triton
def test_grids_over_cuda_limits_are_a_clear_error(monkeypatch):
    """CUDA launches at most 65535 blocks on a grid's 2nd and 3rd axes (row and column tiles):
    beyond that, a ValueError before any launch (under the interpreter too), at every launch of
    that kind of grid. First a real case, then the limit lowered to reach each launch cheaply."""
    from wavefuse.kernels import dwt as kernels

    wide = torch.zeros(1, 1, 2, 64 * 65536 + 64, device=DEVICE)  # <= 32 output columns a tile
    with pytest.raises(ValueError, match=r"backend='triton': the analysis .* over CUDA's limit"):
        wavefuse.dwt2(wide, "db2", "periodization", backend="triton")
    monkeypatch.setattr(kernels, "MAX_GRID_YZ", 0)  # every grid is over it
    x = torch.randn(1, 1, 24, 24, device=DEVICE, dtype=torch.float64, requires_grad=True)
    ll, hi = ops.run_dwt2d(x.detach(), filter_bank("db2", "dec", x.dtype, DEVICE), "zero", "cpu")
    rec = filter_bank("db2", "rec", x.dtype, DEVICE)
    cases = [
        ("the analysis", lambda: wavefuse.dwt2(x, "db2", "zero", backend="triton")),
        ("the synthesis", lambda: ops.run_idwt2d(ll, hi, rec, "zero", "triton")),
        ("band energy level 1", lambda: wavefuse.band_energy(x, "db2", 1, backend="triton")),
        ("the Haar analysis", lambda: wavefuse.wavedec2(x, "haar", level=2, backend="triton")),
    ]
    for what, call in cases:
        with pytest.raises(ValueError, match=f"{what} of a .* tiles per plane"):
            call()
    monkeypatch.setattr(kernels, "MAX_GRID_YZ", 65535)  # the forward may launch
    coeffs = wavefuse.wavedec2(x, "haar", level=2, backend="triton")
    monkeypatch.setattr(kernels, "MAX_GRID_YZ", 0)
    with pytest.raises(ValueError, match="the Haar adjoint of a"):
        torch.autograd.grad(coeffs[0].sum(), x)


def _flat(coeffs) -> list:
    """wavedec2's [cA, (cH, cV, cD), ...] as one list of tensors."""
    return [coeffs[0]] + [t for bands in coeffs[1:] for t in bands]


class _Refuses:
    """A Triton kernel whose launches with ``when(constexprs)`` true raise OutOfResources, as
    Triton does where a compiled kernel needs more shared memory than the device has."""

    def __init__(self, kernel, when):
        self.kernel, self.when, self.refused = kernel, when, 0

    def __getitem__(self, grid):
        from triton.runtime.errors import OutOfResources

        launch = self.kernel[grid]

        def call(*args, **kwargs):
            if self.when(kwargs):
                self.refused += 1
                raise OutOfResources(196608, 101376, "shared memory")
            return launch(*args, **kwargs)

        return call


@needs_triton
@pytest.mark.parametrize("float64_dot", ["as_installed", "off"])
def test_kernels_refused_for_shared_memory_fall_back(monkeypatch, float64_dot):
    """The dense float64 paths need 128-192 KiB of shared memory (more than GPUs before Hopper
    have): where Triton refuses one, the same call takes a path that needs less, same values.
    Before Triton 3.5 ("off": no float64 tl.dot) float64 never takes the dense paths, so the
    refusals are exercised in float32 there."""
    from wavefuse.kernels import dwt as kernels
    from wavefuse.kernels import haar as haar_kernels
    from wavefuse.kernels import pgd_step as step_kernels

    if float64_dot == "off":
        monkeypatch.setattr(kernels, "_DOT_FLOAT64", False)
    dtype = torch.float64 if kernels._DOT_FLOAT64 else torch.float32
    tol = TOL[dtype]
    x = torch.randn(2, 3, 13, 16, device=DEVICE, dtype=dtype, requires_grad=True)
    g = torch.randn(2, 3, 13, 16, device=DEVICE, dtype=dtype)
    dense_only = lambda k: k["DENSE"]
    refusing = {
        (kernels, "_dwt2d_fwd_kernel"): dense_only,
        (kernels, "_dwt2d_adjoint_kernel"): dense_only,
        (haar_kernels, "_haar_fwd_kernel"): lambda k: True,
        (step_kernels, "_separable_kernel"): lambda k: True,
        (step_kernels, "_chain_kernel"): dense_only,
    }
    for (module, name), when in refusing.items():
        monkeypatch.setattr(module, name, _Refuses(getattr(module, name), when))

    coeffs = wavefuse.wavedec2(x, "db2", "symmetric", level=2, backend="triton")
    expected = wavefuse.wavedec2(x, "db2", "symmetric", level=2, backend="reference")
    for got, want in zip(_flat(coeffs), _flat(expected)):
        assert_close(got, want, tol)
    (grad,) = torch.autograd.grad(sum(t.sum() for t in _flat(coeffs)), x)
    (want,) = torch.autograd.grad(sum(t.sum() for t in _flat(expected)), x)
    assert_close(grad, want, tol)
    haar = wavefuse.wavedec2(x.detach(), "haar", "zero", level=2, backend="triton")
    for got, want in zip(_flat(haar), _flat(wavefuse.wavedec2(x.detach(), "haar", "zero", 2))):
        assert_close(got, want, tol)
    # the chain in one launch, in pairs of stages (no dense path to refuse), then by levels
    for depth, pairs in ((step_kernels._CASCADE_MAX_DEPTH, True), (0, True), (0, False)):
        monkeypatch.setattr(step_kernels, "_CASCADE_MAX_DEPTH", depth)
        monkeypatch.setattr(step_kernels, "_PAIR_ROUTE", pairs)
        stepped = [x.detach().clone() for _ in range(2)]
        for t, backend in zip(stepped, ("triton", "reference")):
            wavefuse.wavelet_pgd_step(t, g, x.detach(), 0.1, 0.01, "db2", 2, "zero", 0.5, "L2",
                                      backend=backend)  # fmt: skip
        assert_close(stepped[0], stepped[1], tol)
    for module, name in refusing:
        assert getattr(module, name).refused > 0, name


# ---- without the interpreter ------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_cpu_tensors_without_the_interpreter_say_how_to_enable_it():
    """In a fresh process without TRITON_INTERPRET, backend="triton" on CPU tensors raises the
    error of backends.py, which names the fix."""
    script = (
        "import torch, wavefuse\n"
        "from wavefuse.backends import BackendUnavailableError\n"
        "try:\n"
        "    wavefuse.wavedec2(torch.randn(1, 1, 8, 8), 'haar', level=1, backend='triton')\n"
        "except BackendUnavailableError as e:\n"
        "    print('ERROR:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "WAVEFUSE_BACKEND")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "ERROR: backend='triton' cannot run dwt2d on cpu tensors" in out
    assert "TRITON_INTERPRET=1" in out


@needs_triton
def test_the_interpreter_shim_changes_no_bit(monkeypatch):
    """tests/conftest.py makes Triton's interpreter patch triton.language once per launch rather
    than at every @triton.jit helper call, and memoises the frontend's type objects (test speed
    only). It must be invisible: every kind of kernel -- the transforms' dense and tiled paths, the
    Haar cascade, band energy, the PGD step and the fused wavelet step -- gives the same bits with
    and without both, and with them each launch patches the language at most twice (tl, then
    tl.core), not at every helper call, from the builtins listed once (no launch lists them
    again), and equal block types are one object."""
    import conftest

    if DEVICE.type != "cpu":
        pytest.skip("the interpreter runs on CPU tensors only")
    if not conftest.TRITON_PATCH_ONCE:
        pytest.skip("this Triton's interpreter patches otherwise: conftest applied no shim")
    from triton.runtime import interpreter
    from wavefuse.kernels import dwt as kernels

    shim = interpreter._patch_lang
    original = shim._wavefuse_original
    x = torch.randn(2, 1, 13, 10, dtype=torch.float32, generator=torch.Generator().manual_seed(3))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))

    def run():
        out = []
        out += _flat(wavefuse.wavedec2(x, "db2", "symmetric", level=2, backend="triton"))
        with monkeypatch.context() as mp:  # the tiled general path
            for name, value in PATHS["tiled"].items():
                mp.setattr(kernels, name, value)
            out += list(wavefuse.dwt2(x, "sym3", "reflect", backend="triton")[1])
        out += _flat(wavefuse.wavedec2(x, "haar", "zero", level=2, backend="triton"))
        out.append(wavefuse.band_energy(x, "db2", 2, "periodic", backend="triton"))
        for norm in ("Linf", "L2"):
            adv = x.clone()
            wavefuse.pgd_step(adv, g, x, 0.1, 0.03, norm=norm, lo=-9.0, hi=9.0, backend="triton")
            out.append(adv)
            adv = x.clone()
            wavefuse.wavelet_pgd_step(
                adv, g, x, 0.1, 0.03, "db2", 1, "symmetric", 0.5, norm=norm, lo=-9.0, hi=9.0,
                backend="triton",
            )  # fmt: skip
            out.append(adv)
        return out

    calls = {"patch": 0, "launch": 0}

    def counted(fn):
        calls["patch"] += 1
        return original(fn)

    launch = interpreter.GridExecutor.__call__

    def counted_launch(self, *args, **kwargs):
        calls["launch"] += 1
        return launch(self, *args, **kwargs)

    monkeypatch.setattr(interpreter, "_patch_lang", original)
    with monkeypatch.context() as mp:  # conftest's frontend memos off too
        for owner, name, before, _ in conftest.TRITON_FRONTEND_PATCHES:
            mp.setattr(owner, name, before)
        without = run()
    monkeypatch.setattr(shim, "_wavefuse_original", counted)
    monkeypatch.setattr(interpreter, "_patch_lang", shim)
    monkeypatch.setattr(interpreter.GridExecutor, "__call__", counted_launch)
    sweeps = {"fresh": 0}
    memo = interpreter._patch_builtin
    if hasattr(memo, "fresh_sweep"):  # conftest's builtin lists: count its fallback sweeps
        sweep = memo.fresh_sweep

        def counted_sweep(*args):
            sweeps["fresh"] += 1
            return sweep(*args)

        monkeypatch.setattr(memo, "fresh_sweep", counted_sweep)
    with_shim = run()
    from triton.language import core

    if any(owner is core.block_type for owner, *_ in conftest.TRITON_FRONTEND_PATCHES):
        assert core.block_type(core.float32, [4]) is core.block_type(core.float32, [4])
    assert sweeps["fresh"] == 0, sweeps  # every launch used the builtins listed at import
    # Each launch patches tl, and tl.core at most once more (tl.sum, tl.zeros: see conftest).
    assert calls["launch"] >= 10 and calls["patch"] <= 2 * calls["launch"], calls
    assert len(with_shim) == len(without)
    for i, (a, b) in enumerate(zip(with_shim, without)):
        assert torch.equal(a.view(-1).view(torch.int32), b.view(-1).view(torch.int32)), i
