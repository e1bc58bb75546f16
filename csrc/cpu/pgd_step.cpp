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
#include <ATen/MemoryOverlap.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "cpu/separable.h"
#include "cpu/planes.h"

namespace wavefuse {
namespace {

// One function per scalar type for each kind of task, each with an AVX2 clone (separable.h,
// "vector loops").
#define WAVEFUSE_TASKS(name, Args, T)                                              \
  WAVEFUSE_SIMD_CLONES void name(const Args<T>& a, int64_t begin, int64_t end) { \
    name##_impl(a, begin, end);                                                  \
  }
#define WAVEFUSE_ALL_TASKS(name, Args) \
  WAVEFUSE_TASKS(name, Args, float)    \
  WAVEFUSE_TASKS(name, Args, double)   \
  WAVEFUSE_TASKS(name, Args, at::Half) \
  WAVEFUSE_TASKS(name, Args, at::BFloat16)

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

template <typename scalar_t>
struct StepArgs {
  using acc_t = at::opmath_type<scalar_t>;
  View4<scalar_t> xa;
  View4<const scalar_t> g, x;
  Bounds<acc_t> b;
  int64_t C, H, W;
};

// The reference's sign and clamps as selects, so the row loops vectorise (branching on the sign
// of a random gradient mispredicts half the time). sign_select: torch.where(g.isnan(), g,
// g.sign()), sign(+-0) = 0. clamp_select: torch.clamp(v, min=lo, max=hi) = min(max(v, lo), hi)
// with NaN kept (a comparison with a NaN v is false, so v passes both selects; bounds are never
// NaN), the same values as torch.clamp(torch.clamp(v, min=lo), max=hi).
template <typename T>
WAVEFUSE_INLINE T sign_select(T g) {
  const T s = T(g > T(0)) - T(g < T(0));
  return g != g ? g : s;
}

template <typename T>
WAVEFUSE_INLINE T clamp_select(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

// One Linf row as the reference: delta = clamp(x_adv + alpha sign(g) - x, -eps, eps), then lo/hi.
// Unit: every element stride is 1, so the loop vectorises.
template <bool Unit, typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void linf_step_row(scalar_t* __restrict__ xa, const scalar_t* __restrict__ g,
                                   const scalar_t* __restrict__ x, int64_t sa, int64_t sg,
                                   int64_t sx, int64_t n, acc_t eps, acc_t alpha, acc_t lo,
                                   acc_t hi) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t ja = Unit ? j : j * sa, jg = Unit ? j : j * sg, jx = Unit ? j : j * sx;
    const acc_t xv = static_cast<acc_t>(x[jx]);
    const acc_t moved = static_cast<acc_t>(xa[ja]) + alpha * sign_select(static_cast<acc_t>(g[jg]));
    const acc_t delta = clamp_select(moved - xv, -eps, eps);
    xa[ja] = static_cast<scalar_t>(clamp_select(xv + delta, lo, hi));
  }
}

template <typename scalar_t>
WAVEFUSE_INLINE void linf_tasks_impl(const StepArgs<scalar_t>& s, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const bool unit = s.xa.sw == 1 && s.g.sw == 1 && s.x.sw == 1;
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
      if (unit) {
        linf_step_row<true>(xa_r, g_r, x_r, 1, 1, 1, s.W, eps, alpha, lo, hi);
      } else {
        linf_step_row<false>(xa_r, g_r, x_r, s.xa.sw, s.g.sw, s.x.sw, s.W, eps, alpha, lo, hi);
      }
    }
  }
}

// Sums of squares in kSumLanes independent double partial sums (lane q % kSumLanes of a row),
// combined in a fixed order: the loops vectorise (a single running sum is one long dependency
// chain) and the result depends only on the data, never on the thread count or on timing.
constexpr int kSumLanes = 8;

template <typename F>
WAVEFUSE_INLINE void add_squares_of(double* __restrict__ lanes, int64_t n, F&& value) {
  const int64_t body = n - n % kSumLanes;
  for (int64_t q = 0; q < body; q += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) {
      const double d = value(q + l);
      lanes[l] += d * d;
    }
  }
  for (int64_t q = body; q < n; ++q) {
    const double d = value(q);
    lanes[q - body] += d * d;
  }
}

template <typename acc_t>
WAVEFUSE_INLINE void add_squares(double* __restrict__ lanes, const acc_t* __restrict__ v,
                                 int64_t n) {
  add_squares_of(lanes, n, [&](int64_t q) { return static_cast<double>(v[q]); });
}

WAVEFUSE_INLINE double sum_lanes(const double* lanes) {
  double sum = 0.0;
  for (int l = 0; l < kSumLanes; ++l) sum += lanes[l];
  return sum;
}

// torchattacks PGDL2's eps_for_division.
constexpr double kL2Eps = 1e-10;

// One sample per task: ||g|| (pass 1), ||x_adv + alpha g / denom - x|| (pass 2), then the update
// (pass 3), row by row in a fixed order; U: every element stride is 1 (the loops vectorise).
template <bool U, typename scalar_t>
WAVEFUSE_INLINE void l2_sample(const StepArgs<scalar_t>& s, int64_t n) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t W = s.W, sa = s.xa.sw, sg = s.g.sw, sx = s.x.sw;
  auto rows = [&](auto&& f) {  // f(c, xa row, g row, x row) for every row of sample n, in order
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t p = n * s.C + c;
      scalar_t* xa = s.xa.plane(p, s.C);
      const scalar_t* g = s.g.plane(p, s.C);
      const scalar_t* x = s.x.plane(p, s.C);
      for (int64_t i = 0; i < s.H; ++i) f(c, xa + i * s.xa.sh, g + i * s.g.sh, x + i * s.x.sh);
    }
  };
  double lanes[kSumLanes] = {};
  rows([&](int64_t, scalar_t*, const scalar_t* g, const scalar_t*) {
    add_squares_of(lanes, W, [&](int64_t q) {
      return static_cast<double>(static_cast<acc_t>(g[U ? q : q * sg]));
    });
  });
  const acc_t denom =
      static_cast<acc_t>(std::sqrt(sum_lanes(lanes))) + static_cast<acc_t>(kL2Eps);
  for (double& l : lanes) l = 0.0;
  rows([&](int64_t c, scalar_t* xa, const scalar_t* g, const scalar_t* x) {
    const acc_t alpha = s.b.alpha.at(n, c);
    add_squares_of(lanes, W, [&](int64_t q) {
      const acc_t moved = static_cast<acc_t>(xa[U ? q : q * sa]) +
                          alpha * (static_cast<acc_t>(g[U ? q : q * sg]) / denom);
      return static_cast<double>(moved - static_cast<acc_t>(x[U ? q : q * sx]));
    });
  });
  const acc_t dn = static_cast<acc_t>(std::sqrt(sum_lanes(lanes)));
  const acc_t eps = s.b.eps.at(n, 0);
  const acc_t factor = dn == acc_t(0) ? acc_t(1) : std::min((acc_t(1) / dn) * eps, acc_t(1));
  rows([&](int64_t c, scalar_t* xa, const scalar_t* g, const scalar_t* x) {
    const acc_t alpha = s.b.alpha.at(n, c), lo = s.b.lo.at(n, c), hi = s.b.hi.at(n, c);
    for (int64_t q = 0; q < W; ++q) {
      const acc_t xv = static_cast<acc_t>(x[U ? q : q * sx]);
      const acc_t moved = static_cast<acc_t>(xa[U ? q : q * sa]) +
                          alpha * (static_cast<acc_t>(g[U ? q : q * sg]) / denom);
      xa[U ? q : q * sa] = static_cast<scalar_t>(clamp_select(xv + (moved - xv) * factor, lo, hi));
    }
  });
}

