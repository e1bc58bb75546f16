// CUDA kernels of the PGD update, in place on x_adv: wavefuse::_pgd_step_kernel and
// wavefuse::_wavelet_pgd_step_kernel (schemas in csrc/ops.cpp, contract in
// wavefuse/ops/pgd_step.py, semantics reference.pgd_step_ref / wavelet_pgd_step_ref: torchattacks
// 3.5.1's PGD / PGDL2 update op for op in the compute type, half types rounded once at the store).
// The per-thread bodies, the launch geometry and the rounding rules are in pgd_step_body.cuh.
//
// Design (as kernels/pgd_step.py and csrc/cpu/pgd_step.cpp):
//   Linf  one elementwise launch over x_adv in its memory order (kLinfItems elements per thread).
//   L2    three launches on the current stream, no host sync, no atomics: per-(sample, chunk)
//         partial sums of g^2; per-(sample, chunk) partial sums of delta^2 (each block reducing its
//         sample's g^2 partials first); the update (each block reducing both sets). Every sum has a
//         fixed order (thread-serial, then a shared-memory tree), so repeated calls are bitwise
//         identical. Two (N, P) scratch tensors of partials in the compute type, P <= 256.
//   Bounds: eps, alpha, lo, hi each a kernel argument (the double rounded to the compute type) or
//         an (N or 1, C or 1, 1, 1) compute-type tensor read through strides (0 where broadcast);
//         a step with float bounds reads no extra memory.
//   Layout: flat path (offset = index) when x_adv, grad and x_nat are all dense in x_adv's memory
//         order (NCHW, or NHWC when x_adv is channels_last); otherwise each tensor through its
//         own strides (any views).
//   wavelet_pgd_step, Haar (a two-tap bank: haar, db1; 1 <= level <= kHaarMaxLevels = 6): ONE
//         fused kernel, haar_step_kernel (bodies haar_step_* in pgd_step_body.cuh, maths as
//         kernels/haar.py's _haar_pgd_kernel): per S x S tile of the padded signal x^ (grad
//         through haar_body.cuh's copy map pi, every mode and size; S = max(2^J, 32)) the tile
//         into shared memory, the 2 x 2 mean pyramid m_1..m_J in shared memory, then per real
//         sample g' = sum_j c_j m_j (c_0 = s_1, c_j = s_{j+1} - s_j, c_J = 1 - s_J) and the step.
//         Tile-local: no halo, no band ever formed, grad read once per launch (pad positions
//         re-read their source, from cache). Linf: ONE launch
//         (filter + step), one tile per block. L2: the same kernel three times as stages (g'^2
//         partials, delta^2 partials, update), each recomputing g' from grad; block (n, s) of
//         N * P, P = min(tiles per sample, 256), slot s summing tiles s, s + P, ...: fixed order,
//         no atomics, no host sync, a (2, N, P) scratch of partials. Half types read and computed
//         in float32, rounded once at the store (no copies); float64 in float64. The filter's
//         products and sums are rounded one by one too (mul_rn / add_rn), so the host emulation
//         computes the device's bits. A CUDA bank is not read by value (that would be a host
//         sync, fatal under CUDA graph capture): L == 2 decides, as kernels/haar.py; a CPU bank
//         is also checked by value (haar_fused).
//   wavelet_pgd_step, other banks (and Haar deeper than 6 levels) on planes up to kSepMaxSide =
//         64 per side (CIFAR, Tiny-ImageNet): ONE fused kernel, sep_step_kernel (bodies sep_step_*
//         in pgd_step_body.cuh), its own op _separable_pgd_step_kernel: the filter of every level
//         as the separable matrix pairs that wavefuse/ops/separable.py builds and caches on the
//         host (g' = identity * G + sum_k L_k G R_k^T per plane, every mode, any bank), one block
//         per plane (G and T = G R_k^T in shared memory, the thread's outputs in registers), then
//         the step; stages, slots and partials as haar_step_kernel's (Linf one launch, L2 three,
//         g' recomputed, no copies for half types). wavefuse/ops/pgd_step.py picks it
//         (_cuda_separable), so the bank is read on the host once per cache key, never per step.
//   wavelet_pgd_step otherwise (larger planes; Haar deeper than 6 levels on them, where the tile
//         side 2^J would exceed the 48 KiB of shared memory a block gets in float64), for a bank
//         with perfect reconstruction (every orthogonal wavelet; the Python layer checks and
//         caches it, separable.perfect_reconstruction): the APPROXIMATION CHAIN, its own op
//         _chain_pgd_step_kernel (chain_pgd_step_cuda below): per level one split_kernel launch
//         that writes the approximation band alone (dwt.cu's analysis_ll), then, coarsest first,
//         per level one chain_kernel launch (dwt.cu's chain_level, body chain_thread in
//         dwt_body.cuh) e_{j-1} = c_j a_{j-1} + S_lo e_j over a_{j-1}'s buffer, S_lo the
//         synthesis of an approximation band alone: perfect reconstruction, idwt(a_j, d_j) =
//         a_{j-1}, makes the detail bands unnecessary (derivation: kernels/pgd_step.py). g' =
//         e_0, then the step above. 2J launches plus the step, no band formed, against the
//         composition's 2J transforms and J band multiplies; the Python layer drops the levels
//         past the last change of scale (separable.chain_depth). 2026-12-06: where the caller
//         asks (`cascade`: wavefuse/ops/separable.py's cascade_fits, at least 2 planes per SM
//         of at most 2^18 samples each; BLIND thresholds, unmeasured) and J <= 16, the WHOLE
//         CASCADE instead:
//         ONE launch for the filter (dwt.cu's cascade_kernel, one block per (n, c) plane running
//         the same split (ll only) and chain_thread bodies level after level over its tiles,
//         barriers between phases, a_j / e_j in one plane-major scratch allocation that also
//         holds g'), then the step: filter launches 2J -> 1 (issue #5, requirement 3). Where the
//         cascade does not run, the chain IN PAIRS OF STAGES (dwt.cu's chain_pairs, body
//         pair_body.cuh: each launch runs two consecutive stages of A_1 .. A_J, S_J .. S_1, a
//         block computing its tile's window of the first stage -- halo recomputed -- in shared
//         memory, then its tile): J launches for the filter, then the step; the per-level
//         launches above remain for a filter whose window does not fit in shared memory
//         (dwt.cu's pairs_fit: 48 taps and more in float64, 82 in float32 -- longer than any
//         wavelet wavefuse names, so only a bank passed to the op directly). Stage 1 is a direct
//         2-D gather (L^2 taps per window sample): for long filters the pairs may cost more
//         arithmetic than the level route saves in launches (bench/bench_routes.py). A bank
//         without perfect reconstruction runs the COMPOSITION: per level the CUDA analysis
//         (the registered wavefuse::_dwt2d_kernel, called through the c10 dispatcher by
//         scale_details.h), the detail bands times hf_scale[j], then per level the synthesis
//         (_idwt2d_kernel) cropped to the size that level analysed (as
//         reference.scale_details_ref), all in the compute type; then the step. Either way
//         half types step in float32 on float32 copies of x_adv and x_nat and round once (copy_
//         back; step_filtered), as the CPU kernel's non-Haar path.
//         2026-12-07: on the cascade and the pairs, a Linf step on an x_adv in the compute type
//         (float32, float64) runs INSIDE the filter's last launch (step_math.cuh's FusedLinf:
//         where that launch would store g', x_adv gets the step's linf_value with the same
//         operands, so the bits are the separate step's): ONE launch for the cascade, J for the
//         pairs, no g' buffer. L2 (which needs g''s norm before any update), the half types and
//         the level route keep the separate step. chain_pairs also releases each level buffer
//         after the launch that reads it last (pair_last_reads). Never run on a GPU.
//
// Rounding: divisions and square roots correctly rounded and the update's products and sums not
// contracted into FMAs (__fmul_rn etc. in pgd_step_body.cuh), so Linf matches the reference bit
// for bit in every dtype and L2 differs only by the norms' summation order (~1e-7 relative in
// float32). No fast math anywhere (setup.py passes -O3 only).
//
// Header conventions as dwt.cu (see its comment): torch headers behind `#ifndef __CUDA_ARCH__`
// (host pass only), kernels and raw-pointer launchers outside it, explicitly instantiated per
// (dtype, index type); int32 offsets where every offset fits below 2^30, else int64.
//
// Never run on a GPU: compiled only (nvcc 13.0, sm_80 + sm_90); the bodies are checked on the CPU
// by tests/test_cuda_pgd_emulation.py (the Haar step included, every mode, levels 1-3, 5, 6), the
// kernels on a GPU by tests/test_cuda_pgd_step.py (marked gpu). ptxas (2026-12-03, -Xptxas -v,
// sm_80 and sm_90, 96 kernels): no spills, no stack frames; registers per thread: linf 29-32,
// l2 g^2 partials 12-38, l2 delta^2 partials 27-48, l2 update 29-60 (int64 offsets and float64
// at the top); haar_step Linf 32-47, g'^2 partials 30-39, delta^2 partials 36-50, update 33-62;
// dynamic shared memory up to 42.7 KiB (float64, level 6). 2026-12-04, with sep_step (64 more
// kernels): the Haar float64 int64 L2 update on sm_90 now spills 20 bytes (its stage code moved
// into fused_stage_element, shared with sep_step); sep_step 40-80 registers, no spill in float32
// on either arch, 16-144 bytes of spill in 9 float64 and half-type variants (the 16 outputs a
// thread keeps in registers); its shared memory is 2 H W acc_t (64 KiB in float64 at 64 x 64:
// the opt-in). The L2 per-thread loops are kept
// rolled (#pragma unroll 1 in the body): unrolled, the division's slow-path call spilled 4-16
// bytes in 5 of the first 64 kernels. Compile: ~2 min wall for this file on the 2-core machine.
// Speed unmeasured.

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "common.h"
#include "pgd_step_body.cuh"

