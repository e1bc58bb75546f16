// Small and mid-size planes: one level of split / merge on a group of planes at once, one plane
// per vector lane.
//
// The row-vector blocks of separable.h vectorise along W. On small planes (the 32 x 32 feature maps
// of CIFAR-sized networks, and every plane from level 2 on) that wastes most of the work: rows of
// 10 to 19 values fill a vector or two with a ragged tail, and the boundary gathers and per-row
// set-up cost as much as the filtering (db4 symmetric on 128x64x19x19, one core: 17 ms forward and
// 24 ms adjoint, about 2 us per plane, against 0.05 us for a copy of the plane; 2026-12-03,
// 2-core EPYC VM).
//
// Here a task takes V = 32 bytes / sizeof(acc_t) planes (8 float, 4 double; 64 bytes, 16 and 8,
// in the AVX-512 tasks, see avx512_tasks) and works on them in a transposed layout,
// element (row, column) of all V planes in one vector:
//
//   split  transpose in X[h][w] -> row pass R_b[h][k] = sum_e t_b[m_e] X[h][s_e]  (b = lo, hi)
//          -> column pass band(a, b)[i][k] = sum_e t_a[m_e] R_b[s_e][k] -> transpose out
//   merge  the transpose of that, as a gather: column pass R_b[r][k] = sum_e (w0_e G(0, b)[i_e][k]
//          + w1_e G(1, b)[i_e][k]), row pass X[r][c] = sum_e (w0_e R_0[r][k_e] + w1_e R_1[r][k_e])
//
// Every lane does the same arithmetic, so no lane is wasted and the boundary costs one index per
// vector. Each axis is a sparse operator (AxisOp) built once per call from the same index maps as
// the row-vector path: the split entries of output k are the extended positions 2k + m, m < L, in
// ascending m (zero padding entries left out, so a zero next to an inf sample stays 0); the merge
// entries of output s are every (t, m) with map[t] = s, ascending in t then m, never merged (the
// sum keeps each product, so an inf meets the same partners as in the reference). The sums run in
// that fixed order: deterministic, and a plane's values do not depend on the planes it shares a
// group with (lanes never mix). They differ from the row-vector path only by rounding.
//
// GCC/Clang vector extensions; elsewhere this path is off (kPlanesPath) and the
// row-vector path serves every size.

#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cpu/separable.h"

namespace wavefuse {
namespace {

#if defined(__GNUC__)
constexpr bool kPlanesPath = true;
#else
constexpr bool kPlanesPath = false;
#endif

// Planes up to this many samples (input of a split, output of a merge) take the plane-vector path:
// each level of a transform (dwt.cpp) by its own size, the whole band_energy cascade by its input
// (hf_penalty.cpp). The choice depends on the plane size only, never on how many planes a call
// has, so a sample's result does not depend on what it is batched with. Measured (float32, 2
// threads, forward + backward, plane-vector vs row path, 2026-12-03):
//   dwt2d J=1, db4 symmetric: 32x32 12.0 vs 19.6 ms (4096 planes), 80x80 6.3 vs 9.3, 112x112 7.5
//     vs 8.0, 160x160 6.3 vs 6.6, 224x224 7.4 vs 5.8, 320x320 8.0 vs 4.0 (16 planes);
//   hf_penalty db4 symmetric J=2: 80x80 13.1 vs 20.2 ms, 112x112 10.5 vs 17.3, 224x224 10.6 vs
//     11.2, 320x320 11.9 vs 8.3; haar J=1 at 224x224 a tie or a loss.
// From 160x160 on the gain is within this VM's run-to-run noise or negative, so the switch sits
// at 128x128. Before the in-register transposes below it sat at 32x32: moving planes in and out
// one scalar at a time cost more than the fuller row vectors saved.
constexpr int64_t kPlanesMaxArea = 128 * 128;

inline bool use_planes_path(int64_t H, int64_t W) {
  return kPlanesPath && H * W <= kPlanesMaxArea;
}

// AVX-512 (x86-64-v4) versions of the filtering tasks (the transforms' levels, band_energy and
// its backward, the wavelet PGD step's filter): the plane-vector tasks with 64-byte vectors
// (name_wide), the row-vector tasks at the AVX2 width with 32 registers (name_v4). Built by GCC
// on x86-64, run where the CPU has AVX-512 unless the environment variable
// WAVEFUSE_CPU_VECTOR_BITS is "256" (avx512_setting).
// The wide plane-vector tasks, measured on a Zen 4 core, 2026-12-04 (interleaved in one
// process): hf_penalty db4 J=3 on 128x64x32x32 about -11% (hf_penalty.cpp), the wavelet PGD step
// (db4 J=3, Linf) -8%, wavedec2 forward + backward within noise (0.91x to 1.09x).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WAVEFUSE_WIDE 1
#else
#define WAVEFUSE_WIDE 0
#endif

// name##suffix(s, begin, end): the task function `name` once more, compiled with
// target(options), running body(s, begin, end); where there is no such target, a plain call of
// `name` (never reached: avx512_tasks() is false there).
#if WAVEFUSE_WIDE
#define WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, T)                    \
  __attribute__((target(options))) void name##suffix(const Args<T>& s, int64_t begin, \
                                                     int64_t end) {                   \
    body(s, begin, end);                                                              \
  }
#else
#define WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, T) \
  void name##suffix(const Args<T>& s, int64_t begin, int64_t end) { name(s, begin, end); }
#endif
#define WAVEFUSE_TARGET_COPIES(name, suffix, options, body, Args)  \
  WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, float)    \
  WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, double)   \
  WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, at::Half) \
  WAVEFUSE_TARGET_COPY(name, suffix, options, body, Args, at::BFloat16)

