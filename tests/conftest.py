"""Shared test helpers: the per-dtype tolerance table, a verbose comparison, wavelet grids."""

from __future__ import annotations

import math
import os
import sys

# Several test processes (pytest-xdist workers) share the cores: OpenMP threads that finished a
# parallel region then sleep instead of spinning (libgomp's default spins for a while, and a
# spinning thread steals its core from the other worker). Semantics are unchanged; only idle
# threads wait differently. libgomp reads the variable when torch loads it, so this must run
# before torch is imported; an OMP_WAIT_POLICY already in the environment wins. Full suite in two
# workers on 2 cores (2026-12-08): 2,229 -> 2,018 s of test time, 1,275 -> 1,187 s wall.
OMP_WAIT_POLICY_GIVEN = os.environ.get("OMP_WAIT_POLICY")
if os.environ.get("PYTEST_XDIST_WORKER") and "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch

# Triton kernels run on CPU tensors only under Triton's interpreter, and triton.jit picks it when it
# decorates a kernel (triton 3.8 reads TRITON_INTERPRET then, not at launch). wavefuse imports its
# kernels lazily, at the first Triton call, so setting the variable here, before any test imports
# them, makes backend="triton" live on CPU-only CI. Where CUDA is present the kernels compile for
# it instead; a TRITON_INTERPRET already in the environment always wins.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from wavefuse import backends
from wavefuse.filters import MODES, WAVELETS

backends.refresh()  # in case something imported wavefuse before the variable was set


def _patch_triton_language_once_per_launch() -> bool:
    """Test speed only: make Triton's interpreter patch ``triton.language`` once per launch.

    The interpreter (triton 3.x) patches the language module-wide when a kernel launches and then
    again, from scratch, at every call of an ``@triton.jit`` helper inside it: an
    ``inspect.getmembers`` sweep of ``tl``, ``tl.tensor`` and ``tl.math`` per call, 27% of a Haar
    or db2 launch and over half of a ``pgd_step`` launch here. The patches are module-wide and
    idempotent (the helper's sweep finds the builtins already replaced and sets the rest to
    equivalent lambdas; the launch's own scope restores everything when it ends), so a helper whose
    ``triton.language`` modules the running launch has already patched may skip it (``tl.sum`` and
    ``tl.zeros`` are helpers from ``triton.language.standard``, which sees ``tl.core``, not ``tl``:
    the first of them in a launch patches ``tl.core``, as the interpreter does). Launches do
    not nest, and wavefuse serialises interpreted launches across threads
    (``kernels/dwt.py``'s lock). tests/test_triton.py checks that kernels give the same bits with
    and without this. Returns whether it applied: a Triton without these internals runs unpatched
    (slower, the same results)."""
    if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "on", "yes"):
        return False
    try:
        import inspect

        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return False
    patch = getattr(interpreter, "_patch_lang", None)
    executor = getattr(interpreter, "GridExecutor", None)
    if getattr(patch, "_wavefuse_once", False):
        return True  # applied already (conftest imported twice)
    if patch is None or executor is None or not hasattr(interpreter, "_LangPatchScope"):
        return False  # not the scoped, module-wide patching described above (3.6 and 3.8 are)
    launch = {"running": False, "langs": frozenset()}  # ids of the modules the launch patched
    launch_call = executor.__call__

    # id(fn.__globals__) -> (that dict, kept alive so that the id is not reused; its size; its
    # langs). The size: the interpreter copies its own globals (tl among them) into a module's when
    # it first rewrites a function of it, which may add a language module.
    seen = {}

    def langs_of(fn) -> frozenset:
        namespace = fn.__globals__
        known = seen.get(id(namespace))
        if known is None or known[1] != len(namespace):
            langs = frozenset(
                id(v) for v in namespace.values() if inspect.ismodule(v) and v in (tl, tl.core)
            )
            known = seen[id(namespace)] = (namespace, len(namespace), langs)
        return known[2]

    def patch_once(fn):
        if launch["running"]:
            langs = langs_of(fn)
            if langs and langs <= launch["langs"]:  # a helper whose modules are patched
                return None  # (helpers' calls drop the scope)
            launch["langs"] |= langs  # the launch's own patch, or a helper's first (tl.core)
        return patch_once._wavefuse_original(fn)

    def run_launch(self, *args, **kwargs):
        launch["running"], launch["langs"] = True, frozenset()
        try:
            return launch_call(self, *args, **kwargs)
        finally:
            launch["running"], launch["langs"] = False, frozenset()

    patch_once._wavefuse_once = True
    patch_once._wavefuse_original = patch
    interpreter._patch_lang = patch_once
    executor.__call__ = run_launch
    return True


