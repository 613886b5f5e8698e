#include "runtime/cpu/depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kiln::cpu {
namespace {

// One thread's time per multiply-add, for ThreadPool::threads_for (measured on mobilenet_v2's
// depthwise convs on the build machine before the phase planes; they now take 0.1 to 0.5 ns
// a multiply-add, the fixed cost of a plane weighing most on small ones). Kept: a fit of
// the new times (35 ns a plane, 0.3 an input element, 0.05 a multiply-add), which splits
// fewer of them, made mobilenet_v2 on 2 threads slower (207 -> 220 us, 9 rounds).
constexpr double kNsPerMac = 0.3;

// Eight floats (GCC/Clang vector extensions): one AVX register where the routine is built
// for x86-64-v3 (AVX2, FMA; chosen at load time where the CPU has them), two SSE registers
// otherwise. Vector code rather than left to the auto-vectorizer.
using V8 = float __attribute__((vector_size(32)));
using V4 = float __attribute__((vector_size(16)));
using I8 = int32_t __attribute__((vector_size(32)));  // lane masks of V8 comparisons
#if defined(__x86_64__) && defined(__GNUC__)
#define KILN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KILN_VECTOR_CLONES
#endif

// Eight outputs, in order, to o[0..8): the sums plus bias, clamped to [lo, hi]; a NaN fails
// both comparisons and stays, as maximum and minimum propagate it. (Vector casts
// reinterpret the lanes' bits.)
__attribute__((always_inline)) inline void store_outputs(const V8& sums, const V8& bias, const V8& lo, const V8& hi,
                                                         float* o) {
  V8 v = sums + bias;
  I8 below = v < lo, above = v > hi, bits = (I8)v;
  bits = (bits & ~below) | ((I8)lo & below);
  bits = (bits & ~above) | ((I8)hi & above);
  v = (V8)bits;
  std::memcpy(o, &v, sizeof v);
}

// n floats (a feature map's row: a few to tens) by fixed-size copies the compiler inlines,
// the last one overlapping the one before; a libc memcpy call per row (a size known only
// at run time) cost about as much as the row's taps.
__attribute__((always_inline)) inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  if (n >= 8) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) std::memcpy(dst + k, src + k, 8 * sizeof(float));
    if (k < n) std::memcpy(dst + n - 8, src + n - 8, 8 * sizeof(float));
  } else if (n >= 4) {
    std::memcpy(dst, src, 4 * sizeof(float));
    std::memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k];
  }
}

// Column stride 2: a padded row's columns [a, b) (from[pc] is column pc) split into its
// even columns, even[m] = from[2m] for m in [m0[0], m1[0]), and its odd ones, odd[m] =
// from[2m + 1] for m in [m0[1], m1[1]). Sixteen (then eight) columns at a time by two
// loads and two shuffles where all lie inside [a, b), one at a time at the edges.
__attribute__((always_inline)) inline void split_row2(float* __restrict even, float* __restrict odd,
                                                      const float* __restrict from, int64_t a, int64_t b,
                                                      const int64_t* m0, const int64_t* m1) {
  const int64_t v0 = (a + 1) / 2;  // the first m with 2m >= a
  int64_t m = v0;
  for (; 2 * m + 16 <= b; m += 8) {
    V8 x0, x1;
    std::memcpy(&x0, from + 2 * m, sizeof x0);
    std::memcpy(&x1, from + 2 * m + 8, sizeof x1);
    V8 e = __builtin_shufflevector(x0, x1, 0, 2, 4, 6, 8, 10, 12, 14);
    V8 o = __builtin_shufflevector(x0, x1, 1, 3, 5, 7, 9, 11, 13, 15);
    std::memcpy(even + m, &e, sizeof e);
    std::memcpy(odd + m, &o, sizeof o);
  }
  for (; 2 * m + 8 <= b; m += 4) {
    V4 x0, x1;
    std::memcpy(&x0, from + 2 * m, sizeof x0);
    std::memcpy(&x1, from + 2 * m + 4, sizeof x1);
    V4 e = __builtin_shufflevector(x0, x1, 0, 2, 4, 6);
    V4 o = __builtin_shufflevector(x0, x1, 1, 3, 5, 7);
    std::memcpy(even + m, &e, sizeof e);
    std::memcpy(odd + m, &o, sizeof o);
  }
  for (int q = 0; q < 2; ++q) {  // the edges: [m0, v0) and [m, m1) of each phase
    float* to = q == 0 ? even : odd;
    for (int64_t k = m0[q]; k < std::min(v0, m1[q]); ++k) to[k] = from[2 * k + q];
    for (int64_t k = std::max(m, m0[q]); k < m1[q]; ++k) to[k] = from[2 * k + q];
  }
}