// name_wide: a plane-vector task for x86-64-v4 with 64-byte vectors (impl<64>).
#define WAVEFUSE_WIDE_TASKS(name, impl, Args) \
  WAVEFUSE_TARGET_COPIES(name, _wide, "arch=x86-64-v4", impl<64>, Args)

// name_v4: a row-vector task (separable.h) for x86-64-v4 at the AVX2 width
// (prefer-vector-width=256: the same 32-byte vector loops, and the same values bit for bit, as the
// AVX2 clone of `name`). What it buys is AVX-512's 32 vector registers: the correlation chunks'
// broadcast taps, spilled to the stack and reloaded in every iteration with AVX2's 16, stay in
// registers. Measured on a Zen 4 core (2026-12-05, 2-core EPYC VM, interleaved in one process,
// this copy against the AVX2 clone): hf_penalty db4 J=3 on 16x3x224x224, forward 0.79-0.80x,
// forward + backward 0.88-0.89x (periodization and symmetric); dwt2 db4 0.90-0.93x (16x3x224x224,
// 16x3x448x448); wavelet_pgd_step db4 J=3 0.91-0.92x. 512-bit loops in the same copy (the
// target's default width) did no better than 256-bit ones (alternating builds).
#define WAVEFUSE_V4_TASKS(name, impl, Args) \
  WAVEFUSE_TARGET_COPIES(name, _v4, "arch=x86-64-v4,prefer-vector-width=256", impl, Args)

// Whether the AVX-512 copies of the tasks run: never where the CPU lacks an x86-64-v4 feature or
// WAVEFUSE_CPU_VECTOR_BITS is "256"; always where it is "512"; unset (kAuto), the row-vector
// copies always and the wide plane groups where they pay (for_plane_groups). Read on every call.
enum class Avx512 { kOff, kAuto, kOn };

inline Avx512 avx512_setting() {
  const char* env = std::getenv("WAVEFUSE_CPU_VECTOR_BITS");
  const std::string bits = env ? env : "";
  TORCH_CHECK(bits.empty() || bits == "256" || bits == "512",
              "wavefuse: the environment variable WAVEFUSE_CPU_VECTOR_BITS must be 256 or 512 (or "
              "unset), got '", bits, "'");
#if WAVEFUSE_WIDE
  // x86-64-v4 feature by feature: GCC 11 (which has the target) lacks the level names here
  static const bool cpu =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl");
  if (!cpu || bits == "256") return Avx512::kOff;
  return bits == "512" ? Avx512::kOn : Avx512::kAuto;
#else
  return Avx512::kOff;
#endif
}

inline bool avx512_tasks() { return avx512_setting() != Avx512::kOff; }