template <typename scalar_t>
WAVEFUSE_INLINE void l2_tasks_impl(const StepArgs<scalar_t>& s, int64_t begin, int64_t end) {
  const bool unit = s.xa.sw == 1 && s.g.sw == 1 && s.x.sw == 1;
  for (int64_t n = begin; n < end; ++n) {
    if (unit) {
      l2_sample<true>(s, n);
    } else {
      l2_sample<false>(s, n);
    }
  }
}

WAVEFUSE_ALL_TASKS(linf_tasks, StepArgs)
WAVEFUSE_ALL_TASKS(l2_tasks, StepArgs)

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

// The checks both step kernels share; returns whether the norm is L2.
bool check_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                const std::optional<Tensor>& eps_tensor, const std::optional<Tensor>& alpha_tensor,
                const std::optional<Tensor>& lo_tensor, const std::optional<Tensor>& hi_tensor,
                c10::string_view norm) {
  check_input(x_adv, "x_adv");
  TORCH_CHECK(grad.sizes() == x_adv.sizes() && x_nat.sizes() == x_adv.sizes(),
              "wavefuse: x_adv, grad and x_nat must share one shape");
  TORCH_CHECK(grad.scalar_type() == x_adv.scalar_type() &&
                  x_nat.scalar_type() == x_adv.scalar_type(),
              "wavefuse: x_adv, grad and x_nat must share one dtype");
  // In place from parallel tasks: an x_adv whose elements overlap (expanded), or that overlaps
  // grad or x_nat, would race (the Python layer says so first, in eager mode; this covers direct
  // calls of the op and compiled graphs).
  at::assert_no_internal_overlap(x_adv);
  at::assert_no_overlap(x_adv, grad);
  at::assert_no_overlap(x_adv, x_nat);
  const bool l2 = norm == "L2";
  TORCH_CHECK(l2 || norm == "Linf", "wavefuse: norm must be Linf or L2, got ", std::string(norm));
  check_bound(eps_tensor, x_adv, "eps_tensor");
  check_bound(alpha_tensor, x_adv, "alpha_tensor");
  check_bound(lo_tensor, x_adv, "lo_tensor");
  check_bound(hi_tensor, x_adv, "hi_tensor");
  TORCH_CHECK(!l2 || !eps_tensor.has_value() || eps_tensor->size(1) == 1,
              "wavefuse: for L2, eps_tensor has one entry per sample");
  return l2;
}

void pgd_step_cpu(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                  double alpha, double lo, double hi, const std::optional<Tensor>& eps_tensor,
                  const std::optional<Tensor>& alpha_tensor,
                  const std::optional<Tensor>& lo_tensor, const std::optional<Tensor>& hi_tensor,
                  c10::string_view norm) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
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
// Two paths, chosen per call by the filter bank (haar_fusable):
//   * a two-tap orthogonal bank (haar, db1): ONE fused pass per block row (haar_step, below) for
//     every mode, level and size (odd, 1 x 1, smaller than 2^J), any strides (contiguous,
//     channels_last, slices), every dtype and both norms: grad is read once, no band is formed,
//     x_adv is stepped in place (L2: that pass caches g', two more passes over it for the norms).
//   * any other bank (db2 and longer, or a two-tap bank that is not orthogonal): ONE pass per
//     plane (or per group of kLanes small planes) runs the whole cascade of
//     reference.scale_details_ref in task-local buffers (the analysis and synthesis blocks of
//     dwt2d / idwt2d, each synthesis cropped to the size its level analysed) and steps each row
//     of g' as it comes out (Linf); L2 writes g' in the compute type and steps it with
//     pgd_step's L2 pass. No band reaches memory (bank_filter_plane, below). Half types compute
//     in float32 and round x_adv once, as the reference does (rounding g' to half first could
//     flip the sign of its tiny entries).

// ---- Haar: the whole wavelet step in one pass ---------------------------------------------------
// With a two-tap orthogonal bank (haar, db1) a level pairs samples (2k, 2k + 1) of each axis and
// nothing else, so a block of 2^J x 2^J input samples holds its whole J-level cascade, and the
// only data a boundary brings in is ONE extension sample at the end of an odd axis (position n):
// zero 0; symmetric and periodization x[n-1]; reflect x[n-2]; periodic x[0] (common.h's maps at
// p = n). Synthesis lengths are 2K for every mode, cropped back to n. No band is formed: with
// w = (dec_lo[1], dec_lo[0]) the weights of samples (2k, 2k + 1), the level-j approximation is
//   a_j[i][k] = w0 (w0 a[2i][2k] + w1 a[2i][2k+1]) + w1 (w0 a[2i+1][2k] + w1 a[2i+1][2k+1])
// (a = a_{j-1} extended, W pass then H pass as the reference), its upsampling is
// U(v)[p][q] = w[p&1] w[q&1] v[p/2][q/2], and since the bank is orthogonal (the synthesis of all
// four bands restores a_{j-1}), scaling level j's three detail bands by s_j is
//   ã_{j-1} = s_j a_{j-1} + U(ã_j - s_j a_j),   ã_J = a_J,   g' = ã_0.
// Carried downwards as d_j = ã_j - s_j a_j = (s_{j+1} - s_j) a_j + U(d_{j+1}) (s_{J+1} = 1,
// d_J = (1 - s_J) a_J) and g' = d_0 with s_0 = 0, every level is one multiply-add per sample and
// needs only the approximations a_0..a_J of the block. This equals scale_details_ref (the transform
// kernels' composition) up to floating-point rounding; a NaN spreads over the same samples (the
// 2^J block it falls in, and every block whose extension sample reads it), since 0 * NaN = NaN.
// An infinite gradient entry is non-finite over the same samples too, but where the four-band
// synthesis meets inf - inf (NaN) this form may keep +-inf, a full sign step for Linf
// (docs/edge_policies.md).
//
// A task is one block row (2^J input rows, the whole width; one row block of H when 2^J >= H) of
// one plane: it loads grad once into a buffer in the compute type, builds the approximation
// pyramid, carries d down to g', and steps. Along W the extension is always inside the task. Along
// H it is too, except reflect and periodic at the last block row of a level that has one row of
// its own there (reflect reads row n-2, periodic row 0 of that level): that row is recomputed
// from grad (haar_row, at most 2^(j-1) input rows). Linf steps directly (one pass). L2 needs the
// sample norms first; per group of samples (kL2Group elements, so the group's data stay in
// cache) the filter pass writes g' to a scratch buffer in the compute type with one partial sum
// of squares per task, then the delta pass (partials of ||delta||^2) and the write pass read it
// back. One extra write and two cached reads cost less than running the cascade three times.
// Partials are summed per sample in task order (and per task in kSumLanes fixed lanes): the same
// bits for any thread count, no atomics.