#ifndef __CUDA_ARCH__  // host pass only (see dwt.cu)
#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "cascade_body.cuh"  // kCascadeMaxLevels: host code only (the kernel is dwt.cu's)
#include "host.h"
#include "scale_details.h"
#endif

namespace wavefuse {
namespace cuda_pgd {
namespace {

// ---- kernels: thin wrappers over the bodies, barriers between phases ----------------------------

template <bool Flat, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads) linf_kernel(const StepArgs<scalar_t, index_t> a) {
  linf_thread<Flat>(a, static_cast<index_t>(blockIdx.x), static_cast<int>(threadIdx.x));
}

// The block tree over v[0, kThreads) (and w, when given), one barrier per level.
template <typename acc_t>
__device__ __forceinline__ void block_tree(acc_t* v, acc_t* w, int tid) {
#pragma unroll
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    tree_level(v, tid, s);
    if (w != nullptr) tree_level(w, tid, s);
    __syncthreads();
  }
}

template <bool Flat, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    l2_grad_partials_kernel(const StepArgs<scalar_t, index_t> a) {
  using acc_t = typename StepAcc<scalar_t>::type;
  __shared__ acc_t smem[kL2Smem];
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  acc_t* v = smem + kThreads;
  l2_grad_squares<Flat>(a, block, tid, v);
  __syncthreads();
  block_tree<acc_t>(v, nullptr, tid);
  store_partial(a.pg, block, tid, v);
}

template <bool Flat, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    l2_delta_partials_kernel(const StepArgs<scalar_t, index_t> a) {
  using acc_t = typename StepAcc<scalar_t>::type;
  __shared__ acc_t smem[kL2Smem];
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  acc_t* sg = smem;
  acc_t* v = smem + kThreads;
  load_sample_partials(a.pg, block / a.P, a.P, tid, sg);
  __syncthreads();
  block_tree<acc_t>(sg, nullptr, tid);
  l2_delta_squares<Flat>(a, block, tid, sg, v);
  __syncthreads();
  block_tree<acc_t>(v, nullptr, tid);
  store_partial(a.pd, block, tid, v);
}

template <bool Flat, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads) l2_update_kernel(const StepArgs<scalar_t, index_t> a) {
  using acc_t = typename StepAcc<scalar_t>::type;
  __shared__ acc_t smem[kL2Smem];
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  acc_t* sg = smem;
  acc_t* sd = smem + kThreads;
  const index_t n = block / a.P;
  load_sample_partials(a.pg, n, a.P, tid, sg);
  load_sample_partials(a.pd, n, a.P, tid, sd);
  __syncthreads();
  block_tree<acc_t>(sg, sd, tid);
  l2_update<Flat>(a, block, tid, sg, sd);
}

