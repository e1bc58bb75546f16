// Runs the bodies of wavelet_pgd_step's chain in pairs of stages (csrc/cuda/pair_body.cuh's
// pair_block, launched by csrc/cuda/dwt.cu's pair_kernel from chain_pairs) on the CPU: the
// launches of pair_plan in order, each over its grid of blocks (one per output tile of the
// second stage), and inside a block phase by phase -- pair_block's own sequence, with a `phase`
// callable that runs each phase for all kThreads threads before the next (the kernel's runs it
// for its thread and then __syncthreads()). No GPU needed. Driven by
// tests/test_cuda_pgd_emulation.py, which compiles this file with g++ (plain C++17) and compares
// g' with reference.scale_details_ref.
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated values:
//   dtype (0 float64, 1 float32) index_bits (32/64) mode (common.h's Mode) L levels N C H W
//   g strides (4) and span, out strides (4) and span, hf_scale[0 .. levels) (Python repr)
// DIR/filters.bin: the (2, L) dec bank as float64, row-major; DIR/g.bin: g's raw storage (float64;
// float32 cases hold float32 values, converted exactly). Output: DIR/out.bin, g''s raw storage as
// float64. Every buffer (g', the levels chain_pairs allocates, dense row-major here) and shared
// memory (before every block) starts as NaN, so a value read before any earlier phase or launch
// wrote it, or an output no thread writes, shows up as NaN; and a level buffer is NaN-filled
// again right after the launch that chain_pairs releases it after (pair_last_reads), so a later
// read of a released buffer shows up too; a level buffer that a launch wrote and no launch
// releases (chain_pairs would hold it to the end) fails the run. Then the step flag and, with a
// step, its section (tests/emulation_step.h): the last launch applies the Linf step to x_adv
// instead of storing g' (out.bin then stays NaN, out_xa.bin holds x_adv).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/pair_body.cuh"
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

template <typename index_t>
Strides4<index_t> dense(int64_t c, int64_t h, int64_t w) {
  return {static_cast<index_t>(c * h * w), static_cast<index_t>(h * w), static_cast<index_t>(w),
          1};
}

