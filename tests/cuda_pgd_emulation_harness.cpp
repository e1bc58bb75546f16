// Runs the CUDA PGD-step kernels' bodies (csrc/cuda/pgd_step_body.cuh) on the CPU, block by block
// and phase by phase, over the launch grid that csrc/cuda/pgd_step.cu computes with the same
// geometry functions (linf_geometry, l2_geometry): no GPU needed. Driven by
// tests/test_cuda_pgd_emulation.py, which compiles this file with g++ (plain C++17, __CUDACC__
// undefined) and compares the results with wavefuse.reference.pgd_step_ref.
//
// The fused Haar wavelet step (haar_step_* of the same header) runs likewise over the grid of
// haar_step_geometry: per launch, block by block; per block the sample reduction (L2 launches 2
// and 3), then per tile the load, the J mean levels and the tile phase, each for all threads
// before the next (shared memory NaN-filled before every tile), then the block's partial.
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   dtype (0 float64, 1 float32) norm (0 Linf, 1 L2) index_bits (32/64) cl (0/1) flat (0/1)
//   N C H W
//   x_adv strides (4) and span, grad strides (4) and span, x_nat strides (4) and span
//   then for eps, alpha, lo, hi in turn: has_tensor (0/1), the float64 bit pattern of the float
//   (as an unsigned integer), the tensor's N and C strides (0 where broadcast) and its span
//   then op: 0 (pgd_step), or 1 (the Haar wavelet_pgd_step) followed by mode (common.h's Mode),
//   levels J and the float64 bit patterns of hf_scale[0 .. J) (coefficients as pgd_step.cu
//   computes them: haar_step_coefficient)
// Inputs are raw float64 storage addressed by the strides (xa.bin, g.bin, x.bin, and eps.bin ...
// for the bounds given as tensors); float32 cases hold float32 values, converted exactly. The
// result, x_adv's whole storage (gaps of a strided view included: they must be left untouched), is
// written to out_xa.bin as float64. The L2 partial sums start as NaN, and shared memory is
// NaN-filled before every block, so a value read before any thread of an earlier phase (or an
// earlier launch) wrote it poisons the result. Barriers are emulated by running each phase for all
// threads of a block before the next; launches run one after another.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/pgd_step_body.cuh"
#include "emulation_io.h"

using namespace wavefuse::cuda_pgd;

namespace {

using emulation::kNaN;

struct Raw {
  int64_t strides[4];
  int64_t span = 0;
};

struct BoundIn {
  int has = 0;
  double value = 0;
  int64_t sn = 0, sc = 0, span = 0;
  std::vector<double> data;
};

struct Params {
  int dtype, norm, index_bits, cl, flat;
  int64_t N, C, H, W;
  Raw xa, g, x;
  BoundIn b[4];
  int op = 0, mode = 0, levels = 0;
  double hf_scale[wavefuse::cuda_haar::kHaarMaxLevels] = {};
};

using emulation::read_doubles;
using emulation::write_doubles;

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename index_t>
Strides4<index_t> strides4(const Raw& r) {
  return {static_cast<index_t>(r.strides[0]), static_cast<index_t>(r.strides[1]),
          static_cast<index_t>(r.strides[2]), static_cast<index_t>(r.strides[3])};
}

template <bool Flat, typename scalar_t, typename index_t>
void run_linf(const StepArgs<scalar_t, index_t>& a) {
  const LinfGeometry geo = linf_geometry(static_cast<int64_t>(a.total));
  for (int64_t b = 0; b < geo.blocks; ++b) {
    for (int tid = 0; tid < kThreads; ++tid) linf_thread<Flat>(a, static_cast<index_t>(b), tid);
  }
}

// The block tree of the kernels: one phase per level (the barrier after each).
template <typename acc_t>
void block_tree(acc_t* v, acc_t* w) {
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    for (int tid = 0; tid < kThreads; ++tid) {
      tree_level(v, tid, s);
      if (w != nullptr) tree_level(w, tid, s);
    }
  }
}

