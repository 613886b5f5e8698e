#include "runtime/cpu/depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kiln::cpu {
namespace {

// One thread's time per multiply-add, for ThreadPool::threads_for (measured: mobilenet_v2's
// depthwise convs on the build machine).
constexpr double kNsPerMac = 0.3;

// Eight floats (GCC/Clang vector extensions): one AVX register where the routine is built
// for x86-64-v3 (AVX2, FMA; chosen at load time where the CPU has them), two SSE registers
// otherwise. Vector code rather than left to the auto-vectorizer.
using V8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));  // lane masks of V8 comparisons
#if defined(__x86_64__) && defined(__GNUC__)
#define KILN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KILN_VECTOR_CLONES
#endif

// Eight outputs, in order, to o[n] (n <= 8): the sums plus bias, clamped to [lo, hi]; a NaN
// fails both comparisons and stays, as maximum and minimum propagate it. (Vector casts
// reinterpret the lanes' bits.)
__attribute__((always_inline)) inline void store_outputs(const V8& sums, const V8& bias, const V8& lo, const V8& hi,
                                                         float* o, int64_t n) {
  V8 v = sums + bias;
  I8 below = v < lo, above = v > hi, bits = (I8)v;
  bits = (bits & ~below) | ((I8)lo & below);
  bits = (bits & ~above) | ((I8)hi & above);
  v = (V8)bits;
  if (n == 8) {
    std::memcpy(o, &v, sizeof v);
    return;
  }
  float last[8];
  std::memcpy(last, &v, sizeof v);
  std::copy(last, last + n, o);
}

// All outputs of a plane, as items of eight columns of a row, four items at a time: four
// independent chains of multiply-adds (one chain waits on each add's latency), each summing
// its taps in order as the reference does.
__attribute__((always_inline)) inline void plane_outputs(const Depthwise& g, const float* padded, int64_t row_len,
                                                         const int64_t* tap_at, const float* wc, float bias, float* out) {
  constexpr int kItems = 4;
  int64_t taps = g.kh * g.kw;
  V8 bv = V8{} + bias, lo = V8{} + g.lo, hi = V8{} + g.hi;
  int64_t y = 0, x = 0;  // the next item (no divisions: they would cost more than the taps)
  while (y < g.oh) {
    const float* from[kItems];
    float* to[kItems];
    int64_t n[kItems];
    for (int u = 0; u < kItems; ++u) {
      if (y == g.oh) {  // past the end: the previous item again, not stored
        from[u] = from[u - 1], to[u] = nullptr, n[u] = 0;
        continue;
      }
      from[u] = padded + y * g.sh * row_len + x;
      to[u] = out + y * g.ow + x;
      n[u] = std::min<int64_t>(8, g.ow - x);
      x += 8;
      if (x >= g.ow) x = 0, ++y;
    }
    // Four named accumulators: an array of them would live in memory at -O2.
    V8 acc0{}, acc1{}, acc2{}, acc3{}, v0, v1, v2, v3;
    for (int64_t t = 0; t < taps; ++t) {
      float w = wc[t];
      int64_t at = tap_at[t];
      std::memcpy(&v0, from[0] + at, sizeof v0);
      std::memcpy(&v1, from[1] + at, sizeof v1);
      std::memcpy(&v2, from[2] + at, sizeof v2);
      std::memcpy(&v3, from[3] + at, sizeof v3);
      acc0 += w * v0;
      acc1 += w * v1;
      acc2 += w * v2;
      acc3 += w * v3;
    }
    const V8* acc[kItems] = {&acc0, &acc1, &acc2, &acc3};
    for (int u = 0; u < kItems && to[u]; ++u) store_outputs(*acc[u], bv, lo, hi, to[u], n[u]);
  }
}

