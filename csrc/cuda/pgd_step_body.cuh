// Per-thread bodies of the CUDA PGD-step kernels (csrc/cuda/pgd_step.cu) and their launch
// geometry. Contract: wavefuse/ops/pgd_step.py; semantics: reference.pgd_step_ref (torchattacks
// 3.5.1's PGD / PGDL2 update, op for op, in the compute type acc_t: float for float16, bfloat16
// and float32 data, double for float64; half types rounded once at the store).
//
//   Linf  x' = x_adv + alpha * sign(g);  delta = clamp(x' - x, -eps, eps);  x_adv = clamp(x + delta, lo, hi)
//   L2    g' = g / (||g||_2 + 1e-10) per sample;  x' = x_adv + alpha * g';  delta = x' - x;
//         delta *= min((1 / ||delta||_2) * eps, 1) per sample (1 where ||delta|| = 0);
//         x_adv = clamp(x + delta, lo, hi)
//
// wavelet_pgd_step with the Haar bank (filter and step fused: haar_step_*) is the last section;
// its maths, geometry and phases are described there.
//
// A NaN gradient entry propagates (sign(NaN) is NaN here, not torch's 0), and every clamp keeps a
// NaN input (comparisons with NaN are false, so it passes both selects), as the CPU kernel and
// kernels/pgd_step.py do.
//
// Why a header of plain functions: as dwt_body.cuh, everything here is __host__ __device__
// (WAVEFUSE_HOST_DEVICE) and uses CUDA intrinsics only under __CUDA_ARCH__, so it compiles as
// plain C++17 with g++: tests/cuda_pgd_emulation_harness.cpp runs these bodies block by block and
// phase by phase over the grid that pgd_step.cu computes with the same geometry functions. The
// kernels only read blockIdx/threadIdx and call the phases with __syncthreads() between them.
//
// Geometry.
//   Linf: one flat 1-D grid over the N * M elements (M = C * H * W) in x_adv's memory order;
//     block b covers kLinfBlockElems consecutive elements, thread t the elements
//     b * kLinfBlockElems + k * kThreads + t (k < kLinfItems): a warp touches consecutive
//     elements, coalesced when the tensors are dense.
//   L2: each sample's M elements are cut into P <= kMaxPartials chunks of `chunk` elements (a
//     multiple of kThreads); block (n, p) = n * P + p. Three launches, no atomics, no host sync:
//     (1) partial sums of g^2 per (sample, chunk); (2) each block first reduces its sample's P
//     g^2 partials (the same tree in every block, so every block gets the same ||g||) and writes
//     the partial sums of delta^2 of its chunk; (3) each block reduces both sets of partials of its
//     sample and writes its chunk of x_adv. Within a block a thread sums its own elements in index
//     order, then a shared-memory tree (kThreads / 2, ..., 1; one barrier per level) sums the
//     threads' values: the order of every sum is fixed by the geometry, so repeated calls agree
//     bit for bit. Norms accumulate in acc_t (as kernels/pgd_step.py; the CPU kernel uses double).
//
// Rounding. The update's divisions and square roots are the correctly rounded ones and its
// products and sums are rounded separately (mul_rn / add_rn / div_rn / sqrt_rn below use
// __fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn and their double forms on the device: nvcc would
// otherwise contract x_adv + alpha * g' and x + delta * factor into FMAs), so the update is the
// reference's op for op: Linf bit for bit in every dtype, L2 up to the norms' summation order.
// The sums of squares (acc + d * d) may contract: their order differs from torch's anyway.
//
// Addressing: element r of sample n in memory order (NCHW, or NHWC when x_adv is channels_last).
// Flat (every tensor dense in that order): the offset is n * M + r in all three. Otherwise the
// coordinates (c, h, w) are computed and each tensor is addressed through its own strides.
// index_t is int32_t when every offset (and N * M) stays below 2^30, else int64_t (the host
// chooses).

#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"
#include "haar_body.cuh"  // the Haar step's padded-signal map and tile origin (cuda_haar::)
#include "step_math.cuh"  // the update's arithmetic, linf_value, Bound

