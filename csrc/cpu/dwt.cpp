// CPU kernels of the one-level 2-D DWT family (contract: csrc/ops.cpp), on the split and merge
// blocks of separable.h:
//
//   _dwt2d_kernel           split, analysis index map, taps reversed (PyWavelets convolves)
//   _idwt2d_adjoint_kernel  split, synthesis index map (zero pad / periodic wrap), taps as stored
//   _dwt2d_adjoint_kernel   merge, analysis index map, taps reversed
//   _idwt2d_kernel          merge, synthesis index map, taps as stored
//
// Parallel over (plane, block of kRowBlock output rows). A split block gathers the input rows it
// needs once (plus an L - 2 row halo), row-filters them and column-filters the result into all four
// bands, each written once; a merge block gathers its output rows from the coefficient rows that
// reach them and writes each output row once. Haar on even sizes (identity index maps) takes a
// 2 x 2 block path.

#include "cpu/separable.h"
#include "cpu/planes.h"

namespace wavefuse {
namespace {

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


// ---- the general kernels: tasks of (plane, row block) over the blocks of separable.h -----------

template <typename scalar_t>
struct SplitArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> in;
  std::array<std::array<View4<scalar_t>, 2>, 2> out;
  SplitPlan<acc_t> plan;
  int64_t C, blocks;
};

template <typename scalar_t>
WAVEFUSE_INLINE void split_tasks_impl(const SplitArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  SplitWork<acc_t> work(s.plan);
  const int64_t Kw = s.plan.Kw;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t p = task / s.blocks, i0 = (task % s.blocks) * kRowBlock;
    const int64_t n = std::min(s.plan.Kh, i0 + kRowBlock) - i0;
    split_block(s.plan, work, s.in.plane(p, s.C), s.in.sh, s.in.sw == 1, i0, n,
                [&](int b, const acc_t* c0, const acc_t* c1, int64_t S) {
                  const View4<scalar_t>&v0 = s.out[0][b], &v1 = s.out[1][b];
                  scalar_t* d0 = v0.plane(p, s.C) + i0 * v0.sh;
                  scalar_t* d1 = v1.plane(p, s.C) + i0 * v1.sh;
                  for (int64_t i = 0; i < n; ++i) {
                    store_row(d0 + i * v0.sh, v0.sw, c0 + i * S, Kw);
                    store_row(d1 + i * v1.sh, v1.sw, c1 + i * S, Kw);
                  }
                });
  }
}

template <typename scalar_t>
struct MergeArgs {
  using acc_t = at::opmath_type<scalar_t>;
  std::array<std::array<View4<const scalar_t>, 2>, 2> in;
  View4<scalar_t> out;
  MergePlan<acc_t> plan;
  int64_t C, blocks;
};

// Bands of float/double with unit stride along W are read in place; others are converted, per
// block, into band-major acc_t rows first.
template <typename scalar_t>
WAVEFUSE_INLINE void merge_tasks_impl(const MergeArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  MergeWork<acc_t> work(s.plan);
  Buffer<acc_t> gbuf;
  const int64_t Kw = s.plan.Kw;
  bool direct = std::is_same_v<scalar_t, acc_t>;
  for (const auto& band : s.in) direct = direct && band[0].sw == 1 && band[1].sw == 1;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t p = task / s.blocks, r0 = (task % s.blocks) * kRowBlock;
    const int64_t r1 = std::min(s.plan.H, r0 + kRowBlock);
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
      const auto [lo, hi] = merge_rows_needed(s.plan, r0, r1);
      first = lo;
      gbuf.resize(4 * (hi - lo) * Kw);
      for (int ab = 0; ab < 4; ++ab) {
        const View4<const scalar_t>& v = s.in[ab / 2][ab % 2];
        base[ab] = gbuf.data() + ab * (hi - lo) * Kw, rs[ab] = Kw;
        for (int64_t i = lo; i < hi; ++i) {
          load_row(gbuf.data() + (ab * (hi - lo) + i - lo) * Kw, v.plane(p, s.C) + i * v.sh, v.sw,
                   Kw);
        }
      }
    }
    scalar_t* dst = s.out.plane(p, s.C);
    const bool direct_out = std::is_same_v<scalar_t, acc_t> && s.out.sw == 1;
    auto dest = [&](int64_t r) -> acc_t* {
      return direct_out ? reinterpret_cast<acc_t*>(dst + r * s.out.sh) : nullptr;
    };
    merge_block(s.plan, work, base, rs, first, r0, r1, dest, [&](int64_t r, const acc_t* line) {
      store_row(dst + r * s.out.sh, s.out.sw, line, s.plan.W);
    });
  }
}