// Runs a row-vector task over [0, n) in parallel (grain as at::parallel_for): v4(begin, end)
// where avx512_tasks() says so, else task(begin, end).
template <typename Task, typename V4>
void parallel_tasks(int64_t n, int64_t grain, const Task& task, const V4& v4) {
  const bool w = avx512_tasks();
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    w ? v4(begin, end) : task(begin, end);
  });
}

// out[o] = sum over e in [start[o], start[o + 1]) of (w0[e], w1[e]) * in[idx[e]].
template <typename acc_t>
struct AxisOp {
  std::vector<int64_t> start{0}, idx;
  std::vector<acc_t> w0, w1;
  void push(int64_t i, acc_t a, acc_t b) { idx.push_back(i), w0.push_back(a), w1.push_back(b); }
  void close() { start.push_back(static_cast<int64_t>(idx.size())); }
  int64_t size() const { return static_cast<int64_t>(start.size()) - 1; }
};

// Split along an axis: output k (k < K) of band b reads extended positions 2k + m, m < L.
template <typename acc_t>
AxisOp<acc_t> split_axis(const std::vector<int64_t>& map,
                         const std::array<std::vector<acc_t>, 2>& taps, int64_t K) {
  const int64_t L = static_cast<int64_t>(taps[0].size());
  AxisOp<acc_t> op;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < L; ++m) {
      const int64_t s = map[2 * k + m];
      if (s >= 0) op.push(s, taps[0][m], taps[1][m]);
    }
    op.close();
  }
  return op;
}

// Merge along an axis (the transpose of split_axis): output s (s < n) sums coefficient k with the
// taps of every (t, m) where map[t] = s, t = 2k + m.
template <typename acc_t>
AxisOp<acc_t> merge_axis(const std::vector<int64_t>& map,
                         const std::array<std::vector<acc_t>, 2>& taps, int64_t n, int64_t K) {
  const int64_t L = static_cast<int64_t>(taps[0].size());
  std::vector<std::vector<std::tuple<int64_t, acc_t, acc_t>>> by_out(n);
  for (int64_t t = 0; t < static_cast<int64_t>(map.size()); ++t) {
    if (map[t] < 0) continue;
    for (int64_t m = t % 2; m < L; m += 2) {
      const int64_t k = (t - m) / 2;
      if (k >= 0 && k < K) by_out[map[t]].emplace_back(k, taps[0][m], taps[1][m]);
    }
  }
  AxisOp<acc_t> op;
  for (const auto& entries : by_out) {
    for (const auto& [k, a, b] : entries) op.push(k, a, b);
    op.close();
  }
  return op;
}

template <typename acc_t>
struct PlanesPlan {
  AxisOp<acc_t> rows, cols;  // along W (row pass) and along H (column pass)
  int64_t H, W, Kh, Kw;      // plane sizes: the split's input / the merge's output, and the bands
};

#if defined(__GNUC__)

// Vectors of Bytes bytes: 32 (AVX2, and two SSE registers in the baseline clones) everywhere, 64
// in the AVX-512 versions of the tasks (avx512_tasks). A lane's arithmetic is the
// same at either width (the same operations in the same order, no contraction), so a plane's
// values do not depend on the width either, only the number of planes per group does.
template <typename T, int Bytes>
struct VecN {
  static constexpr int64_t kLanes = Bytes / sizeof(T);
  typedef T type __attribute__((vector_size(Bytes), aligned(alignof(T)), may_alias));
};
template <typename acc_t, int Bytes = 32>
using Lanes = typename VecN<acc_t, Bytes>::type;
template <typename acc_t, int Bytes = 32>
constexpr int64_t kLanes = VecN<acc_t, Bytes>::kLanes;

