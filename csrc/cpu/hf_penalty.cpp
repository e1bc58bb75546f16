// CPU kernels of the per-band energies behind hf_penalty (contract: wavefuse/ops/hf_penalty.py,
// schemas in csrc/ops.cpp):
//
//   _band_energy_kernel(x, filters, mode, level, p) -> (N, J, 3)
//       e[n, j - 1, b] = sum over channels and positions of |d|^p, d = band b (cH, cV, cD) of level
//       j of the analysis cascade of x (dec taps, PyWavelets' modes), p in {1, 2}.
//   _band_energy_backward_kernel(grad, x, filters, mode, level, p) -> grad_x
//       grad_x = sum_j sum_b grad[n, j - 1, b] * d/dx sum |d_jb|^p, in x's dtype and layout.
//
// Both run the cascade one plane at a time, parallel over planes, on the split/merge blocks of
// separable.h. The forward keeps only the approximation that the next level reads (acc_t, in a
// plane-local buffer); the detail bands are reduced to their energies as each block of rows
// comes out of the column pass and are never stored. The backward recomputes: it runs the cascade
// up, keeping the approximations and turning each level's detail bands, as they come out, into
// their gradients psi(d) * grad (psi = 2d for p = 2, sign(d) for p = 1; plane-local buffers),
// then goes down level by level, merging those with the gradient of the approximation (zero at
// level J) through the analysis adjoint -- into the next plane-local buffer, or at level 1 into
// grad_x, which is written once. Energies are summed per plane in double, in a fixed order, and
// then over channels in channel order: deterministic, no atomics.

#include "cpu/separable.h"
#include "cpu/planes.h"

namespace wavefuse {
namespace {

// Energy of one row: sum |v|^p, p in {1, 2}, over kEnergyLanes independent partial sums (so the loop
// vectorises without reassociating anything the compiler may not), combined in a fixed order.
constexpr int kEnergyLanes = 8;

template <int P, typename T>
WAVEFUSE_INLINE T row_energy(const T* __restrict__ v, int64_t n) {
  T part[kEnergyLanes] = {};
  int64_t k = 0;
  for (; k + kEnergyLanes <= n; k += kEnergyLanes) {
    for (int l = 0; l < kEnergyLanes; ++l) {
      const T a = v[k + l];
      part[l] += P == 2 ? a * a : std::abs(a);
    }
  }
  for (int l = 0; k < n; ++k, ++l) {
    const T a = v[k];
    part[l] += P == 2 ? a * a : std::abs(a);
  }
  T sum = T(0);
  for (int l = 0; l < kEnergyLanes; ++l) sum += part[l];
  return sum;
}

// out[k] = psi(d[k]) * g: the gradient of |d|^p, with sign(0) = 0 and NaN kept.
template <int P, typename T>
WAVEFUSE_INLINE void band_gradient(T* __restrict__ out, const T* __restrict__ d, T g, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const T a = d[k];
    out[k] = P == 2 ? T(2) * a * g : (a > T(0) ? g : a < T(0) ? -g : a * g);
  }
}

// Every level's geometry, built once per call. Level j (0-based) reads an (h[j], w[j]) plane and
// gives (h[j + 1], w[j + 1]) coefficients; level 0 reads x with its element stride, the others a
// contiguous acc_t buffer.
template <typename acc_t>
struct Cascade {
  std::vector<SplitPlan<acc_t>> split;
  std::vector<MergePlan<acc_t>> merge;  // the analysis adjoint of each level (backward only)
  std::vector<int64_t> h, w;
  int64_t levels = 0;
};

template <typename acc_t>
Cascade<acc_t> cascade(const Tensor& filters, Mode mode, int64_t H, int64_t W, int64_t sw,
                       int64_t levels, bool with_merge) {
  const auto taps = taps_as<acc_t>(filters, /*reversed=*/true);
  const int64_t L = filters.size(1);
  Cascade<acc_t> c;
  c.levels = levels;
  c.h.push_back(H), c.w.push_back(W);
  for (int64_t j = 0; j < levels; ++j) {
    const int64_t h = c.h.back(), w = c.w.back();
    const int64_t kh = analysis_length<int64_t>(h, L, mode);
    const int64_t kw = analysis_length<int64_t>(w, L, mode);
    const auto map_h = analysis_map(h, L, mode), map_w = analysis_map(w, L, mode);
    c.split.push_back(split_plan(taps, map_h, map_w, j == 0 ? sw : 1, kh, kw));
    if (with_merge) c.merge.push_back(merge_plan(taps, map_h, map_w, kh, kw, h, w));
    c.h.push_back(kh), c.w.push_back(kw);
  }
  return c;
}

template <typename scalar_t>
struct EnergyArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> x;
  Cascade<acc_t> c;
  int64_t C, p;
  double* partial;  // (planes, J, 3)
};

