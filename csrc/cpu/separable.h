// Separable one-level 2-D wavelet machinery shared by the CPU kernels (csrc/cpu/*.cpp).
//
// Two building blocks, each a plan (geometry and taps, built once per call) plus a block function
// that a parallel task runs on its own buffers (a Work):
//
//   split  (R, n) -> 4 bands   "extend by an index map, then correlate at stride 2 along W and H"
//          analysis (dwt2d): analysis index map, taps reversed (PyWavelets convolves)
//          adjoint of synthesis (idwt2d_adjoint): synthesis index map, taps as stored
//   merge  4 bands -> (R, n)   "the transpose: overlap-add at stride 2, then fold by the index map"
//          adjoint of analysis (dwt2d_adjoint): analysis index map, taps reversed
//          synthesis (idwt2d): synthesis index map, taps as stored
//
// The adjoint of a split is the merge with the same map and taps, so the adjoints are exact
// transposes: for non-periodic modes the boundary extension folds back onto the signal. Both work
// on blocks of kRowBlock output rows of one plane; both are gathers (every output value is summed
// by the one task that owns it, in a fixed order): deterministic, no atomics. Half types load into
// float and accumulate in float (at::opmath_type); float64 stays float64.
//
// Everything here sits in an anonymous namespace: each translation unit gets its own copy, so
// the per-ISA clones of the task functions that include it (WAVEFUSE_SIMD_CLONES) never mix.

#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <array>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common.h"

namespace wavefuse {
namespace {

using at::Tensor;

// Output rows per split task: the L - 2 halo rows cost (L - 2) / 2B extra row filtering.
constexpr int64_t kRowBlock = 32;

// ---- index maps --------------------------------------------------------------------------------

// Analysis: extended position t in [0, 2K + L - 2) reads signal index map[t] (-1: zero).
std::vector<int64_t> analysis_map(int64_t n, int64_t L, Mode mode) {
  const int64_t k = analysis_length<int64_t>(n, L, mode);
  std::vector<int64_t> map(2 * k + L - 2);
  for (int64_t t = 0; t < static_cast<int64_t>(map.size()); ++t) {
    map[t] = mode == Mode::Periodization ? periodization_index<int64_t>(t - L / 2 + 1, n)
                                         : extend_index<int64_t>(mode, t + 2 - L, n);
  }
  return map;
}

// Synthesis from M coefficients: full overlap-add position t in [0, 2M + L - 2) lands on output
// sample map[t] (-1: cropped), output length synthesis_length(M).
std::vector<int64_t> synthesis_map(int64_t m, int64_t L, Mode mode) {
  const int64_t n = synthesis_length<int64_t>(m, L, mode);
  std::vector<int64_t> map(2 * m + L - 2);
  for (int64_t t = 0; t < static_cast<int64_t>(map.size()); ++t) {
    if (mode == Mode::Periodization) {
      map[t] = floor_mod<int64_t>(t - L / 2 + 1, 2 * m);
    } else {
      const int64_t s = t - (L - 2);
      map[t] = (s >= 0 && s < n) ? s : -1;
    }
  }
  return map;
}

// ---- layout: the same rule as wavefuse/ops/_common.py ------------------------------------------

bool channels_last_like(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) == 1 || x.is_contiguous()) return false;
  for (int d = 2; d < 4; ++d) {
    if (x.size(d) > 1 && x.stride(1) >= x.stride(d)) return false;
  }
  return true;
}

// Outputs of this size and up get transparent huge pages (2 MiB) where the kernel offers them on
// request (/sys/kernel/mm/transparent_hugepage/enabled = madvise, a common default). Such buffers
// come fresh from mmap on every call (glibc maps anything over 32 MiB, and smaller blocks once the
// heap was trimmed), and faulting them in 4 KiB at a time cost more than the transform itself:
// db4 on 128x64x32x32, one level, 44 ms of CPU time per call with 4 KiB pages, 25 ms with huge
// pages, 20 ms with no faults at all (2026-11-23, 2-core EPYC VM, Linux 6.18). PyTorch does the
// same for all its allocations under THP_MEM_ALLOC_ENABLE=1; this asks only for our own outputs.
constexpr int64_t kHugePageBytes = int64_t{2} << 20;
constexpr int64_t kAdviseHugePagesMinBytes = int64_t{4} << 20;

