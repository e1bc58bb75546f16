// The wavefuse operator library: every op schema, in one place, plus the Python module init.
//
// Kernels are registered per backend, never here:
//   csrc/cpu/dwt.cpp   TORCH_LIBRARY_IMPL(wavefuse, CPU, m)   (CPU transforms issue)
//   csrc/cpu/hf_penalty.cpp  TORCH_LIBRARY_IMPL(wavefuse, CPU, m)   (band energies, fused-ops issue)
//   csrc/cpu/pgd_step.cpp    TORCH_LIBRARY_IMPL(wavefuse, CPU, m)   (PGD update, fused-ops issue)
//   csrc/cpu/pool.cpp        TORCH_LIBRARY_IMPL(wavefuse, CPU, m)   (wavelet pooling, modules issue)
//   csrc/cuda/dwt.cu   TORCH_LIBRARY_IMPL(wavefuse, CUDA, m)  (GPU transforms issue)
//   csrc/cuda/haar.cu  TORCH_LIBRARY_IMPL(wavefuse, CUDA, m)  (one-pass multilevel Haar; CUDA only)
// An op without a kernel for a dispatch key has none on purpose: Python asks
// torch._C._dispatch_has_kernel_for_dispatch_key("wavefuse::_dwt2d_kernel", "CPU" | "CUDA") to see
// which backends are live, so placeholder kernels would lie to it.

#include <Python.h>  // first, as the Python C API requires

#include <torch/library.h>

// ---- Kernel contract (one level of the separable 2-D DWT, PyWavelets conventions) ----------------
//
// x        (N, C, H, W); float16, bfloat16, float32 or float64. Validation, layout and dtype rules
//          live in Python (wavefuse/ops); kernels may assume what the Python layer checked.
// filters  (2, L) = [lo; hi], the taps from PyWavelets as stored there (no reversal):
//            analysis  _dwt2d_kernel and its adjoint _dwt2d_adjoint_kernel:  dec_lo, dec_hi
//            synthesis _idwt2d_kernel and its adjoint _idwt2d_adjoint_kernel: rec_lo, rec_hi
//          float32 for float16/bfloat16/float32 inputs (half types accumulate in float32),
//          float64 for float64 inputs.
// mode     one of zero | symmetric | reflect | periodic | periodization (parse_mode in common.h).
// ll       (N, C, h, w) approximation coefficients.
// hi       (N, C, 3, h, w) detail bands, in PyWavelets' order cH, cV, cD (pywt.dwt2's
//          (cA, (cH, cV, cD))). h, w = analysis_length(H, L, mode), analysis_length(W, L, mode).
//
// _dwt2d_kernel(x, filters, mode) -> (ll, hi)
//     Forward analysis of x.
// _dwt2d_adjoint_kernel(grad_ll, grad_hi, filters, mode, input_size) -> grad_x
//     The true adjoint (transpose) of _dwt2d_kernel: for non-periodic modes the boundary extension
//     folds back into the signal, so this is NOT the inverse transform. input_size = [H, W] of x,
//     which the coefficient sizes alone do not determine. Gather formulation, no atomics.
// _idwt2d_kernel(ll, hi, filters, mode) -> y
//     Synthesis (inverse) of one level; y is (N, C, synthesis_length(h), synthesis_length(w)),
//     before any trimming to an odd original size (done in Python, as pywt does).
// _idwt2d_adjoint_kernel(grad_y, filters, mode) -> (grad_ll, grad_hi)
//     The adjoint of _idwt2d_kernel.
// Every output is a new tensor in the input's dtype; no op mutates its arguments.
// _built_with_cuda() -> bool
//     Whether this build compiled csrc/cuda (WAVEFUSE_WITH_CUDA); says nothing about a device.
// _cuda_kernel_image() -> int[]
//     Whether the current CUDA device can run this build's kernels (csrc/cuda/probe.cu); [-1] in
//     a build without CUDA.

#include <cstdint>
#include <vector>

