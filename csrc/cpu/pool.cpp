// CPU kernels of wavelet pooling (contract: wavefuse/ops/pool.py, schemas in csrc/ops.cpp):
//
//   _wavelet_pool2d_kernel(x, kernel, mode) -> y
//       y[n, c, k, l] = sum_{u, v} Kr[c, u, v] * x[n, c, map_h[2k + u], map_w[2l + v]]
//   _wavelet_pool2d_adjoint_kernel(grad, kernel, mode, input_size) -> grad_x     (its transpose)
//   _wavelet_pool2d_kernel_grad_kernel(grad, x, taps, mode) -> (C, L, L)
//       G[c, m, q] = sum_{n, k, l} grad[n, c, k, l] * x[n, c, map_h[2k + L-1-m], map_w[2l + L-1-q]]
//
// with Kr the kernel reversed along both axes (the contract's taps are in convolution order) and
// map_* the analysis index maps of dwt2d (separable.h: extended position -> signal index, -1 for
// a zero). The L x L kernel is the whole weighted band sum F^T W F, so the pooled map comes out
// of one stride-2 correlation: no band is formed, the input is read once per row block.
//
// Every task gathers the extended input rows it needs once, split into even and odd column
// phases, so the tap loops are unit-stride vector loops over output columns. Forward: parallel
// over (plane, block of kRowBlock output rows). Adjoint: parallel over planes; within a plane the
// transposed correlation adds into row-folded phase buffers and folds the columns back in a fixed
// order (one task owns the plane). channels_last tensors take vector loops over channels
// instead (below). Kernel gradient: parallel over channels, samples summed in
// order, each (u, v) sum in double. All deterministic, no atomics; half types compute in float.

#include <ATen/ops/zeros.h>

#include "cpu/separable.h"

namespace wavefuse {
namespace {

template <typename T>
using acc_of = at::opmath_type<T>;

// The kernel of channel c reversed: kr[u * L + v] = K[c, L-1-u, L-1-v].
template <typename acc_t>
void reversed_kernel(const acc_t* k, int64_t L, acc_t* kr) {
  for (int64_t u = 0; u < L; ++u) {
    for (int64_t v = 0; v < L; ++v) kr[u * L + v] = k[(L - 1 - u) * L + (L - 1 - v)];
  }
}

// Extended row t of a plane as two phases: even[s] = xe[t, 2s], odd[s] = xe[t, 2s + 1], s < P.
template <typename scalar_t, typename acc_t>
WAVEFUSE_INLINE void gather_row(const scalar_t* plane, int64_t sh, int64_t sw, int64_t r,
                                const int64_t* map_w, int64_t P, acc_t* even, acc_t* odd) {
  if (r < 0) {
    std::fill(even, even + P, acc_t(0));
    std::fill(odd, odd + P, acc_t(0));
    return;
  }
  const scalar_t* row = plane + r * sh;
  for (int64_t s = 0; s < P; ++s) {
    const int64_t c0 = map_w[2 * s], c1 = map_w[2 * s + 1];
    even[s] = c0 < 0 ? acc_t(0) : static_cast<acc_t>(row[c0 * sw]);
    odd[s] = c1 < 0 ? acc_t(0) : static_cast<acc_t>(row[c1 * sw]);
  }
}

// dst[l] += a * src[l], l < n (the compiler vectorises it; no reassociation needed).
template <typename acc_t>
WAVEFUSE_INLINE void axpy(acc_t a, const acc_t* __restrict__ src, acc_t* __restrict__ dst,
                          int64_t n) {
  for (int64_t l = 0; l < n; ++l) dst[l] += a * src[l];
}

// ---- forward ------------------------------------------------------------------------------------

template <typename T>
struct PoolArgs {
  View4<const T> in;
  View4<T> out;
  const acc_of<T>* kernel;  // (C', L, L), contiguous
  bool shared;              // C' == 1
  int64_t C, L, h, w, P, blocks;
  const int64_t* map_h;
  const int64_t* map_w;
};

template <typename T>
WAVEFUSE_INLINE void pool_tasks_impl(const PoolArgs<T>& s, int64_t begin, int64_t end) {
  using acc_t = acc_of<T>;
  const int64_t L = s.L, P = s.P, w = s.w;
  Buffer<acc_t> rows((2 * kRowBlock + L - 2) * 2 * P), acc(w), kr(L * L);
  std::vector<char> live(2 * kRowBlock + L - 2);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t p = task / s.blocks, b = task % s.blocks;
    const int64_t k0 = b * kRowBlock, k1 = std::min(s.h, k0 + kRowBlock);
    const T* src = s.in.plane(p, s.C);
    T* dst = s.out.plane(p, s.C);
    reversed_kernel(s.kernel + (s.shared ? 0 : p % s.C) * L * L, L, kr.data());
    const int64_t rows_needed = 2 * (k1 - k0) + L - 2;
    for (int64_t e = 0; e < rows_needed; ++e) {
      const int64_t r = s.map_h[2 * k0 + e];
      live[e] = r >= 0;
      acc_t* even = rows.data() + e * 2 * P;
      gather_row(src, s.in.sh, s.in.sw, r, s.map_w, P, even, even + P);
    }
    for (int64_t k = k0; k < k1; ++k) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t u = 0; u < L; ++u) {
        const int64_t e = 2 * (k - k0) + u;
        if (!live[e]) continue;
        const acc_t* even = rows.data() + e * 2 * P;
        for (int64_t v = 0; v < L; ++v) {
          axpy(kr[u * L + v], even + (v & 1) * P + (v >> 1), acc.data(), w);
        }
      }
      T* out_row = dst + k * s.out.sh;
      for (int64_t l = 0; l < w; ++l) out_row[l * s.out.sw] = static_cast<T>(acc[l]);
    }
  }
}