// The fused steps' (Haar, separable) L2 launches 2 and 3, first: the sample's norms from its
// partials into every thread's denom (and factor); shared memory is free again on return.
template <int Stage, typename Args, typename index_t, typename acc_t>
__device__ __forceinline__ void fused_sample_norms(const Args& a, index_t n, int tid, acc_t* sm,
                                                   acc_t& denom, acc_t& factor) {
  if (Stage != kFusedL2Delta && Stage != kFusedL2Update) return;
  fused_load_partials<Stage>(a, n, tid, sm);
  __syncthreads();
  block_tree<acc_t>(sm, Stage == kFusedL2Update ? sm + kThreads : nullptr, tid);
  fused_norms<Stage>(a, n, sm, denom, factor);
  __syncthreads();  // every thread has read sm[0] (and sm[kThreads]) before the block reuses it
}

// The fused steps' L2 launches 1 and 2, last: the block's sum of the threads' acc as its partial.
template <int Stage, typename Args, typename index_t, typename acc_t>
__device__ __forceinline__ void fused_store_partial(const Args& a, index_t block, int tid,
                                                    acc_t* sm, acc_t acc) {
  if (Stage != kFusedL2Grad && Stage != kFusedL2Delta) return;
  sm[tid] = acc;
  __syncthreads();
  block_tree<acc_t>(sm, nullptr, tid);
  store_partial(Stage == kFusedL2Grad ? a.pg : a.pd, block, tid, sm);
}

// wavelet_pgd_step with the Haar bank: filter and step in one kernel (pgd_step_body.cuh's
// haar_step_* phases). Stage: kFusedLinf (the whole step) or one of the three L2 launches.
template <int Stage, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    haar_step_kernel(const HaarStepArgs<scalar_t, index_t> a) {
  using acc_t = typename StepAcc<scalar_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* sm = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  const index_t n = block / a.P;
  acc_t denom = acc_t(1), factor = acc_t(1);
  fused_sample_norms<Stage>(a, n, tid, sm, denom, factor);
  acc_t acc = acc_t(0);
  for (index_t t = block % a.P; t < a.Q; t += a.P) {  // the same trip count for the whole block
    haar_step_load(a, n, t, tid, sm);
    for (int j = 1; j <= a.levels; ++j) {
      __syncthreads();
      haar_step_mean(a, j, tid, sm);
    }
    __syncthreads();
    haar_step_tile<Stage>(a, n, t, tid, sm, denom, factor, acc);
    if (Stage != kFusedLinf) __syncthreads();  // the next tile (or the tree) overwrites sm
  }
  fused_store_partial<Stage>(a, block, tid, sm, acc);
}

// wavelet_pgd_step, other banks on planes up to kSepMaxSide: the separable filter and the step in
// one kernel (pgd_step_body.cuh's sep_step_* phases), stages as haar_step_kernel's.
template <int Stage, typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    sep_step_kernel(const SepStepArgs<scalar_t, index_t> a) {
  using acc_t = typename StepAcc<scalar_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* sm = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  const index_t n = block / a.P;
  acc_t denom = acc_t(1), factor = acc_t(1);
  fused_sample_norms<Stage>(a, n, tid, sm, denom, factor);
  acc_t acc = acc_t(0);
  acc_t out[kSepItems];
  for (index_t c = block % a.P; c < a.C; c += a.P) {  // the same trip count for the whole block
    sep_step_load(a, n, c, tid, sm);
    __syncthreads();
    sep_step_init(a, tid, sm, out);
    for (int k = 0; k < a.terms; ++k) {
      sep_step_right(a, k, tid, sm);
      __syncthreads();
      sep_step_left(a, k, tid, sm, out);
      __syncthreads();  // the next pair's right overwrites T
    }
    sep_step_plane<Stage>(a, n, c, tid, out, denom, factor, acc);
    __syncthreads();  // the next plane's load overwrites G (read by init when there is no pair)
  }
  fused_store_partial<Stage>(a, block, tid, sm, acc);
}