// Stride 1: every output position of the plane as a position of the padded grid (y *
// row_len + x, x < row_len), so that a tap is one offset for all of them and 32 consecutive
// positions are four full vectors whatever the row width (rows of 3 to 10 columns would
// fill a third to two thirds of the eight-column items above); the positions of the
// padding columns are computed into `grid` and dropped when its rows are copied out.
__attribute__((always_inline)) inline void plane_outputs_flat(const Depthwise& g, const float* padded, int64_t row_len,
                                                              const int64_t* tap_at, const float* wc, float bias,
                                                              float* grid, float* out) {
  int64_t taps = g.kh * g.kw, end = g.oh * row_len;
  V8 bv = V8{} + bias, lo = V8{} + g.lo, hi = V8{} + g.hi;
  for (int64_t q = 0; q < end; q += 32) {
    const float* from = padded + q;
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
    store_outputs(acc0, bv, lo, hi, grid + q, 8);
    store_outputs(acc1, bv, lo, hi, grid + q + 8, 8);
    store_outputs(acc2, bv, lo, hi, grid + q + 16, 8);
    store_outputs(acc3, bv, lo, hi, grid + q + 24, 8);
  }
  for (int64_t y = 0; y < g.oh; ++y)
    std::memcpy(out + y * g.ow, grid + y * row_len, static_cast<size_t>(g.ow) * sizeof(float));
}

// Planes [p0, p1). Each plane is first copied into a zero-padded plane holding exactly the
// rows and columns its windows read, so that no tap needs a bounds test, with each row's
// columns split by their remainder mod the column stride (stride 2: even columns, then odd
// ones), so that every tap reads consecutive columns for consecutive outputs. The outputs
// are then computed eight columns of a row at a time in registers over all taps: the feature
// maps of small nets have rows of 5 to 40 columns, where loops per row and tap are mostly
// overhead.
KILN_VECTOR_CLONES void planes(const Depthwise& g, const float* in, const float* weight, const float* bias,
                               float* out, int64_t p0, int64_t p1) {
  int64_t rows = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1, cols = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  int64_t phase = (cols + g.sw - 1) / g.sw, row_len = phase * g.sw;  // a padded row: sw phases of `phase` columns
  int64_t taps = g.kh * g.kw;
  // Slack past the last row: a row of outputs reads up to 7 columns beyond its end; the
  // stride-1 grid's last 32 positions up to 31 plus a row past the plane.
  bool flat = g.sw == 1 && g.sh == 1;
  std::vector<float> padded(static_cast<size_t>(rows * row_len + (flat ? row_len + 32 : 8)), 0.0f);
  std::vector<float> grid(flat ? static_cast<size_t>((g.oh * row_len + 31) / 32 * 32) : 0);
  std::vector<int64_t> tap_at(static_cast<size_t>(taps));  // a tap's offset in the padded plane
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t cj = j * g.dw;
      tap_at[i * g.kw + j] = i * g.dh * row_len + (cj % g.sw) * phase + cj / g.sw;
    }
  // Only the interior of the padded plane (rows ph .. ph + h, columns a .. b) differs from
  // plane to plane: the zero border is written once. Per column phase q, its interior
  // columns m * sw + q are m in [m0[q], m1[q]).
  int64_t a = std::min(g.pw, cols), b = std::min(g.pw + g.w, cols), y0 = std::min(g.ph, rows),
          y1 = std::min(g.ph + g.h, rows);
  std::vector<int64_t> m0(static_cast<size_t>(g.sw)), m1(static_cast<size_t>(g.sw));
  for (int64_t q = 0; q < g.sw; ++q) {
    m0[q] = std::max<int64_t>(a - q + g.sw - 1, 0) / g.sw;
    m1[q] = std::max<int64_t>(b - q + g.sw - 1, 0) / g.sw;
  }
  for (int64_t p = p0; p < p1; ++p) {
    int64_t c = p % g.channels;
    const float* src = in + p * g.h * g.w;
    const float* wc = weight + c * taps;
    for (int64_t py = y0; py < y1 && a < b; ++py) {
      float* row = padded.data() + py * row_len;
      const float* from = src + (py - g.ph) * g.w - g.pw;  // from[pc]: padded column pc (pc >= a >= pw)
      if (g.sw == 1) {
        int64_t k = a;
        for (; k + 8 <= b; k += 8) std::memcpy(row + k, from + k, 8 * sizeof(float));
        for (; k < b; ++k) row[k] = from[k];
        continue;
      }
      for (int64_t q = 0; q < g.sw; ++q)
        for (int64_t m = m0[q]; m < m1[q]; ++m) row[q * phase + m] = from[m * g.sw + q];
    }
    if (flat)
      plane_outputs_flat(g, padded.data(), row_len, tap_at.data(), wc, bias ? bias[c] : 0.0f, grid.data(),
                         out + p * g.oh * g.ow);
    else
      plane_outputs(g, padded.data(), row_len, tap_at.data(), wc, bias ? bias[c] : 0.0f, out + p * g.oh * g.ow);
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
