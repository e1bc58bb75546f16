// Host-side helpers of the CUDA op wrappers (csrc/cuda/*.cu): the layout rule for outputs, the
// int32/int64 offset choice, strides as kernel arguments, and the argument checks they share.
//
// Host code only: each .cu includes this inside its `#ifndef __CUDA_ARCH__` block, after the ATen
// headers, so the device passes never parse it (see dwt.cu's header comment on compile time).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

#include "common.h"
#include "step_math.cuh"  // cuda_pgd::Bound, FusedLinf

namespace wavefuse {
namespace cuda_host {

using at::Tensor;

// Dynamic shared memory a block may use without opting in (cudaFuncSetAttribute): 48 KiB on
// every architecture.
constexpr int64_t kMaxSharedBytes = 48 * 1024;
// int32 offsets when every tensor's largest offset is below 2^30: the index maps also form 2n and
// 2k + L from sizes and offsets of that order, which must not overflow either.
constexpr int64_t kInt32Span = int64_t(1) << 30;

// ---- layout: the same rule as wavefuse/ops/_common.py and csrc/cpu/separable.h ----------------

inline bool channels_last_like(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) == 1 || x.is_contiguous()) return false;
  for (int d = 2; d < 4; ++d) {
    if (x.size(d) > 1 && x.stride(1) >= x.stride(d)) return false;
  }
  return true;
}

// (n, c, h, w) in like's memory format (channels_last or contiguous), like's dtype and device.
inline Tensor empty_4d(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  const auto fmt = channels_last_like(like) ? at::MemoryFormat::ChannelsLast
                                            : at::MemoryFormat::Contiguous;
  return at::empty({n, c, h, w}, like.options().memory_format(fmt));
}

// (N, C, 3, h, w), band-major so that each band is itself contiguous or channels_last.
inline Tensor empty_bands(const Tensor& like, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (channels_last_like(like)) {
    return at::empty({3, n, h, w, c}, like.options()).permute({1, 4, 0, 2, 3});
  }
  return at::empty({3, n, c, h, w}, like.options()).permute({1, 2, 0, 3, 4});
}

// 1 + the largest element offset of t: 1 + sum (size - 1) * stride.
inline int64_t span_of(const Tensor& t) {
  int64_t span = 1;
  for (int64_t d = 0; d < t.dim(); ++d) span += (t.size(d) - 1) * t.stride(d);
  return span;
}

// Whether every element offset of every tensor stays below 2^30.
template <typename Tensors>
bool int32_offsets_of(const Tensors& tensors) {
  for (const Tensor* t : tensors) {
    if (span_of(*t) >= kInt32Span) return false;
  }
  return true;
}
inline bool int32_offsets(std::initializer_list<const Tensor*> tensors) {
  return int32_offsets_of(tensors);
}
inline bool int32_offsets(const std::vector<const Tensor*>& tensors) {
  return int32_offsets_of(tensors);
}

template <typename index_t>
Strides4<index_t> strides4(const Tensor& t) {
  return {static_cast<index_t>(t.stride(0)), static_cast<index_t>(t.stride(1)),
          static_cast<index_t>(t.stride(2)), static_cast<index_t>(t.stride(3))};
}

// hi (N, C, 3, h, w): the (n, c, h, w) strides of one band.
template <typename index_t>
Strides4<index_t> band_strides(const Tensor& hi) {
  return {static_cast<index_t>(hi.stride(0)), static_cast<index_t>(hi.stride(1)),
          static_cast<index_t>(hi.stride(3)), static_cast<index_t>(hi.stride(4))};
}

// ---- argument checks (the Python layer validates first; these guard direct calls) --------------

inline void check_input(const Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, "wavefuse: ", name, " must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.is_cuda(), "wavefuse: ", name, " must be a CUDA tensor, got ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
              "wavefuse: ", name, " must be float16, bfloat16, float32 or float64, got ", t);
}

inline void check_filters(const Tensor& filters) {
  TORCH_CHECK(filters.dim() == 2 && filters.size(0) == 2 && filters.size(1) >= 2 &&
                  filters.size(1) % 2 == 0,
              "wavefuse: filters must be (2, L) with even L >= 2, got ", filters.sizes());
  TORCH_CHECK(at::isFloatingType(filters.scalar_type()),
              "wavefuse: filters must be a floating-point tensor, got ", filters.scalar_type());
}