// The most coefficients per band of any level j >= 1 of the cascade.
template <typename acc_t>
int64_t largest_level(const Cascade<acc_t>& c) {
  int64_t most = 0;
  for (size_t j = 1; j < c.h.size(); ++j) most = std::max(most, c.h[j] * c.w[j]);
  return most;
}

template <int P, typename scalar_t>
WAVEFUSE_INLINE void energy_tasks_impl(const EnergyArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& c = s.c;
  std::vector<SplitWork<acc_t>> work;
  for (const auto& plan : c.split) work.emplace_back(plan);
  // Sized by the largest level, not level 1: a level grows when its input is shorter than the
  // filter (n < L - 1, the non-periodization modes), e.g. a 1x1 input with db4 at level 4.
  const int64_t most = largest_level(c);
  Buffer<acc_t> ll[2] = {Buffer<acc_t>(most), Buffer<acc_t>(most)};
  for (int64_t p = begin; p < end; ++p) {
    double* e = s.partial + p * c.levels * 3;
    for (int64_t j = 0; j < c.levels; ++j) {
      const int64_t kw = c.w[j + 1];
      auto detail = [&](int band, int64_t, const acc_t* row) {
        e[3 * j + band] += static_cast<double>(row_energy<P>(row, kw));
      };
      acc_t* out = j + 1 < c.levels ? ll[j % 2].data() : nullptr;
      if (j == 0) {
        split_level(c.split[0], work[0], s.x.plane(p, s.C), s.x.sh, s.x.sw == 1, out, detail);
      } else {
        split_level(c.split[j], work[j], static_cast<const acc_t*>(ll[(j - 1) % 2].data()),
                      c.w[j], true, out, detail);
      }
    }
  }
}

template <typename scalar_t>
struct EnergyBackwardArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> x;
  View4<scalar_t> grad_x;
  Cascade<acc_t> c;
  const acc_t* grad;  // (N, J, 3), contiguous
  int64_t C, p;
};

