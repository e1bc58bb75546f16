// CUDA kernels of the per-band energies behind hf_penalty (contract: wavefuse/ops/hf_penalty.py;
// schemas: csrc/ops.cpp; maths and phases: hf_penalty_body.cuh).
//
//   _band_energy_kernel           per level energy_kernel, then one rows_kernel
//   _band_energy_backward_kernel  per level grad_split_kernel, then per level (coarsest first)
//                                 adjoint_kernel
//
// Design (mirrors kernels/hf_penalty.py; the per-thread work reuses dwt_body.cuh's split row pass,
// column coefficients, merge and launch geometry):
//   forward, one launch per level: one block of 256 threads per 16 x 16 tile of the level's
//     coefficients reads the level's input (x through its strides at level 1, else the previous
//     approximation), computes all four bands from the same loads, stores only the
//     approximation the next level needs (not at the last level; compute dtype, contiguous) and
//     reduces the three detail tiles in shared memory (a fixed tree, 8 barrier-separated steps)
//     to one partial sum per band, written to partials[n, j, b, tile]: the detail bands never
//     reach memory. Then one launch of rows_kernel: one block per (n, j, b) sums its row of
//     partials in a fixed order. Plus one memset of the (N, J, 3, tmax) partials, whose rows are
//     as long as the level with the most tiles per sample. No atomics anywhere: repeated calls
//     are bitwise identical.
//   backward, two launches per level: grad_split_kernel recomputes the level's bands and stores
//     the next approximation and the three band gradients psi(d) * grad[n, j, b] (compute
//     dtype); then, from the coarsest level, adjoint_kernel (dwt_body.cuh's merge, a
//     deterministic gather) merges the gradient of the approximation (zeros at level J: one
//     memset) with those band gradients into the gradient of the level's input. Level 1 writes
//     grad_x once, in x's dtype and memory format. The band gradients of every level live until
//     their merge (about one x in the compute dtype in all), as in the Triton backward.
//   Every level's sizes come from analysis_length (levels grow for short axes in the
//   non-periodization modes). Shared memory of a level block: taps (2L) + row-pass rows
//   (2 (32 + L - 2) 16) + reduction slots (3 x 256), compute dtype: 24.7 KiB for db20 in
//   float64, below the 48 KiB a block may use without opting in.
//
// Instantiations: the level kernels per input type (float16, bfloat16, float32, float64: level 1
// reads x's dtype, later levels the compute dtype) x int32/int64 offsets (int32 where every
// tensor's offsets stay below 2^30); the adjoint per (compute dtype, output dtype) pair x offset
// width; the row reduction per compute dtype. Mode, taps and p are run-time arguments.
//
// Include discipline exactly as dwt.cu (see its header): torch headers only behind
// `#ifndef __CUDA_ARCH__`; kernels and raw-pointer launchers outside the guard, explicitly
// instantiated per dtype. Layout, offset-width and argument helpers: host.h (shared with dwt.cu).
//
// NEVER RUN ON A GPU: compiled for sm_80 and sm_90 only; speed unmeasured. The bodies run on the
// CPU in tests/test_cuda_hf_emulation.py (float64). ptxas (CUDA 13.0, 2026-11-24, 44 s on the
// 2-core machine): energy_kernel and grad_split_kernel 60-64 registers, rows_kernel 29-31, no
// spills; adjoint_kernel 62-64 registers (int32 offsets) and 128 (int64), which on sm_80 spills
// 68 bytes for <float, int64> -- exactly as dwt.cu's merge_kernel<float, int64> (the same
// merge_thread), and only on the int64 path (tensors of 2^30 elements and more).
// Known costs: the tree reduction uses shared memory and barriers only (no warp shuffles, so the
// emulation runs the exact device order); the merge is dwt.cu's direct 2-D gather.

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "common.h"
#include "dwt_body.cuh"
#include "hf_penalty_body.cuh"

#ifndef __CUDA_ARCH__  // host pass only (see dwt.cu)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <string>
#include <vector>

#include "host.h"
#endif