#if defined(__GNUC__)
// Small planes (planes.h): tasks of V = kLanes planes, one plane per lane.
template <typename scalar_t>
struct PlanesSplitArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> in;
  std::array<std::array<View4<scalar_t>, 2>, 2> out;
  PlanesPlan<acc_t> plan;
  int64_t C, planes;
};

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void planes_split_tasks_impl(const PlanesSplitArgs<scalar_t>& s, int64_t begin,
                                             int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  PlanesWork<acc_t, Bytes> work(s.plan);
  for (int64_t g = begin; g < end; ++g) {
    split_planes(s.plan, work, s.in, s.out, s.C, g * V, std::min(V, s.planes - g * V));
  }
}

template <typename scalar_t>
struct PlanesMergeArgs {
  using acc_t = at::opmath_type<scalar_t>;
  std::array<std::array<View4<const scalar_t>, 2>, 2> in;
  View4<scalar_t> out;
  PlanesPlan<acc_t> plan;
  int64_t C, planes;
};

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void planes_merge_tasks_impl(const PlanesMergeArgs<scalar_t>& s, int64_t begin,
                                             int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  PlanesWork<acc_t, Bytes> work(s.plan);
  for (int64_t g = begin; g < end; ++g) {
    merge_planes(s.plan, work, s.in, s.out, s.C, g * V, std::min(V, s.planes - g * V));
  }
}
#endif

// One function per scalar type, each with an AVX2 clone (see "vector loops").
#define WAVEFUSE_TASKS(name, Args, T)                                              \
  WAVEFUSE_SIMD_CLONES void name(const Args<T>& s, int64_t begin, int64_t end) { \
    name##_impl(s, begin, end);                                                  \
  }
#define WAVEFUSE_ALL_TASKS(name, Args)        \
  WAVEFUSE_TASKS(name, Args, float)           \
  WAVEFUSE_TASKS(name, Args, double)          \
  WAVEFUSE_TASKS(name, Args, at::Half)        \
  WAVEFUSE_TASKS(name, Args, at::BFloat16)
WAVEFUSE_ALL_TASKS(split_tasks, SplitArgs)
WAVEFUSE_ALL_TASKS(merge_tasks, MergeArgs)
// and for AVX-512, at the AVX2 width with 32 registers (planes.h, avx512_tasks)
WAVEFUSE_V4_TASKS(split_tasks, split_tasks_impl, SplitArgs)
WAVEFUSE_V4_TASKS(merge_tasks, merge_tasks_impl, MergeArgs)
#if defined(__GNUC__)
WAVEFUSE_ALL_TASKS(planes_split_tasks, PlanesSplitArgs)
WAVEFUSE_ALL_TASKS(planes_merge_tasks, PlanesMergeArgs)
// and for AVX-512, 64-byte vectors (planes.h, avx512_tasks)
WAVEFUSE_WIDE_TASKS(planes_split_tasks, planes_split_tasks_impl, PlanesSplitArgs)
WAVEFUSE_WIDE_TASKS(planes_merge_tasks, planes_merge_tasks_impl, PlanesMergeArgs)
#endif
#undef WAVEFUSE_ALL_TASKS
#undef WAVEFUSE_TASKS