// Advice only: the 2 MiB-aligned interior of t's storage; a failure (no THP, an old kernel) or an
// already faulted-in block (reused heap memory) just keeps 4 KiB pages.
void advise_huge_pages(const Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t bytes = static_cast<int64_t>(t.storage().nbytes());
  if (bytes < kAdviseHugePagesMinBytes) return;
  const auto p = reinterpret_cast<uintptr_t>(t.storage().data());
  const uintptr_t mask = static_cast<uintptr_t>(kHugePageBytes) - 1;
  const uintptr_t lo = (p + mask) & ~mask, hi = (p + static_cast<uintptr_t>(bytes)) & ~mask;
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

Tensor empty_4d(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  const auto fmt = channels_last_like(like) ? at::MemoryFormat::ChannelsLast
                                            : at::MemoryFormat::Contiguous;
  Tensor t = at::empty({n, c, h, w}, like.options().memory_format(fmt));
  advise_huge_pages(t);
  return t;
}

// (N, C, 3, h, w), band-major so that each band is itself contiguous or channels_last.
Tensor empty_bands(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  const bool cl = channels_last_like(like);
  Tensor t = cl ? at::empty({3, n, h, w, c}, like.options())
                : at::empty({3, n, c, h, w}, like.options());
  advise_huge_pages(t);
  return cl ? t.permute({1, 4, 0, 2, 3}) : t.permute({1, 2, 0, 3, 4});
}

// ---- strided 4-D views -------------------------------------------------------------------------

template <typename T>
struct View4 {  // element (n, c, i, j) of an (N, C, H, W) tensor with arbitrary strides
  T* data;
  int64_t sn, sc, sh, sw;
  T* plane(int64_t p, int64_t channels) const { return data + (p / channels) * sn + (p % channels) * sc; }
};

template <typename T>
View4<T> view4(const Tensor& t) {
  // data_ptr() (untyped) serves const and non-const T alike; dtype was checked by the dispatch.
  return {static_cast<T*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// The four bands as [column band a][row band b]: ll = (lo, lo), cH = (hi along H, lo along W),
// cV = (lo, hi), cD = (hi, hi) -- PyWavelets' order cH, cV, cD in hi[:, :, 0..2].
template <typename T>
std::array<std::array<View4<T>, 2>, 2> band_views(const Tensor& ll, const Tensor& hi) {
  return {{{view4<T>(ll), view4<T>(hi.select(2, 1))},
           {view4<T>(hi.select(2, 0)), view4<T>(hi.select(2, 2))}}};
}

template <typename acc_t>
std::array<std::vector<acc_t>, 2> taps_as(const Tensor& filters, bool reversed) {
  const Tensor f = filters.to(at::kDouble).contiguous();
  const int64_t L = f.size(1);
  const double* p = static_cast<const double*>(f.data_ptr());
  std::array<std::vector<acc_t>, 2> out{std::vector<acc_t>(L), std::vector<acc_t>(L)};
  for (int b = 0; b < 2; ++b) {
    for (int64_t m = 0; m < L; ++m) {
      out[b][m] = static_cast<acc_t>(p[b * L + (reversed ? L - 1 - m : m)]);
    }
  }
  return out;
}

// ---- vector loops ------------------------------------------------------------------------------
// Each parallel task runs in one function per scalar type that GCC and Clang also compile for
// x86-64-v3 (AVX2), chosen once per task by the CPU at load time (the portable build itself
// targets baseline x86-64). setup.py turns FMA contraction off, so both round identically. Everything a task calls in its inner loops is force-inlined into that
// function, so it is compiled for the chosen ISA; tap counts are template parameters of short
// chunks, so the tap loops unroll, accumulators stay in registers and the coefficient loop
// vectorises.

#if defined(__x86_64__) && defined(__GNUC__)
#define WAVEFUSE_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define WAVEFUSE_INLINE __attribute__((always_inline)) inline
#else
#define WAVEFUSE_SIMD_CLONES
#define WAVEFUSE_INLINE inline
#endif

// Work buffers start on a cache line. A 32-byte vector at an address that is 16 mod 32 spans two
// lines, and every load and store of such a buffer pays for both: malloc's 16-byte alignment made
// the plane-vector loops (planes.h) about 25% slower than the same loops on 64-byte-aligned buffers
// (db4 symmetric, one level on 32 x 32 planes, standalone loop), and hf_penalty forward + backward,
// db4 J=3 on 128x64x32x32, went 20.9 -> 18.9 ms (symmetric) and 14.3 -> 12.9 ms (periodization)
// with these buffers (2026-12-04, 2-core Zen 4 EPYC VM).
template <typename T>
struct LineAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  LineAligned() = default;
  template <typename U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const LineAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAligned<U>&) const { return false; }
};
template <typename T>
using Buffer = std::vector<T, LineAligned<T>>;

// Copies and zero fills of short rows, inline. Written as plain loops (or std::copy / std::fill),
// GCC turns each into a memmove / memset call (-ftree-loop-distribute-patterns), and on rows of
// tens of values the call and its size dispatch cost more than the copy: db4 on 32 x 32 planes
// spent 8% of all samples in __memmove_avx_unaligned_erms (perf, 2026-11-23). Explicit 32-byte
// vectors (GCC/Clang vector extensions: two SSE moves in the baseline clone, one AVX move in the
// AVX2 clone) keep them in the loop; a row of at least one vector ends with an overlapping vector.
#if defined(__GNUC__)
template <typename T>
struct Vec32 {
  static constexpr int64_t kLanes = 32 / sizeof(T);
  typedef T type __attribute__((vector_size(32), aligned(alignof(T)), may_alias));
};

template <typename T>
WAVEFUSE_INLINE void copy_span(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  using V = typename Vec32<T>::type;
  constexpr int64_t lanes = Vec32<T>::kLanes;
  if (n < lanes) {
    for (int64_t k = 0; k < n; ++k) {
      dst[k] = src[k];
      __asm__("" : "+r"(k));
    }
    return;
  }
  for (int64_t k = 0; k + lanes <= n; k += lanes) {
    *reinterpret_cast<V*>(dst + k) = *reinterpret_cast<const V*>(src + k);
    __asm__("" : "+r"(k));  // an opaque index: the loop is not recognised as a memmove
  }
  if (n % lanes != 0) {
    *reinterpret_cast<V*>(dst + n - lanes) = *reinterpret_cast<const V*>(src + n - lanes);
  }
}

template <typename T>
WAVEFUSE_INLINE void zero_span(T* dst, int64_t n) {
  using V = typename Vec32<T>::type;
  constexpr int64_t lanes = Vec32<T>::kLanes;
  if (n < lanes) {
    for (int64_t k = 0; k < n; ++k) {
      dst[k] = T(0);
      __asm__("" : "+r"(k));
    }
    return;
  }
  const V zero = {};
  for (int64_t k = 0; k + lanes <= n; k += lanes) {
    *reinterpret_cast<V*>(dst + k) = zero;
    __asm__("" : "+r"(k));  // an opaque index: the loop is not recognised as a memset
  }
  if (n % lanes != 0) *reinterpret_cast<V*>(dst + n - lanes) = zero;
}
#else
template <typename T>
WAVEFUSE_INLINE void copy_span(T* dst, const T* src, int64_t n) {
  std::copy(src, src + n, dst);
}
template <typename T>
WAVEFUSE_INLINE void zero_span(T* dst, int64_t n) {
  std::fill(dst, dst + n, T(0));
}
#endif

// Phase pairs per chunk of a correlation, coefficient rows per chunk of a merge gather: enough
// loads in flight per output vector, few enough registers.
constexpr int kRowChunk = 4;
constexpr int kGatherChunk = 4;

// out0[k] (+)= sum_q c[4q] e[k + q s] + c[4q + 1] o[k + q s];
// out1[k] (+)= sum_q c[4q + 2] e[k + q s] + c[4q + 3] o[k + q s]   (s: the shift per pair)
template <int Q, bool First, typename T>
WAVEFUSE_INLINE void phases_chunk(T* __restrict__ out0, T* __restrict__ out1, const T* e,
                                  const T* o, int64_t shift, const T* __restrict__ coef,
                                  int64_t n) {
  T c[4 * Q];
  const T* __restrict__ eq[Q];
  const T* __restrict__ oq[Q];
  for (int i = 0; i < 4 * Q; ++i) c[i] = coef[i];
  for (int q = 0; q < Q; ++q) eq[q] = e + q * shift, oq[q] = o + q * shift;
  for (int64_t k = 0; k < n; ++k) {
    T a0 = First ? T(0) : out0[k], a1 = First ? T(0) : out1[k];
    for (int q = 0; q < Q; ++q) {
      a0 += c[4 * q] * eq[q][k] + c[4 * q + 1] * oq[q][k];
      a1 += c[4 * q + 2] * eq[q][k] + c[4 * q + 3] * oq[q][k];
    }
    out0[k] = a0;
    out1[k] = a1;
  }
}

// The full sum over q < pairs, in chunks of at most kRowChunk pairs (coef holds 4 per pair). With
// shift 1 this correlates one row's even and odd phases; with shift = a row stride, it correlates
// whole blocks of rows at once (the column pass), as one long vector loop.
template <typename T>
WAVEFUSE_INLINE void correlate_phases(T* out0, T* out1, const T* e, const T* o, int64_t shift,
                                      const T* coef, int64_t pairs, int64_t n) {
  for (int64_t q0 = 0; q0 < pairs; q0 += kRowChunk) {
    const int64_t q = std::min<int64_t>(kRowChunk, pairs - q0);
    const T *eq = e + q0 * shift, *oq = o + q0 * shift, *cq = coef + 4 * q0;
#define WAVEFUSE_PHASES(Q)                                                \
  (q0 == 0 ? phases_chunk<Q, true>(out0, out1, eq, oq, shift, cq, n)      \
           : phases_chunk<Q, false>(out0, out1, eq, oq, shift, cq, n))
    switch (q) {
      case 1: WAVEFUSE_PHASES(1); break;
      case 2: WAVEFUSE_PHASES(2); break;
      case 3: WAVEFUSE_PHASES(3); break;
      default: WAVEFUSE_PHASES(4); break;
    }
#undef WAVEFUSE_PHASES
  }
}

// out[k] (+)= sum_e w[2e] p0[e][k] + w[2e + 1] p1[e][k]: one output row gathered from the
// coefficient rows that reach it (the merge's column pass).
template <int E, bool First, typename T>
WAVEFUSE_INLINE void gather_chunk(T* __restrict__ out, const T* const* p0, const T* const* p1,
                                  const T* __restrict__ w, int64_t n) {
  T c[2 * E];
  const T* __restrict__ r0[E];
  const T* __restrict__ r1[E];
  for (int e = 0; e < E; ++e) c[2 * e] = w[2 * e], c[2 * e + 1] = w[2 * e + 1], r0[e] = p0[e], r1[e] = p1[e];
  for (int64_t k = 0; k < n; ++k) {
    T a = First ? T(0) : out[k];
    for (int e = 0; e < E; ++e) a += c[2 * e] * r0[e][k] + c[2 * e + 1] * r1[e][k];
    out[k] = a;
  }
}

template <typename T>
WAVEFUSE_INLINE void gather_rows(T* out, const T* const* p0, const T* const* p1, const T* w,
                                 int64_t count, int64_t n) {
  if (count == 0) {
    zero_span(out, n);
    return;
  }
  for (int64_t e0 = 0; e0 < count; e0 += kGatherChunk) {
    const int64_t e = std::min<int64_t>(kGatherChunk, count - e0);
    const T *const *q0 = p0 + e0, *const *q1 = p1 + e0, *we = w + 2 * e0;
#define WAVEFUSE_GATHER(E) \
  (e0 == 0 ? gather_chunk<E, true>(out, q0, q1, we, n) : gather_chunk<E, false>(out, q0, q1, we, n))
    switch (e) {
      case 1: WAVEFUSE_GATHER(1); break;
      case 2: WAVEFUSE_GATHER(2); break;
      case 3: WAVEFUSE_GATHER(3); break;
      default: WAVEFUSE_GATHER(4); break;
    }
#undef WAVEFUSE_GATHER
  }
}

// dst[k * sw] = src[k], converting to the storage type.
template <typename S, typename T>
WAVEFUSE_INLINE void store_row(S* __restrict__ dst, int64_t sw, const T* __restrict__ src,
                               int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    if (sw == 1) {
      copy_span(dst, src, n);
      return;
    }
  }
  if (sw == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<S>(src[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * sw] = static_cast<S>(src[k]);
  }
}

template <typename S, typename T>
WAVEFUSE_INLINE void load_row(T* __restrict__ dst, const S* __restrict__ src, int64_t sw,
                              int64_t n) {
  if constexpr (std::is_same_v<S, T>) {
    if (sw == 1) {
      copy_span(dst, src, n);
      return;
    }
  }
  if (sw == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<T>(src[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<T>(src[k * sw]);
  }
}

// ---- split: extend + stride-2 correlation along W, then H --------------------------------------

// Element offsets (index * stride) of the even and odd phases of an extended row, with a 0/1 mask
// for zero padding (offset 0, mask 0): the row gather is then a select, branch-free. [j0, j1) is the longest
// run where the map is a plain shift, map[t] = t + shift (the interior, away from the boundary):
// there, a unit-stride row is read (or written) directly.
struct PhaseMap {
  std::vector<int64_t> off_even, off_odd;
  std::vector<uint8_t> keep_even, keep_odd;
  int64_t j0 = 0, j1 = 0, shift = 0;
};

PhaseMap phase_map(const std::vector<int64_t>& map, int64_t stride) {
  const int64_t half = static_cast<int64_t>(map.size()) / 2;
  PhaseMap pm{std::vector<int64_t>(half), std::vector<int64_t>(half), std::vector<uint8_t>(half),
              std::vector<uint8_t>(half)};
  int64_t run_start = 0, run_shift = 0;
  bool in_run = false;
  for (int64_t j = 0; j < half; ++j) {
    const int64_t e = map[2 * j], o = map[2 * j + 1];
    pm.off_even[j] = e < 0 ? 0 : e * stride;
    pm.off_odd[j] = o < 0 ? 0 : o * stride;
    pm.keep_even[j] = e >= 0;
    pm.keep_odd[j] = o >= 0;
    const bool shifted = e >= 0 && o == e + 1;
    if (shifted && in_run && e - 2 * j == run_shift) {
      // the run goes on
    } else if (shifted) {
      in_run = true, run_start = j, run_shift = e - 2 * j;
    } else {
      in_run = false;
    }
    if (in_run && j + 1 - run_start > pm.j1 - pm.j0) {
      pm.j0 = run_start, pm.j1 = j + 1, pm.shift = run_shift;
    }
  }
  return pm;
}

// even[j] = src[2j], odd[j] = src[2j + 1] for j < n, and the transpose (interleaved store).
template <typename T>
WAVEFUSE_INLINE void deinterleave(const T* __restrict__ src, T* __restrict__ even, T* __restrict__ odd,
                              int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    even[j] = src[2 * j];
    odd[j] = src[2 * j + 1];
  }
}
template <typename T>
WAVEFUSE_INLINE void interleave_store(T* __restrict__ dst, const T* __restrict__ even,
                                      const T* __restrict__ odd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    dst[2 * j] = even[j];
    dst[2 * j + 1] = odd[j];
  }
}
// Gather one extended row into its even and odd phases (acc_t), from a row with element stride
// pm's. Unit-stride float/double rows copy their interior directly.
template <typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void gather_phases(const scalar_t* row, const PhaseMap& pm, bool unit_stride, acc_t* even,
                          acc_t* odd) {
  const int64_t half = static_cast<int64_t>(pm.off_even.size());
  int64_t lo = 0, hi = 0;  // the part done directly
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (unit_stride && pm.j1 > pm.j0) {
      lo = pm.j0, hi = pm.j1;
      deinterleave(row + 2 * lo + pm.shift, even + lo, odd + lo, hi - lo);
    }
  }
  for (int64_t j = 0; j < half; ++j) {
    if (j == lo && hi > lo) j = hi;
    if (j >= half) break;
    // a select, not a multiply by the mask: zero padding next to an inf sample stays 0
    const acc_t e = static_cast<acc_t>(row[pm.off_even[j]]);
    const acc_t o = static_cast<acc_t>(row[pm.off_odd[j]]);
    even[j] = pm.keep_even[j] ? e : acc_t(0);
    odd[j] = pm.keep_odd[j] ? o : acc_t(0);
  }
}

