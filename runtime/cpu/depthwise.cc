#include "runtime/cpu/depthwise.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "runtime/cpu/vec8.h"

namespace kiln::cpu {
namespace {

// One thread's time per multiply-add, for ThreadPool::threads_for, either method (measured on
// mobilenet_v2's depthwise convs on the build machine before the phase planes; they now take 0.1 to 0.5 ns
// a multiply-add, the fixed cost of a plane weighing most on small ones). Kept: a fit of
// the new times (35 ns a plane, 0.3 an input element, 0.05 a multiply-add), which splits
// fewer of them, made mobilenet_v2 on 2 threads slower (207 -> 220 us, 9 rounds).
constexpr double kNsPerMac = 0.3;
// The largest output plane the interleaved method takes (positions). Measured (kiln_bench_cpu
// depthwise, 3x3, one thread, the build machine and the GPU machine's Xeon alike): it takes
// 0.37x the planes method's time at 2x2 outputs and 0.6-0.7x at 5x5, ties at 10x10 from a
// stride-2 20x20, and takes 1.1-1.3x at 7x7 and 10x10 (stride 1), 1.5-2.7x above: its
// transposes in and out cost about what the planes method's per-plane edge work does on a
// 49-position plane.
constexpr int64_t kMaxInterleavedOutputs = 32;
// With AVX-512 (sixteen planes a block, interleaved16), measured on the build machine (one
// thread, CPU time, kiln_bench_cpu depthwise, two runs): 0.64-0.72x the planes method's time
// at 10x10 outputs (stride 1), 0.54-0.63x at 10x10 from a stride-2 20x20, 0.80-0.84x at
// 14x14, 0.98-1.23x at 20x20, 1.03-1.11x at 28x28.
constexpr int64_t kMaxInterleaved16Outputs = 256;

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
#pragma GCC unroll 9
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
    store_clamped(acc0, bv, lo, hi, grid + q);
    store_clamped(acc1, bv, lo, hi, grid + q + 8);
    store_clamped(acc2, bv, lo, hi, grid + q + 16);
    store_clamped(acc3, bv, lo, hi, grid + q + 24);
  }
  for (; q < end; q += 8) {
    V8 acc{}, v;
#pragma GCC unroll 9
    for (int64_t t = 0; t < taps; ++t) {
      std::memcpy(&v, phases + q + tap_at[t], sizeof v);
      acc += wc[t] * v;
    }
    store_clamped(acc, bv, lo, hi, grid + q);
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

// r[j] becomes the vector of the eight r[i][j] (an 8x8 transpose in registers: pairs of
// lanes, then pairs of pairs, then halves). Spelled out: as loops over arrays, GCC keeps the
// intermediate vectors on the stack.
__attribute__((always_inline)) inline void transpose8(V8* r) {
#define KILN_LO2(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 4, 12, 5, 13)
#define KILN_HI2(a, b) __builtin_shufflevector(a, b, 2, 10, 3, 11, 6, 14, 7, 15)
#define KILN_LO4(a, b) __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13)
#define KILN_HI4(a, b) __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15)
#define KILN_LO8(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 8, 9, 10, 11)
#define KILN_HI8(a, b) __builtin_shufflevector(a, b, 4, 5, 6, 7, 12, 13, 14, 15)
  const V8 t0 = KILN_LO2(r[0], r[1]), t1 = KILN_HI2(r[0], r[1]), t2 = KILN_LO2(r[2], r[3]), t3 = KILN_HI2(r[2], r[3]);
  const V8 t4 = KILN_LO2(r[4], r[5]), t5 = KILN_HI2(r[4], r[5]), t6 = KILN_LO2(r[6], r[7]), t7 = KILN_HI2(r[6], r[7]);
  const V8 u0 = KILN_LO4(t0, t2), u1 = KILN_HI4(t0, t2), u2 = KILN_LO4(t1, t3), u3 = KILN_HI4(t1, t3);
  const V8 u4 = KILN_LO4(t4, t6), u5 = KILN_HI4(t4, t6), u6 = KILN_LO4(t5, t7), u7 = KILN_HI4(t5, t7);
  r[0] = KILN_LO8(u0, u4), r[4] = KILN_HI8(u0, u4), r[1] = KILN_LO8(u1, u5), r[5] = KILN_HI8(u1, u5);
  r[2] = KILN_LO8(u2, u6), r[6] = KILN_HI8(u2, u6), r[3] = KILN_LO8(u3, u7), r[7] = KILN_HI8(u3, u7);
#undef KILN_LO2
#undef KILN_HI2
#undef KILN_LO4
#undef KILN_HI4
#undef KILN_LO8
#undef KILN_HI8
}

// One stage of transpose16: rows i and i + B (i & B == 0) swap their off-diagonal blocks of
// B lanes (lane k of the pair's first row, then of its second, for K = 0..15).
template <int B, size_t... K>
__attribute__((always_inline)) inline void swap_blocks(V16* r, std::index_sequence<K...>) {
#pragma GCC unroll 16  // unrolled, the rows stay in registers (a loop kept them on the stack)
  for (int i = 0; i < 16; ++i)
    if ((i & B) == 0) {
      const V16 a = r[i], c = r[i + B];
      r[i] = __builtin_shufflevector(a, c, ((K & B) == 0 ? K : 16 + K - B)...);
      r[i + B] = __builtin_shufflevector(a, c, ((K & B) == 0 ? K + B : 16 + K)...);
    }
}

// r[j] becomes the vector of the sixteen r[i][j]: the off-diagonal blocks of 1, 2, 4 and 8
// lanes swapped between rows i and i + b (one two-source permute a row a stage).
__attribute__((always_inline)) inline void transpose16(V16* r) {
  swap_blocks<1>(r, std::make_index_sequence<16>{});
  swap_blocks<2>(r, std::make_index_sequence<16>{});
  swap_blocks<4>(r, std::make_index_sequence<16>{});
  swap_blocks<8>(r, std::make_index_sequence<16>{});
}

__attribute__((always_inline)) inline void transpose(V8* r) { transpose8(r); }
__attribute__((always_inline)) inline void transpose(V16* r) { transpose16(r); }

// The L floats at p times x, added to acc.
template <typename V>
__attribute__((always_inline)) inline void fma_at(V& acc, const V& x, const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  acc += x * v;
}

// (acc + bias) clamped to [lo, hi] into o (as store_clamped, any width).
template <typename V>
__attribute__((always_inline)) inline void store_clamped_v(V v, const V& bias, const V& lo, const V& hi, float* o) {
  v += bias;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  std::memcpy(o, &v, sizeof v);
}

// One block's outputs from its interleaved tile (position q at tile[L q..L q + L)) into obuf
// (output position o at obuf[L o..L o + L)): the taps in order as the reference sums them,
// then the bias and the clamp. The output positions are taken in order, C at a time (C
// independent chains of multiply-adds: 8 with AVX-512's 32 registers, 4 with AVX2's 16),
// whatever the rows' width, from where their windows start (start[o], in floats; `start` and
// obuf hold whole groups of C, the last group's extra entries repeating the last position).
// k3x3: 3x3 taps at dilation 1, unrolled: tap (i, j) at a constant offset from the window's
// start plus i rows, the weights in registers (stores to obuf could alias w: GCC reloaded
// them for every output). Else the taps' offsets from tap_at.
template <typename V, bool k3x3>
__attribute__((always_inline)) inline void block_outputs(const Depthwise& g, const float* tile, int64_t tw,
                                                         const int64_t* start, const int64_t* tap_at, const float* w,
                                                         const V& bias, float* obuf) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  constexpr int C = L == 16 ? 8 : 4;
  const int64_t taps = g.kh * g.kw, n = g.oh * g.ow, row = L * tw;
  const V lo = V{} + g.lo, hi = V{} + g.hi;
  V wk[k3x3 ? 9 : 1];
  if constexpr (k3x3)
    for (int t = 0; t < 9; ++t) std::memcpy(&wk[t], w + L * t, sizeof(V));
  for (int64_t q = 0; q < n; q += C) {
    const float* at[C];
    V acc[C];
#pragma GCC unroll 8
    for (int k = 0; k < C; ++k) at[k] = tile + start[q + k], acc[k] = V{};
    if constexpr (k3x3) {
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i)
#pragma GCC unroll 3
        for (int j = 0; j < 3; ++j)
#pragma GCC unroll 8
          for (int k = 0; k < C; ++k) fma_at(acc[k], wk[3 * i + j], at[k] + i * row + j * L);
    } else {
      for (int64_t t = 0; t < taps; ++t) {
        V wt;
        std::memcpy(&wt, w + L * t, sizeof wt);
#pragma GCC unroll 8
        for (int k = 0; k < C; ++k) fma_at(acc[k], wt, at[k] + tap_at[t]);
      }
    }
#pragma GCC unroll 8
    for (int k = 0; k < C; ++k) store_clamped_v(acc[k], bias, lo, hi, obuf + L * (q + k));
  }
}

