#include "runtime/cpu/depthwise.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace kiln::cpu {
namespace {

// Below this many multiply-adds the conv runs on the calling thread.
constexpr int64_t kMinParallelWork = 1 << 16;

// Four floats: GCC/Clang vector extensions (an SSE register on any x86-64 build), so that
// the row loop is vector code rather than left to the auto-vectorizer.
using V4 = float __attribute__((vector_size(16)));

inline V4 load4(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, V4 v) { std::memcpy(p, &v, sizeof v); }

// Bias, clamp and store of `n` sums.
inline void finish(const Depthwise& g, const float* sums, float b, float* o, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    float v = sums[x] + b;
    if (g.clamp_lo && v < g.lo) v = g.lo;  // a NaN fails both tests and stays
    if (g.clamp_hi && v > g.hi) v = g.hi;
    o[x] = v;
  }
}

// Planes [p0, p1). Each plane is first copied into a zero-padded plane holding exactly the
// rows and columns its windows read, so that no tap needs a bounds test, with each row's
// columns split by their remainder mod the column stride (stride 2: even columns, then odd
// ones), so that every tap reads consecutive columns for consecutive outputs. An output row
// is then computed eight columns at a time in registers over all taps: the feature maps of
// small nets have rows of 5 to 40 columns, where loops per row and tap are mostly overhead.
void planes(const Depthwise& g, const float* in, const float* weight, const float* bias, float* out, int64_t p0,
            int64_t p1) {
  int64_t rows = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1, cols = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  int64_t phase = (cols + g.sw - 1) / g.sw, row_len = phase * g.sw;  // a padded row: sw phases of `phase` columns
  int64_t taps = g.kh * g.kw;
  // Slack past the last row: a row of outputs reads up to 7 columns beyond its end.
  std::vector<float> padded(static_cast<size_t>(rows * row_len + 8), 0.0f), line(static_cast<size_t>(row_len), 0.0f);
  std::vector<V4> wv(static_cast<size_t>(taps));
  std::vector<int64_t> tap_at(static_cast<size_t>(taps));  // a tap's offset in the padded plane
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t cj = j * g.dw;
      tap_at[i * g.kw + j] = i * g.dh * row_len + (cj % g.sw) * phase + cj / g.sw;
    }
  int64_t a = std::min(g.pw, cols), b = std::min(g.pw + g.w, cols);  // padded columns read from the input
  for (int64_t p = p0; p < p1; ++p) {
    int64_t c = p % g.channels;
    const float* src = in + p * g.h * g.w;
    const float* wc = weight + c * taps;
    for (int64_t t = 0; t < taps; ++t) wv[t] = V4{} + wc[t];
    for (int64_t py = 0; py < rows; ++py) {
      float* row = padded.data() + py * row_len;
      int64_t iy = py - g.ph;
      bool inside = iy >= 0 && iy < g.h && a < b;
      float* dst = g.sw == 1 ? row : line.data();
      std::fill(dst, dst + row_len, 0.0f);
      if (inside) std::memcpy(dst + a, src + iy * g.w + (a - g.pw), static_cast<size_t>(b - a) * sizeof(float));
      if (g.sw == 1) continue;
      for (int64_t q = 0; q < g.sw; ++q)
        for (int64_t m = 0; m < phase; ++m) row[q * phase + m] = line[m * g.sw + q];
    }
    float bc = bias ? bias[c] : 0.0f;
    for (int64_t y = 0; y < g.oh; ++y) {
      const float* base = padded.data() + y * g.sh * row_len;
      float* o = out + (p * g.oh + y) * g.ow;
      for (int64_t x = 0; x < g.ow; x += 8) {
        V4 acc0{}, acc1{};
        for (int64_t t = 0; t < taps; ++t) {
          const float* q = base + tap_at[t] + x;
          acc0 += wv[t] * load4(q);
          acc1 += wv[t] * load4(q + 4);
        }
        float sums[8];
        store4(sums, acc0);
        store4(sums + 4, acc1);
        finish(g, sums, bc, o + x, std::min<int64_t>(8, g.ow - x));
      }
    }
  }
}

}  // namespace

void depthwise_conv(const Depthwise& g, const float* in, const float* weight, const float* bias, float* out,
                    ThreadPool& pool) {
  if (g.planes == 0 || g.oh == 0 || g.ow == 0) return;
  int threads = pool.threads();
  int64_t work = g.planes * g.oh * g.ow * g.kh * g.kw;
  if (threads <= 1 || g.planes < 2 || work < kMinParallelWork) {
    planes(g, in, weight, bias, out, 0, g.planes);
    return;
  }
  int64_t chunks = std::min<int64_t>(g.planes, 4 * threads);
  pool.parallel_for(chunks, [&](int64_t k) {
    planes(g, in, weight, bias, out, g.planes * k / chunks, g.planes * (k + 1) / chunks);
  });
}

}  // namespace kiln::cpu
