// Per-thread bodies of the CUDA one-pass multilevel 2-D Haar kernels (csrc/cuda/haar.cu), and
// the launch geometry that maps a thread to its outputs.
//
// Like dwt_body.cuh: plain __host__ __device__ functions without CUDA intrinsics, called by thin
// kernels phase by phase with __syncthreads() between phases, and run on the CPU, thread by
// thread and phase by phase, by tests/cuda_haar_emulation_harness.cpp (no GPU needed).
//
// The maths: kernels/haar.py's padded-signal formulation. Per axis, the input of length n is
// conceptually padded to the length n_J 2^J (n_j = ceil(n / 2^j), every mode): the pad [n, n_J 2^J)
// is one block B_j = [m 2^(j-1), (m + 1) 2^(j-1)) per level j whose input length m = n_(j-1) is
// odd, and B_j copies the block whose level-(j-1) approximation is the extension sample the mode
// asks for (symmetric, periodization: the block before; reflect: two blocks back, or the block
// before when m = 1; periodic: block 0; zero: zeros). pad_source resolves that copy map pi
// (position -> input index, or -1 for a zero) from level J down to 1. A plain boundary-free Haar
// pyramid on the padded signal then gives PyWavelets' coefficients at every index below n_j; the
// rest are never stored. In 2-D the padding is separable: x^[p, q] = x[pi_H(p), pi_W(q)].
//
// Orthonormal Haar on a 2 x 2 block [[a, b], [c, d]]: ll = (a+b+c+d)/2, cH = (a+b-c-d)/2,
// cV = (a-b+c-d)/2, cD = (a-b-c+d)/2 (the 0.5 is exact; pywt's 1/sqrt2 twice differs by an ulp).
//
//   analysis (haar_fwd_*): one block per S x S tile of the padded level-0 grid, S = max(2^J,
//     kHaarMinSide) (a multiple of 2^J, so tiles never split a level-J block):
//     phase 0: the tile of x^ into shared memory through pi (every input sample of the tile read
//              once from global memory; pad positions re-read their source, from cache);
//     phase j = 1..J: the level-(j-1) approximations in shared memory -> level j: cH, cV, cD
//              stored to global memory where inside n_j, ll into the other shared buffer (ping-
//              pong: S^2 and S^2/4 elements), or to global memory at level J.
//   adjoint (haar_adj_thread): A = crop . P . Pi (P the plain pyramid, orthonormal), so
//     A^T = Pi^T . P^T . crop^T. One thread per grad_x sample (16 x 16 tiles of (H, W), as
//     dwt_body.cuh's merge): P^T of the zero-extended coefficients at padded position (p, q) is
//       z[p, q] = 2^-J ll_J[p >> J, q >> J]
//               + sum_j 2^-j (s_r cH_j + s_c cV_j + s_r s_c cD_j)[p >> j, q >> j]
//     (s_r = -1 when bit j-1 of p is set, else +1; s_c likewise for q; coefficients at indices
//     >= n_j are zero), and Pi^T gathers, for grad_x[r, c], z over every (p, q) with
//     pi_H(p) = r and pi_W(q) = c: (r, c) itself and the pad positions that copy it. Only samples
//     within 2^(J+1) of the end (symmetric, reflect, periodization) or below 2^J (periodic) can be
//     copied (pad_window), and only those threads scan the < 2^J pad positions of their axis.
//     Gather: each output written once by one thread, no atomics, deterministic. The 3J + 1
//     coefficient loads of a sample are shared with its neighbours (level j: 4^j samples read the
//     same coefficient), so they come from L1/L2 after the first.
//
// One pass for 1 <= J <= kHaarMaxLevels (2^J <= 64); the host wrappers refuse deeper J and
// wavefuse/ops/haar.py runs those per level.
//
// Strides: every tensor through its own (n, c, h, w) strides (and the band stride of each hi_j);
// index_t int32_t when every offset fits (chosen by the host), else int64_t.

#pragma once

#include <cstdint>

#include "common.h"
#include "dwt_body.cuh"

