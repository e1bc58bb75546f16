"""Thread safety: ops called from several Python threads at once give the bits of serial calls,
with no exception -- through the shared state they touch: the filter-bank cache
(wavefuse/filters.py), the liveness table that backend resolution reads and ``backends.refresh``
rewrites (wavefuse/backends.py), the C++ kernels' intra-op thread pool, Triton's interpreter and
autograd running backward passes concurrently.

The GIL serialises Python bytecode but not the interleaving of multi-step updates, so each test
starts its threads together at a barrier and shortens the interpreter's switch interval to make
interleavings likely; the checks are on results and exceptions, never on timing.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import wavefuse
from wavefuse import backends, filters
from wavefuse.functional import wavelet_pool2d

THREADS = 4
F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:Level value of:UserWarning")


@pytest.fixture(autouse=True)
def _fast_switching():
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def run_together(fn, args_list):
    """fn(*args) for every args in args_list, on THREADS threads that start at one barrier;
    returns the results in order (exceptions re-raised)."""
    barrier = threading.Barrier(min(THREADS, len(args_list)))

    def start(args):
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass  # fewer tasks than threads left: run anyway
        return fn(*args)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(start, args_list))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _backend(op: str, backend: str) -> str:
    return backend if backends.why_not(backend, op, "cpu") is None else "reference"


def _workload(backend: str, seed: int):
    """Every op (outputs and gradients) on inputs of its own, on ``backend`` where it runs."""
    g = torch.Generator().manual_seed(seed)
    dtype = (torch.float32, F64, torch.bfloat16)[seed % 3]
    wave = ("haar", "db3", "sym4", "coif2")[seed % 4]
    mode = ("zero", "symmetric", "reflect", "periodic", "periodization")[seed % 5]
    x = torch.randn(2, 3, 17 + seed % 5, 12, generator=g, dtype=F64).to(dtype).requires_grad_()
    t = _backend("dwt2d", backend)
    coeffs = wavefuse.wavedec2(x, wave, mode, 2, backend=t)
    y = wavefuse.waverec2(coeffs, wave, mode, backend=t)
    ll, hi = wavefuse.dwt2(x, wave, mode, backend=t)
    z = wavefuse.idwt2((ll, (hi[0], None, hi[2])), wave, mode, backend=t)
    e = _backend("hf_penalty", backend)
    energies = wavefuse.band_energy(x, wave, 2, mode, 2, backend=e)
    pen = wavefuse.hf_penalty(x, wave, 2, mode, 1 + seed % 2, [1.0, 0.5], "sum", backend=e)
    pool = wavelet_pool2d(x, wave, mode, "all", backend=_backend("wavelet_pool2d", backend))
    outs = [coeffs[0], y, z, energies, pen, pool]
    (gx,) = torch.autograd.grad([o.float().sum() for o in outs], x)
    x_nat = torch.rand(2, 3, 9, 8, generator=g)
    grad = torch.randn(2, 3, 9, 8, generator=g)
    s = _backend("wavelet_pgd_step", backend)
    steps = []
    for norm in ("Linf", "L2"):
        a = x_nat.clone()
        wavefuse.pgd_step(a, grad, x_nat, 0.1, 0.05, norm, backend=s)
        b = x_nat.clone()
        wavefuse.wavelet_pgd_step(b, grad, x_nat, 0.1, 0.05, wave, 1, mode, 0.5, norm, backend=s)
        steps += [a, b]
    return [o.detach() for o in outs] + [gx] + steps


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_concurrent_ops_match_serial(backend):
    if backends.why_not(backend, "dwt2d", "cpu") is not None:
        pytest.skip(backends.why_not(backend, "dwt2d", "cpu"))
    seeds = list(range(12))
    serial = [_workload(backend, s) for s in seeds]
    for _ in range(2):
        concurrent = run_together(_workload, [(backend, s) for s in seeds])
        for s, (a, b) in enumerate(zip(serial, concurrent)):
            assert _same(a, b), f"seed {s}: a concurrent call differs from the serial one"


@pytest.mark.skipif(
    backends.why_not("triton", "dwt2d", "cuda" if torch.cuda.is_available() else "cpu") is not None,
    reason="backend='triton' is not live here",
)
def test_concurrent_triton_launches_match_serial():
    """Triton kernels launched from several threads: compiled where CUDA is; under the interpreter
    (which patches triton.language module-wide while a kernel runs) wavefuse.kernels serialises
    the launches, so they must neither fail nor differ."""

    device = "cuda" if torch.cuda.is_available() else "cpu"

    def work(seed):
        x = torch.randn(1, 1, 6 + seed, 5, generator=torch.Generator().manual_seed(seed))
        x = x.to(device).requires_grad_()
        ll, hi = wavefuse.dwt2(x, ("db2", "haar")[seed % 2], "symmetric", backend="triton")
        (gx,) = torch.autograd.grad(ll.sum() + hi[1].sum(), x)
        return ll.detach(), hi[0].detach(), gx

    serial = [work(s) for s in range(4)]
    assert _same(serial, run_together(work, [(s,) for s in range(4)]))


def test_filter_cache_under_contention(monkeypatch):
    """Threads asking for the same banks at once, from an empty cache: every thread gets equal
    taps, the first bank stored for a key is the one every caller gets, one entry per key."""
    monkeypatch.setattr(filters, "_CACHE", {})
    keys = [
        (name, kind, dtype)
        for name in ("haar", "db4", "sym7", "coif3", "db20")
        for kind in ("dec", "rec")
        for dtype in (torch.float32, F64, torch.float16)
    ]

    def fetch(_):
        return [filters.filter_bank(name, kind, dtype) for name, kind, dtype in keys]

    results = run_together(fetch, [(i,) for i in range(THREADS * 4)])
    for i, key in enumerate(keys):
        banks = [r[i] for r in results]
        assert all(b is banks[0] for b in banks), f"{key}: callers got different cached banks"
        expected = torch.tensor(
            filters._BANKS[key[0]][:2] if key[1] == "dec" else filters._BANKS[key[0]][2:],
            dtype=filters.compute_dtype(key[2]),
        )
        assert torch.equal(banks[0], expected), key
    assert len(filters._CACHE) == len({(n, k, filters.compute_dtype(d)) for n, k, d in keys})


def test_backend_refresh_while_resolving():
    """backends.refresh() rewriting the liveness table while other threads resolve backends and
    run ops: no KeyError or torn read; every answer is the serial one."""
    ops = list(backends.OPS)
    expected = {(b, op): backends.why_not(b, op, "cpu") for b in backends.BACKENDS for op in ops}
    auto = {op: backends.resolve("auto", torch.device("cpu"), op) for op in ops}
    stop = threading.Event()

    def refresher():
        while not stop.is_set():
            backends.refresh()

    def reader(seed):
        x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(seed))
        for _ in range(200):
            for b in backends.BACKENDS:
                for op in ops:
                    assert backends.why_not(b, op, "cpu") == expected[(b, op)]
            for op in ops:
                assert backends.resolve("auto", torch.device("cpu"), op) == auto[op]
        return wavefuse.dwt2(x, "db2")[0]

    thread = threading.Thread(target=refresher)
    thread.start()
    try:
        results = run_together(reader, [(s,) for s in range(THREADS)])
    finally:
        stop.set()
        thread.join()
    for s, r in enumerate(results):
        x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(s))
        assert torch.equal(r, wavefuse.dwt2(x, "db2")[0])


def test_concurrent_backward_passes():
    """Autograd graphs built in one thread and run backward in others (hf_penalty's double
    backward included), concurrently: the gradients of serial runs."""

    def graph(seed):
        x = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(seed))
        x.requires_grad_()
        pen = wavefuse.hf_penalty(x, "db2", 2, "symmetric", 2, None, "mean")
        coeffs = wavefuse.wavedec2(x, "sym3", "periodization", 2)
        return x, pen + sum(c.square().sum() for c in coeffs[1][:2])

    def backward(x, loss):
        (gx,) = torch.autograd.grad(loss, x, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), x)
        return gx.detach(), ggx

    serial = [backward(*graph(s)) for s in range(8)]
    graphs = [graph(s) for s in range(8)]
    assert _same(serial, run_together(backward, graphs))