template <bool Flat, typename scalar_t, typename index_t>
void run_l2(StepArgs<scalar_t, index_t>& a, int64_t N) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const L2Geometry geo = l2_geometry(N, static_cast<int64_t>(a.M));
  if (geo.parts > kMaxPartials || geo.chunk % kThreads != 0) {
    throw std::runtime_error("l2_geometry broke its invariants");
  }
  std::vector<acc_t> partials(2 * N * geo.parts, static_cast<acc_t>(kNaN));
  a.P = static_cast<index_t>(geo.parts);
  a.chunk = static_cast<index_t>(geo.chunk);
  a.pg = partials.data();
  a.pd = partials.data() + N * geo.parts;
  std::vector<acc_t> smem(kL2Smem);
  acc_t* lo_half = smem.data();
  acc_t* hi_half = smem.data() + kThreads;
  // launch 1: g^2 partials
  for (int64_t b = 0; b < geo.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(kL2Smem, static_cast<acc_t>(kNaN));
    for (int tid = 0; tid < kThreads; ++tid) l2_grad_squares<Flat>(a, block, tid, hi_half);
    block_tree<acc_t>(hi_half, nullptr);
    for (int tid = 0; tid < kThreads; ++tid) store_partial(a.pg, block, tid, hi_half);
  }
  // launch 2: delta^2 partials
  for (int64_t b = 0; b < geo.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(kL2Smem, static_cast<acc_t>(kNaN));
    for (int tid = 0; tid < kThreads; ++tid) {
      load_sample_partials(a.pg, block / a.P, a.P, tid, lo_half);
    }
    block_tree<acc_t>(lo_half, nullptr);
    for (int tid = 0; tid < kThreads; ++tid) {
      l2_delta_squares<Flat>(a, block, tid, lo_half, hi_half);
    }
    block_tree<acc_t>(hi_half, nullptr);
    for (int tid = 0; tid < kThreads; ++tid) store_partial(a.pd, block, tid, hi_half);
  }
  // launch 3: the update
  for (int64_t b = 0; b < geo.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    smem.assign(kL2Smem, static_cast<acc_t>(kNaN));
    for (int tid = 0; tid < kThreads; ++tid) {
      load_sample_partials(a.pg, block / a.P, a.P, tid, lo_half);
      load_sample_partials(a.pd, block / a.P, a.P, tid, hi_half);
    }
    block_tree<acc_t>(lo_half, hi_half);
    for (int tid = 0; tid < kThreads; ++tid) l2_update<Flat>(a, block, tid, lo_half, hi_half);
  }
}

// ---- the fused Haar step ---------------------------------------------------------------------

// One launch (Stage) of haar_step_kernel over the whole grid.
template <int Stage, typename scalar_t, typename index_t>
void run_haar_stage(const HaarStepArgs<scalar_t, index_t>& a, const HaarStepGeometry& geo) {
  using acc_t = typename StepAcc<scalar_t>::type;
  std::vector<acc_t> smem(geo.smem_elems);
  acc_t* sm = smem.data();
  std::vector<acc_t> denom(kThreads), factor(kThreads), acc(kThreads);
  const acc_t nan = static_cast<acc_t>(kNaN);
  for (int64_t b = 0; b < geo.blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    const index_t n = block / a.P;
    smem.assign(geo.smem_elems, nan);
    denom.assign(kThreads, nan);  // registers: NaN unless the phases below set them
    factor.assign(kThreads, nan);
    if (Stage == kHaarL2Delta || Stage == kHaarL2Update) {
      for (int tid = 0; tid < kThreads; ++tid) haar_step_load_partials<Stage>(a, n, tid, sm);
      block_tree<acc_t>(sm, Stage == kHaarL2Update ? sm + kThreads : nullptr);
      for (int tid = 0; tid < kThreads; ++tid) {
        haar_step_norms<Stage>(a, n, sm, denom[tid], factor[tid]);
      }
    }
    acc.assign(kThreads, acc_t(0));
    for (index_t t = block % a.P; t < a.Q; t += a.P) {
      smem.assign(geo.smem_elems, nan);  // stricter than the device: stale values poison
      for (int tid = 0; tid < kThreads; ++tid) haar_step_load(a, n, t, tid, sm);
      for (int j = 1; j <= a.levels; ++j) {
        for (int tid = 0; tid < kThreads; ++tid) haar_step_mean(a, j, tid, sm);
      }
      for (int tid = 0; tid < kThreads; ++tid) {
        haar_step_tile<Stage>(a, n, t, tid, sm, denom[tid], factor[tid], acc[tid]);
      }
    }
    if (Stage == kHaarL2Grad || Stage == kHaarL2Delta) {
      for (int tid = 0; tid < kThreads; ++tid) sm[tid] = acc[tid];
      block_tree<acc_t>(sm, nullptr);
      for (int tid = 0; tid < kThreads; ++tid) {
        store_partial(Stage == kHaarL2Grad ? a.pg : a.pd, block, tid, sm);
      }
    }
  }
}