// Raw-argument launchers, explicitly instantiated below for every (dtype, index type) so that the
// device passes (which skip the guarded host code that calls them) generate every kernel.
template <typename scalar_t, typename index_t>
void linf_launch(const StepArgs<scalar_t, index_t>& a, bool flat, int64_t blocks,
                 cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(blocks);
  if (flat) {
    linf_kernel<true, scalar_t, index_t><<<grid, kThreads, 0, stream>>>(a);
  } else {
    linf_kernel<false, scalar_t, index_t><<<grid, kThreads, 0, stream>>>(a);
  }
}

// stage 0: g^2 partials, 1: delta^2 partials, 2: the update.
template <bool Flat, typename scalar_t, typename index_t>
void l2_stage(const StepArgs<scalar_t, index_t>& a, int stage, unsigned int grid,
              cudaStream_t stream) {
  if (stage == 0) {
    l2_grad_partials_kernel<Flat, scalar_t, index_t><<<grid, kThreads, 0, stream>>>(a);
  } else if (stage == 1) {
    l2_delta_partials_kernel<Flat, scalar_t, index_t><<<grid, kThreads, 0, stream>>>(a);
  } else {
    l2_update_kernel<Flat, scalar_t, index_t><<<grid, kThreads, 0, stream>>>(a);
  }
}

template <typename scalar_t, typename index_t>
void l2_launch(const StepArgs<scalar_t, index_t>& a, bool flat, int stage, int64_t blocks,
               cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(blocks);
  if (flat) {
    l2_stage<true>(a, stage, grid, stream);
  } else {
    l2_stage<false>(a, stage, grid, stream);
  }
}

// stage: kFusedLinf, kFusedL2Grad, kFusedL2Delta or kFusedL2Update.
template <typename scalar_t, typename index_t>
void haar_step_launch(const HaarStepArgs<scalar_t, index_t>& a, int stage, int64_t blocks,
                      size_t smem_bytes, cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(blocks);
  if (stage == kFusedLinf) {
    haar_step_kernel<kFusedLinf, scalar_t, index_t><<<grid, kThreads, smem_bytes, stream>>>(a);
  } else if (stage == kFusedL2Grad) {
    haar_step_kernel<kFusedL2Grad, scalar_t, index_t><<<grid, kThreads, smem_bytes, stream>>>(a);
  } else if (stage == kFusedL2Delta) {
    haar_step_kernel<kFusedL2Delta, scalar_t, index_t><<<grid, kThreads, smem_bytes, stream>>>(a);
  } else {
    haar_step_kernel<kFusedL2Update, scalar_t, index_t><<<grid, kThreads, smem_bytes, stream>>>(a);
  }
}

// stage: as haar_step_launch. Dynamic shared memory above 48 KiB (float64, H * W > 3072)
// needs the per-kernel opt-in, set before the launch (not a stream operation: capturable).
// Returns the opt-in's error (the host pass checks it; the launch is checked after).
template <int Stage, typename scalar_t, typename index_t>
cudaError_t sep_stage_launch(const SepStepArgs<scalar_t, index_t>& a, unsigned int grid,
                             size_t smem_bytes, cudaStream_t stream) {
  if (smem_bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(sep_step_kernel<Stage, scalar_t, index_t>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(smem_bytes));
    if (err != cudaSuccess) return err;
  }
  sep_step_kernel<Stage, scalar_t, index_t><<<grid, kThreads, smem_bytes, stream>>>(a);
  return cudaSuccess;
}

template <typename scalar_t, typename index_t>
cudaError_t sep_step_launch(const SepStepArgs<scalar_t, index_t>& a, int stage, int64_t blocks,
                            size_t smem_bytes, cudaStream_t stream) {
  const unsigned int grid = static_cast<unsigned int>(blocks);
  if (stage == kFusedLinf) return sep_stage_launch<kFusedLinf>(a, grid, smem_bytes, stream);
  if (stage == kFusedL2Grad) return sep_stage_launch<kFusedL2Grad>(a, grid, smem_bytes, stream);
  if (stage == kFusedL2Delta) return sep_stage_launch<kFusedL2Delta>(a, grid, smem_bytes, stream);
  return sep_stage_launch<kFusedL2Update>(a, grid, smem_bytes, stream);
}

#define WAVEFUSE_INSTANTIATE(T, I)                                                           \
  template void linf_launch<T, I>(const StepArgs<T, I>&, bool, int64_t, cudaStream_t);     \
  template void l2_launch<T, I>(const StepArgs<T, I>&, bool, int, int64_t, cudaStream_t);  \
  template void haar_step_launch<T, I>(const HaarStepArgs<T, I>&, int, int64_t, size_t,    \
                                       cudaStream_t);                                      \
  template cudaError_t sep_step_launch<T, I>(const SepStepArgs<T, I>&, int, int64_t, size_t, \
                                             cudaStream_t);
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
}  // namespace cuda_pgd
}  // namespace wavefuse

