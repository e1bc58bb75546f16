// CPU kernels of the one-level 2-D DWT family (contract: csrc/ops.cpp).
//
// All four ops are one of two separable kernels, differing only in their index maps and taps:
//
//   split  (R, n) -> 4 bands   "extend by an index map, then correlate at stride 2 along W and H"
//          _dwt2d_kernel:          analysis index map, taps reversed (PyWavelets convolves)
//          _idwt2d_adjoint_kernel: synthesis index map (zero pad / periodic wrap), taps as stored
//   merge  4 bands -> (R, n)   "the transpose: overlap-add at stride 2, then fold by the index map"
//          _dwt2d_adjoint_kernel:  analysis index map, taps reversed
//          _idwt2d_kernel:         synthesis index map, taps as stored
//
// The adjoint of a split is the merge with the same map and taps, so the adjoints are exact
// transposes: for non-periodic modes the boundary extension folds back onto the signal.
//
// split: parallel over (plane, block of output rows). A block row-filters the 2B + L - 2 input rows
// it needs into a thread-local buffer (lo and hi along W, from one gather of each row), then
// column-filters that buffer into all four bands: the input is read once (plus an L - 2 row halo per
// block) and each band written once. Loops run tap-outer, coefficient-inner over contiguous
// buffers (the row is split into even and odd phases first), so the compiler vectorises them.
// merge: parallel over planes; the column overlap-add folds straight into a per-plane row buffer,
// then each row is overlap-added along W and folded into the output row. Everything a plane
// touches is owned by one thread: deterministic, no atomics.
// Half types load into float and accumulate in float (at::opmath_type); float64 stays float64.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <array>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

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

Tensor empty_4d(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  const auto fmt = channels_last_like(like) ? at::MemoryFormat::ChannelsLast
                                            : at::MemoryFormat::Contiguous;
  return at::empty({n, c, h, w}, like.options().memory_format(fmt));
}

// (N, C, 3, h, w), band-major so that each band is itself contiguous or channels_last.
Tensor empty_bands(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (channels_last_like(like)) {
    return at::empty({3, n, h, w, c}, like.options()).permute({1, 4, 0, 2, 3});
  }
  return at::empty({3, n, c, h, w}, like.options()).permute({1, 2, 0, 3, 4});
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
// x86-64-v3 (AVX2 + FMA), chosen once per task by the CPU at load time (the portable build itself
// targets baseline x86-64). Everything a task calls in its inner loops is force-inlined into that
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
    std::fill(out, out + n, T(0));
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
  if (sw == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<S>(src[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * sw] = static_cast<S>(src[k]);
  }
}

template <typename S, typename T>
WAVEFUSE_INLINE void load_row(T* __restrict__ dst, const S* __restrict__ src, int64_t sw,
                              int64_t n) {
  if (sw == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<T>(src[k]);
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<T>(src[k * sw]);
  }
}

// ---- Haar on even sizes: every index map is the identity, one pass over 2 x 2 blocks ---------
// With L = 2 and even H, W no mode extends the signal (PyWavelets' maps are t -> t), so a level is
// a 2 x 2 block transform: split reads each block once and writes its four coefficients; merge is
// its transpose. w[a][m] are the taps as the general kernels would use them.

bool identity_map(const std::vector<int64_t>& map, int64_t n) {
  if (static_cast<int64_t>(map.size()) != n) return false;
  for (int64_t t = 0; t < n; ++t) {
    if (map[t] != t) return false;
  }
  return true;
}

template <typename T>
struct Haar {
  T w00, w01, w10, w11;  // w[a][m]: band a (0 lo, 1 hi), tap m
};

// One output row of the block transform. r0, r1: the two input rows; out: ll, cH, cV, cD.
template <typename S, typename T>
inline void haar_split_row(const S* __restrict__ r0, const S* __restrict__ r1, int64_t sw,
                           S* __restrict__ ll, S* __restrict__ ch, S* __restrict__ cv,
                           S* __restrict__ cd, int64_t so, Haar<T> w, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T a = static_cast<T>(r0[2 * k * sw]), b = static_cast<T>(r0[(2 * k + 1) * sw]);
    const T c = static_cast<T>(r1[2 * k * sw]), d = static_cast<T>(r1[(2 * k + 1) * sw]);
    const T lo0 = w.w00 * a + w.w01 * b, hi0 = w.w10 * a + w.w11 * b;  // along W, top row
    const T lo1 = w.w00 * c + w.w01 * d, hi1 = w.w10 * c + w.w11 * d;  // along W, bottom row
    ll[k * so] = static_cast<S>(w.w00 * lo0 + w.w01 * lo1);
    ch[k * so] = static_cast<S>(w.w10 * lo0 + w.w11 * lo1);
    cv[k * so] = static_cast<S>(w.w00 * hi0 + w.w01 * hi1);
    cd[k * so] = static_cast<S>(w.w10 * hi0 + w.w11 * hi1);
  }
}