template <typename scalar_t, typename index_t>
void run_haar(HaarStepArgs<scalar_t, index_t>& a, const Params& p) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const bool l2 = p.norm == 1;
  const HaarStepGeometry geo = haar_step_geometry(p.N, p.C, p.H, p.W, p.levels, l2);
  if (geo.side % (1 << p.levels) != 0 || geo.side != (1 << geo.side_log2) ||
      (l2 && geo.P > kMaxPartials) || (!l2 && geo.P != geo.Q) ||
      geo.smem_elems * static_cast<int64_t>(sizeof(acc_t)) > 48 * 1024) {
    throw std::runtime_error("haar_step_geometry broke its invariants");
  }
  for (int j = 0; j <= p.levels; ++j) {
    a.coef[j] = static_cast<acc_t>(haar_step_coefficient(p.hf_scale, p.levels, j));
  }
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<index_t>(p.H);
  a.W = static_cast<index_t>(p.W);
  a.tiles_h = static_cast<index_t>(geo.tiles_h);
  a.tiles_w = static_cast<index_t>(geo.tiles_w);
  a.Q = static_cast<index_t>(geo.Q);
  a.P = static_cast<index_t>(geo.P);
  a.levels = p.levels;
  a.side_log2 = geo.side_log2;
  a.mode = static_cast<wavefuse::Mode>(p.mode);
  if (!l2) {
    run_haar_stage<kHaarLinf>(a, geo);
    return;
  }
  std::vector<acc_t> partials(2 * p.N * geo.P, static_cast<acc_t>(kNaN));
  a.pg = partials.data();
  a.pd = partials.data() + p.N * geo.P;
  run_haar_stage<kHaarL2Grad>(a, geo);
  run_haar_stage<kHaarL2Delta>(a, geo);
  run_haar_stage<kHaarL2Update>(a, geo);
}