// The sixteen-plane method's last positions, fewer than sixteen: by AVX-512 masked loads and
// stores, which touch no memory past a plane's end, and one transpose (element by element,
// they cost a block what its transposes do, on every 3x3 and 5x5 map). The eight-plane
// method, built for CPUs without AVX-512 too, keeps its element loop.
// Positions [i, i + n) of the planes at src[0..16) into r[0..n) (r[j]: position i + j).
__attribute__((target("avx512f,avx2,fma"), noinline)) void last_positions_in16(const float* const* src, int64_t i,
                                                                               int64_t n, V16* r) {
  const auto mask = static_cast<__mmask16>((1u << n) - 1);
  for (int l = 0; l < 16; ++l) r[l] = reinterpret_cast<V16>(_mm512_maskz_loadu_ps(mask, src[l] + i));
  transpose16(r);
}
// Output positions [i, i + n) of `lanes` planes from obuf (position q at obuf[16 q..16 q + 16),
// whole vectors up to i + 16) into the planes at dst (plane l at dst + l * ohw).
__attribute__((target("avx512f,avx2,fma"), noinline)) void last_positions_out16(const float* obuf, float* dst,
                                                                                int64_t ohw, int64_t i, int64_t n,
                                                                                int64_t lanes) {
  const auto mask = static_cast<__mmask16>((1u << n) - 1);
  V16 r[16];
  std::memcpy(r, obuf + 16 * i, sizeof r);
  transpose16(r);
  for (int64_t l = 0; l < lanes; ++l) _mm512_mask_storeu_ps(dst + l * ohw + i, mask, reinterpret_cast<__m512>(r[l]));
}

