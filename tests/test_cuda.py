"""The CUDA transform kernels (csrc/cuda/dwt.cu) on CUDA tensors, against the reference.

Marked ``gpu``: every test skips with a reason where no CUDA device is visible or this build of
wavefuse._C has no CUDA kernel (``backends.why_not``). Nothing touches the GPU at collection time.
The other transform tests (test_dwt.py, test_ops.py) parametrize over CPU backends only, so the
CUDA coverage lives here: every op, mode and dtype, the layouts, autograd and opcheck. Where no
GPU is lent, tests/test_cuda_host_emulation.py runs the same kernel bodies on the CPU.
"""

from __future__ import annotations

import warnings

import pytest
import pywt
import torch
from conftest import ALL_MODES, TOL, assert_close, skip_unless_cuda

import wavefuse
from wavefuse import ops, reference
from wavefuse.filters import filter_bank
from wavefuse.reference import analysis_length, synthesis_length

WAVELETS = ["haar", "db2", "db4", "sym5", "coif3", "db20"]
# 1 x 1, odd sizes shorter than most filters, a plane of several 16 x 16 tiles, odd x even
SIZES = [(1, 1), (3, 5), (6, 2), (17, 24), (36, 40), (33, 70)]
OPS = ("dwt2d", "dwt2d_adjoint", "idwt2d", "idwt2d_adjoint")


pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda_live():
    skip_unless_cuda(OPS)


def _tensor(shape, layout: str, dtype=torch.float64) -> torch.Tensor:
    t = torch.randn(*shape, dtype=torch.float64, device="cuda")
    if layout == "channels_last":
        if len(shape) == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        else:  # (N, C, 3, h, w): band-major, C innermost, as the kernels allocate it
            n, c, b, h, w = shape
            t = torch.randn(b, n, h, w, c, dtype=torch.float64, device="cuda")
            t = t.permute(1, 4, 0, 2, 3)
    elif layout == "strided":
        t = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64, device="cuda")
        t = t[..., 1::2]
    return t.to(dtype)


def _all_ops(x, wave, mode, dtype, layout, tol):
    """The four ops on the CUDA backend against the float64 reference of the same (rounded) inputs,
    on the same device; outputs keep the dtype and the reference's memory format."""
    dec, rec = filter_bank(wave, "dec", dtype, "cuda"), filter_bank(wave, "rec", dtype, "cuda")
    dec64 = filter_bank(wave, "dec", torch.float64, "cuda")
    rec64 = filter_bank(wave, "rec", torch.float64, "cuda")
    h, w = x.shape[-2:]
    taps = dec.shape[-1]
    what = f"{wave} {mode} {tuple(x.shape)} {dtype} {layout}"

    ll, hi = ops.dwt2d(x, dec, mode, "cuda")
    ll_r, hi_r = ops.dwt2d(x.double(), dec64, mode, "reference")
    assert ll.dtype == hi.dtype == dtype and ll.device == x.device
    assert ll.stride() == ops.dwt2d(x, dec, mode, "reference")[0].stride(), what
    assert_close(ll, ll_r, tol, f"{what} dwt2d ll")
    assert_close(hi, hi_r, tol, f"{what} dwt2d hi")

    kh, kw = ll.shape[-2:]
    gl = _tensor((*x.shape[:2], kh, kw), layout, dtype)
    gh = _tensor((*x.shape[:2], 3, kh, kw), layout, dtype)
    expected = ops.dwt2d_adjoint(gl.double(), gh.double(), dec64, mode, [h, w], "reference")
    got = ops.dwt2d_adjoint(gl, gh, dec, mode, [h, w], "cuda")
    assert got.dtype == dtype
    assert_close(got, expected, tol, f"{what} dwt2d_adjoint")

    y = ops.idwt2d(gl, gh, rec, mode, "cuda")
    assert y.dtype == dtype
    assert_close(y, ops.idwt2d(gl.double(), gh.double(), rec64, mode, "reference"), tol, what)

    sh, sw = synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode)
    gy = _tensor((*x.shape[:2], sh, sw), layout, dtype)
    a, b = ops.idwt2d_adjoint(gy, rec, mode, "cuda")
    a_r, b_r = ops.idwt2d_adjoint(gy.double(), rec64, mode, "reference")
    assert_close(a, a_r, tol, f"{what} idwt2d_adjoint ll")
    assert_close(b, b_r, tol, f"{what} idwt2d_adjoint hi")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", WAVELETS)
