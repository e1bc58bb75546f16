"""wavelet_pgd_step's gradient filter as a short sum of separable terms, for the one-launch kernels.

The filter ``g' = idwt(scale_hf(dwt(g)))`` (``reference.scale_details_ref``) is linear in each
plane G (H x W), and every piece of it is separable: one level's analysis of an (n x m) plane a is
``A_f a A_g^T`` for its four bands (f, g in lo, hi; 1-D operators along H and along W, boundary
mode included), its cropped synthesis ``S_f b S_g^T``. Scaling the three detail bands of level j by
s_j and resynthesising gives, with ``M = S_lo A_lo + S_hi A_hi`` (the 1-D round trip, the identity
for a perfect-reconstruction bank),

    a~_{j-1} = S_lo a~_j S_lo^T + s_j (M a_{j-1} M^T - S_lo a_j S_lo^T),   a_j = A_lo a_{j-1} A_lo^T,

and, unrolled with B_j = A_lo,j ... A_lo,1 and C_j = S_lo,1 ... S_lo,j (per axis),

    g' = sum_j s_j X_j G X_j^T - sum_j s_j Y_j G Y_j^T + Y_J G Y_J^T,
         X_j = C_{j-1} M_j B_{j-1},  Y_j = C_j B_j   (H x H along H, W x W along W).

For a perfect-reconstruction bank X_1 = I and X_j = Y_{j-1}, so equal terms merge into
``s_1 G + sum_{j<J} (s_{j+1} - s_j) Y_j G Y_j^T + (1 - s_J) Y_J G Y_J^T``: one matrix pair when
every level has the same scale. Terms are merged by comparing the matrices (to 1e-10 for float64
taps, 1e-6 for float32 ones: _SAME), so a bank that is not perfect-reconstruction keeps its 2J
terms and stays exact; nothing assumes orthogonality. The matrices come from the reference's own 1-D transforms applied to unit vectors
(float64), so they carry exactly its boundary modes, sizes and crops.

``filter_terms`` packs them for a kernel: the identity coefficient, L_k (coefficient folded in) and
R_k^T, zero-padded to the kernel's block sides, in the compute dtype on the data's device; cached
per filter bank (its storage and version), mode, level, plane size and scales, so an attack loop
builds them once. The cache is keyed by the taps' values: a device bank's are read once per
tensor (a synchronising copy; later calls find it by address, strides and version counter), so
the first call with a new bank synchronises. Under CUDA graph capture nothing synchronises: a bank
or matrices not seen before make filter_terms return None and the kernels' callers run their
per-level path instead (warm up before capturing, as for any first call).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor

from wavefuse import reference

# Matrices closer than this (max abs entry) are one term: perfect reconstruction makes X_j and
# Y_{j-1} agree to the bank's own reconstruction error -- measured (db2-db20, sym5, sym20, coif5,
# every mode, 7-64 samples, 3 levels) up to 1.4e-11 with float64 taps (pywt's sym20) and 3.3e-8
# with the float32 taps that float32 and half data use --, while a bank that is not
# perfect-reconstruction differs by O(1). Merging changes g' by that reconstruction error only.
_SAME = {torch.float64: 1e-10}
_SAME_OTHER = 1e-6
_CACHE_SIZE = 64


class Terms(NamedTuple):
    """g' = identity * G + sum_k L[k] @ G @ Rt[k] (padded blocks: L (K, BH, BH), Rt (K, BW, BW))."""

    identity: float
    left: Tensor
    right_t: Tensor

    @property
    def count(self) -> int:
        return self.left.shape[0]


def _axis_level(n: int, filters: Tensor, mode: str):
    """One level's 1-D operators along an axis of n samples (float64): A_lo, A_hi (K x n) and the
    cropped synthesis S_lo, S_hi (n x K), synthesis with the reversed taps (as scale_details_ref)."""
    eye = torch.eye(n, dtype=torch.float64)
    a = reference._analysis_1d(eye, filters, mode)  # (n, 2, K): column i is the response to e_i
    k = a.shape[-1]
    unit = torch.zeros(2 * k, 2, k, dtype=torch.float64)
    unit[:k, 0] = torch.eye(k, dtype=torch.float64)
    unit[k:, 1] = torch.eye(k, dtype=torch.float64)
    s = reference._synthesis_1d(unit, filters.flip(-1), mode)[:, :n]  # (2K, n)
    return a[:, 0].T, a[:, 1].T, s[:k].T, s[k:].T


