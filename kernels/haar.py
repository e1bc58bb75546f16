"""Triton kernels for the multilevel 2-D Haar transform in one pass (contract: wavefuse/ops/haar.py).

    haar_wavedec2(x, level, mode)                              -> [ll_J, hi_J, ..., hi_1]
    haar_wavedec2_adjoint(grad_ll, grad_hi, mode, input_size)  -> grad_x
    wavelet_pgd_step(x_adv, grad, x_nat, <bounds>, mode, level, hf_scale, norm)  -> None (in place)

ll_J: (N, C, h_J, w_J); hi_j: (N, C, 3, h_j, w_j), bands cH, cV, cD; lists coarsest first (as
pywt.wavedec2). Same coefficients as ``pywt.wavedec2(x, "haar", mode, J)`` in every mode.

The maths. Orthonormal Haar on a 2 x 2 block [[a, b], [c, d]] of the previous approximation gives
ll = (a+b+c+d)/2, cH = (a+b-c-d)/2, cV = (a-b+c-d)/2, cD = (a-b-c+d)/2 (the 0.5 is exact, where
pywt multiplies by 1/sqrt(2) twice: float64 differs by an ulp). Every mode has n_j = ceil(n_{j-1}/2)
coefficients per axis, and a level only needs an extension sample when its input length m is odd:
ONE sample, at position m, which is 0 (zero), a[m-1] (symmetric, periodization: odd lengths repeat
their last sample), a[m-2] (reflect; a[0] when m = 1, as reference.extension_index) or a[0]
(periodic). So J levels read disjoint aligned 2^J x 2^J blocks of one *padded* signal x^ on
[0, N^), N^ = n_J 2^J: x^ = x on [0, n), and the pad [n, N^) is the disjoint union of one block
B_j = [m 2^(j-1), (m+1) 2^(j-1)) per level j whose input length m = n_(j-1) is odd. If x^ on B_j is
a copy of the block whose level-(j-1) approximation is the extension sample (symmetric: the block
before, 2^(j-1) back; reflect: two blocks back; periodic: block 0; zero: zeros), the level-(j-1)
approximation of x^ at m IS that sample, and the plain, boundary-free Haar pyramid on x^ gives
exactly PyWavelets' coefficients at the indices below n_j (the rest are never stored). The copy
map pi (pad position -> input position) is resolved level by level from J down to 1 (a copy's
source may lie in a lower level's pad) with integer arithmetic per axis; in 2-D it is separable,
x^[p, q] = x[pi_H(p), pi_W(q)], because every level extends rows and columns independently.

* Analysis (``_haar_fwd_kernel``): one gather of a tile of x^ through pi (only the last tile of an
  axis reads pad positions: at most 2^J - 1 rows or columns, re-read from cache; periodic reads
  them from the first block of the axis), then J levels in registers (reshape to [h, 2, w, 2],
  split the pairs), every level's three detail bands and the final ll stored from registers. No
  boundary branch in the pyramid; every mode and size is one launch reading x once (up to the
  deep-level fallbacks below).
* Adjoint (``_haar_adjoint_kernel``): the analysis is A = crop . P . Pi (P the plain pyramid,
  orthonormal), so A^T = Pi^T . P^T . crop^T: synthesise level by level from the coefficients
  (zeros beyond n_j) and, after each level, fold every pad sample back onto its copy source (for
  non-periodic modes that is what makes the backward the adjoint and not the inverse; see
  reference.py). Symmetric and periodization fold onto the other half of the same pair: done
  before the synthesis as a select (the last pair's H detail set to its approximation synthesises
  (sqrt2 a, 0): the pair plus its fold). Zero needs nothing. Reflect (onto m - 2) and periodic
  (onto 0) move data across pairs: one masked reduction over the tile axis picks the pad row (or
  column) and a select adds it to its target, so source and target must share a tile: on an axis
  that folds, tiles are at least 2^(J+1) wide unless one tile covers it, reflect's grid is aligned
  to end at N^ (its targets lie in the last 2^J + 2^(J-1) samples) and periodic's grid is rotated
  by 2^J, its first tile wrapping around ([N^ - 2^J, N^) then [0, T - 2^J)). Pad positions keep
  stale values after a fold; they only ever feed positions >= n_i of lower levels (never a fold
  source: a fold source is the first pad position, n_i), so nothing is zeroed. Each coefficient is
  read and each output written once.
* wavelet_pgd_step (``_haar_pgd_kernel``): g' = idwt(scale_hf(dwt(g))), level j's details times
  s_j, cropped as reference.scale_details_ref. On x^ (g padded through pi) the pyramid is
  orthonormal and the detail space of level j is the difference of the approximation spaces, so
  g' = s_1 x^ + sum_{1 <= j < J} (s_{j+1} - s_j) M_j x^ + (1 - s_J) M_J x^, where M_j replaces
  every aligned 2^j x 2^j block by its mean: computed coarse to fine from the 2 x 2 mean pyramid
  (e_J = c_J m_J, e_j = up2(e_{j+1}) + c_j m_j), no detail band is ever formed, and g' is
  tile-local in every mode (pywt's crop of each synthesis level = restriction to real samples:
  pad positions never reach a real one). Linf: the step of kernels/pgd_step.py in the same
  program -- ONE launch. L2: the same kernel three times (constexpr STAGE), no atomics, no host
  sync: (1) per (sample, slot) partial sums of g'^2; (2) partial sums of delta^2, each program
  first summing its sample's g'^2 partials; (3) the update. Each stage recomputes g' from grad
  rather than writing a float32 g' buffer and reading it twice: fewer bytes for every dtype. A
  sample has P = min(tiles, _MAX_PARTIALS) slots; slot s handles tiles s, s + P, ...: a fixed
  order, so repeated calls agree bit for bit. NaN, bounds, clamps and dtypes as kernels/pgd_step.py
  (its helpers are reused): a NaN in grad spreads over its 2^J x 2^J block (as in the reference).

Layout. One program computes a TH x TW tile of the level-0 grid (TH, TW multiples of 2^J) of one
(n, c) plane, grid (N*C, row tiles, column tiles); the pgd kernel loops over tiles instead (grid
N * P). Every tensor is read and written through its own strides (contiguous, channels_last or a
view; no copy), plane bases in int64, in-plane offsets int64 only when a plane can address 2**31
elements (kernels/dwt.py's rule). Outputs are allocated by ops._common (input's memory format).

Cost model (bytes, S = the input's size in bytes; writes of J levels total about S). Analysis:
S read + S written, against 2 S (1 + 1/4 + ... + 4^(1-J)) for J one-level launches (2.6 S for
J = 3) and J - 1 fewer launches; the adjoint likewise. wavelet_pgd_step Linf: grad, x_adv, x_nat
read and x_adv written once (4 S), against 2 J launches over float32 intermediates plus the step;
L2: 8 S in three launches. Arithmetic: about 3 operations per sample of each level's input (4/3
of the input's samples over all levels) plus the pair shuffles (reshape/permute/split/join: layout
conversions, possibly through shared memory, whose cost on a GPU is unmeasured), plus, for
reflect/periodic adjoints, two masked reductions per level over a tile. NOTHING HERE HAS BEEN TIMED
OR RUN ON A GPU: written and tested on a CPU-only machine under TRITON_INTERPRET=1; every kernel
variant (modes, levels 1/3/7, float32/bfloat16/float64, all pgd stages) was compiled for sm_90
offline with triton 3.8 and never run there. The block-size rule below is a reasoned starting
point, not a tuned one.

Fallbacks (documented, never silent; decided from sizes on the host). A case whose tile would need
a side above the limits of the block-size rule below runs per level: the analysis when 2^J > 128
(J >= 8), the adjoint when 2^J > 128 or, for reflect and periodic on an axis that has an odd length
at some level and does not fit one tile, when 2^(J+1) > 128 (J >= 7): both then run the one-level
kernels of kernels/dwt.py, J launches, into the same outputs. The pgd step when 2^J > 64 (J >= 7):
it returns False and kernels/pgd_step.py takes its per-level path. Every other mode, size, dtype
and layout is one launch (Linf step: one; L2 step: three).
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch import Tensor
from wavefuse.kernels import dwt as _dwt
from wavefuse.kernels.dwt import PERIODIC, PERIODIZATION, REFLECT, SYMMETRIC, ZERO
from wavefuse.kernels.pgd_step import (
    _clamp,
    _div,
    _is_nan,
    _l2_denominator,
    _sample_sum,
    _scalar,
    _sign,
    _sqrt,
    _to_output,
)

from wavefuse.filters import filter_bank
from wavefuse.ops._common import empty_4d, empty_bands

# Stages of the pgd kernel (constexpr): the Linf step, or one of the three L2 launches.
LINF: tl.constexpr = tl.constexpr(0)
L2_GRAD: tl.constexpr = tl.constexpr(1)
L2_DELTA: tl.constexpr = tl.constexpr(2)
L2_UPDATE: tl.constexpr = tl.constexpr(3)

# ---- block-size rule -----------------------------------------------------------------------------
# A program holds its level-0 tile in the accumulation dtype plus, at the widest point, the four
# quarter-size bands of level 1 (transforms: about 2 live copies of the tile) or the tile, the mean
# pyramid (a third of it), the filtered tile and the x_adv and x_nat tiles (pgd: about 4). The
# tile's elements are bounded by _TILE_ELEMENTS (transforms) and _PGD_TILE_ELEMENTS (pgd), tiles
# are as wide as possible up to _MAX_TILE_W columns (a row of loads spans 256 B of float32 when W
# is contiguous), and each side is at least the 2^J (adjoint of reflect/periodic across tiles:
# 2^(J+1)) that one coefficient of level J needs; bigger tiles get more warps, one per
# _ELEMENTS_PER_WARP (resp. _PGD_ELEMENTS_PER_WARP), between 4 and 16. Checked only by compiling for
# sm_90 offline (triton 3.8's ptxas, no GPU; float32): analysis 72-128 registers per thread, adjoint
# 167-168, pgd 119-153 (J = 1-5), no spills up to 2^J = _MAX_SIDE (transforms) or _MAX_PGD_SIDE
# (pgd; at 2^J = 128 the pgd kernel spills with 8 or 16 warps, so it is not launched there). Larger
# sides are not launched: the per-level path runs instead. Speed unmeasured: a starting point.
_TILE_ELEMENTS = 4096
_PGD_TILE_ELEMENTS = 2048
_MAX_TILE_W = 64
_MAX_SIDE = 128
_MAX_PGD_SIDE = 64
_ELEMENTS_PER_WARP = 1024
_PGD_ELEMENTS_PER_WARP = 512
# At most this many partial sums per sample in the L2 step (a power of two; each program sums all
# of its sample's partials with one vector load, as kernels/pgd_step.py).
_MAX_PARTIALS = 256


# ---- per-axis index maps -------------------------------------------------------------------------


@triton.jit
def _source(p, n, LEVELS: tl.constexpr, MODE: tl.constexpr):
    """pi: the input index that position p of the padded signal copies (p itself below n), and
    whether it holds data (False for zero padding and beyond the padded length n_J 2^J)."""
    src = p
    if MODE != ZERO:
        for jj in tl.static_range(LEVELS):  # level j = LEVELS - jj, from the coarsest pad down
            half = 1 << (LEVELS - 1 - jj)  # 2^(j-1): one sample of level j - 1, in input samples
            m = (n + half - 1) // half  # n_(j-1), the input length of level j
            start = m * half  # the pad block B_j (only when m is odd)
            in_block = (m % 2 == 1) & (src >= start) & (src < start + half)
            if MODE == REFLECT:  # two blocks back (m = 1: the block itself, as symmetric)
                shift = tl.where(m >= 3, 2 * half, half)
            elif MODE == PERIODIC:  # block 0
                shift = start
            else:  # SYMMETRIC, PERIODIZATION: the block before
                shift = half
            src = tl.where(in_block, src - shift, src)
    return src, src < n


@triton.jit
def _adjoint_axis(t, B: tl.constexpr, j: tl.constexpr, shift, padded, n, WRAP: tl.constexpr):
    """Level-j indices of the B-long tile t of one axis of the adjoint's grid, whose level-0 tiles
    start at t * T - shift (periodic: modulo the padded length, wrapping around):
    (index into the level-j signal, owned by this tile, a coefficient/sample to read/write)."""
    shift_j = shift >> j
    padded_j = padded >> j
    v = t * B - shift_j + tl.arange(0, B)
    if WRAP:
        own = v < padded_j - shift_j
        a = tl.where(v < 0, v + padded_j, v)
    else:
        own = v >= 0
        a = v
    ok = own & (a < (n + (1 << j) - 1) >> j)
    return a, own, ok


# ---- one level in registers ----------------------------------------------------------------------


@triton.jit
def _analysis_level(a):
    """[2h, 2w] -> ll, cH, cV, cD, each [h, w] (the 2 x 2 block formulas above)."""
    a4 = tl.permute(tl.reshape(a, [a.shape[0] // 2, 2, a.shape[1] // 2, 2]), [0, 2, 1, 3])
    c0, c1 = tl.split(a4)  # [h, w, 2 rows]: even and odd columns
    r0, r1 = tl.split(c0 + c1)  # low-pass along W (unnormalised), even and odd rows
    q0, q1 = tl.split(c0 - c1)  # high-pass along W
    return (r0 + r1) * 0.5, (r0 - r1) * 0.5, (q0 + q1) * 0.5, (q0 - q1) * 0.5


@triton.jit
def _synthesis_level(ll, ch, cv, cd):
    """The inverse (= transpose) of ``_analysis_level``: four [h, w] bands -> [2h, 2w]."""
    lo = tl.join(ll + ch, ll - ch)  # [h, w, 2 rows], low-pass along W
    hi = tl.join(cv + cd, cv - cd)
    a4 = tl.permute(tl.join(lo + hi, lo - hi) * 0.5, [0, 2, 1, 3])  # [h, 2, w, 2]
    return tl.reshape(a4, [ll.shape[0] * 2, ll.shape[1] * 2])


@triton.jit
def _fold(y, a, own, m, MODE: tl.constexpr, AXIS: tl.constexpr):
    """Pi^T for reflect and periodic along one axis of a level-(j-1) tile y: add the pad sample
    (index m, the level's input length, when odd) onto its copy source (m - 2, or 0)."""
    if MODE == REFLECT:
        target = tl.where(m >= 3, m - 2, 0)
    else:  # PERIODIC
        target = 0
    src = (a == m) & own & (m % 2 == 1)
    dst = (a == target) & own
    if AXIS == 0:
        v = tl.sum(tl.where(src[:, None], y, 0.0), axis=0)
        y = tl.where(dst[:, None], y + v[None, :], y)
    else:
        v = tl.sum(tl.where(src[None, :], y, 0.0), axis=1)
        y = tl.where(dst[None, :], y + v[:, None], y)
    return y


@triton.jit
def _mean2(a):
    """[2h, 2w] -> [h, w]: the mean of every 2 x 2 block."""
    a4 = tl.reshape(a, [a.shape[0] // 2, 2, a.shape[1] // 2, 2])
    return tl.sum(tl.sum(a4, axis=3), axis=1) * 0.25


@triton.jit
def _up2(a):
    """[h, w] -> [2h, 2w]: every value repeated over a 2 x 2 block."""
    b = tl.broadcast_to(a[:, None, :, None], [a.shape[0], 2, a.shape[1], 2])
    return tl.reshape(b, [a.shape[0] * 2, a.shape[1] * 2])


@triton.jit
def _bits_to(bits, ACC: tl.constexpr):
    """A float passed as its IEEE-754 float64 bit pattern, rounded to the compute dtype."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)


@triton.jit
def _filtered(m, coefs, LEVELS: tl.constexpr, j: tl.constexpr, ACC: tl.constexpr):
    """sum_{i >= j} c_i M_i x^ at level-j resolution, given m = the level-j block means m_j:
    c_j m_j + up2(the same from m_{j+1}) (recursion unrolled at compile time)."""
    c = _bits_to(coefs[j], ACC)
    cm = tl.where(c == 0, 0.0, c * m).to(ACC)  # c = 0 (equal scales): no term, never 0 * inf
    if j == LEVELS:
        out = cm
    else:
        out = _up2(_filtered(_mean2(m), coefs, LEVELS, j + 1, ACC)) + cm
    return out


@triton.jit
def _load_padded(base, rows, cols, H, W, sh, sw,
                 LEVELS: tl.constexpr, MODE: tl.constexpr, ACC: tl.constexpr,
                 WIDE: tl.constexpr):  # fmt: skip
    """The tile [rows] x [cols] of the padded signal x^ (through pi), in the compute dtype."""
    sr, ok_r = _source(rows, H, LEVELS, MODE)
    sc, ok_c = _source(cols, W, LEVELS, MODE)
    sr = tl.where(ok_r, sr, 0)
    sc = tl.where(ok_c, sc, 0)
    if WIDE:
        sr, sc = sr.to(tl.int64), sc.to(tl.int64)
    xv = tl.load(base + sr[:, None] * sh + sc[None, :] * sw, mask=ok_r[:, None] & ok_c[None, :],
                 other=0.0)  # fmt: skip
    return xv.to(ACC)


@triton.jit
def _load_band(base, a_r, a_c, ok_r, ok_c, sh, sw, ACC: tl.constexpr, WIDE: tl.constexpr):
    r = tl.where(ok_r, a_r, 0)
    c = tl.where(ok_c, a_c, 0)
    if WIDE:
        r, c = r.to(tl.int64), c.to(tl.int64)
    v = tl.load(base + r[:, None] * sh + c[None, :] * sw, mask=ok_r[:, None] & ok_c[None, :],
                other=0.0)  # fmt: skip
    return v.to(ACC)


@triton.jit
def _store_band(base, i, k, ok, sh, sw, v, WIDE: tl.constexpr):
    if WIDE:
        i, k = i.to(tl.int64), k.to(tl.int64)
    tl.store(
        base + i[:, None] * sh + k[None, :] * sw, _to_output(v, base.dtype.element_ty), mask=ok
    )


# ---- analysis: all J levels in one pass ----------------------------------------------------------


@triton.jit
def _haar_fwd_kernel(
    x_ptr, ll_ptr, hi_ptrs,
    C, H, W,
    sxn, sxc, sxh, sxw,
    sln, slc, slh, slw,
    hi_strides,
    LEVELS: tl.constexpr, MODE: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr,
):  # fmt: skip
    """One TH x TW tile of x^ of one plane -> its part of every level's bands.
    hi_ptrs[j], hi_strides[j] (n, c, band, h, w): level j + 1, finest first."""
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    rows = th * TH + tl.arange(0, TH)
    cols = tw * TW + tl.arange(0, TW)
    a = _load_padded(x_ptr + pn * sxn + pc * sxc, rows, cols, H, W, sxh, sxw,
                     LEVELS, MODE, ACC, WIDE)  # fmt: skip
    for j in tl.static_range(LEVELS):  # level j + 1
        a, ch, cv, cd = _analysis_level(a)
        i = th * (TH >> (j + 1)) + tl.arange(0, TH >> (j + 1))
        k = tw * (TW >> (j + 1)) + tl.arange(0, TW >> (j + 1))
        step = 2 << j
        ok = (i < (H + step - 1) // step)[:, None] & (k < (W + step - 1) // step)[None, :]
        st = hi_strides[j]
        base = hi_ptrs[j] + pn * st[0] + pc * st[1]
        _store_band(base, i, k, ok, st[3], st[4], ch, WIDE)
        base = base + st[2]  # chained adds: 2 * st[2] may overflow int32 where st[2] does not
        _store_band(base, i, k, ok, st[3], st[4], cv, WIDE)
        _store_band(base + st[2], i, k, ok, st[3], st[4], cd, WIDE)
    i = th * (TH >> LEVELS) + tl.arange(0, TH >> LEVELS)
    k = tw * (TW >> LEVELS) + tl.arange(0, TW >> LEVELS)
    step = 1 << LEVELS
    ok = (i < (H + step - 1) // step)[:, None] & (k < (W + step - 1) // step)[None, :]
    _store_band(ll_ptr + pn * sln + pc * slc, i, k, ok, slh, slw, a, WIDE)


# ---- the adjoint: all J levels in one pass -------------------------------------------------------


@triton.jit
def _haar_adjoint_kernel(
    ll_ptr, hi_ptrs, y_ptr,
    C, H, W, HP, WP, SHIFT_H, SHIFT_W,
    sln, slc, slh, slw,
    hi_strides,
    syn, syc, syh, syw,
    LEVELS: tl.constexpr, MODE: tl.constexpr, FOLDS: tl.constexpr, ACC: tl.constexpr,
    WIDE: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
):  # fmt: skip
    """grad_x on one TH x TW tile of one plane from the coefficient grads of every level:
    synthesis level by level, each followed by the fold of the pad (Pi^T). HP, WP: padded
    lengths n_J 2^J; SHIFT_*: where the grid of the axis starts (reflect, periodic; else 0);
    FOLDS: reflect or periodic with an odd length at some level (else no fold moves data)."""
    WRAP: tl.constexpr = MODE == PERIODIC
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    r, own_r, ok_r = _adjoint_axis(th, TH >> LEVELS, LEVELS, SHIFT_H, HP, H, WRAP)
    c, own_c, ok_c = _adjoint_axis(tw, TW >> LEVELS, LEVELS, SHIFT_W, WP, W, WRAP)
    y = _load_band(ll_ptr + pn * sln + pc * slc, r, c, ok_r, ok_c, slh, slw, ACC, WIDE)
    for jj in tl.static_range(LEVELS):  # synthesise level j = LEVELS - jj into level j - 1
        st = hi_strides[LEVELS - 1 - jj]
        base = hi_ptrs[LEVELS - 1 - jj] + pn * st[0] + pc * st[1]
        ch = _load_band(base, r, c, ok_r, ok_c, st[3], st[4], ACC, WIDE)
        base = base + st[2]
        cv = _load_band(base, r, c, ok_r, ok_c, st[3], st[4], ACC, WIDE)
        cd = _load_band(base + st[2], r, c, ok_r, ok_c, st[3], st[4], ACC, WIDE)
        half = 1 << (LEVELS - 1 - jj)  # 2^(j-1)
        m_h = (H + half - 1) // half  # input lengths of level j
        m_w = (W + half - 1) // half
        if MODE == SYMMETRIC or MODE == PERIODIZATION:
            # fold the pad sample m onto m - 1, its pair partner: detail := approximation
            last_r = ((r == m_h // 2) & (m_h % 2 == 1))[:, None]
            ch = tl.where(last_r, y, ch)
            cd = tl.where(last_r, cv, cd)
            last_c = ((c == m_w // 2) & (m_w % 2 == 1))[None, :]
            cv = tl.where(last_c, y, cv)
            cd = tl.where(last_c, ch, cd)
        y = _synthesis_level(y, ch, cv, cd)
        r, own_r, ok_r = _adjoint_axis(th, TH >> (LEVELS - 1 - jj), LEVELS - 1 - jj,
                                       SHIFT_H, HP, H, WRAP)  # fmt: skip
        c, own_c, ok_c = _adjoint_axis(tw, TW >> (LEVELS - 1 - jj), LEVELS - 1 - jj,
                                       SHIFT_W, WP, W, WRAP)  # fmt: skip
        if FOLDS:
            y = _fold(y, r, own_r, m_h, MODE, 0)
            y = _fold(y, c, own_c, m_w, MODE, 1)
    r = tl.where(ok_r, r, 0)
    c = tl.where(ok_c, c, 0)
    if WIDE:
        r, c = r.to(tl.int64), c.to(tl.int64)
    y_off = pn * syn + pc * syc + r[:, None] * syh + c[None, :] * syw
    tl.store(y_ptr + y_off, _to_output(y, y_ptr.dtype.element_ty),
             mask=ok_r[:, None] & ok_c[None, :])  # fmt: skip


# ---- wavelet_pgd_step: filter and step in one kernel ---------------------------------------------


@triton.jit(do_not_specialize=["eps_bits", "alpha_bits", "lo_bits", "hi_bits"])
def _haar_pgd_kernel(
    xa_ptr, g_ptr, x_ptr, pg_ptr, pd_ptr,
    eps_bits, alpha_bits, lo_bits, hi_bits,
    eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    coefs,
    C, H, W, NTW, TILES, Q, P,
    xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    LEVELS: tl.constexpr, MODE: tl.constexpr, STAGE: tl.constexpr,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, PB: tl.constexpr,
):  # fmt: skip
    """Program (n, s) of grid N * P: the tiles s, s + P, ... of sample n's Q = C * TILES tiles.
    g' = sum_j c_j M_j x^ on each tile, then STAGE: the Linf step; or g'^2 partials; or delta^2
    partials; or the L2 update (kernels/pgd_step.py's update, op for op)."""
    pid = tl.program_id(0)
    n = pid // P
    s = pid % P
    n64 = n.to(tl.int64)
    one = tl.full([], 1.0, ACC)
    if STAGE == L2_DELTA or STAGE == L2_UPDATE:
        denom = _l2_denominator(pg_ptr, n, P, PB, ACC)
    if STAGE == L2_UPDATE:
        dn = _sqrt(_sample_sum(pd_ptr, n, P, PB))
        eps = _scalar(eps_bits, eps_t, se_n, 0, n, 0, HAS_EPS, ACC)
        q = _div(one, dn) * eps
        factor = tl.where(_is_nan(q), q, tl.minimum(q, one))
        factor = tl.where(dn == 0, one, factor)
    acc = tl.zeros([TH, TW], dtype=ACC)
    for t in range(s, Q, P):
        c = t // TILES
        tile = t % TILES
        rows = (tile // NTW) * TH + tl.arange(0, TH)
        cols = (tile % NTW) * TW + tl.arange(0, TW)
        c64 = c.to(tl.int64)
        g = _load_padded(g_ptr + n64 * g_sn + c64 * g_sc, rows, cols, H, W, g_sh, g_sw,
                         LEVELS, MODE, ACC, WIDE)  # fmt: skip
        g = _filtered(g, coefs, LEVELS, 0, ACC)
        real = (rows < H)[:, None] & (cols < W)[None, :]
        if STAGE == L2_GRAD:
            acc += tl.where(real, g * g, 0.0)
        else:
            r = tl.where(rows < H, rows, 0)
            k = tl.where(cols < W, cols, 0)
            if WIDE:
                r, k = r.to(tl.int64), k.to(tl.int64)
            o_xa = n64 * xa_sn + c64 * xa_sc + r[:, None] * xa_sh + k[None, :] * xa_sw
            o_x = n64 * x_sn + c64 * x_sc + r[:, None] * x_sh + k[None, :] * x_sw
            xa = tl.load(xa_ptr + o_xa, mask=real, other=0.0).to(ACC)
            xv = tl.load(x_ptr + o_x, mask=real, other=0.0).to(ACC)
            alpha = _scalar(alpha_bits, alpha_t, sa_n, sa_c, n, c, HAS_ALPHA, ACC)
            if STAGE == LINF:
                eps_c = _scalar(eps_bits, eps_t, se_n, se_c, n, c, HAS_EPS, ACC)
                moved = xa + alpha * _sign(g)
                delta = _clamp(moved - xv, -eps_c, eps_c)
            else:
                moved = xa + alpha * _div(g, denom)
            if STAGE == L2_DELTA:
                d = tl.where(real, moved - xv, 0.0)
                acc += d * d
            else:
                if STAGE == L2_UPDATE:
                    delta = (moved - xv) * factor
                lo = _scalar(lo_bits, lo_t, sl_n, sl_c, n, c, HAS_LO, ACC)
                hi = _scalar(hi_bits, hi_t, sh_n, sh_c, n, c, HAS_HI, ACC)
                out = _clamp(xv + delta, lo, hi)
                tl.store(xa_ptr + o_xa, _to_output(out, xa_ptr.dtype.element_ty), mask=real)
    if STAGE == L2_GRAD:
        tl.store(pg_ptr + pid, tl.sum(tl.sum(acc, axis=1), axis=0))
    elif STAGE == L2_DELTA:
        tl.store(pd_ptr + pid, tl.sum(tl.sum(acc, axis=1), axis=0))


# ---- host side -----------------------------------------------------------------------------------


def _lengths(n: int, level: int) -> list[int]:
    """[n_0 = n, n_1, ..., n_J]: Haar coefficients per axis at each level (every mode)."""
    sizes = [n]
    for _ in range(level):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _tile_sides(hp: int, wp: int, side: int, elements: int) -> tuple[int, int]:
    """Tile sides for padded lengths hp, wp (multiples of 2^J), each at least ``side``."""
    tw = max(side, min(triton.next_power_of_2(wp), _MAX_TILE_W))
    th = max(side, min(triton.next_power_of_2(hp), max(elements // tw, 1)))
    return th, tw


def _warps(th: int, tw: int, per_warp: int = _ELEMENTS_PER_WARP) -> int:
    return min(16, max(4, th * tw // per_warp))


def _strides(hi: list[Tensor]) -> tuple:
    return tuple(tuple(t.stride()) for t in hi)


def single_pass(level: int, max_side: int | None = None) -> bool:
    """Whether the analysis (max_side _MAX_SIDE) or the pgd step (_MAX_PGD_SIDE) of ``level``
    levels runs as one kernel here."""
    return 1 <= level and 2**level <= (_MAX_SIDE if max_side is None else max_side)


def haar_wavedec2(x: Tensor, level: int, mode: str) -> list[Tensor]:
    """All ``level`` analysis levels in one launch. x: (N, C, H, W) ->
    [ll_J (N, C, h_J, w_J), hi_J, ..., hi_1], hi_j: (N, C, 3, h_j, w_j), h_j = ceil(H / 2^j)."""
    n, c, h, w = x.shape
    hs, ws = _lengths(h, level), _lengths(w, level)
    ll = empty_4d(x, n, c, hs[-1], ws[-1])
    his = [empty_bands(x, n, c, hs[j], ws[j]) for j in range(1, level + 1)]  # finest first
    if x.numel() == 0:
        return [ll] + his[::-1]
    if single_pass(level):
        th, tw = _tile_sides(hs[-1] << level, ws[-1] << level, 2**level, _TILE_ELEMENTS)
        grid = (n * c, triton.cdiv(hs[-1] << level, th), triton.cdiv(ws[-1] << level, tw))
        grid = _dwt.checked_grid(grid, "the Haar analysis", x.shape)

        def launch():
            _haar_fwd_kernel[grid](
                x, ll, tuple(his), c, h, w, *x.stride(), *ll.stride(), _strides(his),
                LEVELS=level, MODE=_dwt._MODE_CODE[mode], ACC=_dwt._acc_dtype(x.dtype),
                WIDE=_dwt._needs_int64(x, ll, *his), TH=th, TW=tw, num_warps=_warps(th, tw),
            )  # fmt: skip

        with _dwt._device_guard(x):
            if _dwt.launched(launch):  # level 7 in float64 needs 128 KiB: not before Hopper
                return [ll] + his[::-1]
    # per level (kernels/dwt.py), into the same outputs
    filters = filter_bank("haar", "dec", x.dtype, x.device)
    a = x
    for j in range(level):
        out = ll if j == level - 1 else empty_4d(x, n, c, hs[j + 1], ws[j + 1])
        _dwt._split(a, filters, _dwt._MODE_CODE[mode], True, out, his[j])
        a = out
    return [ll] + his[::-1]


def _adjoint_axis_grid(n: int, level: int, mode: str, tile: int) -> tuple | None:
    """(tile side, number of tiles, grid shift, whether a fold moves data across pairs) of one
    axis of the adjoint, or None when the side that reflect/periodic folds need exceeds
    _MAX_SIDE."""
    sizes = _lengths(n, level)
    padded = sizes[-1] << level
    folds = mode in ("reflect", "periodic") and any(m % 2 for m in sizes[:-1])
    # source and target of every fold in one tile: 2^(J+1) wide, unless one tile covers the axis
    need = 2 ** (level + 1) if folds and tile < padded else 2**level
    if need > _MAX_SIDE:
        return None
    tile = max(tile, need)
    tiles = triton.cdiv(padded, tile)
    if not folds:
        shift = 0
    elif mode == "periodic":
        shift = 2**level  # the first tile wraps: [padded - 2^J, padded) then [0, tile - 2^J)
    else:
        shift = tiles * tile - padded  # reflect: the last tile ends at the padded length
    return tile, tiles, shift, folds


def haar_wavedec2_adjoint(
    grad_ll: Tensor, grad_hi: list[Tensor], mode: str, input_size: list[int]
) -> Tensor:
    """Transpose of ``haar_wavedec2``: grad_ll (N, C, h_J, w_J), grad_hi [hi_J, ..., hi_1]
    -> (N, C, H, W), [H, W] = input_size, in one launch (see the fallbacks above)."""
    level = len(grad_hi)
    n, c = grad_ll.shape[:2]
    h, w = input_size
    y = empty_4d(grad_ll, n, c, h, w)
    if y.numel() == 0:
        return y
    his = list(grad_hi[::-1])  # finest first
    hs, ws = _lengths(h, level), _lengths(w, level)
    th, tw = _tile_sides(hs[-1] << level, ws[-1] << level, 2**level, _TILE_ELEMENTS)
    geo_h = _adjoint_axis_grid(h, level, mode, th)
    geo_w = _adjoint_axis_grid(w, level, mode, tw)
    if geo_h is None or geo_w is None or not single_pass(level):
        filters = filter_bank("haar", "dec", grad_ll.dtype, grad_ll.device)
        g = grad_ll
        for j in reversed(range(level)):
            out = y if j == 0 else empty_4d(grad_ll, n, c, hs[j], ws[j])
            _dwt._merge(g, his[j], filters, _dwt._MODE_CODE[mode], True, out)
            g = out
        return y
    (th, nth, shift_h, folds_h), (tw, ntw, shift_w, folds_w) = geo_h, geo_w
    with _dwt._device_guard(y):
        _haar_adjoint_kernel[_dwt.checked_grid((n * c, nth, ntw), "the Haar adjoint", y.shape)](
            grad_ll, tuple(his), y, c, h, w, hs[-1] << level, ws[-1] << level, shift_h, shift_w,
            *grad_ll.stride(), _strides(his), *y.stride(),
            LEVELS=level, MODE=_dwt._MODE_CODE[mode], FOLDS=folds_h or folds_w,
            ACC=_dwt._acc_dtype(y.dtype), WIDE=_dwt._needs_int64(grad_ll, y, *his),
            TH=th, TW=tw, num_warps=_warps(th, tw),
        )  # fmt: skip
    return y


def _bits(value: float) -> int:
    """The IEEE-754 float64 bit pattern of ``value`` as a signed 64-bit integer."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _coefficients(hf_scale: list[float]) -> tuple[int, ...]:
    """c_0 = s_1, c_j = s_{j+1} - s_j, c_J = 1 - s_J (as float64 bit patterns): g' = sum c_j M_j x^."""
    s = [float(v) for v in hf_scale]
    c = [s[0]] + [s[j + 1] - s[j] for j in range(len(s) - 1)] + [1.0 - s[-1]]
    return tuple(_bits(v) for v in c)


def wavelet_pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_nat: Tensor,
    eps: float,
    alpha: float,
    lo: float,
    hi: float,
    eps_tensor: Tensor | None,
    alpha_tensor: Tensor | None,
    lo_tensor: Tensor | None,
    hi_tensor: Tensor | None,
    mode: str,
    level: int,
    hf_scale: list[float],
    norm: str,
) -> bool:
    """The Haar wavelet_pgd_step in place on x_adv (kernels/pgd_step.py's contract): one launch
    for Linf, three for L2. Returns False, launching nothing, where it does not apply
    (2^level > _MAX_PGD_SIDE): the caller runs the per-level path then."""
    if not single_pass(level, _MAX_PGD_SIDE):
        return False
    if x_adv.numel() == 0:
        return True
    from wavefuse.kernels.pgd_step import _bound

    n, c, h, w = x_adv.shape
    hp, wp = _lengths(h, level)[-1] << level, _lengths(w, level)[-1] << level
    th, tw = _tile_sides(hp, wp, 2**level, _PGD_TILE_ELEMENTS)
    nth, ntw = triton.cdiv(hp, th), triton.cdiv(wp, tw)
    tiles = c * nth * ntw
    parts = tiles if norm == "Linf" else min(tiles, _MAX_PARTIALS)
    acc_dtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    pg = torch.empty((n, parts) if norm == "L2" else (1,), dtype=acc_dtype, device=x_adv.device)
    pd = torch.empty_like(pg)
    e, a, lw, hg = (
        _bound(v, t, x_adv)
        for v, t in ((eps, eps_tensor), (alpha, alpha_tensor), (lo, lo_tensor), (hi, hi_tensor))
    )
    args = (
        x_adv, grad, x_nat, pg, pd, e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
        e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3], _coefficients(hf_scale),
        c, h, w, ntw, nth * ntw, tiles, parts, *x_adv.stride(), *grad.stride(), *x_nat.stride(),
    )  # fmt: skip
    meta = {
        "LEVELS": level, "MODE": _dwt._MODE_CODE[mode], "HAS_EPS": eps_tensor is not None,
        "HAS_ALPHA": alpha_tensor is not None, "HAS_LO": lo_tensor is not None,
        "HAS_HI": hi_tensor is not None, "ACC": _dwt._acc_dtype(x_adv.dtype),
        "WIDE": _dwt._needs_int64(x_adv, grad, x_nat), "TH": th, "TW": tw,
        "PB": triton.next_power_of_2(parts) if norm == "L2" else 1,
        "num_warps": _warps(th, tw, _PGD_ELEMENTS_PER_WARP),
    }  # fmt: skip
    stages = (LINF,) if norm == "Linf" else (L2_GRAD, L2_DELTA, L2_UPDATE)
    with _dwt._device_guard(x_adv):
        for stage in stages:
            _haar_pgd_kernel[(n * parts,)](*args, STAGE=stage, **meta)
    return True
