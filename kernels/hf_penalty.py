"""Triton kernels for the per-band energies behind hf_penalty (contract: wavefuse/ops/hf_penalty.py).

    band_energy(x, filters, mode, level, p)                 -> energies (N, J, 3)
    band_energy_backward(grad, x, filters, mode, level, p)  -> grad_x (N, C, H, W)

``energies[n, j - 1, b] = sum_{c, positions} |d|^p`` for band b (cH, cV, cD) of level j of the
analysis cascade of x (PyWavelets' modes, dec taps), p in {1, 2}; ``grad_x`` is its vector-Jacobian
product, ``sum_{j, b} A_jb^T (grad[:, j - 1, b] * psi(d_jb))`` with ``psi(d) = 2d`` (p = 2) or
``sign(d)`` (p = 1; 0 at d = 0, and a NaN d stays NaN, as the CPU kernel: a poisoned input is never
hidden). No hf_penalty launcher: the ops layer weights and reduces the (N, J, 3) energies itself.

Forward, per level: one kernel reads the level's input (x itself at level 1, through its strides,
else the previous approximation) and computes all four bands of a tile of coefficients at once
with the tile helpers of kernels/dwt.py (rows and columns fused, the same "direct" and "dense" paths
and block-size rule). It stores only the approximation that the next level reads (not at the last
level), in the compute dtype, and reduces the three detail tiles to one partial sum of |d|^p each
per program, written to a small buffer ``partials[n, j, b, tile]`` -- the detail bands never reach
memory. One last kernel sums each (n, j, b) row of partials in a fixed order (a masked vector
accumulation over fixed-size chunks, then one tree reduction). Every sum has one fixed order for a
given shape, and there are no atomics: repeated calls agree bit for bit.

Backward, per level, two passes: (1) a split kernel (the same tile code) recomputes the level's
four bands from its input, stores the next approximation (not at the last level) and the three
detail-band gradients ``psi(d) * grad[n, j, b]`` in the compute dtype; (2) going back from the
coarsest level, the analysis adjoint of kernels/dwt.py (a gather, deterministic) merges the
gradient of the approximation (zero at level J) with those band gradients into the gradient of
the level's input -- at level 1 that is grad_x, written once, in x's dtype and memory format.
The detail-band gradients of every level are kept until their merge (about one x of the compute
dtype in all); recomputing them inside the merge instead is future work.

One launch per pass (the *cascade*). Level by level, the forward is J + 1 launches and the
backward 2J, and at the coarse levels of many small planes (db4 J=3 on 128 x 64 x 32 x 32: 8192
planes, levels of 19, 13 and 10 per side) each launch is mostly idle programs. So where the planes
fill the GPU (separable.cascade_fits, the rule the wavelet step's cascades share: at least 2 planes
per SM, none over 512 x 512; blind), one program per (n, c) plane sweeps every level with a
barrier (tl.debug_barrier: the block's global writes become visible to the block) between them:
``_band_cascade_kernel`` (the split of every level, the approximations a_1 .. a_{J-1} into the
plane's scratch, each level's three sums of |d|^p accumulated over its tiles and written to
partials[n, j, b, c]; then the row sum over the channels: 2 launches) and
``_band_backward_cascade_kernel`` (the approximations a_1 .. a_{J-1} into scratch, their gradient
G_J = 0, then from the coarsest level the band gradients psi(d_j) * g recomputed from a_{j-1}
into one level's band buffer and the adjoint of (G_j, bands) into G_{j-1}, at level 1 into grad_x:
1 launch). Scratch per plane, in the compute dtype: forward sum_{j<J} h_j w_j; backward that plus
sum_{j<=J} h_j w_j plus three bands of the largest level (levels may grow). The cascade's tiles are
the level kernels' general ones (the direct split, the sparse merge), never their dense paths, and
its sums of |d|^p are added in another order than the level route's, so the two routes agree to
rounding, not bit for bit (each is deterministic). Never run on a GPU; ptxas at
``_band_cascade_kernel``.

Accumulation: float64 for float64 (the compute dtype is the filters' dtype), float32 otherwise, also
for the partial sums. The approximations that carry from level to level are in the compute dtype
(as reference.band_energy_ref). Levels may grow (an axis shorter than the filter, non-periodization
modes): every buffer is sized per level. Tested only under TRITON_INTERPRET=1 on a CPU, never run
on a GPU; the kernels compile for sm_90 offline (triton.compile), speed unmeasured.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from wavefuse.kernels import dwt as _dwt
from wavefuse.kernels.dwt import PERIODIZATION, _split_tile_dense, _split_tile_direct
from wavefuse.kernels.pgd_step import _analysis_len, _cascade_analysis, _cascade_level

from wavefuse.ops import separable
from wavefuse.ops._common import empty_4d
from wavefuse.reference import analysis_length

# Partials per reduction step of the final sum (a power of two; rows are short: one entry per tile).
_REDUCE_BLOCK = 128


@triton.jit
def _band_level_kernel(
    x_ptr, f_ptr, ll_ptr, hi_ptr, part_ptr, g_ptr,
    C, H, W, Kh, Kw, j, J, TMAX, tiles_h, tiles_w,
    sxn, sxc, sxh, sxw,
    sf0, sf1,
    sln, slc, slh, slw,
    shn, shc, shb, shh, shw,
    L: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr, P: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    DENSE: tl.constexpr, NPH: tl.constexpr, NPW: tl.constexpr, TAP_CHUNK: tl.constexpr,
    WRITE_LL: tl.constexpr, BACKWARD: tl.constexpr,
):  # fmt: skip
    """One BH x BW tile of level j's four bands of one (n, c) plane (the analysis split of
    kernels/dwt.py). Stores the approximation when WRITE_LL; then either (forward) one partial
    sum of |d|^p per detail band into part[n, j, b, tile], or (BACKWARD) the band gradients
    psi(d) * g[n, j, b] into hi."""
    if MODE == PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    ti = tl.program_id(1)
    tk = tl.program_id(2)
    i = ti * BH + tl.arange(0, BH)
    k = tk * BW + tl.arange(0, BW)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    x_base = x_ptr + pn * sxn + pc * sxc
    if DENSE:
        acc_ll, acc_h, acc_v, acc_d = _split_tile_dense(
            x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
            L, OFF, MODE, True, ACC, WIDE, BH, BW, NPH, NPW, TAP_CHUNK,
        )  # fmt: skip
    else:
        acc_ll, acc_h, acc_v, acc_d = _split_tile_direct(
            x_base, f_ptr, i, k, H, W, Kh, Kw, sxh, sxw, sf0, sf1,
            L, OFF, TAPS, MODE, True, ACC, WIDE, BH, BW,
        )  # fmt: skip
    out_ok = (i < Kh)[:, None] & (k < Kw)[None, :]
    if WIDE:
        i, k = i.to(tl.int64), k.to(tl.int64)
    if WRITE_LL:
        ll_off = pn * sln + pc * slc + i[:, None] * slh + k[None, :] * slw
        tl.store(ll_ptr + ll_off, acc_ll.to(ll_ptr.dtype.element_ty), mask=out_ok)
    row = (pn * J + j) * 3  # (n, j, band 0) of the (N, J, 3) grad or the (N, J, 3, TMAX) partials
    if BACKWARD:
        g_h = tl.load(g_ptr + row).to(ACC)
        g_v = tl.load(g_ptr + row + 1).to(ACC)
        g_d = tl.load(g_ptr + row + 2).to(ACC)
        hi_base = hi_ptr + pn * shn + pc * shc
        hi_off = i[:, None] * shh + k[None, :] * shw
        dtype = hi_ptr.dtype.element_ty
        hv_base = hi_base + shb  # chained adds: 2 * shb may overflow int32 where shb does not
        tl.store(hi_base + hi_off, _psi(acc_h, g_h, P).to(dtype), mask=out_ok)
        tl.store(hv_base + hi_off, _psi(acc_v, g_v, P).to(dtype), mask=out_ok)
        tl.store(hv_base + shb + hi_off, _psi(acc_d, g_d, P).to(dtype), mask=out_ok)
    else:
        tile = (pc * tiles_h + ti) * tiles_w + tk
        part = part_ptr + row * TMAX + tile
        tl.store(part, _tile_energy(acc_h, out_ok, P))
        tl.store(part + TMAX, _tile_energy(acc_v, out_ok, P))
        tl.store(part + 2 * TMAX, _tile_energy(acc_d, out_ok, P))


@triton.jit
def _tile_energy(d, ok, P: tl.constexpr):
    """sum |d|^p over the valid lanes of a tile (a fixed reduction tree: deterministic)."""
    if P == 2:
        e = d * d
    else:
        e = tl.abs(d)
    e = tl.where(ok, e, 0.0)
    return tl.sum(tl.sum(e, axis=1), axis=0)


@triton.jit
def _psi(d, g, P: tl.constexpr):
    """The gradient of |d|^p times g: 2 d g (p = 2); sign(d) g (p = 1), with sign(0) = 0 and a
    NaN d kept (d * g), as csrc/cpu/hf_penalty.cpp's band_gradient."""
    if P == 2:
        out = (2.0 * d) * g
    else:
        out = tl.where(d > 0, g, tl.where(d < 0, -g, d * g))
    return out