// The sample that extends an odd axis of n samples (read at position n), two taps; -1: zero.
inline int64_t haar_extension(Mode mode, int64_t n) {
  return mode == Mode::Periodization ? periodization_index<int64_t>(n, n)
                                     : extend_index<int64_t>(mode, n, n);
}

template <typename acc_t>
struct HaarPlan {
  Mode mode;
  int64_t J, B, blocks;               // levels, input rows per block row, block rows per plane
  acc_t w0, w1;                       // weights of samples 2k and 2k + 1 (analysis, upsampling)
  std::vector<acc_t> coef;            // level j = 0..J: s_{j+1} - s_j (s_0 = 0, s_{J+1} = 1)
  std::vector<int64_t> h, w;          // level j = 0..J: rows and columns of a_j
  std::vector<int64_t> ext_h, ext_w;  // level j: the extension row / column source of a_j
  std::vector<int64_t> off;           // level j: a_j's rows in a task's buffer (stride w[j] + 1)
  int64_t zero_row, work;             // offset of a row of zeros; elements of a task's buffer
  // Rows [start(j, r0), end(j, r1)) of a_j belong to the block row of input rows [r0, r1).
  int64_t start(int64_t j, int64_t r0) const { return j >= 62 ? 0 : r0 >> j; }
  int64_t end(int64_t j, int64_t r1) const { return j >= 62 ? 1 : ((r1 - 1) >> j) + 1; }
};

template <typename scalar_t>
struct HaarArgs {
  using acc_t = at::opmath_type<scalar_t>;
  StepArgs<scalar_t> s;
  const HaarPlan<acc_t>* plan;
  acc_t* scratch;        // L2: g' of the planes p0, p0 + 1, ... of a group, (H, W) each
  int64_t p0;
  double* partials;      // L2: one sum per task
  const acc_t* denom;    // L2: per sample, ||g'|| + 1e-10
  const acc_t* factor;   // L2: per sample, the projection factor
};

template <typename acc_t>
WAVEFUSE_INLINE void extend_row(acc_t* row, int64_t n, int64_t src) {
  if (n & 1) row[n] = src < 0 ? acc_t(0) : row[src];
}

template <typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void load_row(const scalar_t* __restrict__ src, int64_t sw, int64_t n,
                              acc_t* __restrict__ out) {
  if (sw == 1) {
    for (int64_t q = 0; q < n; ++q) out[q] = static_cast<acc_t>(src[q]);
  } else {
    for (int64_t q = 0; q < n; ++q) out[q] = static_cast<acc_t>(src[q * sw]);
  }
}

// out[k] = a_j[i][k] for k < n from rows 2i (a) and 2i + 1 (b) of a_{j-1}, both extended.
template <typename acc_t>
WAVEFUSE_INLINE void pair_rows(const acc_t* __restrict__ a, const acc_t* __restrict__ b,
                               acc_t* __restrict__ out, int64_t n, acc_t w0, acc_t w1) {
  for (int64_t k = 0; k < n; ++k) {
    const acc_t ta = w0 * a[2 * k] + w1 * a[2 * k + 1];
    const acc_t tb = w0 * b[2 * k] + w1 * b[2 * k + 1];
    out[k] = w0 * ta + w1 * tb;
  }
}

// row[q] = c row[q] + u[q&1] d[q/2] for q < n: a_j's row becomes d_j's (u = w[p&1] w).
template <typename acc_t>
WAVEFUSE_INLINE void carry_row(acc_t* __restrict__ row, const acc_t* __restrict__ d, int64_t n,
                               acc_t c, acc_t u0, acc_t u1) {
  const int64_t pairs = n / 2;
  if (c == acc_t(0)) {  // the term is absent (equal scales at two levels): never 0 * inf = NaN
    for (int64_t k = 0; k < pairs; ++k) {
      row[2 * k] = u0 * d[k];
      row[2 * k + 1] = u1 * d[k];
    }
    if (n & 1) row[n - 1] = u0 * d[pairs];
    return;
  }
  for (int64_t k = 0; k < pairs; ++k) {
    row[2 * k] = c * row[2 * k] + u0 * d[k];
    row[2 * k + 1] = c * row[2 * k + 1] + u1 * d[k];
  }
  if (n & 1) row[n - 1] = c * row[n - 1] + u0 * d[pairs];
}

// Row r of a_j (extended), recomputed from grad: the rare boundary row of reflect and periodic
// that lies in another block row (2^j input rows; recursion depth j).
template <typename scalar_t, typename acc_t>
void haar_row(const HaarPlan<acc_t>& pl, const scalar_t* g, int64_t sh, int64_t sw, int64_t j,
              int64_t r, acc_t* out) {
  if (j == 0) {
    load_row(g + r * sh, sw, pl.w[0], out);
  } else {
    std::vector<acc_t> a(pl.w[j - 1] + 1), b(pl.w[j - 1] + 1, acc_t(0));
    haar_row(pl, g, sh, sw, j - 1, 2 * r, a.data());
    const int64_t src = 2 * r + 1 < pl.h[j - 1] ? 2 * r + 1 : pl.ext_h[j - 1];
    if (src >= 0) haar_row(pl, g, sh, sw, j - 1, src, b.data());
    pair_rows(a.data(), b.data(), out, pl.w[j], pl.w0, pl.w1);
  }
  extend_row(out, pl.w[j], pl.ext_w[j]);
}

