// Body of wavelet_pgd_step's chain IN PAIRS OF STAGES (csrc/cuda/dwt.cu's pair_kernel, composed
// by chain_pairs and used by pgd_step.cu's chain_pgd_step_cuda where the one-launch cascade does
// not run): J launches for J levels, against the per-level chain's 2J.
//
// The chain (cascade_body.cuh, kernels/pgd_step.py's _chain_step) has 2J stages: the analyses
// A_1 .. A_J (a_j = lo(a_{j-1}), a_0 = g) and then the syntheses S_J .. S_1
// (e_{j-1} = coef_j a_{j-1} + gain_j S_lo e_j, e_J = a_J, g' = e_0). A launch runs two consecutive
// stages. Each block owns a T x T tile of the second stage's output and first computes the R x R
// WINDOW of the first stage's plane that the tile reads -- halo included, recomputed by the
// neighbouring blocks too -- into shared memory; a barrier; then its tile from the window.
// The window holds the first stage's plane AS THE SECOND STAGE READS IT, boundary rule applied:
//   second stage an analysis: window slot s = extended position w0 + s, w0 = 2 i0 + off, whose
//     value is the plane at extend_index(mode, w0 + s, n) (zero where that is -1);
//   second stage a synthesis: slot s = coefficient w0 + s, w0 = floor((r0 - L + 1 - off) / 2),
//     the plane at (w0 + s) mod n (periodization) or zero outside [0, n);
// so the second stage reads the window with no boundary logic. A first-stage value at a mapped
// index is computed straight from global memory (a direct 2-D gather: L^2 taps for an analysis,
// (L/2)^2 for a synthesis, zero padding skipped, never multiplied) -- except, for an analysis
// whose band fits in shared memory (pair_band_fits: up to 28 taps in float32, 12 in float64 --
// the common short filters), at window rows under no boundary rule: there a row pass into a
// shared band (phase 1a) and the column taps, about 3L per sample, as dwt_body.cuh's split.
//
// Geometry: an analysis tile of T_A = kPairTileA outputs per side reads slots 2t + m < 2 T_A + L - 2
// = R_A; a synthesis tile of T_S = kPairTileS (even) outputs from an even r0 reads T_S / 2 + L / 2
// slots (pair_window). BLIND: both tile sides are reasoned, not measured. With STORE_FIRST the
// block also writes the first-stage positions [2 i0, 2 i0 + 2 T_A) of its window (they lie inside
// it: off >= 2 - L) to `first`: the approximation a_j that a later synthesis needs.
//
// With `step` on in the final launch (Linf, x_adv in the compute type; step_math.cuh's
// FusedLinf), the tile applies the Linf step to x_adv where it would store g' (no g' is written):
// J launches for the filter and the step together.
//
// The phases are written ONCE (pair_block, over a `phase` callable, as cascade_block): the kernel
// runs each for its thread and then __syncthreads(); the host emulation
// (tests/cuda_pair_emulation_harness.cpp) runs each for every thread of the block in turn.

#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common.h"
#include "dwt_body.cuh"