// Runs a plane-vector task over all groups of `planes`, in parallel: wide(begin, end) with 64-byte
// groups, else narrow(begin, end) with 32-byte ones. Unset, the wide groups run when the threads
// finish no later with them, counting a wide group as 1.75 narrow ones (a wide group of float
// planes took 0.86-0.89x the time of two narrow ones: hf_penalty db4 J=3 forward and forward +
// backward on 128x64x32x32). Few planes make few groups, and at::parallel_for hands each thread
// ceil(groups / threads) of them: one level of db4 on 16x3x112x112 (48 planes, 2 threads) took 1.17x
// as long as wide groups (2 rounds of 1.75) as narrow ones (3 rounds), 0.91x on 64x3x112x112
// (2026-12-05, Zen 4). The width changes no value (VecN), so it may depend on the call's shape.
template <typename acc_t, typename Narrow, typename Wide>
void for_plane_groups(int64_t planes, const Narrow& narrow, const Wide& wide) {
  const Avx512 setting = avx512_setting();
  bool w = setting == Avx512::kOn;
  if (setting == Avx512::kAuto) {
    const int64_t threads = at::in_parallel_region() ? 1 : std::max(1, at::get_num_threads());
    const auto rounds = [&](int64_t lanes) {
      const int64_t groups = (planes + lanes - 1) / lanes;
      return (groups + threads - 1) / threads;
    };
    w = 4 * rounds(kLanes<acc_t>) >= 7 * rounds(kLanes<acc_t, 64>);
  }
  const int64_t V = w ? kLanes<acc_t, 64> : kLanes<acc_t>;
  at::parallel_for(0, (planes + V - 1) / V, 1, [&](int64_t begin, int64_t end) {
    w ? wide(begin, end) : narrow(begin, end);
  });
}

// A thread's buffers, in vectors: the plane X (H x W), the row bands R_0, R_1 (H x Kw) and the
// four bands B (Kh x Kw each).
template <typename acc_t, int Bytes = 32>
struct PlanesWork {
  using V = Lanes<acc_t, Bytes>;
  static constexpr int64_t kV = kLanes<acc_t, Bytes>;
  Buffer<acc_t> x, r, b;
  explicit PlanesWork(const PlanesPlan<acc_t>& p)
      : x(p.H * p.W * kV), r(2 * p.H * p.Kw * kV), b(4 * p.Kh * p.Kw * kV) {}
  V* X() { return reinterpret_cast<V*>(x.data()); }
  V* R(int b_) { return reinterpret_cast<V*>(r.data()) + b_ * (r.size() / 2 / kV); }
  V* B(int ab) { return reinterpret_cast<V*>(b.data()) + ab * (b.size() / 4 / kV); }
};

// Split along one axis, lines [o0, o0 + U) at once (U independent accumulator chains per band):
// out_b[o * oo + k * ok] = sum_e w_b[e] in[o * io + idx[e] * ik].
template <int U, typename V, typename acc_t>
WAVEFUSE_INLINE void split_lines(const AxisOp<acc_t>& op, const V* __restrict__ in, int64_t io,
                                 int64_t ik, V* __restrict__ out0, V* __restrict__ out1,
                                 int64_t oo, int64_t ok, int64_t o0) {
  const int64_t* __restrict__ idx = op.idx.data();
  const acc_t* __restrict__ w0 = op.w0.data();
  const acc_t* __restrict__ w1 = op.w1.data();
  const V* line[U];
  for (int u = 0; u < U; ++u) line[u] = in + (o0 + u) * io;
  for (int64_t k = 0; k < op.size(); ++k) {
    V a0[U], a1[U];
    for (int u = 0; u < U; ++u) a0[u] = V{}, a1[u] = V{};
    for (int64_t e = op.start[k]; e < op.start[k + 1]; ++e) {
      const int64_t at = idx[e] * ik;
      const acc_t c0 = w0[e], c1 = w1[e];
      for (int u = 0; u < U; ++u) {
        const V v = line[u][at];
        a0[u] += v * c0;
        a1[u] += v * c1;
      }
    }
    for (int u = 0; u < U; ++u) {
      out0[(o0 + u) * oo + k * ok] = a0[u];
      out1[(o0 + u) * oo + k * ok] = a1[u];
    }
  }
}

template <typename V, typename acc_t>
WAVEFUSE_INLINE void split_apply(const AxisOp<acc_t>& op, const V* in, int64_t io, int64_t ik,
                                 V* out0, V* out1, int64_t oo, int64_t ok, int64_t other) {
  int64_t o = 0;
  for (; o + 4 <= other; o += 4) split_lines<4>(op, in, io, ik, out0, out1, oo, ok, o);
  for (; o < other; ++o) split_lines<1>(op, in, io, ik, out0, out1, oo, ok, o);
}