TRITON_PATCH_ONCE = _patch_triton_language_once_per_launch()


def _memoise_triton_frontend() -> list:
    """Test speed only: stop Triton's interpreter rebuilding the same type objects at every op.

    Under the interpreter every ``tl`` op runs the compiler's frontend (``triton.language.semantic``)
    on numpy arrays, and most of its time goes to rebuilding immutable descriptions that do not
    change from one op to the next: a fresh ``block_type`` (and its shape as a ``tl.tuple`` of
    ``constexpr``) for every intermediate block, the same shape again for every tensor, a dtype table
    rebuilt at every ``_get_np_dtype`` call, a ``tl.tuple`` built only to compare two shapes, and
    at every launch the list of the language's builtins. Five patches reuse them instead; the
    first four cut the Triton fuzz tests' time by 43% here (200 dwt2 / idwt2 cases: 94 s -> 54 s),
    the fifth 3% more (the six Triton fuzz tests: 874 s -> 845 s; 2026-12-07):

    - ``interpreter._get_np_dtype``: the numpy dtype of a Triton type, cached by the type's name
      (which determines it: the element type's name, ``pointer<...>`` for pointers);
    - ``block_type(element, shape)``: one shared object per (element type, shape) for scalar and
      pointer element types and integer shapes (the key holds every field that the type's ``==``
      compares); block types are never mutated after ``__init__``;
    - ``tensor.__init__``: the ``shape`` and ``numel`` it derives from its type, computed once per
      type object (a ``tl.tuple`` of ``constexpr``, immutable) and shared by the tensors of that type;
    - ``tl.tuple.__eq__`` against a list of ints (``broadcast_impl_value`` compares every block's
      shape so): the same comparison of the values, without wrapping the list in a ``tl.tuple``;
    - ``interpreter._patch_builtin``: the builtins of each ``triton.language`` module and class that
      a launch wraps, listed once at import (``inspect.getmembers``) rather than at every launch.

    Each patch applies only where a probe at import finds the internals it assumes (a Triton whose
    frontend differs runs unpatched: slower, the same results), and only under TRITON_INTERPRET.
    tests/test_triton.py checks that kernels give the same bits with and without them. Returns the
    applied patches as (owner, attribute, original, replacement)."""
    if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "on", "yes"):
        return []
    try:
        import builtins
        import inspect

        import triton.language as tl
        from triton.language import core
        from triton.runtime import interpreter
    except ImportError:
        return []
    if hasattr(interpreter, "_wavefuse_memos"):
        return interpreter._wavefuse_memos  # applied already (conftest imported twice)
    applied = interpreter._wavefuse_memos = []

    def apply(owner, name, replacement, original=None):
        original = original or getattr(owner, name)
        setattr(owner, name, replacement)
        applied.append((owner, name, original, replacement))

    def probe(check) -> bool:
        try:
            return bool(check())
        except (AttributeError, TypeError, ValueError, KeyError, IndexError, AssertionError):
            return False  # internals not as assumed: leave this part unpatched

    np_dtype = getattr(interpreter, "_get_np_dtype", None)
    if np_dtype is not None and probe(lambda: np_dtype(core.float32) == np.float32):
        np_dtypes = {}

        def get_np_dtype(tt):
            found = np_dtypes.get(tt.name)
            if found is None:
                found = np_dtypes[tt.name] = np_dtype(tt)
            return found

        apply(interpreter, "_get_np_dtype", get_np_dtype)

    block_type, tl_tuple, pointer_type = core.block_type, core.tuple, core.pointer_type
    block_init = block_type.__init__

    if probe(
        lambda: (
            block_type.__new__ is object.__new__
            and set(vars(block_type(core.float32, [2, 4])))
            == {"element_ty", "shape", "numel", "name"}
        )
    ):
        blocks = {}

        def new_block(cls, *args, **kwargs):
            if cls is block_type and len(args) == 2 and not kwargs:
                element, shape = args
                if type(shape) is tl_tuple:
                    shape = shape.values
                kind = type(element)
                if (
                    (kind is core.dtype or kind is pointer_type)
                    and type(shape) in (list, builtins.tuple)
                    and all(type(s) is int for s in shape)
                ):
                    space = (element.address_space, element.const) if kind is pointer_type else ()
                    key = (kind, element.name, space, *shape)
                    found = blocks.get(key)
                    if found is None:
                        found = object.__new__(cls)
                        block_init(found, *args)
                        found._wf_shared = True
                        blocks[key] = found
                    return found
            return object.__new__(cls)

        def init_block(self, *args, **kwargs):
            if not self.__dict__.get("_wf_shared"):  # a shared one is initialised already
                block_init(self, *args, **kwargs)

        # what the inherited object.__new__ does for a class with its own __init__ (deleting the
        # patch again would not restore it: CPython then rejects the arguments)
        apply(block_type, "__new__", staticmethod(new_block),
              staticmethod(lambda cls, *args, **kwargs: object.__new__(cls)))  # fmt: skip
        apply(block_type, "__init__", init_block)

    tensor_init = core.tensor.__init__
    if probe(
        lambda: set(vars(core.tensor(None, block_type(core.float32, [2])))) ==
        {"handle", "shape", "numel", "type", "dtype"}
    ):  # fmt: skip

        def init_tensor(self, handle, type):
            derived = type.__dict__.get("_wf_tensor_shape")
            if derived is None:
                tensor_init(self, handle, type)
                type.__dict__["_wf_tensor_shape"] = (self.shape, self.numel)
                return
            self.handle = handle
            self.shape, self.numel = derived
            self.type = type
            self.dtype = type.scalar

        apply(core.tensor, "__init__", init_tensor)

    tuple_eq = tl_tuple.__eq__
    if probe(lambda: tuple_eq(tl_tuple([2, 4]), [2, 4]) and not tuple_eq(tl_tuple([2, 4]), [4, 2])):

        def tuple_equals(self, other):
            if type(other) is list and all(type(s) is int for s in other):
                return core.constexpr(self.values == other)
            return tuple_eq(self, other)

        apply(tl_tuple, "__eq__", tuple_equals)

    # The builtin sweep: each launch lists the builtins of tl, tl.tensor, tl.math, tl.core and
    # tl.core.tensor_descriptor_base with inspect.getmembers (530 members, 228 builtins in Triton
    # 3.8) to wrap them. Those sets are fixed; listed once here, before any launch has patched
    # anything, a launch wraps the same originals. (Where a sweep meets a member an earlier scope
    # left patched -- a helper's tl.core patch is never restored -- the interpreter skips it,
    # keeping that wrapper; this wraps the original again: the same call.) Other objects are swept
    # as before.
    patch_builtin = getattr(interpreter, "_patch_builtin", None)
    patch_attr = getattr(interpreter, "_patch_attr", None)
    listed = {}  # id(pkg) -> (pkg, its builtins as (name, member))

    def list_builtins():
        # (tl.tensor is core.tensor: swept with either module)
        for pkg in (tl, tl.tensor, tl.math, core, core.tensor_descriptor_base):
            members = [(n, m) for n, m in inspect.getmembers(pkg) if core.is_builtin(m)]
            listed[id(pkg)] = (pkg, members)
        return (
            list(inspect.signature(patch_builtin).parameters) == ["pkg", "builder", "scope"]
            and list(inspect.signature(patch_attr).parameters)
            == ["obj", "name", "member", "builder", "scope"]
            and len(listed[id(tl)][1]) > 0
        )

    if patch_builtin is not None and patch_attr is not None and probe(list_builtins):

        def patch_listed_builtins(pkg, builder, scope):
            found = listed.get(id(pkg))
            if found is None or found[0] is not pkg:
                return patch_listed_builtins.fresh_sweep(pkg, builder, scope)
            for name, member in found[1]:
                patch_attr(pkg, name, member, builder, scope)

        patch_listed_builtins.fresh_sweep = patch_builtin  # (tests/test_triton.py counts these)
        apply(interpreter, "_patch_builtin", patch_listed_builtins)
    return applied


