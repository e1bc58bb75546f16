// Body of the ONE-LAUNCH band energies and their backward (csrc/cuda/hf_penalty.cu's
// energy_cascade_kernel and grad_cascade_kernel): one block per (n, c) plane sweeps every level of
// its plane, calling the SAME thread bodies as the per-level kernels (dwt_body.cuh's
// split_row_pass, merge_col_pass and merge_row_pass, hf_penalty_body.cuh's energy_col_pass,
// reduce_step and grad_col_pass), each seeing a one-plane problem (C = 1, plane 0: tile_origin's
// block index is the tile index), with a barrier after every phase. The maths is
// hf_penalty_body.cuh's.
//
// Forward (then hf_penalty.cu's rows_kernel sums partials[n, j, b, :] over the channels):
//   taps (the dec bank reversed)                                                    | barrier
//   for j = 1 .. J, for each 16 x 16 tile t of level j's coefficients:
//     split_row_pass (x through its strides at j = 1, else a_{j-1} from scratch)   | barrier
//     energy_col_pass: a_j's tile into scratch (j < J), |d|^p into the reduction slots | barrier
//     reduce_step, half = 128 .. 2 (the level kernel's fixed tree)                  | barrier each
//     reduce_step(half = 1); thread 0: sums[b] = tile 0's sum, or sums[b] + tile t's (tile order);
//       after the last tile, partials[n, j, b, c] = sums[b]                         | barrier
// Backward:
//   taps; zero G_J                                                                  | barrier
//   for j = 1 .. J - 1, each tile of a_j: split_row_pass | barrier; approx_col_pass | barrier
//   for j = J .. 1:
//     each tile of level j: split_row_pass (a_{j-1}, x at j = 1)                    | barrier
//                           grad_col_pass: psi(d_jb) * grad[n, j, b] into B         | barrier
//     each tile of a_{j-1}: merge_col_pass of (G_j, B)                             | barrier
//                           merge_row_pass into G_{j-1}, over a_{j-1}'s scratch (j > 1;
//                           a_{j-1} was last read by the split above), or into grad_x (j = 1,
//                           x's dtype and memory format, each element written once)  | barrier
// Every barrier orders one phase's global and shared writes before the next phase's reads within
// the block; the trip counts depend only on the plane's sizes, so the whole block reaches every
// barrier. The merge reads only G_j and B, never the G_{j-1} it writes.
//
// The loop structure is written ONCE, in energy_cascade_block and grad_cascade_block, over a
// `phase` callable: the kernels pass one that runs the phase for their own thread and then
// __syncthreads(); the host emulation (tests/cuda_hf_cascade_emulation_harness.cpp) one that runs
// it for every thread of the block in turn.
//
// Scratch (one allocation in the compute dtype, plane-major: plane p's region at
// scratch + p * plane_elems), level j's (h_j, w_j) coefficients dense row-major:
//   forward:  a_1 .. a_{J-1} at off[j]                        plane_elems = sum_{j<J} h_j w_j
//   backward: a_1 .. a_{J-1} and G_J at off[j] (G_{j-1} later overwrites a_{j-1}), then the three
//             band gradients at off_bands + b * band_elems, band_elems = max_j h_j w_j (levels
//             GROW for axes shorter than the filter outside periodization: not h_1 w_1)
//                                                              plane_elems = sum_{j<=J} h_j w_j
//                                                                            + 3 band_elems
// Shared memory, in compute-dtype elements: taps and the row pass's rows (split_smem_elems), plus
// in the forward the 3 x kThreads reduction slots and the 3 running sums.

#pragma once

#include <cstdint>

#include "common.h"
#include "dwt_body.cuh"
#include "hf_penalty_body.cuh"