// Merge along one axis, lines [o0, o0 + U) at once:
// out[o * oo + s * ok] = sum_e (w0[e] in0[o * io + idx[e] * ik] + w1[e] in1[...]).
template <int U, typename V, typename acc_t>
WAVEFUSE_INLINE void merge_lines(const AxisOp<acc_t>& op, const V* __restrict__ in0,
                                 const V* __restrict__ in1, int64_t io, int64_t ik,
                                 V* __restrict__ out, int64_t oo, int64_t ok, int64_t o0) {
  const int64_t* __restrict__ idx = op.idx.data();
  const acc_t* __restrict__ w0 = op.w0.data();
  const acc_t* __restrict__ w1 = op.w1.data();
  for (int64_t s = 0; s < op.size(); ++s) {
    V a[U];
    for (int u = 0; u < U; ++u) a[u] = V{};
    for (int64_t e = op.start[s]; e < op.start[s + 1]; ++e) {
      const acc_t c0 = w0[e], c1 = w1[e];
      for (int u = 0; u < U; ++u) {
        const int64_t at = (o0 + u) * io + idx[e] * ik;
        a[u] += in0[at] * c0 + in1[at] * c1;
      }
    }
    for (int u = 0; u < U; ++u) out[(o0 + u) * oo + s * ok] = a[u];
  }
}

template <typename V, typename acc_t>
WAVEFUSE_INLINE void merge_apply(const AxisOp<acc_t>& op, const V* in0, const V* in1, int64_t io,
                                 int64_t ik, V* out, int64_t oo, int64_t ok, int64_t other) {
  int64_t o = 0;
  for (; o + 4 <= other; o += 4) merge_lines<4>(op, in0, in1, io, ik, out, oo, ok, o);
  for (; o < other; ++o) merge_lines<1>(op, in0, in1, io, ik, out, oo, ok, o);
}

// ---- transposes between the planes and the lane-interleaved buffer ----------------------------
// A buffer element (row, column) holds that sample of all V planes in one vector. Moving planes in
// and out of that layout is a transpose, and done one scalar at a time it cost about 40% of the
// whole path (db4 zero on 128x64x32x32, forward + adjoint: perf, 2026-12-03). Where the planes hold
// acc_t itself and their rows are unit-stride, a block of V values of V planes is transposed in
// registers instead: V loads, log2(V) x V shuffles (unpack, shuffle, 128-bit permute: 24 for
// float, 8 for double under AVX2), V stores. Channels-last planes whose lanes are consecutive
// channels of one sample are already interleaved: one vector per sample, no shuffle at all. Other
// dtypes (float16 / bfloat16, converted on the way) and strides take the scalar loops.

#if defined(__clang__)
#define WAVEFUSE_SHUFFLE(T, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define WAVEFUSE_SHUFFLE(T, a, b, ...) __builtin_shuffle(a, b, T{__VA_ARGS__})
#endif

