// Shared helpers for the CPU (csrc/cpu/*.cpp) and CUDA (csrc/cuda/*.cu) wavelet kernels.
//
// Everything here that a kernel calls per element is a constexpr WAVEFUSE_HOST_DEVICE function of
// integers only, so one definition serves gcc and nvcc (host and device). The index type is a
// template parameter: CPU kernels use int64_t, CUDA kernels may use int32_t where the sizes fit.
//
// Conventions (PyWavelets', checked against pywt.dwt for every mode and n = 1..13):
//   A signal x[0..n) is extended to every integer position p by one of the five boundary modes.
//   One analysis level with filter taps h[0..L) produces, for k in [0, K),
//     non-periodization: c[k] = sum_j h[j] * xext[2k + 1 - j]
//     periodization:     c[k] = sum_j h[j] * xper[2k + L/2 - j]      (L is even for every wavelet)
//   where xext[p] = x[extend_index(mode, p, n)] (0 where the map returns -1) and
//   xper[p] = x[periodization_index(p, n)].
#pragma once

#include <cstdint>
#include <string>

#include <c10/util/Exception.h>

#ifdef __CUDACC__
#define WAVEFUSE_HOST_DEVICE __host__ __device__
#else
#define WAVEFUSE_HOST_DEVICE
#endif

namespace wavefuse {

// The five PyWavelets signal-extension modes supported by every transform.
enum class Mode : int {
  Zero = 0,           // ... 0  0 | x0 x1 ... x(n-1) | 0  0 ...
  Symmetric = 1,      // ... x1 x0 | x0 x1 ... x(n-1) | x(n-1) x(n-2) ...   (half-sample mirror)
  Reflect = 2,        // ... x2 x1 | x0 x1 ... x(n-1) | x(n-2) x(n-3) ...   (whole-sample mirror)
  Periodic = 3,       // ... x(n-2) x(n-1) | x0 x1 ... x(n-1) | x0 x1 ...
  Periodization = 4,  // periodic on the length rounded up to even; ceil(n/2) coefficients
};

constexpr const char* kAllowedModes = "zero, symmetric, reflect, periodic, periodization";

// Element strides of an (N, C, H, W) tensor (or of one band of an (N, C, 3, h, w) one) in the
// CUDA kernels' index type: what their arguments carry (csrc/cuda/host.h fills them).
template <typename index_t>
struct Strides4 {
  index_t n, c, h, w;
};

// Host only: the mode argument of the op schemas ("str mode") to the enum.
inline Mode parse_mode(const std::string& mode) {
  if (mode == "zero") return Mode::Zero;
  if (mode == "symmetric") return Mode::Symmetric;
  if (mode == "reflect") return Mode::Reflect;
  if (mode == "periodic") return Mode::Periodic;
  if (mode == "periodization") return Mode::Periodization;
  TORCH_CHECK(false, "wavefuse: mode must be one of ", kAllowedModes, "; got '", mode, "'");
}

// Mathematical modulo: the result lies in [0, n) for every a (C++ '%' keeps the sign of a).
// a in [-n, 2n) -- every boundary tap of a signal at least as long as the filter's overhang --
// takes no division: on a GPU an integer '%' by a run-time divisor is a ~20-instruction sequence
// (int64: a call), and the CUDA kernels map every boundary tap through here (csrc/cuda/dwt_body.cuh).
// No overflow: a - n is only formed for a >= n, a + n only for a < 0.
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t floor_mod(index_t a, index_t n) {
  if (a >= 0) {
    if (a < n) return a;
    if (a - n < n) return a - n;
  } else if (a >= -n) {
    return a + n;
  }
  const index_t r = a % n;
  return r < 0 ? r + n : r;
}

// ---- Boundary-extension index maps --------------------------------------------------------------
// Each returns the source index in [0, n) that position p (any integer, however far outside)
// reads, or -1 where the extension is zero. n >= 1.

// zero: x[p] inside, 0 (-1) outside.
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t zero_index(index_t p, index_t n) {
  return (p >= 0 && p < n) ? p : index_t(-1);
}

// symmetric (half-sample mirror, the edge sample repeats): period 2n,
//   q = p mod 2n;  q < n ? q : 2n - 1 - q.
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t symmetric_index(index_t p, index_t n) {
  const index_t q = floor_mod(p, index_t(2 * n));
  return q < n ? q : index_t(2 * n - 1 - q);
}

// reflect (whole-sample mirror, the edge sample does not repeat): period 2n - 2,
//   q = p mod (2n - 2);  q < n ? q : 2n - 2 - q;  n == 1 -> 0.
// (PyWavelets rejects n == 1 in this mode; the Python layer validates that, this map stays total.)
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t reflect_index(index_t p, index_t n) {
  if (n == 1) return 0;
  const index_t q = floor_mod(p, index_t(2 * n - 2));
  return q < n ? q : index_t(2 * n - 2 - q);
}

// periodic: p mod n (odd n is NOT padded in this mode, unlike periodization).
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t periodic_index(index_t p, index_t n) {
  return floor_mod(p, n);
}

// periodization: the signal is first made even, n' = n + (n mod 2) (odd n repeats x[n-1]), then
// extended periodically with period n':  min(p mod n', n - 1).
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t periodization_index(index_t p, index_t n) {
  const index_t q = floor_mod(p, index_t(n + (n & 1)));
  return q < n ? q : index_t(n - 1);
}

// All five behind one switch, for kernels that take the mode at run time.
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t extend_index(Mode mode, index_t p, index_t n) {
  switch (mode) {
    case Mode::Zero:
      return zero_index(p, n);
    case Mode::Symmetric:
      return symmetric_index(p, n);
    case Mode::Reflect:
      return reflect_index(p, n);
    case Mode::Periodic:
      return periodic_index(p, n);
    case Mode::Periodization:
      return periodization_index(p, n);
  }
  return index_t(-1);
}

// ---- Output lengths (pywt.dwt_coeff_len and pywt's idwt_buffer_length) ------------------------

// Analysis: n input samples, filter length L ->
//   K = floor((n + L - 1) / 2)   for zero, symmetric, reflect, periodic
//   K = ceil(n / 2)              for periodization.
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t analysis_length(index_t n, index_t L, Mode mode) {
  return mode == Mode::Periodization ? index_t((n + 1) / 2) : index_t((n + L - 1) / 2);
}

// Synthesis: M coefficients per band, filter length L ->
//   2M - L + 2   for zero, symmetric, reflect, periodic
//   2M           for periodization.
// (For odd inputs pywt's inverse returns one sample more than the original; the Python layer trims.)
template <typename index_t>
WAVEFUSE_HOST_DEVICE constexpr index_t synthesis_length(index_t M, index_t L, Mode mode) {
  return mode == Mode::Periodization ? index_t(2 * M) : index_t(2 * M - L + 2);
}

}  // namespace wavefuse
