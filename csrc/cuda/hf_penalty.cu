// CUDA kernels of the per-band energies behind hf_penalty (contract: wavefuse/ops/hf_penalty.py;
// schemas: csrc/ops.cpp; maths and phases: hf_penalty_body.cuh).
//
//   _band_energy_kernel           per level energy_kernel, then one rows_kernel
//   _band_energy_backward_kernel  per level grad_split_kernel, then per level (coarsest first)
//                                 adjoint_kernel
//   _band_energy_cascade_kernel           ONE energy_cascade_kernel, then one rows_kernel
//   _band_energy_backward_cascade_kernel  ONE grad_cascade_kernel
//
// The cascades (body: hf_cascade_body.cuh, whose header has the phases, barriers and scratch
// layout) run one block per (n, c) plane through every level with the same thread bodies as the
// level kernels: 2 launches forward and 1 backward instead of J + 1 and 2J (+ memsets), for
// grids of many small planes whose coarse levels leave the level kernels' launches mostly idle
// (db4, J = 3 on 128 x 64 x 32 x 32: 8192 planes). The forward's partials are (N, J, 3, C) --
// the level layout with tmax = C, one partial per plane summed over its tiles in tile order -- so
// the same rows_kernel sums them over channels; every entry is written (no memset). The caller
// picks the route (wavefuse/ops/hf_penalty.py's _kernel_name: separable.cascade_fits, BLIND).
// Scratch, one allocation each, in the compute dtype: the forward's a_1 .. a_{J-1} (about a
// third of x's elements on large planes), the backward's a_1 .. a_{J-1}, G_J and one level's
// band gradients (about 1.1 x's elements on large planes; 1.7 x for db4 J = 3 on 32 x 32).
// ptxas (CUDA 13.0, 2026-12-06, -Xptxas -v, sm_80 and sm_90): with __launch_bounds__(256, 3)
// (int32 offsets) every cascade kernel uses 80 registers, no spill, no stack frame; the int64
// variants take __launch_bounds__(256, 2): 108-128 registers, no spill (with 3 blocks their
// backward spilled 136-512 bytes). Shared memory: forward the level kernel's + 3 sums (24,728
// bytes for db20 in float64), backward the split's (18,560 bytes). The level kernels' numbers
// below are unchanged. Compile time: the device code alone (nvcc -cubin) took 24 s of CPU per
// architecture on the 2-core machine (2026-12-06).
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
//     dtype); then, from the coarsest level, adjoint_kernel (dwt_body.cuh's separable merge,
//     deterministic, no atomics) merges the gradient of the approximation (zeros at level J: one
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
// spills. adjoint_kernel: dwt.cu's merge_kernel body (the separable merge phases of
// dwt_body.cuh; ptxas figures there).
// Known costs: the tree reduction uses shared memory and barriers only (no warp shuffles, so the
// emulation runs the exact device order).

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "common.h"
#include "dwt_body.cuh"
#include "hf_cascade_body.cuh"
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
using cuda_dwt::merge_col_pass;
using cuda_dwt::merge_row_pass;
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
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.filters, a.L, a.tr.reverse, tid, smem);
  __syncthreads();
  merge_col_pass(a, block, tid, smem);
  __syncthreads();
  merge_row_pass(a, block, tid, smem);
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

// The one-launch cascades (hf_cascade_body.cuh): one block per (n, c) plane, every level, the
// phases of energy_cascade_block / grad_cascade_block with a barrier after each. At least 3
// resident blocks per SM (<= 80 registers per thread) with int32 offsets, as dwt.cu's
// cascade_kernel; 2 (<= 128 registers) with int64 offsets (tensors of 2^30 elements and more),
// where 3 made the backward spill. __grid_constant__: the bodies index the level tables by a
// run-time level and take the argument block's address, which would otherwise copy it into
// local memory.
template <typename index_t>
constexpr int cascade_min_blocks() {
  return sizeof(index_t) == 4 ? 3 : 2;
}

template <typename in_t, typename index_t>
__global__ void __launch_bounds__(kThreads, cascade_min_blocks<index_t>())
    energy_cascade_kernel(const __grid_constant__ CascadeArgs<in_t, index_t> a) {
  using acc_t = typename AccType<in_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  energy_cascade_block(a, static_cast<index_t>(blockIdx.x), smem, [&](auto&& phase) {
    phase(tid);
    __syncthreads();
  });
}