template <typename S, typename T>
inline void haar_merge_row(const S* __restrict__ ll, const S* __restrict__ ch,
                           const S* __restrict__ cv, const S* __restrict__ cd, int64_t si,
                           S* __restrict__ r0, S* __restrict__ r1, int64_t sw, Haar<T> w,
                           int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T g00 = static_cast<T>(ll[k * si]), g10 = static_cast<T>(ch[k * si]);
    const T g01 = static_cast<T>(cv[k * si]), g11 = static_cast<T>(cd[k * si]);
    const T lo0 = w.w00 * g00 + w.w10 * g10, lo1 = w.w01 * g00 + w.w11 * g10;  // row band lo
    const T hi0 = w.w00 * g01 + w.w10 * g11, hi1 = w.w01 * g01 + w.w11 * g11;  // row band hi
    r0[2 * k * sw] = static_cast<S>(w.w00 * lo0 + w.w10 * hi0);
    r0[(2 * k + 1) * sw] = static_cast<S>(w.w01 * lo0 + w.w11 * hi0);
    r1[2 * k * sw] = static_cast<S>(w.w00 * lo1 + w.w10 * hi1);
    r1[(2 * k + 1) * sw] = static_cast<S>(w.w01 * lo1 + w.w11 * hi1);
  }
}

// Unit-stride float/double rows: the same loops, in functions that get an AVX2 clone.
WAVEFUSE_SIMD_CLONES void haar_split_unit(const float* r0, const float* r1, float* ll, float* ch,
                                          float* cv, float* cd, Haar<float> w, int64_t n) {
  haar_split_row(r0, r1, 1, ll, ch, cv, cd, 1, w, n);
}
WAVEFUSE_SIMD_CLONES void haar_split_unit(const double* r0, const double* r1, double* ll,
                                          double* ch, double* cv, double* cd, Haar<double> w,
                                          int64_t n) {
  haar_split_row(r0, r1, 1, ll, ch, cv, cd, 1, w, n);
}
WAVEFUSE_SIMD_CLONES void haar_merge_unit(const float* ll, const float* ch, const float* cv,
                                          const float* cd, float* r0, float* r1, Haar<float> w,
                                          int64_t n) {
  haar_merge_row(ll, ch, cv, cd, 1, r0, r1, 1, w, n);
}
WAVEFUSE_SIMD_CLONES void haar_merge_unit(const double* ll, const double* ch, const double* cv,
                                          const double* cd, double* r0, double* r1,
                                          Haar<double> w, int64_t n) {
  haar_merge_row(ll, ch, cv, cd, 1, r0, r1, 1, w, n);
}

template <typename acc_t>
Haar<acc_t> haar_taps(const std::array<std::vector<acc_t>, 2>& taps) {
  return {taps[0][0], taps[0][1], taps[1][0], taps[1][1]};
}