namespace wavefuse {
namespace cuda_pgd {

// Threads per block (both norms); a power of two (the block tree halves it).
constexpr int kThreads = 256;
// Linf: elements per thread (a block covers kLinfBlockElems consecutive elements).
constexpr int kLinfItems = 4;
constexpr int kLinfBlockElems = kThreads * kLinfItems;
// L2: at most this many chunks (partial sums) per sample; <= kThreads, so one block loads all
// partials of a sample with one element per thread.
constexpr int kMaxPartials = 256;
static_assert(kMaxPartials <= kThreads, "one partial per thread in the sample reduction");
static_assert((kThreads & (kThreads - 1)) == 0, "the block tree needs a power of two");
// Shared memory of an L2 block, in acc_t: [0, kThreads) the sample's g^2 partials,
// [kThreads, 2 kThreads) the chunk's (kernels 1 and 2) or the sample's delta^2 partials (3).
constexpr int kL2Smem = 2 * kThreads;
// torchattacks PGDL2's eps_for_division.
constexpr double kL2Eps = 1e-10;

// Half types compute in float32, float64 in float64 (at::opmath_type without ATen).
template <typename scalar_t>
struct StepAcc {
  using type = float;
};
template <>
struct StepAcc<double> {
  using type = double;
};

// L2: x_adv + alpha * (g / denom), before the projection.
template <typename acc_t>
WAVEFUSE_PGD_INLINE acc_t l2_moved_value(acc_t xa, acc_t g, acc_t alpha, acc_t denom) {
  return add_rn(xa, mul_rn(alpha, div_rn(g, denom)));
}

// ---- kernel arguments ----------------------------------------------------------------------------

using wavefuse::Strides4;  // common.h

// What every step kernel reads: the three tensors and the four bounds.
template <typename scalar_t, typename index_t>
struct StepTensors {
  using acc_t = typename StepAcc<scalar_t>::type;
  scalar_t* xa;
  const scalar_t* g;
  const scalar_t* x;
  Strides4<index_t> sa, sg, sx;  // (n, c, h, w) strides, in elements
  Bound<acc_t, index_t> eps, alpha, lo, hi;
};

template <typename scalar_t, typename index_t>
struct StepArgs : StepTensors<scalar_t, index_t> {
  using acc_t = typename StepAcc<scalar_t>::type;
  index_t total;  // N * M
  index_t M, C, HW, W;
  bool cl;      // memory order NHWC (x_adv channels_last), else NCHW
  bool need_c;  // some bound varies along C: the channel is needed even on the flat path
  // L2 only: P partials per sample of `chunk` elements; pg, pd: (N, P) partial sums
  index_t P, chunk;
  acc_t* pg;
  acc_t* pd;
};

// ---- launch geometry (host) ----------------------------------------------------------------------

struct LinfGeometry {
  int64_t blocks;
};

inline LinfGeometry linf_geometry(int64_t total) {
  return {(total + kLinfBlockElems - 1) / kLinfBlockElems};
}

struct L2Geometry {
  int64_t chunk, parts, blocks;  // blocks = N * parts, one per (sample, chunk)
};

// The smallest multiple of kThreads that cuts M elements into at most kMaxPartials chunks.
inline L2Geometry l2_geometry(int64_t N, int64_t M) {
  const int64_t per = (M + kMaxPartials - 1) / kMaxPartials;
  const int64_t chunk = kThreads * ((per + kThreads - 1) / kThreads);
  const int64_t parts = (M + chunk - 1) / chunk;
  return {chunk, parts, N * parts};
}

// ---- addressing ----------------------------------------------------------------------------------

// Offsets of element r of sample n in x_adv, grad and x_nat, and its channel (computed when not
// Flat or when a bound needs it; 0 otherwise).
template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void locate(const StepArgs<scalar_t, index_t>& a, index_t n, index_t r,
                                index_t& c, index_t& oa, index_t& og, index_t& ox) {
  c = 0;
  if (Flat) {
    oa = og = ox = n * a.M + r;
    if (a.need_c) c = a.cl ? r % a.C : r / a.HW;
    return;
  }
  index_t h, w;
  if (a.cl) {  // r = (h * W + w) * C + c
    c = r % a.C;
    const index_t hw = r / a.C;
    h = hw / a.W;
    w = hw % a.W;
  } else {  // r = c * HW + h * W + w
    c = r / a.HW;
    const index_t hw = r % a.HW;
    h = hw / a.W;
    w = hw % a.W;
  }
  oa = n * a.sa.n + c * a.sa.c + h * a.sa.h + w * a.sa.w;
  og = n * a.sg.n + c * a.sg.c + h * a.sg.h + w * a.sg.w;
  ox = n * a.sx.n + c * a.sx.c + h * a.sx.h + w * a.sx.w;
}

// ---- Linf: one elementwise pass ------------------------------------------------------------------

template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void linf_thread(const StepArgs<scalar_t, index_t>& a, index_t block,
                                     int tid) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const index_t base = block * kLinfBlockElems + tid;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int k = 0; k < kLinfItems; ++k) {
    const index_t idx = base + k * kThreads;
    if (idx >= a.total) return;
    const index_t n = idx / a.M, r = idx % a.M;
    index_t c, oa, og, ox;
    locate<Flat>(a, n, r, c, oa, og, ox);
    const acc_t eps = a.eps.at(n, c), alpha = a.alpha.at(n, c);
    const acc_t lo = a.lo.at(n, c), hi = a.hi.at(n, c);
    const acc_t xv = static_cast<acc_t>(a.x[ox]);
    const acc_t g = static_cast<acc_t>(a.g[og]);
    a.xa[oa] = static_cast<scalar_t>(
        linf_value(static_cast<acc_t>(a.xa[oa]), xv, g, alpha, eps, lo, hi));
  }
}

