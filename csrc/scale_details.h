// g' = idwt(scale_hf(dwt(g))) through the dispatcher: the wavelet filter that
// wavelet_pgd_step applies to the gradient when no fused kernel does (csrc/cuda/pgd_step.cu for
// wavelets other than Haar; the transform kernels it calls are those of g's device, so any
// backend's kernels can use it).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

namespace wavefuse {

// Per level one analysis (wavefuse::_dwt2d_kernel), the three detail bands times hf_scale[j],
// then, coarsest first, per level one synthesis (wavefuse::_idwt2d_kernel) cropped to the size
// that level analysed: reference.scale_details_ref. g is (N, C, H, W) in the compute type, filters
// the (2, L) analysis bank on g's device; hf_scale holds `level` factors. The result has g's dtype.
at::Tensor scale_details(const at::Tensor& g, const at::Tensor& filters, c10::string_view mode,
                         int64_t level, c10::ArrayRef<double> hf_scale);

}  // namespace wavefuse
