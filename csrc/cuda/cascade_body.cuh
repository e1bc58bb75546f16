// Body of wavelet_pgd_step's WHOLE-CASCADE kernel (csrc/cuda/dwt.cu's cascade_kernel, used by
// pgd_step.cu's chain_pgd_step_cuda): the approximation chain of every level in ONE launch, one
// block per (n, c) plane.
//
// The maths is the chain's (dwt_body.cuh's chain_thread, kernels/pgd_step.py's _chain_step): with
// a_0 = g (the gradient in the compute type) and a_j = lo(a_{j-1}) (the approximation band
// alone), perfect reconstruction gives g' = e_0 with
//   e_{j-1} = coef_j a_{j-1} + gain_j S_lo e_j   (j = J .. 1, e_J := a_J),
//   coef_1 = s_1, coef_j = s_j - s_{j-1}, gain_J = 1 - s_J, gain_j = 1 for j < J
// (cascade_plan below computes them as pgd_step.cu's per-level loop does). The per-level chain
// runs that as 2J launches (analysis_ll, then chain_level coarsest first); here one block sweeps
// its plane's tiles level after level, calling the SAME thread bodies:
//
//   taps (the dec bank reversed: what split_row_pass and chain_thread both read)    | barrier
//   for j = 1 .. J, for each 16 x 16 tile of a_j:
//     split_row_pass                                                                | barrier
//     split_col_pass<kLLOnly = true> (writes a_j's tile)                            | barrier
//   for j = J .. 1:
//     every 16 x 16 tile of e_{j-1}: chain_thread (over a_{j-1}, or into g' at j = 1) | barrier
//
// With `step` on (Linf, x_adv in the compute type; step_math.cuh's FusedLinf), level 1 applies
// the Linf step to x_adv where it would store g' (no g' is written): filter and step in ONE launch.
//
// Each body sees a one-plane problem (C = 1, plane 0: cascade_split_args / cascade_chain_args),
// so tile_origin's block index is the tile index. A barrier orders the global writes of one
// level before the next level's reads within the block (__syncthreads makes a block's global
// and shared writes visible to its threads); the chain's tiles need no barrier between them
// (shared memory holds only the taps; each thread reads prev at, and writes, its own sample).
// The trip counts depend on the plane sizes only, so every barrier is reached by the whole block.
//
// The loop structure is written ONCE, in cascade_block below, over a `phase` callable: the kernel
// passes one that runs the phase for its own thread and then __syncthreads(); the host emulation
// (tests/cuda_cascade_emulation_harness.cpp) one that runs it for every thread of the block in
// turn -- the emulation runs exactly the kernel's phases in the kernel's order.
//
// Scratch (host: dwt.cu's chain_cascade): one allocation, g' first (N * C * H * W in the
// gradient's memory format, so that the step keeps its flat path), then plane-major levels: plane
// p's a_1 .. a_J contiguous at scratch + p * plane_elems + off[j], each level row-major (h_j, w_j).
// e_{j-1} is written over a_{j-1} (j > 1), as the per-level chain does.

#pragma once

#include <cstdint>

#include "common.h"
#include "dwt_body.cuh"

