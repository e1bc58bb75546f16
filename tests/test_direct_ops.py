"""Plain eager calls of the functional ops skip the custom ops' Python layers
(``wavefuse.ops._common.DirectOp``): the results, gradients and double backward are the ops',
and anything that intercepts ops (dispatch modes, torch.func, torch.compile) still sees the op."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import cpu_backends
from torch.autograd import forward_ad as fwAD
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import wavefuse
from wavefuse.filters import filter_bank
from wavefuse.ops import _common, dwt, haar, hf_penalty, pool
from wavefuse.reference import analysis_length

BACKENDS = cpu_backends()

#: every DirectOp and its op
DIRECT = {
    "dwt2d": dwt.run_dwt2d,
    "dwt2d_adjoint": dwt.run_dwt2d_adjoint,
    "idwt2d": dwt.run_idwt2d,
    "idwt2d_adjoint": dwt.run_idwt2d_adjoint,
    "haar_wavedec2": haar.run_haar_wavedec2,
    "haar_wavedec2_adjoint": haar.run_haar_wavedec2_adjoint,
    "band_energy": hf_penalty.run_band_energy,
    "band_energy_backward": hf_penalty.run_band_energy_backward,
    "hf_penalty": hf_penalty.run_hf_penalty,
    "wavelet_pool2d": pool.run_wavelet_pool2d,
    "wavelet_pool2d_adjoint": pool.run_wavelet_pool2d_adjoint,
    "wavelet_pool2d_kernel_grad": pool.run_wavelet_pool2d_kernel_grad,
}


def _args(name: str, backend: str, requires_grad: bool = False) -> tuple:
    """Arguments of op ``name`` on small float64 tensors (odd sizes, a boundary mode)."""
    g = torch.Generator().manual_seed(7)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)

    dec = filter_bank("db2", "dec", torch.float64)
    rec = filter_bank("db2", "rec", torch.float64)
    kernel = pool.pool_kernel("db2", "all", torch.float64, "cpu")
    n, c, h, w = 2, 3, 9, 7
    kh, kw = analysis_length(h, 4, "symmetric"), analysis_length(w, 4, "symmetric")
    return {
        "dwt2d": lambda: (t(n, c, h, w), dec, "symmetric", backend),
        "dwt2d_adjoint": lambda: (t(n, c, kh, kw), t(n, c, 3, kh, kw), dec, "symmetric", [h, w], backend),
        "idwt2d": lambda: (t(n, c, kh, kw), t(n, c, 3, kh, kw), rec, "symmetric", backend),
        "idwt2d_adjoint": lambda: (t(n, c, 8, 6), rec, "symmetric", backend),
        "haar_wavedec2": lambda: (t(n, c, h, w), 2, "symmetric", backend),
        "haar_wavedec2_adjoint": lambda: (
            t(n, c, 3, 2), [t(n, c, 3, 3, 2), t(n, c, 3, 5, 4)], [h, w], "symmetric", backend
        ),
        "band_energy": lambda: (t(n, c, h, w), dec, "symmetric", 2, 2, backend),
        "band_energy_backward": lambda: (t(n, 2, 3), t(n, c, h, w), dec, "symmetric", 2, 2, backend),
        "hf_penalty": lambda: (t(n, c, h, w), dec, "symmetric", 2, 2, None, "sum", backend),
        "wavelet_pool2d": lambda: (t(n, c, h, w), kernel, "symmetric", backend),
        "wavelet_pool2d_adjoint": lambda: (t(n, c, kh, kw), kernel, "symmetric", [h, w], backend),
        "wavelet_pool2d_kernel_grad": lambda: (t(n, c, kh, kw), t(n, c, h, w), 4, "symmetric", backend),
    }[name]()  # fmt: skip


def _flat(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _inputs(args) -> list[torch.Tensor]:
    found, _ = _common._tensors(args)
    return [a for a in found if a.requires_grad]


def _supported(name: str, backend: str) -> None:
    if name.startswith(("haar_wavedec2", "wavelet_pool2d")):
        from wavefuse import backends

        op = "dwt2d" if name.startswith("haar") else "wavelet_pool2d"
        reason = backends.why_not(backend, op, "cpu")
        if reason is not None:
            pytest.skip(reason)


class _Refuse:
    """Stands in for an op that must not be called."""

    def __call__(self, *args):
        raise AssertionError("the custom op was called on the direct path")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(DIRECT))
def test_direct_call_is_the_op(monkeypatch, name, backend):
    """Without and with gradients: the direct call returns what the op returns, its gradients
    are the op's, and (no list input needing a gradient) it never calls the op."""
    _supported(name, backend)
    direct = DIRECT[name]
    args = _args(name, backend)
    expected = _flat(direct.op(*args))
    with monkeypatch.context() as m:
        m.setattr(direct, "op", _Refuse())
        got = _flat(direct(*args))  # no gradient needed: the implementation itself
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), name

    args = _args(name, backend, requires_grad=True)
    inputs = _inputs(args)
    expected = _flat(direct.op(*args))
    with monkeypatch.context() as m:
        if not _common._tensors(args)[1]:  # a list input: autograd.Function cannot track it
            m.setattr(direct, "op", _Refuse())
        got = _flat(direct(*args))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), name
    assert all(t.requires_grad for t in got), name
    weights = [torch.randn_like(t) for t in expected]
    grads = torch.autograd.grad(got, inputs, weights, allow_unused=True)
    grads_op = torch.autograd.grad(expected, inputs, weights, allow_unused=True)
    for a, b in zip(grads, grads_op, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_and_gradcheck_through_the_direct_path(backend):
    """The functional API runs the direct path: gradcheck and gradgradcheck still hold."""
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)

    def penalty(x):
        return wavefuse.hf_penalty(x, "db2", 2, "symmetric", reduction="sum", backend=backend)

    def transform(x):
        ll, (h, v, d) = wavefuse.dwt2(x, "db2", "symmetric", backend=backend)
        return ll, h, v, d

    assert torch.autograd.gradcheck(penalty, (x,))
    assert torch.autograd.gradgradcheck(penalty, (x,))
    assert torch.autograd.gradcheck(transform, (x,))
    assert torch.autograd.gradgradcheck(transform, (x,))