// g' of input rows [r0, r1) of plane p (block row b) into the task buffer's level 0 (stride
// w[0] + 1). Returns the rows.
template <typename scalar_t, typename acc_t>
WAVEFUSE_INLINE std::pair<int64_t, int64_t> haar_filter_block(const HaarArgs<scalar_t>& t,
                                                              int64_t p, int64_t b, acc_t* buf,
                                                              Buffer<acc_t>& spare) {
  const HaarPlan<acc_t>& pl = *t.plan;
  const StepArgs<scalar_t>& s = t.s;
  const int64_t r0 = b * pl.B, r1 = std::min(r0 + pl.B, s.H), J = pl.J;
  const scalar_t* g = s.g.plane(p, s.C);
  acc_t* a0 = buf + pl.off[0];
  for (int64_t r = r0; r < r1; ++r) {
    acc_t* row = a0 + (r - r0) * (pl.w[0] + 1);
    load_row(g + r * s.g.sh, s.g.sw, pl.w[0], row);
    extend_row(row, pl.w[0], pl.ext_w[0]);
  }
  for (int64_t j = 1; j <= J; ++j) {  // analysis: the approximation pyramid
    const int64_t ps = pl.start(j - 1, r0), pe = pl.end(j - 1, r1);
    const int64_t cs = pl.start(j, r0), ce = pl.end(j, r1);
    const int64_t sp = pl.w[j - 1] + 1, sc = pl.w[j] + 1;
    const acc_t* prev = buf + pl.off[j - 1];
    acc_t* cur = buf + pl.off[j];
    for (int64_t i = cs; i < ce; ++i) {
      const acc_t* ra = prev + (2 * i - ps) * sp;
      const acc_t* rb = ra + sp;
      if (2 * i + 1 == pe) {  // the last row of an odd a_{j-1} (pe = h[j-1]): extend
        const int64_t e = pl.ext_h[j - 1];
        if (e < 0) {
          rb = buf + pl.zero_row;
        } else if (e >= ps) {
          rb = prev + (e - ps) * sp;
        } else {
          spare.resize(sp);
          haar_row(pl, g, s.g.sh, s.g.sw, j - 1, e, spare.data());
          rb = spare.data();
        }
      }
      acc_t* out = cur + (i - cs) * sc;
      pair_rows(ra, rb, out, pl.w[j], pl.w0, pl.w1);
      extend_row(out, pl.w[j], pl.ext_w[j]);
    }
  }
  for (int64_t j = J; j >= 0; --j) {  // synthesis: d_j, down to d_0 = g'
    const int64_t cs = pl.start(j, r0), ce = pl.end(j, r1), sc = pl.w[j] + 1;
    acc_t* cur = buf + pl.off[j];
    const acc_t c = pl.coef[j];
    if (j == J) {
      for (int64_t i = cs; i < ce; ++i) {
        acc_t* row = cur + (i - cs) * sc;
        for (int64_t q = 0; q < pl.w[j]; ++q) row[q] = c == acc_t(0) ? acc_t(0) : c * row[q];
      }
      continue;
    }
    const int64_t ns = pl.start(j + 1, r0), sn = pl.w[j + 1] + 1;
    const acc_t* next = buf + pl.off[j + 1];
    for (int64_t i = cs; i < ce; ++i) {
      const acc_t wi = (i & 1) ? pl.w1 : pl.w0;
      carry_row(cur + (i - cs) * sc, next + ((i >> 1) - ns) * sn, pl.w[j], c, wi * pl.w0,
                wi * pl.w1);
    }
  }
  return {r0, r1};
}

// Linf on one row: x_adv (element stride sa) from g' and x_nat (stride sx); Unit: both 1.
template <bool Unit, typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void linf_row(scalar_t* __restrict__ xa, const scalar_t* __restrict__ x,
                              const acc_t* __restrict__ g, int64_t sa, int64_t sx, int64_t n,
                              acc_t eps, acc_t alpha, acc_t lo, acc_t hi) {
  for (int64_t q = 0; q < n; ++q) {
    const int64_t ia = Unit ? q : q * sa, ix = Unit ? q : q * sx;
    const acc_t xv = static_cast<acc_t>(x[ix]);
    const acc_t moved = static_cast<acc_t>(xa[ia]) + alpha * sign_select(g[q]);
    const acc_t delta = clamp_select(moved - xv, -eps, eps);
    xa[ia] = static_cast<scalar_t>(clamp_select(xv + delta, lo, hi));
  }
}

// Linf on row r of plane p from that row of g' (compute type, unit stride).
template <typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void linf_plane_row(const StepArgs<scalar_t>& s, int64_t p, int64_t r,
                                    const acc_t* g) {
  const int64_t n = p / s.C, c = p % s.C;
  const acc_t eps = s.b.eps.at(n, c), alpha = s.b.alpha.at(n, c);
  const acc_t lo = s.b.lo.at(n, c), hi = s.b.hi.at(n, c);
  scalar_t* xa = s.xa.plane(p, s.C) + r * s.xa.sh;
  const scalar_t* x = s.x.plane(p, s.C) + r * s.x.sh;
  if (s.xa.sw == 1 && s.x.sw == 1) {
    linf_row<true>(xa, x, g, 1, 1, s.W, eps, alpha, lo, hi);
  } else {
    linf_row<false>(xa, x, g, s.xa.sw, s.x.sw, s.W, eps, alpha, lo, hi);
  }
}

// L2 on one row: delta = x_adv + alpha * g' / denom - x_nat; Write: x_adv = clamp(x_nat +
// factor * delta), else delta into out.
template <bool Write, bool Unit, typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void l2_row(scalar_t* __restrict__ xa, const scalar_t* __restrict__ x,
                            const acc_t* __restrict__ g, acc_t* __restrict__ out, int64_t sa,
                            int64_t sx, int64_t n, acc_t alpha, acc_t denom, acc_t factor,
                            acc_t lo, acc_t hi) {
  for (int64_t q = 0; q < n; ++q) {
    const int64_t ia = Unit ? q : q * sa, ix = Unit ? q : q * sx;
    const acc_t xv = static_cast<acc_t>(x[ix]);
    const acc_t delta = static_cast<acc_t>(xa[ia]) + alpha * (g[q] / denom) - xv;
    if constexpr (Write) {
      xa[ia] = static_cast<scalar_t>(clamp_select(xv + delta * factor, lo, hi));
    } else {
      out[q] = delta;
    }
  }
}


template <typename scalar_t>
WAVEFUSE_INLINE void haar_linf_tasks_impl(const HaarArgs<scalar_t>& t, int64_t begin,
                                          int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const StepArgs<scalar_t>& s = t.s;
  const HaarPlan<acc_t>& pl = *t.plan;
  Buffer<acc_t> buf(pl.work, acc_t(0)), spare;
  for (int64_t u = begin; u < end; ++u) {
    const int64_t p = u / pl.blocks;
    const auto [r0, r1] = haar_filter_block(t, p, u % pl.blocks, buf.data(), spare);
    for (int64_t r = r0; r < r1; ++r) {
      linf_plane_row(s, p, r, static_cast<const acc_t*>(buf.data() + pl.off[0] +
                                                         (r - r0) * (pl.w[0] + 1)));
    }
  }
}

// L2, pass 1: g' of each task into the scratch buffer, and the task's sum of g'^2 (in double, as
// l2_tasks).
template <typename scalar_t>
WAVEFUSE_INLINE void haar_l2_filter_tasks_impl(const HaarArgs<scalar_t>& t, int64_t begin,
                                               int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const StepArgs<scalar_t>& s = t.s;
  const HaarPlan<acc_t>& pl = *t.plan;
  Buffer<acc_t> buf(pl.work, acc_t(0)), spare;
  for (int64_t u = begin; u < end; ++u) {
    const int64_t p = u / pl.blocks;
    const auto [r0, r1] = haar_filter_block(t, p, u % pl.blocks, buf.data(), spare);
    double lanes[kSumLanes] = {};
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t* g = buf.data() + pl.off[0] + (r - r0) * (pl.w[0] + 1);
      std::copy(g, g + s.W, t.scratch + ((p - t.p0) * s.H + r) * s.W);
      add_squares(lanes, g, s.W);
    }
    t.partials[u] = sum_lanes(lanes);
  }
}