@triton.jit
def _reduce_rows_kernel(part_ptr, out_ptr, TMAX, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """out[row] = sum of the TMAX partials of one (n, j, band) row, in a fixed order."""
    row = tl.program_id(0).to(tl.int64)
    base = part_ptr + row * TMAX
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for t0 in range(0, TMAX, BLOCK):
        t = t0 + offs
        acc += tl.load(base + t, mask=t < TMAX, other=0.0).to(ACC)
    tl.store(out_ptr + row, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))


# ---- the whole cascade in one launch (one program per plane) -------------------------------------

#: The cascade kernels have no level limit of their own (the level sizes are computed in the
#: kernel); separable.cascade_fits takes one. Deeper calls (possible outside periodization, where
#: the levels stop shrinking near the filter's length) go level by level.
_CASCADE_MAX_LEVELS = 32


@triton.jit
def _cascade_split_level(
    src, ssh, ssw, dst, f_ptr, h, w, kh, kw, sf0, sf1, write_ll,
    L: tl.constexpr, OFF: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr,
    P: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """One analysis level of one plane, tile by tile (kernels/dwt.py's split, all four bands from
    the same loads): the approximation to dst (kh x kw, dense row-major) where write_ll, and the
    level's three sums of |d|^p (each tile's fixed tree, added in tile order)."""
    s_h = tl.full([], 0.0, ACC)
    s_v = tl.full([], 0.0, ACC)
    s_d = tl.full([], 0.0, ACC)
    tiles_w = tl.cdiv(kw, BW)
    for t in range(tl.cdiv(kh, BH) * tiles_w):
        i = (t // tiles_w) * BH + tl.arange(0, BH)
        k = (t % tiles_w) * BW + tl.arange(0, BW)
        acc_ll, acc_h, acc_v, acc_d = _split_tile_direct(
            src, f_ptr, i, k, h, w, kh, kw, ssh, ssw, sf0, sf1,
            L, OFF, TAPS, MODE, True, ACC, WIDE, BH, BW,
        )  # fmt: skip
        ok = (i < kh)[:, None] & (k < kw)[None, :]
        s_h += _tile_energy(acc_h, ok, P)
        s_v += _tile_energy(acc_v, ok, P)
        s_d += _tile_energy(acc_d, ok, P)
        if WIDE:
            i, k = i.to(tl.int64), k.to(tl.int64)
        tl.store(dst + i[:, None] * kw + k[None, :], acc_ll, mask=ok & write_ll)
    return s_h, s_v, s_d


@triton.jit
def _store_energies(part_ptr, row, C, pc, s_h, s_v, s_d):
    """A plane's three sums of one level into partials[n, j, b, c] (row = (n J + j) 3)."""
    tl.store(part_ptr + row * C + pc, s_h)
    tl.store(part_ptr + (row + 1) * C + pc, s_v)
    tl.store(part_ptr + (row + 2) * C + pc, s_d)


@triton.jit(do_not_specialize=["C", "H", "W", "J", "PER_PLANE"])
def _band_cascade_kernel(
    x_ptr, f_ptr, s_ptr, part_ptr,
    C, H, W, J, PER_PLANE,
    sxn, sxc, sxh, sxw, sf0, sf1,
    L: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr, P: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """Every level of one (n, c) plane's band energies in one program: level 1 from x (its
    strides and dtype), level j from a_{j-1} in the plane's scratch (PER_PLANE elements: a_1 ..
    a_{J-1} one after the other, each dense row-major), each level's three sums of |d|^p to
    partials[n, j, b, c]; a barrier between levels (a level's tiles read the whole of the
    previous level, which this program's threads wrote).

    ptxas for sm_90a (triton 3.8's, 2026-12-06; haar, db4 and db20 at 32 x 32, p = 1 and 2, int32
    offsets, 4 warps), this kernel and ``_band_backward_cascade_kernel``: float32 56-168
    registers, float64 96-255, no spill except the float32 db20 backward (236-244 bytes, its
    one-row merge tiles). Never run on a GPU."""
    if MODE == PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    s_base = s_ptr + plane.to(tl.int64) * PER_PLANE
    h = _analysis_len(H, L, MODE)
    w = _analysis_len(W, L, MODE)
    s_h, s_v, s_d = _cascade_split_level(
        x_ptr + pn * sxn + pc * sxc, sxh, sxw, s_base, f_ptr, H, W, h, w, sf0, sf1, J > 1,
        L, OFF, TAPS, MODE, P, ACC, WIDE, BH, BW,
    )  # fmt: skip
    _store_energies(part_ptr, pn * J * 3, C, pc, s_h, s_v, s_d)
    tl.debug_barrier()
    off = h * 0
    for j in range(1, J):
        kh = _analysis_len(h, L, MODE)
        kw = _analysis_len(w, L, MODE)
        s_h, s_v, s_d = _cascade_split_level(
            s_base + off, w, 1, s_base + off + h * w, f_ptr, h, w, kh, kw, sf0, sf1, j + 1 < J,
            L, OFF, TAPS, MODE, P, ACC, WIDE, BH, BW,
        )  # fmt: skip
        _store_energies(part_ptr, (pn * J + j) * 3, C, pc, s_h, s_v, s_d)
        tl.debug_barrier()
        off += h * w
        h, w = kh, kw


@triton.jit
def _cascade_band_grads(
    src, ssh, ssw, b_ptr, f_ptr, h, w, kh, kw, sf0, sf1, g_h, g_v, g_d,
    L: tl.constexpr, OFF: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr,
    P: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """The band gradients psi(d) * g of one level of one plane into b_ptr (three kh x kw bands,
    dense row-major, one after the other), tile by tile from the level's input src (h x w)."""
    tiles_w = tl.cdiv(kw, BW)
    for t in range(tl.cdiv(kh, BH) * tiles_w):
        i = (t // tiles_w) * BH + tl.arange(0, BH)
        k = (t % tiles_w) * BW + tl.arange(0, BW)
        _, acc_h, acc_v, acc_d = _split_tile_direct(
            src, f_ptr, i, k, h, w, kh, kw, ssh, ssw, sf0, sf1,
            L, OFF, TAPS, MODE, True, ACC, WIDE, BH, BW,
        )  # fmt: skip
        ok = (i < kh)[:, None] & (k < kw)[None, :]
        if WIDE:
            i, k = i.to(tl.int64), k.to(tl.int64)
        o = i[:, None] * kw + k[None, :]
        tl.store(b_ptr + o, _psi(acc_h, g_h, P), mask=ok)
        tl.store(b_ptr + kh * kw + o, _psi(acc_v, g_v, P), mask=ok)
        tl.store(b_ptr + 2 * kh * kw + o, _psi(acc_d, g_d, P), mask=ok)


@triton.jit
def _cascade_adjoint_tile(
    g_ll, b_ptr, f_ptr, r0, c0, h, w, kh, kw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    FAMILIES: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """The analysis adjoint on the BH x BW tile at (r0, c0) of a level's input (h x w) from the
    approximation's gradient g_ll and the band gradients at b_ptr (kh x kw each, dense)."""
    r = r0 + tl.arange(0, BH)
    cc = c0 + tl.arange(0, BW)
    r_last = tl.minimum(r0 + BH, h) - 1
    c_last = tl.minimum(c0 + BW, w) - 1
    return _dwt._merge_tile_sparse(
        g_ll, b_ptr, f_ptr, r, cc, r0, r_last, c0, c_last, h, w, kh, kw,
        kw, 1, kh * kw, kw, 1, sf0, sf1,
        L, OFF, HALF_TAPS, MODE, FAMILIES, True, ACC, WIDE, BH, BW, False,
    )  # fmt: skip


@triton.jit(do_not_specialize=["C", "H", "W", "J", "PER_PLANE", "G_OFF", "B_OFF"])
def _band_backward_cascade_kernel(
    g_ptr, x_ptr, f_ptr, s_ptr, y_ptr,
    C, H, W, J, PER_PLANE, G_OFF, B_OFF,
    sxn, sxc, sxh, sxw, sf0, sf1, syn, syc, syh, syw,
    L: tl.constexpr, TAPS: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    FAMILIES: tl.constexpr, P: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    BHA: tl.constexpr, BWA: tl.constexpr, BHS: tl.constexpr, BWS: tl.constexpr,
):  # fmt: skip
    """grad_x of one (n, c) plane in one program. Its scratch (PER_PLANE elements) holds the
    approximations a_1 .. a_{J-1} (from 0), their gradients G_1 .. G_J (from G_OFF; the same
    layout) and one level's three band gradients (from B_OFF, sized for the largest level). The
    analyses first (a_J is not needed; G_J = 0), then from the coarsest level: the band gradients
    psi(d_j) * g[n, j, b] recomputed from a_{j-1}, then the adjoint of (G_j, bands) into G_{j-1}
    -- at level 1 into grad_x, in its dtype and strides. A barrier after every pass."""
    if MODE == PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    x_base = x_ptr + pn * sxn + pc * sxc
    s_base = s_ptr + plane.to(tl.int64) * PER_PLANE
    b_base = s_base + B_OFF
    # analyses: a_1 from x, a_j from a_{j-1}, j < J
    h1, w1, _ = _cascade_level(H, W, 1, L, MODE)
    if J > 1:
        _cascade_analysis(
            x_base, sxh, sxw, s_base, f_ptr, H, W, h1, w1, sf0, sf1,
            L, OFF, TAPS, MODE, ACC, WIDE, BHA, BWA,
        )  # fmt: skip
        tl.debug_barrier()
    h, w, off = h1, w1, h1 * 0
    for _ in range(1, J - 1):
        kh = _analysis_len(h, L, MODE)
        kw = _analysis_len(w, L, MODE)
        _cascade_analysis(
            s_base + off, w, 1, s_base + off + h * w, f_ptr, h, w, kh, kw, sf0, sf1,
            L, OFF, TAPS, MODE, ACC, WIDE, BHA, BWA,
        )  # fmt: skip
        tl.debug_barrier()
        off += h * w
        h, w = kh, kw
    # G_J = 0
    kh, kw, off_j = _cascade_level(H, W, J, L, MODE)
    zero = tl.zeros([BHA, BWA], dtype=ACC)
    tiles_w = tl.cdiv(kw, BWA)
    for t in range(tl.cdiv(kh, BHA) * tiles_w):
        i = (t // tiles_w) * BHA + tl.arange(0, BHA)
        k = (t % tiles_w) * BWA + tl.arange(0, BWA)
        ok = (i < kh)[:, None] & (k < kw)[None, :]
        tl.store(s_base + G_OFF + off_j + i[:, None] * kw + k[None, :], zero, mask=ok)
    tl.debug_barrier()
    row = pn * J * 3
    # levels J .. 2: from a_{j-1} (scratch) into G_{j-1} (scratch)
    for step in range(J - 1):
        j = J - step
        kh, kw, off_j = _cascade_level(H, W, j, L, MODE)
        h, w, off_p = _cascade_level(H, W, j - 1, L, MODE)
        g_h = tl.load(g_ptr + row + 3 * (j - 1)).to(ACC)
        g_v = tl.load(g_ptr + row + 3 * (j - 1) + 1).to(ACC)
        g_d = tl.load(g_ptr + row + 3 * (j - 1) + 2).to(ACC)
        _cascade_band_grads(
            s_base + off_p, w, 1, b_base, f_ptr, h, w, kh, kw, sf0, sf1, g_h, g_v, g_d,
            L, OFF, TAPS, MODE, P, ACC, WIDE, BHA, BWA,
        )  # fmt: skip
        tl.debug_barrier()
        g_out = s_base + G_OFF + off_p
        tiles_w = tl.cdiv(w, BWS)
        for t in range(tl.cdiv(h, BHS) * tiles_w):
            r0 = (t // tiles_w) * BHS
            c0 = (t % tiles_w) * BWS
            v = _cascade_adjoint_tile(
                s_base + G_OFF + off_j, b_base, f_ptr, r0, c0, h, w, kh, kw, sf0, sf1,
                L, OFF, HALF_TAPS, MODE, FAMILIES, ACC, WIDE, BHS, BWS,
            )  # fmt: skip
            r = r0 + tl.arange(0, BHS)
            cc = c0 + tl.arange(0, BWS)
            ok = (r < h)[:, None] & (cc < w)[None, :]
            tl.store(g_out + r[:, None] * w + cc[None, :], v, mask=ok)
        tl.debug_barrier()
    # level 1: from x into grad_x
    g_h = tl.load(g_ptr + row).to(ACC)
    g_v = tl.load(g_ptr + row + 1).to(ACC)
    g_d = tl.load(g_ptr + row + 2).to(ACC)
    _cascade_band_grads(
        x_base, sxh, sxw, b_base, f_ptr, H, W, h1, w1, sf0, sf1, g_h, g_v, g_d,
        L, OFF, TAPS, MODE, P, ACC, WIDE, BHA, BWA,
    )  # fmt: skip
    tl.debug_barrier()
    tiles_w = tl.cdiv(W, BWS)
    for t in range(tl.cdiv(H, BHS) * tiles_w):
        r0 = (t // tiles_w) * BHS
        c0 = (t % tiles_w) * BWS
        v = _cascade_adjoint_tile(
            s_base + G_OFF, b_base, f_ptr, r0, c0, H, W, h1, w1, sf0, sf1,
            L, OFF, HALF_TAPS, MODE, FAMILIES, ACC, WIDE, BHS, BWS,
        )  # fmt: skip
        r = r0 + tl.arange(0, BHS)
        cc = c0 + tl.arange(0, BWS)
        ok = (r < H)[:, None] & (cc < W)[None, :]
        if WIDE:
            r, cc = r.to(tl.int64), cc.to(tl.int64)
        y_off = pn * syn + pc * syc + r[:, None] * syh + cc[None, :] * syw
        tl.store(y_ptr + y_off, v.to(y_ptr.dtype.element_ty), mask=ok)


# ---- host side -----------------------------------------------------------------------------------


def _acc(filters: Tensor):
    return tl.float64 if filters.dtype == torch.float64 else tl.float32


class _Level:
    """Geometry and launch configuration of one analysis level (the rule of kernels/dwt.py's
    ``_split``, read at call time so that tests can force its paths)."""

    def __init__(self, h: int, w: int, taps: int, mode: str, acc_float64: bool):
        self.h, self.w = h, w
        self.kh, self.kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
        self.taps_block = triton.next_power_of_2(taps)
        self.dense = _dwt.dense_fits(max(h, w), acc_float64)
        if self.dense:
            self.bh, self.bw = _dwt._dense_tile(self.kh), _dwt._dense_tile(self.kw)
            self.nph = _dwt._dense_tile(h, _dwt._DENSE_MAX_FULL)
            self.npw = _dwt._dense_tile(w, _dwt._DENSE_MAX_FULL)
            self.chunk = _dwt._tap_chunk(taps, max(self.nph, self.npw), max(self.bh, self.bw))
        else:
            self.bh, self.bw = _dwt._tile(self.kh, self.kw, self.taps_block)
            self.nph = self.npw = self.chunk = 1  # unused
        self.tiles_h = triton.cdiv(self.kh, self.bh)
        self.tiles_w = triton.cdiv(self.kw, self.bw)


def _levels(h: int, w: int, filters: Tensor, mode: str, level: int) -> list[_Level]:
    out = []
    for _ in range(level):
        lv = _Level(h, w, filters.shape[-1], mode, filters.dtype == torch.float64)
        out.append(lv)
        h, w = lv.kh, lv.kw
    return out


def _launch_level(
    lv: _Level, j: int, level: int, a: Tensor, filters: Tensor, mode: str, p: int,
    ll: Tensor | None, hi: Tensor | None, part: Tensor | None, grad: Tensor | None, tmax: int,
) -> None:  # fmt: skip
    n, c = a.shape[:2]
    backward = hi is not None
    ll_t = ll if ll is not None else a  # placeholders where a pointer is not used
    hi_t = hi if hi is not None else a
    ll_strides = ll.stride() if ll is not None else (0, 0, 0, 0)
    hi_strides = hi.stride() if hi is not None else (0, 0, 0, 0, 0)
    grid = _dwt.checked_grid((n * c, lv.tiles_h, lv.tiles_w), f"band energy level {j + 1}", a.shape)
    with _dwt._device_guard(a):
        _band_level_kernel[grid](
            a, filters, ll_t, hi_t, part if part is not None else a,
            grad if grad is not None else a,
            c, lv.h, lv.w, lv.kh, lv.kw, j, level, tmax, lv.tiles_h, lv.tiles_w,
            *a.stride(), *filters.stride(), *ll_strides, *hi_strides,
            L=filters.shape[-1], TAPS=lv.taps_block, MODE=_dwt._MODE_CODE[mode], P=p,
            ACC=_acc(filters), WIDE=_dwt._needs_int64(a, ll_t, hi_t), BH=lv.bh, BW=lv.bw,
            DENSE=lv.dense, NPH=lv.nph, NPW=lv.npw, TAP_CHUNK=lv.chunk,
            WRITE_LL=ll is not None, BACKWARD=backward,
        )  # fmt: skip


def _approximation(a: Tensor, lv: _Level, filters: Tensor) -> Tensor:
    n, c = a.shape[:2]
    return torch.empty((n, c, lv.kh, lv.kw), dtype=filters.dtype, device=a.device)


def band_energy(x: Tensor, filters: Tensor, mode: str, level: int, p: int) -> Tensor:
    """x: (N, C, H, W), filters: (2, L) dec [lo; hi] in the compute dtype -> (N, J, 3) energies in
    the compute dtype (J = level; level 1 first; bands cH, cV, cD). One pass per level (only the
    next approximation is stored), plus one reduction of the per-tile partial sums; or, where
    the planes fill the GPU, one pass for every level (the cascade) plus the reduction."""
    n, c, h, w = x.shape
    if level == 0 or x.numel() == 0:
        return torch.zeros((n, level, 3), dtype=filters.dtype, device=x.device)
    if _cascade_fits(x, level):
        energies = torch.empty((n, level, 3), dtype=filters.dtype, device=x.device)
        if _band_cascade(x, filters, mode, level, p, energies):
            return energies
    energies = torch.zeros((n, level, 3), dtype=filters.dtype, device=x.device)
    levels = _levels(h, w, filters, mode, level)
    tmax = max(c * lv.tiles_h * lv.tiles_w for lv in levels)
    acc_dtype = torch.float64 if filters.dtype == torch.float64 else torch.float32
    # Zeros: a level with fewer tiles than tmax leaves the tail of its rows untouched.
    part = torch.zeros((n, level, 3, tmax), dtype=acc_dtype, device=x.device)
    a = x
    for j, lv in enumerate(levels):
        ll = _approximation(a, lv, filters) if j + 1 < level else None
        _launch_level(lv, j, level, a, filters, mode, p, ll, None, part, None, tmax)
        a = ll
    with _dwt._device_guard(x):
        _reduce_rows_kernel[(n * level * 3,)](
            part, energies, tmax, ACC=_acc(filters), BLOCK=min(_REDUCE_BLOCK, triton.next_power_of_2(tmax))
        )  # fmt: skip
    return energies


def band_energy_backward(
    grad: Tensor, x: Tensor, filters: Tensor, mode: str, level: int, p: int
) -> Tensor:
    """grad: (N, J, 3), x: (N, C, H, W) -> grad_x (N, C, H, W) in x's dtype and memory format.
    Two passes per level: a split that recomputes the bands (storing the next approximation and
    the detail-band gradients psi(d) * grad), then, coarsest level first, the analysis adjoint
    (kernels/dwt.py) of the approximation's gradient and those band gradients."""
    n, c, h, w = x.shape
    if level == 0 or x.numel() == 0:
        return empty_4d(x, n, c, h, w).zero_()
    grad = grad.contiguous()
    if _cascade_fits(x, level):
        grad_x = _band_backward_cascade(grad, x, filters, mode, level, p)
        if grad_x is not None:
            return grad_x
    levels = _levels(h, w, filters, mode, level)
    a, band_grads = x, []
    for j, lv in enumerate(levels):
        ll = _approximation(a, lv, filters) if j + 1 < level else None
        hi = torch.empty((n, c, 3, lv.kh, lv.kw), dtype=filters.dtype, device=x.device)
        _launch_level(lv, j, level, a, filters, mode, p, ll, hi, None, grad, 1)
        band_grads.append(hi)
        a = ll
    last = levels[-1]
    g_ll = torch.zeros((n, c, last.kh, last.kw), dtype=filters.dtype, device=x.device)
    code = _dwt._MODE_CODE[mode]
    for j in reversed(range(level)):
        lv = levels[j]
        if j == 0:
            out = empty_4d(x, n, c, h, w)
        else:
            out = torch.empty((n, c, lv.h, lv.w), dtype=filters.dtype, device=x.device)
        _dwt._merge(g_ll, band_grads[j], filters, code, True, out)
        band_grads[j] = None  # free as we go
        g_ll = out
    return g_ll


def _cascade_fits(x: Tensor, level: int) -> bool:
    """Whether the energies (or their gradient) run as one cascade launch, one program per plane
    (separable.cascade_fits: enough planes to fill the GPU, none too large), not level by level."""
    return separable.cascade_fits(x, level, _CASCADE_MAX_LEVELS)


def _cascade_sizes(h: int, w: int, taps: int, mode: str, level: int) -> list[int]:
    """Elements of a_1 .. a_level of an h x w plane."""
    sizes = []
    for _ in range(level):
        h, w = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
        sizes.append(h * w)
    return sizes


def _cascade_scratch(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cascade's per-plane buffers (a function of its own: the tests fill it and look into it).
    At least one element: a one-level forward stores nothing, but its pointer must be valid."""
    return torch.empty(max(numel, 1), dtype=dtype, device=device)


def _cascade_tiles(h: int, w: int, filters: Tensor, mode: str) -> tuple[int, ...]:
    """(BHA, BWA, BHS, BWS): the split tile at level 1 and the merge tile over the plane, by the
    block-size rule of kernels/dwt.py, the split's at half the level kernels' outputs per tile:
    with theirs, ptxas for sm_90a (triton 3.8) gave db4 float32 239 registers and float64 a
    1.5-2.7 KB spill; the cascade's few programs per SM gain more from occupancy than from wide
    tiles (blind: never timed)."""
    taps = filters.shape[-1]
    kh, kw = analysis_length(h, taps, mode), analysis_length(w, taps, mode)
    bha, bwa = _dwt._tile(kh, kw, 2 * triton.next_power_of_2(taps))
    bhs, bws = _dwt._tile(h, w, 4 * triton.next_power_of_2(taps // 2))
    return bha, bwa, bhs, bws


def _band_cascade(
    x: Tensor, filters: Tensor, mode: str, level: int, p: int, energies: Tensor
) -> bool:
    """The energies in two launches: ``_band_cascade_kernel`` (every level of a plane in one
    program; scratch a_1 .. a_{J-1} per plane) writes partials[n, j, b, c], then the row sum over
    the channels. False, launching nothing, where a plane's scratch would need int64 offsets
    (never within separable.CASCADE_MAX_PLANE)."""
    n, c, h, w = x.shape
    per_plane = sum(_cascade_sizes(h, w, filters.shape[-1], mode, level)[:-1])
    if per_plane > _dwt._INT32_LIMIT:
        return False
    scratch = _cascade_scratch(n * c * per_plane, filters.dtype, x.device)
    acc_dtype = torch.float64 if filters.dtype == torch.float64 else torch.float32
    part = torch.empty((n, level, 3, c), dtype=acc_dtype, device=x.device)
    bha, bwa, _, _ = _cascade_tiles(h, w, filters, mode)
    with _dwt._device_guard(x):
        _band_cascade_kernel[(n * c,)](
            x, filters, scratch, part, c, h, w, level, per_plane,
            *x.stride(), *filters.stride(),
            L=filters.shape[-1], TAPS=triton.next_power_of_2(filters.shape[-1]),
            MODE=_dwt._MODE_CODE[mode], P=p, ACC=_acc(filters), WIDE=_dwt._needs_int64(x),
            BH=bha, BW=bwa,
        )  # fmt: skip
        _reduce_rows_kernel[(n * level * 3,)](
            part, energies, c, ACC=_acc(filters),
            BLOCK=min(_REDUCE_BLOCK, triton.next_power_of_2(c)),
        )  # fmt: skip
    return True


def _band_backward_cascade(
    grad: Tensor, x: Tensor, filters: Tensor, mode: str, level: int, p: int
) -> Tensor | None:
    """grad_x in one launch (``_band_backward_cascade_kernel``, one program per plane), or None,
    launching nothing, where a plane's scratch would need int64 offsets. Scratch per plane, in
    the compute dtype: a_1 .. a_{J-1}, then G_1 .. G_J (their gradients), then three bands of the
    largest level (levels may grow: short axes, non-periodization modes)."""
    n, c, h, w = x.shape
    taps = filters.shape[-1]
    sizes = _cascade_sizes(h, w, taps, mode, level)
    g_off = sum(sizes[:-1])
    b_off = g_off + sum(sizes)
    per_plane = b_off + 3 * max(sizes)
    if per_plane > _dwt._INT32_LIMIT:
        return None
    scratch = _cascade_scratch(n * c * per_plane, filters.dtype, x.device)
    out = empty_4d(x, n, c, h, w)
    bha, bwa, bhs, bws = _cascade_tiles(h, w, filters, mode)
    code = _dwt._MODE_CODE[mode]
    with _dwt._device_guard(x):
        _band_backward_cascade_kernel[(n * c,)](
            grad, x, filters, scratch, out, c, h, w, level, per_plane, g_off, b_off,
            *x.stride(), *filters.stride(), *out.stride(),
            L=taps, TAPS=triton.next_power_of_2(taps), HALF_TAPS=triton.next_power_of_2(taps // 2),
            MODE=code, FAMILIES=_dwt._FAMILIES[code], P=p, ACC=_acc(filters),
            WIDE=_dwt._needs_int64(x, out), BHA=bha, BWA=bwa, BHS=bhs, BWS=bws,
        )  # fmt: skip
    return out
