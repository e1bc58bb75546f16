// Whether this build's CUDA code can run on the current GPU, asked of the CUDA runtime.
//
// Every .cu file of the extension is compiled with the same -gencode flags (TORCH_CUDA_ARCH_LIST),
// so the image chosen for the trivial kernel below is the image every kernel gets: native code
// (SASS) for the device's architecture, PTX the driver compiles at load, or none. Without this
// check a build for sm_80/sm_90 fails on a T4 (sm_75) with "no kernel image is available for
// execution on the device" from the first kernel launched; wavefuse/backends.py asks this once per
// device (after selecting it with torch.cuda.device, which creates no context on other GPUs), so
// that backend="auto" uses another backend there and backend="cuda" says why and how to rebuild.
//
// Only the CUDA runtime's header: no ATen, so this file compiles in seconds.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace wavefuse {
namespace {

__global__ void probe_kernel() {}

}  // namespace

// [status, binary_version, ptx_version, compiled architectures...] for the current CUDA device.
//   status  0: the device can run this build's kernels; cudaErrorNoKernelImageForDevice (209) or
//           cudaErrorInvalidDeviceFunction (98): no image for it; cudaErrorInvalidPtx (218),
//           cudaErrorJitCompilerNotFound (221), cudaErrorUnsupportedPtxVersion (222): PTX the driver
//           cannot compile; -2: not asked, because an earlier launch left an error nobody has read
//           yet (it stays for its owner to read); any other code: the runtime could not tell.
//   binary_version, ptx_version: cudaFuncAttributes' (10 * major + minor) when status is 0.
//   Then nvcc's __CUDA_ARCH_LIST__, the virtual architectures compiled for (e.g. 800, 900).
// The query runs in relaxed stream-capture mode, so a probe during another thread's CUDA graph
// capture does not invalidate that capture, and an error it gets is cleared (cudaGetLastError)
// so that the next launch check does not report it.
std::vector<int64_t> cuda_kernel_image() {
  std::vector<int64_t> out(3, 0);
  if (cudaPeekAtLastError() != cudaSuccess) {
    out[0] = -2;
  } else {
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    cudaFuncAttributes attributes{};
    cudaError_t status = cudaFuncGetAttributes(&attributes, probe_kernel);
    cudaThreadExchangeStreamCaptureMode(&mode);
    if (status != cudaSuccess) {
      cudaGetLastError();
      out[0] = static_cast<int64_t>(status);
    } else {
      out[1] = attributes.binaryVersion;
      out[2] = attributes.ptxVersion;
    }
  }
#ifdef __CUDA_ARCH_LIST__
  for (int64_t arch : {__CUDA_ARCH_LIST__}) {
    out.push_back(arch);
  }
#endif
  return out;
}

}  // namespace wavefuse
