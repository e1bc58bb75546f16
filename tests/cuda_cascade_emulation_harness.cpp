// Runs the body of wavelet_pgd_step's whole-cascade CUDA kernel (csrc/cuda/cascade_body.cuh's
// cascade_block, launched by csrc/cuda/dwt.cu's cascade_kernel) on the CPU: block by block (one
// per (n, c) plane, as the kernel's grid), and inside a block phase by phase -- cascade_block's
// own loop, with a `phase` callable that runs each phase for all kThreads threads before the
// next (the kernel's runs it for its thread and then __syncthreads()). No GPU needed. Driven by
// tests/test_cuda_pgd_emulation.py, which compiles this file with g++ (plain C++17) and compares
// g' with reference.scale_details_ref.
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated values:
//   dtype (0 float64, 1 float32) index_bits (32/64) mode (common.h's Mode) L levels N C H W
//   g strides (4) and span, out strides (4) and span, hf_scale[0 .. levels) (Python repr)
// DIR/filters.bin: the (2, L) dec bank as float64, row-major; DIR/g.bin: g's raw storage (float64;
// float32 cases hold float32 values, converted exactly). Output: DIR/out.bin, g''s raw storage as
// float64. The output storage, the level scratch and shared memory (before every block) are
// NaN-filled, so a value read before any earlier phase wrote it, or an output no thread writes,
// shows up as NaN. Then the step flag and, with a step, its section (tests/emulation_step.h):
// the cascade applies the Linf step to x_adv at level 1 instead of storing g' (out.bin then stays
// NaN, out_xa.bin holds x_adv).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/cascade_body.cuh"
#include "emulation_io.h"
#include "emulation_step.h"

using namespace wavefuse;
using namespace wavefuse::cuda_dwt;

namespace {

struct Raw {
  int64_t strides[4];
  int64_t span = 0;
};

struct Params {
  int dtype, index_bits, mode, L, levels;
  int64_t N, C, H, W;
  Raw g, out;
  std::vector<double> hf_scale;
  emulation::StepCase step;
};

template <typename index_t>
Strides4<index_t> strides4(const Raw& r) {
  return {static_cast<index_t>(r.strides[0]), static_cast<index_t>(r.strides[1]),
          static_cast<index_t>(r.strides[2]), static_cast<index_t>(r.strides[3])};
}

template <typename acc_t, typename index_t>
std::vector<double> run(const Params& p, const std::vector<double>& filters64,
                        const std::vector<double>& g64, const std::string& dir) {
  const std::vector<acc_t> filters(filters64.begin(), filters64.end());
  const std::vector<acc_t> g(g64.begin(), g64.end());
  std::vector<acc_t> out(p.out.span, static_cast<acc_t>(emulation::kNaN));
  CascadeArgs<acc_t, index_t> a{};
  if (!cascade_plan(a, p.H, p.W, p.L, static_cast<Mode>(p.mode), p.levels, p.hf_scale.data())) {
    throw std::runtime_error("levels out of range");
  }
  const int64_t planes = p.N * p.C;
  if (cascade_plane_elems(p.H, p.W, p.L, static_cast<Mode>(p.mode), p.levels) != a.plane_elems) {
    throw std::runtime_error("cascade_plane_elems disagrees with cascade_plan");
  }
  std::vector<acc_t> levels(planes * static_cast<int64_t>(a.plane_elems),
                            static_cast<acc_t>(emulation::kNaN));
  a.g = g.data();
  a.sg = strides4<index_t>(p.g);
  emulation::StepBuffers<acc_t, index_t> step(p.step);
  if (!p.step.on) {  // as dwt.cu's run_cascade: no g' with the step
    a.out = out.data();
    a.so = strides4<index_t>(p.out);
  }
  a.step = step.arg;
  a.levels_base = levels.data();
  a.filters = filters.data();
  a.C = static_cast<index_t>(p.C);
  std::vector<acc_t> smem;
  auto all_threads = [](auto&& f) {
    for (int tid = 0; tid < kThreads; ++tid) f(tid);
  };
  for (int64_t b = 0; b < planes; ++b) {  // the grid: one block per plane
    smem.assign(cascade_smem_elems(p.L), static_cast<acc_t>(emulation::kNaN));
    cascade_block(a, static_cast<index_t>(b), smem.data(), all_threads);
  }
  step.write(dir);
  return std::vector<double>(out.begin(), out.end());
}

void read_raw(std::istream& in, Raw& r) {
  for (auto& s : r.strides) in >> s;
  in >> r.span;
}

void run_dir(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.dtype >> p.index_bits >> p.mode >> p.L >> p.levels >> p.N >> p.C >> p.H >> p.W;
  read_raw(in, p.g);
  read_raw(in, p.out);
  p.hf_scale.resize(p.levels > 0 ? p.levels : 0);
  for (auto& s : p.hf_scale) in >> s;
  if (!in) throw std::runtime_error("malformed " + dir + "/params.txt");
  p.step = emulation::read_step(in, dir);
  const std::vector<double> filters = emulation::read_doubles(dir + "/filters.bin", 2 * p.L);
  const std::vector<double> g = emulation::read_doubles(dir + "/g.bin", p.g.span);
  std::vector<double> out;
  if (p.dtype == 0) {
    out = p.index_bits == 32 ? run<double, int32_t>(p, filters, g, dir)
                             : run<double, int64_t>(p, filters, g, dir);
  } else {
    out = p.index_bits == 32 ? run<float, int32_t>(p, filters, g, dir)
                             : run<float, int64_t>(p, filters, g, dir);
  }
  emulation::write_doubles(dir + "/out.bin", out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    try {
      run_dir(argv[i]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "harness: %s: %s\n", argv[i], e.what());
      return 1;
    }
  }
  return 0;
}
