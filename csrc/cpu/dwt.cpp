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
// The only arithmetic: two fused axpy shapes over contiguous, non-aliasing buffers. On x86-64 GCC
// and Clang also emit an AVX2 clone, chosen at load time by the CPU (the portable build itself
// targets baseline x86-64).

#if defined(__x86_64__) && defined(__GNUC__)
#define WAVEFUSE_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define WAVEFUSE_SIMD_CLONES
#endif

// y0[k] += a0 * x[k];  y1[k] += a1 * x[k]
template <typename T>
inline void axpy2_impl(T* __restrict__ y0, T* __restrict__ y1, const T* __restrict__ x, T a0, T a1,
                       int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    y0[k] += a0 * x[k];
    y1[k] += a1 * x[k];
  }
}

// y0[k] += a0 * e[k] + a1 * o[k];  y1[k] += b0 * e[k] + b1 * o[k]
template <typename T>
inline void phase2_impl(T* __restrict__ y0, T* __restrict__ y1, const T* __restrict__ e,
                        const T* __restrict__ o, T a0, T a1, T b0, T b1, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    y0[k] += a0 * e[k] + a1 * o[k];
    y1[k] += b0 * e[k] + b1 * o[k];
  }
}

// y[k] += a0 * x0[k] + a1 * x1[k]
template <typename T>
inline void dot2_impl(T* __restrict__ y, const T* __restrict__ x0, const T* __restrict__ x1, T a0,
                      T a1, int64_t n) {
  for (int64_t k = 0; k < n; ++k) y[k] += a0 * x0[k] + a1 * x1[k];
}

WAVEFUSE_SIMD_CLONES void dot2(float* y, const float* x0, const float* x1, float a0, float a1,
                               int64_t n) {
  dot2_impl(y, x0, x1, a0, a1, n);
}
WAVEFUSE_SIMD_CLONES void dot2(double* y, const double* x0, const double* x1, double a0, double a1,
                               int64_t n) {
  dot2_impl(y, x0, x1, a0, a1, n);
}
WAVEFUSE_SIMD_CLONES void axpy2(float* y0, float* y1, const float* x, float a0, float a1,
                                int64_t n) {
  axpy2_impl(y0, y1, x, a0, a1, n);
}
WAVEFUSE_SIMD_CLONES void axpy2(double* y0, double* y1, const double* x, double a0, double a1,
                                int64_t n) {
  axpy2_impl(y0, y1, x, a0, a1, n);
}
WAVEFUSE_SIMD_CLONES void phase2(float* y0, float* y1, const float* e, const float* o, float a0,
                                 float a1, float b0, float b1, int64_t n) {
  phase2_impl(y0, y1, e, o, a0, a1, b0, b1, n);
}
WAVEFUSE_SIMD_CLONES void phase2(double* y0, double* y1, const double* e, const double* o,
                                 double a0, double a1, double b0, double b1, int64_t n) {
  phase2_impl(y0, y1, e, o, a0, a1, b0, b1, n);
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

// ---- split: extend + stride-2 correlation along W, then H --------------------------------------

// lo/hi[k] = sum_m taps[m] * xe[2k + m] for k < K, with xe given as even/odd phases of length
// K + L/2 - 1 each: xe[2j] = even[j], xe[2j + 1] = odd[j].
template <typename acc_t>
inline void correlate2_row(const acc_t* even, const acc_t* odd, const std::vector<acc_t>& t0,
                           const std::vector<acc_t>& t1, int64_t K, acc_t* out0, acc_t* out1) {
  std::fill(out0, out0 + K, acc_t(0));
  std::fill(out1, out1 + K, acc_t(0));
  const int64_t half = static_cast<int64_t>(t0.size()) / 2;
  for (int64_t q = 0; q < half; ++q) {
    phase2(out0, out1, even + q, odd + q, t0[2 * q], t0[2 * q + 1], t1[2 * q], t1[2 * q + 1], K);
  }
}

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
inline void deinterleave_impl(const T* __restrict__ src, T* __restrict__ even, T* __restrict__ odd,
                              int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    even[j] = src[2 * j];
    odd[j] = src[2 * j + 1];
  }
}
template <typename T>
inline void interleave_add_impl(T* __restrict__ dst, const T* __restrict__ even,
                                const T* __restrict__ odd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    dst[2 * j] += even[j];
    dst[2 * j + 1] += odd[j];
  }
}
WAVEFUSE_SIMD_CLONES void deinterleave(const float* s, float* e, float* o, int64_t n) {
  deinterleave_impl(s, e, o, n);
}
WAVEFUSE_SIMD_CLONES void deinterleave(const double* s, double* e, double* o, int64_t n) {
  deinterleave_impl(s, e, o, n);
}
WAVEFUSE_SIMD_CLONES void interleave_add(float* d, const float* e, const float* o, int64_t n) {
  interleave_add_impl(d, e, o, n);
}
WAVEFUSE_SIMD_CLONES void interleave_add(double* d, const double* e, const double* o, int64_t n) {
  interleave_add_impl(d, e, o, n);
}