// The transpose of gather_phases for merge, into a fresh row: out[0, W) = 0, then
// out[map[2j]] += even[j], out[map[2j + 1]] += odd[j] -- computed without a read-modify-write of
// the row. The interior run (map = a shift: out[2j + shift] = even[j], out[2j + 1 + shift] =
// odd[j], j0 <= j < j1) is stored in one pass at the end; a boundary tap that lands inside the run
// is added into the phase value it lands on first (even and odd are the caller's scratch), one
// outside it into out, zeroed first. Every sample gets the same sums in the same order (its run
// value, then its taps in increasing j). Nothing is read from out before it is written, so out
// may be the destination row itself (merge_block's ``dest``). Before, every merged row was
// zeroed, accumulated into and copied out (19% of the band_energy backward's samples, db4
// periodization J=3, 16x3x224x224); and adding the boundary taps into the stored run read back
// values still in the store buffer (6% of the samples in symmetric mode; perf, 2026-12-04).
template <typename acc_t>
WAVEFUSE_INLINE void fold_phases_into(acc_t* out, int64_t W, const std::vector<int64_t>& map,
                                      const PhaseMap& pm, acc_t* even, acc_t* odd) {
  const int64_t half = static_cast<int64_t>(pm.off_even.size());
  const bool run = pm.j1 > pm.j0;
  const int64_t a = run ? 2 * pm.j0 + pm.shift : 0, b = run ? 2 * pm.j1 + pm.shift : 0;
  zero_span(out, a);
  zero_span(out + b, W - b);
  auto add = [&](int64_t c, acc_t v) {
    if (c < 0) return;
    if (c >= a && c < b) {  // inside the run: into the phase value stored there
      const int64_t rel = c - pm.shift;
      (rel % 2 == 0 ? even : odd)[rel / 2] += v;
    } else {
      out[c] += v;
    }
  };
  for (int64_t j = 0; j < half; ++j) {
    if (j == pm.j0 && run) j = pm.j1;
    if (j >= half) break;
    add(map[2 * j], even[j]);
    add(map[2 * j + 1], odd[j]);
  }
  if (run) interleave_store(out + a, even + pm.j0, odd + pm.j0, pm.j1 - pm.j0);
}