// Parallel over (plane, output row): each task reads two input rows and writes one row per band.
template <typename scalar_t, typename acc_t>
void haar_split(const View4<const scalar_t>& in,
                const std::array<std::array<View4<scalar_t>, 2>, 2>& out, Haar<acc_t> w,
                int64_t C, int64_t planes, int64_t Kh, int64_t Kw) {
  const auto &vl = out[0][0], &vh = out[1][0], &vv = out[0][1], &vd = out[1][1];
  const bool unit = in.sw == 1 && vl.sw == 1 && vh.sw == 1 && vv.sw == 1 && vd.sw == 1;
  at::parallel_for(0, planes * Kh, 16, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / Kh, i = task % Kh;
      const scalar_t* r0 = in.plane(p, C) + 2 * i * in.sh;
      scalar_t* dl = vl.plane(p, C) + i * vl.sh;
      scalar_t* dh = vh.plane(p, C) + i * vh.sh;
      scalar_t* dv = vv.plane(p, C) + i * vv.sh;
      scalar_t* dd = vd.plane(p, C) + i * vd.sh;
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        if (unit) {
          haar_split_unit(r0, r0 + in.sh, dl, dh, dv, dd, w, Kw);
          continue;
        }
      }
      haar_split_row(r0, r0 + in.sh, in.sw, dl, dh, dv, dd, vl.sw, w, Kw);
    }
  });
}

template <typename scalar_t, typename acc_t>
void haar_merge(const std::array<std::array<View4<const scalar_t>, 2>, 2>& in,
                const View4<scalar_t>& out, Haar<acc_t> w, int64_t C, int64_t planes, int64_t Kh,
                int64_t Kw) {
  const auto &gl = in[0][0], &gh = in[1][0], &gv = in[0][1], &gd = in[1][1];
  const bool unit = gl.sw == 1 && out.sw == 1;
  at::parallel_for(0, planes * Kh, 16, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / Kh, i = task % Kh;
      const scalar_t* sl = gl.plane(p, C) + i * gl.sh;
      const scalar_t* sh = gh.plane(p, C) + i * gh.sh;
      const scalar_t* sv = gv.plane(p, C) + i * gv.sh;
      const scalar_t* sd = gd.plane(p, C) + i * gd.sh;
      scalar_t* r0 = out.plane(p, C) + 2 * i * out.sh;
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        if (unit) {
          haar_merge_unit(sl, sh, sv, sd, r0, r0 + out.sh, w, Kw);
          continue;
        }
      }
      haar_merge_row(sl, sh, sv, sd, gl.sw, r0, r0 + out.sh, out.sw, w, Kw);
    }
  });
}

// ---- split: extend + stride-2 correlation along W, then H --------------------------------------

// Element offsets (index * stride) of the even and odd phases of an extended row, with a 0/1 mask
// for zero padding (offset 0, mask 0): the row gather is then branch-free. [j0, j1) is the longest
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

// even[j] = src[2j], odd[j] = src[2j + 1] for j < n, and the transpose (interleaved add).
template <typename T>
WAVEFUSE_INLINE void deinterleave(const T* __restrict__ src, T* __restrict__ even, T* __restrict__ odd,
                              int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    even[j] = src[2 * j];
    odd[j] = src[2 * j + 1];
  }
}
template <typename T>
WAVEFUSE_INLINE void interleave_add(T* __restrict__ dst, const T* __restrict__ even,
                                const T* __restrict__ odd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    dst[2 * j] += even[j];
    dst[2 * j + 1] += odd[j];
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
    even[j] = static_cast<acc_t>(row[pm.off_even[j]]) * acc_t(pm.keep_even[j]);
    odd[j] = static_cast<acc_t>(row[pm.off_odd[j]]) * acc_t(pm.keep_odd[j]);
  }
}

// The transpose of gather_phases for merge: line[map[2j]] += even[j], line[map[2j + 1]] += odd[j].
template <typename acc_t>
WAVEFUSE_INLINE void fold_phases(acc_t* line, const std::vector<int64_t>& map, const PhaseMap& pm,
                        const acc_t* even, const acc_t* odd) {
  const int64_t half = static_cast<int64_t>(pm.off_even.size());
  if (pm.j1 > pm.j0) {
    interleave_add(line + 2 * pm.j0 + pm.shift, even + pm.j0, odd + pm.j0, pm.j1 - pm.j0);
  }
  for (int64_t j = 0; j < half; ++j) {
    if (j == pm.j0 && pm.j1 > pm.j0) j = pm.j1;
    if (j >= half) break;
    const int64_t ce = map[2 * j], co = map[2 * j + 1];
    if (ce >= 0) line[ce] += even[j];
    if (co >= 0) line[co] += odd[j];
  }
}

