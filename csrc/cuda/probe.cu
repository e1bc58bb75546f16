// Whether this build's CUDA code can run on a given GPU, asked of the CUDA runtime.
//
// Every .cu file of the extension is compiled with the same -gencode flags (TORCH_CUDA_ARCH_LIST),
// so the image chosen for the trivial kernel below is the image every kernel gets: native code
// (SASS) for the device's architecture, PTX the driver compiles at load, or none. Without this
// check a build for sm_80/sm_90 fails on a T4 (sm_75) or, without PTX, on a Blackwell GPU with
// "no kernel image is available for execution on the device" from the first kernel launched;
// wavefuse/backends.py asks this once per device, so that backend="auto" uses another backend
// there and backend="cuda" says why it cannot run and how to rebuild.
//
// Only the CUDA runtime's header: no ATen, so this file compiles in seconds.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

namespace wavefuse {
namespace {

__global__ void probe_kernel() {}

}  // namespace

// [status, binary_version, ptx_version, compiled architectures...] for CUDA device `device`:
// status is the cudaError_t of selecting the device and reading the probe kernel's attributes
// (0: the device can run this build's kernels; cudaErrorNoKernelImageForDevice (209) or
// cudaErrorInvalidDeviceFunction (98): no image for it; cudaErrorUnsupportedPtxVersion (222): the
// driver is older than the PTX), binary_version / ptx_version are cudaFuncAttributes' (e.g. 90:
// sm_90 code; a binary_version equal to the device's capability with an older ptx_version is
// PTX compiled by the driver), and the rest is nvcc's __CUDA_ARCH_LIST__ (e.g. 800, 900). A
// failed call leaves no error behind for the next launch check (cudaGetLastError clears it), and
// the caller's current device is restored.
std::vector<int64_t> cuda_kernel_image(int64_t device) {
  std::vector<int64_t> out(3, 0);
  int previous = -1;
  cudaError_t status = cudaGetDevice(&previous);
  if (status == cudaSuccess && previous != device) {
    status = cudaSetDevice(static_cast<int>(device));
  }
  cudaFuncAttributes attributes{};
  if (status == cudaSuccess) {
    status = cudaFuncGetAttributes(&attributes, probe_kernel);
  }
  if (previous >= 0 && previous != device) {
    cudaSetDevice(previous);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    out[0] = static_cast<int64_t>(status);
  } else {
    out[1] = attributes.binaryVersion;
    out[2] = attributes.ptxVersion;
  }
#ifdef __CUDA_ARCH_LIST__
  for (int64_t arch : {__CUDA_ARCH_LIST__}) {
    out.push_back(arch);
  }
#endif
  return out;
}

}  // namespace wavefuse