namespace wavefuse {
namespace cuda_dwt {

constexpr int kPairTileA = 16;  // outputs per side of a tile whose second stage is an analysis
constexpr int kPairTileS = 32;  // ... a synthesis (even)

// Window side R for a pair whose second stage is an analysis (or a synthesis), L taps.
inline int64_t pair_window(bool second_analysis, int64_t L) {
  return second_analysis ? 2 * kPairTileA + L - 2 : kPairTileS / 2 + L / 2;
}

// Rows of the band of a first-stage analysis (R window rows read 2s + m, m < L, of it).
WAVEFUSE_HD_INLINE int64_t pair_band_rows(int64_t R, int64_t L) { return 2 * R + L - 2; }

// Shared memory of a pair block, in acc_t elements: the taps (2L) and the larger window; with
// `band`, also the row-pass band of the larger window (a first-stage analysis made separable).
inline int64_t pair_smem_elems(int64_t L, bool band = false) {
  const int64_t r = pair_window(true, L) > pair_window(false, L) ? pair_window(true, L)
                                                                 : pair_window(false, L);
  return 2 * L + r * r + (band ? pair_band_rows(r, L) * r : 0);
}

// Whether the band fits in `limit_bytes` of shared memory (acc_bytes per element): then a
// first-stage analysis costs about 3L multiply-adds per window sample instead of L^2.
inline bool pair_band_fits(int64_t L, int64_t acc_bytes, int64_t limit_bytes) {
  return pair_smem_elems(L, true) * acc_bytes <= limit_bytes;
}

// One launch of the chain (host; the harness too): stages (first_analysis, j1) and
// (second_analysis, j2). Buffers: the first stage reads a_{j1-1} (analysis; a_0 = g) or e_{j1}
// (synthesis; a_J itself when j1 = J, with gain 1 - s_J); a synthesis adds coef * a_{j-1}; the
// second stage writes a_{j2} (analysis), e_{j2-1} (synthesis) or, when final, g'.
struct PairStep {
  bool first_analysis, second_analysis;
  int j1, j2;
  double c1, g1, c2, g2;  // coefficient and gain of a synthesis stage (0 and 1 for analyses)
  bool store_first;       // keep a_{j1} (the first stage's plane): coef_{j1 + 1} != 0 reads it
  bool final;             // the second stage is S_1: g'
};

// The J launches of a chain of `depth` levels (hf_scale[0 .. depth), finest first): its stages
// A_1 .. A_J, S_J .. S_1 two by two.
inline std::vector<PairStep> pair_plan(int depth, const double* hf_scale) {
  auto coef = [&](int j) { return j > 1 ? hf_scale[j - 1] - hf_scale[j - 2] : hf_scale[0]; };
  auto gain = [&](int j) { return j == depth ? 1.0 - hf_scale[depth - 1] : 1.0; };
  std::vector<std::pair<bool, int>> stages;
  for (int j = 1; j <= depth; ++j) stages.push_back({true, j});
  for (int j = depth; j >= 1; --j) stages.push_back({false, j});
  std::vector<PairStep> plan;
  for (size_t p = 0; p + 1 < stages.size(); p += 2) {
    PairStep st{};
    st.first_analysis = stages[p].first;
    st.j1 = stages[p].second;
    st.second_analysis = stages[p + 1].first;
    st.j2 = stages[p + 1].second;
    st.c1 = st.first_analysis ? 0.0 : coef(st.j1);
    st.g1 = st.first_analysis ? 1.0 : gain(st.j1);
    st.c2 = st.second_analysis ? 0.0 : coef(st.j2);
    st.g2 = st.second_analysis ? 1.0 : gain(st.j2);
    st.store_first =
        st.first_analysis && st.second_analysis && st.j1 < depth && coef(st.j1 + 1) != 0.0;
    st.final = !st.second_analysis && st.j2 == 1;
    plan.push_back(st);
  }
  return plan;
}

// The level buffers launch `st` reads, as (is a detail e_j, j): the first stage's input -- a_{j1-1}
// (analysis), e_{j1} (synthesis) or a_J itself (j1 = J) -- and a_{j-1} where a synthesis stage
// adds coef * a_{j-1}. a_0 is the caller's gradient.
inline std::vector<std::pair<bool, int>> pair_reads(const PairStep& st, int depth) {
  std::vector<std::pair<bool, int>> r;
  if (st.first_analysis) {
    r.push_back({false, st.j1 - 1});
  } else {
    r.push_back({st.j1 < depth, st.j1});
  }
  if (st.c1 != 0.0) r.push_back({false, st.j1 - 1});
  if (st.c2 != 0.0) r.push_back({false, st.j2 - 1});
  return r;
}

// For each level buffer, the index in `plan` of the launch that reads it last (-1: none):
// [0][j] for a_j, [1][j] for e_j. chain_pairs releases a buffer after that launch (the
// allocator's stream order keeps its memory from later launches' reuse until then).
inline std::vector<std::vector<int>> pair_last_reads(const std::vector<PairStep>& plan,
                                                     int depth) {
  std::vector<std::vector<int>> last(2, std::vector<int>(depth + 1, -1));
  for (size_t p = 0; p < plan.size(); ++p) {
    for (const auto& [detail, j] : pair_reads(plan[p], depth)) last[detail][j] = static_cast<int>(p);
  }
  return last;
}

template <typename acc_t, typename index_t>
struct PairArgs {
  const acc_t* src;  // the first stage's input: a_{j-1} (analysis) or e_j (synthesis), Hs x Ws
  Strides4<index_t> ss;
  const acc_t* p1;  // first stage (a synthesis): + c1 * p1 (a_{j-1}, Hm x Wm) where has_c1
  Strides4<index_t> s1;
  const acc_t* p2;  // second stage (a synthesis): + c2 * p2 (Ho x Wo) where has_c2
  Strides4<index_t> s2;
  acc_t* first;  // STORE_FIRST: the first stage's own positions (Hm x Wm), else nullptr
  Strides4<index_t> sf;
  acc_t* out;  // the second stage's output, Ho x Wo
  Strides4<index_t> so;
  const acc_t* filters;  // (2, L) dec [lo; hi]
  acc_t c1, g1, c2, g2;  // coefficients and gains (a synthesis: c * p + g * S_lo ...)
  bool has_c1, has_c2;
  bool first_analysis, second_analysis;
  bool band;  // a first-stage analysis through the row-pass band (pair_band_fits)
  index_t C, Hs, Ws, Hm, Wm, Ho, Wo;
  index_t tiles_h, tiles_w;  // of the second stage's output
  int L, R, T;               // taps, window side, outputs per tile side
  Mode mode;
  cuda_pgd::FusedLinf<acc_t, index_t> step;  // on (final launch only): the Linf step, not `out`
};

// Block -> (plane, first output row, first output column) for tiles of T.
template <typename index_t>
WAVEFUSE_HD_INLINE void pair_origin(index_t block, index_t tiles_h, index_t tiles_w, int T,
                                    index_t& plane, index_t& row0, index_t& col0) {
  const index_t tw = block % tiles_w;
  const index_t rest = block / tiles_w;
  plane = rest / tiles_h;
  row0 = (rest % tiles_h) * T;
  col0 = tw * T;
}

// Offset of the analysis and synthesis maps' tap 0 (Transform's off).
WAVEFUSE_HD_INLINE int pair_off(Mode mode, int L) {
  return mode == Mode::Periodization ? 1 - L / 2 : 2 - L;
}

// The first stage's plane index (n samples) that window position p stands for, -1 for zero.
template <typename index_t>
WAVEFUSE_HD_INLINE index_t pair_window_index(bool second_analysis, Mode mode, index_t p,
                                             index_t n) {
  if (second_analysis) return extend_index<index_t>(mode, p, n);
  if (mode == Mode::Periodization) return floor_mod<index_t>(p, n);
  return p >= 0 && p < n ? p : index_t(-1);
}

// Analysis (the approximation alone) at coefficient (i, k) of the plane x (H x W, strides sx):
// sum_m sum_n t[m] t[n] x[e(2i + m + off), e(2k + n + off)], taps t = the dec lo reversed.
template <typename acc_t, typename index_t>
WAVEFUSE_HD_INLINE acc_t pair_analysis(const acc_t* x, const Strides4<index_t>& sx, index_t i,
                                       index_t k, index_t H, index_t W, int L, int off, Mode mode,
                                       const acc_t* taps) {
  acc_t acc = acc_t(0);
  for (int m = 0; m < L; ++m) {
    const index_t row = extend_index<index_t>(mode, 2 * i + m + off, H);
    if (row < 0) continue;  // zero padding skipped, not multiplied: 0 * inf stays out
    const acc_t* line = x + row * sx.h;
    acc_t lo = acc_t(0);
    for (int n = 0; n < L; ++n) {
      const index_t col = extend_index<index_t>(mode, 2 * k + n + off, W);
      if (col < 0) continue;
      lo += taps[n] * line[col * sx.w];
    }
    acc += taps[m] * lo;
  }
  return acc;
}

// Coefficient index that a synthesis reads for k: window (k - w0), the plane periodic (k mod K)
// or the plane zero outside [0, K) (-1).
enum class CoefRead : int { Window = 0, Zero = 1, Periodic = 2 };

template <typename index_t>
WAVEFUSE_HD_INLINE index_t pair_coef(CoefRead how, index_t k, index_t w0, index_t K) {
  if (how == CoefRead::Window) return k - w0;
  if (how == CoefRead::Periodic) return floor_mod<index_t>(k, K);
  return k >= 0 && k < K ? k : index_t(-1);
}

// Synthesis of an approximation band alone at output (r, c): sum over the taps m, n of r - off's
// and c - off's parity of t[m] t[n] coef[(r - m - off) / 2, (c - n - off) / 2] (the same sum as
// dwt_body.cuh's approx_gather), coefficients read through pair_coef.
template <typename acc_t, typename index_t>
WAVEFUSE_HD_INLINE acc_t pair_synthesis(const acc_t* cf, index_t sh, index_t sw, index_t r,
                                        index_t c, index_t w0h, index_t w0w, index_t Kh,
                                        index_t Kw, CoefRead how, int L, int off,
                                        const acc_t* taps) {
  const int half = L / 2;
  const int par_h = static_cast<int>(floor_mod<index_t>(r - off, 2));
  const int par_w = static_cast<int>(floor_mod<index_t>(c - off, 2));
  acc_t acc = acc_t(0);
  for (int a = 0; a < half; ++a) {
    const int mh = par_h + 2 * a;
    const index_t row = pair_coef<index_t>(how, (r - mh - off) / 2, w0h, Kh);
    if (row < 0) continue;
    acc_t z = acc_t(0);
    for (int b = 0; b < half; ++b) {
      const int mw = par_w + 2 * b;
      const index_t col = pair_coef<index_t>(how, (c - mw - off) / 2, w0w, Kw);
      if (col < 0) continue;
      z += taps[mw] * cf[row * sh + col * sw];
    }
    acc += taps[mh] * z;
  }
  return acc;
}

// The window origin along one axis for a tile starting at output t0.
template <typename index_t>
WAVEFUSE_HD_INLINE index_t pair_w0(bool second_analysis, index_t t0, int L, int off) {
  return second_analysis ? 2 * t0 + off : floor_div<index_t>(t0 - L + 1 - off, 2);
}

// Phase 1a (a first-stage analysis with `band`): the row pass of the window's rows, thread tid's
// entries. Band row u stands for the source's extended row 2 w0h + off + u: window row s whose
// plane index is its own position (w0h + s inside [0, Hm): no boundary rule) reads rows 2s + m.
// band[u][t] = sum_n t[n] src[e(2 w0h + off + u), e(2 k_t + n + off)], k_t the window column's
// plane index (zero where that is -1).
template <typename acc_t, typename index_t>
WAVEFUSE_HOST_DEVICE void pair_stage1_band(const PairArgs<acc_t, index_t>& a, index_t block,
                                           int tid, acc_t* smem) {
  if (!a.first_analysis || !a.band) return;
  const acc_t* taps = smem;
  acc_t* band = smem + 2 * a.L + a.R * a.R;
  const int off = pair_off(a.mode, a.L);
  index_t plane, i0, j0;
  pair_origin(block, a.tiles_h, a.tiles_w, a.T, plane, i0, j0);
  const index_t pn = plane / a.C, pc = plane % a.C;
  const index_t w0h = pair_w0<index_t>(a.second_analysis, i0, a.L, off);
  const index_t w0w = pair_w0<index_t>(a.second_analysis, j0, a.L, off);
  const acc_t* src = a.src + pn * a.ss.n + pc * a.ss.c;
  const int rows = static_cast<int>(pair_band_rows(a.R, a.L));
  for (int e = tid; e < rows * a.R; e += kThreads) {
    const int u = e / a.R, t = e % a.R;
    const index_t row = extend_index<index_t>(a.mode, 2 * w0h + off + u, a.Hs);
    const index_t k = pair_window_index<index_t>(a.second_analysis, a.mode, w0w + t, a.Wm);
    acc_t v = acc_t(0);
    if (row >= 0 && k >= 0) {
      const acc_t* line = src + row * a.ss.h;
      for (int n = 0; n < a.L; ++n) {
        const index_t col = extend_index<index_t>(a.mode, 2 * k + n + off, a.Ws);
        if (col < 0) continue;  // zero padding skipped, as pair_analysis
        v += taps[n] * line[col * a.ss.w];
      }
    }
    band[e] = v;
  }
}

// Phase 1: the window (R x R, after the taps in shared memory), thread tid's entries.
template <typename acc_t, typename index_t>
WAVEFUSE_HOST_DEVICE void pair_stage1(const PairArgs<acc_t, index_t>& a, index_t block, int tid,
                                      acc_t* smem) {
  const acc_t* taps = smem;  // the lo taps, reversed
  acc_t* window = smem + 2 * a.L;
  const int off = pair_off(a.mode, a.L);
  index_t plane, i0, j0;
  pair_origin(block, a.tiles_h, a.tiles_w, a.T, plane, i0, j0);
  const index_t pn = plane / a.C, pc = plane % a.C;
  const index_t w0h = pair_w0<index_t>(a.second_analysis, i0, a.L, off);
  const index_t w0w = pair_w0<index_t>(a.second_analysis, j0, a.L, off);
  const acc_t* src = a.src + pn * a.ss.n + pc * a.ss.c;
  const CoefRead how = a.mode == Mode::Periodization ? CoefRead::Periodic : CoefRead::Zero;
  for (int e = tid; e < a.R * a.R; e += kThreads) {
    const index_t ph = w0h + e / a.R, pw = w0w + e % a.R;
    const index_t row = pair_window_index<index_t>(a.second_analysis, a.mode, ph, a.Hm);
    const index_t col = pair_window_index<index_t>(a.second_analysis, a.mode, pw, a.Wm);
    acc_t v = acc_t(0);
    if (row >= 0 && col >= 0) {
      if (a.first_analysis && a.band && row == ph) {  // the band's rows 2s + m (phase 1a)
        const acc_t* band = window + a.R * a.R + (2 * (e / a.R)) * a.R + e % a.R;
        for (int m = 0; m < a.L; ++m) v += taps[m] * band[m * a.R];
      } else if (a.first_analysis) {  // a row under the boundary rule: the direct gather
        v = pair_analysis<acc_t, index_t>(src, a.ss, row, col, a.Hs, a.Ws, a.L, off, a.mode,
                                          taps);
      } else {
        v = a.g1 * pair_synthesis<acc_t, index_t>(src, a.ss.h, a.ss.w, row, col, 0, 0, a.Hs, a.Ws,
                                                   how, a.L, off, taps);
        if (a.has_c1) v += a.c1 * a.p1[pn * a.s1.n + pc * a.s1.c + row * a.s1.h + col * a.s1.w];
      }
    }
    window[e] = v;
    // the first stage's own positions [2 i0, 2 i0 + 2T) (inside the plane: a later launch's a_j)
    if (a.first != nullptr && ph >= 2 * i0 && ph < 2 * (i0 + a.T) && ph < a.Hm &&
        pw >= 2 * j0 && pw < 2 * (j0 + a.T) && pw < a.Wm) {
      a.first[pn * a.sf.n + pc * a.sf.c + ph * a.sf.h + pw * a.sf.w] = v;
    }
  }
}

// Phase 2: the tile's outputs, thread tid's.
template <typename acc_t, typename index_t>
WAVEFUSE_HOST_DEVICE void pair_stage2(const PairArgs<acc_t, index_t>& a, index_t block, int tid,
                                      const acc_t* smem) {
  const acc_t* taps = smem;
  const acc_t* window = smem + 2 * a.L;
  const int off = pair_off(a.mode, a.L);
  index_t plane, i0, j0;
  pair_origin(block, a.tiles_h, a.tiles_w, a.T, plane, i0, j0);
  const index_t pn = plane / a.C, pc = plane % a.C;
  const index_t w0h = pair_w0<index_t>(a.second_analysis, i0, a.L, off);
  const index_t w0w = pair_w0<index_t>(a.second_analysis, j0, a.L, off);
  for (int o = tid; o < a.T * a.T; o += kThreads) {
    const int t = o / a.T, u = o % a.T;
    const index_t r = i0 + t, c = j0 + u;
    if (r >= a.Ho || c >= a.Wo) continue;
    acc_t v;
    if (a.second_analysis) {  // slots 2t + m, 2u + n: inside the window, no boundary
      v = acc_t(0);
      for (int m = 0; m < a.L; ++m) {
        const acc_t* line = window + (2 * t + m) * a.R + 2 * u;
        acc_t lo = acc_t(0);
        for (int n = 0; n < a.L; ++n) lo += taps[n] * line[n];
        v += taps[m] * lo;
      }
    } else {
      v = a.g2 * pair_synthesis<acc_t, index_t>(window, index_t(a.R), index_t(1), r, c, w0h, w0w,
                                                 index_t(a.R), index_t(a.R), CoefRead::Window,
                                                 a.L, off, taps);
      if (a.has_c2) v += a.c2 * a.p2[pn * a.s2.n + pc * a.s2.c + r * a.s2.h + c * a.s2.w];
    }
    if (a.step.on()) {
      a.step.store(pn, pc, r, c, v);
    } else {
      a.out[pn * a.so.n + pc * a.so.c + r * a.so.h + c * a.so.w] = v;
    }
  }
}

// One block's work, phase by phase (a barrier after each).
template <typename acc_t, typename index_t, typename Phase>
WAVEFUSE_HD_INLINE void pair_block(const PairArgs<acc_t, index_t>& a, index_t block, acc_t* smem,
                                   Phase&& phase) {
  phase([&](int tid) { load_taps(a.filters, a.L, /*reverse=*/true, tid, smem); });
  phase([&](int tid) { pair_stage1_band(a, block, tid, smem); });
  phase([&](int tid) { pair_stage1(a, block, tid, smem); });
  phase([&](int tid) { pair_stage2(a, block, tid, smem); });
}

}  // namespace cuda_dwt
}  // namespace wavefuse