#: The frontend patches applied (tests/test_triton.py turns them off to compare bits).
TRITON_FRONTEND_PATCHES = _memoise_triton_frontend()


def pytest_collection_modifyitems(config, items):
    """The tests marked ``slow`` first in the session, the longest first (``slow(seconds=...)``:
    what the test took on 2 cores; none given sorts first); the order is otherwise unchanged. With
    the one-at-a-time dispatch below each worker takes the next test when it is free, so the slow
    ones start early and the short ones even out the end (list scheduling, longest first). The
    six Triton fuzz tests, 40 s to 5 min each, are over a third of the suite's time on 2 cores."""

    def key(item):
        mark = item.get_closest_marker("slow")
        return (1, 0.0) if mark is None else (0, -mark.kwargs.get("seconds", math.inf))

    items.sort(key=key)


def pytest_configure(config):
    """pytest-xdist's ``load`` mode (``-n`` alone, README's test command) sends tests one at a
    time (``--maxschedchunk 1``, unless given): each worker holds the test it runs and the next.
    By default it sends chunks of up to half of what is left per worker and never takes a test
    back, so a worker could sit idle at the end while the other still had minutes queued. Full
    suite in two workers on 2 cores (2026-12-08): default chunks, slow tests first in their file,
    1,187 s for 2,018 s of test time (178 s above an even split). With this dispatch and the slow
    tests first in the session, longest first, a fresh-clone CI run's tests took 1,036 s (1,307 s
    at bc4555a, before this and the passive OpenMP wait above; 2 cores, no AVX-512)."""
    if getattr(config.option, "maxschedchunk", "") is None:
        config.option.maxschedchunk = 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (README's test command): one pytest-xdist worker per core this process may
    use, at most 4 -- each worker imports torch and runs Triton's interpreter in its own process
    (about 1 GiB each), and the suite is mostly single-threaded Python (the interpreter): on 2
    cores two workers took 13.3 and 16.4 minutes where one process took 22.6 (fresh-clone CI
    runs, 2026-12-07). Without pytest-xdist installed the hook is ignored."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


# Tolerances relative to max |expected| (float64: absolute, pywt agreement contract). The half types
# are compared against a float64 transform of the *rounded* input, so only the output rounding and
# the float32 accumulation count: a few ulps of the output format.
TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}

