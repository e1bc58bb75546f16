// See scale_details.h.
#include "scale_details.h"

#include <tuple>
#include <utility>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/flip.h>

namespace wavefuse {

at::Tensor scale_details(const at::Tensor& g, const at::Tensor& filters, c10::string_view mode,
                         int64_t level, c10::ArrayRef<double> hf_scale) {
  using at::Tensor;
  TORCH_INTERNAL_ASSERT(level >= 0 && static_cast<int64_t>(hf_scale.size()) >= level);
  static const auto dwt = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("wavefuse::_dwt2d_kernel", "")
                              .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&,
                                                                c10::string_view)>();
  static const auto idwt =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("wavefuse::_idwt2d_kernel", "")
          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, c10::string_view)>();
  Tensor a = g;
  std::vector<Tensor> details;
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (int64_t j = 0; j < level; ++j) {
    sizes.emplace_back(a.size(2), a.size(3));
    auto [ll, hi] = dwt.call(a, filters, mode);
    details.push_back(hi);
    a = ll;
  }
  const Tensor rec = at::flip(filters, {-1});
  for (int64_t j = level - 1; j >= 0; --j) {
    a = idwt.call(a, details[j].mul(hf_scale[j]), rec, mode);
    details[j] = Tensor();  // free each level's bands as soon as they are used
    a = a.narrow(2, 0, sizes[j].first).narrow(3, 0, sizes[j].second);
  }
  return a;
}

}  // namespace wavefuse
