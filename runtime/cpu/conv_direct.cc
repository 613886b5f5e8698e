#include "runtime/cpu/conv_direct.h"

#include <algorithm>
#include <cstring>

#include "runtime/cpu/vec8.h"

namespace kiln::cpu {
namespace {

// One thread's time per multiply-add, for ThreadPool::threads_for (measured: resnet's and
// unet's direct convs on the build machine).
constexpr double kNsPerMac = 0.02;

// Output channels per register tile (the packed weight's block), for every variant.
constexpr int kRows = 8;

bool has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

// One register tile: kRows output channels times kVecs vectors of consecutive padded-grid
// positions starting at `at`, summed over every tap, written to tile [kRows][kVecs * lanes].
// Taps are (c, i, j) in the weight's k order; `taps` holds each (i, j)'s offset.
template <typename V, int kVecs>
__attribute__((always_inline)) inline void register_tile(const float* at, int64_t plane, int64_t channels,
                                                         const int64_t* taps, int64_t ntaps, const float* wp,
                                                         float* tile) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  V acc[kRows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) acc[r][v] = V{};
  for (int64_t c = 0; c < channels; ++c, at += plane) {
    for (int64_t t = 0; t < ntaps; ++t, wp += kRows) {
      const float* p = at + taps[t];
      V x[kVecs];
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) std::memcpy(&x[v], p + v * kLanes, sizeof(V));
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r) {
        float wr = wp[r];
#pragma GCC unroll 4
        for (int v = 0; v < kVecs; ++v) acc[r][v] += wr * x[v];
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) std::memcpy(tile + (r * kVecs + v) * kLanes, &acc[r][v], sizeof(V));
}

struct Plan {
  int64_t hp, wp, plane, positions, tiles, blocks;  // hp, wp: a phase plane's rows and columns
  std::vector<int64_t> taps;
};

// Tiles [t0, t1) of the task space [batch][weight block][position tile].
template <typename V, int kVecs>
__attribute__((always_inline)) inline void tiles(const DirectConv& g, const Plan& p, const float* padded,
                                                 const float* packed, float* out, int64_t t0, int64_t t1) {
  constexpr int64_t kTile = kVecs * (sizeof(V) / sizeof(float));
  alignas(64) float tile[kRows * kTile];
  int64_t k = g.k(), oplane = g.oh * g.ow, ntaps = g.kh * g.kw;
  for (int64_t t = t0; t < t1; ++t) {
    int64_t n = t / (p.blocks * p.tiles), blk = t / p.tiles % p.blocks, q0 = t % p.tiles * kTile;
    register_tile<V, kVecs>(padded + n * g.channels * p.plane + q0, p.plane, g.channels, p.taps.data(), ntaps,
                            packed + blk * k * kRows, tile);
    int64_t q1 = std::min(p.positions, q0 + kTile), rows = std::min<int64_t>(kRows, g.m - blk * kRows);
    // Grid positions q0 .. q1 as runs within one output row; the padded columns are dropped.
    for (int64_t q = q0; q < q1;) {
      int64_t oy = q / p.wp, ox = q % p.wp, run = std::min(q1 - q, p.wp - ox);
      if (ox < g.ow) {
        int64_t len = std::min(run, g.ow - ox);
        float* dst = out + (n * g.m + blk * kRows) * oplane + oy * g.ow + ox;
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(dst + r * oplane, tile + r * kTile + (q - q0), static_cast<size_t>(len) * sizeof(float));
      }
      q += run;
    }
  }
}

__attribute__((target("avx512f,avx2,fma"))) void tiles_avx512(const DirectConv& g, const Plan& p,
                                                                 const float* padded, const float* packed, float* out,
                                                                 int64_t t0, int64_t t1) {
  tiles<V16, 3>(g, p, padded, packed, out, t0, t1);  // 24 accumulators of 32 registers
}

__attribute__((target("avx2,fma"))) void tiles_avx2(const DirectConv& g, const Plan& p, const float* padded,
                                                    const float* packed, float* out, int64_t t0, int64_t t1) {
  tiles<V8, 1>(g, p, padded, packed, out, t0, t1);  // 8 accumulators of 16 registers
}

void tiles_any(const DirectConv& g, const Plan& p, const float* padded, const float* packed, float* out, int64_t t0,
               int64_t t1) {
  if (has_avx512()) tiles_avx512(g, p, padded, packed, out, t0, t1);
  else tiles_avx2(g, p, padded, packed, out, t0, t1);
}

int64_t tile_positions() { return has_avx512() ? 48 : 8; }

}  // namespace