# A grid that covers each family, short and long filters (db20: 40 taps) and odd lengths.
GRID_WAVELETS = [
    "haar",
    "db1",
    "db2",
    "db3",
    "db4",
    "db7",
    "db20",
    "sym2",
    "sym5",
    "sym20",
    "coif1",
    "coif3",
    "coif5",
]
ALL_WAVELETS = list(WAVELETS)
ALL_MODES = list(MODES)
# (H, W): odd x even, even x odd, smaller than most filters, tiny, and one larger odd pair.
SIZES = [(13, 8), (8, 13), (3, 5), (2, 2), (1, 4), (33, 31)]


def cpu_backends(op: str = "dwt2d") -> list:
    """ "reference" and "cpu" as pytest params for CPU tensors; one with no kernel for ``op`` (and
    the ops its autograd calls) in this build skips with the reason ``backends.why_not`` gives."""
    params = []
    for b in ("reference", "cpu"):
        reason = backends.why_not(b, op, "cpu")
        params.append(
            pytest.param(b, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))
        )
    return params


#: Every backend that runs the transforms on CPU tensors here; one that is not live skips.
CPU_BACKENDS = cpu_backends()


def skip_unless_cuda(ops) -> None:
    """In a test (never at collection: nothing may touch the GPU then): skip with the reason where
    no CUDA device is visible or this build has no CUDA kernel for one of ``ops``."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    for op in ops:
        reason = backends.why_not("cuda", op, "cuda")
        if reason is not None:
            pytest.skip(reason)


def assert_close(actual, expected, tol: float, what: str = "") -> None:
    """Max-abs comparison scaled by the largest finite |expected|; NaN matches only NaN and an
    infinity only the same infinity (a NaN or an infinity where the other is not fails); on
    failure say how many and where."""
    a = torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual)
    e = torch.as_tensor(np.asarray(expected) if not torch.is_tensor(expected) else expected)
    a, e = a.detach().cpu().double(), e.detach().cpu().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    finite = e[torch.isfinite(e)]
    scale = max(finite.abs().max().item(), 1.0) if finite.numel() else 1.0
    same_special = (a.isnan() & e.isnan()) | (a.isinf() & (a == e))
    err = torch.where(same_special, 0.0, (a - e).abs())
    bad = ~(err <= tol * scale)  # a NaN error (NaN against a number) counts as bad
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.numel()} elements differ by more than {tol} x {scale:.3g}"
            f" (max err {err.max().item():.3e}); first bad indices {idx}"
        )


HALF_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}


def assert_step_close(got, expected, tol: float, what: str = "") -> None:
    """assert_close for float32/float64 results; for a half-type result (computed in float32,
    rounded once at the store) assert_one_rounding, since the half types' TOL, scaled by
    max |x_adv| ~ 1, is about as large as a PGD step itself and would pass a wrong step."""
    if got.dtype in HALF_MANTISSA_BITS:
        assert_one_rounding(got, expected, what)
    else:
        assert_close(got, expected, tol, what)


def assert_one_rounding(got, expected, what: str = "") -> None:
    """A half-type result computed in float32 and rounded once, against the exact value (float64,
    rounded to got's dtype here) or another result rounded once from float32: equal but where the
    float32 error straddles a rounding boundary -- at most 1% of the elements (at least 2), each the
    neighbouring representable value (one unit in the last place apart)."""
    have = got.detach().cpu().double()
    want = expected.detach().cpu().to(got.dtype).double()
    assert have.shape == want.shape, f"{what}: shape {tuple(have.shape)} != {tuple(want.shape)}"
    off = ~((have == want) | (have.isnan() & want.isnan()))
    ulp = torch.maximum(have.abs(), want.abs()) * 2.0 ** -HALF_MANTISSA_BITS[got.dtype]
    far = off & ~((have - want).abs() <= ulp + 2.0**-24)  # 2^-24: float16's subnormal spacing
    limit = max(2, have.numel() // 100)
    assert not far.any() and int(off.sum()) <= limit, (
        f"{what}: {int(off.sum())} of {have.numel()} elements are not the once-rounded value "
        f"(at most {limit} one ulp off allowed), {int(far.sum())} more than one ulp off; first "
        f"{off.nonzero()[:5].tolist()}"
    )


def assert_linf_wavelet_step(got, expected, g, wave, level, mode, scales, alpha, tol, what=""):
    """A Linf wavelet step against the reference's: equal within tol (assert_step_close) except
    where the exact filtered gradient g' (float64 reference.scale_details_ref of g) is zero to
    float32 rounding (|g'| <= 1e-5 max |g'|), whose sign either computation may flip: those may
    differ by up to 2 alpha. A wrong step anywhere else fails, however few the elements."""
    from wavefuse import reference
    from wavefuse.filters import filter_bank

    g64 = g.detach().cpu().double()
    filters = filter_bank(wave, "dec", torch.float64)
    gf = reference.scale_details_ref(g64, filters, mode, level, list(scales))
    tiny = (gf.abs() <= 1e-5 * gf.abs().max()).to(got.device)
    assert_step_close(got[~tiny], expected[~tiny], tol, what)
    diff = (got[tiny].double() - expected[tiny].double()).abs()
    assert not diff.numel() or diff.max() <= 2 * float(alpha) + tol, what


def assert_chain_non_finite_policy(got, expected, bad: float, what: str) -> None:
    """docs/edge_policies.md for the approximation chain, ``bad`` the gradient entry planted: a
    NaN gives exactly the reference's NaN positions; an infinity makes no NaN where the reference
    has none (it may give a number where the reference's 0 * inf is NaN); elsewhere the
    reference's values. Both results must hold a NaN somewhere and the second sample none."""
    assert expected.isnan().any() and torch.isfinite(got[1]).all(), what
    if math.isnan(bad):
        assert torch.equal(got.isnan(), expected.isnan()), what
    else:
        assert not (got.isnan() & ~expected.isnan()).any(), what
    fin = ~expected.isnan()
    assert_close(got[fin], expected[fin], 1e-12, what)


def reflect_too_deep(shape, wave: str, level: int) -> bool:
    """pywt's rule, counted here: mode 'reflect' needs 2 samples along each axis at the input of
    every level; a level's output has (n + taps - 1) // 2 samples."""
    from wavefuse.filters import filter_bank

    taps = filter_bank(wave, "dec", torch.float64, "cpu").shape[-1]
    h, w = shape[-2:]
    for _ in range(level):
        if min(h, w) < 2:
            return True
        h, w = (h + taps - 1) // 2, (w + taps - 1) // 2
    return False


def assert_wavelet_step(got, expected, norm: str, alpha: float, what: str) -> None:
    """A wavelet PGD step against the reference's. L2: 1e-12 (float64), 1e-6 (float32: the norms'
    summation order), one rounding for the half types (assert_one_rounding). Linf steps by
    sign(g'), whose tiny entries the transforms' rounding may flip: at most 2 elements may differ
    beyond the half types' rounding, by at most 2 alpha."""
    assert got.dtype == expected.dtype, what
    if norm == "L2":
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, TOL[got.dtype])
        assert_step_close(got, expected, tol, what)
    else:
        err = (got.detach().cpu().double() - expected.detach().cpu().double()).abs()
        slack = TOL[got.dtype] * 2  # the clamp's rounding of a half type
        bad = int((err > slack).sum())
        assert bad <= 2 and err.max() <= 2 * alpha + slack, f"{what}: {bad} elements differ"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class KernelCounter:
    """Stands in for a @triton.jit kernel: counts launches (kernel[grid](...)), then launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def count_launches(monkeypatch, module, *names) -> dict:
    """Replace module's kernels ``names`` with counters for the test: {name: KernelCounter}."""
    counters = {name: KernelCounter(getattr(module, name)) for name in names}
    for name, counter in counters.items():
        monkeypatch.setattr(module, name, counter)
    return counters


def eps_telling_the_divisions_apart(delta, norm, dtype, count) -> list[float]:
    """The eps in k / 1000 (k < count) for which 0.5 + delta * (eps / norm) differs between
    torch's scalar division (reciprocal times eps) and a true division; at least five, or a test
    built on them could not fail."""
    delta, norm_t = torch.tensor(delta, dtype=dtype), torch.tensor([norm], dtype=dtype)
    apart = [
        eps
        for eps in (k / 1000 for k in range(1, count))
        if not torch.equal(
            0.5 + delta * (eps / norm_t), 0.5 + delta * (torch.full_like(norm_t, eps) / norm_t)
        )
    ]
    assert len(apart) >= 5, "no eps tells the two divisions apart: the test would not see them"
    return apart