// Every output position of a plane as a position of its phase planes' grid (y * wp + x,
// x < wp), so that a tap is one offset for all of them and 32 consecutive positions are four
// full vectors whatever the row width (rows of 3 to 10 columns would fill a third to two
// thirds of eight-column vectors); the positions x >= ow are computed into `grid` and
// dropped when its rows are copied out. Four independent chains of multiply-adds (one chain
// waits on each add's latency), each summing its taps in order as the reference does; the
// last positions eight at a time. kTaps: the taps where known when compiled (3x3: the taps
// unrolled, weights and offsets in registers), else 0.
template <int kTaps>
__attribute__((always_inline)) inline void plane_outputs(const Depthwise& g, const float* phases, int64_t wp,
                                                         const int64_t* tap_at, const float* wc, float bias,
                                                         float* grid, float* out) {
  const int64_t taps = kTaps > 0 ? kTaps : g.kh * g.kw, end = g.oh * wp;
  int64_t q = 0;
  V8 bv = V8{} + bias, lo = V8{} + g.lo, hi = V8{} + g.hi;
  for (; q + 32 <= end; q += 32) {
    const float* from = phases + q;
    V8 acc0{}, acc1{}, acc2{}, acc3{}, v0, v1, v2, v3;
    for (int64_t t = 0; t < taps; ++t) {
      float w = wc[t];
      const float* at = from + tap_at[t];
      std::memcpy(&v0, at, sizeof v0);
      std::memcpy(&v1, at + 8, sizeof v1);
      std::memcpy(&v2, at + 16, sizeof v2);
      std::memcpy(&v3, at + 24, sizeof v3);
      acc0 += w * v0;
      acc1 += w * v1;
      acc2 += w * v2;
      acc3 += w * v3;
    }
    store_outputs(acc0, bv, lo, hi, grid + q);
    store_outputs(acc1, bv, lo, hi, grid + q + 8);
    store_outputs(acc2, bv, lo, hi, grid + q + 16);
    store_outputs(acc3, bv, lo, hi, grid + q + 24);
  }
  for (; q < end; q += 8) {
    V8 acc{}, v;
    for (int64_t t = 0; t < taps; ++t) {
      std::memcpy(&v, phases + q + tap_at[t], sizeof v);
      acc += wc[t] * v;
    }
    store_outputs(acc, bv, lo, hi, grid + q);
  }
  for (int64_t y = 0; y < g.oh; ++y) copy_row(out + y * g.ow, grid + y * wp, g.ow);
}

// Planes [p0, p1). Each plane is first copied into zero-padded phase planes holding the rows
// and columns its windows read, so that no tap needs a bounds test: padded row py, column
// px lie in phase plane (py mod sh, px mod sw), at row py / sh and column px / sw, so that
// every tap reads consecutive columns for consecutive outputs and rows one phase row apart
// for consecutive output rows, at any stride (as conv_direct.cc lays its input out).
KILN_VECTOR_CLONES void planes(const Depthwise& g, const float* in, const float* weight, const float* bias,
                               float* out, int64_t p0, int64_t p1) {
  const int64_t hp = g.oh + (g.kh - 1) * g.dh / g.sh, wp = g.ow + (g.kw - 1) * g.dw / g.sw, phase = hp * wp;
  const int64_t taps = g.kh * g.kw;
  // Slack after the last phase plane: the last positions read up to 7 past the grid's end
  // and a tap's offset past a phase plane's start.
  std::vector<float> phases(static_cast<size_t>(g.sh * g.sw * phase + wp + 8), 0.0f);
  std::vector<float> grid(static_cast<size_t>((g.oh * wp + 7) / 8 * 8));
  std::vector<int64_t> tap_at(static_cast<size_t>(taps));  // a tap's offset in the phase planes
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t y = i * g.dh, x = j * g.dw;
      tap_at[i * g.kw + j] = (y % g.sh * g.sw + x % g.sw) * phase + y / g.sh * wp + x / g.sw;
    }
  // Only the interior (padded rows y0 .. y1, columns a .. b: the input) differs from plane
  // to plane: the zero border is written once. Per column phase q, its interior columns
  // m * sw + q are m in [m0[q], m1[q]).
  int64_t a = std::clamp<int64_t>(g.pw, 0, g.sw * wp), b = std::clamp<int64_t>(g.pw + g.w, 0, g.sw * wp);
  int64_t y0 = std::clamp<int64_t>(g.ph, 0, g.sh * hp), y1 = std::clamp<int64_t>(g.ph + g.h, 0, g.sh * hp);
  std::vector<int64_t> m0(static_cast<size_t>(g.sw)), m1(static_cast<size_t>(g.sw));
  for (int64_t q = 0; q < g.sw; ++q) {
    m0[q] = std::max<int64_t>(a - q + g.sw - 1, 0) / g.sw;
    m1[q] = std::max<int64_t>(b - q + g.sw - 1, 0) / g.sw;
  }
  for (int64_t p = p0; p < p1; ++p) {
    const float* src = in + p * g.h * g.w;
    for (int64_t py = y0; py < y1 && a < b; ++py) {
      float* row = phases.data() + py % g.sh * g.sw * phase + py / g.sh * wp;  // column phase q at row + q * phase
      const float* from = src + (py - g.ph) * g.w - g.pw;  // from[pc]: padded column pc (pc >= a >= pw)
      if (g.sw == 1) {
        copy_row(row + a, from + a, b - a);
        continue;
      }
      if (g.sw == 2) {
        split_row2(row, row + phase, from, a, b, m0.data(), m1.data());
        continue;
      }
      for (int64_t q = 0; q < g.sw; ++q)
        for (int64_t m = m0[q]; m < m1[q]; ++m) row[q * phase + m] = from[m * g.sw + q];
    }
    int64_t c = p % g.channels;
    const float* wc = weight + c * taps;
    float bc = bias ? bias[c] : 0.0f;
    if (taps == 9) plane_outputs<9>(g, phases.data(), wp, tap_at.data(), wc, bc, grid.data(), out + p * g.oh * g.ow);
    else plane_outputs<0>(g, phases.data(), wp, tap_at.data(), wc, bc, grid.data(), out + p * g.oh * g.ow);
  }
}

}  // namespace

void depthwise_conv(const Depthwise& g, const float* in, const float* weight, const float* bias, float* out,
                    ThreadPool& pool) {
  if (g.planes == 0 || g.oh == 0 || g.ow == 0) return;
  double macs = static_cast<double>(g.planes * g.oh * g.ow * g.kh * g.kw);
  pool.parallel_ranges(g.planes, macs * kNsPerMac,
                       [&](int64_t lo, int64_t hi) { planes(g, in, weight, bias, out, lo, hi); });
}

}  // namespace kiln::cpu
