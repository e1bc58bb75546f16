// CUDA kernels of the one-level 2-D DWT family (contract: csrc/ops.cpp).
//
//   _dwt2d_kernel           split_kernel, the mode's extension, dec taps reversed
//   _idwt2d_adjoint_kernel  split_kernel, zero (crop) / periodization wrap, rec taps as stored
//   _dwt2d_adjoint_kernel   merge_kernel, the mode's extension, dec taps reversed
//   _idwt2d_kernel          merge_kernel, zero (crop) / periodization wrap, rec taps as stored
//
// (The multilevel Haar analysis and its adjoint, all levels in one launch each, live in haar.cu.)
//
// The per-thread work (thread mapping, boundary maps, the separable merge) lives in dwt_body.cuh
// as __host__ __device__ functions; the kernels here only read blockIdx/threadIdx, call them
// phase by phase with __syncthreads() between, and the host wrappers validate, allocate the
// outputs in the input's memory format and launch on the current stream. The same bodies run on
// the CPU in tests/test_cuda_host_emulation.py (no GPU needed), over the grid computed by the
// same geometry functions.
//
// Also here, for wavelet_pgd_step's approximation chain (csrc/cuda/pgd_step.cu; declared in
// host.h): analysis_ll (split_kernel<..., kLLOnly = true>: the approximation band alone, no
// detail band formed) and chain_level (chain_kernel: the synthesis of an approximation band
// alone, cropped, combined with the finer approximation, in place); and chain_cascade
// (cascade_kernel, body cascade_block in cascade_body.cuh): the whole chain, every level, in ONE
// launch, one block per (n, c) plane sweeping its tiles with the same split (ll only) and
// chain_thread bodies, a barrier after every phase; levels in one plane-major scratch tensor.
// 2026-12-06 (nvcc 13.0, -Xptxas -v, sm_80 + sm_90): cascade_kernel with
// __launch_bounds__(256, 3) (at most 80 registers): 72-80 registers, no spill, no stack frame in
// all four variants (float/double x int32/int64). With __launch_bounds__(256) alone ptxas chose
// 64 registers for the int32 variants and spilled 36 (float) and 100 (double) bytes on sm_80.
// Shared memory: the split's (2L taps + 2 (30 + L) x 16 rows), e.g. 12.3 KiB for coif3 in
// float64. Unmeasured on a GPU: one block walks all of its plane's tiles serially (2 barriers per
// analysis tile), so the grid is only N * C blocks; the caller (separable.cascade_fits) keeps
// planes that do not fill the GPU, or are over 512 x 512, on the per-level launches.
//
// Also: chain_pairs (pair_kernel, body pair_block in pair_body.cuh), the chain in pairs of stages
// where the cascade does not run: J launches, one block per output tile of a stage, its window of
// the previous stage (halo recomputed) in shared memory; a first-stage analysis through a
// row-pass band in shared memory where it fits (pair_band_fits). 2026-12-06 (nvcc 13.0, -Xptxas
// -v, sm_80 + sm_90): int32 variants 40-48 registers, no spill; <double, int64_t> 80, no spill;
// <float, int64_t> 64 registers and 56 bytes of spill on both. Never run on a GPU; its tile
// sides (pair_body.cuh) are blind.
//
// Instantiations: 2 kernels x 4 dtypes x 2 index types (int32 offsets where every tensor's
// offsets stay below 2^30, else int64), plus the four chain kernels (the ll-only split, the
// chain level, the cascade, the pair) for float and double only;
// mode and filter length are run-time arguments.
// (2026-11-23: this file, sm_80 + sm_90, 41 s of CPU on the 2-core build machine, 63 s wall under
// load; ptxas: no spills, no stack frames, split 32-64 and merge 64-128 registers per thread.
// Rechecked 2026-12-03 with nvcc 13.0: merge_kernel<float, int64_t> spills 68 bytes on sm_80 --
// int64 offsets only, i.e. tensors of 2^30 elements or more; __launch_bounds__(kThreads, 1) would
// remove it at 150-175 registers and one block per SM, a trade to measure on a GPU first.)
//
// 2026-12-06 (nvcc 13.0, -Xptxas -v, sm_80 + sm_90), after the merge gather moved into
// merge_gather (shared with the chain) with its preimage families as named values instead of a
// 2-entry array indexed in a loop (the array sat in local memory): merge_kernel<float, int64_t>
// on sm_80 no longer spills; spills remain only in int64 variants -- chain_kernel<double,
// int64_t> sm_90 96 bytes, merge_kernel<double, int64_t> sm_80 24 -- and 8 bytes in
// split_kernel<double, int32_t> sm_90 (as before this change) and the float ll-only split on
// sm_80; registers: split 40-60, merge 48-162, chain 40-108.
//
// 2026-12-07: merge_kernel is SEPARABLE (dwt_body.cuh's merge_col_pass / merge_row_pass: the H
// half of the sum into shared memory for the tile's rows and the coefficient columns they read
// -- a window of kTileW / 2 + L / 2, plus the end segments [0, L/2) and [Kw - L/2, Kw) in tiles
// within L of a plane's end -- then the W half per output), about 2L loads and multiply-adds per
// output instead of the 2-D gather's L^2, with no per-output fallback (every warp takes the same
// path). NEVER RUN ON A GPU (the gather it replaces ran on the H200 on 2026-12-04): values
// checked by the host emulation only, speed unmeasured. ptxas (nvcc 13.0, -Xptxas -v, sm_80 and
// sm_90): int32 variants 61-64 registers, int64 119-128, no spill, no stack frame.
//
// 2026-12-07 (twelfth session): the Linf step fused into the chain's last launch (cascade_kernel,
// pair_kernel: step_math.cuh's FusedLinf in CascadeArgs / PairArgs / ChainArgs), pair_kernel's
// argument __grid_constant__, pair_band_rows __host__ __device__ (nvcc had warned that the band
// phase called it as a host function). ptxas (nvcc 13.0, sm_80 and sm_90): pair_kernel int32
// variants 40-48 registers, no spill in float32, 36-44 bytes in float64 (new); int64 80, no spill
// (the 56 bytes of <float, int64_t> gone); cascade_kernel int32 72-80, no spill; its int64
// variants (tensors of 2^30 elements or more) now spill 208-272 bytes under the 80-register cap
// of __launch_bounds__(256, 3); chain_kernel unchanged or better. Never run on a GPU.
//
// Known costs: the tiles run along (H, W), so channels_last tensors (C innermost) are read with
// stride C.
//
// Compile time: nvcc parses this file once for the host and once more per GPU architecture in
// TORCH_CUDA_ARCH_LIST, so it includes only what it uses -- never <torch/extension.h>, nor
// <ATen/cuda/CUDAContext.h> (cuBLAS/cuSPARSE headers); for the current stream use
// <c10/cuda/CUDAStream.h>. torch's headers are needed by host code only (the registration and the
// at::Tensor wrappers), so they sit behind `#ifndef __CUDA_ARCH__` and the device passes skip them:
// measured on 2 cores with sm_80 + sm_90, the kernel-less skeleton of this file compiled in 25 s
// instead of 46 s.
//
// The rule that keeps that guard safe: the device passes must see every kernel *instantiation*.
// Kernels, __device__ helpers and raw-pointer launchers go outside the guard; a launcher template
// that only guarded code calls must be explicitly instantiated outside the guard, per dtype
// (`template void dwt2d_launch<float>(...);`), or the device code for it is never generated and
// the launch fails at run time with "no kernel image is available".