// ---- L2: block-level reductions (shared memory as an explicit pointer) ---------------------------

// One level of the block tree: v[t] += v[t + s] for t < s. Run for s = kThreads / 2, ..., 1
// with a barrier after each level; v[0] then holds the sum of v[0, kThreads) in a fixed order.
template <typename acc_t>
WAVEFUSE_PGD_INLINE void tree_level(acc_t* v, int tid, int s) {
  if (tid < s) v[tid] = v[tid] + v[tid + s];
}

// Phase: the P partials of sample n into v[0, kThreads) (zeros past P).
template <typename acc_t, typename index_t>
WAVEFUSE_PGD_INLINE void load_sample_partials(const acc_t* part, index_t n, index_t P, int tid,
                                              acc_t* v) {
  v[tid] = static_cast<index_t>(tid) < P ? part[n * P + tid] : acc_t(0);
}

// Phase: thread 0 stores the block's sum v[0] as partial `block`.
template <typename acc_t, typename index_t>
WAVEFUSE_PGD_INLINE void store_partial(acc_t* part, index_t block, int tid, const acc_t* v) {
  if (tid == 0) part[block] = v[0];
}

// ||g|| + 1e-10 from the reduced g^2 sum (torchattacks' eps_for_division).
template <typename acc_t>
WAVEFUSE_PGD_INLINE acc_t l2_denominator(acc_t sum_g2) {
  return add_rn(sqrt_rn(sum_g2), static_cast<acc_t>(kL2Eps));
}

// min((1 / ||delta||) * eps, 1), NaN kept, 1 where ||delta|| = 0 (torchattacks: eps / norm as
// reciprocal * eps; the reference keeps a zero delta's factor at 1 instead of 0 * inf = NaN).
template <typename acc_t>
WAVEFUSE_PGD_INLINE acc_t l2_factor(acc_t sum_d2, acc_t eps) {
  const acc_t dn = sqrt_rn(sum_d2);
  if (dn == acc_t(0)) return acc_t(1);
  const acc_t q = mul_rn(div_rn(acc_t(1), dn), eps);
  return q != q ? q : (q < acc_t(1) ? q : acc_t(1));
}

// x_adv + alpha * (g / denom) at element r of sample n; also x_nat there, x_adv's offset and the
// channel.
template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE typename StepAcc<scalar_t>::type l2_moved(
    const StepArgs<scalar_t, index_t>& a, index_t n, index_t r,
    typename StepAcc<scalar_t>::type denom, typename StepAcc<scalar_t>::type& xv, index_t& oa,
    index_t& c) {
  using acc_t = typename StepAcc<scalar_t>::type;
  index_t og, ox;
  locate<Flat>(a, n, r, c, oa, og, ox);
  const acc_t alpha = a.alpha.at(n, c);
  xv = static_cast<acc_t>(a.x[ox]);
  const acc_t g = static_cast<acc_t>(a.g[og]);
  return l2_moved_value(static_cast<acc_t>(a.xa[oa]), g, alpha, denom);
}

// The range of sample positions of thread tid in block (n, p): r = p * chunk + i * kThreads + tid.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void l2_block(const StepArgs<scalar_t, index_t>& a, index_t block,
                                  index_t& n, index_t& r0, index_t& r1) {
  n = block / a.P;
  r0 = (block % a.P) * a.chunk;
  r1 = r0 + a.chunk < a.M ? r0 + a.chunk : a.M;
}

// Kernel 1, phase 1: the thread's sum of g^2 over its elements of the chunk into v[tid].
template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void l2_grad_squares(const StepArgs<scalar_t, index_t>& a, index_t block,
                                         int tid, typename StepAcc<scalar_t>::type* v) {
  using acc_t = typename StepAcc<scalar_t>::type;
  index_t n, r0, r1;
  l2_block(a, block, n, r0, r1);
  acc_t acc = acc_t(0);
#ifdef __CUDA_ARCH__
#pragma unroll 1  // a rolled loop: the division's slow-path call then spills nothing
#endif
  for (index_t r = r0 + tid; r < r1; r += kThreads) {
    index_t c, oa, og, ox;
    locate<Flat>(a, n, r, c, oa, og, ox);
    const acc_t g = static_cast<acc_t>(a.g[og]);
    acc += g * g;
  }
  v[tid] = acc;
}