// Everything a split task reads: the input, the four output bands, the taps arranged for the two
// correlations, the row map along H and the phase map along W.
template <typename scalar_t>
struct SplitArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> in;
  std::array<std::array<View4<scalar_t>, 2>, 2> out;
  std::vector<acc_t> coef;  // per phase pair q: t0[2q], t0[2q + 1], t1[2q], t1[2q + 1]
  const std::vector<int64_t>* map_h;
  PhaseMap pw;
  int64_t L, C, Kh, Kw, blocks;
};

// Tasks [begin, end) of (plane, block of kRowBlock output rows). Rows of every buffer have the
// same stride S = Kw + L/2 - 1 (the length of an extended row's phases), so each pass is one long
// vector loop over the whole block; the last L/2 - 1 outputs of each buffer row are don't-cares.
//   1. gather the block's extended rows 2*i0 + r (r < 2n + L - 2 for n output rows), split into
//      even and odd phases, even rows first: slot r/2 for even r, (n + L/2 - 1) + r/2 for odd r;
//   2. row pass: lo/hi along W of every slot at once, correlating the phases at shift 1;
//   3. column pass, for each row band b: output row i takes rows 2i + 2q (even slot i + q) and
//      2i + 2q + 1 (odd slot i + q), the same correlation at shift S, giving (lo, b) and (hi, b);
//   4. store the Kw valid outputs of each row into the bands.
template <typename scalar_t>
WAVEFUSE_INLINE void split_tasks_impl(const SplitArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = s.L, Kw = s.Kw, P = L / 2 - 1, S = Kw + P;
  const int64_t slots_max = 2 * (kRowBlock + P);
  std::vector<acc_t> pe(slots_max * S + P, acc_t(0)), po(slots_max * S + P, acc_t(0));
  std::vector<acc_t> rows(2 * slots_max * S);  // row pass output: [lo slots | hi slots]
  std::vector<acc_t> cols(2 * kRowBlock * S);  // column pass output: [(lo, b) | (hi, b)]
  for (int64_t task = begin; task < end; ++task) {
    const int64_t p = task / s.blocks, i0 = (task % s.blocks) * kRowBlock;
    const int64_t n = std::min(s.Kh, i0 + kRowBlock) - i0;
    const int64_t half = n + P, nrows = 2 * half;  // slots per parity, extended rows
    const scalar_t* src = s.in.plane(p, s.C);
    for (int64_t r = 0; r < nrows; ++r) {
      const int64_t slot = (r % 2) * half + r / 2;
      acc_t* e = pe.data() + slot * S;
      acc_t* o = po.data() + slot * S;
      const int64_t sr = (*s.map_h)[2 * i0 + r];
      if (sr < 0) {
        std::fill(e, e + S, acc_t(0));
        std::fill(o, o + S, acc_t(0));
      } else {
        gather_phases(src + sr * s.in.sh, s.pw, s.in.sw == 1, e, o);
      }
    }
    acc_t* lo = rows.data();
    acc_t* hi = rows.data() + slots_max * S;
    correlate_phases(lo, hi, pe.data(), po.data(), 1, s.coef.data(), L / 2, nrows * S);
    for (int b = 0; b < 2; ++b) {
      const acc_t* band = b == 0 ? lo : hi;
      acc_t* c0 = cols.data();
      acc_t* c1 = cols.data() + kRowBlock * S;
      correlate_phases(c0, c1, band, band + half * S, S, s.coef.data(), L / 2, n * S);
      const View4<scalar_t>&v0 = s.out[0][b], &v1 = s.out[1][b];
      scalar_t* d0 = v0.plane(p, s.C) + i0 * v0.sh;
      scalar_t* d1 = v1.plane(p, s.C) + i0 * v1.sh;
      for (int64_t i = 0; i < n; ++i) {
        store_row(d0 + i * v0.sh, v0.sw, c0 + i * S, Kw);
        store_row(d1 + i * v1.sh, v1.sw, c1 + i * S, Kw);
      }
    }
  }
}

// One function per scalar type, each with an AVX2 + FMA clone (see "vector loops").
#define WAVEFUSE_TASKS(kind, T)                                                              \
  WAVEFUSE_SIMD_CLONES void kind##_tasks(const kind##Args<T>& s, int64_t begin, int64_t end) { \
    kind##_tasks_impl(s, begin, end);                                                        \
  }