namespace wavefuse {
namespace cuda_hf {
namespace {

using cuda_dwt::load_taps;
using cuda_dwt::merge_thread;
using cuda_dwt::MergeArgs;
using cuda_dwt::split_row_pass;

// ---- kernels: phases of hf_penalty_body.cuh separated by barriers -------------------------------

// Level kernels: at least 4 resident blocks per SM (<= 64 registers per thread). Without the
// minimum, ptxas (CUDA 13, sm_80) picks 40 registers and spills 4 bytes in the half-type
// instantiations; with it, no instantiation spills (2026-11-24, -Xptxas -v).
constexpr int kLevelMinBlocks = 4;

template <typename in_t, typename index_t>
__global__ void __launch_bounds__(kThreads, kLevelMinBlocks)
    energy_kernel(const LevelArgs<in_t, index_t> a) {
  using acc_t = typename AccType<in_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.s.filters, a.s.L, a.s.tr.reverse, tid, smem);
  __syncthreads();
  split_row_pass(a.s, block, tid, smem);
  __syncthreads();
  energy_col_pass(a, block, tid, smem);
  acc_t* red = smem + split_smem_elems(a.s.L);
  for (int half = kThreads / 2; half > 0; half /= 2) {
    __syncthreads();
    reduce_step(red, kBands, half, tid);
  }
  store_partials(a, block, tid, smem);  // thread 0 reads only its own last writes
}

template <typename in_t, typename index_t>
__global__ void __launch_bounds__(kThreads, kLevelMinBlocks)
    grad_split_kernel(const LevelArgs<in_t, index_t> a) {
  using acc_t = typename AccType<in_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.s.filters, a.s.L, a.s.tr.reverse, tid, smem);
  __syncthreads();
  split_row_pass(a.s, block, tid, smem);
  __syncthreads();
  grad_col_pass(a, block, tid, smem);
}

template <typename acc_t, typename index_t, typename out_t>
__global__ void __launch_bounds__(kThreads)
    adjoint_kernel(const MergeArgs<acc_t, index_t, out_t> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* taps = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.filters, a.L, a.tr.reverse, tid, taps);
  __syncthreads();
  merge_thread(a, static_cast<index_t>(blockIdx.x), tid, taps);
}

template <typename acc_t>
__global__ void __launch_bounds__(kThreads) rows_kernel(const RowsArgs<acc_t> a) {
  __shared__ acc_t red[kThreads];
  const int64_t row = static_cast<int64_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  rows_load(a, row, tid, red);
  for (int half = kThreads / 2; half > 0; half /= 2) {
    __syncthreads();
    reduce_step(red, 1, half, tid);
  }
  rows_store(a, row, tid, red);
}

// Raw-argument launchers, explicitly instantiated below (see dwt.cu's header).
template <typename in_t, typename index_t>
void energy_launch(const LevelArgs<in_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                   cudaStream_t stream) {
  energy_kernel<in_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename in_t, typename index_t>
void grad_split_launch(const LevelArgs<in_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                       cudaStream_t stream) {
  grad_split_kernel<in_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename acc_t, typename index_t, typename out_t>
void adjoint_launch(const MergeArgs<acc_t, index_t, out_t>& a, int64_t blocks, size_t smem_bytes,
                    cudaStream_t stream) {
  adjoint_kernel<acc_t, index_t, out_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename acc_t>
void rows_launch(const RowsArgs<acc_t>& a, int64_t rows, cudaStream_t stream) {
  rows_kernel<acc_t><<<static_cast<unsigned int>(rows), kThreads, 0, stream>>>(a);
}

#define WAVEFUSE_INSTANTIATE_LEVEL(T, I)                                                   \
  template void energy_launch<T, I>(const LevelArgs<T, I>&, int64_t, size_t, cudaStream_t); \
  template void grad_split_launch<T, I>(const LevelArgs<T, I>&, int64_t, size_t, cudaStream_t);
#define WAVEFUSE_INSTANTIATE_ADJOINT(A, I, O) \
  template void adjoint_launch<A, I, O>(const MergeArgs<A, I, O>&, int64_t, size_t, cudaStream_t);
#define WAVEFUSE_INSTANTIATE_BOTH(T, A)      \
  WAVEFUSE_INSTANTIATE_LEVEL(T, int32_t)     \
  WAVEFUSE_INSTANTIATE_LEVEL(T, int64_t)     \
  WAVEFUSE_INSTANTIATE_ADJOINT(A, int32_t, T) \
  WAVEFUSE_INSTANTIATE_ADJOINT(A, int64_t, T)
WAVEFUSE_INSTANTIATE_BOTH(float, float)
WAVEFUSE_INSTANTIATE_BOTH(double, double)
WAVEFUSE_INSTANTIATE_BOTH(c10::Half, float)
WAVEFUSE_INSTANTIATE_BOTH(c10::BFloat16, float)
template void rows_launch<float>(const RowsArgs<float>&, int64_t, cudaStream_t);
template void rows_launch<double>(const RowsArgs<double>&, int64_t, cudaStream_t);
#undef WAVEFUSE_INSTANTIATE_BOTH
#undef WAVEFUSE_INSTANTIATE_ADJOINT
#undef WAVEFUSE_INSTANTIATE_LEVEL

}  // namespace
}  // namespace cuda_hf
}  // namespace wavefuse

