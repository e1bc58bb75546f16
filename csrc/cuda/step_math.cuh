// The arithmetic of the PGD update that more than one CUDA body needs (csrc/cuda/pgd_step_body.cuh,
// whose header describes the semantics and the rounding; and the approximation chain's last
// launch, which can apply the Linf step itself: dwt_body.cuh's chain_thread, pair_body.cuh's
// pair_stage2): correctly rounded products and sums, the Linf update of one element, a bound
// (scalar or per-sample/per-channel tensor entry), and FusedLinf, the Linf step as a filter's
// store. Plain C++17 off the device (the host emulation harnesses compile it with g++); depends
// on common.h alone, so dwt_body.cuh can include it.

#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

#ifdef __CUDACC__
#define WAVEFUSE_PGD_INLINE __host__ __device__ __forceinline__
#else
#define WAVEFUSE_PGD_INLINE inline
#endif

namespace wavefuse {
namespace cuda_pgd {

// ---- correctly rounded arithmetic (no contraction on the device) --------------------------------

WAVEFUSE_PGD_INLINE float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
WAVEFUSE_PGD_INLINE double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
WAVEFUSE_PGD_INLINE float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
WAVEFUSE_PGD_INLINE double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
WAVEFUSE_PGD_INLINE float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
WAVEFUSE_PGD_INLINE double div_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
WAVEFUSE_PGD_INLINE float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}
WAVEFUSE_PGD_INLINE double sqrt_rn(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return __builtin_sqrt(a);
#endif
}

// a * b + c with one rounding: __fma*_rn on the device, std::fma on the host (correctly rounded
// too), so the emulation computes the device's bits.
WAVEFUSE_PGD_INLINE float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
WAVEFUSE_PGD_INLINE double fma_rn(double a, double b, double c) {
#ifdef __CUDA_ARCH__
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// sign with sign(+-0) = 0 and NaN kept: the reference's where(isnan(g), g, sign(g)).
template <typename T>
WAVEFUSE_PGD_INLINE T sign_keep_nan(T g) {
  return g > T(0) ? T(1) : (g < T(0) ? T(-1) : (g != g ? g : T(0)));
}

// torch.clamp(torch.clamp(v, min=lo), max=hi) with a NaN v kept (bounds are never NaN).
template <typename T>
WAVEFUSE_PGD_INLINE T clamp_keep_nan(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

// The updates of one element, op for op as the reference (shared by the plain and the Haar step).
// Linf: clamp(x + clamp(x_adv + alpha * sign(g) - x, -eps, eps), lo, hi).
template <typename acc_t>
WAVEFUSE_PGD_INLINE acc_t linf_value(acc_t xa, acc_t xv, acc_t g, acc_t alpha, acc_t eps,
                                     acc_t lo, acc_t hi) {
  // alpha * sign(g) is exact (0, +-alpha or NaN): no rounding to control
  const acc_t moved = add_rn(xa, mul_rn(alpha, sign_keep_nan(g)));
  const acc_t delta = clamp_keep_nan(add_rn(moved, -xv), -eps, eps);
  return clamp_keep_nan(add_rn(xv, delta), lo, hi);
}

// A bound: the float (already rounded to acc_t, as torch rounds a Python scalar), or the entry
// [n, c] of a (N or 1, C or 1, 1, 1) tensor in acc_t (strides 0 along broadcast dimensions).
template <typename acc_t, typename index_t>
struct Bound {
  acc_t value;
  const acc_t* data;
  index_t sn, sc;
  WAVEFUSE_PGD_INLINE acc_t at(index_t n, index_t c) const {
    return data == nullptr ? value : data[n * sn + c * sc];
  }
};

// The Linf step fused into the store of a filter's last output (the approximation chain's last
// launch: csrc/cuda/dwt.cu's pair_kernel and cascade_kernel, for an x_adv in the compute type):
// where the filter would write g'[n, c, h, w], x_adv[n, c, h, w] becomes linf_value(x_adv, x_nat,
// g', bounds at (n, c)) -- the same function, the same operands and the same rounding as the
// separate step kernel (linf_thread) reading g' back from memory, so the result is identical bit
// for bit and one launch, one write and one read of g' are saved. xa == nullptr: off (the filter
// stores g' as before). x_adv must not share memory with anything the launch reads: the op's
// checks (assert_no_overlap) reject full and partial overlap, and pgd_step.cu fuses only when
// x_adv's storage is not the gradient's (strided views of one storage, which assert_no_overlap
// cannot judge, keep the separate step: the chain reads the gradient in its last launch).
template <typename acc_t, typename index_t>
struct FusedLinf {
  acc_t* xa = nullptr;  // off unless the host sets it (ChainArgs is default-initialised)
  Strides4<index_t> sa;
  const acc_t* x;
  Strides4<index_t> sx;
  Bound<acc_t, index_t> eps, alpha, lo, hi;

  WAVEFUSE_PGD_INLINE bool on() const { return xa != nullptr; }

  WAVEFUSE_PGD_INLINE void store(index_t n, index_t c, index_t h, index_t w, acc_t g) const {
    acc_t* p = xa + n * sa.n + c * sa.c + h * sa.h + w * sa.w;
    const acc_t xv = x[n * sx.n + c * sx.c + h * sx.h + w * sx.w];
    *p = linf_value(*p, xv, g, alpha.at(n, c), eps.at(n, c), lo.at(n, c), hi.at(n, c));
  }

  // Plane (n, c) as a one-plane problem (n = c = 0): the pointers at the plane, the bounds
  // resolved to their values there (the cascade's bodies see one plane at a time).
  WAVEFUSE_PGD_INLINE FusedLinf plane(index_t n, index_t c) const {
    if (!on()) return *this;
    FusedLinf p = *this;
    p.xa = xa + n * sa.n + c * sa.c;
    p.x = x + n * sx.n + c * sx.c;
    p.sa.n = p.sa.c = p.sx.n = p.sx.c = 0;
    p.eps = {eps.at(n, c), nullptr, 0, 0};
    p.alpha = {alpha.at(n, c), nullptr, 0, 0};
    p.lo = {lo.at(n, c), nullptr, 0, 0};
    p.hi = {hi.at(n, c), nullptr, 0, 0};
    return p;
  }
};

}  // namespace cuda_pgd
}  // namespace wavefuse