// ---- split: one level of analysis, as plan (geometry and taps) + block function ---------------

// Everything about one split level that does not depend on the data: the taps arranged for the
// correlations, the row map along H and the phase map along W (for a given element stride).
template <typename acc_t>
struct SplitPlan {
  std::vector<acc_t> coef;  // per phase pair q: t0[2q], t0[2q + 1], t1[2q], t1[2q + 1]
  std::vector<int64_t> map_h;
  PhaseMap pw;
  int64_t L, Kh, Kw;
};

template <typename acc_t>
SplitPlan<acc_t> split_plan(const std::array<std::vector<acc_t>, 2>& taps,
                            std::vector<int64_t> map_h, const std::vector<int64_t>& map_w,
                            int64_t sw, int64_t Kh, int64_t Kw) {
  const int64_t L = static_cast<int64_t>(taps[0].size());
  SplitPlan<acc_t> plan{{}, std::move(map_h), phase_map(map_w, sw), L, Kh, Kw};
  for (int64_t q = 0; q < L / 2; ++q) {
    plan.coef.insert(plan.coef.end(),
                     {taps[0][2 * q], taps[0][2 * q + 1], taps[1][2 * q], taps[1][2 * q + 1]});
  }
  return plan;
}

// A thread's buffers for split_block. Rows of every buffer have the same stride
// S = Kw + L/2 - 1 (the length of an extended row's phases), so each pass is one long vector loop
// over a whole block; the last L/2 - 1 outputs of each buffer row are don't-cares.
template <typename acc_t>
struct SplitWork {
  int64_t S, slots;
  Buffer<acc_t> pe, po, rows, cols;
  explicit SplitWork(const SplitPlan<acc_t>& plan)
      : S(plan.Kw + plan.L / 2 - 1),
        slots(2 * (kRowBlock + plan.L / 2 - 1)),
        pe(slots * S + plan.L / 2, acc_t(0)),
        po(slots * S + plan.L / 2, acc_t(0)),
        rows(2 * slots * S),
        cols(2 * kRowBlock * S) {}
};