// L2, passes 2 (Write = false: the task's sum of delta^2) and 3 (write x_adv), over the scratch.
template <bool Write, typename scalar_t>
WAVEFUSE_INLINE void haar_l2_step_tasks_impl(const HaarArgs<scalar_t>& t, int64_t begin,
                                             int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const StepArgs<scalar_t>& s = t.s;
  const HaarPlan<acc_t>& pl = *t.plan;
  const bool unit = s.xa.sw == 1 && s.x.sw == 1;
  std::vector<acc_t> delta(Write ? 0 : s.W);
  for (int64_t u = begin; u < end; ++u) {
    const int64_t p = u / pl.blocks, n = p / s.C, c = p % s.C;
    const int64_t r0 = (u % pl.blocks) * pl.B, r1 = std::min(r0 + pl.B, s.H);
    const acc_t alpha = s.b.alpha.at(n, c), denom = t.denom[n];
    const acc_t factor = Write ? t.factor[n] : acc_t(0);
    const acc_t lo = s.b.lo.at(n, c), hi = s.b.hi.at(n, c);
    scalar_t* xa = s.xa.plane(p, s.C);
    const scalar_t* x = s.x.plane(p, s.C);
    double lanes[kSumLanes] = {};
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t* g = t.scratch + ((p - t.p0) * s.H + r) * s.W;
      scalar_t* xa_r = xa + r * s.xa.sh;
      const scalar_t* x_r = x + r * s.x.sh;
      if (unit) {
        l2_row<Write, true>(xa_r, x_r, g, delta.data(), 1, 1, s.W, alpha, denom, factor, lo, hi);
      } else {
        l2_row<Write, false>(xa_r, x_r, g, delta.data(), s.xa.sw, s.x.sw, s.W, alpha, denom,
                             factor, lo, hi);
      }
      if constexpr (!Write) add_squares(lanes, delta.data(), s.W);
    }
    if constexpr (!Write) t.partials[u] = sum_lanes(lanes);
  }
}

template <typename scalar_t>
WAVEFUSE_INLINE void haar_l2_delta_tasks_impl(const HaarArgs<scalar_t>& t, int64_t begin,
                                              int64_t end) {
  haar_l2_step_tasks_impl<false>(t, begin, end);
}

template <typename scalar_t>
WAVEFUSE_INLINE void haar_l2_write_tasks_impl(const HaarArgs<scalar_t>& t, int64_t begin,
                                              int64_t end) {
  haar_l2_step_tasks_impl<true>(t, begin, end);
}

WAVEFUSE_ALL_TASKS(haar_linf_tasks, HaarArgs)
WAVEFUSE_ALL_TASKS(haar_l2_filter_tasks, HaarArgs)
WAVEFUSE_ALL_TASKS(haar_l2_delta_tasks, HaarArgs)
WAVEFUSE_ALL_TASKS(haar_l2_write_tasks, HaarArgs)

// The fused path takes any two-tap bank whose analysis matrix [dec_lo reversed; dec_hi reversed]
// is orthogonal to a few ulps of the compute type (haar and db1 from PyWavelets): the synthesis
// of all four bands then restores the signal, which the carried form above relies on.
bool haar_fusable(const Tensor& filters, at::ScalarType acc) {
  if (filters.size(1) != 2) return false;
  const Tensor f = filters.to(at::kDouble).contiguous();
  const double* h = static_cast<const double*>(f.data_ptr());
  const double tol = 8 * (acc == at::kDouble ? std::numeric_limits<double>::epsilon()
                                             : std::numeric_limits<float>::epsilon());
  const double n0 = h[0] * h[0] + h[1] * h[1], n1 = h[2] * h[2] + h[3] * h[3];
  const double dot = h[0] * h[2] + h[1] * h[3];
  return std::abs(n0 - 1) <= tol && std::abs(n1 - 1) <= tol && std::abs(dot) <= tol;
}

template <typename acc_t>
HaarPlan<acc_t> haar_plan(const Tensor& filters, Mode mode, int64_t J,
                          at::ArrayRef<double> hf_scale, int64_t H, int64_t W) {
  const Tensor f = filters.to(at::kDouble).contiguous();
  const double* h = static_cast<const double*>(f.data_ptr());
  HaarPlan<acc_t> pl;
  pl.mode = mode;
  pl.J = J;
  pl.B = J < 62 && (int64_t{1} << J) < H ? int64_t{1} << J : H;
  pl.blocks = (H + pl.B - 1) / pl.B;
  pl.w0 = static_cast<acc_t>(h[1]);
  pl.w1 = static_cast<acc_t>(h[0]);
  int64_t rows = pl.B, total = 0;
  for (int64_t j = 0; j <= J; ++j) {
    const double above = j < J ? hf_scale[j] : 1.0, below = j > 0 ? hf_scale[j - 1] : 0.0;
    pl.coef.push_back(static_cast<acc_t>(above - below));
    pl.h.push_back(j == 0 ? H : (pl.h.back() + 1) / 2);
    pl.w.push_back(j == 0 ? W : (pl.w.back() + 1) / 2);
    pl.ext_h.push_back(haar_extension(mode, pl.h.back()));
    pl.ext_w.push_back(haar_extension(mode, pl.w.back()));
    pl.off.push_back(total);
    total += rows * (pl.w.back() + 1);
    rows = (rows + 1) / 2;
  }
  pl.zero_row = total;
  pl.work = total + W + 1;
  return pl;
}

// Samples per parallel chunk below which a step runs on one thread (at::internal::GRAIN_SIZE,
// ATen's elementwise threshold): a small batch is not worth waking the pool.
constexpr int64_t kHaarGrain = 32768;
// Elements of the samples that one L2 group steps together (the three arrays and the scratch:
// 4 MiB in float32, inside a server core's share of L3).
constexpr int64_t kL2Group = 262144;

