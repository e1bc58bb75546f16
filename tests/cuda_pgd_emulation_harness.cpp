// Runs the CUDA PGD-step kernels' bodies (csrc/cuda/pgd_step_body.cuh) on the CPU, block by block
// and phase by phase, over the launch grid that csrc/cuda/pgd_step.cu computes with the same
// geometry functions (linf_geometry, l2_geometry): no GPU needed. Driven by
// tests/test_cuda_pgd_emulation.py, which compiles this file with g++ (plain C++17, __CUDACC__
// undefined) and compares the results with wavefuse.reference.pgd_step_ref.
//
// The separable wavelet step (sep_step_* of the same header) runs over the grid of
// sep_step_geometry: per block the sample reduction (L2 launches 2 and 3), then per plane (shared
// memory and the threads' output registers NaN-filled) the load, the init, per matrix pair the
// right then the left phase, and the plane phase, each for all threads before the next.
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
//   computes them: haar_step_coefficient), or 2 (the separable wavelet step) followed by the
//   number of matrix pairs K and the float64 bit pattern of the identity coefficient, the pairs
//   in DIR/left.bin (K x H x H) and DIR/right_t.bin (K x W x W), row-major float64
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
  int64_t terms = 0;  // op 2: K matrix pairs and the identity coefficient
  double identity = 0;
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

// One launch (Stage) of a fused step kernel (Haar or separable) over its grid: per block the
// sample's norms (L2 launches 2 and 3), then block_items(block, n, sm, denom, factor, acc) -- the
// block's tiles or planes, phase by phase for all threads --, then the block's partial
// (launches 1 and 2). Shared memory and the threads' registers start as NaN.
template <int Stage, typename Args, typename acc_t, typename Items>
void run_fused_stage(const Args& a, int64_t blocks, int64_t smem_elems, Items block_items) {
  using index_t = decltype(a.P);
  std::vector<acc_t> smem(smem_elems);
  acc_t* sm = smem.data();
  std::vector<acc_t> denom(kThreads), factor(kThreads), acc(kThreads);
  const acc_t nan = static_cast<acc_t>(kNaN);
  for (int64_t b = 0; b < blocks; ++b) {
    const index_t block = static_cast<index_t>(b);
    const index_t n = block / a.P;
    smem.assign(smem_elems, nan);
    denom.assign(kThreads, nan);  // registers: NaN unless the phases below set them
    factor.assign(kThreads, nan);
    if (Stage == kFusedL2Delta || Stage == kFusedL2Update) {
      for (int tid = 0; tid < kThreads; ++tid) fused_load_partials<Stage>(a, n, tid, sm);
      block_tree<acc_t>(sm, Stage == kFusedL2Update ? sm + kThreads : nullptr);
      for (int tid = 0; tid < kThreads; ++tid) {
        fused_norms<Stage>(a, n, sm, denom[tid], factor[tid]);
      }
    }
    acc.assign(kThreads, acc_t(0));
    block_items(block, n, smem, denom, factor, acc);
    if (Stage == kFusedL2Grad || Stage == kFusedL2Delta) {
      for (int tid = 0; tid < kThreads; ++tid) sm[tid] = acc[tid];
      block_tree<acc_t>(sm, nullptr);
      for (int tid = 0; tid < kThreads; ++tid) {
        store_partial(Stage == kFusedL2Grad ? a.pg : a.pd, block, tid, sm);
      }
    }
  }
}

// One launch (Stage) of haar_step_kernel: per tile of the block the load, the J mean levels and
// the tile phase (shared memory NaN-filled before each tile).
template <int Stage, typename scalar_t, typename index_t>
void run_haar_stage(const HaarStepArgs<scalar_t, index_t>& a, const HaarStepGeometry& geo) {
  using acc_t = typename StepAcc<scalar_t>::type;
  run_fused_stage<Stage, HaarStepArgs<scalar_t, index_t>, acc_t>(
      a, geo.blocks, geo.smem_elems,
      [&](index_t block, index_t n, std::vector<acc_t>& smem, std::vector<acc_t>& denom,
          std::vector<acc_t>& factor, std::vector<acc_t>& acc) {
        acc_t* sm = smem.data();
        for (index_t t = block % a.P; t < a.Q; t += a.P) {
          smem.assign(smem.size(), static_cast<acc_t>(kNaN));  // stricter than the device
          for (int tid = 0; tid < kThreads; ++tid) haar_step_load(a, n, t, tid, sm);
          for (int j = 1; j <= a.levels; ++j) {
            for (int tid = 0; tid < kThreads; ++tid) haar_step_mean(a, j, tid, sm);
          }
          for (int tid = 0; tid < kThreads; ++tid) {
            haar_step_tile<Stage>(a, n, t, tid, sm, denom[tid], factor[tid], acc[tid]);
          }
        }
      });
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
    run_haar_stage<kFusedLinf>(a, geo);
    return;
  }
  std::vector<acc_t> partials(2 * p.N * geo.P, static_cast<acc_t>(kNaN));
  a.pg = partials.data();
  a.pd = partials.data() + p.N * geo.P;
  run_haar_stage<kFusedL2Grad>(a, geo);
  run_haar_stage<kFusedL2Delta>(a, geo);
  run_haar_stage<kFusedL2Update>(a, geo);
}

