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
// for zero padding (offset 0, mask 0): the row gather is then branch-free.
struct PhaseMap {
  std::vector<int64_t> off_even, off_odd;
  std::vector<uint8_t> keep_even, keep_odd;
  bool any_zero = false;
};

PhaseMap phase_map(const std::vector<int64_t>& map, int64_t stride) {
  const int64_t half = static_cast<int64_t>(map.size()) / 2;
  PhaseMap pm{std::vector<int64_t>(half), std::vector<int64_t>(half), std::vector<uint8_t>(half),
              std::vector<uint8_t>(half)};
  for (int64_t j = 0; j < half; ++j) {
    const int64_t e = map[2 * j], o = map[2 * j + 1];
    pm.off_even[j] = e < 0 ? 0 : e * stride;
    pm.off_odd[j] = o < 0 ? 0 : o * stride;
    pm.keep_even[j] = e >= 0;
    pm.keep_odd[j] = o >= 0;
    pm.any_zero = pm.any_zero || e < 0 || o < 0;
  }
  return pm;
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
        const scalar_t* row = src + sr * in.sh;
        for (int64_t j = 0; j < half_w; ++j) {
          even[j] = static_cast<acc_t>(row[pw.off_even[j]]);
          odd[j] = static_cast<acc_t>(row[pw.off_odd[j]]);
        }
        if (pw.any_zero) {
          for (int64_t j = 0; j < half_w; ++j) {
            even[j] *= acc_t(pw.keep_even[j]);
            odd[j] *= acc_t(pw.keep_odd[j]);
          }
        }
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
        for (int64_t j = 0; j < half_w; ++j) {
          const int64_t ce = map_w[2 * j], co = map_w[2 * j + 1];
          if (ce >= 0) line[ce] += even[j];
          if (co >= 0) line[co] += odd[j];
        }
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