// Runs the Haar step on the tasks (plane, block row): Linf in one pass, L2 in three.
template <typename scalar_t>
void haar_step(const StepArgs<scalar_t>& s, const HaarPlan<at::opmath_type<scalar_t>>& pl,
               int64_t N, bool l2, const Tensor& like) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tasks = N * s.C * pl.blocks, per_sample = s.C * pl.blocks;
  const int64_t grain = std::max<int64_t>(1, kHaarGrain / (pl.B * s.W));
  HaarArgs<scalar_t> t{s, &pl, nullptr, 0, nullptr, nullptr, nullptr};
  if (!l2) {
    at::parallel_for(0, tasks, grain, [&](int64_t b, int64_t e) { haar_linf_tasks(t, b, e); });
    return;
  }
  // Samples in groups of about kL2Group elements: the group's g' (the scratch), x_adv and x_nat
  // are still in cache when passes 2 and 3 read them again.
  const int64_t group = std::max<int64_t>(1, kL2Group / (s.C * s.H * s.W));
  const Tensor scratch = at::empty({std::min(group, N) * s.C * s.H * s.W},
                                   like.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  std::vector<double> partials(tasks);
  std::vector<acc_t> denom(N), factor(N);
  t.scratch = static_cast<acc_t*>(scratch.data_ptr());
  t.partials = partials.data();
  t.denom = denom.data();
  t.factor = factor.data();
  auto sample_sum = [&](int64_t n) {  // in task order: the same for every thread count
    double sum = 0.0;
    for (int64_t u = n * per_sample; u < (n + 1) * per_sample; ++u) sum += partials[u];
    return sum;
  };
  for (int64_t n0 = 0; n0 < N; n0 += group) {
    const int64_t n1 = std::min(N, n0 + group), u0 = n0 * per_sample, u1 = n1 * per_sample;
    t.p0 = n0 * s.C;
    at::parallel_for(u0, u1, grain, [&](int64_t b, int64_t e) { haar_l2_filter_tasks(t, b, e); });
    for (int64_t n = n0; n < n1; ++n) {
      denom[n] = static_cast<acc_t>(std::sqrt(sample_sum(n))) + static_cast<acc_t>(kL2Eps);
    }
    at::parallel_for(u0, u1, grain, [&](int64_t b, int64_t e) { haar_l2_delta_tasks(t, b, e); });
    for (int64_t n = n0; n < n1; ++n) {
      const acc_t dn = static_cast<acc_t>(std::sqrt(sample_sum(n)));
      const acc_t eps = s.b.eps.at(n, 0);
      factor[n] = dn == acc_t(0) ? acc_t(1) : std::min((acc_t(1) / dn) * eps, acc_t(1));
    }
    at::parallel_for(u0, u1, grain, [&](int64_t b, int64_t e) { haar_l2_write_tasks(t, b, e); });
  }
}

// ---- other banks: the whole filter per plane in one pass ---------------------------------------
// One task per plane runs the cascade of scale_details_ref in plane-local buffers (the split/merge
// blocks of separable.h, as hf_penalty's backward): up, level j's analysis of a_{j-1} (grad itself
// at level 1, read once in its dtype and strides) keeps a_j and s_j times the three detail bands;
// down, level j's synthesis of (ã_j, s_j cH, s_j cV, s_j cD) (ã_J = a_J), only the rows and
// columns of the size that level analysed (the crop of scale_details_ref), gives ã_{j-1} -- in
// place of a_{j-1}, no longer needed -- and at level 1 the rows of g'. The same analysis and
// synthesis plans as dwt2d / idwt2d, so g' is what the composition computes, without ever
// writing a band to memory. Linf steps each row of g' as it comes out: ONE pass for the whole
// wavelet step. L2 writes g' (compute type) and steps it with pgd_step's L2 pass: two passes.
template <typename acc_t>
struct BankPlan {
  // level j at j - 1: the analysis of a_{j-1} and the synthesis of level j's bands (cropped to
  // a_{j-1}'s size), as row-block plans or (small planes, planes.h) plane-vector plans
  std::vector<SplitPlan<acc_t>> split;
  std::vector<MergePlan<acc_t>> merge;
  std::vector<PlanesPlan<acc_t>> planes_split, planes_merge;
  std::vector<int64_t> h, w;            // j = 0..J: rows and columns of a_j
  std::vector<acc_t> scale;             // level j at j - 1: s_j
  int64_t J = 0;
};

// idwt2d's synthesis map of m coefficients with the samples from n on cut off (-1): the synthesis
// then yields exactly the n samples that scale_details_ref keeps (n <= synthesis_length(m)).
inline std::vector<int64_t> cropped_synthesis_map(int64_t m, int64_t L, Mode mode, int64_t n) {
  std::vector<int64_t> map = synthesis_map(m, L, mode);
  for (auto& t : map) t = t >= n ? -1 : t;
  return map;
}

template <typename acc_t>
BankPlan<acc_t> bank_plan(const Tensor& filters, Mode mode, int64_t J,
                          at::ArrayRef<double> hf_scale, int64_t H, int64_t W, int64_t sw,
                          bool planes) {
  // dec taps reversed: dwt2d's analysis taps, and idwt2d's synthesis taps (rec = dec reversed)
  const auto taps = taps_as<acc_t>(filters, /*reversed=*/true);
  const int64_t L = filters.size(1);
  BankPlan<acc_t> pl;
  pl.J = J;
  pl.h.push_back(H), pl.w.push_back(W);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t h = pl.h.back(), w = pl.w.back();
    const int64_t kh = analysis_length<int64_t>(h, L, mode);
    const int64_t kw = analysis_length<int64_t>(w, L, mode);
    const auto map_h = analysis_map(h, L, mode), map_w = analysis_map(w, L, mode);
    const auto syn_h = cropped_synthesis_map(kh, L, mode, h);
    const auto syn_w = cropped_synthesis_map(kw, L, mode, w);
    if (planes) {
      pl.planes_split.push_back({split_axis(map_w, taps, kw), split_axis(map_h, taps, kh), h, w,
                                 kh, kw});
      pl.planes_merge.push_back({merge_axis(syn_w, taps, w, kw), merge_axis(syn_h, taps, h, kh), h,
                                 w, kh, kw});
    } else {
      pl.split.push_back(split_plan(taps, map_h, map_w, j == 0 ? sw : 1, kh, kw));
      pl.merge.push_back(merge_plan(taps, syn_h, syn_w, kh, kw, h, w));
    }
    pl.h.push_back(kh), pl.w.push_back(kw);
    pl.scale.push_back(static_cast<acc_t>(hf_scale[j]));
  }
  return pl;
}

template <typename acc_t>
struct BankWork {
  std::vector<SplitWork<acc_t>> split;
  std::vector<MergeWork<acc_t>> merge;
  std::vector<Buffer<acc_t>> a, bands;  // j = 1..J: a_j (then ã_j); s_j (cH, cV, cD)
  explicit BankWork(const BankPlan<acc_t>& pl) : a(pl.J + 1), bands(pl.J + 1) {
    for (int64_t j = 1; j <= static_cast<int64_t>(pl.split.size()); ++j) {
      split.emplace_back(pl.split[j - 1]);
      merge.emplace_back(pl.merge[j - 1]);
      a[j].resize(pl.h[j] * pl.w[j]);
      bands[j].resize(3 * pl.h[j] * pl.w[j]);
    }
  }
};