def test_every_op_matches_reference_float64(wave, mode, layout):
    for h, w in SIZES:
        _all_ops(_tensor((2, 3, h, w), layout), wave, mode, torch.float64, layout, 1e-12)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_op_matches_reference_lower_precision(mode, dtype, layout):
    """float32 accumulation for every dtype but float64: a few ulps of the output format."""
    for wave in ["db2", "sym5", "db20"]:
        for h, w in [(3, 5), (33, 70)]:
            x = _tensor((2, 3, h, w), layout, dtype)
            _all_ops(x, wave, mode, dtype, layout, TOL[dtype])


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db3", "db20"])
def test_wavedec2_waverec2_match_pywt(wave, mode):
    x = torch.randn(2, 3, 45, 38, dtype=torch.float64)
    with warnings.catch_warnings():  # db20: "level 2 is too high" (boundary effects)
        warnings.simplefilter("ignore")
        expected = pywt.wavedec2(x.numpy(), wave, mode, 2)
        ours = wavefuse.wavedec2(x.cuda(), wave, mode, 2, backend="cuda")
        rec = wavefuse.waverec2(ours, wave, mode, backend="cuda")
    assert_close(ours[0], expected[0], TOL[torch.float64], "cA")
    for got, exp in zip(ours[1:], expected[1:]):
        for g, e in zip(got, exp):
            assert_close(g, e, TOL[torch.float64], f"{wave} {mode} detail")
    expected_rec = pywt.waverec2(expected, wave, mode)
    assert_close(rec, expected_rec, TOL[torch.float64], "waverec2")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2", "sym3"])