// Output rows [i0, i0 + n) (n <= kRowBlock) of one plane whose row i is src + i * sh (element
// stride: the plan's). For each row band b, sink(b, c0, c1, S) receives the n rows of bands
// (a = 0, b) and (a = 1, b) at c0 + i * S and c1 + i * S (Kw valid values each).
//   1. gather the block's extended rows 2*i0 + r (r < 2n + L - 2), split into even and odd
//      phases, even rows first: slot r/2 for even r, (n + L/2 - 1) + r/2 for odd r;
//   2. row pass: lo/hi along W of every slot at once, correlating the phases at shift 1;
//   3. column pass, for each row band b: output row i takes rows 2i + 2q (even slot i + q) and
//      2i + 2q + 1 (odd slot i + q), the same correlation at shift S.
template <typename S_t, typename acc_t, typename Sink>
WAVEFUSE_INLINE void split_block(const SplitPlan<acc_t>& plan, SplitWork<acc_t>& w,
                                 const S_t* src, int64_t sh, bool unit_stride, int64_t i0,
                                 int64_t n, Sink&& sink) {
  const int64_t L = plan.L, P = L / 2 - 1, S = w.S;
  const int64_t half = n + P, nrows = 2 * half;  // slots per parity, extended rows
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t slot = (r % 2) * half + r / 2;
    acc_t* e = w.pe.data() + slot * S;
    acc_t* o = w.po.data() + slot * S;
    const int64_t sr = plan.map_h[2 * i0 + r];
    if (sr < 0) {
      zero_span(e, S);
      zero_span(o, S);
    } else {
      gather_phases(src + sr * sh, plan.pw, unit_stride, e, o);
    }
  }
  acc_t* lo = w.rows.data();
  acc_t* hi = w.rows.data() + w.slots * S;
  correlate_phases(lo, hi, w.pe.data(), w.po.data(), 1, plan.coef.data(), L / 2, nrows * S);
  for (int b = 0; b < 2; ++b) {
    const acc_t* band = b == 0 ? lo : hi;
    acc_t* c0 = w.cols.data();
    acc_t* c1 = w.cols.data() + kRowBlock * S;
    correlate_phases(c0, c1, band, band + half * S, S, plan.coef.data(), L / 2, n * S);
    sink(b, static_cast<const acc_t*>(c0), static_cast<const acc_t*>(c1), S);
  }
}