namespace wavefuse {
namespace cuda_dwt {

// Levels the cascade's argument block holds; deeper chains take the per-level launches. Where
// the cascade runs instead of the per-level chain is the caller's choice (the op's `cascade`
// argument: wavefuse/ops/separable.py's cascade_fits, shared with the Triton cascade: planes that
// fill the GPU, none over 512 x 512; BLIND, unmeasured). One block sweeps a whole plane level
// after level, so few planes would leave SMs idle; the per-level chain spreads one plane over
// many blocks.
constexpr int kCascadeMaxLevels = 16;

template <typename acc_t, typename index_t>
struct CascadeArgs {
  const acc_t* g;  // a_0: the gradient in the compute type, (N, C, H, W) through sg
  Strides4<index_t> sg;
  acc_t* out;  // g' = e_0, (N, C, H, W) through so
  Strides4<index_t> so;
  acc_t* levels_base;   // plane p's a_j at levels_base + p * plane_elems + off[j], j >= 1
  index_t plane_elems;  // sum_j h_j w_j
  const acc_t* filters;  // (2, L) dec [lo; hi]
  index_t C;
  int L, levels;
  Mode mode;
  index_t h[kCascadeMaxLevels + 1], w[kCascadeMaxLevels + 1];  // h[0] x w[0] = H x W
  index_t off[kCascadeMaxLevels + 1];                          // off[0] unused
  acc_t coef[kCascadeMaxLevels + 1], gain[kCascadeMaxLevels + 1];  // chain level j's, j >= 1
  cuda_pgd::FusedLinf<acc_t, index_t> step;  // on: the Linf step at level 1 instead of storing g'
};

// The level sizes, offsets and chain coefficients of a (H, W) plane (host; the harness too).
// hf_scale[0 .. levels), finest first. Returns false when levels is out of [1, kCascadeMaxLevels].
template <typename acc_t, typename index_t>
inline bool cascade_plan(CascadeArgs<acc_t, index_t>& a, int64_t H, int64_t W, int L, Mode mode,
                         int levels, const double* hf_scale) {
  if (levels < 1 || levels > kCascadeMaxLevels) return false;
  a.L = L;
  a.levels = levels;
  a.mode = mode;
  int64_t h = H, w = W, total = 0;
  a.h[0] = static_cast<index_t>(h);
  a.w[0] = static_cast<index_t>(w);
  a.off[0] = 0;
  a.coef[0] = a.gain[0] = acc_t(0);
  for (int j = 1; j <= levels; ++j) {
    h = analysis_length<int64_t>(h, L, mode);
    w = analysis_length<int64_t>(w, L, mode);
    a.h[j] = static_cast<index_t>(h);
    a.w[j] = static_cast<index_t>(w);
    a.off[j] = static_cast<index_t>(total);
    total += h * w;
    const double coef = j > 1 ? hf_scale[j - 1] - hf_scale[j - 2] : hf_scale[0];
    const double gain = j == levels ? 1.0 - hf_scale[j - 1] : 1.0;
    a.coef[j] = static_cast<acc_t>(coef);
    a.gain[j] = static_cast<acc_t>(gain);
  }
  a.plane_elems = static_cast<index_t>(total);
  return true;
}

// Elements of the levels per plane (host), as cascade_plan's plane_elems.
inline int64_t cascade_plane_elems(int64_t H, int64_t W, int64_t L, Mode mode, int levels) {
  int64_t total = 0;
  for (int j = 1; j <= levels; ++j) {
    H = analysis_length<int64_t>(H, L, mode);
    W = analysis_length<int64_t>(W, L, mode);
    total += H * W;
  }
  return total;
}

// Shared memory of the cascade, in acc_t elements: the split's (taps and the row pass's rows;
// the chain needs the taps only).
inline int64_t cascade_smem_elems(int64_t L) { return split_geometry(1, 1, 1, L).smem_elems; }

// Analysis level j (a_{j-1} -> a_j) of plane `plane` as a one-plane split (C = 1).
template <typename acc_t, typename index_t>
WAVEFUSE_HD_INLINE SplitArgs<acc_t, index_t> cascade_split_args(
    const CascadeArgs<acc_t, index_t>& a, index_t plane, int j) {
  acc_t* base = a.levels_base + plane * a.plane_elems;
  SplitArgs<acc_t, index_t> s;
  if (j == 1) {
    s.x = a.g + (plane / a.C) * a.sg.n + (plane % a.C) * a.sg.c;
    s.sx = Strides4<index_t>{0, 0, a.sg.h, a.sg.w};
  } else {
    s.x = base + a.off[j - 1];
    s.sx = Strides4<index_t>{0, 0, a.w[j - 1], 1};
  }
  s.filters = a.filters;
  s.ll = base + a.off[j];
  s.sl = Strides4<index_t>{0, 0, a.w[j], 1};
  s.hi = nullptr;  // the approximation alone (split_col_pass<true>)
  s.sh = Strides4<index_t>{0, 0, 0, 0};
  s.shb = 0;
  s.C = 1;
  s.H = a.h[j - 1];
  s.W = a.w[j - 1];
  s.Kh = a.h[j];
  s.Kw = a.w[j];
  s.L = a.L;
  s.tr = transform_of(/*synthesis=*/false, a.mode, a.L);
  s.tiles_h = (s.Kh + kTileH - 1) / kTileH;
  s.tiles_w = (s.Kw + kTileW - 1) / kTileW;
  return s;
}

// Synthesis level j (e_j, a_{j-1} -> e_{j-1}) of plane `plane` as a one-plane chain level: over
// a_{j-1}'s buffer for j > 1, from the gradient into g' for j = 1.
template <typename acc_t, typename index_t>
WAVEFUSE_HD_INLINE ChainArgs<acc_t, index_t> cascade_chain_args(
    const CascadeArgs<acc_t, index_t>& a, index_t plane, int j) {
  acc_t* base = a.levels_base + plane * a.plane_elems;
  const index_t pn = plane / a.C, pc = plane % a.C;
  ChainArgs<acc_t, index_t> c{};
  c.cur = base + a.off[j];
  c.sc = Strides4<index_t>{0, 0, a.w[j], 1};
  if (j == 1) {
    c.prev = a.g + pn * a.sg.n + pc * a.sg.c;
    c.sp = Strides4<index_t>{0, 0, a.sg.h, a.sg.w};
    c.step = a.step.plane(pn, pc);  // off stays off
    c.out = c.step.on() ? nullptr : a.out + pn * a.so.n + pc * a.so.c;  // no g' with the step
    c.so = Strides4<index_t>{0, 0, a.so.h, a.so.w};
  } else {
    c.out = base + a.off[j - 1];
    c.prev = c.out;
    c.so = Strides4<index_t>{0, 0, a.w[j - 1], 1};
    c.sp = c.so;
  }
  c.filters = a.filters;
  c.coef = a.coef[j];
  c.gain = a.gain[j];
  c.C = 1;
  c.H = a.h[j - 1];
  c.W = a.w[j - 1];
  c.Kh = a.h[j];
  c.Kw = a.w[j];
  c.Hs = synthesis_length<index_t>(c.Kh, static_cast<index_t>(a.L), a.mode);
  c.Ws = synthesis_length<index_t>(c.Kw, static_cast<index_t>(a.L), a.mode);
  c.L = a.L;
  c.tr = transform_of(/*synthesis=*/true, a.mode, a.L);
  c.tr.reverse = true;  // the dec bank, reversed on loading: the rec bank
  c.tiles_h = (c.H + kTileH - 1) / kTileH;
  c.tiles_w = (c.W + kTileW - 1) / kTileW;
  return c;
}

// The whole cascade of plane `plane`, phase by phase. phase(f) runs f(tid) for the calling thread
// (device: then __syncthreads()) or for every thread of the block (host emulation); a barrier
// follows every phase.
template <typename acc_t, typename index_t, typename Phase>
WAVEFUSE_HD_INLINE void cascade_block(const CascadeArgs<acc_t, index_t>& a, index_t plane,
                                      acc_t* smem, Phase&& phase) {
  phase([&](int tid) { load_taps(a.filters, a.L, /*reverse=*/true, tid, smem); });
  for (int j = 1; j <= a.levels; ++j) {
    const SplitArgs<acc_t, index_t> s = cascade_split_args(a, plane, j);
    const index_t tiles = s.tiles_h * s.tiles_w;
    for (index_t t = 0; t < tiles; ++t) {
      phase([&](int tid) { split_row_pass(s, t, tid, smem); });
      phase([&](int tid) { split_col_pass<true>(s, t, tid, smem); });
    }
  }
  for (int j = a.levels; j >= 1; --j) {
    const ChainArgs<acc_t, index_t> c = cascade_chain_args(a, plane, j);
    const index_t tiles = c.tiles_h * c.tiles_w;
    phase([&](int tid) {
      for (index_t t = 0; t < tiles; ++t) chain_thread(c, t, tid, smem);
    });
  }
}

}  // namespace cuda_dwt
}  // namespace wavefuse