#define Split_tasks_impl split_tasks_impl
WAVEFUSE_TASKS(Split, float)
WAVEFUSE_TASKS(Split, double)
WAVEFUSE_TASKS(Split, at::Half)
WAVEFUSE_TASKS(Split, at::BFloat16)
#undef Split_tasks_impl

template <typename scalar_t>
void split_kernel(const Tensor& x, const std::vector<int64_t>& map_h,
                  const std::vector<int64_t>& map_w, const Tensor& filters, bool reversed,
                  const Tensor& ll, const Tensor& hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = taps_as<acc_t>(filters, reversed);
  const int64_t L = filters.size(1);
  const int64_t C = x.size(1), planes = x.size(0) * x.size(1);
  const int64_t Kh = ll.size(2), Kw = ll.size(3);
  const auto in = view4<const scalar_t>(x);
  const auto out = band_views<scalar_t>(ll, hi);

  if (L == 2 && identity_map(map_h, x.size(2)) && identity_map(map_w, x.size(3))) {
    haar_split(in, out, haar_taps(taps), C, planes, Kh, Kw);
    return;
  }

  SplitArgs<scalar_t> s{in, out, {}, &map_h, phase_map(map_w, in.sw), L, C, Kh, Kw,
                        (Kh + kRowBlock - 1) / kRowBlock};
  for (int64_t q = 0; q < L / 2; ++q) {
    s.coef.insert(s.coef.end(),
                  {taps[0][2 * q], taps[0][2 * q + 1], taps[1][2 * q], taps[1][2 * q + 1]});
  }
  at::parallel_for(0, planes * s.blocks, 1,
                   [&](int64_t begin, int64_t end) { Split_tasks(s, begin, end); });
}