// Kernel 2, after the sample's g^2 partials are reduced into sg[0]: the thread's sum of delta^2
// (delta = x_adv + alpha * g / denom - x) into v[tid].
template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void l2_delta_squares(const StepArgs<scalar_t, index_t>& a, index_t block,
                                          int tid, const typename StepAcc<scalar_t>::type* sg,
                                          typename StepAcc<scalar_t>::type* v) {
  using acc_t = typename StepAcc<scalar_t>::type;
  index_t n, r0, r1;
  l2_block(a, block, n, r0, r1);
  const acc_t denom = l2_denominator(sg[0]);
  acc_t acc = acc_t(0);
#ifdef __CUDA_ARCH__
#pragma unroll 1  // a rolled loop: the division's slow-path call then spills nothing
#endif
  for (index_t r = r0 + tid; r < r1; r += kThreads) {
    acc_t xv = acc_t(0);
    index_t oa, c;
    const acc_t moved = l2_moved<Flat>(a, n, r, denom, xv, oa, c);  // sets xv: a statement
    const acc_t d = add_rn(moved, -xv);
    acc += d * d;
  }
  v[tid] = acc;
}

// Kernel 3, after both sets of partials are reduced (sg[0]: g^2, sd[0]: delta^2 of the sample):
// x_adv = clamp(x + delta * factor, lo, hi) over the thread's elements of the chunk.
template <bool Flat, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void l2_update(const StepArgs<scalar_t, index_t>& a, index_t block, int tid,
                                   const typename StepAcc<scalar_t>::type* sg,
                                   const typename StepAcc<scalar_t>::type* sd) {
  using acc_t = typename StepAcc<scalar_t>::type;
  index_t n, r0, r1;
  l2_block(a, block, n, r0, r1);
  const acc_t denom = l2_denominator(sg[0]);
  const acc_t factor = l2_factor(sd[0], a.eps.at(n, 0));
#ifdef __CUDA_ARCH__
#pragma unroll 1  // a rolled loop: the division's slow-path call then spills nothing
#endif
  for (index_t r = r0 + tid; r < r1; r += kThreads) {
    acc_t xv = acc_t(0);
    index_t oa, c;
    const acc_t moved = l2_moved<Flat>(a, n, r, denom, xv, oa, c);  // sets xv: a statement
    const acc_t delta = add_rn(moved, -xv);
    const acc_t lo = a.lo.at(n, c), hi = a.hi.at(n, c);
    a.xa[oa] = static_cast<scalar_t>(clamp_keep_nan(add_rn(xv, mul_rn(delta, factor)), lo, hi));
  }
}

// ---- wavelet_pgd_step, Haar: the filter and the step fused (pgd_step.cu's haar_step_kernel) ----
//
// g' = idwt(scale_hf(dwt(g))) for the orthonormal Haar bank, as kernels/haar.py's
// _haar_pgd_kernel: on the padded signal x^ (g through the per-axis copy map pi of haar_body.cuh,
// cuda_haar::pad_source, valid in every mode) the pyramid is plain and orthonormal, and
//   g' = c_0 x^ + sum_{1 <= j <= J} c_j M_j x^,   c_0 = s_1, c_j = s_{j+1} - s_j, c_J = 1 - s_J,
// M_j the mean of every aligned 2^j x 2^j block. g' at a real sample needs only its own 2^J x 2^J
// block of x^, so an S x S tile of the padded grid (S = cuda_haar::haar_side(J) = max(2^J, 32), a
// multiple of 2^J) is computed alone, without halo:
//   load   (phase 0)   the tile of x^ into shared memory through pi, in acc_t (m_0);
//   mean   (phase j)   m_j = the 2 x 2 means of m_{j-1} (shared memory, levels 1..J; mean
//                      pyramid laid out level after level, haar_pyramid_offset);
//   tile   (last)      per real sample of the tile g' = (((c_J m_J + c_{J-1} m_{J-1}) + ...) +
//                      c_0 m_0) at its block of each level, then the stage: the Linf update;
//                      or the thread's sum of g'^2; or of delta^2; or the L2 update.
// Every product and sum of the filter is rounded separately (mul_rn / add_rn: no FMA), so the
// host emulation computes the device's bits; the 0.25 of a mean is exact.
//
// Blocks: (sample n, slot s) = n * P + s; slot s handles the tiles t = s, s + P, ... < Q of its
// sample (Q = C * tiles per plane, tile t in plane c = t / tiles, column tiles fastest:
// cuda_haar::haar_tile_origin). Linf: P = Q (one tile per block, one launch). L2: P =
// min(Q, kMaxPartials), three launches of the same kernel (Stage): (1) per (sample, slot)
// partial sums of g'^2, (2) each block reduces its sample's g'^2 partials (load_sample_partials +
// the block tree), then partial sums of delta^2, (3) each block reduces both and writes. Each
// launch recomputes g' from grad (no g' buffer). A thread sums its samples in (tile, element)
// order, then the block tree: fixed order, no atomics, bitwise repeatable.
//
// Shared memory (dynamic, acc_t): the pyramid, 4 (S^2 - (S >> J)^2) / 3 + (S >> J)^2 elements
// (5,461 at S = 64: 42.7 KiB in double, under the 48 KiB a block gets without opting in), at
// least kL2Smem (the reductions reuse it between tiles).

