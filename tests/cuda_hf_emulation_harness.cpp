// Runs the CUDA band-energy kernels' bodies (csrc/cuda/hf_penalty_body.cuh, and the dwt_body.cuh
// phases they reuse) on the CPU, block by block and phase by phase, over the launch grids that
// csrc/cuda/hf_penalty.cu computes with the same functions (cascade, partials_per_row,
// merge_geometry): no GPU needed. The multilevel driver below mirrors hf_penalty.cu's host code
// (run_forward, run_backward) step by step. Driven by tests/test_cuda_hf_emulation.py, which
// compiles this file with g++ (plain C++17, __CUDACC__ undefined).
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   op (0 band_energy, 1 band_energy_backward) mode (common.h's Mode) index_bits (32/64) L p J
//   N C H W
//   x strides (4) and span
//   grad_x strides (4) and span      (the layout hf_penalty.cu allocates: empty_4d(x))
// DIR/filters.bin: the (2, L) dec taps as float64; DIR/x.bin: x's raw storage (span elements);
// DIR/grad.bin (backward): the (N, J, 3) cotangent. Writes DIR/out_energy.bin (N, J, 3) or
// DIR/out_gx.bin (grad_x's raw storage).
//
// Every buffer a kernel writes (approximations, band gradients, energies, grad_x) starts as NaN,
// as does shared memory before each block: a value that no thread wrote, or one a later phase
// reads before an earlier phase wrote it, poisons the result. The partials and the coarsest
// approximation's gradient start as zeros, exactly as the host code allocates them. Barriers are
// emulated by running each phase for all threads of a block before the next.

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/hf_penalty_body.cuh"
#include "emulation_io.h"

using namespace wavefuse;
using namespace wavefuse::cuda_hf;
using cuda_dwt::MergeArgs;

namespace {

using emulation::kNaN;

struct Strided {
  int64_t s[4];
  int64_t span;
};

struct Params {
  int op, mode, index_bits, L, p, J;
  int64_t N, C, H, W;
  Strided x, gx;
};

using emulation::read_doubles;
using emulation::write_doubles;

template <typename index_t>
Strides4<index_t> strides_of(const int64_t* s) {
  return {static_cast<index_t>(s[0]), static_cast<index_t>(s[1]), static_cast<index_t>(s[2]),
          static_cast<index_t>(s[3])};
}

// Contiguous (N, C, h, w) strides.
template <typename index_t>
Strides4<index_t> contiguous4(int64_t C, int64_t h, int64_t w) {
  return {static_cast<index_t>(C * h * w), static_cast<index_t>(h * w), static_cast<index_t>(w),
          index_t(1)};
}

template <typename index_t>
LevelArgs<double, index_t> level_args(const Params& p, const std::vector<Level>& levels, int j,
                                      const double* in, Strides4<index_t> sin,
                                      const double* taps, double* ll) {
  const Level& lv = levels[j];
  LevelArgs<double, index_t> a{};
  a.s.x = in;
  a.s.sx = sin;
  a.s.filters = taps;
  a.s.ll = nullptr;
  a.s.hi = nullptr;
  a.s.C = static_cast<index_t>(p.C);
  a.s.H = static_cast<index_t>(lv.h);
  a.s.W = static_cast<index_t>(lv.w);
  a.s.Kh = static_cast<index_t>(lv.kh);
  a.s.Kw = static_cast<index_t>(lv.kw);
  a.s.L = p.L;
  a.s.tr = cuda_dwt::transform_of(false, static_cast<Mode>(p.mode), p.L);
  a.s.tiles_h = static_cast<index_t>(lv.g.tiles_h);
  a.s.tiles_w = static_cast<index_t>(lv.g.tiles_w);
  a.ll = ll;
  a.sl = contiguous4<index_t>(p.C, lv.kh, lv.kw);
  a.p = p.p;
  a.j = static_cast<index_t>(j);
  a.J = static_cast<index_t>(p.J);
  return a;
}

// One level kernel over its grid: the phases of energy_kernel (forward) or grad_split_kernel.
template <typename index_t>
void run_level(const LevelArgs<double, index_t>& a, const Level& lv, bool forward) {
  std::vector<double> smem;
  for (int64_t b = 0; b < lv.g.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(lv.g.smem_elems, kNaN);
    for (int t = 0; t < kThreads; ++t) cuda_dwt::load_taps(a.s.filters, a.s.L, a.s.tr.reverse, t,
                                                           smem.data());
    for (int t = 0; t < kThreads; ++t) cuda_dwt::split_row_pass(a.s, block, t, smem.data());
    if (!forward) {
      for (int t = 0; t < kThreads; ++t) grad_col_pass(a, block, t, smem.data());
      continue;
    }
    for (int t = 0; t < kThreads; ++t) energy_col_pass(a, block, t, smem.data());
    double* red = smem.data() + split_smem_elems(a.s.L);
    for (int half = kThreads / 2; half > 0; half /= 2) {
      for (int t = 0; t < kThreads; ++t) reduce_step(red, kBands, half, t);
    }
    for (int t = 0; t < kThreads; ++t) store_partials(a, block, t, smem.data());
  }
}

template <typename index_t>
std::vector<double> forward(const Params& p, const std::vector<double>& x,
                            const std::vector<double>& taps) {
  const Mode mode = static_cast<Mode>(p.mode);
  const std::vector<Level> levels = cascade(p.N * p.C, p.H, p.W, p.L, mode, p.J);
  const int64_t tmax = partials_per_row(levels, p.C);
  std::vector<double> partials(p.N * p.J * kBands * tmax, 0.0);
  std::vector<double> energies(p.N * p.J * kBands, kNaN);
  std::vector<double> in, ll;
  for (int j = 0; j < p.J; ++j) {
    const Level& lv = levels[j];
    ll.assign(j + 1 < p.J ? p.N * p.C * lv.kh * lv.kw : 0, kNaN);
    const double* src = j == 0 ? x.data() : in.data();
    const Strides4<index_t> ssrc =
        j == 0 ? strides_of<index_t>(p.x.s) : contiguous4<index_t>(p.C, lv.h, lv.w);
    auto a = level_args<index_t>(p, levels, j, src, ssrc, taps.data(),
                                 j + 1 < p.J ? ll.data() : nullptr);
    a.partials = partials.data();
    a.tmax = static_cast<index_t>(tmax);
    run_level(a, lv, true);
    in.swap(ll);
  }
  const RowsArgs<double> r{partials.data(), energies.data(), tmax};
  std::vector<double> red(kThreads);
  for (int64_t row = 0; row < static_cast<int64_t>(energies.size()); ++row) {
    red.assign(kThreads, kNaN);
    for (int t = 0; t < kThreads; ++t) rows_load(r, row, t, red.data());
    for (int half = kThreads / 2; half > 0; half /= 2) {
      for (int t = 0; t < kThreads; ++t) reduce_step(red.data(), 1, half, t);
    }
    for (int t = 0; t < kThreads; ++t) rows_store(r, row, t, red.data());
  }
  return energies;
}

// One adjoint (merge) launch: dwt_body.cuh's merge phases over merge_geometry's grid.
template <typename index_t>
void run_adjoint(const Params& p, const double* taps, const double* g_ll, int64_t kh, int64_t kw,
                 const double* g_hi, double* out, Strides4<index_t> sout, int64_t h, int64_t w) {
  MergeArgs<double, index_t, double> a;
  a.ll = g_ll;
  a.sl = contiguous4<index_t>(p.C, kh, kw);
  a.hi = g_hi;
  a.sh = {static_cast<index_t>(p.C * kBands * kh * kw), static_cast<index_t>(kBands * kh * kw),
          static_cast<index_t>(kw), index_t(1)};
  a.shb = static_cast<index_t>(kh * kw);
  a.filters = taps;
  a.y = out;
  a.sy = sout;
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(h);
  a.W = static_cast<index_t>(w);
  a.Kh = static_cast<index_t>(kh);
  a.Kw = static_cast<index_t>(kw);
  a.L = p.L;
  a.tr = cuda_dwt::transform_of(false, static_cast<Mode>(p.mode), p.L);
  const Geometry g = cuda_dwt::merge_geometry(p.N * p.C, h, w, p.L);
  a.tiles_h = static_cast<index_t>(g.tiles_h);
  a.tiles_w = static_cast<index_t>(g.tiles_w);
  std::vector<double> smem;
  for (int64_t b = 0; b < g.blocks; ++b) {
    smem.assign(g.smem_elems, kNaN);
    for (int t = 0; t < kThreads; ++t) cuda_dwt::load_taps(a.filters, a.L, a.tr.reverse, t,
                                                           smem.data());
    for (int t = 0; t < kThreads; ++t) {
      cuda_dwt::merge_col_pass(a, static_cast<index_t>(b), t, smem.data());
    }
    for (int t = 0; t < kThreads; ++t) {
      cuda_dwt::merge_row_pass(a, static_cast<index_t>(b), t, smem.data());
    }
  }
}

template <typename index_t>
std::vector<double> backward(const Params& p, const std::vector<double>& x,
                             const std::vector<double>& taps, const std::vector<double>& grad) {
  const Mode mode = static_cast<Mode>(p.mode);
  const std::vector<Level> levels = cascade(p.N * p.C, p.H, p.W, p.L, mode, p.J);
  std::vector<std::vector<double>> band_grads(p.J);
  std::vector<double> in, ll;
  for (int j = 0; j < p.J; ++j) {  // up
    const Level& lv = levels[j];
    ll.assign(j + 1 < p.J ? p.N * p.C * lv.kh * lv.kw : 0, kNaN);
    band_grads[j].assign(p.N * p.C * kBands * lv.kh * lv.kw, kNaN);
    const double* src = j == 0 ? x.data() : in.data();
    const Strides4<index_t> ssrc =
        j == 0 ? strides_of<index_t>(p.x.s) : contiguous4<index_t>(p.C, lv.h, lv.w);
    auto a = level_args<index_t>(p, levels, j, src, ssrc, taps.data(),
                                 j + 1 < p.J ? ll.data() : nullptr);
    a.grad = grad.data();
    a.hi = band_grads[j].data();
    a.sh = {static_cast<index_t>(p.C * kBands * lv.kh * lv.kw),
            static_cast<index_t>(kBands * lv.kh * lv.kw), static_cast<index_t>(lv.kw), index_t(1)};
    a.shb = static_cast<index_t>(lv.kh * lv.kw);
    run_level(a, lv, false);
    in.swap(ll);
  }
  const Level& last = levels[p.J - 1];
  std::vector<double> g_ll(p.N * p.C * last.kh * last.kw, 0.0), out;
  std::vector<double> gx(p.gx.span, kNaN);
  for (int j = p.J - 1; j >= 0; --j) {  // down
    const Level& lv = levels[j];
    if (j == 0) {
      run_adjoint<index_t>(p, taps.data(), g_ll.data(), lv.kh, lv.kw, band_grads[0].data(),
                           gx.data(), strides_of<index_t>(p.gx.s), lv.h, lv.w);
    } else {
      out.assign(p.N * p.C * lv.h * lv.w, kNaN);
      run_adjoint<index_t>(p, taps.data(), g_ll.data(), lv.kh, lv.kw, band_grads[j].data(),
                           out.data(), contiguous4<index_t>(p.C, lv.h, lv.w), lv.h, lv.w);
      g_ll.swap(out);
    }
  }
  return gx;
}

void read_strided(std::istream& in, Strided& t) {
  for (auto& s : t.s) in >> s;
  in >> t.span;
}

void run_case(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.op >> p.mode >> p.index_bits >> p.L >> p.p >> p.J >> p.N >> p.C >> p.H >> p.W;
  read_strided(in, p.x);
  read_strided(in, p.gx);
  if (!in || p.J < 1) throw std::runtime_error("malformed " + dir + "/params.txt");
  const std::vector<double> taps = read_doubles(dir + "/filters.bin", 2 * p.L);
  const std::vector<double> x = read_doubles(dir + "/x.bin", p.x.span);
  const bool wide = p.index_bits == 64;
  if (p.op == 0) {
    write_doubles(dir + "/out_energy.bin", wide ? forward<int64_t>(p, x, taps)
                                                : forward<int32_t>(p, x, taps));
  } else {
    const std::vector<double> grad = read_doubles(dir + "/grad.bin", p.N * p.J * kBands);
    write_doubles(dir + "/out_gx.bin", wide ? backward<int64_t>(p, x, taps, grad)
                                            : backward<int32_t>(p, x, taps, grad));
  }
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