template <int P, typename scalar_t>
WAVEFUSE_INLINE void energy_backward_tasks_impl(const EnergyBackwardArgs<scalar_t>& s,
                                                int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto& c = s.c;
  const int64_t J = c.levels;
  std::vector<SplitWork<acc_t>> split_work;
  std::vector<MergeWork<acc_t>> merge_work;
  for (int64_t j = 0; j < J; ++j) split_work.emplace_back(c.split[j]), merge_work.emplace_back(c.merge[j]);
  // ll[j] (1 <= j < J): level j's approximation, the input of level j + 1; bands[j] (1 <= j <= J):
  // the gradients psi(d) g of level j's detail bands (cH, cV, cD). A band's gradient needs only the
  // band and its own weight, so the way up forms them all and the way down only merges: each
  // level is split once, not twice (db4 symmetric J=3 on 16x3x224x224: the backward went from
  // two splits of the full-size level to one).
  std::vector<Buffer<acc_t>> ll(J), bands(J + 1);
  for (int64_t j = 1; j < J; ++j) ll[j].resize(c.h[j] * c.w[j]);
  for (int64_t j = 1; j <= J; ++j) bands[j].resize(3 * c.h[j] * c.w[j]);
  const int64_t most = largest_level(c);  // levels can grow (see energy_tasks_impl)
  Buffer<acc_t> g_ll[2] = {Buffer<acc_t>(most), Buffer<acc_t>(most)};
  for (int64_t p = begin; p < end; ++p) {
    const acc_t* g = s.grad + (p / s.C) * J * 3;
    const scalar_t* x = s.x.plane(p, s.C);
    for (int64_t j = 1; j <= J; ++j) {  // up: approximations and band gradients
      const int64_t kh = c.h[j], kw = c.w[j];
      acc_t* band_grads = bands[j].data();
      auto detail = [&](int band, int64_t i, const acc_t* row) {
        band_gradient<P>(band_grads + (band * kh + i) * kw, row, g[3 * (j - 1) + band], kw);
      };
      acc_t* out = j < J ? ll[j].data() : nullptr;
      if (j == 1) {
        split_level(c.split[0], split_work[0], x, s.x.sh, s.x.sw == 1, out, detail);
      } else {
        split_level(c.split[j - 1], split_work[j - 1],
                      static_cast<const acc_t*>(ll[j - 1].data()), c.w[j - 1], true, out, detail);
      }
    }
    // down: level j's band gradients and the gradient of its approximation (g_ll[j % 2], zero at
    // the coarsest level) merge into the gradient of its input
    const int64_t kh_top = c.h[J], kw_top = c.w[J];
    std::fill(g_ll[J % 2].begin(), g_ll[J % 2].begin() + kh_top * kw_top, acc_t(0));
    for (int64_t j = J; j >= 1; --j) {
      const int64_t kh = c.h[j], kw = c.w[j];
      const acc_t* band_grads = bands[j].data();
      // bands (a, b): (0, 0) LL, (0, 1) cV, (1, 0) cH, (1, 1) cD
      const acc_t* base[4] = {g_ll[j % 2].data(), band_grads + kh * kw, band_grads,
                              band_grads + 2 * kh * kw};
      const int64_t rs[4] = {kw, kw, kw, kw};
      const auto& plan = c.merge[j - 1];
      acc_t* next = g_ll[(j - 1) % 2].data();
      // rows go straight to their destination: the next level's buffer, or (level 1) grad_x
      // when it holds acc_t with unit stride along W; else through the work line
      scalar_t* gx = s.grad_x.plane(p, s.C);
      const bool gx_direct = std::is_same_v<scalar_t, acc_t> && s.grad_x.sw == 1;
      auto dest = [&](int64_t r) -> acc_t* {
        if (j > 1) return next + r * plan.W;
        return gx_direct ? reinterpret_cast<acc_t*>(gx + r * s.grad_x.sh) : nullptr;
      };
      for (int64_t r0 = 0; r0 < plan.H; r0 += kRowBlock) {
        const int64_t r1 = std::min(plan.H, r0 + kRowBlock);
        merge_block(plan, merge_work[j - 1], base, rs, 0, r0, r1, dest,
                    [&](int64_t r, const acc_t* line) {  // level 1, grad_x not direct
                      store_row(gx + r * s.grad_x.sh, s.grad_x.sw, line, plan.W);
                    });
      }
    }
  }
}

#if defined(__GNUC__)
// ---- small planes (planes.h): the same cascade on V planes at once, one per vector lane -------
// Level j's work buffers hold its bands B(0..3) for the whole group; B(0) (the approximation) is
// the next level's input, read in place. The forward reduces each detail band row by row: a row's
// |d|^p summed per lane in acc_t, then added to the lane's double total (as row_energy's rows
// are). The backward runs the whole cascade up once (every level's bands stay in its buffers),
// then goes down: level j's detail bands become their gradients in place, its B(0) holds the
// gradient of its approximation (zero at level J, else what level j + 1's merge wrote there), and
// the merge writes level j's input gradient -- into level j - 1's B(0), or the plane buffer X
// that goes out to grad_x.

template <typename acc_t>
struct PlanesCascade {
  std::vector<PlanesPlan<acc_t>> level;
  int64_t levels = 0;
};

template <typename acc_t>
PlanesCascade<acc_t> planes_cascade(const Tensor& filters, Mode mode, int64_t H, int64_t W,
                                    int64_t levels, bool with_merge) {
  const auto taps = taps_as<acc_t>(filters, /*reversed=*/true);
  const int64_t L = filters.size(1);
  PlanesCascade<acc_t> c;
  c.levels = levels;
  int64_t h = H, w = W;
  for (int64_t j = 0; j < levels; ++j) {
    const int64_t kh = analysis_length<int64_t>(h, L, mode);
    const int64_t kw = analysis_length<int64_t>(w, L, mode);
    const auto map_h = analysis_map(h, L, mode), map_w = analysis_map(w, L, mode);
    PlanesPlan<acc_t> plan{{}, {}, h, w, kh, kw};
    plan.rows = with_merge ? merge_axis(map_w, taps, w, kw) : split_axis(map_w, taps, kw);
    plan.cols = with_merge ? merge_axis(map_h, taps, h, kh) : split_axis(map_h, taps, kh);
    c.level.push_back(std::move(plan));
    h = kh, w = kw;
  }
  return c;
}