// The stages of a fused wavelet step (the Haar kernel's and the separable kernel's launches).
constexpr int kFusedLinf = 0;
constexpr int kFusedL2Grad = 1;
constexpr int kFusedL2Delta = 2;
constexpr int kFusedL2Update = 3;

// What a fused stage does with the filtered gradient g at one element (x_adv at xa, x_nat xv):
// the Linf update; or add g^2, or delta^2, to the thread's sum acc; or the L2 update.
template <int Stage, typename scalar_t, typename acc_t>
WAVEFUSE_PGD_INLINE void fused_stage_element(scalar_t* xa, acc_t xv, acc_t g, acc_t alpha,
                                             acc_t eps, acc_t lo, acc_t hi, acc_t denom,
                                             acc_t factor, acc_t& acc) {
  if (Stage == kFusedL2Grad) {
    acc += g * g;
    return;
  }
  const acc_t xav = static_cast<acc_t>(*xa);
  if (Stage == kFusedLinf) {
    *xa = static_cast<scalar_t>(linf_value(xav, xv, g, alpha, eps, lo, hi));
    return;
  }
  const acc_t delta = add_rn(l2_moved_value(xav, g, alpha, denom), -xv);
  if (Stage == kFusedL2Delta) {
    acc += delta * delta;
  } else {
    *xa = static_cast<scalar_t>(clamp_keep_nan(add_rn(xv, mul_rn(delta, factor)), lo, hi));
  }
}

template <typename scalar_t, typename index_t>
struct HaarStepArgs : StepTensors<scalar_t, index_t> {
  using acc_t = typename StepAcc<scalar_t>::type;
  acc_t coef[cuda_haar::kHaarMaxLevels + 1];  // c_0 .. c_J
  index_t C, H, W;
  index_t tiles_h, tiles_w;  // S x S tiles per plane, per axis
  index_t Q, P;              // tiles per sample (C * tiles_h * tiles_w); slots per sample
  int levels, side_log2;     // J; log2(S)
  Mode mode;
  acc_t* pg;  // L2: (N, P) partial sums of g'^2, then of delta^2
  acc_t* pd;
};

// c_j of g' = sum_j c_j M_j x^ from hf_scale s[0, levels) (host): c_0 = s_1, c_j = s_{j+1} - s_j,
// c_J = 1 - s_J, each difference in double, rounded once to acc_t by the caller.
inline double haar_step_coefficient(const double* hf_scale, int levels, int j) {
  const double above = j < levels ? hf_scale[j] : 1.0, below = j > 0 ? hf_scale[j - 1] : 0.0;
  return above - below;
}

// Offset of level j of the mean pyramid in shared memory: sum_{i<j} (S >> i)^2 (exact: S a
// power of two, 4^j - 1 a multiple of 3).
WAVEFUSE_PGD_INLINE int haar_pyramid_offset(int side, int j) {
  const int s = side >> j;
  return (side * side - s * s) / 3 * 4;
}

struct HaarStepGeometry {
  int64_t tiles_h, tiles_w, Q, P, blocks;  // blocks = N * P
  int side, side_log2;
  int64_t smem_elems;  // dynamic shared memory, in acc_t elements
};

// 1 <= levels <= cuda_haar::kHaarMaxLevels (the host falls back to the composition beyond).
inline HaarStepGeometry haar_step_geometry(int64_t N, int64_t C, int64_t H, int64_t W,
                                           int levels, bool l2) {
  const int S = cuda_haar::haar_side(levels);
  int lg = 0;
  while ((1 << lg) < S) ++lg;
  const int64_t hp = cuda_haar::haar_length<int64_t>(H, levels) << levels;
  const int64_t wp = cuda_haar::haar_length<int64_t>(W, levels) << levels;
  const int64_t th = (hp + S - 1) / S, tw = (wp + S - 1) / S;
  const int64_t Q = C * th * tw;
  const int64_t P = l2 && Q > kMaxPartials ? kMaxPartials : Q;
  const int64_t pyramid = haar_pyramid_offset(S, levels) + (S >> levels) * (S >> levels);
  return {th, tw, Q, P, N * P, S, lg, pyramid > kL2Smem ? pyramid : kL2Smem};
}