template <typename in_t, typename index_t>
__global__ void __launch_bounds__(kThreads, cascade_min_blocks<index_t>())
    grad_cascade_kernel(const __grid_constant__ CascadeArgs<in_t, index_t> a) {
  using acc_t = typename AccType<in_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  grad_cascade_block(a, static_cast<index_t>(blockIdx.x), smem, [&](auto&& phase) {
    phase(tid);
    __syncthreads();
  });
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

template <typename in_t, typename index_t>
void energy_cascade_launch(const CascadeArgs<in_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                           cudaStream_t stream) {
  energy_cascade_kernel<in_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename in_t, typename index_t>
void grad_cascade_launch(const CascadeArgs<in_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                         cudaStream_t stream) {
  grad_cascade_kernel<in_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

#define WAVEFUSE_INSTANTIATE_LEVEL(T, I)                                                        \
  template void energy_launch<T, I>(const LevelArgs<T, I>&, int64_t, size_t, cudaStream_t);      \
  template void grad_split_launch<T, I>(const LevelArgs<T, I>&, int64_t, size_t, cudaStream_t);  \
  template void energy_cascade_launch<T, I>(const CascadeArgs<T, I>&, int64_t, size_t,           \
                                            cudaStream_t);                                       \
  template void grad_cascade_launch<T, I>(const CascadeArgs<T, I>&, int64_t, size_t, cudaStream_t);
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

void check_backward_args(const Tensor& grad, const Tensor& x, const Tensor& filters, int64_t level,
                         int64_t p) {
  check_args(x, filters, level, p);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == x.size(0) && grad.size(1) == level &&
                  grad.size(2) == kBands,
              "wavefuse: grad must be (N, level, 3) = (", x.size(0), ", ", level, ", 3), got ",
              grad.sizes());
  TORCH_CHECK(grad.device() == x.device(), "wavefuse: grad is on ", grad.device(), ", x on ",
              x.device());
}

Tensor band_energy_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& filters,
                                 c10::string_view mode_name, int64_t level, int64_t p) {
  check_backward_args(grad, x, filters, level, p);
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

// ---- the one-launch cascades (hf_cascade_body.cuh) ----------------------------------------------
// The same contract and checks as the level ops above; one block per (n, c) plane. Where they run
// instead of the level ops is the caller's choice (wavefuse/ops/hf_penalty.py's _kernel_name).

struct CascadePlan {
  CascadeLayout layout;
  Tensor taps;
  int64_t N, C, L, planes;
  Mode mode;
  size_t smem_bytes;
  cudaStream_t stream;
  bool small;  // int32 offsets: the scratch and every level's coefficients of all planes fit
};

CascadePlan make_cascade_plan(const Tensor& x, const Tensor& filters, Mode mode, int64_t level,
                              bool backward) {
  TORCH_CHECK(level <= kHfCascadeMaxLevels, "wavefuse: the CUDA cascade takes at most ",
              kHfCascadeMaxLevels, " levels, got ", level, " (the level kernels take any)");
  CascadePlan pl;
  pl.mode = mode;
  pl.N = x.size(0);
  pl.C = x.size(1);
  pl.planes = pl.N * pl.C;
  pl.taps = taps_for(filters, x);
  pl.L = pl.taps.size(1);
  const bool planned =
      cascade_layout(pl.layout, x.size(2), x.size(3), pl.L, mode, static_cast<int>(level), backward);
  TORCH_INTERNAL_ASSERT(planned, "wavefuse: band-energy cascade of ", level, " levels");
  const int64_t acc_bytes = x.scalar_type() == at::kDouble ? 8 : 4;
  const int64_t smem = cascade_smem_elems(pl.L, backward) * acc_bytes;
  check_launch(pl.planes, smem, pl.L);
  pl.smem_bytes = static_cast<size_t>(smem);
  pl.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  pl.small = span_of(x) < kInt32Span && pl.planes * pl.layout.plane_elems < kInt32Span;
  for (int j = 1; j <= pl.layout.levels; ++j) {
    pl.small = pl.small && pl.planes * pl.layout.h[j] * pl.layout.w[j] < kInt32Span;
  }
  return pl;
}

template <typename in_t, typename index_t>
CascadeArgs<in_t, index_t> cascade_args(const CascadePlan& pl, const Tensor& x,
                                        const Tensor& scratch, int64_t p) {
  using acc_t = typename AccType<in_t>::type;
  CascadeArgs<in_t, index_t> a{};
  set_layout(a, pl.layout);
  a.x = static_cast<const in_t*>(x.data_ptr());
  a.sx = strides4<index_t>(x);
  a.filters = static_cast<const acc_t*>(pl.taps.data_ptr());
  a.scratch = static_cast<acc_t*>(scratch.data_ptr());
  a.C = static_cast<index_t>(pl.C);
  a.L = static_cast<int>(pl.L);
  a.p = static_cast<int>(p);
  a.mode = pl.mode;
  a.partials = nullptr;
  a.grad = nullptr;
  a.grad_x = nullptr;
  return a;
}

template <typename scalar_t, typename index_t>
void run_forward_cascade(const CascadePlan& pl, const Tensor& x, const Tensor& scratch,
                         const Tensor& partials, const Tensor& energies, int64_t p) {
  using acc_t = typename AccType<scalar_t>::type;
  auto a = cascade_args<scalar_t, index_t>(pl, x, scratch, p);
  a.partials = static_cast<acc_t*>(partials.data_ptr());
  energy_cascade_launch(a, pl.planes, pl.smem_bytes, pl.stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  RowsArgs<acc_t> r{static_cast<const acc_t*>(partials.data_ptr()),
                    static_cast<acc_t*>(energies.data_ptr()), pl.C};
  rows_launch(r, energies.numel(), pl.stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

Tensor band_energy_cascade_cuda(const Tensor& x, const Tensor& filters,
                                c10::string_view mode_name, int64_t level, int64_t p) {
  check_args(x, filters, level, p);
  const Mode mode = parse_mode(std::string(mode_name));
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0);
  const auto acc_opts = x.options().dtype(acc_type(x));  // contiguous
  if (level == 0 || x.numel() == 0) return at::zeros({N, level, 3}, acc_opts);
  const CascadePlan pl = make_cascade_plan(x, filters, mode, level, /*backward=*/false);
  TORCH_CHECK(N * level * kBands <= INT_MAX, "wavefuse: too many energies for one CUDA launch");
  // a_1 .. a_{J-1} per plane; every partial is written (tmax = C: no memset)
  const Tensor scratch = at::empty({pl.planes * pl.layout.plane_elems}, acc_opts);
  const Tensor partials = at::empty({N, level, kBands, pl.C}, acc_opts);
  Tensor energies = at::empty({N, level, kBands}, acc_opts);
  const bool small = pl.small && partials.numel() < kInt32Span;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_energy_cascade_cuda", [&] {
        if (small) {
          run_forward_cascade<scalar_t, int32_t>(pl, x, scratch, partials, energies, p);
        } else {
          run_forward_cascade<scalar_t, int64_t>(pl, x, scratch, partials, energies, p);
        }
      });
  return energies;
}

template <typename scalar_t, typename index_t>
void run_backward_cascade(const CascadePlan& pl, const Tensor& grad, const Tensor& x,
                          const Tensor& grad_x, const Tensor& scratch, int64_t p) {
  using acc_t = typename AccType<scalar_t>::type;
  auto a = cascade_args<scalar_t, index_t>(pl, x, scratch, p);
  a.grad = static_cast<const acc_t*>(grad.data_ptr());
  a.grad_x = static_cast<scalar_t*>(grad_x.data_ptr());
  a.sgx = strides4<index_t>(grad_x);
  grad_cascade_launch(a, pl.planes, pl.smem_bytes, pl.stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

Tensor band_energy_backward_cascade_cuda(const Tensor& grad, const Tensor& x,
                                         const Tensor& filters, c10::string_view mode_name,
                                         int64_t level, int64_t p) {
  check_backward_args(grad, x, filters, level, p);
  const Mode mode = parse_mode(std::string(mode_name));
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor grad_x = empty_4d(x, N, C, H, W);
  if (x.numel() == 0) return grad_x;
  if (level == 0) return grad_x.zero_();
  const CascadePlan pl = make_cascade_plan(x, filters, mode, level, /*backward=*/true);
  const Tensor g = grad.to(acc_type(x)).contiguous();
  // a_1 .. a_{J-1}, G_J, the three band gradients per plane (hf_cascade_body.cuh)
  const Tensor scratch = at::empty({pl.planes * pl.layout.plane_elems}, g.options());
  const bool small = pl.small && span_of(grad_x) < kInt32Span && g.numel() < kInt32Span;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_energy_backward_cascade_cuda", [&] {
        if (small) {
          run_backward_cascade<scalar_t, int32_t>(pl, g, x, grad_x, scratch, p);
        } else {
          run_backward_cascade<scalar_t, int64_t>(pl, g, x, grad_x, scratch, p);
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
  m.impl("_band_energy_cascade_kernel", &wavefuse::cuda_hf::band_energy_cascade_cuda);
  m.impl("_band_energy_backward_cascade_kernel",
         &wavefuse::cuda_hf::band_energy_backward_cascade_cuda);
}
#endif  // __CUDA_ARCH__