#ifndef __CUDA_ARCH__
namespace wavefuse {
namespace cuda_pgd {
namespace {

using at::Tensor;

using namespace cuda_host;  // layout, offsets, strides, checks (host.h)

// int32 offsets (host.h's kInt32Span) when every tensor's largest offset and N * M stay below 2^30
// (thread indices overshoot the total by less than one block).

// ---- argument checks (the Python layer validates first; these guard direct calls) --------------

void check_bound(const std::optional<Tensor>& t, const Tensor& x, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == x.size(0)) &&
                  (t->size(1) == 1 || t->size(1) == x.size(1)) && t->size(2) == 1 &&
                  t->size(3) == 1,
              "wavefuse: ", name, " must be (N or 1, C or 1, 1, 1), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == acc_type(x) && t->device() == x.device(), "wavefuse: ", name,
              " must be a ", acc_type(x), " tensor on ", x.device(), ", got ", t->scalar_type(),
              " on ", t->device());
}

// The checks both ops share; returns whether the norm is L2.
bool check_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                const std::optional<Tensor>& eps_tensor, const std::optional<Tensor>& alpha_tensor,
                const std::optional<Tensor>& lo_tensor, const std::optional<Tensor>& hi_tensor,
                c10::string_view norm) {
  check_input(x_adv, "x_adv");
  check_input(grad, "grad");
  check_input(x_nat, "x_nat");
  TORCH_CHECK(grad.sizes() == x_adv.sizes() && x_nat.sizes() == x_adv.sizes(),
              "wavefuse: x_adv, grad and x_nat must share one shape, got ", x_adv.sizes(), ", ",
              grad.sizes(), ", ", x_nat.sizes());
  TORCH_CHECK(grad.scalar_type() == x_adv.scalar_type() &&
                  x_nat.scalar_type() == x_adv.scalar_type(),
              "wavefuse: x_adv, grad and x_nat must share one dtype");
  TORCH_CHECK(grad.device() == x_adv.device() && x_nat.device() == x_adv.device(),
              "wavefuse: x_adv, grad and x_nat must be on one device");
  // In place: an x_adv whose elements overlap (expanded), or that shares memory with grad or
  // x_nat, would race (the Python layer checks the latter in eager mode only).
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

// ---- layout and arguments ------------------------------------------------------------------------

// x_adv's memory order: NHWC when it is channels_last and not also contiguous (the rule of
// kernels/pgd_step.py's _layout).
bool visit_channels_last(const Tensor& x_adv) {
  return !x_adv.is_contiguous() && x_adv.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Step, bound_arg and int32_step: host.h (the chain's fused Linf step in dwt.cu uses them too).

// The fields both step kernels' arguments share: the three tensors and the four bounds.
template <typename scalar_t, typename index_t, typename acc_t, typename Args>
void fill_tensors_and_bounds(Args& a, const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                             const Step& s) {
  a.xa = static_cast<scalar_t*>(x_adv.data_ptr());
  a.g = static_cast<const scalar_t*>(grad.data_ptr());
  a.x = static_cast<const scalar_t*>(x_nat.data_ptr());
  a.sa = strides4<index_t>(x_adv);
  a.sg = strides4<index_t>(grad);
  a.sx = strides4<index_t>(x_nat);
  a.eps = bound_arg<acc_t, index_t>(s.eps, s.eps_t);
  a.alpha = bound_arg<acc_t, index_t>(s.alpha, s.alpha_t);
  a.lo = bound_arg<acc_t, index_t>(s.lo, s.lo_t);
  a.hi = bound_arg<acc_t, index_t>(s.hi, s.hi_t);
}

template <typename scalar_t, typename index_t>
void run_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, const Step& s,
              bool l2, bool cl, bool flat, cudaStream_t stream) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int64_t N = x_adv.size(0), C = x_adv.size(1), H = x_adv.size(2), W = x_adv.size(3);
  const int64_t M = C * H * W;
  StepArgs<scalar_t, index_t> a{};
  fill_tensors_and_bounds<scalar_t, index_t, acc_t>(a, x_adv, grad, x_nat, s);
  a.total = static_cast<index_t>(N * M);
  a.M = static_cast<index_t>(M);
  a.C = static_cast<index_t>(C);
  a.HW = static_cast<index_t>(H * W);
  a.W = static_cast<index_t>(W);
  a.cl = cl;
  a.need_c = a.eps.sc != 0 || a.alpha.sc != 0 || a.lo.sc != 0 || a.hi.sc != 0;
  if (!l2) {
    const LinfGeometry g = linf_geometry(N * M);
    TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many elements (", N * M,
                ") for one CUDA launch");
    linf_launch(a, flat, g.blocks, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const L2Geometry g = l2_geometry(N, M);
  TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many samples (", N, ") for one CUDA launch");
  const Tensor partials = at::empty({2, N, g.parts}, x_adv.options().dtype(acc_type(x_adv)));
  a.P = static_cast<index_t>(g.parts);
  a.chunk = static_cast<index_t>(g.chunk);
  a.pg = static_cast<acc_t*>(partials.data_ptr());
  a.pd = a.pg + N * g.parts;
  for (int stage = 0; stage < 3; ++stage) {
    l2_launch(a, flat, stage, g.blocks, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The step on x_adv in place; grad and x_nat in x_adv's dtype (checked).
void step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, const Step& s, bool l2) {
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const bool cl = visit_channels_last(x_adv);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const bool flat =
      x_adv.is_contiguous(fmt) && grad.is_contiguous(fmt) && x_nat.is_contiguous(fmt);
  const bool small = int32_step(x_adv, grad, x_nat, s);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x_adv.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_pgd_step_cuda", [&] {
        if (small) {
          run_step<scalar_t, int32_t>(x_adv, grad, x_nat, s, l2, cl, flat, stream);
        } else {
          run_step<scalar_t, int64_t>(x_adv, grad, x_nat, s, l2, cl, flat, stream);
        }
      });
}

// ---- the ops (contract: csrc/ops.cpp) -------------------------------------------------------------

void pgd_step_cuda(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                   double alpha, double lo, double hi, const std::optional<Tensor>& eps_tensor,
                   const std::optional<Tensor>& alpha_tensor,
                   const std::optional<Tensor>& lo_tensor, const std::optional<Tensor>& hi_tensor,
                   c10::string_view norm) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
  step(x_adv, grad, x_nat, {eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor},
       l2);
}

// ---- wavelet_pgd_step, Haar: filter and step fused ----------------------------------------------

// Whether the fused kernel applies: a two-tap bank (haar, db1; the contract admits only
// orthogonal PyWavelets wavelets, and those are their only two-tap ones) and 1 <= level <=
// kHaarMaxLevels. A bank on the CPU (a direct call) is also checked by value, as
// csrc/cpu/pgd_step.cpp's haar_fusable plus |lo[0]| = |lo[1]| (the block means need the Haar
// low pass); a CUDA bank is not read: that would be a device-to-host copy, a host sync in every
// attack step and an error under CUDA graph capture (kernels/haar.py decides by L alone too).
bool haar_fused(const Tensor& filters, int64_t level, at::ScalarType acc) {
  if (filters.size(1) != 2 || level < 1 || level > cuda_haar::kHaarMaxLevels) return false;
  if (filters.is_cuda()) return true;
  const Tensor f = filters.to(at::kDouble).contiguous();
  const double* h = static_cast<const double*>(f.data_ptr());
  const double tol = 8 * (acc == at::kDouble ? std::numeric_limits<double>::epsilon()
                                             : std::numeric_limits<float>::epsilon());
  const double n0 = h[0] * h[0] + h[1] * h[1], n1 = h[2] * h[2] + h[3] * h[3];
  const double dot = h[0] * h[2] + h[1] * h[3];
  return std::abs(h[0] - h[1]) <= tol && std::abs(n0 - 1) <= tol && std::abs(n1 - 1) <= tol &&
         std::abs(dot) <= tol;
}

template <typename scalar_t, typename index_t>
void run_haar_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, const Step& s,
                   bool l2, Mode mode, int levels, at::ArrayRef<double> hf_scale,
                   cudaStream_t stream) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int64_t N = x_adv.size(0), C = x_adv.size(1), H = x_adv.size(2), W = x_adv.size(3);
  const HaarStepGeometry g = haar_step_geometry(N, C, H, W, levels, l2);
  TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many tiles (", g.blocks,
              ") for one CUDA launch");
  // Linf runs one tile per block (no barrier between tiles: the next tile's load would race
  // with the previous tile's reads of shared memory).
  TORCH_INTERNAL_ASSERT(l2 || g.P == g.Q, "wavefuse: Linf Haar step with several tiles a block");
  HaarStepArgs<scalar_t, index_t> a{};
  fill_tensors_and_bounds<scalar_t, index_t, acc_t>(a, x_adv, grad, x_nat, s);
  for (int j = 0; j <= levels; ++j) {
    a.coef[j] = static_cast<acc_t>(haar_step_coefficient(hf_scale.data(), levels, j));
  }
  a.C = static_cast<index_t>(C);
  a.H = static_cast<index_t>(H);
  a.W = static_cast<index_t>(W);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  a.Q = static_cast<index_t>(g.Q);
  a.P = static_cast<index_t>(g.P);
  a.levels = levels;
  a.side_log2 = g.side_log2;
  a.mode = mode;
  const size_t smem_bytes = static_cast<size_t>(g.smem_elems) * sizeof(acc_t);
  TORCH_INTERNAL_ASSERT(smem_bytes <= 48 * 1024, "haar_step_geometry: ", smem_bytes, " bytes");
  if (!l2) {
    haar_step_launch(a, kFusedLinf, g.blocks, smem_bytes, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const Tensor partials = at::empty({2, N, g.P}, x_adv.options().dtype(acc_type(x_adv)));
  a.pg = static_cast<acc_t*>(partials.data_ptr());
  a.pd = a.pg + N * g.P;
  for (const int stage : {kFusedL2Grad, kFusedL2Delta, kFusedL2Update}) {
    haar_step_launch(a, stage, g.blocks, smem_bytes, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The fused Haar step on x_adv in place (every dtype: half types read, computed in float32 and
// rounded once at the store; no copies).
void haar_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, const Step& s,
               bool l2, Mode mode, int levels, at::ArrayRef<double> hf_scale) {
  const bool small = int32_step(x_adv, grad, x_nat, s);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x_adv.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_haar_pgd_step_cuda", [&] {
        if (small) {
          run_haar_step<scalar_t, int32_t>(x_adv, grad, x_nat, s, l2, mode, levels, hf_scale,
                                           stream);
        } else {
          run_haar_step<scalar_t, int64_t>(x_adv, grad, x_nat, s, l2, mode, levels, hf_scale,
                                           stream);
        }
      });
}

// The wavelet steps' own arguments: a floating-point (2, L) bank, even L >= 2, and one scale
// per level, level >= min_level.
void check_wavelet_args(const Tensor& filters, int64_t level, at::ArrayRef<double> hf_scale,
                        int64_t min_level) {
  TORCH_CHECK(filters.dim() == 2 && filters.size(0) == 2 && filters.size(1) >= 2 &&
                  filters.size(1) % 2 == 0 && at::isFloatingType(filters.scalar_type()),
              "wavefuse: filters must be a floating-point (2, L) tensor with even L >= 2, got ",
              filters.sizes(), " ", filters.scalar_type());
  TORCH_CHECK(level >= min_level && static_cast<int64_t>(hf_scale.size()) == level,
              "wavefuse: hf_scale must have one entry per level (", level, " >= ", min_level,
              "), got ", hf_scale.size());
}

// The step on g' (in the compute type). Half types: the step in float32 on float32 copies,
// rounded once by copy_ (rounding g' to half first could flip the sign of its tiny entries).
void step_filtered(const Tensor& x_adv, const Tensor& g, const Tensor& x_nat, const Step& s,
                   bool l2) {
  if (x_adv.scalar_type() == g.scalar_type()) {
    step(x_adv, g, x_nat, s, l2);
    return;
  }
  const Tensor xa = x_adv.to(g.scalar_type());
  step(xa, g, x_nat.to(g.scalar_type()), s, l2);
  x_adv.copy_(xa);
}

void wavelet_pgd_step_cuda(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                           double eps, double alpha, double lo, double hi,
                           const std::optional<Tensor>& eps_tensor,
                           const std::optional<Tensor>& alpha_tensor,
                           const std::optional<Tensor>& lo_tensor,
                           const std::optional<Tensor>& hi_tensor, const Tensor& filters,
                           c10::string_view wave_mode, int64_t level,
                           at::ArrayRef<double> hf_scale, c10::string_view norm) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
  check_wavelet_args(filters, level, hf_scale, 0);
  const Mode mode = parse_mode(std::string(wave_mode));  // a bad mode raises before any launch
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const Step s{eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor};
  const auto acc = acc_type(x_adv);
  if (haar_fused(filters, level, acc)) {
    haar_step(x_adv, grad, x_nat, s, l2, mode, static_cast<int>(level), hf_scale);
    return;
  }
  // Any other bank, or Haar deeper than kHaarMaxLevels: the composition.
  const Tensor taps = filters.to(x_adv.device(), acc);
  const Tensor g = scale_details(grad.to(acc), taps, wave_mode, level, hf_scale);
  step_filtered(x_adv, g, x_nat, s, l2);
}

// _chain_pgd_step_kernel: wavelet_pgd_step through the approximation chain, for a bank with
// perfect reconstruction (the caller, wavefuse/ops/pgd_step.py, has checked it:
// separable.perfect_reconstruction), any plane size. With a_0 = g (in the compute type) and
// a_j = lo(a_{j-1}) (analysis_ll: the approximation alone, one launch per level), perfect
// reconstruction turns the synthesis with scaled details into e_{j-1} = c_j a_{j-1} + S_lo e_j
// (chain_level, one launch per level, coarsest first, written over a_{j-1}), e_J = (1 - s_J) a_J,
// c_j = s_j - s_{j-1}, c_1 = s_1, and g' = e_0; then the step (step_filtered). 2J launches and
// the step, against the composition's 2J transforms, J band multiplies and the step; no detail
// band is formed. Same derivation as kernels/pgd_step.py's _chain_step. With `cascade` (the
// caller's choice: separable.cascade_fits, planes that fill the GPU), the same chain runs as ONE
// launch (cuda_dwt::chain_cascade: dwt.cu's cascade_kernel, one block per plane), then the
// step. Otherwise, where dwt.cu's pairs_fit allows, in pairs of stages (chain_pairs: J launches),
// then the step. Half types still convert the gradient to float32 first (one copy kernel; not
// part of the filter).
void chain_pgd_step_cuda(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, double eps,
                         double alpha, double lo, double hi,
                         const std::optional<Tensor>& eps_tensor,
                         const std::optional<Tensor>& alpha_tensor,
                         const std::optional<Tensor>& lo_tensor,
                         const std::optional<Tensor>& hi_tensor, const Tensor& filters,
                         c10::string_view wave_mode, int64_t level, at::ArrayRef<double> hf_scale,
                         c10::string_view norm, bool cascade) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
  check_wavelet_args(filters, level, hf_scale, 1);
  TORCH_CHECK(!cascade || level <= cuda_dwt::kCascadeMaxLevels, "wavefuse: the cascade takes at ",
              "most ", cuda_dwt::kCascadeMaxLevels, " levels, got ", level);
  const Mode mode = parse_mode(std::string(wave_mode));
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const Step s{eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor};
  const auto acc = acc_type(x_adv);
  const Tensor taps = filters.to(x_adv.device(), acc).contiguous();
  const Tensor g0 = grad.to(acc);  // the gradient itself when it is in the compute type
  // Linf with x_adv in the compute type: the chain's last launch applies the step itself
  // (step_math.cuh's FusedLinf; the same bits as the separate step kernel). Half types and L2
  // keep the separate step.
  // Not where x_adv shares its storage with the gradient (views whose overlap
  // assert_no_overlap cannot judge): the last launch reads the gradient (a_0) while it writes.
  const LinfStep linf{x_adv, x_nat, s};
  const bool apart = !x_adv.storage().is_alias_of(g0.storage());
  const LinfStep* fused = !l2 && apart && x_adv.scalar_type() == acc ? &linf : nullptr;
  if (cascade) {
    // ONE launch for the whole filter (dwt.cu's cascade_kernel), the Linf step in it or after.
    const Tensor g = cuda_dwt::chain_cascade(g0, taps, mode, hf_scale, fused);
    if (fused == nullptr) step_filtered(x_adv, g, x_nat, s, l2);
    return;
  }
  if (cuda_dwt::pairs_fit(taps.size(1), g0)) {
    // J launches for the filter (dwt.cu's pair_kernel: two stages each), the Linf step in the
    // last or after.
    const Tensor g = cuda_dwt::chain_pairs(g0, taps, mode, hf_scale, fused);
    if (fused == nullptr) step_filtered(x_adv, g, x_nat, s, l2);
    return;
  }
  std::vector<Tensor> chain{g0};
  for (int64_t j = 0; j < level; ++j) {
    chain.push_back(cuda_dwt::analysis_ll(chain.back(), taps, mode));
  }
  Tensor g;
  for (int64_t j = level; j >= 1; --j) {
    const double coef = j > 1 ? hf_scale[j - 1] - hf_scale[j - 2] : hf_scale[0];
    const double gain = j == level ? 1.0 - hf_scale[j - 1] : 1.0;
    const Tensor& prev = chain[j - 1];
    // over a_{j-1}, a buffer of this function; never over the gradient
    const Tensor out = j > 1 ? prev : at::empty_like(prev);
    cuda_dwt::chain_level(chain[j], prev, out, taps, mode, coef, gain);
    chain[j] = Tensor();  // free each level as soon as it is used
    if (j == 1) g = out;
  }
  step_filtered(x_adv, g, x_nat, s, l2);
}

// ---- wavelet_pgd_step, other banks on small planes: the separable filter and the step fused ---

template <typename scalar_t, typename index_t>
void run_sep_step(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat, const Step& s,
                  bool l2, const Tensor& left, const Tensor& right_t, double identity,
                  cudaStream_t stream) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const int64_t N = x_adv.size(0), C = x_adv.size(1), H = x_adv.size(2), W = x_adv.size(3);
  const SepStepGeometry g = sep_step_geometry(N, C, H, W, l2);
  TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many planes (", g.blocks,
              ") for one CUDA launch");
  SepStepArgs<scalar_t, index_t> a{};
  fill_tensors_and_bounds<scalar_t, index_t, acc_t>(a, x_adv, grad, x_nat, s);
  a.left = static_cast<const acc_t*>(left.data_ptr());
  a.right_t = static_cast<const acc_t*>(right_t.data_ptr());
  a.identity = static_cast<acc_t>(identity);
  a.terms = static_cast<int>(left.size(0));
  a.H = static_cast<int>(H);
  a.W = static_cast<int>(W);
  a.C = static_cast<index_t>(C);
  a.P = static_cast<index_t>(g.P);
  const size_t smem_bytes = static_cast<size_t>(g.smem_elems) * sizeof(acc_t);
  Tensor partials;
  if (l2) {
    partials = at::empty({2, N, g.P}, x_adv.options().dtype(acc_type(x_adv)));
    a.pg = static_cast<acc_t*>(partials.data_ptr());
    a.pd = a.pg + N * g.P;
  }
  const std::initializer_list<int> linf = {kFusedLinf};
  const std::initializer_list<int> stages = {kFusedL2Grad, kFusedL2Delta, kFusedL2Update};
  for (const int stage : l2 ? stages : linf) {
    C10_CUDA_CHECK(sep_step_launch(a, stage, g.blocks, smem_bytes, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The op (schema in csrc/ops.cpp): g' = identity * G + sum_k left[k] G right_t[k] per plane, then
// the step, in place on x_adv; every dtype (half types read, computed in float32 and rounded once
// at the store; no copies).
void separable_pgd_step_cuda(const Tensor& x_adv, const Tensor& grad, const Tensor& x_nat,
                             double eps, double alpha, double lo, double hi,
                             const std::optional<Tensor>& eps_tensor,
                             const std::optional<Tensor>& alpha_tensor,
                             const std::optional<Tensor>& lo_tensor,
                             const std::optional<Tensor>& hi_tensor, const Tensor& left,
                             const Tensor& right_t, double identity, c10::string_view norm) {
  const bool l2 =
      check_step(x_adv, grad, x_nat, eps_tensor, alpha_tensor, lo_tensor, hi_tensor, norm);
  const int64_t H = x_adv.size(2), W = x_adv.size(3);
  TORCH_CHECK(H <= kSepMaxSide && W <= kSepMaxSide, "wavefuse: the separable step takes planes ",
              "up to ", kSepMaxSide, " x ", kSepMaxSide, ", got ", H, " x ", W);
  const auto acc = acc_type(x_adv);
  for (const Tensor* t : {&left, &right_t}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == left.size(0) && t->is_contiguous() &&
                    t->scalar_type() == acc && t->device() == x_adv.device(),
                "wavefuse: left and right_t must be contiguous (K, H, H) and (K, W, W) ", acc,
                " tensors on ", x_adv.device(), ", got ", t->sizes(), " ", t->scalar_type());
  }
  TORCH_CHECK(left.size(1) == H && left.size(2) == H && right_t.size(1) == W &&
                  right_t.size(2) == W,
              "wavefuse: left must be (K, ", H, ", ", H, ") and right_t (K, ", W, ", ", W,
              "), got ", left.sizes(), " and ", right_t.sizes());
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  const Step s{eps, alpha, lo, hi, eps_tensor, alpha_tensor, lo_tensor, hi_tensor};
  const bool small = int32_step(x_adv, grad, x_nat, s);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x_adv.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_adv.scalar_type(), "wavefuse_separable_pgd_step_cuda", [&] {
        if (small) {
          run_sep_step<scalar_t, int32_t>(x_adv, grad, x_nat, s, l2, left, right_t, identity,
                                          stream);
        } else {
          run_sep_step<scalar_t, int64_t>(x_adv, grad, x_nat, s, l2, left, right_t, identity,
                                          stream);
        }
      });
}

}  // namespace
}  // namespace cuda_pgd
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CUDA, m) {
  m.impl("_pgd_step_kernel", &wavefuse::cuda_pgd::pgd_step_cuda);
  m.impl("_wavelet_pgd_step_kernel", &wavefuse::cuda_pgd::wavelet_pgd_step_cuda);
  m.impl("_separable_pgd_step_kernel", &wavefuse::cuda_pgd::separable_pgd_step_cuda);
  m.impl("_chain_pgd_step_kernel", &wavefuse::cuda_pgd::chain_pgd_step_cuda);
}
#endif  // __CUDA_ARCH__