template <typename scalar_t>
struct PlanesEnergyArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> x;
  PlanesCascade<acc_t> split;
  int64_t C, p, planes;
  double* partial;  // (planes, J, 3)
};

// Bands in w.B order (2a + b): cH = (1, 0) at 2, cV = (0, 1) at 1, cD = (1, 1) at 3.
constexpr int kBandSlot[3] = {2, 1, 3};

template <int P, int Bytes, typename scalar_t>
WAVEFUSE_INLINE void planes_energy_tasks_impl(const PlanesEnergyArgs<scalar_t>& s, int64_t begin,
                                              int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  const auto& c = s.split;
  std::vector<PlanesWork<acc_t, Bytes>> work;
  for (const auto& plan : c.level) work.emplace_back(plan);
  for (int64_t g = begin; g < end; ++g) {
    const int64_t p0 = g * V, count = std::min(V, s.planes - p0);
    planes_in<scalar_t, acc_t, Bytes>(work[0].x.data(), s.x, s.C, p0, count, c.level[0].H,
                                      c.level[0].W);
    for (int64_t j = 0; j < c.levels; ++j) {
      const auto& plan = c.level[j];
      split_core(plan, work[j], j == 0 ? work[0].X() : work[j - 1].B(0));
      for (int band = 0; band < 3; ++band) {
        const acc_t* d = reinterpret_cast<const acc_t*>(work[j].B(kBandSlot[band]));
        double total[V] = {};
        for (int64_t i = 0; i < plan.Kh; ++i) {
          acc_t part[V] = {};
          for (int64_t k = 0; k < plan.Kw; ++k) {
            for (int64_t l = 0; l < V; ++l) {
              const acc_t a = d[(i * plan.Kw + k) * V + l];
              part[l] += P == 2 ? a * a : std::abs(a);
            }
          }
          for (int64_t l = 0; l < V; ++l) total[l] += static_cast<double>(part[l]);
        }
        for (int64_t l = 0; l < count; ++l) {
          s.partial[((p0 + l) * c.levels + j) * 3 + band] += total[l];
        }
      }
    }
  }
}

template <typename scalar_t>
struct PlanesEnergyBackwardArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<const scalar_t> x;
  View4<scalar_t> grad_x;
  PlanesCascade<acc_t> split, merge;
  const acc_t* grad;  // (N, J, 3), contiguous
  int64_t C, p, planes;
};

template <int P, int Bytes, typename scalar_t>
WAVEFUSE_INLINE void planes_energy_backward_tasks_impl(const PlanesEnergyBackwardArgs<scalar_t>& s,
                                                       int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = Lanes<acc_t, Bytes>;
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  const int64_t J = s.split.levels;
  std::vector<PlanesWork<acc_t, Bytes>> work;
  for (const auto& plan : s.split.level) work.emplace_back(plan);
  for (int64_t g = begin; g < end; ++g) {
    const int64_t p0 = g * V, count = std::min(V, s.planes - p0);
    const auto& top = s.split.level[0];
    planes_in<scalar_t, acc_t, Bytes>(work[0].x.data(), s.x, s.C, p0, count, top.H, top.W);
    for (int64_t j = 0; j < J; ++j) {  // up: every level's bands
      split_core(s.split.level[j], work[j], j == 0 ? work[0].X() : work[j - 1].B(0));
    }
    for (int64_t j = J - 1; j >= 0; --j) {  // down
      const auto& plan = s.merge.level[j];
      const int64_t n = plan.Kh * plan.Kw;
      if (j == J - 1) zero_span(reinterpret_cast<acc_t*>(work[j].B(0)), n * V);
      for (int band = 0; band < 3; ++band) {
        acc_t gl[V] = {};
        for (int64_t l = 0; l < count; ++l) {
          gl[l] = s.grad[(((p0 + l) / s.C) * J + j) * 3 + band];
        }
        acc_t* d = reinterpret_cast<acc_t*>(work[j].B(kBandSlot[band]));
        for (int64_t k = 0; k < n; ++k) {
          for (int64_t l = 0; l < V; ++l) {
            const acc_t a = d[k * V + l], gv = gl[l];
            d[k * V + l] = P == 2 ? acc_t(2) * a * gv
                                  : (a > acc_t(0) ? gv : a < acc_t(0) ? -gv : a * gv);
          }
        }
      }
      Vec* dst = j == 0 ? work[0].X() : work[j - 1].B(0);
      merge_core(plan, work[j], dst);
    }
    planes_out<scalar_t, acc_t, Bytes>(static_cast<const acc_t*>(work[0].x.data()), s.grad_x, s.C,
                                       p0, count, top.H, top.W);
  }
}

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void planes_energy_tasks_dispatch(const PlanesEnergyArgs<scalar_t>& s,
                                                  int64_t begin, int64_t end) {
  s.p == 2 ? planes_energy_tasks_impl<2, Bytes>(s, begin, end)
           : planes_energy_tasks_impl<1, Bytes>(s, begin, end);
}

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void planes_energy_backward_tasks_dispatch(
    const PlanesEnergyBackwardArgs<scalar_t>& s, int64_t begin, int64_t end) {
  s.p == 2 ? planes_energy_backward_tasks_impl<2, Bytes>(s, begin, end)
           : planes_energy_backward_tasks_impl<1, Bytes>(s, begin, end);
}
#endif