#include <cstdint>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "cascade_body.cuh"
#include "common.h"
#include "dwt_body.cuh"
#include "pair_body.cuh"

#ifndef __CUDA_ARCH__  // host pass only (see above)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "host.h"
#endif

namespace wavefuse {
namespace {

// Evaluate the boundary maps and length helpers at compile time *in device code*: nvcc runs this
// TU once per target architecture with __CUDA_ARCH__ set, so a __device__ constexpr variable forces
// common.h through the device front end for every architecture before any kernel uses it.
// The values are PyWavelets' (n = 5: x0 x1 x2 x3 x4).
template <typename index_t>
__host__ __device__ constexpr bool boundary_maps_ok() {
  return extend_index<index_t>(Mode::Zero, -1, 5) == -1 &&
         extend_index<index_t>(Mode::Zero, 4, 5) == 4 &&
         extend_index<index_t>(Mode::Symmetric, -1, 5) == 0 &&  // x1 x0 | x0 x1
         extend_index<index_t>(Mode::Symmetric, -2, 5) == 1 &&
         extend_index<index_t>(Mode::Symmetric, 5, 5) == 4 &&
         extend_index<index_t>(Mode::Symmetric, -11, 5) == 0 &&  // two periods away
         extend_index<index_t>(Mode::Reflect, -1, 5) == 1 &&     // x2 x1 | x0 x1
         extend_index<index_t>(Mode::Reflect, 5, 5) == 3 &&
         extend_index<index_t>(Mode::Reflect, 13, 5) == 3 &&  // period 2n - 2 = 8
         extend_index<index_t>(Mode::Reflect, 7, 1) == 0 &&
         extend_index<index_t>(Mode::Periodic, -1, 5) == 4 &&
         extend_index<index_t>(Mode::Periodic, 12, 5) == 2 &&
         extend_index<index_t>(Mode::Periodization, 5, 5) == 4 &&  // n' = 6 repeats x4
         extend_index<index_t>(Mode::Periodization, 6, 5) == 0 &&
         extend_index<index_t>(Mode::Periodization, -1, 5) == 4 &&
         analysis_length<index_t>(5, 4, Mode::Symmetric) == 4 &&  // floor((5 + 4 - 1) / 2)
         analysis_length<index_t>(5, 4, Mode::Periodization) == 3 &&  // ceil(5 / 2)
         synthesis_length<index_t>(4, 4, Mode::Symmetric) == 6 &&     // 2M - L + 2
         synthesis_length<index_t>(3, 4, Mode::Periodization) == 6;   // 2M
}

__device__ constexpr bool kDeviceMapsOk32 = boundary_maps_ok<int32_t>();
__device__ constexpr bool kDeviceMapsOk64 = boundary_maps_ok<int64_t>();
static_assert(kDeviceMapsOk32 && kDeviceMapsOk64, "common.h boundary maps disagree with PyWavelets");

}  // namespace
}  // namespace wavefuse