def test_modes_and_torch_func_still_see_the_op():
    """A TorchDispatchMode records wavefuse's ops (so FakeTensorMode and functionalization get
    them), and inside torch.func transforms the direct path is off."""
    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x = torch.randn(2, 3, 8, 8)
    with Record():
        wavefuse.dwt2(x, "db2", "symmetric")
        wavefuse.hf_penalty(x, "haar", 1)
        wavefuse.wavelet_pool2d(x, "haar")
    for op in ("wavefuse.dwt2d", "wavefuse.hf_penalty", "wavefuse.wavelet_pool2d"):
        assert any(op in f for f in seen), (op, seen)

    assert _common.eager_direct(x)
    inside, calls = [], []
    direct = hf_penalty.run_hf_penalty
    op = direct.op

    def counted(*args):
        calls.append(1)
        return op(*args)

    def f(x):
        inside.append(_common.eager_direct(x))
        return wavefuse.hf_penalty(x, "haar", 1, reduction="sum")

    direct.op = counted
    try:
        try:  # torch.func with wavefuse's custom ops is whatever torch makes of the op itself
            torch.func.grad(f)(x)
        except RuntimeError:
            pass
    finally:
        direct.op = op
    assert inside == [False] and calls == [1]


def test_torch_function_modes_and_subclasses_still_see_the_op():
    """A TorchFunctionMode and a tensor subclass's __torch_function__ see wavefuse's ops (not the
    torch calls inside their implementations): the direct path is off for both, and a subclass
    comes back as itself."""
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    class Recorded(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return super().__torch_function__(func, types, args, kwargs)

    x = torch.randn(2, 3, 8, 8)
    with Record():
        wavefuse.dwt2(x, "db2", "symmetric")
        wavefuse.wavelet_pool2d(x, "haar")
    for op in ("wavefuse.dwt2d.", "wavefuse.wavelet_pool2d."):
        assert any(op in f for f in seen), (op, seen)
    seen.clear()
    ll, _ = wavefuse.dwt2(x.as_subclass(Recorded), "db2", "symmetric")
    assert type(ll) is Recorded
    assert any("wavefuse.dwt2d." in f for f in seen), seen


def test_vmap_equals_the_looped_calls():
    """docs/edge_policies.md: torch.func.vmap over wavefuse's ops works (torch runs the custom op
    once per batch entry) and equals the calls in a loop."""
    x = torch.randn(3, 2, 4, 9, 10, dtype=torch.float64)
    for f in (
        lambda z: wavefuse.dwt2(z, "db2", "symmetric")[0],
        lambda z: wavefuse.hf_penalty(z, "db2", 1, reduction="none"),
    ):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)
            batched = torch.func.vmap(f)(x)
        assert torch.equal(batched, torch.stack([f(z) for z in x]))