// One whole analysis level of one plane (split_block over its row blocks), for the cascades of
// hf_penalty.cpp and pgd_step.cpp: src (element type S_t) row i at src + i * sh. The
// approximation goes to ll (contiguous, h[j + 1] x w[j + 1]) when ll is not null; the detail bands
// go to detail(band, i, row) (band 0..2 = cH, cV, cD; row: w[j + 1] values of row i).
template <typename S_t, typename acc_t, typename Detail>
WAVEFUSE_INLINE void split_level(const SplitPlan<acc_t>& plan, SplitWork<acc_t>& work,
                                 const S_t* src, int64_t sh, bool unit, acc_t* ll,
                                 Detail&& detail) {
  const int64_t Kw = plan.Kw;
  for (int64_t i0 = 0; i0 < plan.Kh; i0 += kRowBlock) {
    const int64_t n = std::min(plan.Kh, i0 + kRowBlock) - i0;
    split_block(plan, work, src, sh, unit, i0, n,
                [&](int b, const acc_t* c0, const acc_t* c1, int64_t S) {
                  for (int64_t i = 0; i < n; ++i) {
                    if (b == 0) {  // (lo, lo) = LL and (hi, lo) = cH
                      if (ll != nullptr) std::copy(c0 + i * S, c0 + i * S + Kw, ll + (i0 + i) * Kw);
                      detail(0, i0 + i, c1 + i * S);
                    } else {  // (lo, hi) = cV and (hi, hi) = cD
                      detail(1, i0 + i, c0 + i * S);
                      detail(2, i0 + i, c1 + i * S);
                    }
                  }
                });
  }
}

// ---- merge: the transpose of split, as a gather --------------------------------------------------

// The column pass of a merge as a sparse matrix, one row per output row r: the coefficient rows i
// that reach r and their weights, w0 for column band a = 0 and w1 for a = 1, summed over every
// extended position t = 2i + m with map[t] = r (the boundary fold). CSR: entries
// [start[r], start[r + 1]).
template <typename acc_t>
struct ColumnOperator {
  std::vector<int64_t> start, row;
  std::vector<acc_t> w;  // per entry: w0, w1
  // Rows [ra, rb) are interior: reached from the single extended position t = r - shift only,
  // by all L/2 taps of t's parity (coefficient rows (t - m) / 2, all in range). There the column
  // pass is a plain correlation over the coefficient rows, done for many rows at once.
  int64_t ra = 0, rb = 0, shift = 0;
};