template <typename scalar_t>
WAVEFUSE_INLINE void energy_tasks_dispatch(const EnergyArgs<scalar_t>& s, int64_t begin,
                                           int64_t end) {
  s.p == 2 ? energy_tasks_impl<2>(s, begin, end) : energy_tasks_impl<1>(s, begin, end);
}

template <typename scalar_t>
WAVEFUSE_INLINE void energy_backward_tasks_dispatch(const EnergyBackwardArgs<scalar_t>& s,
                                                    int64_t begin, int64_t end) {
  s.p == 2 ? energy_backward_tasks_impl<2>(s, begin, end)
           : energy_backward_tasks_impl<1>(s, begin, end);
}

// One function per scalar type, each with an AVX2 clone (see separable.h, "vector loops").
#define WAVEFUSE_TASKS(name, Args, T)                                              \
  WAVEFUSE_SIMD_CLONES void name(const Args<T>& s, int64_t begin, int64_t end) { \
    name##_dispatch(s, begin, end);                                              \
  }
#define WAVEFUSE_ALL_TASKS(name, Args) \
  WAVEFUSE_TASKS(name, Args, float)    \
  WAVEFUSE_TASKS(name, Args, double)   \
  WAVEFUSE_TASKS(name, Args, at::Half) \
  WAVEFUSE_TASKS(name, Args, at::BFloat16)
WAVEFUSE_ALL_TASKS(energy_tasks, EnergyArgs)
WAVEFUSE_ALL_TASKS(energy_backward_tasks, EnergyBackwardArgs)
#if defined(__GNUC__)
WAVEFUSE_ALL_TASKS(planes_energy_tasks, PlanesEnergyArgs)
WAVEFUSE_ALL_TASKS(planes_energy_backward_tasks, PlanesEnergyBackwardArgs)
#endif
#undef WAVEFUSE_ALL_TASKS
#undef WAVEFUSE_TASKS

// The row-vector tasks for AVX-512 at the AVX2 width, with 32 registers (planes.h, avx512_tasks).
WAVEFUSE_V4_TASKS(energy_tasks, energy_tasks_dispatch, EnergyArgs)
WAVEFUSE_V4_TASKS(energy_backward_tasks, energy_backward_tasks_dispatch, EnergyBackwardArgs)

// The plane-vector tasks once more for AVX-512 (x86-64-v4) with 64-byte vectors: 16 float planes
// per group instead of 8, the same values bit for bit (planes.h, VecN), half the instructions per
// lane. On a Zen 4 core (which runs a 512-bit operation as two 256-bit halves) that still paid:
// db4 symmetric, 128x64x32x32, forward 6.3-6.9 -> 5.5-5.9 ms, forward + backward J=3 19.6-19.8 ->
// 17.6 ms, J=1 13.1 -> 12.2 ms; Haar, bound by memory, unchanged (interleaved in one process,
// 2026-12-04, 2-core EPYC VM).
#if defined(__GNUC__)
WAVEFUSE_WIDE_TASKS(planes_energy_tasks, planes_energy_tasks_dispatch, PlanesEnergyArgs)
WAVEFUSE_WIDE_TASKS(planes_energy_backward_tasks, planes_energy_backward_tasks_dispatch,
                    PlanesEnergyBackwardArgs)
#endif

void check_energy_args(const Tensor& x, const Tensor& filters, int64_t level, int64_t p) {
  check_input(x, "x");
  check_filters(filters);
  TORCH_CHECK(level >= 0, "wavefuse: level must be >= 0, got ", level);
  TORCH_CHECK(p == 1 || p == 2, "wavefuse: p must be 1 or 2, got ", p);
}

