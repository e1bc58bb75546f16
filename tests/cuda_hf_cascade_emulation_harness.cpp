// Runs the bodies of the one-launch band-energy kernels (csrc/cuda/hf_cascade_body.cuh's
// energy_cascade_block and grad_cascade_block, launched by csrc/cuda/hf_penalty.cu's
// energy_cascade_kernel and grad_cascade_kernel) on the CPU: block by block (one per (n, c)
// plane, as the kernels' grids) and inside a block phase by phase -- the blocks' own loops, with
// a `phase` callable that runs each phase for all kThreads threads before the next (the kernels'
// runs it for their thread and then __syncthreads()). The forward is followed by rows_kernel's
// phases (hf_penalty_body.cuh's rows_load, reduce_step, rows_store) over the (N, J, 3, C)
// partials, as hf_penalty.cu's band_energy_cascade_cuda launches it. No GPU needed. Driven by
// tests/test_cuda_hf_emulation.py, which compiles this file with g++ (plain C++17).
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   op (0 forward, 1 backward) dtype (0 float64, 1 float32, 2 float16: x and grad_x in float16,
//   everything else in float32, as the kernels' <c10::Half, index_t> instantiations) index_bits
//   mode (common.h's Mode) L p J N C H W
//   x strides (4) and span, grad_x strides (4) and span (the layout hf_penalty.cu allocates)
// DIR/filters.bin: the (2, L) dec taps as float64; DIR/x.bin: x's raw storage as float64 (float32
// and float16 cases hold values of their dtype, converted exactly); DIR/grad.bin (backward): the
// (N, J, 3) cotangent. Writes DIR/out_energy.bin (N, J, 3) or DIR/out_gx.bin (grad_x's raw
// storage), as float64.
//
// Every buffer a kernel writes starts as NaN -- the scratch (the kernel zeroes G_J itself), the
// partials (every entry is written: no memset on the host either), the energies, grad_x -- and so
// does shared memory before every block: a value that no thread wrote, or one that a phase reads
// before an earlier phase wrote it, poisons the result.

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <c10/util/Half.h>

#include "cuda/hf_cascade_body.cuh"
#include "emulation_io.h"

using namespace wavefuse;
using namespace wavefuse::cuda_hf;

namespace {

struct Strided {
  int64_t s[4];
  int64_t span;
};

struct Params {
  int op, dtype, index_bits, mode, L, p, J;
  int64_t N, C, H, W;
  Strided x, gx;
};

template <typename index_t>
Strides4<index_t> strides_of(const Strided& t) {
  return {static_cast<index_t>(t.s[0]), static_cast<index_t>(t.s[1]),
          static_cast<index_t>(t.s[2]), static_cast<index_t>(t.s[3])};
}

template <typename T>
std::vector<T> to(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
  return out;
}

template <typename in_t, typename index_t>
std::vector<double> run(const Params& p, const std::vector<double>& filters64,
                        const std::vector<double>& x64, const std::vector<double>& grad64) {
  using acc_t = typename AccType<in_t>::type;
  const acc_t nan = static_cast<acc_t>(emulation::kNaN);
  const bool backward = p.op == 1;
  const Mode mode = static_cast<Mode>(p.mode);
  CascadeLayout lay;
  if (!cascade_layout(lay, p.H, p.W, p.L, mode, p.J, backward)) {
    throw std::runtime_error("levels out of range");
  }
  const std::vector<acc_t> filters = to<acc_t>(filters64), grad = to<acc_t>(grad64);
  const std::vector<in_t> x = to<in_t>(x64);
  const int64_t planes = p.N * p.C;
  std::vector<acc_t> scratch(planes * lay.plane_elems, nan);
  std::vector<acc_t> partials(backward ? 0 : p.N * p.J * kBands * p.C, nan);
  std::vector<in_t> gx(backward ? p.gx.span : 0, static_cast<in_t>(emulation::kNaN));
  CascadeArgs<in_t, index_t> a{};
  set_layout(a, lay);
  a.x = x.data();
  a.sx = strides_of<index_t>(p.x);
  a.filters = filters.data();
  a.scratch = scratch.data();
  a.C = static_cast<index_t>(p.C);
  a.L = p.L;
  a.p = p.p;
  a.mode = mode;
  a.partials = backward ? nullptr : partials.data();
  a.grad = backward ? grad.data() : nullptr;
  a.grad_x = backward ? gx.data() : nullptr;
  a.sgx = strides_of<index_t>(p.gx);
  auto all_threads = [](auto&& f) {
    for (int tid = 0; tid < kThreads; ++tid) f(tid);
  };
  std::vector<acc_t> smem;
  for (int64_t b = 0; b < planes; ++b) {  // the grid: one block per plane
    smem.assign(cascade_smem_elems(p.L, backward), nan);
    if (backward) {
      grad_cascade_block(a, static_cast<index_t>(b), smem.data(), all_threads);
    } else {
      energy_cascade_block(a, static_cast<index_t>(b), smem.data(), all_threads);
    }
  }
  if (backward) {
    std::vector<double> out(gx.size());
    for (size_t i = 0; i < gx.size(); ++i) out[i] = static_cast<double>(static_cast<acc_t>(gx[i]));
    return out;
  }
  // rows_kernel: one block per (n, j, b) row of C partials
  std::vector<acc_t> energies(p.N * p.J * kBands, nan);
  const RowsArgs<acc_t> r{partials.data(), energies.data(), p.C};
  std::vector<acc_t> red;
  for (int64_t row = 0; row < static_cast<int64_t>(energies.size()); ++row) {
    red.assign(kThreads, nan);
    for (int t = 0; t < kThreads; ++t) rows_load(r, row, t, red.data());
    for (int half = kThreads / 2; half > 0; half /= 2) {
      for (int t = 0; t < kThreads; ++t) reduce_step(red.data(), 1, half, t);
    }
    for (int t = 0; t < kThreads; ++t) rows_store(r, row, t, red.data());
  }
  return std::vector<double>(energies.begin(), energies.end());
}

void read_strided(std::istream& in, Strided& t) {
  for (auto& s : t.s) in >> s;
  in >> t.span;
}

void run_case(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.op >> p.dtype >> p.index_bits >> p.mode >> p.L >> p.p >> p.J >> p.N >> p.C >> p.H >>
      p.W;
  read_strided(in, p.x);
  read_strided(in, p.gx);
  if (!in || p.J < 1) throw std::runtime_error("malformed " + dir + "/params.txt");
  const std::vector<double> taps = emulation::read_doubles(dir + "/filters.bin", 2 * p.L);
  const std::vector<double> x = emulation::read_doubles(dir + "/x.bin", p.x.span);
  std::vector<double> grad;
  if (p.op == 1) grad = emulation::read_doubles(dir + "/grad.bin", p.N * p.J * kBands);
  const bool wide = p.index_bits == 64;
  std::vector<double> out;
  if (p.dtype == 0) {
    out = wide ? run<double, int64_t>(p, taps, x, grad) : run<double, int32_t>(p, taps, x, grad);
  } else if (p.dtype == 1) {
    out = wide ? run<float, int64_t>(p, taps, x, grad) : run<float, int32_t>(p, taps, x, grad);
  } else {
    out = wide ? run<c10::Half, int64_t>(p, taps, x, grad)
               : run<c10::Half, int32_t>(p, taps, x, grad);
  }
  emulation::write_doubles(dir + (p.op == 1 ? "/out_gx.bin" : "/out_energy.bin"), out);
}

}  // namespace

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