template <typename acc_t>
ColumnOperator<acc_t> column_operator(const std::vector<int64_t>& map, int64_t H, int64_t K,
                                      const std::array<std::vector<acc_t>, 2>& taps) {
  const int64_t L = static_cast<int64_t>(taps[0].size());
  std::vector<std::vector<std::tuple<int64_t, acc_t, acc_t>>> by_row(H);
  for (int64_t t = 0; t < static_cast<int64_t>(map.size()); ++t) {
    if (map[t] < 0) continue;
    for (int64_t m = t % 2; m < L; m += 2) {
      const int64_t i = (t - m) / 2;
      if (i >= 0 && i < K) by_row[map[t]].emplace_back(i, taps[0][m], taps[1][m]);
    }
  }
  ColumnOperator<acc_t> op;
  op.start.push_back(0);
  for (auto& entries : by_row) {
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    for (const auto& [i, w0, w1] : entries) {
      if (static_cast<int64_t>(op.row.size()) > op.start.back() && op.row.back() == i) {
        op.w[op.w.size() - 2] += w0, op.w.back() += w1;
      } else {
        op.row.push_back(i), op.w.push_back(w0), op.w.push_back(w1);
      }
    }
    op.start.push_back(static_cast<int64_t>(op.row.size()));
  }
  const int64_t T = static_cast<int64_t>(map.size());
  if (map[T / 2] < 0) return op;
  op.shift = map[T / 2] - T / 2;
  auto interior = [&](int64_t r) {
    const int64_t t = r - op.shift;
    if (t < 0 || t >= T || map[t] != r || op.start[r + 1] - op.start[r] != L / 2) return false;
    for (int64_t m = t % 2, e = op.start[r + 1] - 1; m < L; m += 2, --e) {  // rows ascend in e
      if (op.row[e] != (t - m) / 2 || op.w[2 * e] != taps[0][m] || op.w[2 * e + 1] != taps[1][m]) {
        return false;
      }
    }
    return true;
  };
  for (int64_t r = 0, run = 0; r < H; ++r) {  // the longest run of interior rows
    run = interior(r) ? run + 1 : 0;
    if (run > op.rb - op.ra) op.ra = r + 1 - run, op.rb = r + 1;
  }
  return op;
}

template <typename acc_t>
struct MergePlan {
  ColumnOperator<acc_t> cols;
  std::vector<acc_t> row_coef;  // per shift s: t0[2(P - s)], t1[2(P - s)], t0[2(P - s) + 1], ...
  std::vector<acc_t> col_coef;  // per pair q: t0[2q], t1[2q], t0[2q + 1], t1[2q + 1]
  std::vector<int64_t> map_w;
  PhaseMap pw;
  int64_t L, Kh, Kw, H, W;
};

template <typename acc_t>
MergePlan<acc_t> merge_plan(const std::array<std::vector<acc_t>, 2>& taps,
                            const std::vector<int64_t>& map_h, std::vector<int64_t> map_w,
                            int64_t Kh, int64_t Kw, int64_t H, int64_t W) {
  const int64_t L = static_cast<int64_t>(taps[0].size()), P = L / 2 - 1;
  MergePlan<acc_t> plan{column_operator(map_h, H, Kh, taps), {}, {}, std::move(map_w), {},
                        L, Kh, Kw, H, W};
  plan.pw = phase_map(plan.map_w, 1);  // offsets into the (contiguous) accumulation line
  for (int64_t q = 0; q <= P; ++q) {  // shift q of the padded rows carries taps 2(P - q) (+1)
    const int64_t m = 2 * (P - q);
    plan.row_coef.insert(plan.row_coef.end(),
                         {taps[0][m], taps[1][m], taps[0][m + 1], taps[1][m + 1]});
    plan.col_coef.insert(plan.col_coef.end(),
                         {taps[0][2 * q], taps[1][2 * q], taps[0][2 * q + 1], taps[1][2 * q + 1]});
  }
  return plan;
}

template <typename acc_t>
struct MergeWork {
  int64_t S;  // row stride of the padded R_b rows
  Buffer<acc_t> r_lo, r_hi, even, odd, line, t_even, t_odd;
  std::vector<const acc_t*> p0, p1;
  explicit MergeWork(const MergePlan<acc_t>& plan)
      : S(plan.Kw + plan.L - 2),
        r_lo(kRowBlock * S + plan.L / 2, acc_t(0)),
        r_hi(kRowBlock * S + plan.L / 2, acc_t(0)),
        even(kRowBlock * S),
        odd(kRowBlock * S),
        line(plan.W),
        t_even((kRowBlock / 2 + 2) * plan.Kw),
        t_odd((kRowBlock / 2 + 2) * plan.Kw) {}
};

// The coefficient rows a merge block reads, [first, last) over all rows r in [r0, r1).
template <typename acc_t>
std::pair<int64_t, int64_t> merge_rows_needed(const MergePlan<acc_t>& plan, int64_t r0,
                                              int64_t r1) {
  const auto& cols = plan.cols;
  const int64_t e0 = cols.start[r0], e1 = cols.start[r1];
  if (e1 == e0) return {0, 0};
  const auto [lo, hi] = std::minmax_element(cols.row.begin() + e0, cols.row.begin() + e1);
  return {*lo, *hi + 1};
}

