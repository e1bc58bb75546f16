// Runs the CUDA PGD-step kernels' bodies (csrc/cuda/pgd_step_body.cuh) on the CPU, block by block
// and phase by phase, over the launch grid that csrc/cuda/pgd_step.cu computes with the same
// geometry functions (linf_geometry, l2_geometry): no GPU needed. Driven by
// tests/test_cuda_pgd_emulation.py, which compiles this file with g++ (plain C++17, __CUDACC__
// undefined) and compares the results with wavefuse.reference.pgd_step_ref.
//
// Usage: harness DIR... Each DIR/params.txt holds whitespace-separated integers:
//   dtype (0 float64, 1 float32) norm (0 Linf, 1 L2) index_bits (32/64) cl (0/1) flat (0/1)
//   N C H W
//   x_adv strides (4) and span, grad strides (4) and span, x_nat strides (4) and span
//   then for eps, alpha, lo, hi in turn: has_tensor (0/1), the float64 bit pattern of the float
//   (as an unsigned integer), the tensor's N and C strides (0 where broadcast) and its span
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

using namespace wavefuse::cuda_pgd;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

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
};

std::vector<double> read_doubles(const std::string& path, int64_t count) {
  std::vector<double> v(count);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  f.read(reinterpret_cast<char*>(v.data()), count * static_cast<int64_t>(sizeof(double)));
  if (f.gcount() != count * static_cast<int64_t>(sizeof(double))) {
    throw std::runtime_error("short read: " + path);
  }
  return v;
}

void write_doubles(const std::string& path, const std::vector<double>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
  if (!f) throw std::runtime_error("cannot write " + path);
}

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