// g' of one plane (grad rows at g + i * sh, element stride sw): row(r, line) receives row r < H
// (line: at least W values, the first W of them g' in the compute type). J >= 1.
template <typename scalar_t, typename acc_t, typename Row>
WAVEFUSE_INLINE void bank_filter_plane(const BankPlan<acc_t>& pl, BankWork<acc_t>& wk,
                                       const scalar_t* g, int64_t sh, int64_t sw, Row&& row) {
  const int64_t J = pl.J;
  for (int64_t j = 1; j <= J; ++j) {  // up
    const int64_t kh = pl.h[j], kw = pl.w[j];
    const acc_t sj = pl.scale[j - 1];
    acc_t* bands = wk.bands[j].data();
    auto detail = [&](int band, int64_t i, const acc_t* d) {
      acc_t* __restrict__ out = bands + (band * kh + i) * kw;
      for (int64_t k = 0; k < kw; ++k) out[k] = sj * d[k];
    };
    if (j == 1) {
      split_level(pl.split[0], wk.split[0], g, sh, sw == 1, wk.a[1].data(), detail);
    } else {
      split_level(pl.split[j - 1], wk.split[j - 1], static_cast<const acc_t*>(wk.a[j - 1].data()),
                  pl.w[j - 1], true, wk.a[j].data(), detail);
    }
  }
  for (int64_t j = J; j >= 1; --j) {  // down
    const int64_t kh = pl.h[j], kw = pl.w[j], rows = pl.h[j - 1], cols = pl.w[j - 1];  // crop
    const acc_t* bands = wk.bands[j].data();
    // bands (a, b): (0, 0) LL, (0, 1) cV, (1, 0) cH, (1, 1) cD
    const acc_t* base[4] = {wk.a[j].data(), bands + kh * kw, bands, bands + 2 * kh * kw};
    const int64_t rs[4] = {kw, kw, kw, kw};
    acc_t* up = j > 1 ? wk.a[j - 1].data() : nullptr;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowBlock) {
      const int64_t r1 = std::min(rows, r0 + kRowBlock);
      const int64_t full = pl.merge[j - 1].W;  // rows wider than cols (a crop): via the line
      auto dest = [&](int64_t r) -> acc_t* {
        return up != nullptr && cols == full ? up + r * cols : nullptr;
      };
      merge_block(pl.merge[j - 1], wk.merge[j - 1], base, rs, 0, r0, r1, dest,
                  [&](int64_t r, const acc_t* line) {
                    if (up != nullptr) {
                      copy_span(up + r * cols, line, cols);
                    } else {
                      row(r, line);
                    }
                  });
    }
  }
}

template <typename scalar_t>
struct BankArgs {
  using acc_t = at::opmath_type<scalar_t>;
  StepArgs<scalar_t> s;
  const BankPlan<acc_t>* plan;
  acc_t* out;  // L2: g', (N, C, H, W) contiguous
  int64_t N;
};

// Linf: each plane's g' stepped row by row as it comes out.
template <typename scalar_t>
WAVEFUSE_INLINE void bank_linf_tasks_impl(const BankArgs<scalar_t>& t, int64_t begin,
                                          int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const StepArgs<scalar_t>& s = t.s;
  BankWork<acc_t> wk(*t.plan);
  for (int64_t p = begin; p < end; ++p) {
    bank_filter_plane(*t.plan, wk, s.g.plane(p, s.C), s.g.sh, s.g.sw,
                      [&](int64_t r, const acc_t* g) { linf_plane_row(s, p, r, g); });
  }
}

// L2, pass 1: each plane's g' into t.out.
template <typename scalar_t>
WAVEFUSE_INLINE void bank_filter_tasks_impl(const BankArgs<scalar_t>& t, int64_t begin,
                                            int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const StepArgs<scalar_t>& s = t.s;
  BankWork<acc_t> wk(*t.plan);
  for (int64_t p = begin; p < end; ++p) {
    acc_t* out = t.out + p * s.H * s.W;
    bank_filter_plane(*t.plan, wk, s.g.plane(p, s.C), s.g.sh, s.g.sw,
                      [&](int64_t r, const acc_t* g) { copy_span(out + r * s.W, g, s.W); });
  }
}

#if defined(__GNUC__)
// Small planes (use_planes_path): the same cascade on V = kLanes planes at once, one per vector
// lane (planes.h, as hf_penalty's plane-vector backward). Level j's work buffers hold its bands
// B(0..3); up, the split of a_{j-1} (X, or level j - 1's B(0)) and the detail bands times s_j in
// place; down, the synthesis of level j's B(0..3) (B(0) = ã_j) writes ã_{j-1} over a_{j-1}. X
// then holds g' of the V planes.
template <int Bytes, typename scalar_t>
WAVEFUSE_INLINE void bank_planes_filter(
    const BankArgs<scalar_t>& t, std::vector<PlanesWork<at::opmath_type<scalar_t>, Bytes>>& work,
    int64_t p0, int64_t count) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = Lanes<acc_t, Bytes>;
  const BankPlan<acc_t>& pl = *t.plan;
  const int64_t J = pl.J;
  planes_in<scalar_t, acc_t, Bytes>(work[0].x.data(), t.s.g, t.s.C, p0, count, t.s.H, t.s.W);
  for (int64_t j = 0; j < J; ++j) {  // up
    const PlanesPlan<acc_t>& plan = pl.planes_split[j];
    split_core(plan, work[j], j == 0 ? work[0].X() : work[j - 1].B(0));
    const acc_t sj = pl.scale[j];
    for (int ab = 1; ab < 4; ++ab) {
      Vec* d = work[j].B(ab);
      for (int64_t k = 0; k < plan.Kh * plan.Kw; ++k) d[k] = d[k] * sj;
    }
  }
  for (int64_t j = J - 1; j >= 0; --j) {  // down
    merge_core(pl.planes_merge[j], work[j], j == 0 ? work[0].X() : work[j - 1].B(0));
  }
}

// Linf: the group's g' out to a plane-after-plane buffer, then stepped row by row; L2: g' out to
// t.out.
template <bool Linf, int Bytes, typename scalar_t>
WAVEFUSE_INLINE void bank_planes_tasks(const BankArgs<scalar_t>& t, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  const StepArgs<scalar_t>& s = t.s;
  std::vector<PlanesWork<acc_t, Bytes>> work;
  for (const auto& plan : t.plan->planes_split) work.emplace_back(plan);
  Buffer<acc_t> gp(Linf ? V * s.H * s.W : 0);
  const View4<acc_t> dst = Linf ? View4<acc_t>{gp.data(), s.H * s.W, 0, s.W, 1}
                                : View4<acc_t>{t.out, s.C * s.H * s.W, s.H * s.W, s.W, 1};
  for (int64_t u = begin; u < end; ++u) {
    const int64_t p0 = u * V, count = std::min(V, s.C * t.N - p0);
    bank_planes_filter<Bytes>(t, work, p0, count);
    planes_out<acc_t, acc_t, Bytes>(static_cast<const acc_t*>(work[0].x.data()), dst,
                                    Linf ? 1 : s.C, Linf ? 0 : p0, count, s.H, s.W);
    if constexpr (Linf) {
      for (int64_t l = 0; l < count; ++l) {
        for (int64_t r = 0; r < s.H; ++r) {
          linf_plane_row(s, p0 + l, r, static_cast<const acc_t*>(gp.data() + (l * s.H + r) * s.W));
        }
      }
    }
  }
}

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void bank_planes_linf_tasks_impl(const BankArgs<scalar_t>& t, int64_t begin,
                                                 int64_t end) {
  bank_planes_tasks<true, Bytes>(t, begin, end);
}

