"""Triton kernels for the PGD update, in place on x_adv (contract: wavefuse/ops/pgd_step.py).

    pgd_step(x_adv, grad, x_nat, eps, alpha, lo, hi,
             eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm)                      -> None
    wavelet_pgd_step(<the same up to hi_tensor>, filters, wave_mode, level, hf_scale, norm) -> None

The update is torchattacks 3.5.1's, op for op, in the compute dtype (float32 for half types,
rounded once at the store; float64 for float64), as reference.pgd_step_ref and the CPU kernel:

    Linf  x' = x_adv + alpha * sign(g);  delta = clamp(x' - x, -eps, eps);  x_adv = clamp(x + delta, lo, hi)
    L2    g' = g / (||g||_2 + 1e-10) per sample;  x' = x_adv + alpha * g';  delta = x' - x;
          delta *= min((1 / ||delta||_2) * eps, 1) per sample (1 where ||delta|| = 0);
          x_adv = clamp(x + delta, lo, hi)

A NaN gradient entry propagates into x_adv (sign(NaN) is NaN here, not torch's 0), and every clamp
keeps a NaN input, as torch.clamp does (Triton's minimum/maximum would drop it on a GPU).
alpha * sign(g) is exact, so Linf in float32 is bit-identical to the reference whether or not the
compiler contracts it into a fused multiply-add. Divisions and square roots are the correctly
rounded ones (div_rn, sqrt_rn: a GPU's default float32 division and sqrt are approximate).

Kernels. Linf: one elementwise pass over x_adv in place. L2: three launches, no host sync and no
atomics -- (1) per (sample, chunk) partial sums of g^2; (2) per (sample, chunk) partial sums of
delta^2, each program first summing its sample's g^2 partials (at most _MAX_PARTIALS, one vector
load, a fixed tree) to get ||g||; (3) the update, each program summing both sets of partials of its
sample the same way. The partials are summed in one fixed order, so repeated calls agree bit for
bit; the norms accumulate in the compute dtype (the CPU kernel uses double: agreement ~1e-7
relative in float32).

Scalars. eps, alpha, lo, hi are floats or (N or 1, C or 1, 1, 1) tensors in the compute dtype (for
L2, eps per sample). Triton passes a Python float as float32, which would round float64 bounds, so
the launchers pass each float's IEEE-754 bit pattern as an integer (not specialised: 1 would
become a constant) and the kernels bitcast it back to float64 and round it to the compute dtype
(as torch rounds a Python scalar). No device tensor is made for a float: a step with float bounds
launches nothing but the step.

Addressing. The elements are visited in x_adv's memory order (NCHW, or NHWC when x_adv is
channels_last). When x_adv, grad and x_nat are all dense in that order, an element's offset is its
index; otherwise each tensor is read and written through its own strides.

wavelet_pgd_step. Haar (2 taps) is fused into the step (kernels/haar.py): one launch for Linf,
three for L2. Other wavelets, and Haar beyond that kernel's depth, on planes of at most
_SEPARABLE_MAX_SIDE (64) per side -- CIFAR's 32 x 32, Tiny-ImageNet's 64 x 64 -- run one launch
for every level: the filter g' = idwt(scale_hf(dwt(g))) of a plane G is a short sum of separable
matrix pairs, identity * G + sum_k L_k G R_k^T (wavefuse/ops/separable.py: one pair per distinct
scale step for a perfect-reconstruction bank, built once per bank, mode, level, size and scales and
cached), so ``_separable_kernel`` loads the plane, applies the pairs with tl.dot (float32 "ieee":
no TF32 rounding; float64) and, for Linf, steps x_adv in the same program; for L2 it writes g' in
the compute dtype and its plane's sum of g'^2, so that of pgd_step's three L2 launches only the
last two follow (the first forms those sums; it still runs where a sample has more than
_MAX_PARTIALS planes). No band is formed. The separable
kernel's block sides and warps (4 warps up to 32 x 32, 8 at 64 x 64) are chosen blind: ptxas for
sm_90 reports 168 registers and no spill at 32 x 32 in float32, 255 and a 208-byte spill at 64 x 64.

Larger planes, where those dense products cost side^3 per plane against side^2, run the
*approximation chain* (``_chain_step``) for a perfect-reconstruction bank (every orthogonal
wavelet; separable.perfect_reconstruction checks the bank, mode and sizes once and caches it).
Perfect reconstruction, idwt(a_j, d_j) = a_{j-1}, turns the synthesis with scaled details,
a~_{j-1} = idwt(a~_j, s_j d_j), into s_j a_{j-1} + S_lo (a~_j - s_j a_j), where S_lo is the
synthesis of an approximation band alone: the detail bands are never needed. So per level one
analysis launch writes only the approximation a_j (``dwt2d_ll``, a quarter of a level's output),
and one synthesis launch (``_chain_kernel``) from the coarsest level computes
e_{j-1} = c_j a_{j-1} + S_lo e_j over a_{j-1}'s buffer (e_J = (1 - s_J) a_J, c_j = s_j - s_{j-1};
e_j = a~_j - s_j a_j); at j = 1, with c_1 = s_1, that is g' itself, which the same program steps
into x_adv for Linf (for L2 it is written and the three L2 launches follow). That is 2J launches
for Linf against the 3J + 1 of composing the transforms (analysis of all four bands, a torch
multiply of the details, full synthesis, the step), and about half the memory traffic; the filter
is unrolled as g' = s_1 g + sum_j (s_{j+1} - s_j) P_j g (s_{J+1} = 1), so levels past the last
change of scale are not visited at all (``separable.chain_depth``). It agrees with the reference
to the bank's reconstruction error (float64 taps up to ~1e-11, sym20; float32 taps 3e-8). A
bank without perfect reconstruction (possible through the ops layer) composes the transforms
instead (``scale_details``). The chain's tiles and warps are the merge kernel's (kernels/dwt.py),
unmeasured on a GPU.

Level by level, the chain is two launches per level: a level's synthesis needs the coarser levels
finished, its analysis the finer ones, and programs of one launch cannot wait for each other. So,
where the planes fill the GPU, it runs as ONE launch, the *cascade* (``_cascade_kernel``): one program per (n, c) plane
sweeps that plane through every level -- the analyses (approximation alone) tile by tile into a
scratch buffer (each plane's levels together; see ``_cascade_launch`` for its size), then the
synthesis levels coarsest first, the last fused with the Linf step -- with a barrier
(tl.debug_barrier: __syncthreads, which makes a block's global writes visible to the block) between
levels. Linf is then one launch for every level and L2 three (the cascade, which also sums g'^2 per
plane, and pgd_step's last two), as the separable kernel. The cost is parallelism: one program per
plane, which sweeps its plane's levels one tile after another, so with few planes most SMs would
sit idle and a large plane takes long. The cascade therefore runs only where the planes fill the
GPU and none is too large (separable.cascade_fits: at least 2 planes per SM, at most 512 x 512
each), for at most _CASCADE_MAX_DEPTH (8) levels (the scales are scalar arguments). Those limits
are chosen blind, and the cascade's tiles are the level-by-level kernels' general (tiled) paths,
never their dense ones. ptxas's registers and spills are noted at ``_cascade_kernel``.

Otherwise -- few planes, a large plane, or a deep chain -- the chain runs in PAIRS of stages
(``_pair_chain``, ``_pair_kernel``): its 2J stages (A_1 .. A_J, then S_J .. S_1) two per launch,
so J launches for J levels (issue #5's "one per level at most"), the last pair fused with the Linf
step (L2: it writes g' and one sum of g'^2 per tile; pgd_step's last two L2 launches follow).
Each program computes its tile of the second stage from a window of the first stage's plane
that it computes itself, halo included and the boundary rule folded into the window's indices,
through a scratch buffer of its own and a barrier; neighbouring tiles compute the halo twice.
Every tile of every level spreads over the GPU. The level-by-level route (2J launches: per level
``dwt2d_ll`` and ``_chain_kernel``) remains behind ``_PAIR_ROUTE = False`` and for an odd filter
length. The pairs' window and tile sides are chosen blind (see ``_PAIR_MIN_TILE``). Never run on a
GPU.

Tested only under TRITON_INTERPRET=1 on a CPU, never run on a GPU; every kernel variant compiles for
sm_90 offline (triton.compile, triton 3.8's ptxas). The PTX has div.rn/sqrt.rn as intended, and
fma.rn where ptxas contracts the L2 update (x_adv + alpha * g', x + delta * factor): L2 differs from
the reference by an ulp or so there, within its 1e-6 contract; Linf is unaffected (exact products).
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch import Tensor
from wavefuse.kernels import dwt as _dwt

from wavefuse.ops import separable
from wavefuse.reference import analysis_length

# Elements per program block (largest; small tensors use the next power of two of their size).
_BLOCK = 1024
# At most this many partial sums per sample (a power of two): each L2 program sums them all.
_MAX_PARTIALS = 256
# wavelet_pgd_step on planes up to this side (H and W) runs the separable one-launch kernel: its
# cost per plane grows as side^3 (dense matrix products), the per-level transforms' as side^2.
_SEPARABLE_MAX_SIDE = 64
# tl.dot's smallest block side on a GPU.
_MIN_DOT_SIDE = 16
#: torchattacks PGDL2's eps_for_division: g / (||g||_2 + 1e-10), per sample.
L2_EPS_FOR_DIVISION = 1e-10


# ---- in-kernel helpers ---------------------------------------------------------------------------


@triton.jit
def _scalar(bits, t_ptr, sbn, sbc, n, c, HAS_T: tl.constexpr, ACC: tl.constexpr):
    """A bound: its tensor entry [n, c] (strides 0 along broadcast dimensions), or the float
    passed as the bit pattern of a float64, rounded to the compute dtype."""
    if HAS_T:
        v = tl.load(t_ptr + n * sbn + c * sbc).to(ACC)
    else:
        v = bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    return v


@triton.jit
def _is_nan(v):
    """NaN test by self-comparison (no isnan in triton.language that the interpreter also runs)."""
    return v != v  # noqa: PLR0124


@triton.jit
def _to_output(v, dtype: tl.constexpr):
    """v rounded to the output dtype, to nearest even. bfloat16 is rounded by hand (as c10's
    round_to_nearest_even): Triton's interpreter truncates float32 -> bfloat16 casts, a GPU rounds
    them to nearest even; this way both give torch's result bit for bit."""
    if dtype == tl.bfloat16:
        b = v.to(tl.float32).to(tl.uint32, bitcast=True)
        r = b + 0x7FFF + ((b >> 16) & 1)
        r = tl.where(_is_nan(v), b | 0x400000, r)  # a NaN stays a (quiet) NaN
        out = (r >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = v.to(dtype)
    return out


@triton.jit
def _div(a, b):
    """Correctly rounded a / b (float32 `/` on a GPU is approximate; float64's is exact)."""
    if a.dtype == tl.float64:
        out = a / b
    else:
        out = tl.div_rn(a, b)
    return out


@triton.jit
def _sqrt(a):
    """Correctly rounded square root (div_rn and sqrt_rn take float32 only)."""
    if a.dtype == tl.float64:
        out = tl.sqrt(a)
    else:
        out = tl.sqrt_rn(a)
    return out


@triton.jit
def _sign(g):
    """sign(g) with sign(0) = 0 and NaN kept (the reference's where(isnan(g), g, sign(g)))."""
    return tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, tl.where(_is_nan(g), g, 0.0))).to(g.dtype)