ConvStrategy choose_conv_strategy(int64_t max_stride, int rank, bool f32, int64_t out_plane) {
  if (max_stride >= 1 && max_stride <= kMaxDirectStride && f32 && (rank == 1 || rank == 2) && out_plane >= kMinDirectPlane && has_avx2_fma())
    return ConvStrategy::Direct;
  return ConvStrategy::Im2colBlas;
}

const char* conv_strategy_name(ConvStrategy s) {
  return s == ConvStrategy::Direct ? "direct conv" : "window copy + BLAS";
}

int64_t packed_conv_weight_floats(const DirectConv& g) { return (g.m + kRows - 1) / kRows * kRows * g.k(); }

void pack_conv_weight(const DirectConv& g, const float* weight, int64_t ld, float* packed) {
  int64_t k = g.k(), blocks = (g.m + kRows - 1) / kRows;
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int r = 0; r < kRows; ++r) {
        int64_t m = b * kRows + r;
        packed[(b * k + kk) * kRows + r] = m < g.m ? weight[m * ld + kk] : 0.0f;
      }
}

void direct_conv(const DirectConv& g, const float* in, const float* packed, float* out, std::vector<float>& scratch,
                 ThreadPool& pool) {
  if (g.batch == 0 || g.m == 0 || g.oh == 0 || g.ow == 0) return;
  Plan p;
  p.hp = g.oh + (g.kh - 1) * g.dh / g.sh;
  p.wp = g.ow + (g.kw - 1) * g.dw / g.sw;
  int64_t tile = tile_positions(), phase = p.hp * p.wp, phases = g.sh * g.sw;
  // Slack after a channel's phase planes: the last tile reads up to a tile and a row past
  // the grid, into the next channel or the zeros after the last (dropped positions only).
  p.plane = phases * phase + tile + p.wp;
  p.positions = g.oh * p.wp;
  p.tiles = (p.positions + tile - 1) / tile;
  p.blocks = (g.m + kRows - 1) / kRows;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t y = i * g.dh, x = j * g.dw;
      p.taps.push_back((y % g.sh * g.sw + x % g.sw) * phase + y / g.sh * p.wp + x / g.sw);
    }
  int64_t planes = g.batch * g.channels;
  scratch.assign(static_cast<size_t>(planes * p.plane), 0.0f);
  // Padded row py (input row py - ph) and column px (input column px - pw), both inside the
  // input and the phase planes.
  int64_t y0 = std::clamp<int64_t>(g.ph, 0, g.sh * p.hp), y1 = std::clamp<int64_t>(g.ph + g.h, 0, g.sh * p.hp);
  int64_t x0 = std::clamp<int64_t>(g.pw, 0, g.sw * p.wp), x1 = std::clamp<int64_t>(g.pw + g.w, 0, g.sw * p.wp);
  for (int64_t pl = 0; pl < planes && x0 < x1; ++pl)
    for (int64_t py = y0; py < y1; ++py) {
      const float* src = in + (pl * g.h + py - g.ph) * g.w - g.pw;  // src[px]
      float* dst = scratch.data() + pl * p.plane + py % g.sh * g.sw * phase + py / g.sh * p.wp;
      if (g.sw == 1) {
        std::memcpy(dst + x0, src + x0, static_cast<size_t>(x1 - x0) * sizeof(float));
        continue;
      }
      for (int64_t q = 0; q < g.sw; ++q) {  // columns m * sw + q in [x0, x1): no division per element
        float* d = dst + q * phase;
        for (int64_t m = std::max<int64_t>(x0 - q + g.sw - 1, 0) / g.sw, m1 = std::max<int64_t>(x1 - q + g.sw - 1, 0) / g.sw;
             m < m1; ++m)
          d[m] = src[m * g.sw + q];
      }
    }
  int64_t tasks = g.batch * p.blocks * p.tiles;
  double macs = static_cast<double>(g.batch * g.m * g.oh * g.ow * g.k());
  pool.parallel_ranges(tasks, macs * kNsPerMac,
                       [&](int64_t lo, int64_t hi) { tiles_any(g, p, scratch.data(), packed, out, lo, hi); });
}

}  // namespace kiln::cpu