template <typename acc_t, typename index_t>
std::vector<double> run(const Params& p, const std::vector<double>& filters64,
                        const std::vector<double>& g64, const std::string& dir) {
  const std::vector<acc_t> filters(filters64.begin(), filters64.end());
  const std::vector<acc_t> g(g64.begin(), g64.end());
  const acc_t nan = static_cast<acc_t>(emulation::kNaN);
  std::vector<acc_t> out(p.out.span, nan);
  const Mode mode = static_cast<Mode>(p.mode);
  const int depth = p.levels;
  // a_j's sizes and buffers (a_0 = g), e_j's buffers: as chain_pairs allocates them
  std::vector<int64_t> hs{p.H}, ws{p.W};
  for (int j = 1; j <= depth; ++j) {
    hs.push_back(analysis_length<int64_t>(hs.back(), p.L, mode));
    ws.push_back(analysis_length<int64_t>(ws.back(), p.L, mode));
  }
  std::vector<std::vector<acc_t>> approx(depth + 1), detail(depth + 1);
  auto plane = [&](int j) { return std::vector<acc_t>(p.N * p.C * hs[j] * ws[j], nan); };
  auto ptr = [&](int j, bool is_detail) -> acc_t* {
    if (j == 0 && !is_detail) return const_cast<acc_t*>(g.data());
    std::vector<acc_t>& v = is_detail ? detail[j] : approx[j];
    if (v.empty()) throw std::runtime_error("a level read before any launch wrote it");
    return v.data();
  };
  auto strides = [&](int j) {
    return j == 0 ? strides4<index_t>(p.g) : dense<index_t>(p.C, hs[j], ws[j]);
  };
  // as chain_pairs: the band where it fits in the 48 KiB that host.h's kMaxSharedBytes allows
  const bool band = pair_band_fits(p.L, static_cast<int64_t>(sizeof(acc_t)), 48 * 1024);
  std::vector<acc_t> smem;
  auto all_threads = [](auto&& f) {
    for (int tid = 0; tid < kThreads; ++tid) f(tid);
  };
  emulation::StepBuffers<acc_t, index_t> step(p.step);
  const std::vector<PairStep> plan = pair_plan(depth, p.hf_scale.data());
  const std::vector<std::vector<int>> last_read = pair_last_reads(plan, depth);
  for (size_t launch = 0; launch < plan.size(); ++launch) {
    const PairStep& st = plan[launch];
    const int j1 = st.j1, j2 = st.j2;
    PairArgs<acc_t, index_t> a{};
    const bool src_detail = !st.first_analysis && j1 < depth;
    const int src_level = st.first_analysis ? j1 - 1 : j1;
    a.src = ptr(src_level, src_detail);
    a.ss = strides(src_level);
    a.Hs = static_cast<index_t>(hs[src_level]);
    a.Ws = static_cast<index_t>(ws[src_level]);
    const int mid = st.first_analysis ? j1 : j1 - 1;
    a.Hm = static_cast<index_t>(hs[mid]);
    a.Wm = static_cast<index_t>(ws[mid]);
    const int out_level = st.second_analysis ? j2 : j2 - 1;
    a.Ho = static_cast<index_t>(hs[out_level]);
    a.Wo = static_cast<index_t>(ws[out_level]);
    a.has_c1 = st.c1 != 0.0;
    a.has_c2 = st.c2 != 0.0;
    a.p1 = a.has_c1 ? ptr(j1 - 1, false) : a.src;
    a.s1 = a.has_c1 ? strides(j1 - 1) : a.ss;
    a.p2 = a.has_c2 ? ptr(j2 - 1, false) : a.src;
    a.s2 = a.has_c2 ? strides(j2 - 1) : a.ss;
    if (st.store_first) {
      approx[j1] = plane(j1);
      a.first = approx[j1].data();
      a.sf = dense<index_t>(p.C, hs[j1], ws[j1]);
    }
    if (st.final && p.step.on) {  // the step instead of g' (chain_pairs passes x_adv as out)
      a.out = nullptr;
      a.step = step.arg;
    } else if (st.final) {
      a.out = out.data();
      a.so = strides4<index_t>(p.out);
    } else {
      std::vector<acc_t>& dst = st.second_analysis ? approx[j2] : detail[j2 - 1];
      dst = plane(out_level);
      a.out = dst.data();
      a.so = dense<index_t>(p.C, hs[out_level], ws[out_level]);
    }
    a.filters = filters.data();
    a.c1 = static_cast<acc_t>(st.c1);
    a.g1 = static_cast<acc_t>(st.g1);
    a.c2 = static_cast<acc_t>(st.c2);
    a.g2 = static_cast<acc_t>(st.g2);
    a.first_analysis = st.first_analysis;
    a.second_analysis = st.second_analysis;
    a.band = band;
    a.C = static_cast<index_t>(p.C);
    a.L = p.L;
    a.R = static_cast<int>(pair_window(st.second_analysis, p.L));
    a.T = st.second_analysis ? kPairTileA : kPairTileS;
    a.mode = mode;
    const int64_t th = (a.Ho + a.T - 1) / a.T, tw = (a.Wo + a.T - 1) / a.T;
    a.tiles_h = static_cast<index_t>(th);
    a.tiles_w = static_cast<index_t>(tw);
    for (int64_t b = 0; b < p.N * p.C * th * tw; ++b) {  // the grid
      smem.assign(pair_smem_elems(p.L, band), nan);
      pair_block(a, static_cast<index_t>(b), smem.data(), all_threads);
    }
    for (int j = 1; j <= depth; ++j) {  // released by chain_pairs: poisoned here
      if (last_read[0][j] == static_cast<int>(launch)) approx[j].assign(approx[j].size(), nan);
      if (last_read[1][j] == static_cast<int>(launch)) detail[j].assign(detail[j].size(), nan);
    }
  }
  for (int j = 1; j <= depth; ++j) {  // every level a launch wrote is released after its last read
    if (!approx[j].empty() && last_read[0][j] < 0) {
      throw std::runtime_error("pair_last_reads never releases a_" + std::to_string(j));
    }
    if (!detail[j].empty() && last_read[1][j] < 0) {
      throw std::runtime_error("pair_last_reads never releases e_" + std::to_string(j));
    }
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
