// CUDA kernels of the one-pass multilevel 2-D Haar analysis and its adjoint (contract:
// csrc/ops.cpp; maths and thread mapping: haar_body.cuh).
//
//   _haar_wavedec2_kernel          haar_fwd_kernel: all J levels in one launch (x read once)
//   _haar_wavedec2_adjoint_kernel  haar_adj_kernel: grad_x in one launch (gather, no atomics)
//
// 1 <= level <= kHaarMaxLevels (6) for every mode, size, dtype and layout; deeper levels are
// refused here with a clear error, and wavefuse/ops/haar.py runs them per level (the one-level
// kernels of dwt.cu) instead. The kernels here only read blockIdx/threadIdx and call the bodies
// phase by phase with __syncthreads() between; tests/test_cuda_host_emulation.py runs the same
// bodies on the CPU over the same grid.
//
// Include discipline as dwt.cu (see its header): torch headers only in the host pass, every
// kernel instantiated outside the guard through explicitly instantiated raw launchers.
//
// NOT RUN ON A GPU: compiled for sm_80 and sm_90 only; speed unmeasured.

#include <cstdint>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "common.h"
#include "haar_body.cuh"

#ifndef __CUDA_ARCH__  // host pass only (see dwt.cu)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
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
namespace cuda_haar {
namespace {

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    haar_fwd_kernel(const HaarFwdArgs<scalar_t, index_t> a) {
  using acc_t = typename AccType<scalar_t>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  const index_t block = static_cast<index_t>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x);
  haar_fwd_load(a, block, tid, smem);
  for (int j = 1; j <= a.levels; ++j) {
    __syncthreads();
    haar_fwd_level(a, block, tid, j, smem);
  }
}

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    haar_adj_kernel(const HaarAdjArgs<scalar_t, index_t> a) {
  haar_adj_thread(a, static_cast<index_t>(blockIdx.x), static_cast<int>(threadIdx.x));
}

template <typename scalar_t, typename index_t>
void haar_fwd_launch(const HaarFwdArgs<scalar_t, index_t>& a, int64_t blocks, size_t smem_bytes,
                     cudaStream_t stream) {
  haar_fwd_kernel<scalar_t, index_t>
      <<<static_cast<unsigned int>(blocks), kThreads, smem_bytes, stream>>>(a);
}

template <typename scalar_t, typename index_t>
void haar_adj_launch(const HaarAdjArgs<scalar_t, index_t>& a, int64_t blocks,
                     cudaStream_t stream) {
  haar_adj_kernel<scalar_t, index_t><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(a);
}

#define WAVEFUSE_INSTANTIATE(T, I)                                                                \
  template void haar_fwd_launch<T, I>(const HaarFwdArgs<T, I>&, int64_t, size_t, cudaStream_t); \
  template void haar_adj_launch<T, I>(const HaarAdjArgs<T, I>&, int64_t, cudaStream_t);
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
}  // namespace cuda_haar
}  // namespace wavefuse