def test_compiled_calls_go_through_the_op():
    """torch.compile(fullgraph=True) traces the functional API into the custom ops."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)

    def f(x):
        ll, _ = wavefuse.dwt2(x, "db2", "symmetric")
        return ll.sum() + wavefuse.hf_penalty(x, "db2", 2, "symmetric")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    expected = f(x)
    assert torch.allclose(got, expected)
    assert torch.allclose(
        torch.autograd.grad(got, x)[0], torch.autograd.grad(expected, x)[0], atol=1e-6
    )


# ---- torch.compile: what becomes a graph input; forward-mode AD ------------------------------------


def _graphs_for(fn, calls) -> int:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    for args in calls:
        fn(*args)
    return counters["stats"]["unique_graphs"]


def test_compiled_steps_take_changing_float_bounds_as_inputs():
    """An eps schedule under fullgraph=True: two graphs (the first value, then a dynamic one),
    never one per value (a float argument of the op was a constant: the 9th value failed), and
    the eager results."""
    x_nat = torch.rand(2, 3, 8, 8)
    g = torch.randn_like(x_nat)

    def step(x_adv, eps):
        wavefuse.pgd_step(x_adv, g, x_nat, eps, 2 / 255)
        wavefuse.wavelet_pgd_step(x_adv, g, x_nat, eps, 2 / 255, "db2", 1, "zero", 0.5, "L2")
        return x_adv

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    epss = [8 / 255 * (1 + i / 100) for i in range(12)]
    outs = []
    graphs = _graphs_for(lambda e: outs.append(compiled(x_nat.clone(), e)), [(e,) for e in epss])
    assert graphs <= 2
    for e, got in zip(epss, outs):
        torch.testing.assert_close(got, step(x_nat.clone(), e), rtol=0, atol=1e-6)


def test_dynamic_shapes_stay_symbolic_with_tensor_bounds_and_bands():
    """dynamic=True: per-sample tensor eps of several batch sizes, learned pooling weights of
    several channel counts: one graph each (error messages no longer format the sizes)."""

    def step(x_adv, g, x_nat, eps):
        wavefuse.pgd_step(x_adv, g, x_nat, eps, 0.01)
        return x_adv

    compiled = torch.compile(step, dynamic=True, fullgraph=True, backend="aot_eager")
    calls = []
    for n in (3, 5, 7):
        x = torch.rand(n, 2, 8, 8)
        calls.append((x.clone(), torch.randn_like(x), x, torch.full((n, 1, 1, 1), 0.05)))
    assert _graphs_for(compiled, calls) == 1
    pool = torch.compile(
        lambda x, w: wavefuse.wavelet_pool2d(x, "haar", "periodization", w),
        dynamic=True,
        fullgraph=True,
        backend="aot_eager",
    )
    calls = [(torch.randn(2, c, 8, 8), torch.rand(c, 4)) for c in (3, 5, 7)]
    assert _graphs_for(pool, calls) == 1


def test_forward_mode_ad_is_an_error_not_a_silent_zero():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)

    def energy(x):
        return wavefuse.dwt2(x, "db2", "periodization")[0].pow(2).sum()

    with pytest.raises(NotImplementedError, match="forward-mode AD"):
        torch.func.jvp(energy, (x,), (torch.ones_like(x),))
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        for call in (
            lambda: wavefuse.dwt2(dual, "db2", "periodization"),
            lambda: wavefuse.hf_penalty(dual, "haar", 1),
            lambda: wavefuse.wavelet_pool2d(dual, "haar"),
        ):
            with pytest.raises(NotImplementedError, match="forward-mode AD"):
                call()
        out = wavefuse.dwt2(dual, "db2", "periodization", backend="reference")[0]
        tangent = fwAD.unpack_dual(out).tangent
    expected = wavefuse.dwt2(torch.ones_like(x), "db2", "periodization", backend="reference")[0]
    torch.testing.assert_close(tangent, expected)  # linear: the tangent is the transform's
    wavefuse.dwt2(x, "db2")  # outside the dual level: plain calls again