def axis_operators(n: int, filters: Tensor, mode: str, level: int) -> tuple[list, list]:
    """(X_1..X_J, Y_1..Y_J) along one axis of n samples (float64, n x n each)."""
    b = c = torch.eye(n, dtype=torch.float64)
    xs, ys = [], []
    size = n
    for _ in range(level):
        a_lo, a_hi, s_lo, s_hi = _axis_level(size, filters, mode)
        xs.append(c @ (s_lo @ a_lo + s_hi @ a_hi) @ b)
        b, c = a_lo @ b, c @ s_lo
        ys.append(c @ b)
        size = a_lo.shape[0]
    return xs, ys


def separable_terms(
    filters: Tensor, mode: str, level: int, h: int, w: int, hf_scale: list[float]
) -> tuple[float, list[tuple[float, Tensor, Tensor]]]:
    """(identity coefficient, [(coefficient, L (H x H), R (W x W))]) with
    ``scale_details_ref(G) = identity * G + sum coefficient * L @ G @ R^T`` (float64, merged,
    zero coefficients dropped). filters: (2, L) dec [lo; hi]; hf_scale: one factor per level."""
    if len(hf_scale) != level:
        raise ValueError(
            f"hf_scale has {len(hf_scale)} entries for level={level}: one per level, finest first"
        )
    tol = _SAME.get(filters.dtype, _SAME_OTHER)
    f = filters.detach().to("cpu", torch.float64)
    xh, yh = axis_operators(h, f, mode, level)
    xw, yw = axis_operators(w, f, mode, level)
    raw = [(float(s), xh[j], xw[j]) for j, s in enumerate(hf_scale)]
    raw += [(-float(s), yh[j], yw[j]) for j, s in enumerate(hf_scale)]
    raw.append((1.0, yh[-1], yw[-1]))
    eye_h, eye_w = torch.eye(h, dtype=torch.float64), torch.eye(w, dtype=torch.float64)
    identity, merged = 0.0, []
    for coef, left, right in raw:
        if _same(left, eye_h, tol) and _same(right, eye_w, tol):
            identity += coef
            continue
        for i, (c0, l0, r0) in enumerate(merged):
            if _same(left, l0, tol) and _same(right, r0, tol):
                merged[i] = (c0 + coef, l0, r0)
                break
        else:
            merged.append((coef, left, right))
    return identity, [t for t in merged if t[0] != 0.0]


def _version(t: Tensor) -> int:
    """t's version counter (bumped by every in-place change); an inference tensor has none, and
    can change only inside inference mode: -1 (a bank is not modified in place in practice)."""
    return -1 if t.is_inference() else t._version


def _same(a: Tensor, b: Tensor, tol: float) -> bool:
    return bool((a - b).abs().max() <= tol)


_cache: OrderedDict = OrderedDict()  # (bank values, ...) -> (packed, stream that made it)
_pinned: set = set()  # keys used while a CUDA graph was being captured: never evicted
_banks: OrderedDict = OrderedDict()  # a device bank's (address, strides, ...) -> (tensor, values)
_lock = threading.Lock()


def _bank_values(filters: Tensor) -> tuple | None:
    """The bank's taps as a hashable key, read on the host. A CPU bank is read directly; a device
    bank is looked up by its memory (address, strides, shape, dtype, device, version counter: the
    table holds the tensor, so its address is not reused) and read once, a synchronising copy --
    or None, when it is new while a CUDA graph is being captured (capture forbids the copy)."""
    if filters.device.type == "cpu":
        return (tuple(filters.detach().flatten().tolist()), tuple(filters.shape))
    where = (filters.data_ptr(), tuple(filters.stride()), tuple(filters.shape), filters.dtype)
    key = (*where, filters.device, _version(filters))
    with _lock:
        known = _banks.get(key)
        if known is not None:
            _banks.move_to_end(key)
            return known[1]
    if filters.is_cuda and torch.cuda.is_current_stream_capturing():
        return None
    values = (tuple(filters.detach().flatten().tolist()), tuple(filters.shape))
    with _lock:
        _banks[key] = (filters, values)
        while len(_banks) > _CACHE_SIZE:  # only the address table: the matrices stay cached
            _banks.popitem(last=False)
    return values