def test_gradcheck_through_dwt2_and_idwt2(wave, mode):
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, device="cuda", requires_grad=True)

    def analysis(t):
        ll, (ch, cv, cd) = wavefuse.dwt2(t, wave, mode, backend="cuda")
        return ll, ch, cv, cd

    assert torch.autograd.gradcheck(analysis, (x,))
    assert torch.autograd.gradgradcheck(analysis, (x,), fast_mode=True)
    coeffs = [t.detach().requires_grad_() for t in analysis(x.detach())]

    def synthesis(a, ch, cv, cd):
        return wavefuse.idwt2((a, (ch, cv, cd)), wave, mode, backend="cuda")

    assert torch.autograd.gradcheck(synthesis, coeffs)
    assert torch.autograd.gradgradcheck(synthesis, coeffs, fast_mode=True)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_opcheck_every_op(mode, channels_last, requires_grad):
    x = torch.randn(2, 3, 9, 6, dtype=torch.float64, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dec = filter_bank("db2", "dec", x.dtype, "cuda")
    rec = filter_bank("db2", "rec", x.dtype, "cuda")
    ll, hi = ops.dwt2d(x, dec, mode, "cuda")
    y = ops.idwt2d(ll, hi, rec, mode, "cuda")

    def g(t):
        return t.detach().clone().requires_grad_(requires_grad)

    cases = [
        (ops.dwt2d, (g(x), dec, mode, "cuda")),
        (ops.dwt2d_adjoint, (g(ll), g(hi), dec, mode, [9, 6], "cuda")),
        (ops.idwt2d, (g(ll), g(hi), rec, mode, "cuda")),
        (ops.idwt2d_adjoint, (g(y), rec, mode, "cuda")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_outputs_keep_the_memory_format_and_are_deterministic():
    x = _tensor((2, 5, 19, 24), "channels_last", torch.float32)
    dec = filter_bank("db4", "dec", x.dtype, "cuda")
    ll, hi = ops.dwt2d(x, dec, "symmetric", "cuda")
    assert ll.is_contiguous(memory_format=torch.channels_last)
    assert hi[:, :, 1].is_contiguous(memory_format=torch.channels_last)
    g = ops.dwt2d_adjoint(ll, hi, dec, "symmetric", [19, 24], "cuda")
    assert g.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):  # no atomics (one fixed order of sums): bitwise identical
        assert torch.equal(ops.dwt2d_adjoint(ll, hi, dec, "symmetric", [19, 24], "cuda"), g)
        assert torch.equal(ops.dwt2d(x, dec, "symmetric", "cuda")[1], hi)


def test_runs_on_the_current_stream():
    x = _tensor((4, 3, 64, 64), "contiguous", torch.float32)
    dec = filter_bank("db4", "dec", x.dtype, "cuda")
    expected = ops.dwt2d(x, dec, "periodic", "reference")[0]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        ll, _ = ops.dwt2d(x, dec, "periodic", "cuda")
    stream.synchronize()
    assert_close(ll, expected, TOL[torch.float32], "non-default stream")


@pytest.mark.skipif(
    "not torch.cuda.is_available() or torch.cuda.device_count() < 2", reason="needs two GPUs"
)
def test_second_device():
    x = torch.randn(1, 2, 11, 10, dtype=torch.float64, device="cuda:1")
    dec = filter_bank("sym5", "dec", x.dtype, "cuda:1")
    ll, _ = ops.dwt2d(x, dec, "reflect", "cuda")
    assert ll.device == x.device
    assert_close(ll, reference.dwt2d_ref(x, dec, "reflect")[0], 1e-12, "cuda:1")


def test_bad_inputs_raise_clear_errors():
    ll = torch.randn(1, 1, 4, 4, device="cuda")
    rec = filter_bank("db2", "rec", ll.dtype, "cuda")
    with pytest.raises(RuntimeError, match="hi must be"):
        torch.ops.wavefuse._idwt2d_kernel(
            ll, torch.randn(1, 1, 2, 4, 4, device="cuda"), rec, "zero"
        )
    with pytest.raises(RuntimeError, match="share dtype and device"):
        torch.ops.wavefuse._idwt2d_kernel(ll, torch.randn(1, 1, 3, 4, 4, device="cuda").double(),
                                          rec, "zero")  # fmt: skip
    with pytest.raises(RuntimeError, match="mode must be one of"):
        torch.ops.wavefuse._dwt2d_kernel(ll, rec, "wrap")
    with pytest.raises(RuntimeError, match="filters must be"):
        torch.ops.wavefuse._dwt2d_kernel(ll, rec[:, :3], "zero")
    with pytest.raises(RuntimeError, match="does not match input_size"):
        torch.ops.wavefuse._dwt2d_adjoint_kernel(
            ll, torch.randn(1, 1, 3, 4, 4, device="cuda"), rec, "zero", [30, 30]
        )
    with pytest.raises(RuntimeError, match="not a synthesis output size"):
        torch.ops.wavefuse._idwt2d_adjoint_kernel(
            torch.randn(1, 1, 7, 8, device="cuda"), rec, "zero"
        )


def test_shapes_follow_pywt_lengths():
    for mode in ALL_MODES:
        for taps_wave in ["haar", "db20"]:
            x = torch.randn(1, 1, 5, 8, device="cuda")
            dec = filter_bank(taps_wave, "dec", x.dtype, "cuda")
            ll, _ = ops.dwt2d(x, dec, mode, "cuda")
            taps = dec.shape[-1]
            assert ll.shape[-2:] == (analysis_length(5, taps, mode), analysis_length(8, taps, mode))


# ---- the one-pass multilevel Haar kernels (csrc/cuda/haar.cu) ------------------------------------

HAAR_SIZES = [(1, 1), (5, 7), (3, 6), (37, 70), (64, 64), (130, 97)]


def _haar_ops():
    from wavefuse.ops import haar

    if not torch._C._dispatch_has_kernel_for_dispatch_key(
        "wavefuse::_haar_wavedec2_kernel", "CUDA"
    ):
        pytest.skip("this build of wavefuse._C has no one-pass CUDA Haar kernels")
    return haar


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_one_pass_matches_reference(mode, layout):
    """All levels 1-6 (one pass) and 7 (per level), every size, float64 at 1e-12, and the
    adjoint against the reference adjoint."""
    haar = _haar_ops()
    for h, w in HAAR_SIZES:
        for level in (1, 2, 3, 6, 7):
            what = f"{mode} {layout} J={level} {h}x{w}"
            x = _tensor((2, 3, h, w), layout)
            got = haar.haar_wavedec2(x, level, mode, "cuda")
            expected = haar.haar_wavedec2(x, level, mode, "reference")
            for k, (g, e) in enumerate(zip(got, expected, strict=True)):
                assert g.stride() == e.stride(), f"{what} output {k} layout"
                assert_close(g, e, 1e-12, f"{what} output {k}")
            gl = _tensor(tuple(got[0].shape), layout)
            ghs = [_tensor(tuple(t.shape), layout) for t in got[1:]]
            gx = haar.haar_wavedec2_adjoint(gl, ghs, [h, w], mode, "cuda")
            ref = haar.haar_wavedec2_adjoint(gl, ghs, [h, w], mode, "reference")
            assert gx.stride() == ref.stride(), f"{what} adjoint layout"
            assert_close(gx, ref, 1e-12, f"{what} adjoint")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_one_pass_lower_precision(mode, dtype):
    haar = _haar_ops()
    x = _tensor((2, 3, 45, 38), "channels_last", dtype)
    got = haar.haar_wavedec2(x, 3, mode, "cuda")
    expected = haar.haar_wavedec2(x.double(), 3, mode, "reference")
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        assert_close(g, e, TOL[dtype], f"{mode} {dtype}")
    ghs = [t.clone() for t in got[1:]]
    gx = haar.haar_wavedec2_adjoint(got[0], ghs, [45, 38], mode, "cuda")
    ref = haar.haar_wavedec2_adjoint(got[0].double(), [t.double() for t in ghs], [45, 38], mode,
                                     "reference")  # fmt: skip
    assert gx.dtype == dtype
    assert_close(gx, ref, TOL[dtype], f"{mode} {dtype} adjoint")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_haar_one_pass_matches_pywt_and_gradcheck(mode):
    _haar_ops()
    x = torch.randn(2, 3, 45, 38, dtype=torch.float64)
    expected = pywt.wavedec2(x.numpy(), "haar", mode, 3)
    ours = wavefuse.wavedec2(x.cuda(), "haar", mode, 3, backend="cuda")
    assert_close(ours[0], expected[0], TOL[torch.float64], "cA")
    for got, exp in zip(ours[1:], expected[1:], strict=True):
        for g, e in zip(got, exp, strict=True):
            assert_close(g, e, TOL[torch.float64], f"{mode} detail")
    t = torch.randn(1, 2, 11, 6, dtype=torch.float64, device="cuda", requires_grad=True)

    def analysis(v):
        ll, *details = wavefuse.wavedec2(v, "haar", mode, 2, backend="cuda")
        return (ll, *(b for d in details for b in d))

    assert torch.autograd.gradcheck(analysis, (t,))
    assert torch.autograd.gradgradcheck(analysis, (t,), fast_mode=True)


def test_haar_one_pass_is_one_launch_each_way():
    """wavedec2(haar, level 3, backend="cuda") and its backward: one analysis and one adjoint
    kernel, none of the one-level kernels (torch.profiler's CUDA activity)."""
    _haar_ops()
    x = torch.randn(2, 3, 67, 90, device="cuda", requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        coeffs = wavefuse.wavedec2(x, "haar", "symmetric", 3, backend="cuda")
        loss = coeffs[0].sum() + sum(b.square().sum() for d in coeffs[1:] for b in d)
        loss.backward()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert sum("haar_fwd_kernel" in n for n in names) == 1, names
    assert sum("haar_adj_kernel" in n for n in names) == 1, names
    assert not any("split_kernel" in n or "merge_kernel" in n for n in names), names


def test_haar_one_pass_is_deterministic_and_checks_inputs():
    haar = _haar_ops()
    x = _tensor((2, 5, 33, 18), "channels_last", torch.float32)
    ll, *his = haar.haar_wavedec2(x, 3, "reflect", "cuda")
    g = haar.haar_wavedec2_adjoint(ll, his, [33, 18], "reflect", "cuda")
    assert g.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):  # gather, no atomics: bitwise identical
        assert torch.equal(haar.haar_wavedec2_adjoint(ll, his, [33, 18], "reflect", "cuda"), g)
    with pytest.raises(RuntimeError, match="1 <= level <= 6"):
        torch.ops.wavefuse._haar_wavedec2_kernel(x, 7, "zero")
    with pytest.raises(RuntimeError, match="mode must be one of"):
        torch.ops.wavefuse._haar_wavedec2_kernel(x, 2, "wrap")
    with pytest.raises(RuntimeError, match="does not match input_size"):
        torch.ops.wavefuse._haar_wavedec2_adjoint_kernel(ll, his, [70, 18], "reflect")
    opcheck_args = (x.double(), 3, "periodic", "cuda")
    torch.library.opcheck(haar.haar_wavedec2, opcheck_args)
