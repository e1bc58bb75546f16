// CPU kernel of the PGD update, in place on x_adv (contract: wavefuse/ops/pgd_step.py, schema in
// csrc/ops.cpp). torchattacks 3.5.1's update, op for op, in the compute type (float for the half
// types, rounded once at the end):
//
//   Linf  x' = x_adv + alpha * sign(g);  delta = clamp(x' - x, -eps, eps);  x_adv = clamp(x + delta, lo, hi)
//   L2    g' = g / (||g||_2 + 1e-10) per sample;  x' = x_adv + alpha * g';  delta = x' - x;
//         delta *= min((1 / ||delta||_2) * eps, 1) per sample (1 where ||delta|| = 0);
//         x_adv = clamp(x + delta, lo, hi)
//
// A NaN gradient entry propagates into x_adv (torch's sign(NaN) is 0, so torchattacks would take
// no step there and hide it; docs/edge_policies.md); clamp propagates NaN, as torch's does. Linf is one pass, parallel over (sample,
// channel) planes. L2 is parallel over samples: each sample's two norms are reduced (in a fixed
// order, so repeated calls agree bit for bit) and its update written by the task that owns it, no
// host sync and no atomics. eps, alpha, lo, hi are floats, or (N or 1, C or 1, 1, 1) tensors that
// replace them.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/flip.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>

#include "cpu/separable.h"

namespace wavefuse {
namespace {

// A bound: the float, or a (N or 1, C or 1, 1, 1) tensor in the compute type.
template <typename T>
struct Bound {
  T value;
  const T* data = nullptr;
  int64_t sn = 0, sc = 0;  // 0 along a broadcast dimension
  T at(int64_t n, int64_t c) const { return data == nullptr ? value : data[n * sn + c * sc]; }
};

template <typename T>
Bound<T> bound(double value, const std::optional<Tensor>& t) {
  if (!t.has_value()) return {static_cast<T>(value)};
  const Tensor& b = *t;
  return {T(0), static_cast<const T*>(b.data_ptr()), b.size(0) > 1 ? b.stride(0) : 0,
          b.size(1) > 1 ? b.stride(1) : 0};
}

template <typename T>
struct Bounds {
  Bound<T> eps, alpha, lo, hi;
};

// sign(g) with NaN kept (the reference's torch.where(g.isnan(), g, g.sign())); sign(+-0) = 0.
template <typename T>
WAVEFUSE_INLINE T sign_of(T g) {
  return g > T(0) ? T(1) : (g < T(0) ? T(-1) : (g != g ? g : T(0)));
}

// torch.clamp(v, min=a, max=b) = min(max(v, a), b), NaN kept.
template <typename T>
WAVEFUSE_INLINE T clamp_nan(T v, T a, T b) {
  if (v != v) return v;
  return std::min(std::max(v, a), b);
}

// torch.clamp(torch.clamp(v, min=lo), max=hi), NaN kept.
template <typename T>
WAVEFUSE_INLINE T clamp_lo_hi(T v, T lo, T hi) {
  if (v != v) return v;
  v = std::max(v, lo);
  return std::min(v, hi);
}

template <typename scalar_t>
struct StepArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<scalar_t> xa;
  View4<const scalar_t> g, x;
  Bounds<acc_t> b;
  int64_t C, H, W;
};

template <typename scalar_t>
WAVEFUSE_INLINE void linf_tasks_impl(const StepArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t n = p / s.C, c = p % s.C;
    const acc_t eps = s.b.eps.at(n, c), alpha = s.b.alpha.at(n, c);
    const acc_t lo = s.b.lo.at(n, c), hi = s.b.hi.at(n, c);
    scalar_t* xa = s.xa.plane(p, s.C);
    const scalar_t* g = s.g.plane(p, s.C);
    const scalar_t* x = s.x.plane(p, s.C);
    for (int64_t i = 0; i < s.H; ++i) {
      scalar_t* xa_r = xa + i * s.xa.sh;
      const scalar_t* g_r = g + i * s.g.sh;
      const scalar_t* x_r = x + i * s.x.sh;
      for (int64_t j = 0; j < s.W; ++j) {
        const acc_t xv = static_cast<acc_t>(x_r[j * s.x.sw]);
        const acc_t moved = static_cast<acc_t>(xa_r[j * s.xa.sw]) +
                            alpha * sign_of(static_cast<acc_t>(g_r[j * s.g.sw]));
        const acc_t delta = clamp_nan(moved - xv, -eps, eps);
        xa_r[j * s.xa.sw] = static_cast<scalar_t>(clamp_lo_hi(xv + delta, lo, hi));
      }
    }
  }
}