// Gather one extended row into its even and odd phases (acc_t), from a row with element stride
// pm's. Unit-stride float/double rows copy their interior directly.
template <typename scalar_t, typename acc_t>
inline void gather_phases(const scalar_t* row, const PhaseMap& pm, bool unit_stride, acc_t* even,
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
inline void fold_phases(acc_t* line, const std::vector<int64_t>& map, const PhaseMap& pm,
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

template <typename scalar_t>
void split_kernel(const Tensor& x, const std::vector<int64_t>& map_h,
                  const std::vector<int64_t>& map_w, const Tensor& filters, bool reversed,
                  const Tensor& ll, const Tensor& hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = taps_as<acc_t>(filters, reversed);
  const int64_t L = filters.size(1);
  const int64_t C = x.size(1), planes = x.size(0) * x.size(1);
  const int64_t Kh = ll.size(2), Kw = ll.size(3);
  const int64_t half_w = Kw + L / 2 - 1;  // length of each phase of an extended row
  const int64_t blocks = (Kh + kRowBlock - 1) / kRowBlock;
  const auto in = view4<const scalar_t>(x);
  const auto out = band_views<scalar_t>(ll, hi);
  const PhaseMap pw = phase_map(map_w, in.sw);

  if (L == 2 && identity_map(map_h, x.size(2)) && identity_map(map_w, x.size(3))) {
    const Haar<acc_t> w = haar_taps(taps);
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
    return;
  }

  at::parallel_for(0, planes * blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t rows_max = 2 * kRowBlock + L - 2;
    std::vector<acc_t> even(half_w), odd(half_w);
    std::vector<acc_t> rowbuf(rows_max * 2 * Kw);  // [row][band b][k]
    std::vector<acc_t> acc(4 * Kw);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / blocks, i0 = (task % blocks) * kRowBlock;
      const int64_t i1 = std::min(Kh, i0 + kRowBlock);
      const int64_t nrows = 2 * (i1 - i0) + L - 2;
      const scalar_t* src = in.plane(p, C);
      for (int64_t r = 0; r < nrows; ++r) {  // row-filter the extended rows 2*i0 + r
        acc_t* lo = rowbuf.data() + r * 2 * Kw;
        const int64_t sr = map_h[2 * i0 + r];
        if (sr < 0) {
          std::fill(lo, lo + 2 * Kw, acc_t(0));
          continue;
        }
        gather_phases(src + sr * in.sh, pw, in.sw == 1, even.data(), odd.data());
        correlate2_row(even.data(), odd.data(), taps[0], taps[1], Kw, lo, lo + Kw);
      }
      for (int64_t i = i0; i < i1; ++i) {  // column-filter into the four bands
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t m = 0; m < L; ++m) {
          const acc_t* r = rowbuf.data() + (2 * (i - i0) + m) * 2 * Kw;
          // acc = [a = 0: b lo, b hi | a = 1: b lo, b hi]
          axpy2(acc.data(), acc.data() + 2 * Kw, r, taps[0][m], taps[1][m], 2 * Kw);
        }
        for (int a = 0; a < 2; ++a) {
          for (int b = 0; b < 2; ++b) {
            const View4<scalar_t>& v = out[a][b];
            scalar_t* dst = v.plane(p, C) + i * v.sh;
            const acc_t* s = acc.data() + (2 * a + b) * Kw;
            for (int64_t k = 0; k < Kw; ++k) dst[k * v.sw] = static_cast<scalar_t>(s[k]);
          }
        }
      }
    }
  });
}