def filter_terms(
    filters: Tensor,
    mode: str,
    level: int,
    h: int,
    w: int,
    hf_scale: list[float],
    dtype: torch.dtype,
    block_h: int,
    block_w: int,
    device: torch.device | None = None,
) -> Terms | None:
    """``separable_terms`` packed for a kernel, cached: L (K, block_h, block_h) with the
    coefficients folded in and R^T (K, block_w, block_w), zero-padded, ``dtype`` on ``device``
    (default: that of ``filters``). K is 0 when the filter is a multiple of the identity.

    Cached by the bank's values (so a bank re-created every call, as torch.compile's graphs do,
    still hits after one synchronising read per new tensor). None, building nothing, when the
    matrices are not cached and the bank is a device tensor not seen before while a CUDA graph is
    being captured: the caller runs its per-level path then (warm up before capturing).

    A kernel launched with these matrices reads them later on the device: an entry used while a
    CUDA graph is captured is never evicted (the graph keeps their addresses), and one used on
    another stream than the one that made it is recorded on that stream (record_stream), so the
    allocator does not hand its memory out while that stream may still read it."""
    device = filters.device if device is None else torch.device(device)
    values = _bank_values(filters)
    if values is None:
        return None
    scales = tuple(float(s) for s in hf_scale)
    key = (values, filters.dtype, mode, level, h, w, scales, dtype, block_h, block_w, device)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None  # building copies the matrices to the device: not capturable
        identity, terms = separable_terms(filters, mode, level, h, w, hf_scale)
        left = torch.zeros(len(terms), block_h, block_h, dtype=torch.float64)
        right_t = torch.zeros(len(terms), block_w, block_w, dtype=torch.float64)
        for k, (coef, lm, rm) in enumerate(terms):
            left[k, :h, :h] = coef * lm
            right_t[k, :w, :w] = rm.T
        packed = Terms(identity, left.to(device, dtype), right_t.to(device, dtype))
        stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        hit = (packed, stream)
        with _lock:
            _cache[key] = hit
            _evict()
    _guard_device_use(key, hit)
    return hit[0]


def chain_depth(level: int, hf_scale: list[float]) -> int:
    """The levels the wavelet step's filter needs. With s_{J+1} = 1 it unrolls (perfect
    reconstruction) as g' = s_1 g + sum_j (s_{j+1} - s_j) P_j g, P_j the projection onto level j's
    approximation space, so levels past the last j with s_j != s_{j+1} change nothing: the
    approximation chains of kernels/pgd_step.py and csrc/cuda/pgd_step.cu stop there (0: every
    scale 1, g' = g)."""
    scales = [float(v) for v in hf_scale[:level]] + [1.0]
    return max((j + 1 for j in range(level) if scales[j] != scales[j + 1]), default=0)


# ---- the one-launch chain (the cascade): where it runs ---------------------------------------------
# The cascade kernels (kernels/pgd_step.py's _cascade_kernel, csrc/cuda/dwt.cu's cascade_kernel)
# run the whole approximation chain in one launch with one program (block) per (n, c) plane, which
# sweeps its plane through every level alone. Their cost is parallelism: with fewer planes than
# the GPU has SMs (times a few), SMs sit idle while each plane's levels run one tile after another;
# a large plane takes long serially. So the cascade runs only where the planes fill the GPU
# (at least CASCADE_PLANES_PER_SM per SM) and each is at most CASCADE_MAX_PLANE samples; elsewhere
# the chain runs with every level's tiles spread over the GPU, in pairs of stages: one launch per
# level (kernels/pgd_step.py's _pair_kernel, csrc/cuda/pair_body.cuh).
# The band energies' cascades (kernels/hf_penalty.py, csrc/cuda/hf_cascade_body.cuh: one launch
# per pass, every level of a plane in one program or block) follow the same rule.
# BLIND: both numbers are reasoned, not measured (nothing here has run on a GPU); bench/README.md
# says what to time first.
CASCADE_MAX_PLANE = 512 * 512
CASCADE_PLANES_PER_SM = 2
_sm_counts: dict = {}  # CUDA device index -> multiprocessors


def sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (queried once per device); 1 for any other device (CPU
    tensors under the Triton interpreter)."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = _sm_counts.get(index)
    if count is None:
        count = torch.cuda.get_device_properties(index).multi_processor_count
        _sm_counts[index] = count
    return count


def cascade_fits(x: Tensor, depth: int, max_depth: int) -> bool:
    """Whether ``depth`` levels on x (N, C, H, W) run as one cascade launch (one program or block
    per plane through every level): at most ``max_depth`` levels (the kernel's own limit), planes
    of at most CASCADE_MAX_PLANE samples, and at least CASCADE_PLANES_PER_SM planes per SM. The
    rule of every cascade, on both GPU backends: wavelet_pgd_step's approximation chain and
    band_energy's forward and backward (hence hf_penalty's)."""
    n, c, h, w = x.shape
    if not 1 <= depth <= max_depth or h * w > CASCADE_MAX_PLANE:
        return False
    return n * c >= CASCADE_PLANES_PER_SM * sm_count(x.device)


# perfect_reconstruction checks an axis of n samples at min(n, max(_PR_MAX_CHECK, 4 L) + n % 2)
# samples: the round trip's rows are 2-periodic in the interior and its boundary rows depend only
# on the L - 1 samples at each end, so beyond a few filter lengths (db20's 40 taps: 160) a longer
# axis adds rows already checked, while its n x n matrices would cost O(n^2) memory.
_PR_MAX_CHECK = 256
_pr_cache: dict = {}  # (bank values, dtype, mode, n) -> bool


def perfect_reconstruction(filters: Tensor, mode: str, level: int, h: int, w: int) -> bool | None:
    """Whether one analysis level and its cropped synthesis (reversed taps, as scale_details_ref)
    give back every plane that the ``level``-level cascade of an (h, w) plane analyses, to _SAME:
    ``S_lo A_lo + S_hi A_hi = I`` along both axes at every level's size. Then
    ``idwt(a_j, d_j) = a_{j-1}`` and the wavelet step's filter needs the approximation chain only
    (kernels/pgd_step.py). Cached per bank, mode and size; None where the bank's values cannot be
    read (a new device bank under CUDA graph capture: ``_bank_values``)."""
    values = _bank_values(filters)
    if values is None:
        return None
    taps = values[1][-1]
    cap = max(_PR_MAX_CHECK, 4 * taps)
    sizes = set()
    for n in (h, w):
        for _ in range(level):
            sizes.add(min(n, cap + n % 2))
            n = reference.analysis_length(n, taps, mode)
    tol = _SAME.get(filters.dtype, _SAME_OTHER)
    bank = None
    for n in sorted(sizes):
        key = (values, filters.dtype, mode, n)
        with _lock:
            known = _pr_cache.get(key)
        if known is None:
            if bank is None:
                bank = torch.tensor(values[0], dtype=torch.float64).view(values[1])
            a_lo, a_hi, s_lo, s_hi = _axis_level(n, bank, mode)
            known = _same(s_lo @ a_lo + s_hi @ a_hi, torch.eye(n, dtype=torch.float64), tol)
            with _lock:
                if len(_pr_cache) >= 16 * _CACHE_SIZE:
                    _pr_cache.clear()
                _pr_cache[key] = known
        if not known:
            return False
    return True


def _evict() -> None:
    """Drop the least recently used entries over _CACHE_SIZE, pinned ones excepted (under _lock)."""
    for old in [k for k in _cache if k not in _pinned][: max(0, len(_cache) - _CACHE_SIZE)]:
        del _cache[old]


def _guard_device_use(key: tuple, entry: tuple) -> None:
    """Pin an entry used under CUDA graph capture; record a use on another stream."""
    packed, made_on = entry
    if made_on is None:
        return
    if torch.cuda.is_current_stream_capturing():
        with _lock:
            _pinned.add(key)
        return
    stream = torch.cuda.current_stream(packed.left.device)
    if stream != made_on:
        for t in (packed.left, packed.right_t):
            if t.numel():
                t.record_stream(stream)