// Visits every element (c, i, j) of sample n in a fixed order: f(c, xa, g, x) with references.
template <typename scalar_t, typename F>
WAVEFUSE_INLINE void for_sample(const StepArgs<scalar_t>& s, int64_t n, F&& f) {
  for (int64_t c = 0; c < s.C; ++c) {
    const int64_t p = n * s.C + c;
    scalar_t* xa = s.xa.plane(p, s.C);
    const scalar_t* g = s.g.plane(p, s.C);
    const scalar_t* x = s.x.plane(p, s.C);
    for (int64_t i = 0; i < s.H; ++i) {
      for (int64_t j = 0; j < s.W; ++j) {
        f(c, xa[i * s.xa.sh + j * s.xa.sw], g[i * s.g.sh + j * s.g.sw], x[i * s.x.sh + j * s.x.sw]);
      }
    }
  }
}

// torchattacks PGDL2's eps_for_division.
constexpr double kL2Eps = 1e-10;

template <typename scalar_t>
WAVEFUSE_INLINE void l2_tasks_impl(const StepArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t n = begin; n < end; ++n) {
    double g2 = 0.0;  // the norms accumulate in double: well inside float32 rounding of torch's
    for_sample(s, n, [&](int64_t, scalar_t&, const scalar_t& g, const scalar_t&) {
      const double v = static_cast<acc_t>(g);
      g2 += v * v;
    });
    const acc_t denom = static_cast<acc_t>(std::sqrt(g2)) + static_cast<acc_t>(kL2Eps);
    auto moved = [&](int64_t c, const scalar_t& xa, const scalar_t& g) {
      return static_cast<acc_t>(xa) + s.b.alpha.at(n, c) * (static_cast<acc_t>(g) / denom);
    };
    double d2 = 0.0;
    for_sample(s, n, [&](int64_t c, scalar_t& xa, const scalar_t& g, const scalar_t& x) {
      const double d = moved(c, xa, g) - static_cast<acc_t>(x);
      d2 += d * d;
    });
    const acc_t dn = static_cast<acc_t>(std::sqrt(d2));
    const acc_t eps = s.b.eps.at(n, 0);
    const acc_t factor = dn == acc_t(0) ? acc_t(1) : std::min((acc_t(1) / dn) * eps, acc_t(1));
    for_sample(s, n, [&](int64_t c, scalar_t& xa, const scalar_t& g, const scalar_t& x) {
      const acc_t xv = static_cast<acc_t>(x);
      const acc_t delta = (moved(c, xa, g) - xv) * factor;
      xa = static_cast<scalar_t>(clamp_lo_hi(xv + delta, s.b.lo.at(n, c), s.b.hi.at(n, c)));
    });
  }
}

#define WAVEFUSE_TASKS(name, T)                                                         \
  WAVEFUSE_SIMD_CLONES void name(const StepArgs<T>& s, int64_t begin, int64_t end) { \
    name##_impl(s, begin, end);                                                     \
  }
#define WAVEFUSE_ALL_TASKS(name) \
  WAVEFUSE_TASKS(name, float)    \
  WAVEFUSE_TASKS(name, double)   \
  WAVEFUSE_TASKS(name, at::Half) \
  WAVEFUSE_TASKS(name, at::BFloat16)
WAVEFUSE_ALL_TASKS(linf_tasks)
WAVEFUSE_ALL_TASKS(l2_tasks)
#undef WAVEFUSE_ALL_TASKS
#undef WAVEFUSE_TASKS

void check_bound(const std::optional<Tensor>& t, const Tensor& x, const char* name) {
  if (!t.has_value()) return;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == x.size(0)) &&
                  (t->size(1) == 1 || t->size(1) == x.size(1)) && t->size(2) == 1 &&
                  t->size(3) == 1,
              "wavefuse: ", name, " must be (N or 1, C or 1, 1, 1), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == acc && t->device() == x.device(), "wavefuse: ", name,
              " must be a ", acc, " tensor on ", x.device());
}