#ifndef __CUDA_ARCH__
namespace wavefuse {
namespace cuda_hf {
namespace {

using at::Tensor;
using cuda_dwt::Transform;
using namespace cuda_host;  // layout, offsets, strides, checks (host.h)

void check_args(const Tensor& x, const Tensor& filters, int64_t level, int64_t p) {
  check_input(x, "x");
  check_filters(filters);
  TORCH_CHECK(level >= 0, "wavefuse: level must be >= 0, got ", level);
  TORCH_CHECK(p == 1 || p == 2, "wavefuse: p must be 1 or 2, got ", p);
}

void check_launch(int64_t blocks, int64_t smem_bytes, int64_t L) {
  TORCH_CHECK(blocks <= INT_MAX, "wavefuse: too many tiles (", blocks, ") for one CUDA launch");
  TORCH_CHECK(smem_bytes <= kMaxSharedBytes, "wavefuse: a ", L, "-tap filter needs ", smem_bytes,
              " bytes of shared memory per block; the CUDA kernels support at most ",
              kMaxSharedBytes);
}

// Everything one call needs: the levels, the taps in the compute dtype, the stream.
struct Plan {
  std::vector<Level> levels;
  Tensor taps;
  Mode mode;
  int64_t N, C, L;
  Transform tr;
  cudaStream_t stream;
  size_t acc_bytes;
};

Plan make_plan(const Tensor& x, const Tensor& filters, c10::string_view mode_name,
               int64_t level) {
  Plan pl;
  pl.mode = parse_mode(std::string(mode_name));
  pl.N = x.size(0);
  pl.C = x.size(1);
  pl.taps = taps_for(filters, x);
  pl.L = pl.taps.size(1);
  pl.levels = cascade(pl.N * pl.C, x.size(2), x.size(3), pl.L, pl.mode, level);
  pl.tr = cuda_dwt::transform_of(false, pl.mode, static_cast<int>(pl.L));
  pl.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  pl.acc_bytes = x.scalar_type() == at::kDouble ? 8 : 4;
  for (const Level& lv : pl.levels) {
    check_launch(lv.g.blocks, lv.g.smem_elems * static_cast<int64_t>(pl.acc_bytes), pl.L);
  }
  return pl;
}

// Level j's arguments; `in` is x (j = 0) or the previous approximation; ll may be undefined.
template <typename in_t, typename index_t>
LevelArgs<in_t, index_t> level_args(const Plan& pl, int64_t j, const Tensor& in, const Tensor& ll,
                                    int64_t p) {
  using acc_t = typename AccType<in_t>::type;
  const Level& lv = pl.levels[j];
  LevelArgs<in_t, index_t> a{};
  a.s.x = static_cast<const in_t*>(in.data_ptr());
  a.s.sx = strides4<index_t>(in);
  a.s.filters = static_cast<const acc_t*>(pl.taps.data_ptr());
  a.s.ll = nullptr;
  a.s.hi = nullptr;
  a.s.C = static_cast<index_t>(pl.C);
  a.s.H = static_cast<index_t>(lv.h);
  a.s.W = static_cast<index_t>(lv.w);
  a.s.Kh = static_cast<index_t>(lv.kh);
  a.s.Kw = static_cast<index_t>(lv.kw);
  a.s.L = static_cast<int>(pl.L);
  a.s.tr = pl.tr;
  a.s.tiles_h = static_cast<index_t>(lv.g.tiles_h);
  a.s.tiles_w = static_cast<index_t>(lv.g.tiles_w);
  a.ll = ll.defined() ? static_cast<acc_t*>(ll.data_ptr()) : nullptr;
  if (ll.defined()) a.sl = strides4<index_t>(ll);
  a.p = static_cast<int>(p);
  a.j = static_cast<index_t>(j);
  a.J = static_cast<index_t>(pl.levels.size());
  return a;
}

size_t smem_bytes(const Plan& pl, int64_t j) {
  return static_cast<size_t>(pl.levels[j].g.smem_elems) * pl.acc_bytes;
}

// ---- forward ------------------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
void run_forward(const Plan& pl, const Tensor& x, const Tensor& partials, const Tensor& energies,
                 int64_t p) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t J = static_cast<int64_t>(pl.levels.size());
  const int64_t tmax = partials.size(3);
  const auto acc_opts = partials.options();
  Tensor in = x;
  for (int64_t j = 0; j < J; ++j) {
    const Level& lv = pl.levels[j];
    Tensor ll;
    if (j + 1 < J) ll = at::empty({pl.N, pl.C, lv.kh, lv.kw}, acc_opts);
    auto fill = [&](auto& a) {
      a.partials = static_cast<acc_t*>(partials.data_ptr());
      a.tmax = static_cast<index_t>(tmax);
      a.grad = nullptr;
      a.hi = nullptr;
    };
    if (j == 0) {
      auto a = level_args<scalar_t, index_t>(pl, j, in, ll, p);
      fill(a);
      energy_launch(a, lv.g.blocks, smem_bytes(pl, j), pl.stream);
    } else {
      auto a = level_args<acc_t, index_t>(pl, j, in, ll, p);
      fill(a);
      energy_launch(a, lv.g.blocks, smem_bytes(pl, j), pl.stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    in = ll;  // the previous approximation is freed (stream-ordered) once replaced
  }
  RowsArgs<acc_t> r{static_cast<const acc_t*>(partials.data_ptr()),
                    static_cast<acc_t*>(energies.data_ptr()), tmax};
  rows_launch(r, energies.numel(), pl.stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

Tensor band_energy_cuda(const Tensor& x, const Tensor& filters, c10::string_view mode_name,
                        int64_t level, int64_t p) {
  check_args(x, filters, level, p);
  parse_mode(std::string(mode_name));  // a bad mode is refused even where nothing is computed
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0);
  const auto acc_opts = x.options().dtype(acc_type(x));  // contiguous
  if (level == 0 || x.numel() == 0) return at::zeros({N, level, 3}, acc_opts);
  const Plan pl = make_plan(x, filters, mode_name, level);
  const int64_t tmax = partials_per_row(pl.levels, pl.C);
  TORCH_CHECK(N * level * kBands <= INT_MAX, "wavefuse: too many energies for one CUDA launch");
  // Zeros: a level with fewer tiles than tmax leaves the tail of its rows untouched.
  Tensor partials = at::zeros({N, level, kBands, tmax}, acc_opts);
  Tensor energies = at::empty({N, level, kBands}, acc_opts);
  bool small = span_of(x) < kInt32Span && partials.numel() < kInt32Span;
  for (const Level& lv : pl.levels) small = small && pl.N * pl.C * lv.kh * lv.kw < kInt32Span;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_energy_cuda",
                                  [&] {
                                    if (small) {
                                      run_forward<scalar_t, int32_t>(pl, x, partials, energies, p);
                                    } else {
                                      run_forward<scalar_t, int64_t>(pl, x, partials, energies, p);
                                    }
                                  });
  return energies;
}

// ---- backward -----------------------------------------------------------------------------------

template <typename acc_t, typename index_t, typename out_t>
void run_adjoint(const Plan& pl, const Tensor& g_ll, const Tensor& g_hi, const Tensor& out) {
  MergeArgs<acc_t, index_t, out_t> a;
  a.ll = static_cast<const acc_t*>(g_ll.data_ptr());
  a.sl = strides4<index_t>(g_ll);
  a.hi = static_cast<const acc_t*>(g_hi.data_ptr());
  a.sh = band_strides<index_t>(g_hi);
  a.shb = static_cast<index_t>(g_hi.stride(2));
  a.filters = static_cast<const acc_t*>(pl.taps.data_ptr());
  a.y = static_cast<out_t*>(out.data_ptr());
  a.sy = strides4<index_t>(out);
  a.C = static_cast<index_t>(pl.C);
  a.H = static_cast<index_t>(out.size(2));
  a.W = static_cast<index_t>(out.size(3));
  a.Kh = static_cast<index_t>(g_ll.size(2));
  a.Kw = static_cast<index_t>(g_ll.size(3));
  a.L = static_cast<int>(pl.L);
  a.tr = pl.tr;
  const Geometry g = cuda_dwt::merge_geometry(pl.N * pl.C, out.size(2), out.size(3), pl.L);
  check_launch(g.blocks, g.smem_elems * static_cast<int64_t>(pl.acc_bytes), pl.L);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  adjoint_launch(a, g.blocks, static_cast<size_t>(g.smem_elems) * pl.acc_bytes, pl.stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
void run_backward(const Plan& pl, const Tensor& grad, const Tensor& x, const Tensor& grad_x,
                  int64_t p) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t J = static_cast<int64_t>(pl.levels.size());
  const auto acc_opts = x.options().dtype(acc_type(x));  // contiguous
  // up: recompute each level's bands; keep its band gradients until its merge
  std::vector<Tensor> band_grads;
  Tensor in = x;
  for (int64_t j = 0; j < J; ++j) {
    const Level& lv = pl.levels[j];
    Tensor ll;
    if (j + 1 < J) ll = at::empty({pl.N, pl.C, lv.kh, lv.kw}, acc_opts);
    Tensor hi = at::empty({pl.N, pl.C, kBands, lv.kh, lv.kw}, acc_opts);
    auto fill = [&](auto& a) {
      a.partials = nullptr;
      a.tmax = 0;
      a.grad = static_cast<const acc_t*>(grad.data_ptr());
      a.hi = static_cast<acc_t*>(hi.data_ptr());
      a.sh = band_strides<index_t>(hi);
      a.shb = static_cast<index_t>(hi.stride(2));
    };
    if (j == 0) {
      auto a = level_args<scalar_t, index_t>(pl, j, in, ll, p);
      fill(a);
      grad_split_launch(a, lv.g.blocks, smem_bytes(pl, j), pl.stream);
    } else {
      auto a = level_args<acc_t, index_t>(pl, j, in, ll, p);
      fill(a);
      grad_split_launch(a, lv.g.blocks, smem_bytes(pl, j), pl.stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    band_grads.push_back(hi);
    in = ll;
  }
  // down: merge (grad of the approximation, band gradients) into the grad of each level's input
  const Level& last = pl.levels[J - 1];
  Tensor g_ll = at::zeros({pl.N, pl.C, last.kh, last.kw}, acc_opts);
  for (int64_t j = J - 1; j >= 0; --j) {
    const Level& lv = pl.levels[j];
    if (j == 0) {
      run_adjoint<acc_t, index_t, scalar_t>(pl, g_ll, band_grads[0], grad_x);
    } else {
      Tensor out = at::empty({pl.N, pl.C, lv.h, lv.w}, acc_opts);
      run_adjoint<acc_t, index_t, acc_t>(pl, g_ll, band_grads[j], out);
      g_ll = out;
    }
    band_grads[j] = Tensor();  // free as we go (stream-ordered)
  }
}

Tensor band_energy_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& filters,
                                 c10::string_view mode_name, int64_t level, int64_t p) {
  check_args(x, filters, level, p);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == x.size(0) && grad.size(1) == level &&
                  grad.size(2) == kBands,
              "wavefuse: grad must be (N, level, 3) = (", x.size(0), ", ", level, ", 3), got ",
              grad.sizes());
  TORCH_CHECK(grad.device() == x.device(), "wavefuse: grad is on ", grad.device(), ", x on ",
              x.device());
  parse_mode(std::string(mode_name));  // a bad mode is refused even where nothing is computed
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor grad_x = empty_4d(x, N, C, H, W);
  if (x.numel() == 0) return grad_x;
  if (level == 0) return grad_x.zero_();
  const Plan pl = make_plan(x, filters, mode_name, level);
  const Tensor g = grad.to(acc_type(x)).contiguous();
  bool small = span_of(x) < kInt32Span && span_of(grad_x) < kInt32Span && g.numel() < kInt32Span;
  for (const Level& lv : pl.levels) {
    small = small && pl.N * pl.C * kBands * lv.kh * lv.kw < kInt32Span &&
            pl.N * pl.C * lv.h * lv.w < kInt32Span;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "wavefuse_energy_backward_cuda", [&] {
                                    if (small) {
                                      run_backward<scalar_t, int32_t>(pl, g, x, grad_x, p);
                                    } else {
                                      run_backward<scalar_t, int64_t>(pl, g, x, grad_x, p);
                                    }
                                  });
  return grad_x;
}

}  // namespace
}  // namespace cuda_hf
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CUDA, m) {
  m.impl("_band_energy_kernel", &wavefuse::cuda_hf::band_energy_cuda);
  m.impl("_band_energy_backward_kernel", &wavefuse::cuda_hf::band_energy_backward_cuda);
}
#endif  // __CUDA_ARCH__