// ---- adjoint ------------------------------------------------------------------------------------

template <typename T>
struct AdjointArgs {
  View4<const T> grad;
  View4<T> out;
  const acc_of<T>* kernel;
  bool shared;
  int64_t C, L, h, w, H, W, P;
  const int64_t* map_h;
  const int64_t* map_w;
};

template <typename T>
WAVEFUSE_INLINE void adjoint_tasks_impl(const AdjointArgs<T>& s, int64_t begin, int64_t end) {
  using acc_t = acc_of<T>;
  const int64_t L = s.L, P = s.P, w = s.w;
  Buffer<acc_t> folded(s.H * 2 * P), grow(w), line(s.W), kr(L * L);
  for (int64_t p = begin; p < end; ++p) {
    const T* g = s.grad.plane(p, s.C);
    T* dst = s.out.plane(p, s.C);
    reversed_kernel(s.kernel + (s.shared ? 0 : p % s.C) * L * L, L, kr.data());
    std::fill(folded.begin(), folded.end(), acc_t(0));
    // Transposed correlation, rows folded by map_h as they are produced.
    for (int64_t k = 0; k < s.h; ++k) {
      const T* g_row = g + k * s.grad.sh;
      for (int64_t l = 0; l < w; ++l) grow[l] = static_cast<acc_t>(g_row[l * s.grad.sw]);
      for (int64_t u = 0; u < L; ++u) {
        const int64_t i = s.map_h[2 * k + u];
        if (i < 0) continue;
        acc_t* even = folded.data() + i * 2 * P;
        for (int64_t v = 0; v < L; ++v) {
          axpy(kr[u * L + v], grow.data(), even + (v & 1) * P + (v >> 1), w);
        }
      }
    }
    // Columns folded by map_w, in order of extended position.
    for (int64_t i = 0; i < s.H; ++i) {
      const acc_t* even = folded.data() + i * 2 * P;
      const acc_t* odd = even + P;
      std::fill(line.begin(), line.end(), acc_t(0));
      for (int64_t q = 0; q < P; ++q) {
        const int64_t c0 = s.map_w[2 * q], c1 = s.map_w[2 * q + 1];
        if (c0 >= 0) line[c0] += even[q];
        if (c1 >= 0) line[c1] += odd[q];
      }
      T* out_row = dst + i * s.out.sh;
      for (int64_t j = 0; j < s.W; ++j) out_row[j * s.out.sw] = static_cast<T>(line[j]);
    }
  }
}

// ---- kernel gradient ----------------------------------------------------------------------------

