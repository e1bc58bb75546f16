// Runs the CUDA DWT kernels' bodies (csrc/cuda/dwt_body.cuh) on the CPU, thread by thread, over
// the launch grid that csrc/cuda/dwt.cu computes with the same geometry functions: no GPU needed.
// Driven by tests/test_cuda_host_emulation.py, which compiles this file with g++ (plain C++17,
// __CUDACC__ undefined) and compares the results with wavefuse's reference ops.
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   kernel (0 split, 1 merge, 2 split of the ll band alone, 3 one level of wavelet_pgd_step's
//   approximation chain) synthesis (0/1) mode (common.h's Mode) index_bits (32/64) L
//   N C H W Kh Kw                      signal (H, W), coefficients (Kh, Kw)
//   signal strides (4) and span         x for split (input), y for merge (output)
//   ll strides (4) and span
//   hi strides (5) and span             (N, C, 3, Kh, Kw)
// then, for kernel 3 only, two floats coef and gain. Kernel 2 is kernel 0 with
// split_col_pass<true> and a null hi (the ll band alone; out_hi.bin stays NaN). Kernel 3 runs
// chain_thread with cur = ll.bin (Kh, Kw), prev = signal.bin (H, W), written in place over prev
// (as pgd_step.cu does for every level but the finest) to out_signal.bin, filters.bin the dec
// bank (reversed on loading).
// DIR/filters.bin holds the (2, L) taps as float64, row-major. Inputs are raw float64 storage
// (span elements, addressed by the strides): split reads signal.bin, merge ll.bin and hi.bin.
// Outputs go to out_ll.bin and out_hi.bin (split) or out_signal.bin (merge), storage pre-filled
// with NaN so that an element no thread writes shows up. Shared memory is also NaN-filled before
// each block: a value read in a later phase that no thread of an earlier phase wrote poisons the
// result. Barriers are emulated by running each phase for all threads of a block before the next.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/dwt_body.cuh"
#include "emulation_io.h"

using namespace wavefuse;
using namespace wavefuse::cuda_dwt;

namespace {

struct Tensor {
  std::vector<int64_t> strides;
  int64_t span = 0;
  std::vector<double> data;
};

struct Params {
  int kernel, synthesis, mode, index_bits, L;
  int64_t N, C, H, W, Kh, Kw;
  Tensor signal, ll, hi;
  double coef = 0, gain = 0;
};

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

using emulation::kNaN;

template <typename index_t>
void run_split(Params& p, const std::vector<double>& filters) {
  const Mode mode = static_cast<Mode>(p.mode);
  const bool synthesis = p.synthesis != 0;
  if (split_length(synthesis, p.H, p.L, mode) != p.Kh ||
      split_length(synthesis, p.W, p.L, mode) != p.Kw) {
    throw std::runtime_error("coefficient size disagrees with split_length");
  }
  p.ll.data.assign(p.ll.span, kNaN);
  p.hi.data.assign(p.hi.span, kNaN);
  const Geometry g = split_geometry(p.N * p.C, p.Kh, p.Kw, p.L);
  SplitArgs<double, index_t> a;
  a.x = p.signal.data.data();
  a.sx = strides4<index_t>(p.signal);
  a.filters = filters.data();
  a.ll = p.ll.data.data();
  a.sl = strides4<index_t>(p.ll);
  a.hi = p.kernel == 2 ? nullptr : p.hi.data.data();
  a.sh = band_strides<index_t>(p.hi);
  a.shb = static_cast<index_t>(p.hi.strides[2]);
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.Kh = static_cast<index_t>(p.Kh);
  a.Kw = static_cast<index_t>(p.Kw);
  a.L = p.L;
  a.tr = transform_of(synthesis, mode, p.L);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  std::vector<double> smem;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(g.smem_elems, kNaN);
    for (int tid = 0; tid < kThreads; ++tid) load_taps(a.filters, a.L, a.tr.reverse, tid, smem.data());
    for (int tid = 0; tid < kThreads; ++tid) split_row_pass(a, block, tid, smem.data());
    for (int tid = 0; tid < kThreads; ++tid) {
      if (p.kernel == 2) {
        split_col_pass<true>(a, block, tid, smem.data());
      } else {
        split_col_pass(a, block, tid, smem.data());
      }
    }
  }
}

template <typename index_t>
void run_merge(Params& p, const std::vector<double>& filters) {
  const Mode mode = static_cast<Mode>(p.mode);
  const bool synthesis = p.synthesis != 0;
  const bool sizes_ok =
      synthesis ? synthesis_length<int64_t>(p.Kh, p.L, mode) == p.H &&
                      synthesis_length<int64_t>(p.Kw, p.L, mode) == p.W
                : analysis_length<int64_t>(p.H, p.L, mode) == p.Kh &&
                      analysis_length<int64_t>(p.W, p.L, mode) == p.Kw;
  if (!sizes_ok) throw std::runtime_error("signal size disagrees with the coefficient size");
  p.signal.data.assign(p.signal.span, kNaN);
  const Geometry g = merge_geometry(p.N * p.C, p.H, p.W, p.L);
  MergeArgs<double, index_t> a;
  a.ll = p.ll.data.data();
  a.sl = strides4<index_t>(p.ll);
  a.hi = p.hi.data.data();
  a.sh = band_strides<index_t>(p.hi);
  a.shb = static_cast<index_t>(p.hi.strides[2]);
  a.filters = filters.data();
  a.y = p.signal.data.data();
  a.sy = strides4<index_t>(p.signal);
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.Kh = static_cast<index_t>(p.Kh);
  a.Kw = static_cast<index_t>(p.Kw);
  a.L = p.L;
  a.tr = transform_of(synthesis, mode, p.L);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  std::vector<double> smem;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(g.smem_elems, kNaN);
    for (int tid = 0; tid < kThreads; ++tid) load_taps(a.filters, a.L, a.tr.reverse, tid, smem.data());
    for (int tid = 0; tid < kThreads; ++tid) merge_col_pass(a, block, tid, smem.data());
    for (int tid = 0; tid < kThreads; ++tid) merge_row_pass(a, block, tid, smem.data());
  }
}