namespace wavefuse {
namespace cuda_haar {

using cuda_dwt::AccType;
using cuda_dwt::kThreads;
using cuda_dwt::kTileH;
using cuda_dwt::kTileW;
using cuda_dwt::Strides4;

// The deepest one-pass level: S = 64 keeps the analysis' shared memory (S^2 + S^2/4 elements)
// at 40 KiB in float64, under the 48 KiB a block gets without opting in.
constexpr int kHaarMaxLevels = 6;
// Smallest analysis tile side (1,024 samples: 4 per thread of level 0 for 256 threads).
constexpr int kHaarMinSide = 32;

// ceil(n / 2^j): Haar coefficients per axis at level j, every mode.
template <typename index_t>
WAVEFUSE_HD_INLINE index_t haar_length(index_t n, int j) {
  return (n + (index_t(1) << j) - 1) >> j;
}

// pi: the input index that position p >= 0 of the padded axis copies, or -1 (zero padding, or
// beyond the padded length n_J 2^J).
template <typename index_t>
WAVEFUSE_HD_INLINE index_t pad_source(Mode mode, index_t p, index_t n, int levels) {
  if (p < n) return p;
  if (mode == Mode::Zero) return index_t(-1);
  index_t src = p;
  for (int j = levels; j >= 1; --j) {  // the coarsest pad first: its source may be a finer pad
    const index_t half = index_t(1) << (j - 1);
    const index_t m = haar_length(n, j - 1);  // input length of level j
    const index_t start = m * half;
    if ((m & 1) && src >= start && src < start + half) {
      if (mode == Mode::Reflect) {
        src -= m >= 3 ? 2 * half : half;
      } else if (mode == Mode::Periodic) {
        src -= start;
      } else {  // Symmetric, Periodization
        src -= half;
      }
    }
  }
  return src < n ? src : index_t(-1);
}

// Whether input sample r may be the copy source of a pad position (a superset: the scan below is
// exact). Every shift is at most 2 * 2^(j-1) (sum < 2^(J+1)); periodic copies [0, 2^(j-1)).
template <typename index_t>
WAVEFUSE_HD_INLINE bool pad_window(Mode mode, index_t r, index_t n, int levels) {
  if (mode == Mode::Zero || (haar_length(n, levels) << levels) == n) return false;
  if (mode == Mode::Periodic) return r < (index_t(1) << levels);
  return r + (index_t(2) << levels) >= n;
}

// The next pad position after prev (prev < n: the first) that copies r, or -1.
template <typename index_t>
WAVEFUSE_HD_INLINE index_t next_pad_preimage(Mode mode, index_t r, index_t n, int levels,
                                             index_t prev) {
  const index_t padded = haar_length(n, levels) << levels;
  for (index_t p = prev < n ? n : prev + 1; p < padded; ++p) {
    if (pad_source(mode, p, n, levels) == r) return p;
  }
  return index_t(-1);
}

// ---- launch geometry (host) ---------------------------------------------------------------------

struct HaarGeometry {
  int64_t tiles_h, tiles_w, blocks;  // grid: blocks = planes * tiles_h * tiles_w, kThreads each
  int side;                          // analysis: tile side S (level-0 samples); adjoint: unused
  int64_t smem_elems;                // dynamic shared memory, in acc_t elements
};

inline int haar_side(int levels) {
  return (1 << levels) > kHaarMinSide ? (1 << levels) : kHaarMinSide;
}

// Analysis: S x S tiles over the padded (n_J 2^J)^2 grid; shared: S^2 + S^2 / 4.
inline HaarGeometry haar_fwd_geometry(int64_t planes, int64_t H, int64_t W, int levels) {
  const int64_t S = haar_side(levels);
  const int64_t hp = haar_length<int64_t>(H, levels) << levels;
  const int64_t wp = haar_length<int64_t>(W, levels) << levels;
  const int64_t th = (hp + S - 1) / S, tw = (wp + S - 1) / S;
  return {th, tw, planes * th * tw, static_cast<int>(S), S * S + S * S / 4};
}

// Adjoint: kTileH x kTileW tiles of grad_x (H, W); no shared memory.
inline HaarGeometry haar_adj_geometry(int64_t planes, int64_t H, int64_t W) {
  const int64_t th = (H + kTileH - 1) / kTileH, tw = (W + kTileW - 1) / kTileW;
  return {th, tw, planes * th * tw, 0, 0};
}

// ---- kernel arguments ---------------------------------------------------------------------------

// hi[j], sh[j], shb[j]: level j + 1 (finest first), (N, C, 3, h, w) with band stride shb.
template <typename scalar_t, typename index_t>
struct HaarFwdArgs {
  const scalar_t* x;
  Strides4<index_t> sx;
  scalar_t* ll;
  Strides4<index_t> sl;
  scalar_t* hi[kHaarMaxLevels];
  Strides4<index_t> sh[kHaarMaxLevels];
  index_t shb[kHaarMaxLevels];
  index_t C, H, W;
  int levels;
  Mode mode;
  int side;
  index_t tiles_h, tiles_w;
};

template <typename scalar_t, typename index_t>
struct HaarAdjArgs {
  const scalar_t* ll;
  Strides4<index_t> sl;
  const scalar_t* hi[kHaarMaxLevels];
  Strides4<index_t> sh[kHaarMaxLevels];
  index_t shb[kHaarMaxLevels];
  scalar_t* y;
  Strides4<index_t> sy;
  index_t C, H, W;  // y is (H, W)
  int levels;
  Mode mode;
  index_t tiles_h, tiles_w;
};

// Block -> (plane, first row, first column) of an S x S tile; column tiles vary fastest.
template <typename index_t>
WAVEFUSE_HD_INLINE void haar_tile_origin(index_t block, index_t tiles_h, index_t tiles_w,
                                         index_t side, index_t& plane, index_t& row0,
                                         index_t& col0) {
  const index_t tw = block % tiles_w;
  const index_t rest = block / tiles_w;
  plane = rest / tiles_h;
  row0 = (rest % tiles_h) * side;
  col0 = tw * side;
}

// ---- analysis -----------------------------------------------------------------------------------

// Phase 0: the S x S tile of the padded signal into shared memory (buffer 0, row-major).
template <typename scalar_t, typename index_t>
WAVEFUSE_HOST_DEVICE void haar_fwd_load(const HaarFwdArgs<scalar_t, index_t>& a, index_t block,
                                        int tid, typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  const int S = a.side;
  index_t plane, r0, c0;
  haar_tile_origin<index_t>(block, a.tiles_h, a.tiles_w, S, plane, r0, c0);
  const scalar_t* src = a.x + (plane / a.C) * a.sx.n + (plane % a.C) * a.sx.c;
  for (int e = tid; e < S * S; e += kThreads) {
    const index_t row = pad_source<index_t>(a.mode, r0 + e / S, a.H, a.levels);
    const index_t col = pad_source<index_t>(a.mode, c0 + e % S, a.W, a.levels);
    smem[e] = (row >= 0 && col >= 0) ? static_cast<acc_t>(src[row * a.sx.h + col * a.sx.w])
                                     : acc_t(0);
  }
}

// Phase j (1 <= j <= levels): level j from the level-(j-1) approximations in shared memory.
// Buffers: level j reads buffer (j odd ? 0 : 1) and writes the other; buffer 0 holds S^2
// elements at smem, buffer 1 S^2 / 4 at smem + S^2.
template <typename scalar_t, typename index_t>
WAVEFUSE_HOST_DEVICE void haar_fwd_level(const HaarFwdArgs<scalar_t, index_t>& a, index_t block,
                                         int tid, int j,
                                         typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  const int S = a.side;
  const int in_side = S >> (j - 1), out_side = S >> j;
  acc_t* buf0 = smem;
  acc_t* buf1 = smem + S * S;
  const acc_t* in = (j & 1) ? buf0 : buf1;
  acc_t* out = (j & 1) ? buf1 : buf0;
  index_t plane, r0, c0;
  haar_tile_origin<index_t>(block, a.tiles_h, a.tiles_w, S, plane, r0, c0);
  const index_t i0 = r0 >> j, k0 = c0 >> j;
  const index_t nh = haar_length(a.H, j), nw = haar_length(a.W, j);
  const index_t pn = plane / a.C, pc = plane % a.C;
  const acc_t half = acc_t(0.5);
  for (int e = tid; e < out_side * out_side; e += kThreads) {
    const int li = e / out_side, lk = e % out_side;
    const acc_t* top = in + (2 * li) * in_side + 2 * lk;
    const acc_t s0 = top[0] + top[1], d0 = top[0] - top[1];  // row 2li: lo, hi along W
    const acc_t s1 = top[in_side] + top[in_side + 1], d1 = top[in_side] - top[in_side + 1];
    const acc_t ll = (s0 + s1) * half;
    if (j < a.levels) out[e] = ll;
    const index_t i = i0 + li, k = k0 + lk;
    if (i >= nh || k >= nw) continue;
    scalar_t* band = a.hi[j - 1] + pn * a.sh[j - 1].n + pc * a.sh[j - 1].c + i * a.sh[j - 1].h +
                     k * a.sh[j - 1].w;
    band[0] = static_cast<scalar_t>((s0 - s1) * half);  // cH: hi along H, lo along W
    band += a.shb[j - 1];  // chained: 2 * shb may overflow index_t where shb does not
    band[0] = static_cast<scalar_t>((d0 + d1) * half);  // cV
    band += a.shb[j - 1];
    band[0] = static_cast<scalar_t>((d0 - d1) * half);  // cD
    if (j == a.levels) {
      a.ll[pn * a.sl.n + pc * a.sl.c + i * a.sl.h + k * a.sl.w] = static_cast<scalar_t>(ll);
    }
  }
}

// ---- adjoint ------------------------------------------------------------------------------------

// P^T of the zero-extended coefficients at padded position (p, q) of plane (pn, pc).
template <typename scalar_t, typename index_t>
WAVEFUSE_HD_INLINE typename AccType<scalar_t>::type haar_synth_at(
    const HaarAdjArgs<scalar_t, index_t>& a, index_t pn, index_t pc, index_t p, index_t q) {
  using acc_t = typename AccType<scalar_t>::type;
  acc_t z = acc_t(0), scale = acc_t(1);
  for (int j = 1; j <= a.levels; ++j) {
    scale *= acc_t(0.5);
    const index_t i = p >> j, k = q >> j;
    if (i >= haar_length(a.H, j) || k >= haar_length(a.W, j)) continue;
    const Strides4<index_t>& s = a.sh[j - 1];
    const scalar_t* band = a.hi[j - 1] + pn * s.n + pc * s.c + i * s.h + k * s.w;
    const acc_t ch = static_cast<acc_t>(band[0]);
    band += a.shb[j - 1];
    const acc_t cv = static_cast<acc_t>(band[0]);
    band += a.shb[j - 1];
    const acc_t cd = static_cast<acc_t>(band[0]);
    const bool odd_r = (p >> (j - 1)) & 1, odd_c = (q >> (j - 1)) & 1;
    const acc_t h = odd_r ? -ch : ch;
    const acc_t d = odd_r == odd_c ? cd : -cd;
    z += scale * (h + (odd_c ? -cv : cv) + d);
  }
  const index_t i = p >> a.levels, k = q >> a.levels;
  if (i < haar_length(a.H, a.levels) && k < haar_length(a.W, a.levels)) {
    z += scale * static_cast<acc_t>(a.ll[pn * a.sl.n + pc * a.sl.c + i * a.sl.h + k * a.sl.w]);
  }
  return z;
}

// The thread of grad_x[r, c]: z over (r, c) and every pad position pair that copies it.
template <typename scalar_t, typename index_t>
WAVEFUSE_HOST_DEVICE void haar_adj_thread(const HaarAdjArgs<scalar_t, index_t>& a,
                                          index_t block, int tid) {
  using acc_t = typename AccType<scalar_t>::type;
  index_t plane, r0, c0;
  cuda_dwt::tile_origin(block, a.tiles_h, a.tiles_w, plane, r0, c0);
  const index_t r = r0 + tid / kTileW, c = c0 + tid % kTileW;
  if (r >= a.H || c >= a.W) return;
  const index_t pn = plane / a.C, pc = plane % a.C;
  const bool scan_h = pad_window(a.mode, r, a.H, a.levels);
  const bool scan_w = pad_window(a.mode, c, a.W, a.levels);
  acc_t acc = acc_t(0);
  for (index_t p = r; p >= 0;
       p = scan_h ? next_pad_preimage(a.mode, r, a.H, a.levels, p) : index_t(-1)) {
    for (index_t q = c; q >= 0;
         q = scan_w ? next_pad_preimage(a.mode, c, a.W, a.levels, q) : index_t(-1)) {
      acc += haar_synth_at(a, pn, pc, p, q);
    }
  }
  a.y[pn * a.sy.n + pc * a.sy.c + r * a.sy.h + c * a.sy.w] = static_cast<scalar_t>(acc);
}

}  // namespace cuda_haar
}  // namespace wavefuse