template <typename T>
struct KernelGradArgs {
  View4<const T> grad;
  View4<const T> in;
  acc_of<T>* out;  // (C, L, L), contiguous
  int64_t N, C, L, h, w, P;
  const int64_t* map_h;
  const int64_t* map_w;
};

template <typename T>
WAVEFUSE_INLINE void kernel_grad_tasks_impl(const KernelGradArgs<T>& s, int64_t begin,
                                            int64_t end) {
  using acc_t = acc_of<T>;
  const int64_t L = s.L, P = s.P, w = s.w;
  const int64_t rows_ext = 2 * s.h + L - 2;
  Buffer<acc_t> rows(rows_ext * 2 * P), grow(w);
  std::vector<double> sums(L * L);
  for (int64_t c = begin; c < end; ++c) {
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t p = n * s.C + c;
      const T* x = s.in.plane(p, s.C);
      const T* g = s.grad.plane(p, s.C);
      for (int64_t e = 0; e < rows_ext; ++e) {
        acc_t* even = rows.data() + e * 2 * P;
        gather_row(x, s.in.sh, s.in.sw, s.map_h[e], s.map_w, P, even, even + P);
      }
      for (int64_t k = 0; k < s.h; ++k) {
        const T* g_row = g + k * s.grad.sh;
        for (int64_t l = 0; l < w; ++l) grow[l] = static_cast<acc_t>(g_row[l * s.grad.sw]);
        for (int64_t u = 0; u < L; ++u) {
          if (s.map_h[2 * k + u] < 0) continue;
          const acc_t* even = rows.data() + (2 * k + u) * 2 * P;
          for (int64_t v = 0; v < L; ++v) {
            const acc_t* x_ph = even + (v & 1) * P + (v >> 1);
            acc_t dot = 0;
            for (int64_t l = 0; l < w; ++l) dot += grow[l] * x_ph[l];
            sums[u * L + v] += static_cast<double>(dot);
          }
        }
      }
    }
    acc_t* dst = s.out + c * L * L;  // G[c, m, q] = sum at (u, v) = (L-1-m, L-1-q)
    for (int64_t m = 0; m < L; ++m) {
      for (int64_t q = 0; q < L; ++q) {
        dst[m * L + q] = static_cast<acc_t>(sums[(L - 1 - m) * L + (L - 1 - q)]);
      }
    }
  }
}

// ---- channels_last: vector loops over channels --------------------------------------------------
// With C the unit-stride dimension, a pixel's channels are one contiguous vector, so both passes
// run over (sample, row) and vectorise across channels. The adjoint becomes a gather: output row
// i sums the (k, u) with map_h[2k + u] = i, output column j the (l, v) with map_w[2l + v] = j
// (CSR lists built once per call, in a fixed order).

struct Csr {  // entries of output index i: pairs[begin[i] .. begin[i + 1]) as (coefficient, tap)
  std::vector<int64_t> begin;
  std::vector<std::pair<int64_t, int64_t>> pairs;
};

Csr fold_lists(const std::vector<int64_t>& map, int64_t n, int64_t k, int64_t L) {
  Csr csr;
  csr.begin.assign(n + 1, 0);
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t u = 0; u < L; ++u) {
      const int64_t i = map[2 * c + u];
      if (i >= 0) ++csr.begin[i + 1];
    }
  }
  for (int64_t i = 0; i < n; ++i) csr.begin[i + 1] += csr.begin[i];
  csr.pairs.resize(csr.begin[n]);
  std::vector<int64_t> fill(csr.begin.begin(), csr.begin.end() - 1);
  for (int64_t c = 0; c < k; ++c) {
    for (int64_t u = 0; u < L; ++u) {
      const int64_t i = map[2 * c + u];
      if (i >= 0) csr.pairs[fill[i]++] = {c, u};
    }
  }
  return csr;
}

template <typename T>
struct LastArgs {
  View4<const T> in;  // forward: x; adjoint: grad
  View4<T> out;
  const acc_of<T>* kr;  // (L * L, C') reversed taps, channel-minor
  bool shared;
  int64_t C, L, rows, cols;  // output rows and columns
  const int64_t* map_h;      // forward: analysis maps
  const int64_t* map_w;
  const Csr* fold_h;  // adjoint: gather lists
  const Csr* fold_w;
};