// One level of the approximation chain (pgd_step.cu's chain_pgd_step_cuda, dwt.cu's chain_level):
// out = coef * prev + gain * S_lo cur, in place over prev (signal), the taps the dec bank.
template <typename index_t>
void run_chain(Params& p, const std::vector<double>& filters) {
  const Mode mode = static_cast<Mode>(p.mode);
  const Geometry g = merge_geometry(p.N * p.C, p.H, p.W, p.L);
  ChainArgs<double, index_t> a{};
  a.cur = p.ll.data.data();
  a.sc = strides4<index_t>(p.ll);
  a.prev = p.signal.data.data();
  a.sp = strides4<index_t>(p.signal);
  a.out = p.signal.data.data();
  a.so = a.sp;
  a.filters = filters.data();
  a.coef = p.coef;
  a.gain = p.gain;
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.Kh = static_cast<index_t>(p.Kh);
  a.Kw = static_cast<index_t>(p.Kw);
  a.Hs = static_cast<index_t>(synthesis_length<int64_t>(p.Kh, p.L, mode));
  a.Ws = static_cast<index_t>(synthesis_length<int64_t>(p.Kw, p.L, mode));
  a.L = p.L;
  a.tr = transform_of(true, mode, p.L);
  a.tr.reverse = true;
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  if (a.Hs < a.H || a.Ws < a.W) throw std::runtime_error("prev is larger than the synthesis");
  std::vector<double> smem;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(g.smem_elems, kNaN);
    for (int tid = 0; tid < kThreads; ++tid) load_taps(a.filters, a.L, a.tr.reverse, tid, smem.data());
    for (int tid = 0; tid < kThreads; ++tid) chain_thread(a, block, tid, smem.data());
  }
}

}  // namespace

// One case per directory; several directories per run save process start-ups.
void run_case(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.kernel >> p.synthesis >> p.mode >> p.index_bits >> p.L;
  in >> p.N >> p.C >> p.H >> p.W >> p.Kh >> p.Kw;
  read_tensor(in, p.signal, 4);
  read_tensor(in, p.ll, 4);
  read_tensor(in, p.hi, 5);
  if (p.kernel == 3) in >> p.coef >> p.gain;
  if (!in) throw std::runtime_error("malformed " + dir + "/params.txt");
  const std::vector<double> filters = read_doubles(dir + "/filters.bin", 2 * p.L);
  if (p.kernel == 3) {
    p.signal.data = read_doubles(dir + "/signal.bin", p.signal.span);
    p.ll.data = read_doubles(dir + "/ll.bin", p.ll.span);
    if (p.index_bits == 32) {
      run_chain<int32_t>(p, filters);
    } else {
      run_chain<int64_t>(p, filters);
    }
    write_doubles(dir + "/out_signal.bin", p.signal.data);
  } else if (p.kernel == 0 || p.kernel == 2) {
    p.signal.data = read_doubles(dir + "/signal.bin", p.signal.span);
    if (p.index_bits == 32) {
      run_split<int32_t>(p, filters);
    } else {
      run_split<int64_t>(p, filters);
    }
    write_doubles(dir + "/out_ll.bin", p.ll.data);
    write_doubles(dir + "/out_hi.bin", p.hi.data);
  } else {
    p.ll.data = read_doubles(dir + "/ll.bin", p.ll.span);
    p.hi.data = read_doubles(dir + "/hi.bin", p.hi.span);
    if (p.index_bits == 32) {
      run_merge<int32_t>(p, filters);
    } else {
      run_merge<int64_t>(p, filters);
    }
    write_doubles(dir + "/out_signal.bin", p.signal.data);
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
