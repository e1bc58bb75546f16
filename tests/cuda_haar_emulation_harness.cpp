// Runs the CUDA one-pass multilevel Haar kernels' bodies (csrc/cuda/haar_body.cuh) on the CPU,
// thread by thread and phase by phase, over the launch grid that csrc/cuda/haar.cu computes with
// the same geometry functions: no GPU needed. Driven by tests/test_cuda_host_emulation.py (as
// tests/cuda_emulation_harness.cpp for the one-level kernels).
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   kernel (0 analysis, 1 adjoint) mode (common.h's Mode) index_bits (32/64) levels N C H W
//   x strides (4) and span              x for the analysis (input), grad_x for the adjoint (output)
//   ll strides (4) and span             level J
//   levels x (hi strides (5) and span)  (N, C, 3, h_j, w_j), level 1 (finest) first
// Inputs are raw float64 storage: the analysis reads x.bin, the adjoint ll.bin and hi<j>.bin
// (j = 1..levels). Outputs: out_ll.bin and out_hi<j>.bin, or out_x.bin, storage pre-filled with
// NaN so that an element no thread writes shows up. Shared memory is NaN-filled before each block:
// a value read that no thread of an earlier phase wrote poisons the result. Barriers are emulated
// by running each phase for all threads of a block before the next.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/haar_body.cuh"
#include "emulation_io.h"

using namespace wavefuse;
using namespace wavefuse::cuda_haar;

namespace {

struct Tensor {
  std::vector<int64_t> strides;
  int64_t span = 0;
  std::vector<double> data;
};

struct Params {
  int kernel, mode, index_bits, levels;
  int64_t N, C, H, W;
  Tensor x, ll;
  std::vector<Tensor> hi;  // finest first
};

using emulation::kNaN;

using emulation::read_doubles;
using emulation::write_doubles;

void read_tensor(std::istream& in, Tensor& t, int dims) {
  t.strides.resize(dims);
  for (auto& s : t.strides) in >> s;
  in >> t.span;
}

template <typename index_t>
Strides4<index_t> strides4(const Tensor& t) {
  return {static_cast<index_t>(t.strides[0]), static_cast<index_t>(t.strides[1]),
          static_cast<index_t>(t.strides[2]), static_cast<index_t>(t.strides[3])};
}

template <typename index_t>
Strides4<index_t> band_strides(const Tensor& hi) {
  return {static_cast<index_t>(hi.strides[0]), static_cast<index_t>(hi.strides[1]),
          static_cast<index_t>(hi.strides[3]), static_cast<index_t>(hi.strides[4])};
}

template <typename index_t>
void run_fwd(Params& p) {
  p.ll.data.assign(p.ll.span, kNaN);
  for (auto& t : p.hi) t.data.assign(t.span, kNaN);
  const HaarGeometry g = haar_fwd_geometry(p.N * p.C, p.H, p.W, p.levels);
  if (g.smem_elems * 8 > 48 * 1024) throw std::runtime_error("shared memory above 48 KiB");
  HaarFwdArgs<double, index_t> a{};
  a.x = p.x.data.data();
  a.sx = strides4<index_t>(p.x);
  a.ll = p.ll.data.data();
  a.sl = strides4<index_t>(p.ll);
  for (int j = 0; j < p.levels; ++j) {
    a.hi[j] = p.hi[j].data.data();
    a.sh[j] = band_strides<index_t>(p.hi[j]);
    a.shb[j] = static_cast<index_t>(p.hi[j].strides[2]);
  }
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.levels = p.levels;
  a.mode = static_cast<Mode>(p.mode);
  a.side = g.side;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  std::vector<double> smem;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(g.smem_elems, kNaN);
    for (int tid = 0; tid < kThreads; ++tid) haar_fwd_load(a, block, tid, smem.data());
    for (int j = 1; j <= a.levels; ++j) {
      for (int tid = 0; tid < kThreads; ++tid) haar_fwd_level(a, block, tid, j, smem.data());
    }
  }
}

template <typename index_t>
void run_adj(Params& p) {
  p.x.data.assign(p.x.span, kNaN);
  const HaarGeometry g = haar_adj_geometry(p.N * p.C, p.H, p.W);
  HaarAdjArgs<double, index_t> a{};
  a.ll = p.ll.data.data();
  a.sl = strides4<index_t>(p.ll);
  for (int j = 0; j < p.levels; ++j) {
    a.hi[j] = p.hi[j].data.data();
    a.sh[j] = band_strides<index_t>(p.hi[j]);
    a.shb[j] = static_cast<index_t>(p.hi[j].strides[2]);
  }
  a.y = p.x.data.data();
  a.sy = strides4<index_t>(p.x);
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.levels = p.levels;
  a.mode = static_cast<Mode>(p.mode);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  for (int64_t b = 0; b < g.blocks; ++b) {
    for (int tid = 0; tid < kThreads; ++tid) haar_adj_thread(a, static_cast<index_t>(b), tid);
  }
}

}  // namespace

void run_case(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.kernel >> p.mode >> p.index_bits >> p.levels >> p.N >> p.C >> p.H >> p.W;
  if (p.levels < 1 || p.levels > kHaarMaxLevels) throw std::runtime_error("bad level");
  read_tensor(in, p.x, 4);
  read_tensor(in, p.ll, 4);
  p.hi.resize(p.levels);
  for (auto& t : p.hi) read_tensor(in, t, 5);
  if (!in) throw std::runtime_error("malformed " + dir + "/params.txt");
  if (p.kernel == 0) {
    p.x.data = read_doubles(dir + "/x.bin", p.x.span);
    if (p.index_bits == 32) {
      run_fwd<int32_t>(p);
    } else {
      run_fwd<int64_t>(p);
    }
    write_doubles(dir + "/out_ll.bin", p.ll.data);
    for (int j = 0; j < p.levels; ++j) {
      write_doubles(dir + "/out_hi" + std::to_string(j + 1) + ".bin", p.hi[j].data);
    }
  } else {
    p.ll.data = read_doubles(dir + "/ll.bin", p.ll.span);
    for (int j = 0; j < p.levels; ++j) {
      p.hi[j].data = read_doubles(dir + "/hi" + std::to_string(j + 1) + ".bin", p.hi[j].span);
    }
    if (p.index_bits == 32) {
      run_adj<int32_t>(p);
    } else {
      run_adj<int64_t>(p);
    }
    write_doubles(dir + "/out_x.bin", p.x.data);
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR...\n", argv[0]);
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    try {
      run_case(argv[i]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "harness: %s: %s\n", argv[i], e.what());
      return 1;
    }
  }
  return 0;
}