namespace wavefuse {
namespace cuda_dwt {
namespace {

// ---- kernels: one block per output tile (dwt_body.cuh), phases separated by barriers -----------

template <typename scalar_t, typename index_t, bool kLLOnly = false>
__global__ void __launch_bounds__(kThreads) split_kernel(const SplitArgs<scalar_t, index_t> a) {
  using acc_t = typename AccType<scalar_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.filters, a.L, a.tr.reverse, tid, smem);
  __syncthreads();
  split_row_pass(a, block, tid, smem);
  __syncthreads();
  split_col_pass<kLLOnly>(a, block, tid, smem);
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads) merge_kernel(const MergeArgs<scalar_t, index_t> a) {
  using acc_t = typename AccType<scalar_t>::type;
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

// Raw-argument launchers, explicitly instantiated below for every (dtype, index type) so that the
// device passes (which skip the guarded host code that calls them) generate every kernel.
// wavelet_pgd_step's approximation chain, one synthesis level (dwt_body.cuh's chain_thread).
template <typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads) chain_kernel(const ChainArgs<acc_t, index_t> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* taps = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  load_taps(a.filters, a.L, a.tr.reverse, tid, taps);
  __syncthreads();
  chain_thread(a, static_cast<index_t>(blockIdx.x), tid, taps);
}

// wavelet_pgd_step's approximation chain, every level in one launch: one block per (n, c) plane
// (cascade_body.cuh's cascade_block: its phases for this thread, a barrier after each).
// __grid_constant__: the bodies index the argument block's level tables by a run-time level and
// take its address (const references), which would otherwise copy it into local memory.
constexpr int kCascadeMinBlocks = 3;
template <typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads, kCascadeMinBlocks)
    cascade_kernel(const __grid_constant__ CascadeArgs<acc_t, index_t> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  cascade_block(a, static_cast<index_t>(blockIdx.x), smem, [&](auto&& phase) {
    phase(tid);
    __syncthreads();
  });
}

// wavelet_pgd_step's chain in pairs of stages: one output tile of the second stage per block
// (pair_body.cuh's pair_block: its phases for this thread, a barrier after each).
template <typename acc_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    pair_kernel(const __grid_constant__ PairArgs<acc_t, index_t> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const int tid = static_cast<int>(threadIdx.x);
  pair_block(a, static_cast<index_t>(blockIdx.x), smem, [&](auto&& phase) {
    phase(tid);
    __syncthreads();
  });
}

template <typename scalar_t, typename index_t>
void split_launch(const SplitArgs<scalar_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                  cudaStream_t stream) {
  if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, double>) {
    if (a.hi == nullptr) {  // the ll band alone (analysis_ll: the compute types only)
      split_kernel<scalar_t, index_t, true>
          <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
      return;
    }
  }
  split_kernel<scalar_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename scalar_t, typename index_t>
void merge_launch(const MergeArgs<scalar_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                  cudaStream_t stream) {
  merge_kernel<scalar_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename acc_t, typename index_t>
void chain_launch(const ChainArgs<acc_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                  cudaStream_t stream) {
  chain_kernel<acc_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename acc_t, typename index_t>
void cascade_launch(const CascadeArgs<acc_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                    cudaStream_t stream) {
  cascade_kernel<acc_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename acc_t, typename index_t>
void pair_launch(const PairArgs<acc_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                 cudaStream_t stream) {
  pair_kernel<acc_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

// The chain runs in the compute type only.
template void pair_launch<float, int32_t>(const PairArgs<float, int32_t>&, int64_t, size_t,
                                          cudaStream_t);
template void pair_launch<float, int64_t>(const PairArgs<float, int64_t>&, int64_t, size_t,
                                          cudaStream_t);
template void pair_launch<double, int32_t>(const PairArgs<double, int32_t>&, int64_t, size_t,
                                           cudaStream_t);
template void pair_launch<double, int64_t>(const PairArgs<double, int64_t>&, int64_t, size_t,
                                           cudaStream_t);
template void cascade_launch<float, int32_t>(const CascadeArgs<float, int32_t>&, int64_t, size_t,
                                             cudaStream_t);
template void cascade_launch<float, int64_t>(const CascadeArgs<float, int64_t>&, int64_t, size_t,
                                             cudaStream_t);
template void cascade_launch<double, int32_t>(const CascadeArgs<double, int32_t>&, int64_t,
                                              size_t, cudaStream_t);
template void cascade_launch<double, int64_t>(const CascadeArgs<double, int64_t>&, int64_t,
                                              size_t, cudaStream_t);
template void chain_launch<float, int32_t>(const ChainArgs<float, int32_t>&, int64_t, size_t,
                                           cudaStream_t);
template void chain_launch<float, int64_t>(const ChainArgs<float, int64_t>&, int64_t, size_t,
                                           cudaStream_t);
template void chain_launch<double, int32_t>(const ChainArgs<double, int32_t>&, int64_t, size_t,
                                            cudaStream_t);
template void chain_launch<double, int64_t>(const ChainArgs<double, int64_t>&, int64_t, size_t,
                                            cudaStream_t);

#define WAVEFUSE_INSTANTIATE(T, I)                                                          \
  template void split_launch<T, I>(const SplitArgs<T, I>&, int64_t, size_t, cudaStream_t); \
  template void merge_launch<T, I>(const MergeArgs<T, I>&, int64_t, size_t, cudaStream_t);
#define WAVEFUSE_INSTANTIATE_BOTH(T) \
  WAVEFUSE_INSTANTIATE(T, int32_t)   \
  WAVEFUSE_INSTANTIATE(T, int64_t)
WAVEFUSE_INSTANTIATE_BOTH(float)
WAVEFUSE_INSTANTIATE_BOTH(double)
WAVEFUSE_INSTANTIATE_BOTH(c10::Half)
WAVEFUSE_INSTANTIATE_BOTH(c10::BFloat16)
#undef WAVEFUSE_INSTANTIATE_BOTH
#undef WAVEFUSE_INSTANTIATE

}  // namespace
}  // namespace cuda_dwt
}  // namespace wavefuse

#ifndef __CUDA_ARCH__
namespace wavefuse {
namespace cuda_dwt {
namespace {

using at::Tensor;
using namespace cuda_host;  // layout, offsets, strides, checks (host.h)

// ---- argument checks (as csrc/cpu/separable.h, for CUDA tensors) ---------------------------------

void check_bands(const Tensor& ll, const Tensor& hi) {
  check_input(ll, "ll");
  TORCH_CHECK(hi.dim() == 5 && hi.size(0) == ll.size(0) && hi.size(1) == ll.size(1) &&
                  hi.size(2) == 3 && hi.size(3) == ll.size(2) && hi.size(4) == ll.size(3),
              "wavefuse: hi must be (N, C, 3, h, w) matching ll ", ll.sizes(), ", got ",
              hi.sizes());
  TORCH_CHECK(hi.scalar_type() == ll.scalar_type() && hi.device() == ll.device(),
              "wavefuse: ll and hi must share dtype and device, got ", ll.scalar_type(), " on ",
              ll.device(), " and ", hi.scalar_type(), " on ", hi.device());
}

void check_launch(const Geometry& g, int64_t smem_bytes, int64_t L) {
  TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many output tiles (", g.blocks,
              ") for one CUDA launch");
  TORCH_CHECK(smem_bytes <= kMaxSharedBytes, "wavefuse: a ", L, "-tap filter needs ", smem_bytes,
              " bytes of shared memory per block; the CUDA kernels support at most ",
              kMaxSharedBytes);
}

// ---- split (dwt2d, idwt2d_adjoint) and merge (dwt2d_adjoint, idwt2d) ------------------------------

template <typename scalar_t, typename index_t>
void run_split(const Tensor& x, const Tensor& taps, const Tensor& ll, const Tensor& hi,
               const Transform& tr, const Geometry& g, cudaStream_t stream) {
  using acc_t = typename AccType<scalar_t>::type;
  SplitArgs<scalar_t, index_t> a;
  a.x = static_cast<const scalar_t*>(x.data_ptr());
  a.sx = strides4<index_t>(x);
  a.filters = static_cast<const acc_t*>(taps.data_ptr());
  a.ll = static_cast<scalar_t*>(ll.data_ptr());
  a.sl = strides4<index_t>(ll);
  if (hi.defined()) {
    a.hi = static_cast<scalar_t*>(hi.data_ptr());
    a.sh = band_strides<index_t>(hi);
    a.shb = static_cast<index_t>(hi.stride(2));
  } else {  // the approximation alone (analysis_ll)
    a.hi = nullptr;
    a.sh = Strides4<index_t>{};
    a.shb = 0;
  }
  a.C = static_cast<index_t>(x.size(1));
  a.H = static_cast<index_t>(x.size(2));
  a.W = static_cast<index_t>(x.size(3));
  a.Kh = static_cast<index_t>(ll.size(2));
  a.Kw = static_cast<index_t>(ll.size(3));
  a.L = static_cast<int>(taps.size(1));
  a.tr = tr;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  split_launch(a, g.blocks, static_cast<size_t>(g.smem_elems) * sizeof(acc_t), stream);
}

template <typename scalar_t, typename index_t>
void run_merge(const Tensor& ll, const Tensor& hi, const Tensor& taps, const Tensor& y,
               const Transform& tr, const Geometry& g, cudaStream_t stream) {
  using acc_t = typename AccType<scalar_t>::type;
  MergeArgs<scalar_t, index_t> a;
  a.ll = static_cast<const scalar_t*>(ll.data_ptr());
  a.sl = strides4<index_t>(ll);
  a.hi = static_cast<const scalar_t*>(hi.data_ptr());
  a.sh = band_strides<index_t>(hi);
  a.shb = static_cast<index_t>(hi.stride(2));
  a.filters = static_cast<const acc_t*>(taps.data_ptr());
  a.y = static_cast<scalar_t*>(y.data_ptr());
  a.sy = strides4<index_t>(y);
  a.C = static_cast<index_t>(y.size(1));
  a.H = static_cast<index_t>(y.size(2));
  a.W = static_cast<index_t>(y.size(3));
  a.Kh = static_cast<index_t>(ll.size(2));
  a.Kw = static_cast<index_t>(ll.size(3));
  a.L = static_cast<int>(taps.size(1));
  a.tr = tr;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  merge_launch(a, g.blocks, static_cast<size_t>(g.smem_elems) * sizeof(acc_t), stream);
}

size_t acc_size(const Tensor& t) { return t.scalar_type() == at::kDouble ? 8 : 4; }

std::tuple<Tensor, Tensor> split(const Tensor& x, const Tensor& filters, Mode mode,
                                 bool synthesis, int64_t Kh, int64_t Kw) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1);
  Tensor ll = empty_4d(x, N, C, Kh, Kw);
  Tensor hi = empty_bands(x, N, C, Kh, Kw);
  if (ll.numel() == 0) return {ll, hi};
  const Tensor taps = taps_for(filters, x);
  const int64_t L = taps.size(1);
  const Geometry g = split_geometry(N * C, Kh, Kw, L);
  check_launch(g, g.smem_elems * static_cast<int64_t>(acc_size(x)), L);
  const Transform tr = transform_of(synthesis, mode, static_cast<int>(L));
  const bool small = int32_offsets({&x, &ll, &hi});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_split_cuda",
                                  [&] {
                                    if (small) {
                                      run_split<scalar_t, int32_t>(x, taps, ll, hi, tr, g, stream);
                                    } else {
                                      run_split<scalar_t, int64_t>(x, taps, ll, hi, tr, g, stream);
                                    }
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {ll, hi};
}

Tensor merge(const Tensor& ll, const Tensor& hi, const Tensor& filters, Mode mode, bool synthesis,
             int64_t H, int64_t W) {
  const c10::cuda::CUDAGuard guard(ll.device());
  const int64_t N = ll.size(0), C = ll.size(1);
  Tensor y = empty_4d(ll, N, C, H, W);
  if (y.numel() == 0) return y;
  const Tensor taps = taps_for(filters, ll);
  const int64_t L = taps.size(1);
  const Geometry g = merge_geometry(N * C, H, W, L);
  check_launch(g, g.smem_elems * static_cast<int64_t>(acc_size(ll)), L);
  const Transform tr = transform_of(synthesis, mode, static_cast<int>(L));
  const bool small = int32_offsets({&ll, &hi, &y});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(ll.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ll.scalar_type(), "wavefuse_merge_cuda",
                                  [&] {
                                    if (small) {
                                      run_merge<scalar_t, int32_t>(ll, hi, taps, y, tr, g, stream);
                                    } else {
                                      run_merge<scalar_t, int64_t>(ll, hi, taps, y, tr, g, stream);
                                    }
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

// ---- wavelet_pgd_step's approximation chain (declared in host.h, used by pgd_step.cu) ---------

template <typename acc_t, typename index_t>
void run_chain(const Tensor& cur, const Tensor& prev, const Tensor& out, const Tensor& taps,
               Mode mode, double coef, double gain, const Geometry& g, cudaStream_t stream) {
  ChainArgs<acc_t, index_t> a{};  // every field set: FusedLinf off, no indeterminate bytes
  a.cur = static_cast<const acc_t*>(cur.data_ptr());
  a.sc = strides4<index_t>(cur);
  a.prev = static_cast<const acc_t*>(prev.data_ptr());
  a.sp = strides4<index_t>(prev);
  a.out = static_cast<acc_t*>(out.data_ptr());
  a.so = strides4<index_t>(out);
  a.filters = static_cast<const acc_t*>(taps.data_ptr());
  a.coef = static_cast<acc_t>(coef);
  a.gain = static_cast<acc_t>(gain);
  const int64_t L = taps.size(1);
  a.C = static_cast<index_t>(prev.size(1));
  a.H = static_cast<index_t>(prev.size(2));
  a.W = static_cast<index_t>(prev.size(3));
  a.Kh = static_cast<index_t>(cur.size(2));
  a.Kw = static_cast<index_t>(cur.size(3));
  a.Hs = static_cast<index_t>(synthesis_length<int64_t>(cur.size(2), L, mode));
  a.Ws = static_cast<index_t>(synthesis_length<int64_t>(cur.size(3), L, mode));
  a.L = static_cast<int>(L);
  a.tr = transform_of(/*synthesis=*/true, mode, a.L);
  a.tr.reverse = true;  // the dec bank, reversed on loading: the rec bank
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  chain_launch(a, g.blocks, static_cast<size_t>(g.smem_elems) * sizeof(acc_t), stream);
}

template <typename acc_t, typename index_t>
void run_cascade(const Tensor& g, const Tensor& out, const Tensor& levels, const Tensor& taps,
                 Mode mode, at::ArrayRef<double> hf_scale, const LinfStep* step,
                 cudaStream_t stream) {
  CascadeArgs<acc_t, index_t> a{};
  const int64_t L = taps.size(1);
  const bool planned = cascade_plan(a, g.size(2), g.size(3), static_cast<int>(L), mode,
                                    static_cast<int>(hf_scale.size()), hf_scale.data());
  TORCH_INTERNAL_ASSERT(planned, "wavefuse: cascade of ", hf_scale.size(), " levels");
  a.g = static_cast<const acc_t*>(g.data_ptr());
  a.sg = strides4<index_t>(g);
  if (step == nullptr) {
    a.out = static_cast<acc_t*>(out.data_ptr());
    a.so = strides4<index_t>(out);
  }
  a.step = fused_linf<acc_t, index_t>(step);
  a.levels_base = static_cast<acc_t*>(levels.data_ptr());
  a.filters = static_cast<const acc_t*>(taps.data_ptr());
  a.C = static_cast<index_t>(g.size(1));
  const size_t smem_bytes = static_cast<size_t>(cascade_smem_elems(L)) * sizeof(acc_t);
  cascade_launch(a, g.size(0) * g.size(1), smem_bytes, stream);
}

}  // namespace

Tensor chain_cascade(const Tensor& g, const Tensor& taps, Mode mode,
                     at::ArrayRef<double> hf_scale, const LinfStep* step) {
  const auto t = g.scalar_type();
  TORCH_CHECK((t == at::kFloat || t == at::kDouble) && taps.scalar_type() == t &&
                  taps.is_contiguous() && taps.device() == g.device(),
              "wavefuse: chain_cascade takes float32 or float64 data and contiguous taps of its "
              "dtype on its device");
  const int64_t N = g.size(0), C = g.size(1), H = g.size(2), W = g.size(3), L = taps.size(1);
  const int levels = static_cast<int>(hf_scale.size());
  TORCH_CHECK(levels >= 1 && levels <= kCascadeMaxLevels, "wavefuse: the cascade takes 1 to ",
              kCascadeMaxLevels, " levels, got ", levels);
  TORCH_CHECK(step == nullptr ||
                  (step->x_adv.scalar_type() == t && step->x_nat.scalar_type() == t),
              "wavefuse: chain_cascade fuses the step for x_adv and x_nat in g's dtype only");
  const c10::cuda::CUDAGuard guard(g.device());
  const int64_t planes = N * C, plane = H * W;
  const int64_t per_plane = cascade_plane_elems(H, W, L, mode, levels);
  // One allocation: g' first, in g's memory format (the step's flat path), then the levels,
  // plane-major (cascade_body.cuh). With the fused step, the levels alone.
  const int64_t g_elems = step == nullptr ? planes * plane : 0;
  const Tensor buf = at::empty({g_elems + planes * per_plane}, g.options());
  const Tensor out = step != nullptr         ? Tensor()
                     : channels_last_like(g) ? buf.as_strided({N, C, H, W}, {C * plane, 1, W * C, C})
                                             : buf.as_strided({N, C, H, W}, {C * plane, plane, W, 1});
  if (planes * plane == 0) return out;
  const Tensor levels_t = buf.narrow(0, g_elems, planes * per_plane);
  TORCH_CHECK(planes <= INT_MAX, "wavefuse: too many planes (", planes, ") for one CUDA launch");
  const int64_t smem_bytes = cascade_smem_elems(L) * static_cast<int64_t>(acc_size(g));
  TORCH_CHECK(smem_bytes <= kMaxSharedBytes, "wavefuse: a ", L, "-tap filter needs ", smem_bytes,
              " bytes of shared memory per block; the CUDA kernels support at most ",
              kMaxSharedBytes);
  const bool small =
      span_of(g) < kInt32Span && buf.numel() < kInt32Span && int32_linf(step);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(g.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES(t, "wavefuse_chain_cascade_cuda", [&] {
    if (small) {
      run_cascade<scalar_t, int32_t>(g, out, levels_t, taps, mode, hf_scale, step, stream);
    } else {
      run_cascade<scalar_t, int64_t>(g, out, levels_t, taps, mode, hf_scale, step, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

bool pairs_fit(int64_t L, const Tensor& like) {
  return L % 2 == 0 && pair_smem_elems(L) * static_cast<int64_t>(acc_size(like)) <= kMaxSharedBytes;
}

Tensor chain_pairs(const Tensor& g, const Tensor& taps, Mode mode, at::ArrayRef<double> hf_scale,
                   const LinfStep* step) {
  const auto t = g.scalar_type();
  TORCH_CHECK((t == at::kFloat || t == at::kDouble) && taps.scalar_type() == t &&
                  taps.is_contiguous() && taps.device() == g.device(),
              "wavefuse: chain_pairs takes float32 or float64 data and contiguous taps of its "
              "dtype on its device");
  const int64_t N = g.size(0), C = g.size(1), L = taps.size(1);
  const int depth = static_cast<int>(hf_scale.size());
  TORCH_CHECK(depth >= 1 && pairs_fit(L, g), "wavefuse: chain_pairs takes at least one level and ",
              "an even filter whose window fits in shared memory, got ", depth, " levels, ", L,
              " taps");
  TORCH_CHECK(step == nullptr ||
                  (step->x_adv.scalar_type() == t && step->x_nat.scalar_type() == t),
              "wavefuse: chain_pairs fuses the step for x_adv and x_nat in g's dtype only");
  const c10::cuda::CUDAGuard guard(g.device());
  // g' in g's memory format; none with the fused step
  Tensor out = step != nullptr ? Tensor() : empty_4d(g, N, C, g.size(2), g.size(3));
  if (g.numel() == 0) return out;
  // sizes[j] of a_j
  std::vector<std::pair<int64_t, int64_t>> sizes{{g.size(2), g.size(3)}};
  for (int j = 1; j <= depth; ++j) {
    sizes.push_back({analysis_length<int64_t>(sizes.back().first, L, mode),
                     analysis_length<int64_t>(sizes.back().second, L, mode)});
  }
  std::vector<Tensor> approx(depth + 1), detail(depth + 1);  // a_j, e_j in memory
  approx[0] = g;
  const bool band = pair_band_fits(L, static_cast<int64_t>(acc_size(g)), kMaxSharedBytes);
  const size_t smem_bytes = static_cast<size_t>(pair_smem_elems(L, band)) * acc_size(g);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(g.device().index()).stream();
  const std::vector<PairStep> plan = pair_plan(depth, hf_scale.data());
  const std::vector<std::vector<int>> last_read = pair_last_reads(plan, depth);
  for (size_t p = 0; p < plan.size(); ++p) {
    const PairStep& st = plan[p];
    const bool first_a = st.first_analysis, second_a = st.second_analysis;
    const int j1 = st.j1, j2 = st.j2;
    const Tensor& src = first_a ? approx[j1 - 1] : (j1 < depth ? detail[j1] : approx[j1]);
    const auto src_size = first_a ? sizes[j1 - 1] : sizes[j1];
    const auto mid_size = first_a ? sizes[j1] : sizes[j1 - 1];
    const auto out_size = second_a ? sizes[j2] : sizes[j2 - 1];
    const double c1 = st.c1, c2 = st.c2;
    const bool final = st.final, store_first = st.store_first;
    const Tensor& p1 = c1 != 0.0 ? approx[j1 - 1] : src;
    const Tensor& p2 = c2 != 0.0 ? approx[j2 - 1] : src;
    TORCH_INTERNAL_ASSERT(p1.defined() && p2.defined() && src.defined(),
                          "wavefuse: chain_pairs lost a level");
    const Tensor first =
        store_first ? empty_4d(g, N, C, mid_size.first, mid_size.second) : Tensor();
    const LinfStep* fused = final ? step : nullptr;  // the step: in the last launch only
    const Tensor dst = fused != nullptr ? step->x_adv
                       : final          ? out
                                        : empty_4d(g, N, C, out_size.first, out_size.second);
    const int T = second_a ? kPairTileA : kPairTileS;
    const int64_t tiles_h = (out_size.first + T - 1) / T, tiles_w = (out_size.second + T - 1) / T;
    const int64_t blocks = N * C * tiles_h * tiles_w;
    TORCH_CHECK(blocks <= INT_MAX, "wavefuse: too many output tiles (", blocks,
                ") for one CUDA launch");
    const bool small = int32_offsets({&src, &p1, &p2, &dst}) &&
                       (!first.defined() || int32_offsets({&first})) && int32_linf(fused);
    AT_DISPATCH_FLOATING_TYPES(t, "wavefuse_chain_pairs_cuda", [&] {
      auto fill = [&](auto index_tag) {
        using index_t = decltype(index_tag);
        PairArgs<scalar_t, index_t> a{};
        a.src = static_cast<const scalar_t*>(src.data_ptr());
        a.ss = strides4<index_t>(src);
        a.p1 = static_cast<const scalar_t*>(p1.data_ptr());
        a.s1 = strides4<index_t>(p1);
        a.p2 = static_cast<const scalar_t*>(p2.data_ptr());
        a.s2 = strides4<index_t>(p2);
        a.first = first.defined() ? static_cast<scalar_t*>(first.data_ptr()) : nullptr;
        a.sf = first.defined() ? strides4<index_t>(first) : Strides4<index_t>{0, 0, 0, 0};
        a.out = static_cast<scalar_t*>(dst.data_ptr());
        a.so = strides4<index_t>(dst);
        a.filters = static_cast<const scalar_t*>(taps.data_ptr());
        a.c1 = static_cast<scalar_t>(c1);
        a.g1 = static_cast<scalar_t>(st.g1);
        a.c2 = static_cast<scalar_t>(c2);
        a.g2 = static_cast<scalar_t>(st.g2);
        a.has_c1 = c1 != 0.0;
        a.has_c2 = c2 != 0.0;
        a.first_analysis = first_a;
        a.second_analysis = second_a;
        a.band = band;
        a.C = static_cast<index_t>(C);
        a.Hs = static_cast<index_t>(src_size.first);
        a.Ws = static_cast<index_t>(src_size.second);
        a.Hm = static_cast<index_t>(mid_size.first);
        a.Wm = static_cast<index_t>(mid_size.second);
        a.Ho = static_cast<index_t>(out_size.first);
        a.Wo = static_cast<index_t>(out_size.second);
        a.tiles_h = static_cast<index_t>(tiles_h);
        a.tiles_w = static_cast<index_t>(tiles_w);
        a.L = static_cast<int>(L);
        a.R = static_cast<int>(pair_window(second_a, L));
        a.T = T;
        a.mode = mode;
        a.step = fused_linf<scalar_t, index_t>(fused);
        pair_launch(a, blocks, smem_bytes, stream);
      };
      if (small) {
        fill(int32_t{});
      } else {
        fill(int64_t{});
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (store_first) approx[j1] = first;
    if (second_a) {
      approx[j2] = dst;
    } else if (!final) {
      detail[j2 - 1] = dst;
    }
    for (int j = 0; j <= depth; ++j) {  // what no later launch reads (a_0: the caller's g)
      if (last_read[0][j] == static_cast<int>(p)) approx[j] = Tensor();
      if (last_read[1][j] == static_cast<int>(p)) detail[j] = Tensor();
    }
  }
  return out;
}

Tensor analysis_ll(const Tensor& x, const Tensor& taps, Mode mode) {
  TORCH_CHECK(x.scalar_type() == taps.scalar_type() &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "wavefuse: analysis_ll takes float32 or float64 data and taps of its dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), L = taps.size(1);
  const int64_t Kh = split_length(false, x.size(2), L, mode);
  const int64_t Kw = split_length(false, x.size(3), L, mode);
  Tensor ll = empty_4d(x, N, C, Kh, Kw);
  if (ll.numel() == 0) return ll;
  const Geometry g = split_geometry(N * C, Kh, Kw, L);
  check_launch(g, g.smem_elems * static_cast<int64_t>(acc_size(x)), L);
  const Transform tr = transform_of(/*synthesis=*/false, mode, static_cast<int>(L));
  const bool small = int32_offsets({&x, &ll});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const Tensor none;  // no detail bands: split_col_pass stores ll alone
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "wavefuse_analysis_ll_cuda", [&] {
    if (small) {
      run_split<scalar_t, int32_t>(x, taps, ll, none, tr, g, stream);
    } else {
      run_split<scalar_t, int64_t>(x, taps, ll, none, tr, g, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return ll;
}

void chain_level(const Tensor& cur, const Tensor& prev, const Tensor& out, const Tensor& taps,
                 Mode mode, double coef, double gain) {
  const auto t = cur.scalar_type();
  TORCH_CHECK((t == at::kFloat || t == at::kDouble) && prev.scalar_type() == t &&
                  out.scalar_type() == t && taps.scalar_type() == t,
              "wavefuse: chain_level takes cur, prev, out and taps of one compute dtype");
  TORCH_CHECK(out.sizes() == prev.sizes() && cur.size(0) == prev.size(0) &&
                  cur.size(1) == prev.size(1),
              "wavefuse: chain_level: mismatched shapes ", cur.sizes(), " ", prev.sizes(), " ",
              out.sizes());
  const c10::cuda::CUDAGuard guard(out.device());
  if (out.numel() == 0) return;
  const int64_t L = taps.size(1);
  Geometry g = merge_geometry(prev.size(0) * prev.size(1), prev.size(2), prev.size(3), L);
  g.smem_elems = 2 * L;  // the merge's tiling, but chain_thread gathers: the taps alone
  check_launch(g, g.smem_elems * static_cast<int64_t>(acc_size(cur)), L);
  const bool small = int32_offsets({&cur, &prev, &out});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(out.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES(t, "wavefuse_chain_cuda", [&] {
    if (small) {
      run_chain<scalar_t, int32_t>(cur, prev, out, taps, mode, coef, gain, g, stream);
    } else {
      run_chain<scalar_t, int64_t>(cur, prev, out, taps, mode, coef, gain, g, stream);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

namespace {

// ---- the ops (contract: csrc/ops.cpp) -------------------------------------------------------------

std::tuple<Tensor, Tensor> dwt2d_cuda(const Tensor& x, const Tensor& filters,
                                      c10::string_view mode_name) {
  check_input(x, "x");
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: x must have non-empty H and W, got ", x.sizes());
  return split(x, filters, mode, /*synthesis=*/false, split_length(false, H, L, mode),
               split_length(false, W, L, mode));
}

Tensor dwt2d_adjoint_cuda(const Tensor& grad_ll, const Tensor& grad_hi, const Tensor& filters,
                          c10::string_view mode_name, at::IntArrayRef input_size) {
  check_bands(grad_ll, grad_hi);
  check_filters(filters);
  TORCH_CHECK(input_size.size() == 2, "wavefuse: input_size must be [H, W], got ", input_size);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = input_size[0], W = input_size[1];
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: input_size must be positive, got ", input_size);
  TORCH_CHECK(analysis_length<int64_t>(H, L, mode) == grad_ll.size(2) &&
                  analysis_length<int64_t>(W, L, mode) == grad_ll.size(3),
              "wavefuse: coefficient size ", grad_ll.sizes(), " does not match input_size [", H,
              ", ", W, "]");
  return merge(grad_ll, grad_hi, filters, mode, /*synthesis=*/false, H, W);
}

Tensor idwt2d_cuda(const Tensor& ll, const Tensor& hi, const Tensor& filters,
                   c10::string_view mode_name) {
  check_bands(ll, hi);
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1);
  const int64_t H = synthesis_length<int64_t>(ll.size(2), L, mode);
  const int64_t W = synthesis_length<int64_t>(ll.size(3), L, mode);
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: too few coefficients ", ll.sizes(), " for ", L,
              " taps");
  return merge(ll, hi, filters, mode, /*synthesis=*/true, H, W);
}

std::tuple<Tensor, Tensor> idwt2d_adjoint_cuda(const Tensor& grad_y, const Tensor& filters,
                                               c10::string_view mode_name) {
  check_input(grad_y, "grad_y");
  check_filters(filters);
  const Mode mode = parse_mode(std::string(mode_name));
  const int64_t L = filters.size(1), H = grad_y.size(2), W = grad_y.size(3);
  const int64_t Mh = split_length(true, H, L, mode), Mw = split_length(true, W, L, mode);
  TORCH_CHECK(H >= 1 && W >= 1 && synthesis_length<int64_t>(Mh, L, mode) == H &&
                  synthesis_length<int64_t>(Mw, L, mode) == W,
              "wavefuse: ", grad_y.sizes(), " is not a synthesis output size for ", L, " taps");
  return split(grad_y, filters, mode, /*synthesis=*/true, Mh, Mw);
}

}  // namespace
}  // namespace cuda_dwt
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CUDA, m) {
  m.impl("_dwt2d_kernel", &wavefuse::cuda_dwt::dwt2d_cuda);
  m.impl("_dwt2d_adjoint_kernel", &wavefuse::cuda_dwt::dwt2d_adjoint_cuda);
  m.impl("_idwt2d_kernel", &wavefuse::cuda_dwt::idwt2d_cuda);
  m.impl("_idwt2d_adjoint_kernel", &wavefuse::cuda_dwt::idwt2d_adjoint_cuda);
}
#endif  // __CUDA_ARCH__