template <int Bytes = 32, typename scalar_t>
WAVEFUSE_INLINE void bank_planes_filter_tasks_impl(const BankArgs<scalar_t>& t, int64_t begin,
                                                   int64_t end) {
  bank_planes_tasks<false, Bytes>(t, begin, end);
}
#endif

WAVEFUSE_ALL_TASKS(bank_linf_tasks, BankArgs)
WAVEFUSE_ALL_TASKS(bank_filter_tasks, BankArgs)
// and for AVX-512, at the AVX2 width with 32 registers (planes.h, avx512_tasks)
WAVEFUSE_V4_TASKS(bank_linf_tasks, bank_linf_tasks_impl, BankArgs)
WAVEFUSE_V4_TASKS(bank_filter_tasks, bank_filter_tasks_impl, BankArgs)
#if defined(__GNUC__)
WAVEFUSE_ALL_TASKS(bank_planes_linf_tasks, BankArgs)
WAVEFUSE_ALL_TASKS(bank_planes_filter_tasks, BankArgs)
// and for AVX-512, 64-byte vectors (planes.h, avx512_tasks)
WAVEFUSE_WIDE_TASKS(bank_planes_linf_tasks, bank_planes_linf_tasks_impl, BankArgs)
WAVEFUSE_WIDE_TASKS(bank_planes_filter_tasks, bank_planes_filter_tasks_impl, BankArgs)
#endif

void wavelet_pgd_step_cpu(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                          double alpha, double lo, double hi,
                          const std::optional<Tensor>& eps_tensor,
                          const std::optional<Tensor>& alpha_tensor,
                          const std::optional<Tensor>& lo_tensor,
                          const std::optional<Tensor>& hi_tensor, const Tensor& filters,
                          c10::string_view wave_mode, int64_t level, at::ArrayRef<double> hf_scale,
                          c10::string_view norm) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
  check_filters(filters);
  TORCH_CHECK(level >= 0 && static_cast<int64_t>(hf_scale.size()) == level,
              "wavefuse: hf_scale must have one entry per level (", level, "), got ",
              hf_scale.size());
  const auto acc = x_adv.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const Mode mode = parse_mode(std::string(wave_mode));
  if (haar_fusable(filters.to(acc), acc)) {
    if (x_adv.numel() == 0) return;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_haar", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const StepArgs<scalar_t> s{
          view4<scalar_t>(x_adv),
          view4<const scalar_t>(grad),
          view4<const scalar_t>(x_nat),
          {bound<acc_t>(eps, eps_tensor), bound<acc_t>(alpha, alpha_tensor),
           bound<acc_t>(lo, lo_tensor), bound<acc_t>(hi, hi_tensor)},
          x_adv.size(1), x_adv.size(2), x_adv.size(3)};
      const HaarPlan<acc_t> plan =
          haar_plan<acc_t>(filters.to(acc), mode, level, hf_scale, s.H, s.W);
      haar_step(s, plan, x_adv.size(0), l2, x_adv);
    });
    return;
  }
  // pgd_step on g' (the compute type); half types step float32 copies of x_adv and x_nat and
  // round once
  auto step_on = [&](const Tensor& g) {
    if (x_adv.scalar_type() == acc) {
      pgd_step_cpu(x_adv, g, x_nat, eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor,
                   hi_tensor, norm);
      return;
    }
    const Tensor xa = x_adv.to(acc);
    pgd_step_cpu(xa, g, x_nat.to(acc), eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor,
                 hi_tensor, norm);
    x_adv.copy_(xa);
  };
  if (level == 0) {  // g' = g
    step_on(grad.to(acc));
    return;
  }
  if (x_adv.numel() == 0) return;
  const int64_t N = x_adv.size(0), C = x_adv.size(1), H = x_adv.size(2), W = x_adv.size(3);
  Tensor g_filtered;  // L2: g' in the compute type
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_bank", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const StepArgs<scalar_t> s{
        view4<scalar_t>(x_adv),
        view4<const scalar_t>(grad),
        view4<const scalar_t>(x_nat),
        {bound<acc_t>(eps, eps_tensor), bound<acc_t>(alpha, alpha_tensor),
         bound<acc_t>(lo, lo_tensor), bound<acc_t>(hi, hi_tensor)},
        C, H, W};
    const bool planes = kPlanesPath && use_planes_path(H, W);
    const BankPlan<acc_t> plan =
        bank_plan<acc_t>(filters.to(acc), mode, level, hf_scale, H, W, grad.stride(3), planes);
    BankArgs<scalar_t> t{s, &plan, nullptr, N};
    if (!l2) {
#if defined(__GNUC__)
      if (planes) {
        for_plane_groups<acc_t>(
            N * C, [&](int64_t b, int64_t e) { bank_planes_linf_tasks(t, b, e); },
            [&](int64_t b, int64_t e) { bank_planes_linf_tasks_wide(t, b, e); });
        return;
      }
#endif
      parallel_tasks(
          N * C, 1, [&](int64_t b, int64_t e) { bank_linf_tasks(t, b, e); },
          [&](int64_t b, int64_t e) { bank_linf_tasks_v4(t, b, e); });
      return;
    }
    g_filtered = at::empty({N, C, H, W}, x_adv.options().dtype(acc));
    t.out = static_cast<acc_t*>(g_filtered.data_ptr());
#if defined(__GNUC__)
    if (planes) {
      for_plane_groups<acc_t>(
          N * C, [&](int64_t b, int64_t e) { bank_planes_filter_tasks(t, b, e); },
          [&](int64_t b, int64_t e) { bank_planes_filter_tasks_wide(t, b, e); });
      return;
    }
#endif
    parallel_tasks(
        N * C, 1, [&](int64_t b, int64_t e) { bank_filter_tasks(t, b, e); },
        [&](int64_t b, int64_t e) { bank_filter_tasks_v4(t, b, e); });
  });
  if (l2) step_on(g_filtered);  // pgd_step's L2 pass on g'
}

#undef WAVEFUSE_ALL_TASKS
#undef WAVEFUSE_TASKS

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CPU, m) {
  m.impl("_pgd_step_kernel", &wavefuse::pgd_step_cpu);
  m.impl("_wavelet_pgd_step_kernel", &wavefuse::wavelet_pgd_step_cpu);
}