// Phase 0 of a tile: x^ on tile t of sample n into sm[0, S^2) (row-major), through pi.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void haar_step_load(const HaarStepArgs<scalar_t, index_t>& a, index_t n,
                                        index_t t, int tid,
                                        typename StepAcc<scalar_t>::type* sm) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int lg = a.side_log2, S = 1 << lg;
  index_t c, r0, c0;
  cuda_haar::haar_tile_origin<index_t>(t, a.tiles_h, a.tiles_w, static_cast<index_t>(S), c, r0,
                                       c0);
  const scalar_t* src = a.g + n * a.sg.n + c * a.sg.c;
  for (int e = tid; e < S * S; e += kThreads) {
    const index_t row = cuda_haar::pad_source<index_t>(a.mode, r0 + (e >> lg), a.H, a.levels);
    const index_t col = cuda_haar::pad_source<index_t>(a.mode, c0 + (e & (S - 1)), a.W, a.levels);
    sm[e] = (row >= 0 && col >= 0) ? static_cast<acc_t>(src[row * a.sg.h + col * a.sg.w])
                                   : acc_t(0);
  }
}

// Phase j (1 <= j <= levels): m_j, the 2 x 2 means of m_{j-1}.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void haar_step_mean(const HaarStepArgs<scalar_t, index_t>& a, int j, int tid,
                                        typename StepAcc<scalar_t>::type* sm) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int S = 1 << a.side_log2;
  const int in_side = S >> (j - 1), out_lg = a.side_log2 - j;
  const acc_t* in = sm + haar_pyramid_offset(S, j - 1);
  acc_t* out = sm + haar_pyramid_offset(S, j);
  for (int e = tid; e < (1 << (2 * out_lg)); e += kThreads) {
    const acc_t* top = in + 2 * (e >> out_lg) * in_side + 2 * (e & ((1 << out_lg) - 1));
    const acc_t sum = add_rn(add_rn(top[0], top[1]), add_rn(top[in_side], top[in_side + 1]));
    out[e] = mul_rn(sum, acc_t(0.25));
  }
}

// g' at tile element (row, col) from the pyramid: coarse to fine.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE typename StepAcc<scalar_t>::type haar_step_filtered(
    const HaarStepArgs<scalar_t, index_t>& a, const typename StepAcc<scalar_t>::type* sm, int row,
    int col) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int lg = a.side_log2, S = 1 << lg, J = a.levels;
  // A zero coefficient (equal scales at two levels) is an absent term: skipped, never 0 * inf.
  acc_t v = a.coef[J] == acc_t(0)
                ? acc_t(0)
                : mul_rn(a.coef[J], sm[haar_pyramid_offset(S, J) + ((row >> J) << (lg - J)) +
                                       (col >> J)]);
  for (int j = J - 1; j >= 0; --j) {
    if (a.coef[j] == acc_t(0)) continue;
    const acc_t m = sm[haar_pyramid_offset(S, j) + ((row >> j) << (lg - j)) + (col >> j)];
    v = add_rn(v, mul_rn(a.coef[j], m));
  }
  return v;
}

// L2 launches 2 and 3 of a fused step (Args: HaarStepArgs or SepStepArgs), first phase: the
// sample's g'^2 partials into sm[0, kThreads) and (launch 3) its delta^2 partials into
// sm[kThreads, 2 kThreads); the block tree follows.
template <int Stage, typename Args, typename index_t, typename acc_t>
WAVEFUSE_PGD_INLINE void fused_load_partials(const Args& a, index_t n, int tid, acc_t* sm) {
  load_sample_partials(a.pg, n, a.P, tid, sm);
  if (Stage == kFusedL2Update) load_sample_partials(a.pd, n, a.P, tid, sm + kThreads);
}

// After the tree: the sample's ||g'|| + 1e-10 and (launch 3) projection factor, per thread.
template <int Stage, typename Args, typename index_t, typename acc_t>
WAVEFUSE_PGD_INLINE void fused_norms(const Args& a, index_t n, const acc_t* sm, acc_t& denom,
                                     acc_t& factor) {
  denom = l2_denominator(sm[0]);
  factor = Stage == kFusedL2Update ? l2_factor(sm[kThreads], a.eps.at(n, 0)) : acc_t(1);
}

