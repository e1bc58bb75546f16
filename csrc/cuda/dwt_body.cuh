// Per-thread bodies of the CUDA one-level 2-D DWT kernels (csrc/cuda/dwt.cu), and the launch
// geometry that maps a thread to its outputs.
//
// Why a header of plain functions: the kernels in dwt.cu are thin -- they read blockIdx/threadIdx,
// call the phase functions below in order with __syncthreads() between them, and nothing else.
// Everything here is __host__ __device__ (WAVEFUSE_HOST_DEVICE, common.h) and uses no CUDA
// intrinsics, so it also compiles as plain C++17: tests/cuda_emulation_harness.cpp runs exactly
// these bodies, block by block and phase by phase, for every thread of the launch grid that
// dwt.cu computes with the same functions, on a machine without a GPU.
//
// The maths (PyWavelets' conventions, the same as kernels/dwt.py and csrc/cpu). Along one axis of
// length n every op is an extension map e (extended position p -> signal index in [0, n), or -1
// for zero) and a stride-2 correlation with taps t[0..L):
//
//   split:  c[i] = sum_{m < L} t[m] * x[e(2i + m + OFF)]                      i in [0, K)
//   merge:  y[r] = sum_{(i, m) : e(2i + m + OFF) = r} t[m] * c[i]             r in [0, n)
//
// merge is the exact transpose of split with the same map and taps (transform_of below):
//
//   op               kernel  map e                                 taps           OFF
//   dwt2d            split   the mode's extension                  dec reversed   2 - L
//   dwt2d_adjoint    merge   the same                              dec reversed   2 - L
//   idwt2d           merge   zero (crop)                           rec as stored  2 - L
//   idwt2d_adjoint   split   zero (crop)                           rec as stored  2 - L
//   (periodization: OFF = 1 - L/2; the map is the periodization map, over n = 2M for synthesis)
//
// Thread mapping. Both kernels tile the 2-D output of one (n, c) plane into kTileH x kTileW tiles,
// one block (kThreads threads) per tile, one flat 1-D grid of planes x tile rows x tile columns
// (tile_origin), so that N * C is not limited by gridDim.y/z.
//
//   split (separable, through shared memory), phases separated by a barrier:
//     0. the 2 x L taps (reversed for analysis) into shared memory;
//     1. row pass: for each of the 2 * rows + L - 2 extended input rows the tile needs and each
//        of its output columns k, lo and hi along W = sum_n t_b[n] x[row, e(2k + n + OFF)] --
//        both from the same loads; the boundary map along H picks the row (a zero row for -1);
//     2. column pass: the thread of output (i, k) computes all four bands from the shared rows
//        2(i - i0) + m: ll = (lo, lo), cH = (hi along H, lo along W), cV = (lo, hi), cD = (hi, hi).
//     Every input value of a tile is loaded from global memory by the row pass only; the four
//     bands come from the same loads; each output is written once.
//   merge (separable, through shared memory; no atomics, deterministic). Output y[r, c] is the sum
//     over the preimages {p : e(p) = r} in the extended range [OFF, OFF + 2K + L - 2) -- at most
//     two arithmetic progressions of the map's period (preimage_family) -- along H and along W,
//     and for each the L/2 taps of p's parity, of t_a[mh] t_b[mw] g_ab[ih, kw]. Phases:
//     0. the taps (as split);
//     1. column pass (merge_col_pass): for the tile's rows r and the coefficient columns kw its
//        outputs read, the H half of the sum, both W bands from the same loads of the four
//        bands at (ih, kw): u_lo[r, kw] = sum t_lo ll + t_hi cH, u_hi[r, kw] = sum t_lo cV +
//        t_hi cD (merge_column);
//     2. row pass (merge_row_pass): the thread of output (r, c) sums t_lo u_lo + t_hi u_hi over
//        c's preimages along W.
//     The columns (merge_slot): the identity preimage p = c of the tile's kTileW outputs reads
//     the window kw0 .. kw0 + merge_window(L) - 1 (kTileW / 2 + L / 2 columns); every other
//     preimage lies outside [0, W) -- in [OFF, 0), which reads columns below L/2, or in
//     [W, end), columns from Kw - L/2 up -- and only outputs within L of a plane's ends have
//     one, so a tile that reaches that near an end also computes the two end segments
//     [0, L/2) and [Kw - L/2, Kw). Signals shorter than the filter (the extension wraps several
//     times) need nothing else. About 2L loads and multiply-adds per output instead of a 2-D
//     gather's L^2 (db4: 12 + 8 vs 64; an end tile 20 + 8).
//
// Strides: every tensor is addressed through its own (n, c, h, w) strides (and the band stride of
// hi), so contiguous, channels_last and arbitrary strided views are read and written in place.
// index_t is int32_t when every offset fits (chosen by the host), else int64_t.