@triton.jit
def _clamp(v, a, b):
    """torch.clamp(torch.clamp(v, min=a), max=b): max, then min, a NaN v kept."""
    return tl.where(_is_nan(v), v, tl.minimum(tl.maximum(v, a), b))


@triton.jit
def _coords(n, r, C, HW, W, CL: tl.constexpr):
    """Channel, row and column of element r (in memory order: NCHW, or NHWC when CL) of a sample."""
    if CL:
        c = r % C
        hw = r // C
    else:
        c = r // HW
        hw = r % HW
    return c, hw // W, hw % W


@triton.jit
def _offset(n, c, h, w, sn, sc, sh, sw):
    return n * sn + c * sc + h * sh + w * sw


# ---- Linf: one elementwise pass ------------------------------------------------------------------


@triton.jit(do_not_specialize=["eps_bits", "alpha_bits", "lo_bits", "hi_bits"])
def _linf_kernel(
    xa_ptr, g_ptr, x_ptr,
    eps_bits, alpha_bits, lo_bits, hi_bits,
    eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    total, M, C, HW, W,
    xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    FLAT: tl.constexpr, CL: tl.constexpr, WIDE: tl.constexpr, ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """x_adv = clamp(x + clamp(x_adv + alpha * sign(g) - x, -eps, eps), lo, hi) for one block
    of elements (index = n * M + position in memory order)."""
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    ok = idx < total
    n = idx // M
    r = idx % M
    NEED_C: tl.constexpr = HAS_EPS or HAS_ALPHA or HAS_LO or HAS_HI or not FLAT
    if NEED_C:
        c, h, w = _coords(n, r, C, HW, W, CL)
    else:
        c = 0
    if FLAT:
        o_xa = idx
        o_g = idx
        o_x = idx
    else:
        o_xa = _offset(n, c, h, w, xa_sn, xa_sc, xa_sh, xa_sw)
        o_g = _offset(n, c, h, w, g_sn, g_sc, g_sh, g_sw)
        o_x = _offset(n, c, h, w, x_sn, x_sc, x_sh, x_sw)
    eps = _scalar(eps_bits, eps_t, se_n, se_c, n, c, HAS_EPS, ACC)
    alpha = _scalar(alpha_bits, alpha_t, sa_n, sa_c, n, c, HAS_ALPHA, ACC)
    lo = _scalar(lo_bits, lo_t, sl_n, sl_c, n, c, HAS_LO, ACC)
    hi = _scalar(hi_bits, hi_t, sh_n, sh_c, n, c, HAS_HI, ACC)
    xa = tl.load(xa_ptr + o_xa, mask=ok, other=0.0).to(ACC)
    g = tl.load(g_ptr + o_g, mask=ok, other=0.0).to(ACC)
    xv = tl.load(x_ptr + o_x, mask=ok, other=0.0).to(ACC)
    moved = xa + alpha * _sign(g)
    delta = _clamp(moved - xv, -eps, eps)
    out = _clamp(xv + delta, lo, hi)
    tl.store(xa_ptr + o_xa, _to_output(out, xa_ptr.dtype.element_ty), mask=ok)


# ---- L2: partial sums, then the update -----------------------------------------------------------


@triton.jit
def _sample_sum(part_ptr, n, P, PB: tl.constexpr):
    """The P partials of sample n, summed in one fixed order."""
    t = tl.arange(0, PB)
    return tl.sum(tl.load(part_ptr + n * P + t, mask=t < P, other=0.0), axis=0)


@triton.jit
def _l2_moved(xa_ptr, g_ptr, x_ptr, n, r, ok, denom, alpha_bits, alpha_t, sa_n, sa_c,
              M, C, HW, W, xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw,
              x_sn, x_sc, x_sh, x_sw,
              HAS_ALPHA: tl.constexpr, NEED_C: tl.constexpr, FLAT: tl.constexpr,
              CL: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """x_adv + alpha * g / denom and x_nat at positions r of sample n, plus x_adv's offsets and
    the channel (computed when NEED_C, for per-channel bounds, or when not FLAT)."""
    if NEED_C or not FLAT:
        c, h, w = _coords(n, r, C, HW, W, CL)
    else:
        c = 0
    if FLAT:
        o_xa = n * M + r
        o_g = o_xa
        o_x = o_xa
    else:
        o_xa = _offset(n, c, h, w, xa_sn, xa_sc, xa_sh, xa_sw)
        o_g = _offset(n, c, h, w, g_sn, g_sc, g_sh, g_sw)
        o_x = _offset(n, c, h, w, x_sn, x_sc, x_sh, x_sw)
    alpha = _scalar(alpha_bits, alpha_t, sa_n, sa_c, n, c, HAS_ALPHA, ACC)
    xa = tl.load(xa_ptr + o_xa, mask=ok, other=0.0).to(ACC)
    g = tl.load(g_ptr + o_g, mask=ok, other=0.0).to(ACC)
    xv = tl.load(x_ptr + o_x, mask=ok, other=0.0).to(ACC)
    moved = xa + alpha * _div(g, denom)
    return moved, xv, o_xa, c


@triton.jit
def _l2_denominator(pg_ptr, n, P, PB: tl.constexpr, ACC: tl.constexpr):
    """||g||_2 + 1e-10 of sample n from its partials (torchattacks' eps_for_division)."""
    eps_div = tl.full([], 1e-10, ACC)
    return _sqrt(_sample_sum(pg_ptr, n, P, PB)) + eps_div


@triton.jit
def _l2_grad_partials_kernel(
    g_ptr, pg_ptr, M, C, HW, W, P, CHUNK, g_sn, g_sc, g_sh, g_sw,
    FLAT: tl.constexpr, CL: tl.constexpr, WIDE: tl.constexpr, ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """pg[n, chunk] = sum of g^2 over one chunk of sample n."""
    pid = tl.program_id(0)
    n = pid // P
    chunk = pid % P
    if WIDE:
        n, chunk = n.to(tl.int64), chunk.to(tl.int64)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for r0 in range(0, CHUNK, BLOCK):
        r = chunk * CHUNK + r0 + tl.arange(0, BLOCK)
        ok = r < M
        if FLAT:
            o_g = n * M + r
        else:
            c, h, w = _coords(n, r, C, HW, W, CL)
            o_g = _offset(n, c, h, w, g_sn, g_sc, g_sh, g_sw)
        g = tl.load(g_ptr + o_g, mask=ok, other=0.0).to(ACC)
        acc += g * g
    tl.store(pg_ptr + pid, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["alpha_bits"])
def _l2_delta_partials_kernel(
    xa_ptr, g_ptr, x_ptr, pg_ptr, pd_ptr, alpha_bits, alpha_t, sa_n, sa_c,
    M, C, HW, W, P, CHUNK, PG,
    xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    HAS_ALPHA: tl.constexpr, FLAT: tl.constexpr, CL: tl.constexpr, WIDE: tl.constexpr,
    ACC: tl.constexpr, BLOCK: tl.constexpr, PGB: tl.constexpr,
):  # fmt: skip
    """pd[n, chunk] = sum of (x_adv + alpha * g / (||g|| + 1e-10) - x)^2 over one chunk; ||g||
    from the PG partials pg[n, :] (the grad-partials launch's P, or one per plane where the
    wavelet step's filter kernel summed them)."""
    pid = tl.program_id(0)
    n = pid // P
    chunk = pid % P
    if WIDE:
        n, chunk = n.to(tl.int64), chunk.to(tl.int64)
    denom = _l2_denominator(pg_ptr, n, PG, PGB, ACC)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for r0 in range(0, CHUNK, BLOCK):
        r = chunk * CHUNK + r0 + tl.arange(0, BLOCK)
        ok = r < M
        moved, xv, _, _ = _l2_moved(
            xa_ptr, g_ptr, x_ptr, n, r, ok, denom, alpha_bits, alpha_t, sa_n, sa_c,
            M, C, HW, W, xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw,
            x_sn, x_sc, x_sh, x_sw, HAS_ALPHA, HAS_ALPHA, FLAT, CL, ACC,
        )  # fmt: skip
        d = tl.where(ok, moved - xv, 0.0)
        acc += d * d
    tl.store(pd_ptr + pid, tl.sum(acc, axis=0))


@triton.jit(do_not_specialize=["eps_bits", "alpha_bits", "lo_bits", "hi_bits"])
def _l2_update_kernel(
    xa_ptr, g_ptr, x_ptr, pg_ptr, pd_ptr,
    eps_bits, alpha_bits, lo_bits, hi_bits,
    eps_t, alpha_t, lo_t, hi_t,
    se_n, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    M, C, HW, W, P, CHUNK, PG,
    xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    FLAT: tl.constexpr, CL: tl.constexpr, WIDE: tl.constexpr, ACC: tl.constexpr,
    BLOCK: tl.constexpr, PB: tl.constexpr, PGB: tl.constexpr,
):  # fmt: skip
    """x_adv = clamp(x + (x_adv + alpha * g / (||g|| + 1e-10) - x) * factor, lo, hi) over one
    chunk, factor = min((1 / ||delta||) * eps, 1) (1 where ||delta|| = 0, NaN kept)."""
    pid = tl.program_id(0)
    n = pid // P
    chunk = pid % P
    if WIDE:
        n, chunk = n.to(tl.int64), chunk.to(tl.int64)
    denom = _l2_denominator(pg_ptr, n, PG, PGB, ACC)
    dn = _sqrt(_sample_sum(pd_ptr, n, P, PB))
    eps = _scalar(eps_bits, eps_t, se_n, 0, n, 0, HAS_EPS, ACC)
    one = tl.full([], 1.0, ACC)
    q = _div(one, dn) * eps
    factor = tl.where(_is_nan(q), q, tl.minimum(q, one))
    factor = tl.where(dn == 0, one, factor)
    for r0 in range(0, CHUNK, BLOCK):
        r = chunk * CHUNK + r0 + tl.arange(0, BLOCK)
        ok = r < M
        moved, xv, o_xa, c = _l2_moved(
            xa_ptr, g_ptr, x_ptr, n, r, ok, denom, alpha_bits, alpha_t, sa_n, sa_c,
            M, C, HW, W, xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw,
            x_sn, x_sc, x_sh, x_sw, HAS_ALPHA, HAS_ALPHA or HAS_LO or HAS_HI, FLAT, CL, ACC,
        )  # fmt: skip
        delta = (moved - xv) * factor
        lo = _scalar(lo_bits, lo_t, sl_n, sl_c, n, c, HAS_LO, ACC)
        hi = _scalar(hi_bits, hi_t, sh_n, sh_c, n, c, HAS_HI, ACC)
        out = _clamp(xv + delta, lo, hi)
        tl.store(xa_ptr + o_xa, _to_output(out, xa_ptr.dtype.element_ty), mask=ok)


# ---- wavelet step, small planes: the whole filter and the step in one launch ---------------------


@triton.jit
def _linf_tile(
    xa_ptr, x_ptr, g, n, c, rows, cols, ok,
    eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    ACC: tl.constexpr,
):  # fmt: skip
    """The Linf step on a [rows, cols] tile of plane (n, c) of x_adv, in place, with the filtered
    gradient g of that tile (the wavelet kernels' last stage)."""
    eps = _scalar(eps_bits, eps_t, se_n, se_c, n, c, HAS_EPS, ACC)
    alpha = _scalar(alpha_bits, alpha_t, sa_n, sa_c, n, c, HAS_ALPHA, ACC)
    lo = _scalar(lo_bits, lo_t, sl_n, sl_c, n, c, HAS_LO, ACC)
    hi = _scalar(hi_bits, hi_t, sh_n, sh_c, n, c, HAS_HI, ACC)
    o_xa = n * xa_sn + c * xa_sc + rows[:, None] * xa_sh + cols[None, :] * xa_sw
    o_x = n * x_sn + c * x_sc + rows[:, None] * x_sh + cols[None, :] * x_sw
    xa = tl.load(xa_ptr + o_xa, mask=ok, other=0.0).to(ACC)
    xv = tl.load(x_ptr + o_x, mask=ok, other=0.0).to(ACC)
    delta = _clamp(xa + alpha * _sign(g) - xv, -eps, eps)
    out = _clamp(xv + delta, lo, hi)
    tl.store(xa_ptr + o_xa, _to_output(out, xa_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["eps_bits", "alpha_bits", "lo_bits", "hi_bits", "identity_bits"])
def _separable_kernel(
    xa_ptr, g_ptr, x_ptr, out_ptr, pg_ptr, l_ptr, r_ptr,
    eps_bits, alpha_bits, lo_bits, hi_bits, identity_bits,
    eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    C, H, W, TERMS,
    xa_sn, xa_sc, xa_sh, xa_sw, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    o_sn, o_sc, o_sh, o_sw,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    LINF: tl.constexpr, WIDE: tl.constexpr, ACC: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """One plane (program n * C + c): g' = identity * G + sum_k L[k] @ G @ Rt[k]
    (wavefuse/ops/separable.py: every level of the wavelet filter at once), then, for Linf, the
    step on x_adv in place; otherwise g' is written to out and its sum of squares to pg[pid]
    (the L2 step's first partial sums: the L2 step follows)."""
    pid = tl.program_id(0).to(tl.int64)
    n = pid // C
    c = pid % C
    rows = tl.arange(0, BH)
    cols = tl.arange(0, BW)
    if WIDE:
        rows, cols = rows.to(tl.int64), cols.to(tl.int64)
    ok = (rows[:, None] < H) & (cols[None, :] < W)
    o_g = n * g_sn + c * g_sc + rows[:, None] * g_sh + cols[None, :] * g_sw
    g = tl.load(g_ptr + o_g, mask=ok, other=0.0).to(ACC)
    identity = identity_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    acc = g * identity
    bh = tl.arange(0, BH)
    bw = tl.arange(0, BW)
    for k in range(TERMS):
        right_t = tl.load(r_ptr + k * BW * BW + bw[:, None] * BW + bw[None, :])
        left = tl.load(l_ptr + k * BH * BH + bh[:, None] * BH + bh[None, :])
        t = tl.dot(g, right_t, out_dtype=ACC, input_precision="ieee")
        acc = tl.dot(left, t, acc, out_dtype=ACC, input_precision="ieee")
    if LINF:
        _linf_tile(
            xa_ptr, x_ptr, acc, n, c, rows, cols, ok,
            eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
            se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
            xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
            HAS_EPS, HAS_ALPHA, HAS_LO, HAS_HI, ACC,
        )  # fmt: skip
    else:
        o_out = n * o_sn + c * o_sc + rows[:, None] * o_sh + cols[None, :] * o_sw
        tl.store(out_ptr + o_out, acc, mask=ok)
        tl.store(pg_ptr + pid, tl.sum(tl.sum(tl.where(ok, acc * acc, 0.0), axis=1), axis=0))


# ---- wavelet step, larger planes: the approximation chain -----------------------------------------


@triton.jit(
    do_not_specialize=["coef_bits", "gain_bits", "eps_bits", "alpha_bits", "lo_bits", "hi_bits"]
)
def _chain_kernel(
    cur_ptr, f_ptr, prev_ptr, out_ptr, xa_ptr, x_ptr,
    coef_bits, gain_bits, eps_bits, alpha_bits, lo_bits, hi_bits,
    eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    C, H, W, Hs, Ws, Kh, Kw,
    sc_n, sc_c, sc_h, sc_w, sf0, sf1, sp_n, sp_c, sp_h, sp_w, so_n, so_c, so_h, so_w,
    xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
    L: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr, FAMILIES: tl.constexpr,
    HAS_PREV: tl.constexpr, LINF: tl.constexpr,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    DENSE: tl.constexpr, KPH: tl.constexpr, KPW: tl.constexpr, TAP_CHUNK: tl.constexpr,
):  # fmt: skip
    """One BH x BW tile of one (n, c) plane of one synthesis level of the chain:
    v = coef * prev + gain * S_lo cur S_lo^T (the approximation band's synthesis alone, cropped to
    H x W; the synthesis map over Hs x Ws, taps the dec bank reversed), then, for LINF, the step
    on x_adv in place with g' = v; otherwise v is written to out (which may be prev itself: a
    program reads prev only at the positions it writes)."""
    if MODE == _dwt.PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    r0 = tl.program_id(1) * BH
    c0 = tl.program_id(2) * BW
    r = r0 + tl.arange(0, BH)
    cc = c0 + tl.arange(0, BW)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    cur_base = cur_ptr + pn * sc_n + pc * sc_c
    if DENSE:
        acc = _dwt._merge_tile_dense(
            cur_base, cur_base, f_ptr, r, cc, Hs, Ws, Kh, Kw, sc_h, sc_w, 0, 0, 0, sf0, sf1,
            L, OFF, MODE, True, ACC, WIDE, BH, BW, KPH, KPW, TAP_CHUNK, True,
        )  # fmt: skip
    else:
        r_last = tl.minimum(r0 + BH, Hs) - 1
        c_last = tl.minimum(c0 + BW, Ws) - 1
        acc = _dwt._merge_tile_sparse(
            cur_base, cur_base, f_ptr, r, cc, r0, r_last, c0, c_last, Hs, Ws, Kh, Kw,
            sc_h, sc_w, 0, 0, 0, sf0, sf1,
            L, OFF, HALF_TAPS, MODE, FAMILIES, True, ACC, WIDE, BH, BW, True,
        )  # fmt: skip
    ok = (r < H)[:, None] & (cc < W)[None, :]
    if WIDE:
        r, cc = r.to(tl.int64), cc.to(tl.int64)
    v = acc * gain_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    if HAS_PREV:
        coef = coef_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
        o_p = pn * sp_n + pc * sp_c + r[:, None] * sp_h + cc[None, :] * sp_w
        v = coef * tl.load(prev_ptr + o_p, mask=ok, other=0.0).to(ACC) + v
    if LINF:
        _linf_tile(
            xa_ptr, x_ptr, v, pn, pc, r, cc, ok,
            eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
            se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
            xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
            HAS_EPS, HAS_ALPHA, HAS_LO, HAS_HI, ACC,
        )  # fmt: skip
    else:
        o_out = pn * so_n + pc * so_c + r[:, None] * so_h + cc[None, :] * so_w
        tl.store(out_ptr + o_out, v.to(out_ptr.dtype.element_ty), mask=ok)


# ---- wavelet step, larger planes: the chain in pairs of stages (J launches for J levels) ---------
# The chain's 2J stages -- analyses A_1 .. A_J (a_j = lo(a_{j-1})), then syntheses S_J .. S_1
# (e_{j-1} = c_j a_{j-1} + gain_j S_lo e_j) -- run two per launch: J launches for J levels, the
# last fused with the Linf step. A program computes its stage-2 tile from a window of the stage-1
# plane that it computes itself, halo included (a neighbour computes the overlap again), in a
# scratch buffer of its own, with a barrier between the stages. The window holds the stage-1
# plane as stage 2 reads it, boundary rule applied: an analysis reads extended position e at
# _extend(e) (zero where the extension is zero), a synthesis reads coefficient k at k mod K
# (periodization) or zero outside [0, K) -- so the window's entries are computed at those mapped
# indices and stage 2 reads the window without any boundary logic.
#
# Geometry (per axis; the window side R is a power of two): an analysis stage 2 reads window slots
# 2t + m for outputs t < T_A and taps m < L, so T_A = (R - L) // 2 + 1; a synthesis stage 2 reads
# coefficient (r - m - OFF) / 2 (taps m of r - OFF's parity) for outputs r in [r0, r0 + T_S), r0
# even, which spans T_S / 2 + L / 2 slots from floor((r0 - L + 1 - OFF) / 2), so T_S = 2R - L.
# BLIND: R is the smallest power of two that gives T_A >= _PAIR_MIN_TILE and T_S >= 2 x that;
# nothing here has run on a GPU. Both stages work in row chunks whose gathers hold at most
# _dwt._BLOCK_ELEMENTS values (_pair_chunks), as the level kernels' tiles do.
_PAIR_MIN_TILE = 8
#: The chain off the cascade runs in pairs of stages (J launches); False: level by level (2J).
_PAIR_ROUTE = True


@triton.jit
def _coef_index(k, k0, K, IDX: tl.constexpr):
    """Where a synthesis reads coefficient k, -1 for zero: IDX 0, a window of K slots from k0 (k -
    k0; outside only for the lanes past a tile's last output); 1, the plane, zero outside [0, K);
    2, the plane, periodic (k mod K)."""
    if IDX == 0:
        idx = tl.where((k >= k0) & (k < k0 + K), k - k0, -1)
    elif IDX == 1:
        idx = tl.where((k >= 0) & (k < K), k, -1)
    else:
        idx = _dwt._floor_mod(k, K)
    return idx


@triton.jit
def _synthesize(
    base, sh, sw, f_ptr, sf1, r, cc, k0h, k0w, Kh, Kw,
    L: tl.constexpr, OFF: tl.constexpr, HALF_TAPS: tl.constexpr, IDX: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """S_lo c S_lo^T at output rows r and columns cc (any index vectors): y[r, c] = sum t[m] t[n]
    c[(r - m - OFF) / 2, (c - n - OFF) / 2] over the taps m, n of r - OFF's and c - OFF's parity,
    t[m] = dec_lo[L - 1 - m] (the synthesis taps); coefficients read through _coef_index. The
    same sum as kernels/dwt.py's merge of an approximation band alone, gathered per output."""
    b = tl.arange(0, HALF_TAPS)
    b_ok = b < L // 2
    mw = _dwt._floor_mod(cc - OFF, 2)[:, None] + 2 * b[None, :]  # [BC, HALF_TAPS]
    col = _coef_index((cc[:, None] - mw - OFF) // 2, k0w, Kw, IDX)
    col_ok = (col >= 0) & b_ok[None, :]
    col = tl.maximum(col, 0)
    col_off = col.to(tl.int64) * sw if WIDE else col * sw
    tw = tl.load(f_ptr + (L - 1 - mw) * sf1, mask=b_ok[None, :], other=0.0).to(ACC)
    ph = _dwt._floor_mod(r - OFF, 2)
    acc = tl.zeros([BR, BC], dtype=ACC)
    for a in range(L // 2):
        mh = ph + 2 * a
        row = _coef_index((r - mh - OFF) // 2, k0h, Kh, IDX)
        row_ok = row >= 0
        row = tl.maximum(row, 0)
        row_off = row.to(tl.int64) * sh if WIDE else row * sh
        th = tl.load(f_ptr + (L - 1 - mh) * sf1).to(ACC)
        mask = row_ok[:, None, None] & col_ok[None, :, :]
        v = tl.load(base + row_off[:, None, None] + col_off[None, :, :], mask=mask, other=0.0)
        acc += th[:, None] * tl.sum(v.to(ACC) * tw[None, :, :], axis=2)
    return acc


@triton.jit
def _window_index(p, n, MODE: tl.constexpr, SYN_MODE: tl.constexpr, TO_ANALYSIS: tl.constexpr):
    """The stage-1 plane index (n samples) that window position p stands for, -1 for zero: an
    extended position read by an analysis (TO_ANALYSIS), else a coefficient read by a synthesis."""
    if TO_ANALYSIS:
        idx = _dwt._extend(p, n, MODE)
    elif SYN_MODE == _dwt.PERIODIZATION:
        idx = _coef_index(p, 0, n, 2)
    else:
        idx = _coef_index(p, 0, n, 1)
    return idx


@triton.jit(
    do_not_specialize=[
        "c1_bits", "g1_bits", "c2_bits", "g2_bits", "eps_bits", "alpha_bits", "lo_bits", "hi_bits",
    ]
)  # fmt: skip
def _pair_kernel(
    src_ptr, p1_ptr, p2_ptr, f_ptr, s_ptr, first_ptr, out_ptr, pg_ptr, xa_ptr, x_ptr,
    c1_bits, g1_bits, c2_bits, g2_bits,
    eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    C, Hs, Ws, Hm, Wm, Ho, Wo, tiles_h, tiles_w, PG,
    s_sn, s_sc, s_sh, s_sw, sf0, sf1, p1_sn, p1_sc, p1_sh, p1_sw, p2_sn, p2_sc, p2_sh, p2_sw,
    fs_n, fs_c, fs_h, fs_w, so_n, so_c, so_h, so_w,
    xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
    L: tl.constexpr, TAPS: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    SYN_MODE: tl.constexpr, FIRST_A: tl.constexpr, SECOND_A: tl.constexpr,
    HAS_C1: tl.constexpr, HAS_C2: tl.constexpr, STORE_FIRST: tl.constexpr, LINF: tl.constexpr,
    SUMS: tl.constexpr,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, R: tl.constexpr, B: tl.constexpr, T: tl.constexpr,
    RC: tl.constexpr, OC: tl.constexpr,
):  # fmt: skip
    """Two stages of the chain on one T x T output tile of one (n, c) plane (see above), stage 1
    RC window rows and stage 2 OC output rows at a time (_pair_chunks).

    ptxas for sm_90a (triton 3.8's, 2026-12-06; db4, db8, sym10, db20 x float32, float64 x
    every pair kind, symmetric, 4 warps): 56-244 registers per thread, no spill but 4 bytes in
    float64 db20's synthesis pair; each variant compiles in about 2 s. (Before the row chunks, a
    review measured float64 db20's analysis pair at 354 KB of spills and 55 min of ptxas.)

    Stage 1 (FIRST_A: an analysis of src, Hs x Ws, into the Hm x Wm plane a_j; else a synthesis
    g1 * S_lo src, src the Ks = Hs x Ws coefficients e_j, into e_{j-1}, Hm x Wm, plus c1 * p1,
    p1 = a_{j-1}) over this tile's R x R window, into the program's scratch; with STORE_FIRST
    also the window's own rows and columns (those of the stage-1 plane that this tile's
    outputs start from) into first. Stage 2 (SECOND_A: an analysis of the window into Ho x Wo;
    else g2 * S_lo window plus c2 * p2 into Ho x Wo) written to out, or, with LINF, stepped into
    x_adv; with SUMS (L2, g' itself) the tile's sum of g'^2 to pg[n, (c, tile)]."""
    if MODE == _dwt.PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    th = tl.program_id(1)
    tw = tl.program_id(2)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    i0 = th * T
    j0 = tw * T
    if SECOND_A:  # the window holds extended positions 2 i0 + OFF + s
        w0h = 2 * i0 + OFF
        w0w = 2 * j0 + OFF
    else:  # coefficients floor((r0 - L + 1 - OFF) / 2) + s
        w0h = _dwt._floor_div(i0 - L + 1 - OFF, 2)
        w0w = _dwt._floor_div(j0 - L + 1 - OFF, 2)
    s = tl.arange(0, R)
    cols = _window_index(w0w + s, Wm, MODE, SYN_MODE, SECOND_A)
    cols_ok = cols >= 0
    cols = tl.maximum(cols, 0)
    src = src_ptr + pn * s_sn + pc * s_sc
    pid = (plane.to(tl.int64) * tiles_h + th) * tiles_w + tw
    scratch = s_ptr + pid * (R * R)
    # ---- stage 1: the stage-1 plane at the window's indices, RC window rows at a time (a
    # gather of RC x R x taps elements per pass: _dwt._BLOCK_ELEMENTS)
    for c0 in range(0, R, RC):
        sr = c0 + tl.arange(0, RC)
        rows = _window_index(w0h + sr, Hm, MODE, SYN_MODE, SECOND_A)
        ok1 = (rows >= 0)[:, None] & cols_ok[None, :]
        rows = tl.maximum(rows, 0)
        if FIRST_A:
            v1, _, _, _ = _dwt._split_tile_direct(
                src, f_ptr, rows, cols, Hs, Ws, Hm, Wm, s_sh, s_sw, sf0, sf1,
                L, OFF, TAPS, MODE, True, ACC, WIDE, RC, R,
            )  # fmt: skip
        else:
            gain1 = g1_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
            if SYN_MODE == _dwt.PERIODIZATION:
                IDX: tl.constexpr = 2
            else:
                IDX: tl.constexpr = 1
            v1 = gain1 * _synthesize(
                src, s_sh, s_sw, f_ptr, sf1, rows, cols, 0, 0, Hs, Ws,
                L, OFF, HALF_TAPS, IDX, ACC, WIDE, RC, R,
            )  # fmt: skip
            if HAS_C1:
                coef1 = c1_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
                if WIDE:
                    o1 = pn * p1_sn + pc * p1_sc + rows.to(tl.int64)[:, None] * p1_sh
                    o1 += cols.to(tl.int64)[None, :] * p1_sw
                else:
                    o1 = pn * p1_sn + pc * p1_sc + rows[:, None] * p1_sh + cols[None, :] * p1_sw
                v1 = coef1 * tl.load(p1_ptr + o1, mask=ok1, other=0.0).to(ACC) + v1
        v1 = tl.where(ok1, v1, 0.0)
        if STORE_FIRST:  # positions 2 i0 .. 2 (i0 + T) - 1 of the stage-1 plane: this tile's own
            e_r = w0h + sr
            e_c = w0w + s
            own = ((e_r >= 2 * i0) & (e_r < 2 * (i0 + T)) & (e_r < Hm))[:, None]
            own = own & ((e_c >= 2 * j0) & (e_c < 2 * (j0 + T)) & (e_c < Wm))[None, :]
            if WIDE:
                e_r, e_c = e_r.to(tl.int64), e_c.to(tl.int64)
            o_f = pn * fs_n + pc * fs_c + e_r[:, None] * fs_h + e_c[None, :] * fs_w
            tl.store(first_ptr + o_f, v1.to(first_ptr.dtype.element_ty), mask=own)
        tl.store(scratch + sr[:, None] * R + s[None, :], v1)
    tl.debug_barrier()
    # ---- stage 2: the T x T tile from the window, OC output rows at a time
    tc = tl.arange(0, B)
    cc = j0 + tc
    col_ok = (tc < T) & (cc < Wo)
    if WIDE:
        cc = cc.to(tl.int64)
    sq = tl.zeros([], dtype=ACC)
    for o0 in range(0, T, OC):
        t = o0 + tl.arange(0, OC)
        r = i0 + t
        ok = ((t < T) & (r < Ho))[:, None] & col_ok[None, :]
        if SECOND_A:
            v, _, _, _ = _dwt._split_tile_direct(
                scratch, f_ptr, t, tc, R, R, T, T, R, 1, sf0, sf1,
                L, 0, TAPS, _dwt.ZERO, True, ACC, False, OC, B,
            )  # fmt: skip
        else:
            gain2 = g2_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
            v = gain2 * _synthesize(
                scratch, R, 1, f_ptr, sf1, r, j0 + tc, w0h, w0w, R, R,
                L, OFF, HALF_TAPS, 0, ACC, False, OC, B,
            )  # fmt: skip
        if WIDE:
            r = r.to(tl.int64)
        if HAS_C2:
            coef2 = c2_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
            o2 = pn * p2_sn + pc * p2_sc + r[:, None] * p2_sh + cc[None, :] * p2_sw
            v = coef2 * tl.load(p2_ptr + o2, mask=ok, other=0.0).to(ACC) + v
        if LINF:
            _linf_tile(
                xa_ptr, x_ptr, v, pn, pc, r, cc, ok,
                eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
                se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
                xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
                HAS_EPS, HAS_ALPHA, HAS_LO, HAS_HI, ACC,
            )  # fmt: skip
        else:
            o_out = pn * so_n + pc * so_c + r[:, None] * so_h + cc[None, :] * so_w
            tl.store(out_ptr + o_out, v.to(out_ptr.dtype.element_ty), mask=ok)
            if SUMS:
                sq += tl.sum(tl.sum(tl.where(ok, v * v, 0.0), axis=1), axis=0)
    if SUMS:
        part = (pc * tiles_h + th) * tiles_w + tw
        tl.store(pg_ptr + pn * PG + part, sq)


# ---- wavelet step, larger planes: the whole chain in one launch (one program per plane) ---------

#: The cascade kernel takes the chain's scales as this many scalar arguments (no device tensor:
#: nothing to copy under CUDA graph capture); deeper chains run level by level. Where the cascade
#: runs otherwise: separable.cascade_fits (enough planes to fill the GPU, none too large).
_CASCADE_MAX_DEPTH = 8


@triton.jit
def _analysis_len(n, L: tl.constexpr, MODE: tl.constexpr):
    """reference.analysis_length: coefficients per axis after one analysis level."""
    if MODE == _dwt.PERIODIZATION:
        k = (n + 1) // 2
    else:
        k = (n + L - 1) // 2
    return k


@triton.jit
def _synthesis_len(k, L: tl.constexpr, MODE: tl.constexpr):
    """reference.synthesis_length: samples per axis after one synthesis level."""
    if MODE == _dwt.PERIODIZATION:
        n = 2 * k
    else:
        n = 2 * k - L + 2
    return n


@triton.jit
def _cascade_level(H, W, j, L: tl.constexpr, MODE: tl.constexpr):
    """Rows, columns and offset (in a plane's scratch) of level j >= 1 of the chain: the levels
    1, 2, ... of a plane lie one after the other, each dense row-major."""
    h = _analysis_len(H, L, MODE)
    w = _analysis_len(W, L, MODE)
    off = h * 0
    for _ in range(1, j):
        off += h * w
        h = _analysis_len(h, L, MODE)
        w = _analysis_len(w, L, MODE)
    return h, w, off


@triton.jit
def _pick(j, b1, b2, b3, b4, b5, b6, b7, b8):
    """The j-th (1-based) of eight float64 bit patterns, as a float64."""
    b = tl.where(j == 1, b1, tl.where(j == 2, b2, tl.where(j == 3, b3, tl.where(j == 4, b4, b5))))
    b = tl.where(j == 6, b6, tl.where(j == 7, b7, tl.where(j == 8, b8, b)))
    return b.to(tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _cascade_analysis(
    src, ssh, ssw, dst, f_ptr, h, w, kh, kw, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, TAPS: tl.constexpr, MODE: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """One analysis level of one plane, the approximation alone: dst (kh x kw, dense row-major)
    = lo(src) (h x w, strides ssh, ssw), tile by tile (kernels/dwt.py's split, ll only)."""
    tiles_w = tl.cdiv(kw, BW)
    for t in range(tl.cdiv(kh, BH) * tiles_w):
        i = (t // tiles_w) * BH + tl.arange(0, BH)
        k = (t % tiles_w) * BW + tl.arange(0, BW)
        acc, _, _, _ = _dwt._split_tile_direct(
            src, f_ptr, i, k, h, w, kh, kw, ssh, ssw, sf0, sf1,
            L, OFF, TAPS, MODE, True, ACC, WIDE, BH, BW,
        )  # fmt: skip
        ok = (i < kh)[:, None] & (k < kw)[None, :]
        if WIDE:
            i, k = i.to(tl.int64), k.to(tl.int64)
        tl.store(dst + i[:, None] * kw + k[None, :], acc, mask=ok)


@triton.jit
def _cascade_synthesis(
    cur, f_ptr, r0, c0, kh, kw, gain, sf0, sf1,
    L: tl.constexpr, OFF: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    FAMILIES: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr,
    BH: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    """gain * S_lo cur S_lo^T on the BH x BW tile at (r0, c0): the synthesis of an approximation
    band alone (cur: kh x kw, dense row-major), as ``_chain_kernel``'s tiled merge."""
    hs = _synthesis_len(kh, L, MODE)
    ws = _synthesis_len(kw, L, MODE)
    r = r0 + tl.arange(0, BH)
    cc = c0 + tl.arange(0, BW)
    r_last = tl.minimum(r0 + BH, hs) - 1
    c_last = tl.minimum(c0 + BW, ws) - 1
    acc = _dwt._merge_tile_sparse(
        cur, cur, f_ptr, r, cc, r0, r_last, c0, c_last, hs, ws, kh, kw,
        kw, 1, 0, 0, 0, sf0, sf1,
        L, OFF, HALF_TAPS, MODE, FAMILIES, True, ACC, WIDE, BH, BW, True,
    )  # fmt: skip
    return acc * gain


@triton.jit(
    do_not_specialize=[
        "c1_bits", "c2_bits", "c3_bits", "c4_bits", "c5_bits", "c6_bits", "c7_bits", "c8_bits",
        "gain_bits", "eps_bits", "alpha_bits", "lo_bits", "hi_bits",
        "C", "H", "W", "DEPTH", "PER_PLANE",
    ]
)  # fmt: skip
def _cascade_kernel(
    g_ptr, f_ptr, s_ptr, out_ptr, pg_ptr, xa_ptr, x_ptr,
    c1_bits, c2_bits, c3_bits, c4_bits, c5_bits, c6_bits, c7_bits, c8_bits, gain_bits,
    eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
    se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
    C, H, W, DEPTH, PER_PLANE,
    g_sn, g_sc, g_sh, g_sw, sf0, sf1, so_n, so_c, so_h, so_w,
    xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
    L: tl.constexpr, TAPS: tl.constexpr, HALF_TAPS: tl.constexpr, MODE: tl.constexpr,
    SYN_MODE: tl.constexpr, FAMILIES: tl.constexpr, LINF: tl.constexpr,
    HAS_EPS: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    ACC: tl.constexpr, WIDE: tl.constexpr,
    BHA: tl.constexpr, BWA: tl.constexpr, BHS: tl.constexpr, BWS: tl.constexpr,
):  # fmt: skip
    """The approximation chain of one (n, c) plane, every level, in one program: DEPTH analysis
    levels that write the approximations a_1 .. a_DEPTH into the plane's scratch (PER_PLANE
    elements: the levels one after the other), then, coarsest first, e_{j-1} = c_j a_{j-1} +
    gain_j S_lo e_j over a_{j-1} (gain_DEPTH = 1 - s_DEPTH, else 1; c_j from the eight bit
    patterns), the last (j = 1, a_0 = g) stepped into x_adv for LINF or written to out, with
    the plane's sum of g'^2 to pg[plane] (the L2 step's first partial sums). A
    barrier separates the levels: a level's tiles read the whole of the previous level, which
    this program's threads wrote (global memory, visible to the block after the barrier).

    ptxas for sm_90a (triton 3.8's, 2026-12-06; db4 and db20 in every mode, Linf and L2, int32
    offsets, 4 warps): float32 80-166 registers per thread, float64 168-238; an 8-byte spill in
    two float32 db20 L2 variants (symmetric, reflect), none elsewhere. Never run on a GPU.
    Triton types an integer argument by its value, 0 as int32 and a float's other bit patterns as
    int64, so each pattern of zero and non-zero coefficients compiles a variant of its own (a
    fixed hf_scale: one; the unused c_j past DEPTH are always 0)."""
    if MODE == _dwt.PERIODIZATION:
        OFF: tl.constexpr = 1 - L // 2
    else:
        OFF: tl.constexpr = 2 - L
    plane = tl.program_id(0)
    pn, pc = (plane // C).to(tl.int64), (plane % C).to(tl.int64)
    g_base = g_ptr + pn * g_sn + pc * g_sc
    s_base = s_ptr + plane.to(tl.int64) * PER_PLANE
    # analysis: a_1 from g, then a_j from a_{j-1}
    h, w, _ = _cascade_level(H, W, 1, L, MODE)
    _cascade_analysis(
        g_base, g_sh, g_sw, s_base, f_ptr, H, W, h, w, sf0, sf1,
        L, OFF, TAPS, MODE, ACC, WIDE, BHA, BWA,
    )  # fmt: skip
    tl.debug_barrier()
    off = h * 0
    for _ in range(1, DEPTH):
        kh = _analysis_len(h, L, MODE)
        kw = _analysis_len(w, L, MODE)
        _cascade_analysis(
            s_base + off, w, 1, s_base + off + h * w, f_ptr, h, w, kh, kw, sf0, sf1,
            L, OFF, TAPS, MODE, ACC, WIDE, BHA, BWA,
        )  # fmt: skip
        tl.debug_barrier()
        off += h * w
        h, w = kh, kw
    # synthesis, coarsest first, each level over the finer approximation's buffer
    gain_last = gain_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    one = tl.full([], 1.0, ACC)
    for step in range(DEPTH - 1):
        j = DEPTH - step  # 2 <= j <= DEPTH
        kh, kw, off_j = _cascade_level(H, W, j, L, MODE)
        ph, pw, off_p = _cascade_level(H, W, j - 1, L, MODE)
        gain = tl.where(j == DEPTH, gain_last, one)
        coef = _pick(j, c1_bits, c2_bits, c3_bits, c4_bits, c5_bits, c6_bits, c7_bits, c8_bits)
        coef = coef.to(ACC)
        prev = s_base + off_p
        tiles_w = tl.cdiv(pw, BWS)
        for t in range(tl.cdiv(ph, BHS) * tiles_w):
            r0 = (t // tiles_w) * BHS
            c0 = (t % tiles_w) * BWS
            v = _cascade_synthesis(
                s_base + off_j, f_ptr, r0, c0, kh, kw, gain, sf0, sf1,
                L, OFF, HALF_TAPS, SYN_MODE, FAMILIES, ACC, WIDE, BHS, BWS,
            )  # fmt: skip
            r = r0 + tl.arange(0, BHS)
            cc = c0 + tl.arange(0, BWS)
            ok = (r < ph)[:, None] & (cc < pw)[None, :]
            if WIDE:
                r, cc = r.to(tl.int64), cc.to(tl.int64)
            o_p = r[:, None] * pw + cc[None, :]
            if coef != 0.0:  # as the chain: no 0 * a (an infinite a would make NaN)
                v = coef * tl.load(prev + o_p, mask=ok, other=0.0) + v
            tl.store(prev + o_p, v, mask=ok)
        tl.debug_barrier()
    # the last level: g' = c_1 g + gain_1 S_lo e_1 (c_1 = s_1), then the step or the store
    kh, kw, _ = _cascade_level(H, W, 1, L, MODE)
    gain = tl.where(DEPTH == 1, gain_last, one)
    coef = c1_bits.to(tl.int64).to(tl.float64, bitcast=True).to(ACC)
    sq = tl.zeros([BHS, BWS], dtype=ACC)
    tiles_w = tl.cdiv(W, BWS)
    for t in range(tl.cdiv(H, BHS) * tiles_w):
        r0 = (t // tiles_w) * BHS
        c0 = (t % tiles_w) * BWS
        v = _cascade_synthesis(
            s_base, f_ptr, r0, c0, kh, kw, gain, sf0, sf1,
            L, OFF, HALF_TAPS, SYN_MODE, FAMILIES, ACC, WIDE, BHS, BWS,
        )  # fmt: skip
        r = r0 + tl.arange(0, BHS)
        cc = c0 + tl.arange(0, BWS)
        ok = (r < H)[:, None] & (cc < W)[None, :]
        if WIDE:
            r, cc = r.to(tl.int64), cc.to(tl.int64)
        if coef != 0.0:
            o_g = pn * g_sn + pc * g_sc + r[:, None] * g_sh + cc[None, :] * g_sw
            v = coef * tl.load(g_ptr + o_g, mask=ok, other=0.0).to(ACC) + v
        if LINF:
            _linf_tile(
                xa_ptr, x_ptr, v, pn, pc, r, cc, ok,
                eps_bits, alpha_bits, lo_bits, hi_bits, eps_t, alpha_t, lo_t, hi_t,
                se_n, se_c, sa_n, sa_c, sl_n, sl_c, sh_n, sh_c,
                xa_sn, xa_sc, xa_sh, xa_sw, x_sn, x_sc, x_sh, x_sw,
                HAS_EPS, HAS_ALPHA, HAS_LO, HAS_HI, ACC,
            )  # fmt: skip
        else:
            o_out = pn * so_n + pc * so_c + r[:, None] * so_h + cc[None, :] * so_w
            tl.store(out_ptr + o_out, v.to(out_ptr.dtype.element_ty), mask=ok)
            sq += tl.where(ok, v * v, 0.0)
    if not LINF:
        tl.store(pg_ptr + plane, tl.sum(tl.sum(sq, axis=1), axis=0))


# ---- host side -----------------------------------------------------------------------------------


def _bits(value: float) -> int:
    """The IEEE-754 float64 bit pattern of ``value`` as a signed 64-bit integer."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _bound(value: float, t: Tensor | None, like: Tensor) -> tuple[int, Tensor, int, int]:
    """(bits of the float, pointer, stride along N, stride along C): strides 0 where broadcast."""
    if t is None:
        return _bits(value), like, 0, 0
    sn = t.stride(0) if t.shape[0] > 1 else 0
    sc = t.stride(1) if t.shape[1] > 1 else 0
    return 0, t, sn, sc


def _max_offset(t: Tensor) -> int:
    return sum((s - 1) * st for s, st in zip(t.shape, t.stride()))


def _layout(x_adv: Tensor, grad: Tensor, x_nat: Tensor) -> tuple[bool, bool]:
    """(CL, FLAT): visit in NHWC order when x_adv is channels_last; FLAT when all three tensors
    are dense in that order (an element's offset is then its index in every tensor)."""
    cl = not x_adv.is_contiguous() and x_adv.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    flat = all(t.is_contiguous(memory_format=fmt) for t in (x_adv, grad, x_nat))
    return cl, flat


def _acc(x_adv: Tensor):
    return tl.float64 if x_adv.dtype == torch.float64 else tl.float32


def _step(
    x_adv, grad, x_nat, eps, alpha, lo, hi, eps_t, alpha_t, lo_t, hi_t, norm, pg=None
) -> None:
    """The step on x_adv in place; grad may be in another float dtype (the wavelet step passes
    its filtered gradient in the compute dtype). For L2, ``pg`` (N, PG) in the compute dtype: the
    sums of grad^2 that the caller's kernel has already formed (one per plane); the grad-partials
    launch is then skipped."""
    if x_adv.numel() == 0:
        return
    n, c, h, w = x_adv.shape
    m = c * h * w
    cl, flat = _layout(x_adv, grad, x_nat)
    wide = n * m > _dwt._INT32_LIMIT or any(
        _max_offset(t) > _dwt._INT32_LIMIT for t in (x_adv, grad, x_nat)
    )
    strides = (*x_adv.stride(), *grad.stride(), *x_nat.stride())
    e, a, lw, hg = (
        _bound(v, t, x_adv) for v, t in ((eps, eps_t), (alpha, alpha_t), (lo, lo_t), (hi, hi_t))
    )
    has = {"HAS_EPS": eps_t is not None, "HAS_ALPHA": alpha_t is not None}
    has_lohi = {"HAS_LO": lo_t is not None, "HAS_HI": hi_t is not None}
    common = {"FLAT": flat, "CL": cl, "WIDE": wide, "ACC": _acc(x_adv)}
    if norm == "Linf":
        block = min(_BLOCK, triton.next_power_of_2(n * m))
        with _dwt._device_guard(x_adv):
            _linf_kernel[(triton.cdiv(n * m, block),)](
                x_adv, grad, x_nat, e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
                e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3],
                n * m, m, c, h * w, w, *strides, **has, **has_lohi, **common, BLOCK=block,
            )  # fmt: skip
        return
    block = min(_BLOCK, triton.next_power_of_2(m))
    chunk = block * triton.cdiv(triton.cdiv(m, _MAX_PARTIALS), block)
    parts = triton.cdiv(m, chunk)
    acc_dtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    pd = torch.empty((n, parts), dtype=acc_dtype, device=x_adv.device)
    grid = (n * parts,)
    pb = triton.next_power_of_2(parts)
    with _dwt._device_guard(x_adv):
        if pg is None:
            pg = torch.empty_like(pd)
            _l2_grad_partials_kernel[grid](
                grad, pg, m, c, h * w, w, parts, chunk, *grad.stride(), **common, BLOCK=block
            )  # fmt: skip
        n_pg = pg.shape[1]
        pgb = triton.next_power_of_2(n_pg)
        _l2_delta_partials_kernel[grid](
            x_adv, grad, x_nat, pg, pd, a[0], a[1], a[2], a[3], m, c, h * w, w, parts, chunk,
            n_pg, *strides, HAS_ALPHA=alpha_t is not None, **common, BLOCK=block, PGB=pgb,
        )  # fmt: skip
        _l2_update_kernel[grid](
            x_adv, grad, x_nat, pg, pd, e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
            e[2], a[2], a[3], lw[2], lw[3], hg[2], hg[3], m, c, h * w, w, parts, chunk, n_pg,
            *strides, **has, **has_lohi, **common, BLOCK=block, PB=pb, PGB=pgb,
        )  # fmt: skip


def pgd_step(
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
    norm: str,
) -> None:
    """One PGD step in place on x_adv (N, C, H, W); each bound the float, or its tensor where
    given (the ops layer's contract). Linf: one pass; L2: two partial-sum passes and the update."""
    _step(
        x_adv, grad, x_nat, eps, alpha, lo, hi,
        eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm,
    )  # fmt: skip


def _separable_step(x_adv, grad, x_nat, bounds, filters, mode, level, hf_scale, norm) -> bool:
    """The wavelet step on planes of at most _SEPARABLE_MAX_SIDE per side: one launch computes g'
    for every level (one program per plane) and, for Linf, steps x_adv; for L2 it writes g' in the
    compute dtype (and the plane's sum of its squares) and pgd_step's last two L2 launches follow.
    False, launching nothing, where the
    matrices cannot be had without a sync under CUDA graph capture (separable.filter_terms) or
    the kernel needs more shared memory than the device has (``_dwt.launched``), and for float64
    with a Triton that has no float64 tl.dot (before 3.5)."""
    if x_adv.dtype == torch.float64 and not _dwt._DOT_FLOAT64:
        return False
    n, c, h, w = x_adv.shape
    acc = _acc(x_adv)
    bh, bw = (max(_MIN_DOT_SIDE, triton.next_power_of_2(s)) for s in (h, w))
    cdtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    terms = separable.filter_terms(
        filters, mode, level, h, w, list(hf_scale), cdtype, bh, bw, x_adv.device
    )
    if terms is None:
        return False
    linf = norm == "Linf"
    out = x_adv if linf else torch.empty_like(x_adv, dtype=cdtype)
    pg = x_adv if linf else torch.empty((n, c), dtype=cdtype, device=x_adv.device)
    e, a, lw, hg = (_bound(v, t, x_adv) for v, t in zip(bounds[:4], bounds[4:]))
    wide = _dwt._needs_int64(x_adv, grad, x_nat, out)
    with _dwt._device_guard(x_adv):
        ok = _dwt.launched(
            lambda: _separable_kernel[(n * c,)](
                x_adv, grad, x_nat, out, pg, terms.left, terms.right_t,
                e[0], a[0], lw[0], hg[0], _bits(terms.identity), e[1], a[1], lw[1], hg[1],
                e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3], c, h, w, terms.count,
                *x_adv.stride(), *grad.stride(), *x_nat.stride(), *out.stride(),
                HAS_EPS=bounds[4] is not None, HAS_ALPHA=bounds[5] is not None,
                HAS_LO=bounds[6] is not None, HAS_HI=bounds[7] is not None,
                LINF=linf, WIDE=wide, ACC=acc, BH=bh, BW=bw,
                num_warps=4 if bh * bw <= 1024 else 8,
            )
        )  # fmt: skip
    if not ok:  # float64 planes over 32 need 192 KiB (Hopper only): the per-level path then runs
        return False
    if not linf:
        _step(x_adv, out, x_nat, *bounds, norm, pg=_plane_sums(pg))
    return True


def scale_details(
    g: Tensor, filters: Tensor, mode: str, level: int, hf_scale: list[float]
) -> Tensor:
    """idwt(scale_hf(dwt(g))) with the Triton transforms: g (N, C, H, W) in the compute dtype,
    filters (2, L) dec [lo; hi] of an orthogonal wavelet -> (N, C, H, W) (a cropped view)."""
    a, details, sizes = g, [], []
    for _ in range(level):
        sizes.append(a.shape[-2:])
        a, hi = _dwt.dwt2d(a, filters, mode)
        details.append(hi)
    rec = filters.flip(-1)
    for j in reversed(range(level)):
        if hf_scale[j] != 1.0:
            details[j].mul_(hf_scale[j])
        a = _dwt.idwt2d(a, details[j], rec, mode)[..., : sizes[j][0], : sizes[j][1]]
        details[j] = None
    return a


def _chain_step(x_adv, grad, x_nat, bounds, filters, mode, level, hf_scale, norm) -> bool:
    """The wavelet step through the approximation chain (perfect-reconstruction banks): J
    analysis launches that write only the approximation a_j = lo(a_{j-1}) (a_0 = g), then J
    synthesis launches from the coarsest, each ``_chain_kernel``: e_{j-1} = c_j a_{j-1} +
    S_lo e_j, written over a_{j-1}, with e_J = (1 - s_J) a_J and c_j = s_j - s_{j-1}; the last
    (j = 1, c_1 = s_1) is g' itself, stepped in the same program for Linf, written for L2 (the
    three L2 launches follow). Derivation: perfect reconstruction, idwt(a_j, d_j) = a_{j-1}, turns
    a~_{j-1} = idwt(a~_j, s_j d_j) into s_j a_{j-1} + S_lo (a~_j - s_j a_j), and e_j = a~_j -
    s_j a_j. No detail band is formed; the levels past ``separable.chain_depth`` are not
    visited. False, launching nothing, for a bank without perfect reconstruction (or one that
    cannot be checked under CUDA graph capture: ``separable.perfect_reconstruction``)."""
    depth = separable.chain_depth(level, hf_scale)
    h, w = x_adv.shape[-2:]
    # every level the reference visits: those past depth are skipped only because their round
    # trips are the identity
    if depth and not separable.perfect_reconstruction(filters, mode, level, h, w):
        return False
    if depth == 0:
        _step(x_adv, grad, x_nat, *bounds[:4], *bounds[4:], norm)
        return True
    cdtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    scales = [float(v) for v in hf_scale[:depth]]
    if _cascade_fits(x_adv, depth) and _cascade_launch(
        x_adv, grad, x_nat, bounds, filters, mode, scales, norm, cdtype
    ):
        return True
    if _PAIR_ROUTE and filters.shape[-1] % 2 == 0:
        _pair_chain(x_adv, grad, x_nat, bounds, filters, mode, scales, norm, cdtype)
        return True
    chain = [grad]
    for _ in range(depth):
        chain.append(_dwt.dwt2d_ll(chain[-1], filters, mode, cdtype))
    linf = norm == "Linf"
    g_out = None if linf else torch.empty_like(x_adv, dtype=cdtype)
    for j in range(depth, 0, -1):
        coef = scales[j - 1] - scales[j - 2] if j > 1 else scales[0]
        gain = 1.0 - scales[j - 1] if j == depth else 1.0
        out = chain[j - 1] if j > 1 else (x_adv if linf else g_out)
        _chain_launch(
            chain[j], chain[j - 1], out, x_adv, x_nat, bounds, filters, mode, coef, gain,
            linf and j == 1,
        )  # fmt: skip
    if not linf:
        _step(x_adv, g_out, x_nat, *bounds[:4], *bounds[4:], norm)
    return True


def _pair_geometry(taps: int) -> tuple[int, int, int, int, int, int]:
    """(R, T, B) of a pair whose stage 2 is an analysis, then of one whose stage 2 is a synthesis:
    the window side R (a power of two), the outputs per tile side T and its power-of-two lanes B
    (see the geometry above _PAIR_MIN_TILE)."""
    r_a = triton.next_power_of_2(2 * _PAIR_MIN_TILE + taps - 2)
    t_a = (r_a - taps) // 2 + 1
    r_s = triton.next_power_of_2((2 * _PAIR_MIN_TILE + taps + 1) // 2)
    t_s = 2 * r_s - taps
    return r_a, t_a, triton.next_power_of_2(t_a), r_s, t_s, triton.next_power_of_2(t_s)


def _pair_chunks(taps: int, r: int, b: int, first_analysis: bool, second_analysis: bool):
    """(RC, OC): window rows per stage-1 pass and output rows per stage-2 pass, so that each
    pass gathers at most _dwt._BLOCK_ELEMENTS values (rows x side x taps: all L taps of an
    analysis, the next power of two of L / 2 of a synthesis), as the level kernels' tiles."""
    full = triton.next_power_of_2(taps)
    half = triton.next_power_of_2(taps // 2)
    rc = _dwt._BLOCK_ELEMENTS // (r * (full if first_analysis else half))
    oc = _dwt._BLOCK_ELEMENTS // (b * (full if second_analysis else half))
    return max(1, min(r, rc)), max(1, min(b, oc))


def _pair_reads(k1: str, j1: int, k2: str, j2: int, coefs, depth: int) -> list[tuple[str, int]]:
    """The level buffers a pair of stages reads, as ("A", j) for a_j and ("E", j) for e_j: the
    first stage's input (a_{j1-1}; e_{j1}, or a_J itself when j1 = J) and a_{j-1} where a
    synthesis stage adds c_j a_{j-1} (csrc/cuda/pair_body.cuh's pair_reads)."""
    reads = [("A", j1 - 1)] if k1 == "A" else [("E" if j1 < depth else "A", j1)]
    for kind, j in ((k1, j1), (k2, j2)):
        if kind == "S" and coefs[j - 1] != 0.0:
            reads.append(("A", j - 1))
    return reads


def _pair_scratch(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A pair launch's window scratch (a function of its own: the tests fill it with NaN)."""
    return torch.empty(numel, dtype=dtype, device=device)


def _pair_chain(x_adv, grad, x_nat, bounds, filters, mode, scales, norm, cdtype) -> None:
    """The chain in J launches (``_pair_kernel``): its stages A_1 .. A_J, S_J .. S_1 two per
    launch, the last pair fused with the Linf step (L2: g' and its partial sums of squares per
    tile are written, and pgd_step's last two L2 launches follow). a_j is kept in memory where a
    later launch reads it: as the first stage of the next pair, or as c_{j+1} a_j (c_{j+1} != 0);
    each level buffer is released after the launch that reads it last (the allocator's stream
    order keeps its memory from later launches until then)."""
    n, c, h, w = x_adv.shape
    taps = filters.shape[-1]
    depth = len(scales)
    sizes = [(h, w)]
    for _ in range(depth):
        sizes.append(tuple(analysis_length(s, taps, mode) for s in sizes[-1]))
    coefs = [scales[0]] + [scales[j] - scales[j - 1] for j in range(1, depth)]
    stages = [("A", j) for j in range(1, depth + 1)] + [("S", j) for j in range(depth, 0, -1)]
    r_a, t_a, b_a, r_s, t_s, b_s = _pair_geometry(taps)
    linf = norm == "Linf"
    e, a, lw, hg = (_bound(v, t, x_adv) for v, t in zip(bounds[:4], bounds[4:]))
    code = _dwt._MODE_CODE[mode]
    syn = _dwt._synthesis_code(mode)
    acc = tl.float64 if cdtype == torch.float64 else tl.float32
    approx = {0: grad}  # a_j in memory
    detail = {}  # e_j in memory
    pairs = [(*stages[p], *stages[p + 1]) for p in range(0, 2 * depth, 2)]
    last_read = {}
    for i, pair in enumerate(pairs):
        for key in _pair_reads(*pair, coefs, depth):
            last_read[key] = i
    g_out, pg = None, None
    for i, (k1, j1, k2, j2) in enumerate(pairs):
        if k1 == "A":
            src, (hs, ws), (hm, wm) = approx[j1 - 1], sizes[j1 - 1], sizes[j1]
        else:
            src, (hs, ws), (hm, wm) = detail.get(j1, approx.get(j1)), sizes[j1], sizes[j1 - 1]
        c1 = coefs[j1 - 1] if k1 == "S" else 0.0
        g1 = 1.0 - scales[-1] if j1 == depth else 1.0
        p1 = approx[j1 - 1] if c1 != 0.0 else src
        c2 = coefs[j2 - 1] if k2 == "S" else 0.0
        g2 = 1.0 - scales[-1] if j2 == depth else 1.0
        p2 = approx[j2 - 1] if c2 != 0.0 else src
        ho, wo = sizes[j2] if k2 == "A" else sizes[j2 - 1]
        final = k2 == "S" and j2 == 1
        store_first = k1 == "A" and k2 == "A" and j1 < depth and coefs[j1] != 0.0
        first = src  # unused unless store_first
        if store_first:
            first = torch.empty((n, c, hm, wm), dtype=cdtype, device=x_adv.device)
        if final:
            out = x_adv if linf else torch.empty_like(x_adv, dtype=cdtype)
        else:
            out = torch.empty((n, c, ho, wo), dtype=cdtype, device=x_adv.device)
        r, t, b = (r_a, t_a, b_a) if k2 == "A" else (r_s, t_s, b_s)
        rc, oc = _pair_chunks(taps, r, b, k1 == "A", k2 == "A")
        tiles_h, tiles_w = triton.cdiv(ho, t), triton.cdiv(wo, t)
        grid = _dwt.checked_grid((n * c, tiles_h, tiles_w), "the wavelet step", x_adv.shape)
        sums = final and not linf and c * tiles_h * tiles_w <= _MAX_PARTIALS
        if sums:
            pg = torch.empty((n, c * tiles_h * tiles_w), dtype=cdtype, device=x_adv.device)
        scratch = _pair_scratch(n * c * tiles_h * tiles_w * r * r, cdtype, x_adv.device)
        wide = _dwt._needs_int64(src, p1, p2, first, out, x_adv, x_nat)
        with _dwt._device_guard(x_adv):
            _pair_kernel[grid](
                src, p1, p2, filters, scratch, first, out, pg if sums else out, x_adv, x_nat,
                _bits(c1), _bits(g1), _bits(c2), _bits(g2),
                e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
                e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3],
                c, hs, ws, hm, wm, ho, wo, tiles_h, tiles_w, c * tiles_h * tiles_w,
                *src.stride(), *filters.stride(), *p1.stride(), *p2.stride(), *first.stride(),
                *out.stride(), *x_adv.stride(), *x_nat.stride(),
                L=taps, TAPS=triton.next_power_of_2(taps),
                HALF_TAPS=triton.next_power_of_2(taps // 2), MODE=code, SYN_MODE=syn,
                FIRST_A=k1 == "A", SECOND_A=k2 == "A", HAS_C1=c1 != 0.0, HAS_C2=c2 != 0.0,
                STORE_FIRST=store_first, LINF=final and linf, SUMS=sums,
                HAS_EPS=bounds[4] is not None, HAS_ALPHA=bounds[5] is not None,
                HAS_LO=bounds[6] is not None, HAS_HI=bounds[7] is not None,
                ACC=acc, WIDE=wide, R=r, B=b, T=t, RC=rc, OC=oc,
            )  # fmt: skip
        if store_first:
            approx[j1] = first
        if k2 == "A":
            approx[j2] = out
        elif not final:
            detail[j2 - 1] = out
        else:
            g_out = out
        for kind, j in _pair_reads(k1, j1, k2, j2, coefs, depth):
            if last_read[(kind, j)] == i:  # no later launch reads it
                (approx if kind == "A" else detail).pop(j, None)
        del src, p1, p2, first, scratch
    if not linf:
        _step(x_adv, g_out, x_nat, *bounds, norm, pg=pg)


def _cascade_fits(x_adv: Tensor, depth: int) -> bool:
    """Whether the chain of this depth runs as one ``_cascade_kernel`` launch (one program per
    plane) rather than level by level (separable.cascade_fits)."""
    return separable.cascade_fits(x_adv, depth, _CASCADE_MAX_DEPTH)


def _cascade_scratch(numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The cascade's level buffer (a function of its own: the tests fill it and look into it)."""
    return torch.empty(numel, dtype=dtype, device=device)


def _cascade_launch(x_adv, grad, x_nat, bounds, filters, mode, scales, norm, cdtype) -> bool:
    """The chain in one launch (``_cascade_kernel``), its levels in a scratch buffer of the
    compute dtype: plane p's levels 1 .. J one after the other, each dense row-major, from p *
    sum_j h_j w_j (for short filters on large planes about a third of the gradient's elements;
    more for long filters on small planes, whose levels shrink slowly). For L2, g' and its
    per-plane sums of squares are written and pgd_step's last two L2 launches follow. False,
    launching nothing, where a plane's levels would need int64 offsets (never within
    separable.CASCADE_MAX_PLANE)."""
    n, c, h, w = x_adv.shape
    taps = filters.shape[-1]
    depth = len(scales)
    sizes, kh, kw = [], h, w
    for _ in range(depth):
        kh, kw = analysis_length(kh, taps, mode), analysis_length(kw, taps, mode)
        sizes.append((kh, kw))
    per_plane = sum(a * b for a, b in sizes)
    if per_plane > _dwt._INT32_LIMIT:  # the kernel's offsets inside a plane's levels are int32
        return False
    scratch = _cascade_scratch(n * c * per_plane, cdtype, x_adv.device)
    coefs = [scales[0]] + [scales[j] - scales[j - 1] for j in range(1, depth)]
    coefs += [0.0] * (_CASCADE_MAX_DEPTH - depth)
    linf = norm == "Linf"
    out = x_adv if linf else torch.empty_like(x_adv, dtype=cdtype)
    pg = x_adv if linf else torch.empty((n, c), dtype=cdtype, device=x_adv.device)
    e, a, lw, hg = (_bound(v, t, x_adv) for v, t in zip(bounds[:4], bounds[4:]))
    code = _dwt._MODE_CODE[mode]
    syn = _dwt._synthesis_code(mode)
    half_block = triton.next_power_of_2(taps // 2)
    taps_block = triton.next_power_of_2(taps)
    bha, bwa = _dwt._tile(sizes[0][0], sizes[0][1], taps_block)
    bhs, bws = _dwt._tile(h, w, 4 * half_block)
    wide = _dwt._needs_int64(grad, out, x_adv, x_nat)
    with _dwt._device_guard(x_adv):
        _cascade_kernel[(n * c,)](
            grad, filters, scratch, out, pg, x_adv, x_nat,
            *(_bits(v) for v in coefs), _bits(1.0 - scales[-1]),
            e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
            e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3],
            c, h, w, depth, per_plane,
            *grad.stride(), *filters.stride(), *out.stride(), *x_adv.stride(), *x_nat.stride(),
            L=taps, TAPS=taps_block, HALF_TAPS=half_block, MODE=code, SYN_MODE=syn,
            FAMILIES=_dwt._FAMILIES[syn], LINF=linf,
            HAS_EPS=bounds[4] is not None, HAS_ALPHA=bounds[5] is not None,
            HAS_LO=bounds[6] is not None, HAS_HI=bounds[7] is not None,
            ACC=_acc(x_adv), WIDE=wide, BHA=bha, BWA=bwa, BHS=bhs, BWS=bws,
        )  # fmt: skip
    if not linf:
        _step(x_adv, out, x_nat, *bounds, norm, pg=_plane_sums(pg))
    return True


def _plane_sums(pg: Tensor) -> Tensor | None:
    """The per-plane sums of g'^2 for the L2 step, or None (the step then forms its own partial
    sums: one more launch) where a sample has more planes than _MAX_PARTIALS: each L2 program
    loads its sample's partials as one vector."""
    return pg if pg.shape[1] <= _MAX_PARTIALS else None


def _chain_launch(cur, prev, out, x_adv, x_nat, bounds, filters, mode, coef, gain, step,
                  dense=None) -> None:  # fmt: skip
    """One ``_chain_kernel`` launch over prev's planes (the dense tile path for coefficient planes
    of at most _dwt._DENSE_MAX_FULL per side, the tiled gather otherwise, as _dwt._merge)."""
    n, c, kh, kw = cur.shape
    h, w = prev.shape[-2:]
    taps = filters.shape[-1]
    code = _dwt._synthesis_code(mode)
    hs, ws = (_dwt.synthesis_length(k, taps, mode) for k in (kh, kw))
    half_block = triton.next_power_of_2(taps // 2)
    float64 = cur.dtype == torch.float64
    if dense is None:
        dense = _dwt.dense_fits(max(kh, kw), float64)
    if dense:
        bh, bw = _dwt._dense_tile(h), _dwt._dense_tile(w)
        kph, kpw = (_dwt._dense_tile(k, _dwt._DENSE_MAX_FULL) for k in (kh, kw))
        chunk = _dwt._tap_chunk(taps, max(bh, bw), max(kph, kpw))
    else:
        bh, bw = _dwt._tile(h, w, 4 * half_block)
        kph = kpw = chunk = 1  # unused
    grid = _dwt.checked_grid(
        (n * c, triton.cdiv(h, bh), triton.cdiv(w, bw)), "the wavelet step", prev.shape
    )
    e, a, lw, hg = (_bound(v, t, x_adv) for v, t in zip(bounds[:4], bounds[4:]))
    wide = _dwt._needs_int64(cur, prev, out, x_adv, x_nat)

    def launch():
        _chain_kernel[grid](
            cur, filters, prev, out, x_adv, x_nat,
            _bits(coef), _bits(gain), e[0], a[0], lw[0], hg[0], e[1], a[1], lw[1], hg[1],
            e[2], e[3], a[2], a[3], lw[2], lw[3], hg[2], hg[3],
            c, h, w, hs, ws, kh, kw,
            *cur.stride(), *filters.stride(), *prev.stride(), *out.stride(),
            *x_adv.stride(), *x_nat.stride(),
            L=taps, HALF_TAPS=half_block, MODE=code, FAMILIES=_dwt._FAMILIES[code],
            HAS_PREV=coef != 0.0, LINF=step,
            HAS_EPS=bounds[4] is not None, HAS_ALPHA=bounds[5] is not None,
            HAS_LO=bounds[6] is not None, HAS_HI=bounds[7] is not None,
            ACC=tl.float64 if float64 else tl.float32, WIDE=wide, BH=bh, BW=bw,
            DENSE=dense, KPH=kph, KPW=kpw, TAP_CHUNK=chunk,
        )  # fmt: skip

    _dwt._launch_dense_or(
        cur, dense, launch,
        lambda: _chain_launch(cur, prev, out, x_adv, x_nat, bounds, filters, mode, coef, gain,
                              step, dense=False),
    )  # fmt: skip


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
    filters: Tensor,
    wave_mode: str,
    level: int,
    hf_scale: list[float],
    norm: str,
) -> None:
    """pgd_step on g' = idwt(scale_hf(dwt(grad))) (hf_scale: one factor per level, finest
    first), in place on x_adv. The filtered gradient stays in the compute dtype."""
    cdtype = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    if x_adv.numel() == 0:
        return
    bounds = (eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor)
    if filters.shape[-1] == 2:  # Haar, the orthogonal 2-tap wavelet: one fused kernel
        from wavefuse.kernels import haar as _haar

        if _haar.wavelet_pgd_step(x_adv, grad, x_nat, *bounds, wave_mode, level, hf_scale, norm):
            return
    if max(x_adv.shape[-2:]) <= _SEPARABLE_MAX_SIDE and _separable_step(
        x_adv, grad, x_nat, bounds, filters, wave_mode, level, hf_scale, norm
    ):
        return
    if _chain_step(x_adv, grad, x_nat, bounds, filters, wave_mode, level, hf_scale, norm):
        return
    g = scale_details(grad.to(cdtype), filters.to(cdtype), wave_mode, level, list(hf_scale))
    _step(
        x_adv, g, x_nat, eps, alpha, lo, hi,
        eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm,
    )  # fmt: skip
