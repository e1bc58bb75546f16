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
    next approximation is stored), plus one reduction of the per-tile partial sums."""
    n, c, h, w = x.shape
    energies = torch.zeros((n, level, 3), dtype=filters.dtype, device=x.device)
    if level == 0 or x.numel() == 0:
        return energies
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
