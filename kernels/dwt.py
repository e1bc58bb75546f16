"""Triton kernels for one level of the separable 2-D DWT and its adjoints (contract: csrc/ops.cpp).

    dwt2d(x, filters, mode)                                  -> (ll, hi)
    dwt2d_adjoint(grad_ll, grad_hi, filters, mode, input_size) -> grad_x
    idwt2d(ll, hi, filters, mode)                            -> y
    idwt2d_adjoint(grad_y, filters, mode)                    -> (grad_ll, grad_hi)

The maths (PyWavelets' conventions, ../shared/REFERENCES.md; the same index maps as csrc/common.h).
Along one axis of length n, every op is built from one *extension map* ``e`` (extended position
``p`` -> signal index in [0, n), or "zero") and one stride-2 correlation with taps ``t[0..L)``:

    split:  c[i] = sum_{m < L} t[m] * x[e(2i + m + OFF)]                       i in [0, K)
    merge:  y[r] = sum_{(i, m) : e(2i + m + OFF) = r} t[m] * c[i]              r in [0, n)

merge is the exact transpose of split with the same map and taps, so the four ops are two kernels:

    op               kernel   map e                                   taps t        OFF
    dwt2d            split    the mode's extension (symmetric, ...)   dec reversed  2 - L
    dwt2d_adjoint    merge    the same                                dec reversed  2 - L
    idwt2d           merge    zero (non-periodization)                rec as stored 2 - L
    idwt2d_adjoint   split    zero (non-periodization)                rec as stored 2 - L

For periodization ``OFF = 1 - L/2`` and the map is ``min(p mod n', n - 1)`` with n' = n rounded up
to even (odd n repeats its last sample); the synthesis pair uses it with n = 2M (a plain wrap).
Reversed dec taps turn PyWavelets' convolution ``sum_j f[j] x~[2i + 1 - j]`` into the correlation
above (j = L - 1 - m). In 2-D the maps and taps act separably on rows and columns, giving the four
bands ll = (lo, lo), cH = (hi along H, lo along W), cV = (lo, hi), cD = (hi, hi).

Why merge is a *gather*. The adjoint of "extend, then correlate" overlap-adds every extended
position p back onto the sample e(p) -- for non-periodic modes the boundary extension folds back,
which is why it is not the inverse transform. Scattering would need atomics (non-deterministic in
floating point); instead each output sample r enumerates its preimages {p : e(p) = r} inside the
extended range [OFF, OFF + 2K + L - 2). They form at most two arithmetic progressions
("families") of step P, the period of the map: p = r + qP (every mode) and p = R - r + qP (the
mirror images of symmetric, R = 2n - 1, and reflect, R = 2n - 2; for odd-n periodization the
repeated last sample, p = n + q n', which is R = 2n - 1 restricted to r = n - 1). A program
computes, with scalar integer arithmetic, the range of q that can hit the extended range for its
tile of r, so an interior tile runs exactly one copy and only boundary tiles (or signals shorter
than the filter, where the reflections repeat) run more. For a preimage p the contributing pairs
are i = (p - OFF - phase) / 2 - j, m = phase + 2j, j < L/2, phase = (p - OFF) mod 2.

Kernel layout. One program computes a BH x BW tile of outputs of one (n, c) plane, for all four
bands at once (split) or from all four bands at once (merge): rows and columns are fused, nothing
intermediate goes to global memory. The grid is (N*C planes, row tiles, column tiles). The W taps
are a third block dimension: split loads the [BH, BW, L] block x[e(2i + m + OFF), e(2k + n + OFF)]
for one H tap m at a time and reduces it over n with the lo and hi W taps (the load serves all
four bands); merge does the same over j with the four coefficient bands. The boundary maps are
computed in-kernel with integer arithmetic (floor-mod, mirror); mode and filter length are
``tl.constexpr``, so the branches of the other modes compile away. The taps are loaded from the
``filters`` tensor (2 x L scalars, cached) rather than baked in as constants: one compiled kernel
serves every wavelet of a length, and the analysis reversal is an index (L - 1 - m), not a copy.

Tiny planes (at most 64 samples, for split, or coefficients, for merge, per axis) take a "dense"
path instead: there a filter longer than the signal wraps the extension many times, and the loops
above would pay once per wrap. A program builds the folded 1-D operators A_a[sample, coefficient]
= sum_m t_a[m] [e(2i + m + OFF) == sample] by evaluating the forward map for every (i, m) -- no
preimages to enumerate -- and contracts them with the whole plane by tl.dot (input_precision
"ieee": TF32 would miss the float32 contract): split is A_a^T X B_b, merge sum_ab A_a G_ab B_b^T.

Cost and what is not known. Split does L * next_pow2(L) multiply-adds per output position (all
four bands share them) and merge 4 * (L/2) * next_pow2(L/2) per output sample: a direct
(non-separable) form, so the loads of an input tile are re-read from L1 about L^2 / 4 times. For
short filters (haar, db2-db4) that should be cheap next to the DRAM traffic; for db20 a separable
two-stage kernel through shared memory (the CUDA backend) should do better. None of this has been
timed on a GPU: these kernels were written and tested on a CPU-only machine under
TRITON_INTERPRET=1 (and compiled for sm_90 offline, never run there), so the block-size rule
below is a reasoned starting point, not a tuned one. Loads are coalesced along W when W is the
contiguous dimension; for channels_last inputs the contiguous dimension is C, which this grid puts
in different programs (they share cache lines through L2 only) -- a channels_last-specialised
tiling over C is future work. Multilevel Haar (2 taps) does not use these kernels level by level:
kernels/haar.py runs all J levels (and their adjoint) in one pass.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.errors import OutOfResources

from wavefuse.backends import _version_tuple
from wavefuse.ops._common import empty_4d, empty_bands, is_channels_last
from wavefuse.reference import analysis_length, synthesis_length

# Mode codes (constexpr in the kernels). Each names a boundary-extension map of csrc/common.h.
ZERO: tl.constexpr = tl.constexpr(0)
SYMMETRIC: tl.constexpr = tl.constexpr(1)
REFLECT: tl.constexpr = tl.constexpr(2)
PERIODIC: tl.constexpr = tl.constexpr(3)
PERIODIZATION: tl.constexpr = tl.constexpr(4)
_MODE_CODE = {"zero": 0, "symmetric": 1, "reflect": 2, "periodic": 3, "periodization": 4}
# Preimages of r under a map form one progression r + qP, plus a mirrored one R - r + qP for
# symmetric, reflect and (odd n) periodization: the number of progressions per mode code.
_FAMILIES = {0: 1, 1: 2, 2: 2, 3: 1, 4: 2}

# ---- block-size rule -----------------------------------------------------------------------------
# A program's live blocks hold `per_output` values per output: one [BH, BW, TAPS] input block for
# split (TAPS = next_pow2(L)), four band blocks [BH, BW, HALF_TAPS] for merge (HALF_TAPS =
# next_pow2(L/2)). Their size is capped at _BLOCK_ELEMENTS (32 values per thread with the default
# 4 warps), so long filters get smaller output tiles; a tile never has fewer than
# _MIN_TILE_OUTPUTS outputs (it would starve the threads) nor more than _MAX_TILE_OUTPUTS (the
# accumulators: 4 bands x 8 per thread). Tiles are as wide as possible up to _MAX_TILE_W columns,
# so that a row of loads or stores spans 32 consecutive coefficients (128 B of float32: whole cache
# lines) when W is contiguous. Checked only by compiling for sm_90 offline (triton 3.8's ptxas, no
# GPU): at these sizes no variant spills (split 149-254 registers per thread, merge 94-128); the
# speed is unmeasured.
_BLOCK_ELEMENTS = 4096
_MIN_TILE_OUTPUTS = 16
_MAX_TILE_OUTPUTS = 1024
_MAX_TILE_W = 32
# Tiny planes take the "dense" path: when the axis that a program contracts in full (the samples
# for split, the coefficients for merge) is at most _DENSE_MAX_FULL long on both axes, a program
# builds the folded 1-D operators (its tile x the whole axis) and contracts them with tl.dot, whose
# operands need at least _DOT_MIN rows and columns; the [tile, axis, taps] compare block that builds
# an operator holds at most _DENSE_BLOCK_ELEMENTS. Such planes are where a filter longer than the
# signal makes the extension wrap many times, which the general paths pay for once per wrap.
_DENSE_MAX_FULL = 64
_DENSE_MAX_TILE = 32
_DENSE_BLOCK_ELEMENTS = 16384
_DOT_MIN = 16
# tl.dot takes float64 operands from Triton 3.5 on (torch 2.9 and newer); with an older Triton
# (torch 2.6 ships 3.2) float64 planes take the general paths, whatever their size.
_DOT_FLOAT64 = _version_tuple(triton.__version__) >= (3, 5)
# Offsets inside a plane are int32 unless a tensor can address 2**31 elements or more in one plane
# (the plane base is always int64: N * C * plane size may exceed 2**31 long before a plane does).
_INT32_LIMIT = 2**31 - 1


def _tile(out_h: int, out_w: int, per_output: int) -> tuple[int, int]:
    outputs = max(_MIN_TILE_OUTPUTS, min(_MAX_TILE_OUTPUTS, _BLOCK_ELEMENTS // per_output))
    bw = min(triton.next_power_of_2(out_w), _MAX_TILE_W, outputs)
    bh = min(triton.next_power_of_2(out_h), max(outputs // bw, 1))
    return bh, bw


def dense_fits(full: int, acc_float64: bool) -> bool:
    """Whether a plane whose contracted axes are at most ``full`` long takes the dense path."""
    return full <= _DENSE_MAX_FULL and (_DOT_FLOAT64 or not acc_float64)


def _dense_tile(size: int, cap: int | None = None) -> int:
    cap = _DENSE_MAX_TILE if cap is None else cap
    return max(_DOT_MIN, min(triton.next_power_of_2(size), cap))


#: CUDA's limit on a launch grid's 2nd and 3rd axes (the 1st, planes, allows 2^31 - 1).
MAX_GRID_YZ = 65535


def checked_grid(grid: tuple[int, int, int], what: str, shape) -> tuple[int, int, int]:
    """grid (planes, row tiles, column tiles), or a clear error where CUDA could not launch it
    (checked under the interpreter too, so that CPU tests see what a GPU would do)."""
    if max(grid[1:]) > MAX_GRID_YZ:
        raise ValueError(
            f"backend='triton': {what} of a {tuple(shape)} tensor needs {grid[1]} x {grid[2]} "
            f"tiles per plane, over CUDA's limit of {MAX_GRID_YZ} on either axis (an image this "
            "tall or wide, with this filter); use backend='cuda' or backend='cpu'"
        )
    return grid


def launched(launch) -> bool:
    """Runs ``launch()``; False, with nothing launched, where Triton refuses the compiled kernel
    for want of resources (OutOfResources: shared memory above the device's limit, as the dense
    float64 paths need on GPUs before Hopper: 128 to 192 KiB against 99 KiB on sm_86/89). The
    caller then takes a path that needs less."""
    try:
        launch()
    except OutOfResources:
        return False
    return True


def _launch_dense_or(t: Tensor, dense: bool, launch, tiled) -> None:
    """``launch()`` under ``_device_guard(t)``; where a dense launch is refused for shared memory
    (``launched``), ``tiled()``, which needs little, after the guard (its lock is not reentrant)."""
    with _device_guard(t):
        if not dense:
            launch()
            return
        ok = launched(launch)
    if not ok:
        tiled()


def _needs_int64(*tensors: Tensor) -> bool:
    """Whether an offset inside one (n, c) plane (or band) of any tensor can exceed int32."""
    return any(
        sum((s - 1) * st for s, st in zip(t.shape[-2:], t.stride()[-2:])) > _INT32_LIMIT
        for t in tensors
    )


# ---- index arithmetic ----------------------------------------------------------------------------


@triton.jit
def _floor_mod(a, n):
    """a mod n in [0, n) for any sign of a (Triton's % truncates, as C's does)."""
    r = a % n
    return tl.where(r < 0, r + n, r)


@triton.jit
def _floor_div(a, n):
    """floor(a / n) for n > 0 (Triton's // truncates towards zero)."""
    return (a - _floor_mod(a, n)) // n


@triton.jit
def _extend(p, n, MODE: tl.constexpr):
    """Signal index in [0, n) that extended position p reads, or -1 where the extension is zero.
    Positions may lie several periods away (filters longer than the signal): maps repeat."""
    if MODE == ZERO:
        idx = tl.where((p >= 0) & (p < n), p, -1)
    elif MODE == SYMMETRIC:  # half-sample mirror ... x1 x0 | x0 x1 ..., period 2n
        q = _floor_mod(p, 2 * n)
        idx = tl.where(q < n, q, 2 * n - 1 - q)
    elif MODE == REFLECT:  # whole-sample mirror ... x2 x1 | x0 x1 ..., period 2n - 2 (n = 1: 0)
        q = _floor_mod(p, tl.maximum(2 * n - 2, 1))
        idx = tl.where(q < n, q, 2 * n - 2 - q)
    elif MODE == PERIODIC:
        idx = _floor_mod(p, n)
    else:  # PERIODIZATION: periodic over n rounded up to even, the last sample repeated
        idx = tl.minimum(_floor_mod(p, n + n % 2), n - 1)
    return idx


@triton.jit
def _period(n, MODE: tl.constexpr):
    """Period of the extension map (ZERO: no repetition; the value is then unused)."""
    if MODE == SYMMETRIC:
        per = 2 * n
    elif MODE == REFLECT:
        per = tl.maximum(2 * n - 2, 1)
    elif MODE == PERIODIZATION:
        per = n + n % 2
    else:  # PERIODIC, ZERO
        per = n
    return per


@triton.jit
def _family(r, r_first, r_last, n, lo, hi, MODE: tl.constexpr, FAMILY: tl.constexpr):
    """Preimage progression FAMILY of the output indices r (a vector) of a tile whose valid
    indices are [r_first, r_last]: p(q) = sign * r + base + q * period, restricted to lanes
    ``ok``, and the scalar range [q_lo, q_hi] of copies that can land in [lo, hi)."""
    per = _period(n, MODE)
    if FAMILY == 0:
        sign = 1
        base = 0
        ok = r <= r_last
        a, b = r_first, r_last
    elif MODE == SYMMETRIC:
        sign = -1
        base = 2 * n - 1
        ok = r <= r_last
        a, b = r_first, r_last
    elif MODE == REFLECT:  # 0 and n - 1 are their own mirror images: counted by family 0
        sign = -1
        base = 2 * n - 2
        ok = (r >= 1) & (r <= tl.minimum(r_last, n - 2))
        a, b = tl.maximum(r_first, 1), tl.minimum(r_last, n - 2)
    else:  # PERIODIZATION, odd n: position n repeats sample n - 1
        sign = -1
        base = 2 * n - 1
        ok = (r == n - 1) & (r <= r_last) & (n % 2 == 1)
        a = tl.maximum(r_first, n - 1)
        b = tl.where(n % 2 == 1, r_last, a - 1)
    if MODE == ZERO:
        q_lo = 0
        q_hi = 0
    else:
        # p ranges over [sign * a + base, sign * b + base] (or reversed) for this tile
        p_min = tl.minimum(sign * a, sign * b) + base
        p_max = tl.maximum(sign * a, sign * b) + base
        q_lo = -_floor_div(p_max - lo, per)  # ceil((lo - p_max) / per)
        q_hi = _floor_div(hi - 1 - p_min, per)
        q_hi = tl.where(a <= b, q_hi, q_lo - 1)  # empty restriction: no copies
    return sign, base, per, ok, q_lo, q_hi


# ---- the folded 1-D operator (tiny planes) -------------------------------------------------------


@triton.jit
def _folded_operator(
    o, i, n, K, f_ptr, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr,
    ACC: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr, TAP_CHUNK: tl.constexpr,
):  # fmt: skip
    """The 1-D split operator along one axis with its boundary folded in, restricted to samples
    o (BO of them) and coefficients i (BI, valid below K): A_a[o, i] = sum_{m < L} t_a[m] *
    [e(2i + m + OFF) == o], a = lo, hi. Split is c_a = A_a^T x and merge y = sum_a A_a c_a.
    Evaluating the forward map for every (i, m) needs no preimage enumeration, however many
    times the extension wraps around a signal shorter than the filter."""
    a0 = tl.zeros([BO, BI], dtype=ACC)
    a1 = tl.zeros([BO, BI], dtype=ACC)
    for m0 in tl.static_range(0, L, TAP_CHUNK):
        m = m0 + tl.arange(0, TAP_CHUNK)
        m_ok = m < L
        fm = L - 1 - m if REVERSE else m
        t0 = tl.load(f_ptr + fm * sf1, mask=m_ok, other=0.0).to(ACC)
        t1 = tl.load(f_ptr + sf0 + fm * sf1, mask=m_ok, other=0.0).to(ACC)
        src = _extend(2 * i[:, None] + m[None, :] + OFF, n, MODE)  # [BI, TAP_CHUNK]
        src = tl.where((i < K)[:, None] & m_ok[None, :], src, -1)
        hit = src[None, :, :] == o[:, None, None]
        a0 += tl.sum(tl.where(hit, t0[None, None, :], 0.0), axis=2)
        a1 += tl.sum(tl.where(hit, t1[None, None, :], 0.0), axis=2)
    return a0, a1


# ---- split: analysis (dwt2d) and the synthesis adjoint (idwt2d_adjoint) --------------------------


@triton.jit
def _split_tile_direct(
    x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr,
    REVERSE: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """out_ab[i, k] = sum_m t_a[m] sum_n t_b[n] x[e(2i + m + OFF), e(2k + n + OFF)].

    Loop over the L H taps m; for each, one [BH, BW, TAPS] gather of the extended input rows
    2i + m + OFF, reduced over the W taps n with both W filters, feeds all four accumulators.
    """
    tap = tl.arange(0, TAPS)
    tap_ok = tap < L
    f_idx = L - 1 - tap if REVERSE else tap
    tw0 = tl.load(f_ptr + f_idx * sf1, mask=tap_ok, other=0.0).to(ACC)
    tw1 = tl.load(f_ptr + sf0 + f_idx * sf1, mask=tap_ok, other=0.0).to(ACC)
    # extended columns 2k + n + OFF -> signal columns, once for the tile
    col = _extend(2 * k[:, None] + tap[None, :] + OFF, W, MODE)
    col_ok = (col >= 0) & tap_ok[None, :] & (k < Kw)[:, None]
    col = tl.maximum(col, 0)
    col_off = col.to(tl.int64) * sxw if WIDE else col * sxw

    acc_ll = tl.zeros([BH, BW], dtype=ACC)
    acc_h = tl.zeros([BH, BW], dtype=ACC)
    acc_v = tl.zeros([BH, BW], dtype=ACC)
    acc_d = tl.zeros([BH, BW], dtype=ACC)
    for m in range(L):
        row = _extend(2 * i + m + OFF, H, MODE)
        row_ok = (row >= 0) & (i < Kh)
        row = tl.maximum(row, 0)
        row_off = row.to(tl.int64) * sxh if WIDE else row * sxh
        fm = L - 1 - m if REVERSE else m
        th0 = tl.load(f_ptr + fm * sf1).to(ACC)
        th1 = tl.load(f_ptr + sf0 + fm * sf1).to(ACC)
        mask = row_ok[:, None, None] & col_ok[None, :, :]
        xv = tl.load(x_base + row_off[:, None, None] + col_off[None, :, :], mask=mask, other=0.0)
        xv = xv.to(ACC)
        lo = tl.sum(xv * tw0[None, None, :], axis=2)
        hi = tl.sum(xv * tw1[None, None, :], axis=2)
        acc_ll += th0 * lo
        acc_h += th1 * lo
        acc_v += th0 * hi
        acc_d += th1 * hi
    return acc_ll, acc_h, acc_v, acc_d


@triton.jit
def _split_tile_dense(
    x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    NPH: tl.constexpr, NPW: tl.constexpr, TAP_CHUNK: tl.constexpr,
):  # fmt: skip
    """Split of a tiny plane (H, W <= _DENSE_MAX_FULL) as out_ab = A_a^T X B_b with the folded
    operators: the whole plane is one [NPH, NPW] load, and two small matrix products per band
    replace the tap loop (whose cost grows with the number of wraps when the filter is longer
    than the signal)."""
    rows = tl.arange(0, NPH)
    cols = tl.arange(0, NPW)
    ah0, ah1 = _folded_operator(rows, i, H, Kh, f_ptr, sf0, sf1, L, OFF, MODE, REVERSE, ACC,
                                NPH, BH, TAP_CHUNK)  # fmt: skip
    aw0, aw1 = _folded_operator(cols, k, W, Kw, f_ptr, sf0, sf1, L, OFF, MODE, REVERSE, ACC,
                                NPW, BW, TAP_CHUNK)  # fmt: skip
    x_ok = (rows < H)[:, None] & (cols < W)[None, :]
    if WIDE:
        rows, cols = rows.to(tl.int64), cols.to(tl.int64)
    xv = tl.load(x_base + rows[:, None] * sxh + cols[None, :] * sxw, mask=x_ok, other=0.0)
    xv = xv.to(ACC)
    # "ieee": exact float32 products (TF32 would miss the 1e-5 float32 contract)
    x_lo = tl.dot(xv, aw0, out_dtype=ACC, input_precision="ieee")  # [NPH, BW], low-pass along W
    x_hi = tl.dot(xv, aw1, out_dtype=ACC, input_precision="ieee")
    ah0t, ah1t = tl.trans(ah0), tl.trans(ah1)
    acc_ll = tl.dot(ah0t, x_lo, out_dtype=ACC, input_precision="ieee")
    acc_h = tl.dot(ah1t, x_lo, out_dtype=ACC, input_precision="ieee")
    acc_v = tl.dot(ah0t, x_hi, out_dtype=ACC, input_precision="ieee")
    acc_d = tl.dot(ah1t, x_hi, out_dtype=ACC, input_precision="ieee")
    return acc_ll, acc_h, acc_v, acc_d


@triton.jit
def _dwt2d_fwd_kernel(
    x_ptr, f_ptr, ll_ptr, hi_ptr,
    C, H, W, Kh, Kw,
    sxn, sxc, sxh, sxw,
    sf0, sf1,
    sln, slc, slh, slw,
    shn, shc, shb, shh, shw,
    L: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    DENSE: tl.constexpr, NPH: tl.constexpr, NPW: tl.constexpr, TAP_CHUNK: tl.constexpr,
    LL_ONLY: tl.constexpr,
):  # fmt: skip
    """Split: one BH x BW tile of all four coefficient bands of one (n, c) plane,
    out_ab[i, k] = sum_m sum_n t_a[m] t_b[n] x[e(2i + m + OFF), e(2k + n + OFF)]. LL_ONLY
    stores the ll band alone (the detail bands' arithmetic is then dead code; hi_ptr unused)."""
    if MODE == PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    i = tl.program_id(1) * BH + tl.arange(0, BH)
    k = tl.program_id(2) * BW + tl.arange(0, BW)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    x_base = x_ptr + pn * sxn + pc * sxc
    if DENSE:
        acc_ll, acc_h, acc_v, acc_d = _split_tile_dense(
            x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
            L, OFF, MODE, REVERSE, ACC, WIDE, BH, BW, NPH, NPW, TAP_CHUNK,
        )  # fmt: skip
    else:
        acc_ll, acc_h, acc_v, acc_d = _split_tile_direct(
            x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
            L, OFF, TAPS, MODE, REVERSE, ACC, WIDE, BH, BW,
        )  # fmt: skip

    out_ok = (i < Kh)[:, None] & (k < Kw)[None, :]
    if WIDE:
        i, k = i.to(tl.int64), k.to(tl.int64)
    dtype = ll_ptr.dtype.element_ty
    ll_off = i[:, None] * slh + k[None, :] * slw
    tl.store(ll_ptr + pn * sln + pc * slc + ll_off, acc_ll.to(dtype), mask=out_ok)
    if not LL_ONLY:
        hi_base = hi_ptr + pn * shn + pc * shc
        hi_off = i[:, None] * shh + k[None, :] * shw
        hv_base = hi_base + shb  # chained adds: 2 * shb may overflow int32 where shb does not
        tl.store(hi_base + hi_off, acc_h.to(dtype), mask=out_ok)
        tl.store(hv_base + hi_off, acc_v.to(dtype), mask=out_ok)
        tl.store(hv_base + shb + hi_off, acc_d.to(dtype), mask=out_ok)


# ---- merge: the analysis adjoint (dwt2d_adjoint) and synthesis (idwt2d) --------------------------


@triton.jit
def _merge_tile_sparse(
    ll_base, hi_base, f_ptr, r, c, r0, r_last, c0, c_last, H, W, Kh, Kw,
    slh, slw, shb, shh, shw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    FAMILIES: tl.constexpr, REVERSE: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr, LL_ONLY: tl.constexpr,
):  # fmt: skip
    """Gather form of the transpose of split (LL_ONLY: from the ll band alone, hi_base unused):
    y[r, c] = sum over preimages pH of r, pW of c, and j, jj < L/2 of
              t_a[phH + 2j] t_b[phW + 2jj] g_ab[(pH - OFF) // 2 - j, (pW - OFF) // 2 - jj],
    phH = (pH - OFF) mod 2. Loops: preimage copies of the columns (runtime bounds per tile), of
    the rows, then the L/2 H taps j; the W taps jj are the third block dimension, reduced with
    both W filters over the four bands loaded at the same indices.
    """
    HALF: tl.constexpr = L // 2
    jj = tl.arange(0, HALF_TAPS)
    end_h = OFF + 2 * Kh + L - 2  # extended ranges [OFF, end)
    end_w = OFF + 2 * Kw + L - 2
    hv_base = hi_base + shb  # chained adds: 2 * shb may overflow int32 where shb does not
    hd_base = hv_base + shb
    fam_h0 = _family(r, r0, r_last, H, OFF, end_h, MODE, 0)
    fam_h1 = _family(r, r0, r_last, H, OFF, end_h, MODE, FAMILIES - 1)
    acc = tl.zeros([BH, BW], dtype=ACC)
    for fam_w in tl.static_range(FAMILIES):
        sg_w, bs_w, per_w, ok_w, qlo_w, qhi_w = _family(c, c0, c_last, W, OFF, end_w, MODE, fam_w)
        for q_w in range(qlo_w, qhi_w + 1):
            p_w = sg_w * c + bs_w + q_w * per_w
            in_w = ok_w & (p_w >= OFF) & (p_w < end_w)
            u_w = tl.where(in_w, p_w - OFF, 0)
            # coefficient column k = u // 2 - jj meets W tap m = u % 2 + 2 jj
            kw = (u_w // 2)[:, None] - jj[None, :]
            mw = (u_w % 2)[:, None] + 2 * jj[None, :]
            w_ok = in_w[:, None] & (jj < HALF)[None, :] & (kw >= 0) & (kw < Kw)
            kw = tl.where(w_ok, kw, 0)
            fw = L - 1 - mw if REVERSE else mw
            tw0 = tl.load(f_ptr + fw * sf1, mask=w_ok, other=0.0).to(ACC)
            tw1 = tl.load(f_ptr + sf0 + fw * sf1, mask=w_ok, other=0.0).to(ACC)
            if WIDE:
                kw = kw.to(tl.int64)
            kl_off = kw * slw
            kh_off = kw * shw
            for fam_h in tl.static_range(FAMILIES):
                sg_h, bs_h, per_h, ok_h, qlo_h, qhi_h = fam_h0 if fam_h == 0 else fam_h1
                for q_h in range(qlo_h, qhi_h + 1):
                    p_h = sg_h * r + bs_h + q_h * per_h
                    in_h = ok_h & (p_h >= OFF) & (p_h < end_h)
                    u_h = tl.where(in_h, p_h - OFF, 0)
                    for j in range(HALF):
                        ih = u_h // 2 - j
                        h_ok = in_h & (ih >= 0) & (ih < Kh)
                        ih = tl.where(h_ok, ih, 0)
                        mh = u_h % 2 + 2 * j
                        fh = L - 1 - mh if REVERSE else mh
                        th0 = tl.load(f_ptr + fh * sf1, mask=h_ok, other=0.0).to(ACC)
                        th1 = tl.load(f_ptr + sf0 + fh * sf1, mask=h_ok, other=0.0).to(ACC)
                        if WIDE:
                            ih = ih.to(tl.int64)
                        mask = h_ok[:, None, None] & w_ok[None, :, :]
                        l_off = (ih * slh)[:, None, None] + kl_off[None, :, :]
                        b_off = (ih * shh)[:, None, None] + kh_off[None, :, :]
                        g_ll = tl.load(ll_base + l_off, mask=mask, other=0.0).to(ACC)
                        if LL_ONLY:
                            acc += th0[:, None] * tl.sum(g_ll * tw0[None, :, :], axis=2)
                        else:
                            g_h = tl.load(hi_base + b_off, mask=mask, other=0.0).to(ACC)
                            g_v = tl.load(hv_base + b_off, mask=mask, other=0.0).to(ACC)
                            g_d = tl.load(hd_base + b_off, mask=mask, other=0.0).to(ACC)
                            # H band lo: ll (W lo) + cV (W hi); H band hi: cH (W lo) + cD (W hi)
                            z_lo = tl.sum(g_ll * tw0[None, :, :] + g_v * tw1[None, :, :], axis=2)
                            z_hi = tl.sum(g_h * tw0[None, :, :] + g_d * tw1[None, :, :], axis=2)
                            acc += th0[:, None] * z_lo + th1[:, None] * z_hi
    return acc


@triton.jit
def _merge_tile_dense(
    ll_base, hi_base, f_ptr, r, c, H, W, Kh, Kw, slh, slw, shb, shh, shw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    KPH: tl.constexpr, KPW: tl.constexpr, TAP_CHUNK: tl.constexpr, LL_ONLY: tl.constexpr,
):  # fmt: skip
    """Merge for tiny planes (every K <= _DENSE_MAX_FULL): y = sum_ab A_a G_ab B_b^T with the
    folded operators, all coefficients of the plane in one [KPH, KPW] load per band (LL_ONLY:
    y = A_lo G_ll B_lo^T, hi_base unused)."""
    ih = tl.arange(0, KPH)
    kw = tl.arange(0, KPW)
    ah0, ah1 = _folded_operator(r, ih, H, Kh, f_ptr, sf0, sf1, L, OFF, MODE, REVERSE, ACC,
                                BH, KPH, TAP_CHUNK)  # fmt: skip
    aw0, aw1 = _folded_operator(c, kw, W, Kw, f_ptr, sf0, sf1, L, OFF, MODE, REVERSE, ACC,
                                BW, KPW, TAP_CHUNK)  # fmt: skip
    g_ok = (ih < Kh)[:, None] & (kw < Kw)[None, :]
    if WIDE:
        ih, kw = ih.to(tl.int64), kw.to(tl.int64)
    l_off = ih[:, None] * slh + kw[None, :] * slw
    b_off = ih[:, None] * shh + kw[None, :] * shw
    g_ll = tl.load(ll_base + l_off, mask=g_ok, other=0.0).to(ACC)
    # "ieee": exact float32 products (TF32 would miss the 1e-5 float32 contract). out_dtype=ACC on
    # every dot: Triton 3.5-3.7 assert that an accumulator's dtype is out_dtype (default float32),
    # so a float64 accumulator fails there without it.
    # z_lo: [BH, KPW], W band lo, H bands summed
    z_lo = tl.dot(ah0, g_ll, out_dtype=ACC, input_precision="ieee")
    if LL_ONLY:
        acc = tl.dot(z_lo, tl.trans(aw0), out_dtype=ACC, input_precision="ieee")
    else:
        g_h = tl.load(hi_base + b_off, mask=g_ok, other=0.0).to(ACC)
        hv_base = hi_base + shb  # chained adds: 2 * shb may overflow int32 where shb does not
        g_v = tl.load(hv_base + b_off, mask=g_ok, other=0.0).to(ACC)
        g_d = tl.load(hv_base + shb + b_off, mask=g_ok, other=0.0).to(ACC)
        z_lo = tl.dot(ah1, g_h, z_lo, out_dtype=ACC, input_precision="ieee")
        z_hi = tl.dot(ah0, g_v, out_dtype=ACC, input_precision="ieee")
        z_hi = tl.dot(ah1, g_d, z_hi, out_dtype=ACC, input_precision="ieee")
        acc = tl.dot(z_lo, tl.trans(aw0), out_dtype=ACC, input_precision="ieee")
        acc = tl.dot(z_hi, tl.trans(aw1), acc, out_dtype=ACC, input_precision="ieee")
    return acc


@triton.jit
def _dwt2d_adjoint_kernel(
    ll_ptr, hi_ptr, f_ptr, y_ptr,
    C, H, W, Kh, Kw,
    sln, slc, slh, slw,
    shn, shc, shb, shh, shw,
    sf0, sf1,
    syn, syc, syh, syw,
    L: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr, FAMILIES: tl.constexpr,
    REVERSE: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr,
    BW: tl.constexpr, DENSE: tl.constexpr, KPH: tl.constexpr, KPW: tl.constexpr,
    TAP_CHUNK: tl.constexpr,
):  # fmt: skip
    """Merge: one BH x BW tile of one (n, c) plane from all four bands,
    y[r, c] = sum_ab sum over (i, m), (k, n) with e(2i + m + OFF) = r, e(2k + n + OFF) = c of
    t_a[m] t_b[n] g_ab[i, k]."""
    if MODE == PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    r0 = tl.program_id(1) * BH
    c0 = tl.program_id(2) * BW
    r = r0 + tl.arange(0, BH)
    c = c0 + tl.arange(0, BW)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    ll_base = ll_ptr + pn * sln + pc * slc
    hi_base = hi_ptr + pn * shn + pc * shc
    if DENSE:
        acc = _merge_tile_dense(
            ll_base, hi_base, f_ptr, r, c, H, W, Kh, Kw, slh, slw, shb, shh, shw, sf0, sf1,
            L, OFF, MODE, REVERSE, ACC, WIDE, BH, BW, KPH, KPW, TAP_CHUNK, False,
        )  # fmt: skip
    else:
        r_last = tl.minimum(r0 + BH, H) - 1
        c_last = tl.minimum(c0 + BW, W) - 1
        acc = _merge_tile_sparse(
            ll_base, hi_base, f_ptr, r, c, r0, r_last, c0, c_last, H, W, Kh, Kw,
            slh, slw, shb, shh, shw, sf0, sf1,
            L, OFF, HALF_TAPS, MODE, FAMILIES, REVERSE, ACC, WIDE, BH, BW, False,
        )  # fmt: skip
    out_ok = (r < H)[:, None] & (c < W)[None, :]
    if WIDE:
        r, c = r.to(tl.int64), c.to(tl.int64)
    y_off = pn * syn + pc * syc + r[:, None] * syh + c[None, :] * syw
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=out_ok)


# ---- host launchers (the contract of csrc/ops.cpp) -----------------------------------------------


def _acc_dtype(dtype: torch.dtype):
    """float64 accumulates in float64, every other float type in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


#: Triton's interpreter (TRITON_INTERPRET=1, read when the kernels are decorated) patches
#: triton.language module-wide while a kernel runs, so launches from concurrent Python threads break
#: each other ("Did you forget to add @triton.jit?"): interpreted launches are serialised.
_INTERPRETED = type(_dwt2d_fwd_kernel).__name__ == "InterpretedFunction"
_INTERPRETER_LOCK = threading.Lock()


@contextlib.contextmanager
def _device_guard(t: Tensor):
    """Launch on the tensor's own GPU (Triton launches on the current device); one interpreted
    launch at a time."""
    with (
        torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext(),
        _INTERPRETER_LOCK if _INTERPRETED else contextlib.nullcontext(),
    ):
        yield


def _tap_chunk(taps: int, *dims: int) -> int:
    """Taps per step of ``_folded_operator``: its [dims..., chunk] block fits the budget."""
    budget = _DENSE_BLOCK_ELEMENTS // (dims[0] * dims[1])
    return max(1, min(triton.next_power_of_2(taps), budget))


def _split(
    x: Tensor, filters: Tensor, mode_code: int, reverse: bool, ll: Tensor, hi: Tensor | None,
    dense: bool | None = None,
):  # fmt: skip
    """hi None: the ll band alone (LL_ONLY)."""
    if ll.numel() == 0:
        return
    n, c, h, w = x.shape
    kh, kw = ll.shape[-2:]
    taps = filters.shape[-1]
    taps_block = triton.next_power_of_2(taps)
    if dense is None:
        dense = dense_fits(max(h, w), x.dtype == torch.float64)
    if dense:
        bh, bw = _dense_tile(kh), _dense_tile(kw)
        nph, npw = _dense_tile(h, _DENSE_MAX_FULL), _dense_tile(w, _DENSE_MAX_FULL)
        chunk = _tap_chunk(taps, max(nph, npw), max(bh, bw))
    else:
        bh, bw = _tile(kh, kw, taps_block)
        nph = npw = chunk = 1  # unused
    grid = checked_grid((n * c, triton.cdiv(kh, bh), triton.cdiv(kw, bw)), "the analysis", x.shape)

    ll_only = hi is None
    hi_strides = (0,) * 5 if ll_only else hi.stride()
    wide = _needs_int64(x, ll) if ll_only else _needs_int64(x, ll, hi)

    def launch():
        _dwt2d_fwd_kernel[grid](
            x, filters, ll, ll if ll_only else hi,
            c, h, w, kh, kw,
            *x.stride(), *filters.stride(), *ll.stride(), *hi_strides,
            L=taps, TAPS=taps_block, MODE=mode_code, REVERSE=reverse,
            ACC=_acc_dtype(x.dtype), WIDE=wide, BH=bh, BW=bw,
            DENSE=dense, NPH=nph, NPW=npw, TAP_CHUNK=chunk, LL_ONLY=ll_only,
        )  # fmt: skip

    _launch_dense_or(
        x, dense, launch, lambda: _split(x, filters, mode_code, reverse, ll, hi, dense=False)
    )


def _merge(
    ll: Tensor, hi: Tensor, filters: Tensor, mode_code: int, reverse: bool, y: Tensor,
    dense: bool | None = None,
):  # fmt: skip
    if y.numel() == 0:
        return
    n, c, kh, kw = ll.shape
    h, w = y.shape[-2:]
    taps = filters.shape[-1]
    half_block = triton.next_power_of_2(taps // 2)
    if dense is None:
        dense = dense_fits(max(kh, kw), y.dtype == torch.float64)
    if dense:
        bh, bw = _dense_tile(h), _dense_tile(w)
        kph, kpw = _dense_tile(kh, _DENSE_MAX_FULL), _dense_tile(kw, _DENSE_MAX_FULL)
        chunk = _tap_chunk(taps, max(bh, bw), max(kph, kpw))
    else:
        bh, bw = _tile(h, w, 4 * half_block)
        kph = kpw = chunk = 1  # unused
    grid = checked_grid((n * c, triton.cdiv(h, bh), triton.cdiv(w, bw)), "the synthesis", y.shape)

    def launch():
        _dwt2d_adjoint_kernel[grid](
            ll, hi, filters, y,
            c, h, w, kh, kw,
            *ll.stride(), *hi.stride(), *filters.stride(), *y.stride(),
            L=taps, HALF_TAPS=half_block, MODE=mode_code, FAMILIES=_FAMILIES[mode_code],
            REVERSE=reverse, ACC=_acc_dtype(y.dtype), WIDE=_needs_int64(ll, hi, y),
            BH=bh, BW=bw, DENSE=dense, KPH=kph, KPW=kpw, TAP_CHUNK=chunk,
        )  # fmt: skip

    _launch_dense_or(
        y, dense, launch, lambda: _merge(ll, hi, filters, mode_code, reverse, y, dense=False)
    )


def _synthesis_code(mode: str) -> int:
    """The synthesis pair's map: a crop (zero map) or, for periodization, a wrap over 2M."""
    return _MODE_CODE["periodization"] if mode == "periodization" else _MODE_CODE["zero"]


def dwt2d(x: Tensor, filters: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """One analysis level. x: (N, C, H, W), filters: (2, L) dec [lo; hi]
    -> ll: (N, C, h, w), hi: (N, C, 3, h, w) (cH, cV, cD), h = analysis_length(H, L, mode)."""
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    ll, hi = empty_4d(x, n, c, kh, kw), empty_bands(x, n, c, kh, kw)
    _split(x, filters, _MODE_CODE[mode], True, ll, hi)
    return ll, hi


def dwt2d_ll(x: Tensor, filters: Tensor, mode: str, dtype: torch.dtype) -> Tensor:
    """The approximation band of one analysis level alone (``dwt2d(x)[0]`` in ``dtype``, the
    detail bands never formed): x (N, C, H, W) in any float dtype -> (N, C, h, w)."""
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    ll = torch.empty((n, c, kh, kw), dtype=dtype, device=x.device, memory_format=fmt)
    _split(x, filters, _MODE_CODE[mode], True, ll, None)
    return ll


def dwt2d_adjoint(
    grad_ll: Tensor, grad_hi: Tensor, filters: Tensor, mode: str, input_size: list[int]
) -> Tensor:
    """Transpose of ``dwt2d``: (N, C, h, w) and (N, C, 3, h, w) -> (N, C, H, W), [H, W] =
    input_size. For non-periodic modes the boundary extension folds back (not the inverse)."""
    n, c = grad_ll.shape[:2]
    h, w = input_size
    y = empty_4d(grad_ll, n, c, h, w)
    _merge(grad_ll, grad_hi, filters, _MODE_CODE[mode], True, y)
    return y


def idwt2d(ll: Tensor, hi: Tensor, filters: Tensor, mode: str) -> Tensor:
    """One synthesis level. ll: (N, C, h, w), hi: (N, C, 3, h, w), filters: (2, L) rec [lo; hi]
    -> (N, C, synthesis_length(h), synthesis_length(w)), not cropped (as pywt.idwt2)."""
    n, c, kh, kw = ll.shape
    taps = filters.shape[-1]
    y = empty_4d(ll, n, c, synthesis_length(kh, taps, mode), synthesis_length(kw, taps, mode))
    _merge(ll, hi, filters, _synthesis_code(mode), False, y)
    return y


def idwt2d_adjoint(grad_y: Tensor, filters: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Transpose of ``idwt2d``: (N, C, H, W) -> ll (N, C, h, w), hi (N, C, 3, h, w), where
    H = synthesis_length(h) (the ops layer has checked that H, W are such lengths)."""
    n, c, h, w = grad_y.shape
    taps = filters.shape[-1]
    if mode == "periodization":
        mh, mw = h // 2, w // 2
    else:
        mh, mw = (h + taps - 2) // 2, (w + taps - 2) // 2
    ll, hi = empty_4d(grad_y, n, c, mh, mw), empty_bands(grad_y, n, c, mh, mw)
    _split(grad_y, filters, _synthesis_code(mode), False, ll, hi)
    return ll, hi