// r[t][l] <- r[l][t] for a V x V block.
WAVEFUSE_INLINE void transpose_block(Lanes<float> (&r)[8]) {
  typedef int32_t M __attribute__((vector_size(32)));
  using V = Lanes<float>;
  V t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = WAVEFUSE_SHUFFLE(M, r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * k + 1] = WAVEFUSE_SHUFFLE(M, r[2 * k], r[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 2; ++k) {  // u[4k + q]: columns q and q + 4 of rows 4k .. 4k + 3
    for (int h = 0; h < 2; ++h) {
      u[4 * k + 2 * h] = WAVEFUSE_SHUFFLE(M, t[4 * k + h], t[4 * k + 2 + h], 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * k + 2 * h + 1] = WAVEFUSE_SHUFFLE(M, t[4 * k + h], t[4 * k + 2 + h], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = WAVEFUSE_SHUFFLE(M, u[q], u[4 + q], 0, 1, 2, 3, 8, 9, 10, 11);
    r[4 + q] = WAVEFUSE_SHUFFLE(M, u[q], u[4 + q], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

WAVEFUSE_INLINE void transpose_block(Lanes<double> (&r)[4]) {
  typedef int64_t M __attribute__((vector_size(32)));
  using V = Lanes<double>;
  const V t0 = WAVEFUSE_SHUFFLE(M, r[0], r[1], 0, 4, 2, 6);
  const V t1 = WAVEFUSE_SHUFFLE(M, r[0], r[1], 1, 5, 3, 7);
  const V t2 = WAVEFUSE_SHUFFLE(M, r[2], r[3], 0, 4, 2, 6);
  const V t3 = WAVEFUSE_SHUFFLE(M, r[2], r[3], 1, 5, 3, 7);
  r[0] = WAVEFUSE_SHUFFLE(M, t0, t2, 0, 1, 4, 5);
  r[1] = WAVEFUSE_SHUFFLE(M, t1, t3, 0, 1, 4, 5);
  r[2] = WAVEFUSE_SHUFFLE(M, t0, t2, 2, 3, 6, 7);
  r[3] = WAVEFUSE_SHUFFLE(M, t1, t3, 2, 3, 6, 7);
}

#undef WAVEFUSE_SHUFFLE

// Unaligned vector moves (Lanes<T> is only aligned as T). Vectors are passed by reference, never
// returned: a 32-byte vector return in the baseline clone is an ABI change GCC warns about.
template <typename T, int Bytes = 32>
WAVEFUSE_INLINE void move_lanes(T* dst, const T* src) {
  *reinterpret_cast<Lanes<T, Bytes>*>(dst) = *reinterpret_cast<const Lanes<T, Bytes>*>(src);
}
template <typename T>
WAVEFUSE_INLINE void load_lanes(Lanes<T>& v, const T* p) { v = *reinterpret_cast<const Lanes<T>*>(p); }
template <typename T>
WAVEFUSE_INLINE void store_lanes(T* p, const Lanes<T>& v) { *reinterpret_cast<Lanes<T>*>(p) = v; }

// buf[j * V + lane] = src[lane][j] for j < len (len >= W, W = the lanes of a 32-byte vector),
// lanes from count on zero; V = kLanes<T, Bytes>. The transposes are W x W blocks of 32-byte
// vectors, Bytes / 32 of them side by side (lanes [h W, (h + 1) W) from block h). The last block
// overlaps the one before it (it rewrites the same values).
template <typename T, int Bytes = 32>
WAVEFUSE_INLINE void lines_in(T* __restrict__ buf, const T* const* src, int64_t count, int64_t len) {
  constexpr int64_t W = kLanes<T>, V = kLanes<T, Bytes>;
  Lanes<T> r[W];
  for (int64_t j0 = 0; j0 < len; j0 += W) {
    const int64_t j = std::min(j0, len - W);
    for (int64_t h = 0; h < V; h += W) {
      for (int64_t l = 0; l < W; ++l) {
        if (h + l < count) {
          load_lanes(r[l], src[h + l] + j);
        } else {
          r[l] = Lanes<T>{};
        }
      }
      transpose_block(r);
      for (int64_t t = 0; t < W; ++t) store_lanes(buf + (j + t) * V + h, r[t]);
    }
  }
}

// dst[lane][j] = buf[j * V + lane] for j < len (len >= W), lanes < count.
template <typename T, int Bytes = 32>
WAVEFUSE_INLINE void lines_out(const T* __restrict__ buf, T* const* dst, int64_t count, int64_t len) {
  constexpr int64_t W = kLanes<T>, V = kLanes<T, Bytes>;
  Lanes<T> r[W];
  for (int64_t j0 = 0; j0 < len; j0 += W) {
    const int64_t j = std::min(j0, len - W);
    for (int64_t h = 0; h < V && h < count; h += W) {
      for (int64_t t = 0; t < W; ++t) load_lanes(r[t], buf + (j + t) * V + h);
      transpose_block(r);
      for (int64_t l = 0; l < W && h + l < count; ++l) store_lanes(dst[h + l] + j, r[l]);
    }
  }
}

// How the planes [p0, p0 + count) of v are laid out, for the vector moves.
enum class PlanesLayout { kScalar, kRows, kPlanes, kInterleaved };

template <typename scalar_t, typename acc_t, int Bytes, typename T>
WAVEFUSE_INLINE PlanesLayout planes_layout(const View4<T>& v, int64_t C, int64_t p0, int64_t count,
                                          int64_t rows, int64_t cols) {
  constexpr int64_t V = kLanes<acc_t, Bytes>, W = kLanes<acc_t>;  // lanes; transpose block
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    return PlanesLayout::kScalar;
  } else {
    // V consecutive channels of one sample at unit stride: (row, column) of the V planes is one
    // vector.
    if (count == V && v.sc == 1 && p0 % C + V <= C) return PlanesLayout::kInterleaved;
    if (v.sw != 1) return PlanesLayout::kScalar;
    if ((v.sh == cols || rows == 1) && rows * cols >= W) return PlanesLayout::kPlanes;  // one line
    return cols >= W ? PlanesLayout::kRows : PlanesLayout::kScalar;
  }
}

// Lanes [0, count) of the transposed buffer `buf` (rows x cols vectors) from / to planes
// p0 + lane of a strided 4-D view; lanes from count on are zero on the way in.
template <typename scalar_t, typename acc_t, int Bytes = 32>
WAVEFUSE_INLINE void planes_in(acc_t* __restrict__ buf, const View4<const scalar_t>& v, int64_t C,
                               int64_t p0, int64_t count, int64_t rows, int64_t cols) {
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  const PlanesLayout layout = planes_layout<scalar_t, acc_t, Bytes>(v, C, p0, count, rows, cols);
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (layout == PlanesLayout::kInterleaved) {
      const acc_t* base = v.plane(p0, C);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          move_lanes<acc_t, Bytes>(buf + (i * cols + j) * V, base + i * v.sh + j * v.sw);
        }
      }
      return;
    }
    if (layout != PlanesLayout::kScalar) {
      const acc_t* src[V] = {};
      for (int64_t lane = 0; lane < count; ++lane) src[lane] = v.plane(p0 + lane, C);
      if (layout == PlanesLayout::kPlanes) return lines_in<acc_t, Bytes>(buf, src, count, rows * cols);
      for (int64_t i = 0; i < rows; ++i) {
        const acc_t* row[V] = {};
        for (int64_t lane = 0; lane < count; ++lane) row[lane] = src[lane] + i * v.sh;
        lines_in<acc_t, Bytes>(buf + i * cols * V, row, count, cols);
      }
      return;
    }
  }
  if (count < V) zero_span(buf, rows * cols * V);
  for (int64_t lane = 0; lane < count; ++lane) {
    const scalar_t* src = v.plane(p0 + lane, C);
    for (int64_t i = 0; i < rows; ++i) {
      const scalar_t* row = src + i * v.sh;
      acc_t* dst = buf + i * cols * V + lane;
      if (v.sw == 1) {
        for (int64_t j = 0; j < cols; ++j) dst[j * V] = static_cast<acc_t>(row[j]);
      } else {
        for (int64_t j = 0; j < cols; ++j) dst[j * V] = static_cast<acc_t>(row[j * v.sw]);
      }
    }
  }
}

template <typename scalar_t, typename acc_t, int Bytes = 32>
WAVEFUSE_INLINE void planes_out(const acc_t* __restrict__ buf, const View4<scalar_t>& v, int64_t C,
                                int64_t p0, int64_t count, int64_t rows, int64_t cols) {
  constexpr int64_t V = kLanes<acc_t, Bytes>;
  const PlanesLayout layout = planes_layout<scalar_t, acc_t, Bytes>(v, C, p0, count, rows, cols);
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (layout == PlanesLayout::kInterleaved) {
      acc_t* base = v.plane(p0, C);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
          move_lanes<acc_t, Bytes>(base + i * v.sh + j * v.sw, buf + (i * cols + j) * V);
        }
      }
      return;
    }
    if (layout != PlanesLayout::kScalar) {
      acc_t* dst[V] = {};
      for (int64_t lane = 0; lane < count; ++lane) dst[lane] = v.plane(p0 + lane, C);
      if (layout == PlanesLayout::kPlanes) return lines_out<acc_t, Bytes>(buf, dst, count, rows * cols);
      for (int64_t i = 0; i < rows; ++i) {
        acc_t* row[V] = {};
        for (int64_t lane = 0; lane < count; ++lane) row[lane] = dst[lane] + i * v.sh;
        lines_out<acc_t, Bytes>(buf + i * cols * V, row, count, cols);
      }
      return;
    }
  }
  for (int64_t lane = 0; lane < count; ++lane) {
    scalar_t* dst = v.plane(p0 + lane, C);
    for (int64_t i = 0; i < rows; ++i) {
      scalar_t* row = dst + i * v.sh;
      const acc_t* src = buf + i * cols * V + lane;
      if (v.sw == 1) {
        for (int64_t j = 0; j < cols; ++j) row[j] = static_cast<scalar_t>(src[j * V]);
      } else {
        for (int64_t j = 0; j < cols; ++j) row[j * v.sw] = static_cast<scalar_t>(src[j * V]);
      }
    }
  }
}