// The last phase of a tile: g' at the thread's real samples of tile t of sample n, then Stage.
// acc: the thread's running sum (g'^2 or delta^2) over its tiles.
template <int Stage, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void haar_step_tile(const HaarStepArgs<scalar_t, index_t>& a, index_t n,
                                        index_t t, int tid,
                                        const typename StepAcc<scalar_t>::type* sm,
                                        typename StepAcc<scalar_t>::type denom,
                                        typename StepAcc<scalar_t>::type factor,
                                        typename StepAcc<scalar_t>::type& acc) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int lg = a.side_log2, S = 1 << lg;
  index_t c, r0, c0;
  cuda_haar::haar_tile_origin<index_t>(t, a.tiles_h, a.tiles_w, static_cast<index_t>(S), c, r0,
                                       c0);
  const acc_t alpha = a.alpha.at(n, c), lo = a.lo.at(n, c), hi = a.hi.at(n, c);
  const acc_t eps = Stage == kFusedLinf ? a.eps.at(n, c) : acc_t(0);
  scalar_t* xa = a.xa + n * a.sa.n + c * a.sa.c;
  const scalar_t* xn = a.x + n * a.sx.n + c * a.sx.c;
#ifdef __CUDA_ARCH__
#pragma unroll 1  // rolled, as the plain L2 loops: the division's slow path spills nothing
#endif
  for (int e = tid; e < S * S; e += kThreads) {
    const int row = e >> lg, col = e & (S - 1);
    const index_t p = r0 + row, q = c0 + col;
    if (p >= a.H || q >= a.W) continue;
    const acc_t g = haar_step_filtered(a, sm, row, col);
    const acc_t xv = Stage == kFusedL2Grad ? acc_t(0)
                                           : static_cast<acc_t>(xn[p * a.sx.h + q * a.sx.w]);
    fused_stage_element<Stage>(xa + p * a.sa.h + q * a.sa.w, xv, g, alpha, eps, lo, hi, denom,
                               factor, acc);
  }
}

// ---- wavelet_pgd_step, other banks on small planes: the separable filter and the step fused ----
//
// For planes of at most kSepMaxSide per side, g' = idwt(scale_hf(dwt(g))) of a plane G (H x W)
// is the sum of separable matrix pairs that wavefuse/ops/separable.py builds on the host (from the
// reference's 1-D transforms, every mode; one pair per distinct scale step for a
// perfect-reconstruction bank, cached there):
//   g' = identity * G + sum_{k < K} L_k (G R_k^T),   L_k (H x H, coefficient folded in), R_k^T
//   (W x W), both row-major in acc_t on the device.
// One block per plane (sample n, channel c): every level of the filter at once, no band formed,
// no halo. Phases: load G into shared memory (sm[0, HW)); init: the thread's outputs
// out[i] = identity * G; per pair k, right: T = G R_k^T into sm[HW, 2 HW), then left:
// out[i] += L_k T (a barrier between them and before the next pair's right); then the stage at
// each output, as the Haar kernel's (fused_stage_element). Thread tid owns the elements
// e = tid + i * kThreads (i < kSepItems) of the plane, row-major: where 32 divides W a warp
// reads one row of G (a broadcast) and consecutive columns of R_k^T (coalesced); other widths
// span rows (shared-memory bank conflicts, unmeasured). L_k and R_k^T are read from global memory
// (a few KiB shared by every block: cache-resident). The sums are fma_rn chains in index order:
// the emulation computes the device's bits.
//
// Blocks: (sample n, slot s) = n * P + s, slot s handling the planes c = s, s + P, ... < C.
// Linf: P = C (one plane per block, one launch). L2: P = min(C, kMaxPartials), three launches of
// the same kernel as the Haar step's (g'^2 partials, delta^2 partials, update), each recomputing
// g'. Shared memory (dynamic): 2 HW acc_t, at least kL2Smem; up to 64 KiB (float64, 64 x 64),
// which needs the opt-in above 48 KiB (the host sets it).

// Planes up to this side run the separable kernel (the host falls back to the composition above).
constexpr int kSepMaxSide = 64;
constexpr int kSepItems = (kSepMaxSide * kSepMaxSide + kThreads - 1) / kThreads;

template <typename scalar_t, typename index_t>
struct SepStepArgs : StepTensors<scalar_t, index_t> {
  using acc_t = typename StepAcc<scalar_t>::type;
  const acc_t* left;     // (K, H, H)
  const acc_t* right_t;  // (K, W, W)
  acc_t identity;
  int terms;  // K
  int H, W;   // <= kSepMaxSide
  index_t C, P;
  acc_t* pg;  // L2: (N, P) partial sums of g'^2, then of delta^2
  acc_t* pd;
};

struct SepStepGeometry {
  int64_t P, blocks;   // slots per sample; blocks = N * P
  int64_t smem_elems;  // dynamic shared memory, in acc_t elements
};