// Output rows [r0, r1) (at most kRowBlock) of one plane, from bands (a, b) (index 2a + b) whose
// row i is base[2a + b] + (i - first) * rs[2a + b] (acc_t, unit stride along W). sink(r, line)
// receives each output row (W values). Output row r: the column pass gathers both row bands R_b
// (b = lo, hi) from the coefficient rows that reach r (interior rows all at once: R(t = 2j) =
// sum_q t_a[2q] G_a[j - q], R(2j + 1) with taps 2q + 1, a correlation over the coefficient rows at
// a shift of one row); the row pass is the same correlation as split's, on R_b padded with
// P = L/2 - 1 zeros each side: even[j] = sum_q t0[2q] R_lo[j - q] + t1[2q] R_hi[j - q] (odd: taps
// 2q + 1), j < Kw + P; the extended row (even, odd) then folds into the output row by the index
// map along W.
// dest(r): where row r's W values may be written directly (acc_t, contiguous), or nullptr: then
// the row is folded into the work line and handed to sink (which stores it wherever it goes).
template <typename acc_t, typename Dest, typename Sink>
WAVEFUSE_INLINE void merge_block(const MergePlan<acc_t>& plan, MergeWork<acc_t>& w,
                                 const acc_t* const* base, const int64_t* rs, int64_t first,
                                 int64_t r0, int64_t r1, Dest&& dest, Sink&& sink) {
  const auto& cols = plan.cols;
  const int64_t L = plan.L, Kw = plan.Kw, P = L / 2 - 1, S = w.S;
  if (cols.start[r1] == cols.start[r0]) {  // no coefficient reaches these rows
    zero_span(w.line.data(), plan.W);
    for (int64_t r = r0; r < r1; ++r) {
      acc_t* out = dest(r);
      if (out != nullptr) {
        zero_span(out, plan.W);
      } else {
        sink(r, static_cast<const acc_t*>(w.line.data()));
      }
    }
    return;
  }
  auto row_of = [&](int ab, int64_t i) { return base[ab] + (i - first) * rs[ab]; };
  // column pass, interior rows [ia, ib) of the block at once (when rows are packed)
  int64_t ia = std::max(r0, cols.ra), ib = std::min(r1, cols.rb);
  const bool packed = rs[0] == Kw && rs[1] == Kw && rs[2] == Kw && rs[3] == Kw;
  if (!packed || ib - ia < 2) ia = ib = r0;
  if (ib > ia) {
    const int64_t ja = (ia - cols.shift) / 2, jb = (ib - 1 - cols.shift) / 2 + 1;
    for (int b = 0; b < 2; ++b) {
      correlate_phases(w.t_even.data(), w.t_odd.data(), row_of(b, ja), row_of(2 + b, ja), -Kw,
                       plan.col_coef.data(), L / 2, (jb - ja) * Kw);
      acc_t* dst = (b == 0 ? w.r_lo : w.r_hi).data() + P;
      for (int64_t r = ia; r < ib; ++r) {
        const int64_t t = r - cols.shift;
        const acc_t* src = (t % 2 == 0 ? w.t_even : w.t_odd).data() + (t / 2 - ja) * Kw;
        copy_span(dst + (r - r0) * S, src, Kw);
      }
    }
  }
  for (int64_t r = r0; r < r1; ++r) {  // column pass, the other rows: gathers by the CSR
    if (r == ia && ib > ia) r = ib;
    if (r >= r1) break;
    const int64_t f0 = cols.start[r], count = cols.start[r + 1] - f0;
    w.p0.resize(count), w.p1.resize(count);
    for (int b = 0; b < 2; ++b) {
      for (int64_t e = 0; e < count; ++e) {
        w.p0[e] = row_of(b, cols.row[f0 + e]);
        w.p1[e] = row_of(2 + b, cols.row[f0 + e]);
      }
      acc_t* dst = (b == 0 ? w.r_lo : w.r_hi).data() + (r - r0) * S + P;
      gather_rows(dst, w.p0.data(), w.p1.data(), cols.w.data() + 2 * f0, count, Kw);
    }
  }
  // row pass for the whole block at once; row j's phases are even/odd[j * S + t], t < Kw + P
  correlate_phases(w.even.data(), w.odd.data(), w.r_lo.data(), w.r_hi.data(), 1,
                   plan.row_coef.data(), L / 2, (r1 - r0) * S);
  for (int64_t r = r0; r < r1; ++r) {
    acc_t* out = dest(r);
    acc_t* line = out != nullptr ? out : w.line.data();
    fold_phases_into(line, plan.W, plan.map_w, plan.pw, w.even.data() + (r - r0) * S,
                     w.odd.data() + (r - r0) * S);
    if (out == nullptr) sink(r, static_cast<const acc_t*>(line));
  }
}

// merge_block with every row through sink.
template <typename acc_t, typename Sink>
WAVEFUSE_INLINE void merge_block(const MergePlan<acc_t>& plan, MergeWork<acc_t>& w,
                                 const acc_t* const* base, const int64_t* rs, int64_t first,
                                 int64_t r0, int64_t r1, Sink&& sink) {
  merge_block(plan, w, base, rs, first, r0, r1, [](int64_t) { return static_cast<acc_t*>(nullptr); },
              sink);
}

// ---- argument checks shared by the ops ------------------------------------------------------------

inline void check_filters(const Tensor& filters) {
  TORCH_CHECK(filters.dim() == 2 && filters.size(0) == 2 && filters.size(1) >= 2 &&
                  filters.size(1) % 2 == 0,
              "wavefuse: filters must be (2, L) with even L >= 2, got ", filters.sizes());
}

inline void check_input(const Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, "wavefuse: ", name, " must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "wavefuse: ", name, " must be a CPU tensor");
}

}  // namespace
}  // namespace wavefuse