// ---- merge: the transpose of split, as a gather -------------------------------------------------

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
      if (!op.row.empty() && static_cast<int64_t>(op.row.size()) > op.start.back() &&
          op.row.back() == i) {
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

template <typename scalar_t>
struct MergeArgs {
  using acc_t = at::opmath_type<scalar_t>;
  std::array<std::array<View4<const scalar_t>, 2>, 2> in;
  View4<scalar_t> out;
  ColumnOperator<acc_t> cols;
  std::vector<acc_t> row_coef;  // per shift s: t0[2(P - s)], t1[2(P - s)], t0[2(P - s) + 1], ...
  std::vector<acc_t> col_coef;  // per pair q: t0[2q], t1[2q], t0[2q + 1], t1[2q + 1]
  const std::vector<int64_t>* map_w;
  PhaseMap pw;
  int64_t L, C, Kw, H, W, blocks;
};

// Tasks [begin, end) of (plane, block of kRowBlock output rows). Output row r: the column pass
// gathers both row bands R_b (b = lo, hi) from the coefficient rows that reach r (interior rows
// all at once: R(t = 2j) = sum_q t_a[2q] G_a[j - q], R(2j + 1) with taps 2q + 1, a correlation
// over the coefficient rows at a shift of one row); the row pass is the same correlation as
// split's, on R_b padded with P = L/2 - 1 zeros each side:
// even[j] = sum_q t0[2q] R_lo[j - q] + t1[2q] R_hi[j - q] (odd: taps 2q + 1), j < Kw + P; the
// extended row (even, odd) then folds into the output row by the index map along W.
template <typename scalar_t>
WAVEFUSE_INLINE void merge_tasks_impl(const MergeArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = s.L, Kw = s.Kw, P = L / 2 - 1;
  const auto& cols = s.cols;
  const int64_t S = Kw + 2 * P;  // row stride of the padded R_b rows
  std::vector<acc_t> r_lo(kRowBlock * S + P, acc_t(0)), r_hi(kRowBlock * S + P, acc_t(0));
  std::vector<acc_t> even(kRowBlock * S), odd(kRowBlock * S), line(s.W);
  std::vector<acc_t> t_even((kRowBlock / 2 + 2) * Kw), t_odd((kRowBlock / 2 + 2) * Kw);
  std::vector<acc_t> gbuf;  // the block's coefficient rows as acc_t, band-major, when not in place
  std::vector<const acc_t*> p0, p1;
  bool direct = std::is_same_v<scalar_t, acc_t>;
  for (const auto& band : s.in) direct = direct && band[0].sw == 1 && band[1].sw == 1;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t p = task / s.blocks, r0 = (task % s.blocks) * kRowBlock;
    const int64_t r1 = std::min(s.H, r0 + kRowBlock);
    const int64_t e0 = cols.start[r0], e1 = cols.start[r1];
    if (e1 == e0) {  // no coefficient reaches these rows
      std::fill(line.begin(), line.end(), acc_t(0));
      for (int64_t r = r0; r < r1; ++r) {
        store_row(s.out.plane(p, s.C) + r * s.out.sh, s.out.sw, line.data(), s.W);
      }
      continue;
    }
    // Band (a, b) (index 2a + b) row i is at base[2a + b] + (i - first) * rs[2a + b].
    const acc_t* base[4] = {};
    int64_t rs[4] = {}, first = 0;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      if (direct) {
        for (int ab = 0; ab < 4; ++ab) {
          const View4<const scalar_t>& v = s.in[ab / 2][ab % 2];
          base[ab] = v.plane(p, s.C), rs[ab] = v.sh;
        }
      }
    }
    if (!direct) {
      const auto [lo_it, hi_it] = std::minmax_element(cols.row.begin() + e0, cols.row.begin() + e1);
      const int64_t n_rows = *hi_it + 1 - *lo_it;
      first = *lo_it;
      gbuf.resize(4 * n_rows * Kw);
      for (int ab = 0; ab < 4; ++ab) {
        const View4<const scalar_t>& v = s.in[ab / 2][ab % 2];
        base[ab] = gbuf.data() + ab * n_rows * Kw, rs[ab] = Kw;
        for (int64_t i = 0; i < n_rows; ++i) {
          load_row(gbuf.data() + (ab * n_rows + i) * Kw, v.plane(p, s.C) + (first + i) * v.sh,
                   v.sw, Kw);
        }
      }
    }
    auto row_of = [&](int ab, int64_t i) { return base[ab] + (i - first) * rs[ab]; };
    // column pass, interior rows [ia, ib) of the block at once (when rows are packed)
    int64_t ia = std::max(r0, cols.ra), ib = std::min(r1, cols.rb);
    const bool packed = rs[0] == Kw && rs[1] == Kw && rs[2] == Kw && rs[3] == Kw;
    if (!packed || ib - ia < 2) ia = ib = r0;
    if (ib > ia) {
      const int64_t ja = (ia - cols.shift) / 2, jb = (ib - 1 - cols.shift) / 2 + 1;
      for (int b = 0; b < 2; ++b) {
        correlate_phases(t_even.data(), t_odd.data(), row_of(b, ja), row_of(2 + b, ja), -Kw,
                         s.col_coef.data(), L / 2, (jb - ja) * Kw);
        acc_t* dst = (b == 0 ? r_lo : r_hi).data() + P;
        for (int64_t r = ia; r < ib; ++r) {
          const int64_t t = r - cols.shift;
          const acc_t* src = (t % 2 == 0 ? t_even : t_odd).data() + (t / 2 - ja) * Kw;
          std::copy(src, src + Kw, dst + (r - r0) * S);
        }
      }
    }
    for (int64_t r = r0; r < r1; ++r) {  // column pass, the other rows: gathers by the CSR
      if (r == ia && ib > ia) r = ib;
      if (r >= r1) break;
      const int64_t f0 = cols.start[r], count = cols.start[r + 1] - f0;
      p0.resize(count), p1.resize(count);
      for (int b = 0; b < 2; ++b) {
        for (int64_t e = 0; e < count; ++e) {
          p0[e] = row_of(b, cols.row[f0 + e]);
          p1[e] = row_of(2 + b, cols.row[f0 + e]);
        }
        acc_t* dst = (b == 0 ? r_lo : r_hi).data() + (r - r0) * S + P;
        gather_rows(dst, p0.data(), p1.data(), cols.w.data() + 2 * f0, count, Kw);
      }
    }
    // row pass for the whole block at once; row j's phases are even/odd[j * S + t], t < Kw + P
    correlate_phases(even.data(), odd.data(), r_lo.data(), r_hi.data(), 1, s.row_coef.data(),
                     L / 2, (r1 - r0) * S);
    for (int64_t r = r0; r < r1; ++r) {
      std::fill(line.begin(), line.end(), acc_t(0));
      fold_phases(line.data(), *s.map_w, s.pw, even.data() + (r - r0) * S,
                  odd.data() + (r - r0) * S);
      store_row(s.out.plane(p, s.C) + r * s.out.sh, s.out.sw, line.data(), s.W);
    }
  }
}