// ---- the separable wavelet step -----------------------------------------------------------------

// One launch (Stage) of sep_step_kernel: per plane of the block the load, the init, per matrix
// pair the right and the left phase, the plane phase (shared memory and the threads' outputs
// NaN-filled before each plane).
template <int Stage, typename scalar_t, typename index_t>
void run_sep_stage(const SepStepArgs<scalar_t, index_t>& a, const SepStepGeometry& geo) {
  using acc_t = typename StepAcc<scalar_t>::type;
  std::vector<acc_t> out(static_cast<size_t>(kThreads) * kSepItems);
  run_fused_stage<Stage, SepStepArgs<scalar_t, index_t>, acc_t>(
      a, geo.blocks, geo.smem_elems,
      [&](index_t block, index_t n, std::vector<acc_t>& smem, std::vector<acc_t>& denom,
          std::vector<acc_t>& factor, std::vector<acc_t>& acc) {
        acc_t* sm = smem.data();
        for (index_t c = block % a.P; c < a.C; c += a.P) {
          smem.assign(smem.size(), static_cast<acc_t>(kNaN));  // stricter than the device
          out.assign(out.size(), static_cast<acc_t>(kNaN));
          for (int tid = 0; tid < kThreads; ++tid) sep_step_load(a, n, c, tid, sm);
          for (int tid = 0; tid < kThreads; ++tid) sep_step_init(a, tid, sm, &out[tid * kSepItems]);
          for (int k = 0; k < a.terms; ++k) {
            for (int tid = 0; tid < kThreads; ++tid) sep_step_right(a, k, tid, sm);
            for (int tid = 0; tid < kThreads; ++tid) {
              sep_step_left(a, k, tid, sm, &out[tid * kSepItems]);
            }
          }
          for (int tid = 0; tid < kThreads; ++tid) {
            sep_step_plane<Stage>(a, n, c, tid, &out[tid * kSepItems], denom[tid], factor[tid],
                                  acc[tid]);
          }
        }
      });
}

template <typename scalar_t, typename index_t>
void run_sep(SepStepArgs<scalar_t, index_t>& a, const Params& p) {
  using acc_t = typename StepAcc<scalar_t>::type;
  const bool l2 = p.norm == 1;
  if (p.H > kSepMaxSide || p.W > kSepMaxSide) throw std::runtime_error("plane too large");
  const SepStepGeometry geo = sep_step_geometry(p.N, p.C, p.H, p.W, l2);
  if ((l2 && geo.P > kMaxPartials) || (!l2 && geo.P != p.C) || geo.smem_elems < 2 * p.H * p.W ||
      geo.smem_elems < kL2Smem) {
    throw std::runtime_error("sep_step_geometry broke its invariants");
  }
  a.C = static_cast<index_t>(p.C);
  a.H = static_cast<int>(p.H);
  a.W = static_cast<int>(p.W);
  a.P = static_cast<index_t>(geo.P);
  if (!l2) {
    run_sep_stage<kFusedLinf>(a, geo);
    return;
  }
  std::vector<acc_t> partials(2 * p.N * geo.P, static_cast<acc_t>(kNaN));
  a.pg = partials.data();
  a.pd = partials.data() + p.N * geo.P;
  run_sep_stage<kFusedL2Grad>(a, geo);
  run_sep_stage<kFusedL2Delta>(a, geo);
  run_sep_stage<kFusedL2Update>(a, geo);
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
  // The fields every step's arguments share (StepTensors): the three tensors and the bounds.
  auto fill = [&](StepTensors<scalar_t, index_t>& t) {
    t.xa = xa.data();
    t.g = g.data();
    t.x = x.data();
    t.sa = strides4<index_t>(p.xa);
    t.sg = strides4<index_t>(p.g);
    t.sx = strides4<index_t>(p.x);
    t.eps = bounds[0];
    t.alpha = bounds[1];
    t.lo = bounds[2];
    t.hi = bounds[3];
  };
  if (p.op == 1) {
    HaarStepArgs<scalar_t, index_t> h{};
    fill(h);
    run_haar(h, p);
    write_doubles(dir + "/out_xa.bin", std::vector<double>(xa.begin(), xa.end()));
    return;
  }
  if (p.op == 2) {
    const std::vector<acc_t> left =
        cast<acc_t>(read_doubles(dir + "/left.bin", p.terms * p.H * p.H));
    const std::vector<acc_t> right_t =
        cast<acc_t>(read_doubles(dir + "/right_t.bin", p.terms * p.W * p.W));
    SepStepArgs<scalar_t, index_t> s{};
    fill(s);
    s.left = left.data();
    s.right_t = right_t.data();
    s.identity = static_cast<acc_t>(p.identity);
    s.terms = static_cast<int>(p.terms);
    run_sep(s, p);
    write_doubles(dir + "/out_xa.bin", std::vector<double>(xa.begin(), xa.end()));
    return;
  }
  const int64_t M = p.C * p.H * p.W;
  StepArgs<scalar_t, index_t> a{};
  fill(a);
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
  if (p.op == 2) {
    uint64_t bits = 0;
    in >> p.terms >> bits;
    std::memcpy(&p.identity, &bits, sizeof(double));
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