inline SepStepGeometry sep_step_geometry(int64_t N, int64_t C, int64_t H, int64_t W, bool l2) {
  const int64_t P = l2 && C > kMaxPartials ? kMaxPartials : C;
  const int64_t smem = 2 * H * W > kL2Smem ? 2 * H * W : kL2Smem;
  return {P, N * P, smem};
}

// Phase: plane c of sample n into sm[0, HW), row-major, in acc_t.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void sep_step_load(const SepStepArgs<scalar_t, index_t>& a, index_t n,
                                       index_t c, int tid, typename StepAcc<scalar_t>::type* sm) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const scalar_t* src = a.g + n * a.sg.n + c * a.sg.c;
  for (int e = tid; e < a.H * a.W; e += kThreads) {
    const index_t h = e / a.W, w = e % a.W;
    sm[e] = static_cast<acc_t>(src[h * a.sg.h + w * a.sg.w]);
  }
}

// Phase: the thread's outputs start as identity * G.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void sep_step_init(const SepStepArgs<scalar_t, index_t>& a, int tid,
                                       const typename StepAcc<scalar_t>::type* sm,
                                       typename StepAcc<scalar_t>::type* out) {
  using acc_t = typename StepAcc<scalar_t>::type;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int i = 0; i < kSepItems; ++i) {
    const int e = tid + i * kThreads;
    out[i] = e < a.H * a.W ? mul_rn(a.identity, sm[e]) : acc_t(0);
  }
}

// Phase: T = G R_k^T into sm[HW, 2 HW) at the thread's elements.
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void sep_step_right(const SepStepArgs<scalar_t, index_t>& a, int k, int tid,
                                        typename StepAcc<scalar_t>::type* sm) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int H = a.H, W = a.W;
  const acc_t* rt = a.right_t + static_cast<int64_t>(k) * W * W;
  for (int e = tid; e < H * W; e += kThreads) {
    const int h = e / W, w = e % W;
    const acc_t* row = sm + h * W;
    acc_t t = acc_t(0);
    for (int v = 0; v < W; ++v) t = fma_rn(row[v], rt[v * W + w], t);
    sm[H * W + e] = t;
  }
}

// Phase: out[i] += (L_k T)[e] at the thread's elements (T in sm[HW, 2 HW)).
template <typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void sep_step_left(const SepStepArgs<scalar_t, index_t>& a, int k, int tid,
                                       const typename StepAcc<scalar_t>::type* sm,
                                       typename StepAcc<scalar_t>::type* out) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int H = a.H, W = a.W;
  const acc_t* l = a.left + static_cast<int64_t>(k) * H * H;
  const acc_t* t = sm + H * W;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int i = 0; i < kSepItems; ++i) {
    const int e = tid + i * kThreads;
    if (e >= H * W) break;
    const int h = e / W, w = e % W;
    acc_t v = out[i];
    for (int u = 0; u < H; ++u) v = fma_rn(l[h * H + u], t[u * W + w], v);
    out[i] = v;
  }
}

// The last phase of a plane: the stage at the thread's elements of plane c of sample n (g' in
// out). acc: the thread's running sum (g'^2 or delta^2) over its planes.
template <int Stage, typename scalar_t, typename index_t>
WAVEFUSE_PGD_INLINE void sep_step_plane(const SepStepArgs<scalar_t, index_t>& a, index_t n,
                                        index_t c, int tid,
                                        const typename StepAcc<scalar_t>::type* out,
                                        typename StepAcc<scalar_t>::type denom,
                                        typename StepAcc<scalar_t>::type factor,
                                        typename StepAcc<scalar_t>::type& acc) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const acc_t alpha = a.alpha.at(n, c), lo = a.lo.at(n, c), hi = a.hi.at(n, c);
  const acc_t eps = Stage == kFusedLinf ? a.eps.at(n, c) : acc_t(0);
  scalar_t* xa = a.xa + n * a.sa.n + c * a.sa.c;
  const scalar_t* xn = a.x + n * a.sx.n + c * a.sx.c;
#ifdef __CUDA_ARCH__
#pragma unroll  // out[] stays in registers only with constant indices
#endif
  for (int i = 0; i < kSepItems; ++i) {
    const int e = tid + i * kThreads;
    if (e >= a.H * a.W) break;
    const index_t h = e / a.W, w = e % a.W;
    const acc_t xv =
        Stage == kFusedL2Grad ? acc_t(0) : static_cast<acc_t>(xn[h * a.sx.h + w * a.sx.w]);
    fused_stage_element<Stage>(xa + h * a.sa.h + w * a.sa.w, xv, out[i], alpha, eps, lo, hi,
                               denom, factor, acc);
  }
}

}  // namespace cuda_pgd
}  // namespace wavefuse