#define Merge_tasks_impl merge_tasks_impl
WAVEFUSE_TASKS(Merge, float)
WAVEFUSE_TASKS(Merge, double)
WAVEFUSE_TASKS(Merge, at::Half)
WAVEFUSE_TASKS(Merge, at::BFloat16)
#undef Merge_tasks_impl
#undef WAVEFUSE_TASKS

template <typename scalar_t>
void merge_kernel(const Tensor& ll, const Tensor& hi, const std::vector<int64_t>& map_h,
                  const std::vector<int64_t>& map_w, const Tensor& filters, bool reversed,
                  const Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = taps_as<acc_t>(filters, reversed);
  const int64_t L = filters.size(1);
  const int64_t C = ll.size(1), planes = ll.size(0) * ll.size(1);
  const int64_t Kh = ll.size(2), Kw = ll.size(3);
  const int64_t H = y.size(2), W = y.size(3);
  const auto in = band_views<const scalar_t>(ll, hi);
  const auto out = view4<scalar_t>(y);

  const auto &gl = in[0][0], &gh = in[1][0], &gv = in[0][1], &gd = in[1][1];
  const bool same_sw = gl.sw == gh.sw && gl.sw == gv.sw && gl.sw == gd.sw;
  if (L == 2 && same_sw && identity_map(map_h, H) && identity_map(map_w, W)) {
    haar_merge(in, out, haar_taps(taps), C, planes, Kh, Kw);
    return;
  }

  const int64_t P = L / 2 - 1;
  MergeArgs<scalar_t> s{in, out, column_operator(map_h, H, Kh, taps), {}, {}, &map_w,
                        phase_map(map_w, 1), L, C, Kw, H, W, (H + kRowBlock - 1) / kRowBlock};
  for (int64_t q = 0; q <= P; ++q) {  // shift q of the padded rows carries taps 2(P - q) (+1)
    const int64_t m = 2 * (P - q);
    s.row_coef.insert(s.row_coef.end(), {taps[0][m], taps[1][m], taps[0][m + 1], taps[1][m + 1]});
    s.col_coef.insert(s.col_coef.end(),
                      {taps[0][2 * q], taps[1][2 * q], taps[0][2 * q + 1], taps[1][2 * q + 1]});
  }
  at::parallel_for(0, planes * s.blocks, 1,
                   [&](int64_t begin, int64_t end) { Merge_tasks(s, begin, end); });
}

// ---- the ops -----------------------------------------------------------------------------------

void check_filters(const Tensor& filters) {
  TORCH_CHECK(filters.dim() == 2 && filters.size(0) == 2 && filters.size(1) >= 2 &&
                  filters.size(1) % 2 == 0,
              "wavefuse: filters must be (2, L) with even L >= 2, got ", filters.sizes());
}

void check_input(const Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, "wavefuse: ", name, " must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.device().is_cpu(), "wavefuse: ", name, " must be a CPU tensor");
}

void check_bands(const Tensor& ll, const Tensor& hi) {
  check_input(ll, "ll");
  TORCH_CHECK(hi.dim() == 5 && hi.size(0) == ll.size(0) && hi.size(1) == ll.size(1) &&
                  hi.size(2) == 3 && hi.size(3) == ll.size(2) && hi.size(4) == ll.size(3),
              "wavefuse: hi must be (N, C, 3, h, w) matching ll ", ll.sizes(), ", got ",
              hi.sizes());
  TORCH_CHECK(hi.scalar_type() == ll.scalar_type() && hi.device() == ll.device(),
              "wavefuse: ll and hi must share dtype and device");
}

