// Per-thread bodies of the CUDA band-energy kernels (csrc/cuda/hf_penalty.cu), and the host-side
// geometry of the analysis cascade they run over.
//
// As dwt_body.cuh (whose split row pass, column coefficients, merge and geometry these reuse):
// plain __host__ __device__ functions without CUDA intrinsics, so that they compile as C++17 under
// g++ and tests/cuda_hf_emulation_harness.cpp can run exactly these bodies, block by block and
// phase by phase, over the launch grid hf_penalty.cu computes with the same functions.
//
// The maths (contract: wavefuse/ops/hf_penalty.py). Level j (0-based here) of the cascade splits
// its input a_j (x at j = 0, else the previous approximation, in the compute dtype acc_t) into
// a_{j+1} and the detail bands d_jb, b in (cH, cV, cD):
//
//   forward:   E[n, j, b] = sum_{c, i, k} |d_jb[n, c, i, k]|^p                    p in {1, 2}
//   backward:  g_jb = psi(d_jb) * grad[n, j, b],  psi(d) = 2d (p = 2),
//              sign(d) (p = 1: 0 at d = 0, NaN stays NaN: d * g);
//              then, coarsest level first, grad a_j = A^T (grad a_{j+1}, g_j), grad a_J = 0.
//
// Forward kernel (one per level; one block of kThreads per kTileH x kTileW coefficient tile, the
// split grid of dwt_body.cuh), phases separated by barriers:
//   0. taps into shared memory (load_taps);                    1. row pass (split_row_pass);
//   2. energy_col_pass: the thread of (i, k) computes the four coefficients from the shared rows,
//      stores the approximation (not at the last level) and writes |cH|^p, |cV|^p, |cD|^p (0 for
//      a thread outside the plane) into its slots of a reduction area after the row-pass rows;
//   3. log2(kThreads) reduce_step phases: a fixed binary tree over the block's slots;
//   4. store_partials: thread 0 writes the three tile sums to partials[n, j, b, tile].
// The detail bands never reach memory. A final kernel (one block per (n, j, b) row) sums its
// row of partials: each thread a fixed strided sequence (rows_load), then the same tree. No
// atomics anywhere, so every sum has one order for a given shape: repeated calls are bitwise
// identical. Rows are tmax (the largest level's tiles per sample) long; the host zero-fills
// them, so a level with fewer tiles contributes zeros.
//
// Backward split kernel (one per level): phases 0 and 1 as above, then grad_col_pass stores the
// next approximation and the three band gradients (compute dtype). The adjoint merges are
// dwt_body.cuh's merge phases (merge_col_pass, merge_row_pass) with MergeArgs<acc_t, index_t,
// out_t> (out_t = x's dtype at the first level, acc_t elsewhere).

#pragma once

#include <cstdint>
#include <vector>

#include "common.h"
#include "dwt_body.cuh"