// Blocks [b0, b1) of L planes (the last may hold fewer: its missing lanes repeat its last
// plane and are not written). Each block's input planes are interleaved into a zero-padded
// tile (padded row py, column px at position py * tw + px), its outputs computed a vector of
// L planes at a time, then de-interleaved into the output planes; whole rows of L elements
// go through an LxL transpose, the rest one element at a time.
template <typename V>
__attribute__((always_inline)) inline void interleaved_blocks(const Depthwise& g, const float* in, const float* weight,
                                                              const float* bias, float* out, int64_t b0, int64_t b1) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  const int64_t hw = g.h * g.w, ohw = g.oh * g.ow, taps = g.kh * g.kw;
  const int64_t th = std::max(g.h + g.ph, (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1);
  const int64_t tw = std::max(g.w + g.pw, (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1);
  constexpr int64_t C = L == 16 ? 8 : 4;         // block_outputs' group of outputs
  const int64_t groups = (ohw + C - 1) / C * C;  // obuf: whole vectors of L positions (L >= C)
  std::vector<float> tile(static_cast<size_t>(L * th * tw), 0.0f),
      obuf(static_cast<size_t>(L * ((ohw + L - 1) / L * L)));
  std::vector<float> w(static_cast<size_t>(L * taps));     // tap t's weight for lane l at w[L t + l]
  std::vector<int64_t> tap_at(static_cast<size_t>(taps));  // a tap's offset in the tile, in floats
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) tap_at[i * g.kw + j] = L * (i * g.dh * tw + j * g.dw);
  std::vector<int64_t> start(static_cast<size_t>(groups));  // where output o's window starts in the tile
  for (int64_t o = 0; o < groups; ++o) {
    const int64_t last = std::min(o, ohw - 1);
    start[o] = L * (last / g.ow * g.sh * tw + last % g.ow * g.sw);
  }
  const bool k3x3 = g.kh == 3 && g.kw == 3 && g.dh == 1 && g.dw == 1;
  float* const t0 = tile.data() + L * (g.ph * tw + g.pw);  // input position (0, 0)
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t p = L * blk, lanes = std::min<int64_t>(L, g.planes - p);
    const float* src[L];
    V bv{};
    for (int64_t l = 0; l < L; ++l) {
      const int64_t plane = p + std::min(l, lanes - 1), c = plane % g.channels;
      src[l] = in + plane * hw;
      for (int64_t t = 0; t < taps; ++t) w[static_cast<size_t>(L * t + l)] = weight[c * taps + t];
      bv[l] = bias ? bias[c] : 0.0f;
    }
    int64_t i = 0, y = 0, x = 0;  // input element i is at row y, column x
    auto put = [&](const V& v) {
      std::memcpy(t0 + L * (y * tw + x), &v, sizeof v);
      if (++x == g.w) x = 0, ++y;
    };
    for (; i + L <= hw; i += L) {
      V r[L];
      for (int l = 0; l < L; ++l) std::memcpy(&r[l], src[l] + i, sizeof r[l]);
      transpose(r);
      for (int j = 0; j < L; ++j) put(r[j]);
    }
    if constexpr (L == 16)
      if (i < hw) {
        V r[L];
        last_positions_in16(src, i, hw - i, r);
        for (int j = 0; j < hw - i; ++j) put(r[j]);
        i = hw;
      }
    for (; i < hw; ++i) {
      V v;
      for (int l = 0; l < L; ++l) v[l] = src[l][i];
      put(v);
    }
    if (k3x3) block_outputs<V, true>(g, tile.data(), tw, start.data(), tap_at.data(), w.data(), bv, obuf.data());
    else block_outputs<V, false>(g, tile.data(), tw, start.data(), tap_at.data(), w.data(), bv, obuf.data());
    float* dst = out + p * ohw;
    for (i = 0; i + L <= ohw; i += L) {
      V r[L];
      std::memcpy(r, obuf.data() + L * i, sizeof r);
      transpose(r);
      for (int64_t l = 0; l < lanes; ++l) std::memcpy(dst + l * ohw + i, &r[l], sizeof r[l]);
    }
    if constexpr (L == 16)
      if (i < ohw) {
        last_positions_out16(obuf.data(), dst, ohw, i, ohw - i, lanes);
        i = ohw;
      }
    for (; i < ohw; ++i)
      for (int64_t l = 0; l < lanes; ++l) dst[l * ohw + i] = obuf[static_cast<size_t>(L * i + l)];
  }
}