#ifndef __CUDA_ARCH__
namespace wavefuse {
namespace cuda_haar {
namespace {

using at::Tensor;
using namespace cuda_host;  // layout, offsets, strides, checks (host.h)

void check_level(int64_t level) {
  TORCH_CHECK(level >= 1 && level <= kHaarMaxLevels, "wavefuse: the one-pass CUDA Haar kernels "
              "take 1 <= level <= ", kHaarMaxLevels, ", got ", level,
              " (wavefuse.ops.haar runs deeper levels one at a time)");
}

void check_blocks(const HaarGeometry& g) {
  TORCH_CHECK(g.blocks <= INT_MAX, "wavefuse: too many tiles (", g.blocks,
              ") for one CUDA launch");
}

// ---- analysis -----------------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
void run_fwd(const Tensor& x, const Tensor& ll, const std::vector<Tensor>& his, Mode mode,
             int levels, const HaarGeometry& g, cudaStream_t stream) {
  using acc_t = typename AccType<scalar_t>::type;
  HaarFwdArgs<scalar_t, index_t> a{};
  a.x = static_cast<const scalar_t*>(x.data_ptr());
  a.sx = strides4<index_t>(x);
  a.ll = static_cast<scalar_t*>(ll.data_ptr());
  a.sl = strides4<index_t>(ll);
  for (int j = 0; j < levels; ++j) {
    a.hi[j] = static_cast<scalar_t*>(his[j].data_ptr());
    a.sh[j] = band_strides<index_t>(his[j]);
    a.shb[j] = static_cast<index_t>(his[j].stride(2));
  }
  a.C = static_cast<index_t>(x.size(1));
  a.H = static_cast<index_t>(x.size(2));
  a.W = static_cast<index_t>(x.size(3));
  a.levels = levels;
  a.mode = mode;
  a.side = g.side;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  haar_fwd_launch(a, g.blocks, static_cast<size_t>(g.smem_elems) * sizeof(acc_t), stream);
}

// -> [ll_J, hi_J, ..., hi_1] (coarsest first, as pywt.wavedec2)
std::vector<Tensor> haar_wavedec2_cuda(const Tensor& x, int64_t level,
                                       c10::string_view mode_name) {
  check_input(x, "x");
  check_level(level);
  const Mode mode = parse_mode(std::string(mode_name));
  const int levels = static_cast<int>(level);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: x must have non-empty H and W, got ", x.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  Tensor ll = empty_4d(x, N, C, haar_length<int64_t>(H, levels), haar_length<int64_t>(W, levels));
  std::vector<Tensor> his;  // finest first while launching
  for (int j = 1; j <= levels; ++j) {
    his.push_back(empty_bands(x, N, C, haar_length<int64_t>(H, j), haar_length<int64_t>(W, j)));
  }
  if (x.numel() > 0) {
    const HaarGeometry g = haar_fwd_geometry(N * C, H, W, levels);
    check_blocks(g);
    const int64_t acc = x.scalar_type() == at::kDouble ? 8 : 4;
    TORCH_CHECK(g.smem_elems * acc <= kMaxSharedBytes, "wavefuse: internal: Haar tile too large");
    std::vector<const Tensor*> all{&x, &ll};
    for (const Tensor& t : his) all.push_back(&t);
    const bool small = int32_offsets(all);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wavefuse_haar_fwd",
                                    [&] {
                                      if (small) {
                                        run_fwd<scalar_t, int32_t>(x, ll, his, mode, levels, g,
                                                                   stream);
                                      } else {
                                        run_fwd<scalar_t, int64_t>(x, ll, his, mode, levels, g,
                                                                   stream);
                                      }
                                    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  std::vector<Tensor> out{ll};
  for (int j = levels - 1; j >= 0; --j) out.push_back(his[j]);
  return out;
}

// ---- adjoint ------------------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
void run_adj(const Tensor& ll, const std::vector<Tensor>& his, const Tensor& y, Mode mode,
             int levels, const HaarGeometry& g, cudaStream_t stream) {
  HaarAdjArgs<scalar_t, index_t> a{};
  a.ll = static_cast<const scalar_t*>(ll.data_ptr());
  a.sl = strides4<index_t>(ll);
  for (int j = 0; j < levels; ++j) {
    a.hi[j] = static_cast<const scalar_t*>(his[j].data_ptr());
    a.sh[j] = band_strides<index_t>(his[j]);
    a.shb[j] = static_cast<index_t>(his[j].stride(2));
  }
  a.y = static_cast<scalar_t*>(y.data_ptr());
  a.sy = strides4<index_t>(y);
  a.C = static_cast<index_t>(y.size(1));
  a.H = static_cast<index_t>(y.size(2));
  a.W = static_cast<index_t>(y.size(3));
  a.levels = levels;
  a.mode = mode;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  haar_adj_launch(a, g.blocks, stream);
}

// grad_hi coarsest first ([hi_J, ..., hi_1]), as the analysis returns them.
Tensor haar_wavedec2_adjoint_cuda(const Tensor& grad_ll, at::TensorList grad_hi,
                                  at::IntArrayRef input_size, c10::string_view mode_name) {
  check_input(grad_ll, "grad_ll");
  const int64_t level = static_cast<int64_t>(grad_hi.size());
  check_level(level);
  TORCH_CHECK(input_size.size() == 2, "wavefuse: input_size must be [H, W], got ", input_size);
  const Mode mode = parse_mode(std::string(mode_name));
  const int levels = static_cast<int>(level);
  const int64_t N = grad_ll.size(0), C = grad_ll.size(1), H = input_size[0], W = input_size[1];
  TORCH_CHECK(H >= 1 && W >= 1, "wavefuse: input_size must be positive, got ", input_size);
  TORCH_CHECK(grad_ll.size(2) == haar_length<int64_t>(H, levels) &&
                  grad_ll.size(3) == haar_length<int64_t>(W, levels),
              "wavefuse: grad_ll ", grad_ll.sizes(), " does not match input_size ", input_size,
              " at level ", level);
  std::vector<Tensor> his;  // finest first
  for (int j = 1; j <= levels; ++j) {
    const Tensor& hi = grad_hi[levels - j];
    TORCH_CHECK(hi.dim() == 5 && hi.size(0) == N && hi.size(1) == C && hi.size(2) == 3 &&
                    hi.size(3) == haar_length<int64_t>(H, j) &&
                    hi.size(4) == haar_length<int64_t>(W, j),
                "wavefuse: grad_hi of level ", j, " must be (", N, ", ", C, ", 3, ",
                haar_length<int64_t>(H, j), ", ", haar_length<int64_t>(W, j), "), got ",
                hi.sizes());
    TORCH_CHECK(hi.scalar_type() == grad_ll.scalar_type() && hi.device() == grad_ll.device(),
                "wavefuse: grad_hi must share grad_ll's dtype and device");
    his.push_back(hi);
  }
  const c10::cuda::CUDAGuard guard(grad_ll.device());
  Tensor y = empty_4d(grad_ll, N, C, H, W);
  if (y.numel() == 0) return y;
  const HaarGeometry g = haar_adj_geometry(N * C, H, W);
  check_blocks(g);
  std::vector<const Tensor*> all{&grad_ll, &y};
  for (const Tensor& t : his) all.push_back(&t);
  const bool small = int32_offsets(all);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(y.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "wavefuse_haar_adj",
                                  [&] {
                                    if (small) {
                                      run_adj<scalar_t, int32_t>(grad_ll, his, y, mode, levels, g,
                                                                 stream);
                                    } else {
                                      run_adj<scalar_t, int64_t>(grad_ll, his, y, mode, levels, g,
                                                                 stream);
                                    }
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace
}  // namespace cuda_haar
}  // namespace wavefuse

TORCH_LIBRARY_IMPL(wavefuse, CUDA, m) {
  m.impl("_haar_wavedec2_kernel", &wavefuse::cuda_haar::haar_wavedec2_cuda);
  m.impl("_haar_wavedec2_adjoint_kernel", &wavefuse::cuda_haar::haar_wavedec2_adjoint_cuda);
}
#endif  // __CUDA_ARCH__