// The compute dtype: float64 for float64 data, else float32.
inline at::ScalarType acc_type(const Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The taps on the data's device in the compute dtype, contiguous (2, L): what the kernels read.
inline Tensor taps_for(const Tensor& filters, const Tensor& like) {
  return filters.to(like.device(), acc_type(like)).contiguous();
}

// ---- the PGD step's bounds (pgd_step.cu; and the chain's fused Linf step in dwt.cu) -----------

// eps, alpha, lo, hi as the ops receive them: a Python float each, or a (N or 1, C or 1, 1, 1)
// tensor in the compute dtype on x_adv's device (the op's checks), which then wins.
struct Step {
  double eps, alpha, lo, hi;
  const std::optional<Tensor>&eps_t, &alpha_t, &lo_t, &hi_t;
};

template <typename acc_t, typename index_t>
cuda_pgd::Bound<acc_t, index_t> bound_arg(double value, const std::optional<Tensor>& t) {
  if (!t.has_value()) return {static_cast<acc_t>(value), nullptr, 0, 0};
  return {acc_t(0), static_cast<const acc_t*>(t->data_ptr()),
          static_cast<index_t>(t->size(0) > 1 ? t->stride(0) : 0),
          static_cast<index_t>(t->size(1) > 1 ? t->stride(1) : 0)};
}

// int32 offsets where every offset the kernels form fits: x_adv, grad, x_nat, N * M, and the
// bound tensors (Bound::at forms n * sn + c * sc in index_t).
inline bool int32_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                       const Step& s) {
  bool small = x_adv.numel() < kInt32Span && span_of(x_adv) < kInt32Span &&
               span_of(grad) < kInt32Span && span_of(x_nat) < kInt32Span;
  for (const std::optional<Tensor>* t : {&s.eps_t, &s.alpha_t, &s.lo_t, &s.hi_t}) {
    if (t->has_value()) small = small && span_of(**t) < kInt32Span;
  }
  return small;
}

// The Linf step that the approximation chain's last launch applies itself (dwt.cu's
// chain_cascade and chain_pairs; step_math.cuh's FusedLinf): x_adv and x_nat in the compute
// dtype, x_adv sharing no memory with what the chain reads (pgd_step.cu: check_step refuses
// overlap it can judge, and a gradient in x_adv's storage keeps the separate step).
struct LinfStep {
  const Tensor& x_adv;
  const Tensor& x_nat;
  const Step& s;
};

// Whether the fused step's offsets fit int32 (as int32_step).
inline bool int32_linf(const LinfStep* f) {
  return f == nullptr || int32_step(f->x_adv, f->x_nat, f->x_nat, f->s);
}

// The kernel argument: off (xa == nullptr) without a step.
template <typename acc_t, typename index_t>
cuda_pgd::FusedLinf<acc_t, index_t> fused_linf(const LinfStep* f) {
  cuda_pgd::FusedLinf<acc_t, index_t> a{};
  if (f == nullptr) return a;
  a.xa = static_cast<acc_t*>(f->x_adv.data_ptr());
  a.sa = strides4<index_t>(f->x_adv);
  a.x = static_cast<const acc_t*>(f->x_nat.data_ptr());
  a.sx = strides4<index_t>(f->x_nat);
  a.eps = bound_arg<acc_t, index_t>(f->s.eps, f->s.eps_t);
  a.alpha = bound_arg<acc_t, index_t>(f->s.alpha, f->s.alpha_t);
  a.lo = bound_arg<acc_t, index_t>(f->s.lo, f->s.lo_t);
  a.hi = bound_arg<acc_t, index_t>(f->s.hi, f->s.hi_t);
  return a;
}

}  // namespace cuda_host

// wavelet_pgd_step's approximation chain (kernels in dwt.cu, composed by pgd_step.cu).
namespace cuda_dwt {
// One analysis level's approximation band alone (no detail band formed): x (N, C, H, W) and
// taps (2, L) dec [lo; hi], both float32 or both float64 -> (N, C, h, w) in x's dtype and
// memory format.
at::Tensor analysis_ll(const at::Tensor& x, const at::Tensor& taps, Mode mode);
// One synthesis level of the chain (dwt_body.cuh's chain_thread): out = coef * prev + gain *
// S_lo cur, S_lo cur the synthesis of the approximation band cur alone cropped to prev's (H, W);
// cur, prev, out and the dec taps in one compute dtype; out may be prev.
void chain_level(const at::Tensor& cur, const at::Tensor& prev, const at::Tensor& out,
                 const at::Tensor& taps, Mode mode, double coef, double gain);
// The whole chain in ONE launch (cascade_body.cuh; the caller says when): g (N, C, H, W),
// the gradient in the compute dtype (float32 or float64, any strides), the dec taps (2, L)
// contiguous in that dtype, one scale per level (1 to kCascadeMaxLevels) -> g' in g's dtype and
// memory format (a view of the one scratch allocation that also holds the levels). With `step`
// (Linf, x_adv in g's dtype), the launch applies the step to x_adv instead of forming g', and
// returns an undefined tensor.
at::Tensor chain_cascade(const at::Tensor& g, const at::Tensor& taps, Mode mode,
                         at::ArrayRef<double> hf_scale,
                         const cuda_host::LinfStep* step = nullptr);
// The chain in pairs of stages (pair_body.cuh): J launches for J levels, every level's tiles
// spread over the GPU. Arguments and result as chain_cascade's (g' in g's memory format, its own
// allocation); pairs_fit says whether a bank of L taps runs it (an even L whose window fits in
// shared memory in like's compute dtype). With `step`, as chain_cascade: the last launch applies
// the Linf step (undefined result). Every level buffer is released after the launch that reads
// it last.
at::Tensor chain_pairs(const at::Tensor& g, const at::Tensor& taps, Mode mode,
                       at::ArrayRef<double> hf_scale, const cuda_host::LinfStep* step = nullptr);
bool pairs_fit(int64_t L, const at::Tensor& like);
}  // namespace cuda_dwt
}  // namespace wavefuse