template <typename scalar_t, typename index_t>
void run_case(const std::string& dir, const Params& p) {
  using acc_t = typename StepAcc<scalar_t>::type;
  std::vector<scalar_t> xa = cast<scalar_t>(read_doubles(dir + "/xa.bin", p.xa.span));
  const std::vector<scalar_t> g = cast<scalar_t>(read_doubles(dir + "/g.bin", p.g.span));
  const std::vector<scalar_t> x = cast<scalar_t>(read_doubles(dir + "/x.bin", p.x.span));
  std::vector<acc_t> bdata[4];
  static const char* names[4] = {"eps", "alpha", "lo", "hi"};
  Bound<acc_t, index_t> bounds[4];
  for (int i = 0; i < 4; ++i) {
    const BoundIn& b = p.b[i];
    if (b.has) {
      bdata[i] = cast<acc_t>(read_doubles(dir + "/" + names[i] + ".bin", b.span));
      bounds[i] = {acc_t(0), bdata[i].data(), static_cast<index_t>(b.sn),
                   static_cast<index_t>(b.sc)};
    } else {
      bounds[i] = {static_cast<acc_t>(b.value), nullptr, 0, 0};
    }
  }
  if (p.op == 1) {
    HaarStepArgs<scalar_t, index_t> h{};
    h.xa = xa.data();
    h.g = g.data();
    h.x = x.data();
    h.sa = strides4<index_t>(p.xa);
    h.sg = strides4<index_t>(p.g);
    h.sx = strides4<index_t>(p.x);
    h.eps = bounds[0];
    h.alpha = bounds[1];
    h.lo = bounds[2];
    h.hi = bounds[3];
    run_haar(h, p);
    write_doubles(dir + "/out_xa.bin", std::vector<double>(xa.begin(), xa.end()));
    return;
  }
  const int64_t M = p.C * p.H * p.W;
  StepArgs<scalar_t, index_t> a{};
  a.xa = xa.data();
  a.g = g.data();
  a.x = x.data();
  a.sa = strides4<index_t>(p.xa);
  a.sg = strides4<index_t>(p.g);
  a.sx = strides4<index_t>(p.x);
  a.eps = bounds[0];
  a.alpha = bounds[1];
  a.lo = bounds[2];
  a.hi = bounds[3];
  a.total = static_cast<index_t>(p.N * M);
  a.M = static_cast<index_t>(M);
  a.C = static_cast<index_t>(p.C);
  a.HW = static_cast<index_t>(p.H * p.W);
  a.W = static_cast<index_t>(p.W);
  a.cl = p.cl != 0;
  a.need_c = a.eps.sc != 0 || a.alpha.sc != 0 || a.lo.sc != 0 || a.hi.sc != 0;
  if (p.norm == 0) {
    if (p.flat) {
      run_linf<true>(a);
    } else {
      run_linf<false>(a);
    }
  } else if (p.flat) {
    run_l2<true>(a, p.N);
  } else {
    run_l2<false>(a, p.N);
  }
  write_doubles(dir + "/out_xa.bin", std::vector<double>(xa.begin(), xa.end()));
}

void read_raw(std::istream& in, Raw& r) {
  for (auto& s : r.strides) in >> s;
  in >> r.span;
}

void run_dir(const std::string& dir) {
  std::ifstream in(dir + "/params.txt");
  if (!in) throw std::runtime_error("cannot open " + dir + "/params.txt");
  Params p;
  in >> p.dtype >> p.norm >> p.index_bits >> p.cl >> p.flat >> p.N >> p.C >> p.H >> p.W;
  read_raw(in, p.xa);
  read_raw(in, p.g);
  read_raw(in, p.x);
  for (auto& b : p.b) {
    uint64_t bits = 0;
    in >> b.has >> bits >> b.sn >> b.sc >> b.span;
    std::memcpy(&b.value, &bits, sizeof(double));
  }
  in >> p.op;
  if (p.op == 1) {
    in >> p.mode >> p.levels;
    if (p.levels < 1 || p.levels > wavefuse::cuda_haar::kHaarMaxLevels) {
      throw std::runtime_error("levels out of range in " + dir);
    }
    for (int j = 0; j < p.levels; ++j) {
      uint64_t bits = 0;
      in >> bits;
      std::memcpy(&p.hf_scale[j], &bits, sizeof(double));
    }
  }
  if (!in) throw std::runtime_error("bad params in " + dir);
  const bool i32 = p.index_bits == 32;
  if (p.dtype == 0) {
    if (i32) {
      run_case<double, int32_t>(dir, p);
    } else {
      run_case<double, int64_t>(dir, p);
    }
  } else if (i32) {
    run_case<float, int32_t>(dir, p);
  } else {
    run_case<float, int64_t>(dir, p);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    for (int i = 1; i < argc; ++i) run_dir(argv[i]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "harness: %s\n", e.what());
    return 1;
  }
  return 0;
}