std::tuple<Tensor, Tensor> split(const Tensor& x, const std::vector<int64_t>& map_h,
                                 const std::vector<int64_t>& map_w, int64_t Kh, int64_t Kw,
                                 const Tensor& filters, bool reversed) {
  const int64_t N = x.size(0), C = x.size(1);
  Tensor ll = empty_4d(x, N, C, Kh, Kw);
  Tensor hi = empty_bands(x, N, C, Kh, Kw);
  if (ll.numel() == 0) return {ll, hi};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_split", [&] {
    split_kernel<scalar_t>(x, map_h, map_w, filters, reversed, ll, hi);
  });
  return {ll, hi};
}

Tensor merge(const Tensor& ll, const Tensor& hi, const std::vector<int64_t>& map_h,
             const std::vector<int64_t>& map_w, int64_t H, int64_t W, const Tensor& filters,
             bool reversed) {
  Tensor y = empty_4d(ll, ll.size(0), ll.size(1), H, W);
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ll.scalar_type(), "wavefuse_merge", [&] {
    merge_kernel<scalar_t>(ll, hi, map_h, map_w, filters, reversed, y);
  });
  return y;
}

std::tuple<Tensor, Tensor> dwt2d_cpu(const Tensor& x, const Tensor& filters,
                                     c10::string_view mode_name) {
  check_input(x, "x");
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = x.size(2), W = x.size(3);
  return split(x, analysis_map(H, L, mode), analysis_map(W, L, mode),
               analysis_length<int64_t>(H, L, mode), analysis_length<int64_t>(W, L, mode),
               filters, /*reversed=*/true);
}

Tensor dwt2d_adjoint_cpu(const Tensor& grad_ll, const Tensor& grad_hi, const Tensor& filters,
                         c10::string_view mode_name, at::IntArrayRef input_size) {
  check_bands(grad_ll, grad_hi);
  check_filters(filters);
  TORCH_CHECK(input_size.size() == 2, "wavefuse: input_size must be [H, W]");
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = input_size[0], W = input_size[1];
  TORCH_CHECK(analysis_length<int64_t>(H, L, mode) == grad_ll.size(2) &&
                  analysis_length<int64_t>(W, L, mode) == grad_ll.size(3),
              "wavefuse: coefficient size ", grad_ll.sizes(), " does not match input_size [", H,
              ", ", W, "]");
  return merge(grad_ll, grad_hi, analysis_map(H, L, mode), analysis_map(W, L, mode), H, W,
               filters, /*reversed=*/true);
}

Tensor idwt2d_cpu(const Tensor& ll, const Tensor& hi, const Tensor& filters,
                  c10::string_view mode_name) {
  check_bands(ll, hi);
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), Mh = ll.size(2), Mw = ll.size(3);
  const int64_t H = synthesis_length<int64_t>(Mh, L, mode);
  const int64_t W = synthesis_length<int64_t>(Mw, L, mode);
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: too few coefficients ", ll.sizes(), " for ", L,
              " taps");
  return merge(ll, hi, synthesis_map(Mh, L, mode), synthesis_map(Mw, L, mode), H, W, filters,
               /*reversed=*/false);
}

std::tuple<Tensor, Tensor> idwt2d_adjoint_cpu(const Tensor& grad_y, const Tensor& filters,
                                              c10::string_view mode_name) {
  check_input(grad_y, "grad_y");
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = grad_y.size(2), W = grad_y.size(3);
  const int64_t Mh = mode == Mode::Periodization ? H / 2 : (H + L - 2) / 2;
  const int64_t Mw = mode == Mode::Periodization ? W / 2 : (W + L - 2) / 2;
  TORCH_CHECK(synthesis_length<int64_t>(Mh, L, mode) == H &&
                  synthesis_length<int64_t>(Mw, L, mode) == W,
              "wavefuse: ", grad_y.sizes(), " is not a synthesis output size for ", L, " taps");
  return split(grad_y, synthesis_map(Mh, L, mode), synthesis_map(Mw, L, mode), Mh, Mw, filters,
               /*reversed=*/false);
}

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CPU, m) {
  m.impl("_dwt2d_kernel", &wavefuse::dwt2d_cpu);
  m.impl("_dwt2d_adjoint_kernel", &wavefuse::dwt2d_adjoint_cpu);
  m.impl("_idwt2d_kernel", &wavefuse::idwt2d_cpu);
  m.impl("_idwt2d_adjoint_kernel", &wavefuse::idwt2d_adjoint_cpu);
}