void pgd_step_cpu(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                  double alpha, double lo, double hi, const std::optional<Tensor>& eps_tensor,
                  const std::optional<Tensor>& alpha_tensor,
                  const std::optional<Tensor>& lo_tensor, const std::optional<Tensor>& hi_tensor,
                  c10::string_view norm) {
  check_input(x_adv, "x_adv");
  TORCH_CHECK(grad.sizes() == x_adv.sizes() && x_nat.sizes() == x_adv.sizes(),
              "wavefuse: x_adv, grad and x_nat must share one shape");
  TORCH_CHECK(grad.scalar_type() == x_adv.scalar_type() &&
                  x_nat.scalar_type() == x_adv.scalar_type(),
              "wavefuse: x_adv, grad and x_nat must share one dtype");
  const bool l2 = norm == "L2";
  TORCH_CHECK(l2 || norm == "Linf", "wavefuse: norm must be Linf or L2, got ", std::string(norm));
  check_bound(eps_tensor, x_adv, "eps_tensor");
  check_bound(alpha_tensor, x_adv, "alpha_tensor");
  check_bound(lo_tensor, x_adv, "lo_tensor");
  check_bound(hi_tensor, x_adv, "hi_tensor");
  TORCH_CHECK(!l2 || !eps_tensor.has_value() || eps_tensor->size(1) == 1,
              "wavefuse: for L2, eps_tensor has one entry per sample");
  if (x_adv.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_pgd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepArgs<scalar_t> s{
        view4<scalar_t>(x_adv),
        view4<const scalar_t>(grad),
        view4<const scalar_t>(x_nat),
        {bound<acc_t>(eps, eps_tensor), bound<acc_t>(alpha, alpha_tensor),
         bound<acc_t>(lo, lo_tensor), bound<acc_t>(hi, hi_tensor)},
        x_adv.size(1), x_adv.size(2), x_adv.size(3)};
    if (l2) {
      at::parallel_for(0, x_adv.size(0), 1, [&](int64_t b, int64_t e) { l2_tasks(s, b, e); });
    } else {
      at::parallel_for(0, x_adv.size(0) * x_adv.size(1), 1,
                       [&](int64_t b, int64_t e) { linf_tasks(s, b, e); });
    }
  });
}

// ---- wavelet_pgd_step: pgd_step on g' = idwt(scale_hf(dwt(g))) ---------------------------------
// g' is built from this library's own CPU transform kernels (one analysis and one synthesis pass
// per level, each level cropped to the size it analysed, as reference.scale_details_ref), in the
// compute type; the step then runs on it. Half types step in float32 on float32 copies of x_adv
// and x_nat and round once, as the reference does (rounding g' to half first could flip the sign
// of its tiny entries). Not yet one fused pass: a Haar single-pass kernel is future work.

Tensor scale_details(const Tensor& g, const Tensor& filters, c10::string_view mode, int64_t level,
                     at::ArrayRef<double> hf_scale) {
  static const auto dwt = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("wavefuse::_dwt2d_kernel", "")
                              .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&,
                                                                c10::string_view)>();
  static const auto idwt =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("wavefuse::_idwt2d_kernel", "")
          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, c10::string_view)>();
  Tensor a = g;
  std::vector<Tensor> details;
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (int64_t j = 0; j < level; ++j) {
    sizes.emplace_back(a.size(2), a.size(3));
    auto [ll, hi] = dwt.call(a, filters, mode);
    details.push_back(hi);
    a = ll;
  }
  const Tensor rec = at::flip(filters, {-1});
  for (int64_t j = level - 1; j >= 0; --j) {
    a = idwt.call(a, details[j].mul(hf_scale[j]), rec, mode);
    a = a.narrow(2, 0, sizes[j].first).narrow(3, 0, sizes[j].second);
  }
  return a;
}

void wavelet_pgd_step_cpu(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                          double alpha, double lo, double hi,
                          const std::optional<Tensor>& eps_tensor,
                          const std::optional<Tensor>& alpha_tensor,
                          const std::optional<Tensor>& lo_tensor,
                          const std::optional<Tensor>& hi_tensor, const Tensor& filters,
                          c10::string_view wave_mode, int64_t level, at::ArrayRef<double> hf_scale,
                          c10::string_view norm) {
  check_input(x_adv, "x_adv");
  check_filters(filters);
  TORCH_CHECK(level >= 0 && static_cast<int64_t>(hf_scale.size()) == level,
              "wavefuse: hf_scale must have one entry per level (", level, "), got ",
              hf_scale.size());
  TORCH_CHECK(grad.sizes() == x_adv.sizes(), "wavefuse: grad must have x_adv's shape");
  const auto acc = x_adv.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const Tensor g = scale_details(grad.to(acc), filters.to(acc), wave_mode, level, hf_scale);
  if (x_adv.scalar_type() == acc) {
    pgd_step_cpu(x_adv, g, x_nat, eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor,
                 hi_tensor, norm);
    return;
  }
  const Tensor xa = x_adv.to(acc);
  pgd_step_cpu(xa, g, x_nat.to(acc), eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor,
               hi_tensor, norm);
  x_adv.copy_(xa);
}

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CPU, m) {
  m.impl("_pgd_step_kernel", &wavefuse::pgd_step_cpu);
  m.impl("_wavelet_pgd_step_kernel", &wavefuse::wavelet_pgd_step_cpu);
}
