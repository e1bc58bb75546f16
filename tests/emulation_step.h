// The fused Linf step of the chain harnesses (tests/cuda_cascade_emulation_harness.cpp and
// tests/cuda_pair_emulation_harness.cpp): csrc/cuda/step_math.cuh's FusedLinf, which the chain's
// last launch applies to x_adv instead of storing g' (dwt.cu's chain_cascade / chain_pairs with
// a LinfStep).
//
// params.txt, after hf_scale: the flag `step` (0 or 1); with 1, x_adv's strides (4) and span,
// x_nat's strides (4) and span, then for eps, alpha, lo, hi in turn: value, tensor (0/1), sn, sc,
// span (a tensor bound: its entry [n, c] at n * sn + c * sc of DIR/bound<k>.bin, k = 0..3, as
// host.h's bound_arg passes it). DIR/xa.bin, DIR/xn.bin: the raw storages of x_adv and x_nat
// (float64; float32 cases hold float32 values). Output: DIR/out_xa.bin, x_adv's raw storage
// after the step, as float64.
#pragma once

#include <cstdint>
#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/step_math.cuh"
#include "emulation_io.h"

namespace emulation {

struct StepCase {
  bool on = false;
  int64_t sa[4] = {0, 0, 0, 0}, span_a = 0, sx[4] = {0, 0, 0, 0}, span_x = 0;
  double value[4] = {0, 0, 0, 0};
  bool tensor[4] = {false, false, false, false};
  int64_t sn[4] = {0, 0, 0, 0}, sc[4] = {0, 0, 0, 0}, span[4] = {0, 0, 0, 0};
  std::vector<double> xa, xn, bound[4];
};

inline StepCase read_step(std::istream& in, const std::string& dir) {
  StepCase s;
  int flag = 0;
  in >> flag;
  if (!in) throw std::runtime_error("malformed " + dir + "/params.txt: no step flag");
  s.on = flag != 0;
  if (!s.on) return s;
  for (auto& v : s.sa) in >> v;
  in >> s.span_a;
  for (auto& v : s.sx) in >> v;
  in >> s.span_x;
  for (int k = 0; k < 4; ++k) {
    int t = 0;
    in >> s.value[k] >> t >> s.sn[k] >> s.sc[k] >> s.span[k];
    s.tensor[k] = t != 0;
  }
  if (!in) throw std::runtime_error("malformed " + dir + "/params.txt: step section");
  s.xa = read_doubles(dir + "/xa.bin", s.span_a);
  s.xn = read_doubles(dir + "/xn.bin", s.span_x);
  for (int k = 0; k < 4; ++k) {
    if (s.tensor[k]) s.bound[k] = read_doubles(dir + "/bound" + std::to_string(k) + ".bin", s.span[k]);
  }
  return s;
}

// The step's buffers in acc_t and the kernel argument over them (off when the case has none).
template <typename acc_t, typename index_t>
struct StepBuffers {
  std::vector<acc_t> xa, xn, bound[4];
  wavefuse::cuda_pgd::FusedLinf<acc_t, index_t> arg{};

  explicit StepBuffers(const StepCase& s) {
    if (!s.on) return;
    xa.assign(s.xa.begin(), s.xa.end());
    xn.assign(s.xn.begin(), s.xn.end());
    auto strides = [](const int64_t* v) {
      return wavefuse::Strides4<index_t>{static_cast<index_t>(v[0]), static_cast<index_t>(v[1]),
                                         static_cast<index_t>(v[2]), static_cast<index_t>(v[3])};
    };
    arg.xa = xa.data();
    arg.sa = strides(s.sa);
    arg.x = xn.data();
    arg.sx = strides(s.sx);
    wavefuse::cuda_pgd::Bound<acc_t, index_t>* b[4] = {&arg.eps, &arg.alpha, &arg.lo, &arg.hi};
    for (int k = 0; k < 4; ++k) {
      if (s.tensor[k]) {
        bound[k].assign(s.bound[k].begin(), s.bound[k].end());
        *b[k] = {acc_t(0), bound[k].data(), static_cast<index_t>(s.sn[k]),
                 static_cast<index_t>(s.sc[k])};
      } else {
        *b[k] = {static_cast<acc_t>(s.value[k]), nullptr, 0, 0};
      }
    }
  }

  void write(const std::string& dir) const {
    if (arg.xa != nullptr) write_doubles(dir + "/out_xa.bin", std::vector<double>(xa.begin(), xa.end()));
  }
};

}  // namespace emulation