template <typename acc_t, typename T>
WAVEFUSE_INLINE void channel_axpy(const acc_t* k, bool shared, const T* __restrict__ src,
                                  acc_t* __restrict__ acc, int64_t C) {
  if (shared) {
    const acc_t a = k[0];
    for (int64_t c = 0; c < C; ++c) acc[c] += a * static_cast<acc_t>(src[c]);
  } else {
    for (int64_t c = 0; c < C; ++c) acc[c] += k[c] * static_cast<acc_t>(src[c]);
  }
}

template <typename T>
WAVEFUSE_INLINE void pool_last_tasks_impl(const LastArgs<T>& s, int64_t begin, int64_t end) {
  using acc_t = acc_of<T>;
  const int64_t C = s.C, L = s.L, kc = s.shared ? 1 : C;
  std::vector<acc_t> acc(C);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / s.rows, k = task % s.rows;
    const T* x = s.in.data + n * s.in.sn;
    T* out_row = s.out.data + n * s.out.sn + k * s.out.sh;
    for (int64_t l = 0; l < s.cols; ++l) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t u = 0; u < L; ++u) {
        const int64_t r = s.map_h[2 * k + u];
        if (r < 0) continue;
        for (int64_t v = 0; v < L; ++v) {
          const int64_t c = s.map_w[2 * l + v];
          if (c < 0) continue;
          channel_axpy(s.kr + (u * L + v) * kc, s.shared, x + r * s.in.sh + c * s.in.sw,
                       acc.data(), C);
        }
      }
      T* px = out_row + l * s.out.sw;
      for (int64_t c = 0; c < C; ++c) px[c] = static_cast<T>(acc[c]);
    }
  }
}

template <typename T>
WAVEFUSE_INLINE void adjoint_last_tasks_impl(const LastArgs<T>& s, int64_t begin, int64_t end) {
  using acc_t = acc_of<T>;
  const int64_t C = s.C, L = s.L, kc = s.shared ? 1 : C;
  std::vector<acc_t> acc(C);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t n = task / s.rows, i = task % s.rows;
    const T* g = s.in.data + n * s.in.sn;
    T* out_row = s.out.data + n * s.out.sn + i * s.out.sh;
    for (int64_t j = 0; j < s.cols; ++j) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t a = s.fold_h->begin[i]; a < s.fold_h->begin[i + 1]; ++a) {
        const auto [k, u] = s.fold_h->pairs[a];
        for (int64_t b = s.fold_w->begin[j]; b < s.fold_w->begin[j + 1]; ++b) {
          const auto [l, v] = s.fold_w->pairs[b];
          channel_axpy(s.kr + (u * L + v) * kc, s.shared, g + k * s.in.sh + l * s.in.sw,
                       acc.data(), C);
        }
      }
      T* px = out_row + j * s.out.sw;
      for (int64_t c = 0; c < C; ++c) px[c] = static_cast<T>(acc[c]);
    }
  }
}

// Reversed taps, channel-minor: kr[(u * L + v) * C' + c] = K[c, L-1-u, L-1-v].
template <typename acc_t>
std::vector<acc_t> reversed_channel_minor(const Tensor& kernel) {
  const int64_t Cp = kernel.size(0), L = kernel.size(2);
  const acc_t* k = kernel.data_ptr<acc_t>();
  std::vector<acc_t> kr(L * L * Cp);
  for (int64_t c = 0; c < Cp; ++c) {
    for (int64_t u = 0; u < L; ++u) {
      for (int64_t v = 0; v < L; ++v) {
        kr[(u * L + v) * Cp + c] = k[c * L * L + (L - 1 - u) * L + (L - 1 - v)];
      }
    }
  }
  return kr;
}

bool channel_minor(const Tensor& a, const Tensor& b) {
  // Short channel vectors (RGB input) run faster on the per-plane path, strided as it is.
  return a.size(1) >= 16 && a.stride(1) == 1 && b.stride(1) == 1;
}

// One function per (task, scalar type), with an AVX2 clone chosen at load time (separable.h).
#define WAVEFUSE_POOL_TASKS(name, Args, T)                                        \
  WAVEFUSE_SIMD_CLONES void name(const Args<T>& s, int64_t begin, int64_t end) { \
    name##_impl(s, begin, end);                                                 \
  }