// One level of split of the planes in X (H x W) into w.B(0..3) (band (a, b) at 2a + b: LL, cV,
// cH, cD), through w.R.
template <typename acc_t, int Bytes = 32>
WAVEFUSE_INLINE void split_core(const PlanesPlan<acc_t>& p, PlanesWork<acc_t, Bytes>& w,
                                const Lanes<acc_t, Bytes>* X) {
  using V = Lanes<acc_t, Bytes>;
  // row pass: line h of X (stride W), positions along W (stride 1) -> R_b[h][k]
  split_apply<V>(p.rows, X, p.W, 1, w.R(0), w.R(1), p.Kw, 1, p.H);
  // column pass: line k of R_b (stride 1), positions along H (stride Kw) -> B(a, b)[i][k]
  for (int b = 0; b < 2; ++b) {
    split_apply<V>(p.cols, w.R(b), 1, p.Kw, w.B(b), w.B(2 + b), 1, p.Kw, p.Kw);
  }
}

// One level of merge (the transpose of split_core) of w.B(0..3) into X (H x W), through w.R.
template <typename acc_t, int Bytes = 32>
WAVEFUSE_INLINE void merge_core(const PlanesPlan<acc_t>& p, PlanesWork<acc_t, Bytes>& w,
                                Lanes<acc_t, Bytes>* X) {
  using V = Lanes<acc_t, Bytes>;
  // column pass: line k (stride 1), coefficient rows along H (stride Kw) -> R_b[r][k]
  for (int b = 0; b < 2; ++b) {
    merge_apply<V>(p.cols, w.B(b), w.B(2 + b), 1, p.Kw, w.R(b), 1, p.Kw, p.Kw);
  }
  // row pass: line r of R_0, R_1 (stride Kw), coefficients along W (stride 1) -> X[r][c]
  merge_apply<V>(p.rows, w.R(0), w.R(1), p.Kw, 1, X, p.W, 1, p.H);
}