namespace wavefuse {
namespace cuda_hf {

using cuda_dwt::AccType;
using cuda_dwt::Coeffs;
using cuda_dwt::Geometry;
using cuda_dwt::kThreads;
using cuda_dwt::kTileW;
using cuda_dwt::SplitArgs;
using cuda_dwt::Strides4;

constexpr int kBands = 3;  // cH, cV, cD
static_assert((kThreads & (kThreads - 1)) == 0, "the reduction tree needs a power of two");

// ---- host: the cascade's levels -----------------------------------------------------------------

struct Level {
  int64_t h, w;    // input of the level
  int64_t kh, kw;  // its coefficients (analysis_length: may exceed h, w for short axes)
  Geometry g;      // split grid; g.smem_elems includes the reduction area
};

// Shared memory of a level kernel, in acc_t elements: taps, row-pass rows, then kBands x kThreads
// reduction slots.
// (split_geometry's count, which device code also needs.)
template <typename int_t>
WAVEFUSE_HD_INLINE int_t split_smem_elems(int_t L) {
  return 2 * L + 2 * (2 * cuda_dwt::kTileH + L - 2) * kTileW;
}

inline std::vector<Level> cascade(int64_t planes, int64_t H, int64_t W, int64_t L, Mode mode,
                                  int64_t levels) {
  std::vector<Level> out;
  for (int64_t j = 0; j < levels; ++j) {
    Level lv{H, W, analysis_length<int64_t>(H, L, mode), analysis_length<int64_t>(W, L, mode), {}};
    lv.g = cuda_dwt::split_geometry(planes, lv.kh, lv.kw, L);
    lv.g.smem_elems = split_smem_elems(L) + kBands * kThreads;
    out.push_back(lv);
    H = lv.kh;
    W = lv.kw;
  }
  return out;
}

// Partials per (n, j, b) row: the most tiles one sample has at any level.
inline int64_t partials_per_row(const std::vector<Level>& levels, int64_t C) {
  int64_t t = 1;
  for (const Level& lv : levels) {
    const int64_t tiles = C * lv.g.tiles_h * lv.g.tiles_w;
    t = tiles > t ? tiles : t;
  }
  return t;
}

// ---- kernel arguments ---------------------------------------------------------------------------

// One level. in_t: the level's input type (x's dtype at level 0, else acc_t).
template <typename in_t, typename index_t>
struct LevelArgs {
  using acc_t = typename AccType<in_t>::type;
  SplitArgs<in_t, index_t> s;  // input, taps and geometry; s.ll and s.hi are unused (null)
  acc_t* ll;                   // the next approximation (N, C, kh, kw); null at the last level
  Strides4<index_t> sl;
  int p;
  index_t j, J;  // this level (0-based) and the number of levels
  // forward: partials (N, J, 3, tmax) contiguous
  acc_t* partials;
  index_t tmax;
  // backward: grad (N, J, 3) contiguous; band gradients (N, C, 3, kh, kw)
  const acc_t* grad;
  acc_t* hi;
  Strides4<index_t> sh;
  index_t shb;
};

template <typename acc_t>
struct RowsArgs {
  const acc_t* partials;  // (rows, tmax) contiguous
  acc_t* out;             // (rows,)
  int64_t tmax;
};

template <typename index_t>
WAVEFUSE_HD_INLINE index_t partial_index(index_t pn, index_t j, index_t J, int b, index_t tmax,
                                         index_t tile) {
  return ((pn * J + j) * kBands + b) * tmax + tile;
}

template <typename acc_t>
WAVEFUSE_HD_INLINE acc_t energy_of(acc_t d, int p) {
  return p == 2 ? d * d : (d < acc_t(0) ? -d : d);  // a NaN d stays NaN
}

template <typename acc_t>
WAVEFUSE_HD_INLINE acc_t psi_times(acc_t d, acc_t g, int p) {
  if (p == 2) return (acc_t(2) * d) * g;
  return d > acc_t(0) ? g : (d < acc_t(0) ? -g : d * g);  // 0 at 0; NaN kept
}

// ---- level kernels ------------------------------------------------------------------------------

// The approximation of (i, k), where the level has a next one.
template <typename in_t, typename index_t>
WAVEFUSE_HD_INLINE void store_approximation(const LevelArgs<in_t, index_t>& a, index_t pn,
                                            index_t pc, index_t i, index_t k,
                                            typename AccType<in_t>::type v) {
  if (a.ll != nullptr) a.ll[pn * a.sl.n + pc * a.sl.c + i * a.sl.h + k * a.sl.w] = v;
}

// Forward phase 2 (after load_taps and split_row_pass on a.s).
template <typename in_t, typename index_t>
WAVEFUSE_HOST_DEVICE void energy_col_pass(const LevelArgs<in_t, index_t>& a, index_t block,
                                          int tid, typename AccType<in_t>::type* smem) {
  using acc_t = typename AccType<in_t>::type;
  acc_t* red = smem + split_smem_elems(a.s.L);
  index_t plane, i0, k0;
  cuda_dwt::tile_origin(block, a.s.tiles_h, a.s.tiles_w, plane, i0, k0);
  const int li = tid / kTileW, lk = tid % kTileW;
  const index_t i = i0 + li, k = k0 + lk;
  acc_t eh = acc_t(0), ev = acc_t(0), ed = acc_t(0);
  if (i < a.s.Kh && k < a.s.Kw) {
    const Coeffs<acc_t> q = cuda_dwt::split_col_coeffs(smem, a.s.L, li, lk);
    store_approximation(a, plane / a.s.C, plane % a.s.C, i, k, q.ll);
    eh = energy_of(q.h, a.p);
    ev = energy_of(q.v, a.p);
    ed = energy_of(q.d, a.p);
  }
  red[tid] = eh;
  red[kThreads + tid] = ev;
  red[2 * kThreads + tid] = ed;
}

// One step of the block's fixed reduction tree over `bands` areas of kThreads slots:
// slot t += slot t + half for t < half. Run for half = kThreads / 2, ..., 1, a barrier before each.
template <typename acc_t>
WAVEFUSE_HD_INLINE void reduce_step(acc_t* red, int bands, int half, int tid) {
  if (tid >= half) return;
  for (int b = 0; b < bands; ++b) red[b * kThreads + tid] += red[b * kThreads + tid + half];
}

// Forward phase 4: thread 0 stores the tile's three sums (slot 0 of each area, its own writes).
template <typename in_t, typename index_t>
WAVEFUSE_HOST_DEVICE void store_partials(const LevelArgs<in_t, index_t>& a, index_t block,
                                         int tid, const typename AccType<in_t>::type* smem) {
  if (tid != 0) return;
  const auto* red = smem + split_smem_elems(a.s.L);
  const index_t per_sample = a.s.C * a.s.tiles_h * a.s.tiles_w;
  const index_t pn = block / per_sample, tile = block % per_sample;
  for (int b = 0; b < kBands; ++b) {
    a.partials[partial_index(pn, a.j, a.J, b, a.tmax, tile)] = red[b * kThreads];
  }
}

// Backward phase 2 (after load_taps and split_row_pass): the next approximation and the band
// gradients psi(d) * grad[n, j, b] of (i, k).
template <typename in_t, typename index_t>
WAVEFUSE_HOST_DEVICE void grad_col_pass(const LevelArgs<in_t, index_t>& a, index_t block, int tid,
                                        const typename AccType<in_t>::type* smem) {
  using acc_t = typename AccType<in_t>::type;
  index_t plane, i0, k0;
  cuda_dwt::tile_origin(block, a.s.tiles_h, a.s.tiles_w, plane, i0, k0);
  const int li = tid / kTileW, lk = tid % kTileW;
  const index_t i = i0 + li, k = k0 + lk;
  if (i >= a.s.Kh || k >= a.s.Kw) return;
  const Coeffs<acc_t> q = cuda_dwt::split_col_coeffs(smem, a.s.L, li, lk);
  const index_t pn = plane / a.s.C, pc = plane % a.s.C;
  store_approximation(a, pn, pc, i, k, q.ll);
  const acc_t* g = a.grad + (pn * a.J + a.j) * kBands;
  acc_t* band = a.hi + pn * a.sh.n + pc * a.sh.c + i * a.sh.h + k * a.sh.w;
  band[0] = psi_times(q.h, g[0], a.p);
  band += a.shb;  // chained: 2 * shb may overflow index_t where shb does not
  band[0] = psi_times(q.v, g[1], a.p);
  band += a.shb;
  band[0] = psi_times(q.d, g[2], a.p);
}

// ---- the final reduction: one block per (n, j, b) row -------------------------------------------

// Phase 0: thread t sums entries t, t + kThreads, ... of the row, in that order, into slot t.
template <typename acc_t>
WAVEFUSE_HD_INLINE void rows_load(const RowsArgs<acc_t>& a, int64_t row, int tid, acc_t* red) {
  const acc_t* src = a.partials + row * a.tmax;
  acc_t s = acc_t(0);
  for (int64_t t = tid; t < a.tmax; t += kThreads) s += src[t];
  red[tid] = s;
}

// Last phase (after the reduce_step tree with bands = 1).
template <typename acc_t>
WAVEFUSE_HD_INLINE void rows_store(const RowsArgs<acc_t>& a, int64_t row, int tid,
                                   const acc_t* red) {
  if (tid == 0) a.out[row] = red[0];
}

}  // namespace cuda_hf
}  // namespace wavefuse