// ---- merge: the transpose of split -------------------------------------------------------------

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
  const int64_t half_w = Kw + L / 2 - 1;
  const auto in = band_views<const scalar_t>(ll, hi);
  const auto out = view4<scalar_t>(y);
  const PhaseMap pw = phase_map(map_w, 1);  // offsets into the (contiguous) accumulation line

  const auto &gl = in[0][0], &gh = in[1][0], &gv = in[0][1], &gd = in[1][1];
  const bool same_sw = gl.sw == gh.sw && gl.sw == gv.sw && gl.sw == gd.sw;
  if (L == 2 && same_sw && identity_map(map_h, H) && identity_map(map_w, W)) {
    const Haar<acc_t> w = haar_taps(taps);
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
    return;
  }

  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> rows(H * 2 * Kw);  // [output row][row band b][k]
    std::vector<acc_t> g(4 * Kw), even(half_w), odd(half_w), line(W);
    for (int64_t p = begin; p < end; ++p) {
      std::fill(rows.begin(), rows.end(), acc_t(0));
      // Columns: band (a, b) row i overlap-adds into extended rows 2i + m, folded by map_h.
      for (int64_t i = 0; i < Kh; ++i) {
        for (int a = 0; a < 2; ++a) {
          for (int b = 0; b < 2; ++b) {  // g = [a0 b0 | a0 b1 | a1 b0 | a1 b1]
            const View4<const scalar_t>& v = in[a][b];
            const scalar_t* src = v.plane(p, C) + i * v.sh;
            acc_t* gk = g.data() + (2 * a + b) * Kw;
            for (int64_t k = 0; k < Kw; ++k) gk[k] = static_cast<acc_t>(src[k * v.sw]);
          }
        }
        for (int64_t m = 0; m < L; ++m) {
          const int64_t r = map_h[2 * i + m];
          if (r < 0) continue;
          for (int b = 0; b < 2; ++b) {
            dot2(rows.data() + (r * 2 + b) * Kw, g.data() + b * Kw, g.data() + (2 + b) * Kw,
                 taps[0][m], taps[1][m], Kw);
          }
        }
      }
      // Rows: overlap-add both row bands along W (even and odd phases), fold by map_w, store.
      scalar_t* dst = out.plane(p, C);
      for (int64_t r = 0; r < H; ++r) {
        std::fill(even.begin(), even.end(), acc_t(0));
        std::fill(odd.begin(), odd.end(), acc_t(0));
        for (int b = 0; b < 2; ++b) {
          const acc_t* s = rows.data() + (r * 2 + b) * Kw;
          for (int64_t q = 0; q < L / 2; ++q) {
            axpy2(even.data() + q, odd.data() + q, s, taps[b][2 * q], taps[b][2 * q + 1], Kw);
          }
        }
        std::fill(line.begin(), line.end(), acc_t(0));
        fold_phases(line.data(), map_w, pw, even.data(), odd.data());
        scalar_t* row = dst + r * out.sh;
        for (int64_t c = 0; c < W; ++c) row[c * out.sw] = static_cast<scalar_t>(line[c]);
      }
    }
  });
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