#pragma once

#include <cstdint>

#include "common.h"
#include "step_math.cuh"  // FusedLinf: the Linf step as chain_thread's store

#ifdef __CUDACC__
#define WAVEFUSE_HD_INLINE __host__ __device__ __forceinline__
#else
#define WAVEFUSE_HD_INLINE inline
#endif

namespace wavefuse {
namespace cuda_dwt {

// Output tile of one block: kTileW consecutive columns per row, so that a warp stores two rows
// of 16 consecutive coefficients (64 B of float32) when W is the contiguous dimension.
constexpr int kTileH = 16;
constexpr int kTileW = 16;
constexpr int kThreads = kTileH * kTileW;

// Half types accumulate in float32, float64 in float64 (at::opmath_type without ATen).
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

// ---- the ops as (kernel, map, offset, taps) ----------------------------------------------------

struct Transform {
  Mode map;      // the extension map of the kernel
  int off;       // OFF: extended position of tap 0 of coefficient 0
  bool reverse;  // taps reversed (analysis: PyWavelets convolves, the kernels correlate)
};

// synthesis = false: dwt2d (split) and its adjoint (merge); true: idwt2d (merge) and its adjoint
// (split).
WAVEFUSE_HD_INLINE Transform transform_of(bool synthesis, Mode mode, int L) {
  Transform t{mode, mode == Mode::Periodization ? 1 - L / 2 : 2 - L, !synthesis};
  if (synthesis) t.map = mode == Mode::Periodization ? Mode::Periodization : Mode::Zero;
  return t;
}

// Coefficients per axis that a split produces from n samples (dwt2d: analysis_length;
// idwt2d_adjoint: the M with synthesis_length(M) == n).
inline int64_t split_length(bool synthesis, int64_t n, int64_t L, Mode mode) {
  if (!synthesis) return analysis_length<int64_t>(n, L, mode);
  return mode == Mode::Periodization ? n / 2 : (n + L - 2) / 2;
}

// ---- launch geometry (host) and the tile of a block (both sides) -------------------------------

struct Geometry {
  int64_t tiles_h, tiles_w, blocks;  // grid: blocks = planes * tiles_h * tiles_w, kThreads each
  int64_t smem_elems;                // dynamic shared memory, in acc_t elements
};

// Rows of the extended input that a split tile of kTileH output rows reads.
inline int64_t split_rows_ext(int64_t L) { return 2 * kTileH + L - 2; }

// split tiles its output (Kh, Kw); shared: taps (2L) + row-pass lo and hi (rows_ext x kTileW each)
inline Geometry split_geometry(int64_t planes, int64_t Kh, int64_t Kw, int64_t L) {
  const int64_t th = (Kh + kTileH - 1) / kTileH, tw = (Kw + kTileW - 1) / kTileW;
  return {th, tw, planes * th * tw, 2 * L + 2 * split_rows_ext(L) * kTileW};
}

// Coefficient columns of the merge's window (phase 1): the tile's kTileW outputs c read, through
// p = c, the columns top(c) - L/2 + 1 .. top(c) with top(c) = (c - OFF) >> 1, which spans
// kTileW / 2 + 1 values of top over the tile.
WAVEFUSE_HD_INLINE int merge_window(int L) { return kTileW / 2 + L / 2; }

// Shared columns per tile row: the window, then the end segments [0, L/2) and [Kw - L/2, Kw).
WAVEFUSE_HD_INLINE int merge_columns_per_row(int L) { return merge_window(L) + L; }

// Shared memory of a merge block, in acc_t elements: the taps, then u_lo and u_hi
// (kTileH x merge_columns_per_row(L) each).
WAVEFUSE_HD_INLINE int64_t merge_smem_elems(int64_t L) {
  return 2 * L + 2 * kTileH * static_cast<int64_t>(merge_columns_per_row(static_cast<int>(L)));
}

// merge tiles its output (H, W).
inline Geometry merge_geometry(int64_t planes, int64_t H, int64_t W, int64_t L) {
  const int64_t th = (H + kTileH - 1) / kTileH, tw = (W + kTileW - 1) / kTileW;
  return {th, tw, planes * th * tw, merge_smem_elems(L)};
}

// Block -> (plane, first output row, first output column); column tiles vary fastest.
template <typename index_t>
WAVEFUSE_HD_INLINE void tile_origin(index_t block, index_t tiles_h, index_t tiles_w,
                                    index_t& plane, index_t& row0, index_t& col0) {
  const index_t tw = block % tiles_w;
  const index_t rest = block / tiles_w;
  const index_t th = rest % tiles_h;
  plane = rest / tiles_h;
  row0 = th * kTileH;
  col0 = tw * kTileW;
}

// ---- kernel arguments ----------------------------------------------------------------------------

using wavefuse::Strides4;  // common.h

template <typename scalar_t, typename index_t>
struct SplitArgs {
  using acc_t = typename AccType<scalar_t>::type;
  const scalar_t* x;
  Strides4<index_t> sx;
  const acc_t* filters;  // (2, L) contiguous, [lo; hi], in acc_t
  scalar_t* ll;
  Strides4<index_t> sl;
  scalar_t* hi;          // (N, C, 3, Kh, Kw): bands cH, cV, cD at hi + b * shb
  Strides4<index_t> sh;
  index_t shb;
  index_t C, H, W, Kh, Kw;
  int L;
  Transform tr;
  index_t tiles_h, tiles_w;
};

// out_t: the type of y (default scalar_t); the fused backward of hf_penalty merges compute-dtype
// gradients into x's dtype at its first level.
template <typename scalar_t, typename index_t, typename out_t = scalar_t>
struct MergeArgs {
  using acc_t = typename AccType<scalar_t>::type;
  const scalar_t* ll;
  Strides4<index_t> sl;
  const scalar_t* hi;
  Strides4<index_t> sh;
  index_t shb;
  const acc_t* filters;
  out_t* y;
  Strides4<index_t> sy;
  index_t C, H, W, Kh, Kw;  // y is (H, W), the bands (Kh, Kw)
  int L;
  Transform tr;
  index_t tiles_h, tiles_w;
};

// ---- phase 0 (both kernels): taps into shared memory ---------------------------------------------
// taps[b * L + m] = t_b[m], reversed for analysis. Thread tid loads entries tid, tid + kThreads, ...

template <typename acc_t>
WAVEFUSE_HD_INLINE void load_taps(const acc_t* filters, int L, bool reverse, int tid,
                                  acc_t* taps) {
  for (int e = tid; e < 2 * L; e += kThreads) {
    const int b = e / L, m = e % L;
    taps[e] = filters[b * L + (reverse ? L - 1 - m : m)];
  }
}

// ---- split ----------------------------------------------------------------------------------------

// Phase 1: row pass. Shared layout after the taps: lo rows [rows_ext][kTileW], then hi rows.
template <typename scalar_t, typename index_t>
WAVEFUSE_HOST_DEVICE void split_row_pass(const SplitArgs<scalar_t, index_t>& a, index_t block,
                                         int tid, typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  const int L = a.L;
  const acc_t* t0 = smem;
  const acc_t* t1 = smem + L;
  const int rows_ext = 2 * kTileH + L - 2;
  acc_t* rows_lo = smem + 2 * L;
  acc_t* rows_hi = rows_lo + rows_ext * kTileW;
  index_t plane, i0, k0;
  tile_origin(block, a.tiles_h, a.tiles_w, plane, i0, k0);
  const index_t out_rows = a.Kh - i0 < kTileH ? a.Kh - i0 : index_t(kTileH);
  const int needed = static_cast<int>(2 * out_rows) + L - 2;  // extended rows the tile reads
  const scalar_t* src = a.x + (plane / a.C) * a.sx.n + (plane % a.C) * a.sx.c;
  const Mode map = a.tr.map;
  for (int e = tid; e < needed * kTileW; e += kThreads) {
    const int s = e / kTileW, kk = e % kTileW;
    const index_t k = k0 + kk;
    const index_t row = extend_index<index_t>(map, 2 * i0 + s + a.tr.off, a.H);
    acc_t lo = acc_t(0), hi = acc_t(0);
    if (row >= 0 && k < a.Kw) {
      const scalar_t* line = src + row * a.sx.h;
      const index_t p0 = 2 * k + a.tr.off;
      if (p0 >= 0 && p0 + L <= a.W) {  // interior: every map is the identity on [0, n)
        for (int n = 0; n < L; ++n) {
          const acc_t v = static_cast<acc_t>(line[(p0 + n) * a.sx.w]);
          lo += t0[n] * v;
          hi += t1[n] * v;
        }
      } else {
        for (int n = 0; n < L; ++n) {
          const index_t col = extend_index<index_t>(map, p0 + n, a.W);
          if (col < 0) continue;  // zero padding is skipped, not multiplied: 0 * inf stays out
          const acc_t v = static_cast<acc_t>(line[col * a.sx.w]);
          lo += t0[n] * v;
          hi += t1[n] * v;
        }
      }
    }
    rows_lo[s * kTileW + kk] = lo;
    rows_hi[s * kTileW + kk] = hi;
  }
}

// The four coefficients of tile entry (li, lk) from the row-pass rows in shared memory (phase 1
// done): the column half of phase 2, shared with the fused kernels of hf_penalty_body.cuh.
template <typename acc_t>
struct Coeffs {
  acc_t ll, h, v, d;  // PyWavelets' cA, cH (hi along H, lo along W), cV, cD
};

template <typename acc_t>
WAVEFUSE_HD_INLINE Coeffs<acc_t> split_col_coeffs(const acc_t* smem, int L, int li, int lk) {
  const acc_t* t0 = smem;
  const acc_t* t1 = smem + L;
  const int rows_ext = 2 * kTileH + L - 2;
  const acc_t* lo = smem + 2 * L + (2 * li) * kTileW + lk;
  const acc_t* hi = lo + rows_ext * kTileW;
  acc_t a00 = acc_t(0), a10 = acc_t(0), a01 = acc_t(0), a11 = acc_t(0);  // a: H band, b: W band
  for (int m = 0; m < L; ++m) {
    const acc_t vl = lo[m * kTileW], vh = hi[m * kTileW];
    a00 += t0[m] * vl;
    a10 += t1[m] * vl;
    a01 += t0[m] * vh;
    a11 += t1[m] * vh;
  }
  return {a00, a10, a01, a11};
}

// Phase 2: column pass; the thread of output (i, k) writes its four coefficients, or with
// kLLOnly the ll band alone (wavelet_pgd_step's approximation chain, pgd_step.cu; a.hi unused).
template <bool kLLOnly = false, typename scalar_t, typename index_t>
WAVEFUSE_HOST_DEVICE void split_col_pass(const SplitArgs<scalar_t, index_t>& a, index_t block,
                                         int tid, const typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  index_t plane, i0, k0;
  tile_origin(block, a.tiles_h, a.tiles_w, plane, i0, k0);
  const int li = tid / kTileW, lk = tid % kTileW;
  const index_t i = i0 + li, k = k0 + lk;
  if (i >= a.Kh || k >= a.Kw) return;
  const index_t pn = plane / a.C, pc = plane % a.C;
  scalar_t* ll = a.ll + pn * a.sl.n + pc * a.sl.c + i * a.sl.h + k * a.sl.w;
  if (kLLOnly) {
    const acc_t* t0 = smem;
    const acc_t* lo = smem + 2 * a.L + (2 * li) * kTileW + lk;
    acc_t a00 = acc_t(0);
    for (int m = 0; m < a.L; ++m) a00 += t0[m] * lo[m * kTileW];
    *ll = static_cast<scalar_t>(a00);
    return;
  }
  const Coeffs<acc_t> q = split_col_coeffs(smem, a.L, li, lk);
  *ll = static_cast<scalar_t>(q.ll);
  scalar_t* band = a.hi + pn * a.sh.n + pc * a.sh.c + i * a.sh.h + k * a.sh.w;
  band[0] = static_cast<scalar_t>(q.h);  // cH: hi along H, lo along W
  band += a.shb;  // chained: 2 * shb may overflow index_t where shb does not
  band[0] = static_cast<scalar_t>(q.v);  // cV
  band += a.shb;
  band[0] = static_cast<scalar_t>(q.d);  // cD
}

// ---- merge ----------------------------------------------------------------------------------------

template <typename index_t>
WAVEFUSE_HD_INLINE index_t floor_div(index_t a, index_t b) {  // b > 0
  return (a - floor_mod(a, b)) / b;
}

// Period of the extension map (Zero: unused).
template <typename index_t>
WAVEFUSE_HD_INLINE index_t map_period(Mode mode, index_t n) {
  switch (mode) {
    case Mode::Symmetric:
      return 2 * n;
    case Mode::Reflect:
      return n > 1 ? index_t(2 * n - 2) : index_t(1);
    case Mode::Periodization:
      return n + (n & 1);
    default:  // Periodic, Zero
      return n;
  }
}

// One progression of the preimages of r: p = first + q * step for q < count, all inside [lo, hi).
template <typename index_t>
struct Family {
  index_t first, step, count;
};

// Family f (0 or 1) of {p in [lo, hi) : e(p) = r}. Family 0: p = r + q P (every mode; zero: p = r
// alone). Family 1, the mirror images p = R - r + q P: symmetric (R = 2n - 1), reflect
// (R = 2n - 2, for 0 < r < n - 1: the ends are their own mirror images, counted by family 0) and,
// for odd n, periodization's repeated last sample (p = n + q n', r = n - 1 only).
template <typename index_t>
WAVEFUSE_HD_INLINE Family<index_t> preimage_family(Mode mode, int f, index_t r, index_t n,
                                                   index_t lo, index_t hi) {
  Family<index_t> none{0, 1, 0};
  index_t p0 = r;
  if (f == 0) {
    if (mode == Mode::Zero) return (r >= lo && r < hi) ? Family<index_t>{r, 1, 1} : none;
  } else if (mode == Mode::Symmetric) {
    p0 = 2 * n - 1 - r;
  } else if (mode == Mode::Reflect) {
    if (r < 1 || r > n - 2) return none;
    p0 = 2 * n - 2 - r;
  } else if (mode == Mode::Periodization) {
    if ((n & 1) == 0 || r != n - 1) return none;
    p0 = n;
  } else {
    return none;
  }
  const index_t per = map_period(mode, n);
  const index_t q_lo = -floor_div<index_t>(p0 - lo, per);  // ceil((lo - p0) / per)
  const index_t q_hi = floor_div<index_t>(hi - 1 - p0, per);
  if (q_hi < q_lo) return none;
  return {p0 + q_lo * per, per, q_hi - q_lo + 1};
}

// The synthesis of an approximation band alone at output sample (r, c), as a gather (after phase
// 0 loaded the taps): sum over the preimages of r and c of t_lo[mh] t_lo[mw] gl[ih, kw], the maps
// over n_h x n_w -- the merge of gl with zero details. wavelet_pgd_step's chain (chain_thread
// below) uses it; the merge kernels' four-band sum is separable (merge_col_pass /
// merge_row_pass, since 2026-12-07; this was their gather before).
template <typename src_t, typename index_t, typename acc_t>
WAVEFUSE_HOST_DEVICE acc_t approx_gather(const src_t* gl, const Strides4<index_t>& sl, index_t r,
                                         index_t c, index_t n_h, index_t n_w, index_t Kh,
                                         index_t Kw, int L, const Transform& tr,
                                         const acc_t* taps) {
  const int half = L / 2;
  const Mode map = tr.map;
  const index_t off = tr.off;
  const index_t end_h = off + 2 * Kh + L - 2, end_w = off + 2 * Kw + L - 2;
  // The two preimage families along each axis as named values, not arrays: an array indexed in
  // a loop goes to local memory (ptxas reported its stack frame as spills).
  const Family<index_t> fw0 = preimage_family<index_t>(map, 0, c, n_w, off, end_w);
  const Family<index_t> fw1 = preimage_family<index_t>(map, 1, c, n_w, off, end_w);
  // the W half at coefficient row ih
  auto w_family = [&](const Family<index_t>& fw, index_t ih, acc_t& z) {
    for (index_t qw = 0; qw < fw.count; ++qw) {
      const index_t u_w = fw.first + qw * fw.step - off;
      const int par_w = static_cast<int>(u_w & 1);
      const index_t top_w = u_w >> 1;
      const index_t jj_lo = top_w >= Kw ? top_w - Kw + 1 : index_t(0);
      const index_t jj_hi = top_w < half - 1 ? top_w : index_t(half - 1);
      for (index_t jj = jj_lo; jj <= jj_hi; ++jj) {
        z += taps[par_w + 2 * jj] * static_cast<acc_t>(gl[ih * sl.h + (top_w - jj) * sl.w]);
      }
    }
  };
  acc_t acc = acc_t(0);
  auto h_family = [&](const Family<index_t>& fam_h) {
    for (index_t qh = 0; qh < fam_h.count; ++qh) {
      const index_t u_h = fam_h.first + qh * fam_h.step - off;  // >= 0
      const int par_h = static_cast<int>(u_h & 1);
      const index_t top_h = u_h >> 1;  // coefficient row of tap par_h; tap par_h + 2j: row top - j
      const index_t j_lo = top_h >= Kh ? top_h - Kh + 1 : index_t(0);
      const index_t j_hi = top_h < half - 1 ? top_h : index_t(half - 1);
      for (index_t j = j_lo; j <= j_hi; ++j) {
        const index_t ih = top_h - j;
        acc_t z = acc_t(0);
        w_family(fw0, ih, z);
        w_family(fw1, ih, z);
        acc += taps[par_h + 2 * j] * z;
      }
    }
  };
  h_family(preimage_family<index_t>(map, 0, r, n_h, off, end_h));
  h_family(preimage_family<index_t>(map, 1, r, n_h, off, end_h));
  return acc;
}

// First window column of the merge tile whose first output column is c0 (c0 - OFF >= 0: OFF <= 0).
template <typename index_t>
WAVEFUSE_HD_INLINE index_t merge_window_start(index_t c0, int off, int L) {
  return ((c0 - off) >> 1) - L / 2 + 1;
}

// Whether the merge tile whose first output column is c0 computes the end segments: one of its
// columns lies within L of either end of the W samples (only those have preimages outside
// [0, W), dwt_body.cuh's header).
template <typename index_t>
WAVEFUSE_HD_INLINE bool merge_tile_ends(index_t c0, index_t W, int L) {
  return c0 < L || c0 + kTileW > W - L;
}

// The shared column slot of coefficient column kw in a tile row: the window's kw - kw0 where it
// holds kw, else the end segment's (kw < L/2: the low segment; otherwise kw >= Kw - L/2, the high
// one -- the only columns a preimage outside [0, W) reads).
template <typename index_t>
WAVEFUSE_HD_INLINE int merge_slot(index_t kw, index_t kw0, index_t Kw, int L) {
  const int nw = merge_window(L), half = L / 2;
  const index_t s = kw - kw0;
  if (s >= 0 && s < nw) return static_cast<int>(s);
  if (kw < half) return nw + static_cast<int>(kw);
  return nw + half + static_cast<int>(kw - (Kw - half));
}

// The coefficient column of slot i (the inverse of merge_slot; may lie outside [0, Kw)).
template <typename index_t>
WAVEFUSE_HD_INLINE index_t merge_slot_column(int i, index_t kw0, index_t Kw, int L) {
  const int nw = merge_window(L), half = L / 2;
  if (i < nw) return kw0 + i;
  if (i < nw + half) return index_t(i - nw);
  return Kw - half + (i - nw - half);
}

// The H half of the merge at output row r and coefficient column kw (after phase 0 loaded the
// taps): z_lo += sum t_a[mh] g_a,lo[ih, kw] over the preimages of r along H (ll with t_lo, cH
// with t_hi), z_hi likewise from cV and cD.
template <typename src_t, typename index_t, typename acc_t>
WAVEFUSE_HOST_DEVICE void merge_column(const src_t* gl, const Strides4<index_t>& sl,
                                       const src_t* gh, const src_t* gv, const src_t* gd,
                                       const Strides4<index_t>& sh, index_t r, index_t kw,
                                       index_t n_h, index_t Kh, int L, const Transform& tr,
                                       const acc_t* taps, acc_t& z_lo, acc_t& z_hi) {
  const int half = L / 2;
  const index_t off = tr.off;
  const index_t end_h = off + 2 * Kh + L - 2;
  const index_t col_l = kw * sl.w, col_b = kw * sh.w;
  auto h_family = [&](const Family<index_t>& fam_h) {
    for (index_t qh = 0; qh < fam_h.count; ++qh) {
      const index_t u_h = fam_h.first + qh * fam_h.step - off;  // >= 0
      const int par_h = static_cast<int>(u_h & 1);
      const index_t top_h = u_h >> 1;
      const index_t j_lo = top_h >= Kh ? top_h - Kh + 1 : index_t(0);
      const index_t j_hi = top_h < half - 1 ? top_h : index_t(half - 1);
      for (index_t j = j_lo; j <= j_hi; ++j) {
        const index_t ih = top_h - j;
        const acc_t t0 = taps[par_h + 2 * j], t1 = taps[L + par_h + 2 * j];
        const index_t ol = ih * sl.h + col_l, ob = ih * sh.h + col_b;
        z_lo += t0 * static_cast<acc_t>(gl[ol]) + t1 * static_cast<acc_t>(gh[ob]);
        z_hi += t0 * static_cast<acc_t>(gv[ob]) + t1 * static_cast<acc_t>(gd[ob]);
      }
    }
  };
  h_family(preimage_family<index_t>(tr.map, 0, r, n_h, off, end_h));
  h_family(preimage_family<index_t>(tr.map, 1, r, n_h, off, end_h));
}

// Phase 1: column pass. Shared layout after the taps: u_lo [kTileH][merge_columns_per_row(L)],
// then u_hi; an interior tile fills the first merge_window(L) slots of each row, an end tile
// all. Entries whose row is past the plane or whose column is outside [0, Kw) are not written
// (no output reads them: the row pass's tap ranges stop at the plane's coefficients).
template <typename scalar_t, typename index_t, typename out_t>
WAVEFUSE_HOST_DEVICE void merge_col_pass(const MergeArgs<scalar_t, index_t, out_t>& a,
                                         index_t block, int tid,
                                         typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  index_t plane, r0, c0;
  tile_origin(block, a.tiles_h, a.tiles_w, plane, r0, c0);
  const int row = merge_columns_per_row(a.L);
  const int cols = merge_tile_ends(c0, a.W, a.L) ? row : merge_window(a.L);
  acc_t* u_lo = smem + 2 * a.L;
  acc_t* u_hi = u_lo + kTileH * row;
  const index_t kw0 = merge_window_start<index_t>(c0, a.tr.off, a.L);
  const index_t pn = plane / a.C, pc = plane % a.C;
  const scalar_t* gl = a.ll + pn * a.sl.n + pc * a.sl.c;
  const scalar_t* gh = a.hi + pn * a.sh.n + pc * a.sh.c;  // cH
  const scalar_t* gv = gh + a.shb;                       // cV
  const scalar_t* gd = gv + a.shb;                       // cD
  for (int e = tid; e < kTileH * cols; e += kThreads) {
    const int lr = e / cols, i = e % cols;
    const index_t r = r0 + lr, kw = merge_slot_column<index_t>(i, kw0, a.Kw, a.L);
    if (r >= a.H || kw < 0 || kw >= a.Kw) continue;
    acc_t z_lo = acc_t(0), z_hi = acc_t(0);
    merge_column(gl, a.sl, gh, gv, gd, a.sh, r, kw, a.H, a.Kh, a.L, a.tr, smem, z_lo, z_hi);
    u_lo[lr * row + i] = z_lo;
    u_hi[lr * row + i] = z_hi;
  }
}

// Phase 2: row pass; the thread of output y[r, c] (phase 1 done).
template <typename scalar_t, typename index_t, typename out_t>
WAVEFUSE_HOST_DEVICE void merge_row_pass(const MergeArgs<scalar_t, index_t, out_t>& a,
                                         index_t block, int tid,
                                         const typename AccType<scalar_t>::type* smem) {
  using acc_t = typename AccType<scalar_t>::type;
  index_t plane, r0, c0;
  tile_origin(block, a.tiles_h, a.tiles_w, plane, r0, c0);
  const int lr = tid / kTileW;
  const index_t r = r0 + lr, c = c0 + tid % kTileW;
  if (r >= a.H || c >= a.W) return;
  const int L = a.L, half = L / 2, row = merge_columns_per_row(L);
  const acc_t* taps = smem;
  const acc_t* u_lo = smem + 2 * L + lr * row;  // u_lo[merge_slot(kw)]: column kw of row r
  const acc_t* u_hi = u_lo + kTileH * row;
  const index_t off = a.tr.off;
  const index_t end_w = off + 2 * a.Kw + L - 2;
  const index_t kw0 = merge_window_start<index_t>(c0, a.tr.off, L);
  acc_t acc = acc_t(0);
  auto w_family = [&](const Family<index_t>& fw) {
    for (index_t qw = 0; qw < fw.count; ++qw) {
      const index_t u_w = fw.first + qw * fw.step - off;
      const int par_w = static_cast<int>(u_w & 1);
      const index_t top_w = u_w >> 1;
      const index_t jj_lo = top_w >= a.Kw ? top_w - a.Kw + 1 : index_t(0);
      const index_t jj_hi = top_w < half - 1 ? top_w : index_t(half - 1);
      for (index_t jj = jj_lo; jj <= jj_hi; ++jj) {
        const int s = merge_slot<index_t>(top_w - jj, kw0, a.Kw, L);
        acc += taps[par_w + 2 * jj] * u_lo[s] + taps[L + par_w + 2 * jj] * u_hi[s];
      }
    }
  };
  w_family(preimage_family<index_t>(a.tr.map, 0, c, a.W, off, end_w));
  w_family(preimage_family<index_t>(a.tr.map, 1, c, a.W, off, end_w));
  const index_t pn = plane / a.C, pc = plane % a.C;
  a.y[pn * a.sy.n + pc * a.sy.c + r * a.sy.h + c * a.sy.w] = static_cast<out_t>(acc);
}

// ---- wavelet_pgd_step's approximation chain (csrc/cuda/pgd_step.cu) ----------------------------
// One synthesis level of the chain, in the compute type acc_t throughout:
//   out[r, c] = coef * prev[r, c] + gain * (S_lo cur S_lo^T)[r, c]     r < H, c < W
// S_lo: the synthesis of the approximation band cur (Kh x Kw) alone, over the synthesis map of
// Hs x Ws = synthesis_length(Kh) x synthesis_length(Kw) (tr = transform_of(true, mode, L)), cropped
// to prev's H x W. The taps are the dec bank with tr.reverse set (the rec bank, reversed on
// loading). out may be prev itself: a thread reads prev only at the sample it writes; coef == 0
// reads no prev.
template <typename acc_t, typename index_t>
struct ChainArgs {
  const acc_t* cur;
  Strides4<index_t> sc;
  const acc_t* prev;
  Strides4<index_t> sp;
  acc_t* out;
  Strides4<index_t> so;
  const acc_t* filters;  // (2, L) dec [lo; hi]
  acc_t coef, gain;
  index_t C, H, W, Hs, Ws, Kh, Kw;
  int L;
  Transform tr;
  index_t tiles_h, tiles_w;  // merge_geometry over (H, W)
  cuda_pgd::FusedLinf<acc_t, index_t> step;  // on: the Linf step instead of storing out
};

template <typename acc_t, typename index_t>
WAVEFUSE_HOST_DEVICE void chain_thread(const ChainArgs<acc_t, index_t>& a, index_t block, int tid,
                                       const acc_t* taps) {
  index_t plane, r0, c0;
  tile_origin(block, a.tiles_h, a.tiles_w, plane, r0, c0);
  const index_t r = r0 + tid / kTileW, c = c0 + tid % kTileW;
  if (r >= a.H || c >= a.W) return;
  const index_t pn = plane / a.C, pc = plane % a.C;
  const acc_t* gl = a.cur + pn * a.sc.n + pc * a.sc.c;
  acc_t v = a.gain * approx_gather(gl, a.sc, r, c, a.Hs, a.Ws, a.Kh, a.Kw, a.L, a.tr, taps);
  if (a.coef != acc_t(0)) v += a.coef * a.prev[pn * a.sp.n + pc * a.sp.c + r * a.sp.h + c * a.sp.w];
  if (a.step.on()) {
    a.step.store(pn, pc, r, c, v);
  } else {
    a.out[pn * a.so.n + pc * a.so.c + r * a.so.h + c * a.so.w] = v;
  }
}

}  // namespace cuda_dwt
}  // namespace wavefuse