namespace wavefuse {
namespace cuda_hf {

using cuda_dwt::kTileH;
using cuda_dwt::MergeArgs;

// Levels the argument block holds (its level tables); deeper cascades take the per-level kernels.
// wavefuse/ops/hf_penalty.py's _CUDA_CASCADE_MAX_LEVELS copies this value (a test checks).
constexpr int kHfCascadeMaxLevels = 16;

// Sizes and scratch offsets of one plane's cascade (host; the harness too), in int64.
struct CascadeLayout {
  int levels;
  int64_t h[kHfCascadeMaxLevels + 1], w[kHfCascadeMaxLevels + 1];  // h[0] x w[0] = H x W
  int64_t off[kHfCascadeMaxLevels + 1];                            // off[0] unused
  int64_t off_bands, band_elems, plane_elems;                      // bands: backward only
};

// false when levels is outside [1, kHfCascadeMaxLevels].
inline bool cascade_layout(CascadeLayout& c, int64_t H, int64_t W, int64_t L, Mode mode,
                           int levels, bool backward) {
  if (levels < 1 || levels > kHfCascadeMaxLevels) return false;
  c.levels = levels;
  c.h[0] = H;
  c.w[0] = W;
  c.off[0] = 0;
  int64_t total = 0, largest = 0;
  for (int j = 1; j <= levels; ++j) {
    c.h[j] = analysis_length<int64_t>(c.h[j - 1], L, mode);
    c.w[j] = analysis_length<int64_t>(c.w[j - 1], L, mode);
    c.off[j] = total;
    if (j < levels || backward) total += c.h[j] * c.w[j];
    largest = c.h[j] * c.w[j] > largest ? c.h[j] * c.w[j] : largest;
  }
  c.off_bands = total;
  c.band_elems = backward ? largest : 0;
  c.plane_elems = total + kBands * c.band_elems;
  return true;
}

// Shared memory of a cascade block, in compute-dtype elements.
inline int64_t cascade_smem_elems(int64_t L, bool backward) {
  if (backward) {  // the split's rows or the merge's columns (the split's, for every L)
    const int64_t merge = cuda_dwt::merge_smem_elems(L);
    return split_smem_elems(L) > merge ? split_smem_elems(L) : merge;
  }
  return split_smem_elems(L) + kBands * kThreads + kBands;
}

template <typename in_t, typename index_t>
struct CascadeArgs {
  using acc_t = typename AccType<in_t>::type;
  const in_t* x;  // (N, C, H, W) through sx
  Strides4<index_t> sx;
  const acc_t* filters;  // (2, L) dec [lo; hi]
  acc_t* scratch;        // plane p's region at scratch + p * plane_elems
  index_t plane_elems, off_bands, band_elems;
  index_t C;
  int L, levels, p;
  Mode mode;
  index_t h[kHfCascadeMaxLevels + 1], w[kHfCascadeMaxLevels + 1];
  index_t off[kHfCascadeMaxLevels + 1];
  acc_t* partials;     // forward: (N, J, 3, C) contiguous (tmax = C, the tile index = c)
  const acc_t* grad;   // backward: (N, J, 3) contiguous
  in_t* grad_x;        // backward: (N, C, H, W) through sgx
  Strides4<index_t> sgx;
};

// The layout's tables into the argument block (host).
template <typename in_t, typename index_t>
inline void set_layout(CascadeArgs<in_t, index_t>& a, const CascadeLayout& c) {
  a.levels = c.levels;
  for (int j = 0; j <= c.levels; ++j) {
    a.h[j] = static_cast<index_t>(c.h[j]);
    a.w[j] = static_cast<index_t>(c.w[j]);
    a.off[j] = static_cast<index_t>(c.off[j]);
  }
  a.plane_elems = static_cast<index_t>(c.plane_elems);
  a.off_bands = static_cast<index_t>(c.off_bands);
  a.band_elems = static_cast<index_t>(c.band_elems);
}

// Analysis level j (1-based: a_{j-1} -> a_j and d_j) of plane `plane` as a one-plane level
// problem reading src (x's plane at j = 1, a_{j-1} in scratch else). The approximation goes to
// a_j's scratch where store_ll (and j < J); the band gradients (backward) to the B region.
template <typename src_t, typename in_t, typename index_t>
WAVEFUSE_HD_INLINE LevelArgs<src_t, index_t> cascade_level(const CascadeArgs<in_t, index_t>& a,
                                                           index_t plane, int j, const src_t* src,
                                                           const Strides4<index_t>& ss,
                                                           bool store_ll) {
  auto* base = a.scratch + plane * a.plane_elems;
  LevelArgs<src_t, index_t> l;
  l.s.x = src;
  l.s.sx = ss;
  l.s.filters = a.filters;
  l.s.ll = nullptr;
  l.s.sl = Strides4<index_t>{0, 0, 0, 0};
  l.s.hi = nullptr;
  l.s.sh = Strides4<index_t>{0, 0, 0, 0};
  l.s.shb = 0;
  l.s.C = 1;
  l.s.H = a.h[j - 1];
  l.s.W = a.w[j - 1];
  l.s.Kh = a.h[j];
  l.s.Kw = a.w[j];
  l.s.L = a.L;
  l.s.tr = cuda_dwt::transform_of(/*synthesis=*/false, a.mode, a.L);
  l.s.tiles_h = (l.s.Kh + kTileH - 1) / kTileH;
  l.s.tiles_w = (l.s.Kw + kTileW - 1) / kTileW;
  l.ll = store_ll && j < a.levels ? base + a.off[j] : nullptr;
  l.sl = Strides4<index_t>{0, 0, a.w[j], 1};
  l.p = a.p;
  l.j = static_cast<index_t>(j - 1);
  l.J = static_cast<index_t>(a.levels);
  l.partials = nullptr;  // the cascade accumulates its tiles itself (accumulate_tile)
  l.tmax = 0;
  l.grad = a.grad == nullptr ? nullptr : a.grad + (plane / a.C) * l.J * kBands;
  l.hi = base + a.off_bands;
  l.sh = Strides4<index_t>{0, 0, a.w[j], 1};
  l.shb = a.band_elems;
  return l;
}

// Level j of plane `plane` from its source: x at j = 1, a_{j-1} in scratch else. f(level args)
// is called with LevelArgs<in_t> or LevelArgs<acc_t> (x's dtype is read at the first level only).
template <typename in_t, typename index_t, typename F>
WAVEFUSE_HD_INLINE void with_level(const CascadeArgs<in_t, index_t>& a, index_t plane, int j,
                                   bool store_ll, F&& f) {
  if (j == 1) {
    const in_t* src = a.x + (plane / a.C) * a.sx.n + (plane % a.C) * a.sx.c;
    f(cascade_level(a, plane, 1, src, Strides4<index_t>{0, 0, a.sx.h, a.sx.w}, store_ll));
  } else {
    const auto* src = a.scratch + plane * a.plane_elems + a.off[j - 1];
    f(cascade_level(a, plane, j, src, Strides4<index_t>{0, 0, a.w[j - 1], 1}, store_ll));
  }
}

// ---- phases of their own (the rest are the level kernels' bodies) -------------------------------

// The approximation of (i, k) alone (backward's analysis sweep), after split_row_pass.
template <typename src_t, typename index_t>
WAVEFUSE_HOST_DEVICE void approx_col_pass(const LevelArgs<src_t, index_t>& l, index_t block,
                                          int tid, const typename AccType<src_t>::type* smem) {
  using acc_t = typename AccType<src_t>::type;
  index_t plane, i0, k0;
  cuda_dwt::tile_origin(block, l.s.tiles_h, l.s.tiles_w, plane, i0, k0);
  const int li = tid / kTileW, lk = tid % kTileW;
  const index_t i = i0 + li, k = k0 + lk;
  if (i >= l.s.Kh || k >= l.s.Kw) return;
  const acc_t* t0 = smem;
  const acc_t* lo = smem + 2 * l.s.L + (2 * li) * kTileW + lk;
  acc_t v = acc_t(0);
  for (int m = 0; m < l.s.L; ++m) v += t0[m] * lo[m * kTileW];
  store_approximation(l, index_t(0), index_t(0), i, k, v);
}

// Thread 0, after the last reduce_step of tile t (its own writes): the running sums of the
// level's tiles, in tile order, and after the last tile partials[n, j, b, c].
template <typename in_t, typename index_t>
WAVEFUSE_HD_INLINE void accumulate_tile(const CascadeArgs<in_t, index_t>& a, index_t plane, int j,
                                        index_t t, index_t tiles, int tid,
                                        typename AccType<in_t>::type* red) {
  if (tid != 0) return;
  auto* sums = red + kBands * kThreads;
  for (int b = 0; b < kBands; ++b) {
    sums[b] = t == 0 ? red[b * kThreads] : sums[b] + red[b * kThreads];
  }
  if (t + 1 < tiles) return;
  const index_t pn = plane / a.C, pc = plane % a.C;
  const index_t J = static_cast<index_t>(a.levels);
  for (int b = 0; b < kBands; ++b) {
    a.partials[partial_index(pn, static_cast<index_t>(j - 1), J, b, a.C, pc)] = sums[b];
  }
}

// Level j's merge (adjoint) as a one-plane problem: (G_j, B) -> y, y over (h_{j-1}, w_{j-1}).
template <typename out_t, typename in_t, typename index_t>
WAVEFUSE_HD_INLINE MergeArgs<typename AccType<in_t>::type, index_t, out_t> cascade_merge(
    const CascadeArgs<in_t, index_t>& a, index_t plane, int j, out_t* y,
    const Strides4<index_t>& sy) {
  const auto* base = a.scratch + plane * a.plane_elems;
  MergeArgs<typename AccType<in_t>::type, index_t, out_t> m;
  m.ll = base + a.off[j];
  m.sl = Strides4<index_t>{0, 0, a.w[j], 1};
  m.hi = base + a.off_bands;
  m.sh = Strides4<index_t>{0, 0, a.w[j], 1};
  m.shb = a.band_elems;
  m.filters = a.filters;
  m.y = y;
  m.sy = sy;
  m.C = 1;
  m.H = a.h[j - 1];
  m.W = a.w[j - 1];
  m.Kh = a.h[j];
  m.Kw = a.w[j];
  m.L = a.L;
  m.tr = cuda_dwt::transform_of(/*synthesis=*/false, a.mode, a.L);
  m.tiles_h = (m.H + kTileH - 1) / kTileH;
  m.tiles_w = (m.W + kTileW - 1) / kTileW;
  return m;
}

// ---- the blocks ---------------------------------------------------------------------------------

// Forward of plane `plane`, phase by phase. phase(f) runs f(tid) for the calling thread (device:
// then __syncthreads()) or for every thread of the block (host emulation).
template <typename in_t, typename index_t, typename Phase>
WAVEFUSE_HD_INLINE void energy_cascade_block(const CascadeArgs<in_t, index_t>& a, index_t plane,
                                             typename AccType<in_t>::type* smem, Phase&& phase) {
  auto* red = smem + split_smem_elems(a.L);
  phase([&](int tid) { cuda_dwt::load_taps(a.filters, a.L, /*reverse=*/true, tid, smem); });
  for (int j = 1; j <= a.levels; ++j) {
    with_level(a, plane, j, /*store_ll=*/true, [&](const auto& l) {
      const index_t tiles = l.s.tiles_h * l.s.tiles_w;
      for (index_t t = 0; t < tiles; ++t) {
        phase([&](int tid) { cuda_dwt::split_row_pass(l.s, t, tid, smem); });
        phase([&](int tid) { energy_col_pass(l, t, tid, smem); });
        for (int half = kThreads / 2; half > 1; half /= 2) {
          phase([&](int tid) { reduce_step(red, kBands, half, tid); });
        }
        phase([&](int tid) {
          reduce_step(red, kBands, 1, tid);
          accumulate_tile(a, plane, j, t, tiles, tid, red);
        });
      }
    });
  }
}

// Backward of plane `plane`, phase by phase (phase as above).
template <typename in_t, typename index_t, typename Phase>
WAVEFUSE_HD_INLINE void grad_cascade_block(const CascadeArgs<in_t, index_t>& a, index_t plane,
                                           typename AccType<in_t>::type* smem, Phase&& phase) {
  using acc_t = typename AccType<in_t>::type;
  acc_t* base = a.scratch + plane * a.plane_elems;
  const int J = a.levels;
  phase([&](int tid) {
    cuda_dwt::load_taps(a.filters, a.L, /*reverse=*/true, tid, smem);
    const index_t n = a.h[J] * a.w[J];
    for (index_t e = tid; e < n; e += kThreads) base[a.off[J] + e] = acc_t(0);  // G_J
  });
  for (int j = 1; j < J; ++j) {  // up: a_1 .. a_{J-1}
    with_level(a, plane, j, /*store_ll=*/true, [&](const auto& l) {
      const index_t tiles = l.s.tiles_h * l.s.tiles_w;
      for (index_t t = 0; t < tiles; ++t) {
        phase([&](int tid) { cuda_dwt::split_row_pass(l.s, t, tid, smem); });
        phase([&](int tid) { approx_col_pass(l, t, tid, smem); });
      }
    });
  }
  for (int j = J; j >= 1; --j) {  // down
    with_level(a, plane, j, /*store_ll=*/false, [&](const auto& l) {
      const index_t tiles = l.s.tiles_h * l.s.tiles_w;
      for (index_t t = 0; t < tiles; ++t) {
        phase([&](int tid) { cuda_dwt::split_row_pass(l.s, t, tid, smem); });
        phase([&](int tid) { grad_col_pass(l, t, tid, smem); });
      }
    });
    auto merge = [&](const auto& m) {
      const index_t tiles = m.tiles_h * m.tiles_w;
      for (index_t t = 0; t < tiles; ++t) {
        phase([&](int tid) { cuda_dwt::merge_col_pass(m, t, tid, smem); });
        phase([&](int tid) { cuda_dwt::merge_row_pass(m, t, tid, smem); });
      }
    };
    if (j > 1) {
      merge(cascade_merge(a, plane, j, base + a.off[j - 1],
                          Strides4<index_t>{0, 0, a.w[j - 1], 1}));
    } else {
      in_t* y = a.grad_x + (plane / a.C) * a.sgx.n + (plane % a.C) * a.sgx.c;
      merge(cascade_merge(a, plane, 1, y, Strides4<index_t>{0, 0, a.sgx.h, a.sgx.w}));
    }
  }
}

}  // namespace cuda_hf
}  // namespace wavefuse