Tensor band_energy_cpu(const Tensor& x, const Tensor& filters, c10::string_view mode_name,
                       int64_t level, int64_t p) {
  check_energy_args(x, filters, level, p);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<double> partial(planes * level * 3, 0.0);
  if (planes > 0 && level > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_energy", [&] {
      using acc_t = at::opmath_type<scalar_t>;
#if defined(__GNUC__)
      if (use_planes_path(x.size(2), x.size(3))) {
        const PlanesEnergyArgs<scalar_t> s{
            view4<const scalar_t>(x),
            planes_cascade<acc_t>(filters, mode, x.size(2), x.size(3), level, /*with_merge=*/false),
            C, p, planes, partial.data()};
        for_plane_groups<acc_t>(
            planes, [&](int64_t b, int64_t e) { planes_energy_tasks(s, b, e); },
            [&](int64_t b, int64_t e) { planes_energy_tasks_wide(s, b, e); });
        return;
      }
#endif
      const EnergyArgs<scalar_t> s{view4<const scalar_t>(x),
                                   cascade<acc_t>(filters, mode, x.size(2), x.size(3), x.stride(3),
                                                  level, /*with_merge=*/false),
                                   C, p, partial.data()};
      parallel_tasks(
          planes, 1, [&](int64_t b, int64_t e) { energy_tasks(s, b, e); },
          [&](int64_t b, int64_t e) { energy_tasks_v4(s, b, e); });
    });
  }
  // channels in order, per sample: deterministic
  std::vector<double> sums(N * level * 3, 0.0);
  for (int64_t q = 0; q < planes; ++q) {
    for (int64_t k = 0; k < level * 3; ++k) sums[(q / C) * level * 3 + k] += partial[q * level * 3 + k];
  }
  Tensor out = at::empty({N, level, 3}, x.options().dtype(at::kDouble));
  std::copy(sums.begin(), sums.end(), out.data_ptr<double>());
  return out.to(acc_type);
}

Tensor band_energy_backward_cpu(const Tensor& grad, const Tensor& x, const Tensor& filters,
                                c10::string_view mode_name, int64_t level, int64_t p) {
  check_energy_args(x, filters, level, p);
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == x.size(0) && grad.size(1) == level &&
                  grad.size(2) == 3,
              "wavefuse: grad must be (N, level, 3) = (", x.size(0), ", ", level, ", 3), got ",
              grad.sizes());
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t N = x.size(0), C = x.size(1), planes = N * C;
  Tensor g = grad.to(acc_type).contiguous();
  Tensor grad_x = empty_4d(x, N, C, x.size(2), x.size(3));
  if (level == 0) return grad_x.zero_();  // nothing depends on x
  if (planes == 0 || grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_energy_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
#if defined(__GNUC__)
    if (use_planes_path(x.size(2), x.size(3))) {
      const PlanesEnergyBackwardArgs<scalar_t> s{
          view4<const scalar_t>(x),
          view4<scalar_t>(grad_x),
          planes_cascade<acc_t>(filters, mode, x.size(2), x.size(3), level, /*with_merge=*/false),
          planes_cascade<acc_t>(filters, mode, x.size(2), x.size(3), level, /*with_merge=*/true),
          static_cast<const acc_t*>(g.data_ptr()),
          C,
          p,
          planes};
      for_plane_groups<acc_t>(
          planes, [&](int64_t b, int64_t e) { planes_energy_backward_tasks(s, b, e); },
          [&](int64_t b, int64_t e) { planes_energy_backward_tasks_wide(s, b, e); });
      return;
    }
#endif
    const EnergyBackwardArgs<scalar_t> s{view4<const scalar_t>(x), view4<scalar_t>(grad_x),
                                         cascade<acc_t>(filters, mode, x.size(2), x.size(3),
                                                        x.stride(3), level, /*with_merge=*/true),
                                         static_cast<const acc_t*>(g.data_ptr()), C, p};
    parallel_tasks(
        planes, 1, [&](int64_t b, int64_t e) { energy_backward_tasks(s, b, e); },
        [&](int64_t b, int64_t e) { energy_backward_tasks_v4(s, b, e); });
  });
  return grad_x;
}

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CPU, m) {
  m.impl("_band_energy_kernel", &wavefuse::band_energy_cpu);
  m.impl("_band_energy_backward_kernel", &wavefuse::band_energy_backward_cpu);
}