template <typename scalar_t>
void split_kernel(const Tensor& x, const std::vector<int64_t>& map_h,
                  const std::vector<int64_t>& map_w, const Tensor& filters, bool reversed,
                  const Tensor& ll, const Tensor& hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = taps_as<acc_t>(filters, reversed);
  const int64_t C = x.size(1), planes = x.size(0) * x.size(1);
  const int64_t Kh = ll.size(2), Kw = ll.size(3);
  const auto in = view4<const scalar_t>(x);
  const auto out = band_views<scalar_t>(ll, hi);
  if (taps[0].size() == 2 && identity_map(map_h, x.size(2)) && identity_map(map_w, x.size(3))) {
    haar_split(in, out, haar_taps(taps), C, planes, Kh, Kw);
    return;
  }
#if defined(__GNUC__)
  if (use_planes_path(x.size(2), x.size(3))) {
    const PlanesSplitArgs<scalar_t> s{
        in, out, {split_axis(map_w, taps, Kw), split_axis(map_h, taps, Kh), x.size(2), x.size(3), Kh, Kw},
        C, planes};
    for_plane_groups<acc_t>(
        planes, [&](int64_t b, int64_t e) { planes_split_tasks(s, b, e); },
        [&](int64_t b, int64_t e) { planes_split_tasks_wide(s, b, e); });
    return;
  }
#endif
  const SplitArgs<scalar_t> s{in, out, split_plan(taps, map_h, map_w, in.sw, Kh, Kw), C,
                              (Kh + kRowBlock - 1) / kRowBlock};
  parallel_tasks(
      planes * s.blocks, 1, [&](int64_t b, int64_t e) { split_tasks(s, b, e); },
      [&](int64_t b, int64_t e) { split_tasks_v4(s, b, e); });
}

template <typename scalar_t>
void merge_kernel(const Tensor& ll, const Tensor& hi, const std::vector<int64_t>& map_h,
                  const std::vector<int64_t>& map_w, const Tensor& filters, bool reversed,
                  const Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto taps = taps_as<acc_t>(filters, reversed);
  const int64_t C = ll.size(1), planes = ll.size(0) * ll.size(1);
  const int64_t Kh = ll.size(2), Kw = ll.size(3);
  const int64_t H = y.size(2), W = y.size(3);
  const auto in = band_views<const scalar_t>(ll, hi);
  const auto out = view4<scalar_t>(y);
  const auto &gl = in[0][0], &gh = in[1][0], &gv = in[0][1], &gd = in[1][1];
  const bool same_sw = gl.sw == gh.sw && gl.sw == gv.sw && gl.sw == gd.sw;
  if (taps[0].size() == 2 && same_sw && identity_map(map_h, H) && identity_map(map_w, W)) {
    haar_merge(in, out, haar_taps(taps), C, planes, Kh, Kw);
    return;
  }
#if defined(__GNUC__)
  if (use_planes_path(H, W)) {
    const PlanesMergeArgs<scalar_t> s{
        in, out, {merge_axis(map_w, taps, W, Kw), merge_axis(map_h, taps, H, Kh), H, W, Kh, Kw},
        C, planes};
    for_plane_groups<acc_t>(
        planes, [&](int64_t b, int64_t e) { planes_merge_tasks(s, b, e); },
        [&](int64_t b, int64_t e) { planes_merge_tasks_wide(s, b, e); });
    return;
  }
#endif
  const MergeArgs<scalar_t> s{in, out, merge_plan(taps, map_h, map_w, Kh, Kw, H, W), C,
                              (H + kRowBlock - 1) / kRowBlock};
  parallel_tasks(
      planes * s.blocks, 1, [&](int64_t b, int64_t e) { merge_tasks(s, b, e); },
      [&](int64_t b, int64_t e) { merge_tasks_v4(s, b, e); });
}

// ---- the ops -----------------------------------------------------------------------------------

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