#define WAVEFUSE_POOL_ALL(name, Args)          \
  WAVEFUSE_POOL_TASKS(name, Args, float)       \
  WAVEFUSE_POOL_TASKS(name, Args, double)      \
  WAVEFUSE_POOL_TASKS(name, Args, at::Half)    \
  WAVEFUSE_POOL_TASKS(name, Args, at::BFloat16)
WAVEFUSE_POOL_ALL(pool_tasks, PoolArgs)
WAVEFUSE_POOL_ALL(adjoint_tasks, AdjointArgs)
WAVEFUSE_POOL_ALL(kernel_grad_tasks, KernelGradArgs)
WAVEFUSE_POOL_ALL(pool_last_tasks, LastArgs)
WAVEFUSE_POOL_ALL(adjoint_last_tasks, LastArgs)
#undef WAVEFUSE_POOL_ALL
#undef WAVEFUSE_POOL_TASKS

// ---- ops ----------------------------------------------------------------------------------------

at::ScalarType acc_type_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

Tensor checked_kernel(const Tensor& kernel, const Tensor& like) {
  TORCH_CHECK(kernel.dim() == 3 && kernel.size(1) == kernel.size(2) && kernel.size(1) >= 2 &&
                  kernel.size(1) % 2 == 0,
              "wavefuse: kernel must be (C', L, L) with even L >= 2, got ", kernel.sizes());
  TORCH_CHECK(kernel.size(0) == 1 || kernel.size(0) == like.size(1), "wavefuse: kernel has ",
              kernel.size(0), " channels; allowed: 1 or ", like.size(1));
  TORCH_CHECK(kernel.device().is_cpu(), "wavefuse: kernel must be a CPU tensor");
  return kernel.to(acc_type_of(like.scalar_type())).contiguous();
}

Tensor wavelet_pool2d_cpu(const Tensor& x, const Tensor& kernel_in, c10::string_view mode_name) {
  check_input(x, "x");
  const Tensor kernel = checked_kernel(kernel_in, x);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), L = kernel.size(2);
  const int64_t h = analysis_length<int64_t>(H, L, mode), w = analysis_length<int64_t>(W, L, mode);
  Tensor y = empty_4d(x, N, C, h, w);
  if (y.numel() == 0) return y;
  const auto map_h = analysis_map(H, L, mode), map_w = analysis_map(W, L, mode);
  if (channel_minor(x, y)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavelet_pool2d", [&] {
      const auto kr = reversed_channel_minor<acc_of<scalar_t>>(kernel);
      const LastArgs<scalar_t> s{view4<const scalar_t>(x), view4<scalar_t>(y), kr.data(),
                                 kernel.size(0) == 1, C, L, h, w, map_h.data(), map_w.data(),
                                 nullptr, nullptr};
      at::parallel_for(0, N * h, 1,
                       [&](int64_t begin, int64_t end) { pool_last_tasks(s, begin, end); });
    });
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavelet_pool2d", [&] {
    const PoolArgs<scalar_t> s{view4<const scalar_t>(x),
                               view4<scalar_t>(y),
                               kernel.data_ptr<acc_of<scalar_t>>(),
                               kernel.size(0) == 1,
                               C,
                               L,
                               h,
                               w,
                               w + L / 2 - 1,
                               (h + kRowBlock - 1) / kRowBlock,
                               map_h.data(),
                               map_w.data()};
    at::parallel_for(0, N * C * s.blocks, 1,
                     [&](int64_t begin, int64_t end) { pool_tasks(s, begin, end); });
  });
  return y;
}