// One level of analysis-type split on planes [p0, p0 + count), count <= V. out[a][b] as in
// band_views (a: along H, b: along W).
template <typename scalar_t, typename acc_t, int Bytes>
WAVEFUSE_INLINE void split_planes(const PlanesPlan<acc_t>& p, PlanesWork<acc_t, Bytes>& w,
                                  const View4<const scalar_t>& in,
                                  const std::array<std::array<View4<scalar_t>, 2>, 2>& out,
                                  int64_t C, int64_t p0, int64_t count) {
  planes_in<scalar_t, acc_t, Bytes>(w.x.data(), in, C, p0, count, p.H, p.W);
  split_core(p, w, w.X());
  for (int ab = 0; ab < 4; ++ab) {
    planes_out<scalar_t, acc_t, Bytes>(reinterpret_cast<const acc_t*>(w.B(ab)), out[ab / 2][ab % 2],
                                       C, p0, count, p.Kh, p.Kw);
  }
}

// One level of merge (the transpose of split_planes) onto planes [p0, p0 + count).
template <typename scalar_t, typename acc_t, int Bytes>
WAVEFUSE_INLINE void merge_planes(const PlanesPlan<acc_t>& p, PlanesWork<acc_t, Bytes>& w,
                                  const std::array<std::array<View4<const scalar_t>, 2>, 2>& in,
                                  const View4<scalar_t>& out, int64_t C, int64_t p0,
                                  int64_t count) {
  for (int ab = 0; ab < 4; ++ab) {
    planes_in<scalar_t, acc_t, Bytes>(reinterpret_cast<acc_t*>(w.B(ab)), in[ab / 2][ab % 2], C,
                                      p0, count, p.Kh, p.Kw);
  }
  merge_core(p, w, w.X());
  planes_out<scalar_t, acc_t, Bytes>(reinterpret_cast<const acc_t*>(w.X()), out, C, p0, count,
                                     p.H, p.W);
}

#endif  // __GNUC__

}  // namespace
}  // namespace wavefuse