namespace wavefuse {

#ifdef WAVEFUSE_WITH_CUDA
std::vector<int64_t> cuda_kernel_image();  // csrc/cuda/probe.cu
#else
std::vector<int64_t> cuda_kernel_image() { return {-1}; }
#endif

namespace {

bool built_with_cuda() {
#ifdef WAVEFUSE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace wavefuse

TORCH_LIBRARY(wavefuse, m) {
  m.def("_dwt2d_kernel(Tensor x, Tensor filters, str mode) -> (Tensor, Tensor)");
  m.def(
      "_dwt2d_adjoint_kernel(Tensor grad_ll, Tensor grad_hi, Tensor filters, str mode, "
      "int[] input_size) -> Tensor");
  m.def("_idwt2d_kernel(Tensor ll, Tensor hi, Tensor filters, str mode) -> Tensor");
  m.def("_idwt2d_adjoint_kernel(Tensor grad_y, Tensor filters, str mode) -> (Tensor, Tensor)");
  // Fused ops (contract: wavefuse/ops/hf_penalty.py): the per-band energies of a J-level
  // analysis cascade, (N, J, 3) in the compute dtype, and their gradient with respect to x.
  m.def("_band_energy_kernel(Tensor x, Tensor filters, str mode, int level, int p) -> Tensor");
  m.def(
      "_band_energy_backward_kernel(Tensor grad, Tensor x, Tensor filters, str mode, int level, "
      "int p) -> Tensor");
  // The same two as ONE launch each, one block per (n, c) plane through every level
  // (csrc/cuda/hf_cascade_body.cuh; 1 <= level <= 16 where anything is computed). CUDA only;
  // wavefuse/ops/hf_penalty.py decides where (separable.cascade_fits).
  m.def(
      "_band_energy_cascade_kernel(Tensor x, Tensor filters, str mode, int level, int p) "
      "-> Tensor");
  m.def(
      "_band_energy_backward_cascade_kernel(Tensor grad, Tensor x, Tensor filters, str mode, "
      "int level, int p) -> Tensor");
  // The PGD update in place on x_adv (contract: wavefuse/ops/pgd_step.py).
  m.def(
      "_pgd_step_kernel(Tensor(a!) x_adv, Tensor grad, Tensor x_nat, float eps, float alpha, "
      "float lo, float hi, Tensor? eps_tensor, Tensor? alpha_tensor, Tensor? lo_tensor, "
      "Tensor? hi_tensor, str norm) -> ()");
  m.def(
      "_wavelet_pgd_step_kernel(Tensor(a!) x_adv, Tensor grad, Tensor x_nat, float eps, "
      "float alpha, float lo, float hi, Tensor? eps_tensor, Tensor? alpha_tensor, "
      "Tensor? lo_tensor, Tensor? hi_tensor, Tensor filters, str wave_mode, int level, "
      "float[] hf_scale, str norm) -> ()");
  // wavelet_pgd_step's filter given as separable matrix pairs (wavefuse/ops/separable.py: g' =
  // identity * G + sum_k left[k] @ G @ right_t[k] per plane), the step fused; planes up to
  // 64 x 64. CUDA only (csrc/cuda/pgd_step.cu); wavefuse/ops/pgd_step.py builds the pairs.
  m.def(
      "_separable_pgd_step_kernel(Tensor(a!) x_adv, Tensor grad, Tensor x_nat, float eps, "
      "float alpha, float lo, float hi, Tensor? eps_tensor, Tensor? alpha_tensor, "
      "Tensor? lo_tensor, Tensor? hi_tensor, Tensor left, Tensor right_t, float identity, "
      "str norm) -> ()");
  // wavelet_pgd_step through the approximation chain, for a perfect-reconstruction bank (the
  // caller checks it: wavefuse/ops/separable.py's perfect_reconstruction), level >= 1: per level
  // the approximation alone, then per level its synthesis combined with the finer approximation,
  // then the step; with cascade, all levels in one launch (one block per plane; the caller
  // decides where: wavefuse/ops/separable.py's cascade_fits). CUDA only
  // (csrc/cuda/pgd_step.cu); wavefuse/ops/pgd_step.py calls it.
  m.def(
      "_chain_pgd_step_kernel(Tensor(a!) x_adv, Tensor grad, Tensor x_nat, float eps, "
      "float alpha, float lo, float hi, Tensor? eps_tensor, Tensor? alpha_tensor, "
      "Tensor? lo_tensor, Tensor? hi_tensor, Tensor filters, str wave_mode, int level, "
      "float[] hf_scale, str norm, bool cascade) -> ()");
  // Multilevel orthonormal Haar (contract: wavefuse/ops/haar.py), all levels in one kernel pass:
  // x (N, C, H, W) -> [ll_J (N, C, h_J, w_J), hi_J, ..., hi_1], hi_j (N, C, 3, h_j, w_j) with
  // h_j = ceil(H / 2^j), pywt.wavedec2(x, "haar", mode, level)'s coefficients in every mode; and
  // its exact adjoint (grad_hi coarsest first, input_size = [H, W]). CUDA only (csrc/cuda/haar.cu),
  // 1 <= level <= 6; wavefuse/ops/haar.py loops the one-level ops elsewhere.
  m.def("_haar_wavedec2_kernel(Tensor x, int level, str mode) -> Tensor[]");
  m.def(
      "_haar_wavedec2_adjoint_kernel(Tensor grad_ll, Tensor[] grad_hi, int[] input_size, "
      "str mode) -> Tensor");
  // Wavelet pooling (contract: wavefuse/ops/pool.py): one stride-2 correlation of the extended
  // input with a (C', L, L) kernel, its adjoint, and the per-channel kernel gradient.
  m.def("_wavelet_pool2d_kernel(Tensor x, Tensor kernel, str mode) -> Tensor");
  m.def(
      "_wavelet_pool2d_adjoint_kernel(Tensor grad, Tensor kernel, str mode, int[] input_size) "
      "-> Tensor");
  m.def("_wavelet_pool2d_kernel_grad_kernel(Tensor grad, Tensor x, int taps, str mode) -> Tensor");
  // No tensor arguments, so there is no dispatch key to pick a backend by: def() with a function
  // registers it as the catch-all (CompositeImplicitAutograd) kernel, which the dispatcher also
  // uses when the key set is empty.
  m.def("_built_with_cuda() -> bool", &wavefuse::built_with_cuda);
  m.def("_cuda_kernel_image() -> int[]", &wavefuse::cuda_kernel_image);
}

// `import wavefuse._C` dlopens this library, which runs the static registrations above. The module
// itself is empty: no pybind11, only the stable Python C API (built with Py_LIMITED_API, so the
// extension is an abi3 module). Pattern from pytorch/extension-cpp.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // m_name
      "wavefuse operator registrations (torch.ops.wavefuse); no Python-level functions.",
      -1,       // m_size: no per-interpreter state
      nullptr,  // m_methods
  };
  return PyModule_Create(&module_def);
}
}