Tensor wavelet_pool2d_adjoint_cpu(const Tensor& grad, const Tensor& kernel_in,
                                  c10::string_view mode_name, at::IntArrayRef input_size) {
  check_input(grad, "grad");
  const Tensor kernel = checked_kernel(kernel_in, grad);
  const Mode mode = parse_mode(std::string(mode_name));
  TORCH_CHECK(input_size.size() == 2, "wavefuse: input_size must be [H, W], got ", input_size);
  const int64_t N = grad.size(0), C = grad.size(1), H = input_size[0], W = input_size[1];
  const int64_t L = kernel.size(2);
  const int64_t h = analysis_length<int64_t>(H, L, mode), w = analysis_length<int64_t>(W, L, mode);
  TORCH_CHECK(grad.size(2) == h && grad.size(3) == w, "wavefuse: grad has spatial size ",
              grad.sizes().slice(2), "; input_size ", input_size, " with ", L,
              " taps gives [", h, ", ", w, "]");
  Tensor out = empty_4d(grad, N, C, H, W);
  if (out.numel() == 0) return out;
  const auto map_h = analysis_map(H, L, mode), map_w = analysis_map(W, L, mode);
  if (channel_minor(grad, out)) {
    const Csr fold_h = fold_lists(map_h, H, h, L), fold_w = fold_lists(map_w, W, w, L);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, grad.scalar_type(), "wavelet_pool2d_adjoint", [&] {
          const auto kr = reversed_channel_minor<acc_of<scalar_t>>(kernel);
          const LastArgs<scalar_t> s{view4<const scalar_t>(grad), view4<scalar_t>(out), kr.data(),
                                     kernel.size(0) == 1, C, L, H, W, nullptr, nullptr, &fold_h,
                                     &fold_w};
          at::parallel_for(0, N * H, 1,
                           [&](int64_t begin, int64_t end) { adjoint_last_tasks(s, begin, end); });
        });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "wavelet_pool2d_adjoint", [&] {
        const AdjointArgs<scalar_t> s{view4<const scalar_t>(grad),
                                      view4<scalar_t>(out),
                                      kernel.data_ptr<acc_of<scalar_t>>(),
                                      kernel.size(0) == 1,
                                      C,
                                      L,
                                      h,
                                      w,
                                      H,
                                      W,
                                      w + L / 2 - 1,
                                      map_h.data(),
                                      map_w.data()};
        at::parallel_for(0, N * C, 1,
                         [&](int64_t begin, int64_t end) { adjoint_tasks(s, begin, end); });
      });
  return out;
}

Tensor wavelet_pool2d_kernel_grad_cpu(const Tensor& grad, const Tensor& x, int64_t taps,
                                      c10::string_view mode_name) {
  check_input(grad, "grad");
  check_input(x, "x");
  TORCH_CHECK(taps >= 2 && taps % 2 == 0, "wavefuse: taps must be even and >= 2, got ", taps);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "wavefuse: grad (", grad.scalar_type(),
              ") and x (", x.scalar_type(), ") must have one dtype");
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), L = taps;
  const int64_t h = analysis_length<int64_t>(H, L, mode), w = analysis_length<int64_t>(W, L, mode);
  TORCH_CHECK(grad.size(0) == N && grad.size(1) == C && grad.size(2) == h && grad.size(3) == w,
              "wavefuse: grad has shape ", grad.sizes(), "; x ", x.sizes(), " with ", L,
              " taps gives [", N, ", ", C, ", ", h, ", ", w, "]");
  Tensor out = at::zeros({C, L, L}, x.options().dtype(acc_type_of(x.scalar_type())));
  if (C == 0 || N == 0 || h == 0 || w == 0) return out;
  const auto map_h = analysis_map(H, L, mode), map_w = analysis_map(W, L, mode);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "wavelet_pool2d_kernel_grad", [&] {
        const KernelGradArgs<scalar_t> s{view4<const scalar_t>(grad),
                                         view4<const scalar_t>(x),
                                         out.data_ptr<acc_of<scalar_t>>(),
                                         N,
                                         C,
                                         L,
                                         h,
                                         w,
                                         w + L / 2 - 1,
                                         map_h.data(),
                                         map_w.data()};
        at::parallel_for(0, C, 1,
                         [&](int64_t begin, int64_t end) { kernel_grad_tasks(s, begin, end); });
      });
  return out;
}

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CPU, m) {
  m.impl("_wavelet_pool2d_kernel", &wavefuse::wavelet_pool2d_cpu);
  m.impl("_wavelet_pool2d_adjoint_kernel", &wavefuse::wavelet_pool2d_adjoint_cpu);
  m.impl("_wavelet_pool2d_kernel_grad_kernel", &wavefuse::wavelet_pool2d_kernel_grad_cpu);
}