// Eight planes a block (AVX2 where the CPU has it, else SSE pairs).
KILN_VECTOR_CLONES void interleaved(const Depthwise& g, const float* in, const float* weight, const float* bias,
                                    float* out, int64_t b0, int64_t b1) {
  interleaved_blocks<V8>(g, in, weight, bias, out, b0, b1);
}

// Sixteen planes a block, for CPUs with AVX-512: half the multiply-adds and transposes of
// 16 by 16 (four permutes a row instead of three for eight by eight).
__attribute__((target("avx512f,avx2,fma"))) void interleaved16(const Depthwise& g, const float* in, const float* weight,
                                                               const float* bias, float* out, int64_t b0, int64_t b1) {
  interleaved_blocks<V16>(g, in, weight, bias, out, b0, b1);
}

}  // namespace

DepthwiseMethod choose_depthwise(const Depthwise& g) {
  const int64_t most = has_avx512() ? kMaxInterleaved16Outputs : kMaxInterleavedOutputs;
  return g.oh * g.ow <= most ? DepthwiseMethod::Interleaved : DepthwiseMethod::Planes;
}

void depthwise_conv(const Depthwise& g, const float* in, const float* weight, const float* bias, float* out,
                    ThreadPool& pool, DepthwiseMethod method) {
  if (g.planes == 0 || g.oh == 0 || g.ow == 0) return;
  double macs = static_cast<double>(g.planes * g.oh * g.ow * g.kh * g.kw);
  if (method == DepthwiseMethod::Auto) method = choose_depthwise(g);
  if (method == DepthwiseMethod::Interleaved || method == DepthwiseMethod::Interleaved8) {
    if (method == DepthwiseMethod::Interleaved && has_avx512()) {
      pool.parallel_ranges((g.planes + 15) / 16, macs * kNsPerMac,
                           [&](int64_t lo, int64_t hi) { interleaved16(g, in, weight, bias, out, lo, hi); });
    } else {
      pool.parallel_ranges((g.planes + 7) / 8, macs * kNsPerMac,
                           [&](int64_t lo, int64_t hi) { interleaved(g, in, weight, bias, out, lo, hi); });
    }
    return;
  }
  pool.parallel_ranges(g.planes, macs * kNsPerMac,
                       [&](int64_t lo, int64_t hi) { planes(g, in, weight, bias, out, lo, hi); });
}

}  // namespace kiln::cpu
