#include "runtime/cpu/im2col.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "ir/status.h"
#include "ir/str.h"

namespace kiln::cpu {
namespace {

// One thread's time per output element, for ThreadPool::threads_for (measured: resnet's
// window copies on the build machine).
constexpr double kNsPerElement = 0.6;

// Output rows at least this long are copied row by row; shorter ones through the table, whose
// per-element lookup beats the per-row work on rows of a few positions (resnet's 10x10 to
// 2x2 maps: 1.3-5.7x less time through the table; its 20x20 stem: 1.2x less by rows).
constexpr int64_t kMinRowCopy = 16;

int64_t product(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t x : v) n *= x;
  return n;
}

// Planes [lo, hi) through the table.
template <typename T>
void gather(const Im2col& g, const T* __restrict in, T* __restrict out, int64_t lo, int64_t hi) {
  const int32_t* t = g.table.data();
  int64_t n = static_cast<int64_t>(g.table.size());
  for (int64_t p = lo; p < hi; ++p) {
    const T* src = in + p * g.in_plane;
    T* dst = out + p * n;
    for (int64_t j = 0; j < n; ++j) dst[j] = t[j] >= 0 ? src[t[j]] : T{0};
  }
}

// n elements from `from` to `to`, 32 bytes at a time (rows are short: a library call per row
// would cost more than the copy).
template <typename T>
inline void copy_row(const T* __restrict from, T* __restrict to, int64_t n) {
  constexpr int64_t kChunk = 32 / sizeof(T);
  int64_t k = 0;
  for (; k + kChunk <= n; k += kChunk) std::memcpy(to + k, from + k, 32);
  for (; k < n; ++k) to[k] = from[k];
}

// n zeros at `to`, 32 bytes at a time (as copy_row).
template <typename T>
inline void zero_row(T* __restrict to, int64_t n) {
  constexpr int64_t kChunk = 32 / sizeof(T);
  static constexpr T kZeros[kChunk] = {};
  int64_t k = 0;
  for (; k + kChunk <= n; k += kChunk) std::memcpy(to + k, kZeros, 32);
  for (; k < n; ++k) to[k] = T{0};
}

// Planes [lo, hi), row by row (Im2col::by_rows): per kernel column j, the output columns
// whose input column is inside, [cols[j].first, cols[j].second), are copied; the rest is zero.
template <typename T>
void rows(const Im2col& g, const T* __restrict in, T* __restrict out, int64_t lo, int64_t hi) {
  std::vector<std::pair<int64_t, int64_t>> cols(static_cast<size_t>(g.kw));
  for (int64_t j = 0; j < g.kw; ++j) {
    int64_t off = j * g.dw - g.pw;
    int64_t first = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
    int64_t last = g.w - 1 - off < 0 ? 0 : (g.w - 1 - off) / g.sw + 1;  // one past
    first = std::min(first, g.ow);
    cols[j] = {first, std::max(first, std::min(last, g.ow))};
  }
  for (int64_t p = lo; p < hi; ++p) {
    const T* src = in + p * g.in_plane;
    T* dst = out + p * g.out_plane;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        auto [a, b] = cols[j];
        int64_t off = j * g.dw - g.pw;
        for (int64_t y = 0; y < g.oh; ++y, dst += g.ow) {
          int64_t iy = y * g.sh + i * g.dh - g.ph;
          if (iy < 0 || iy >= g.h) {
            zero_row(dst, g.ow);
            continue;
          }
          const T* row = src + iy * g.w;
          zero_row(dst, a);
          if (g.sw == 1) copy_row(row + a + off, dst + a, b - a);
          else
            for (int64_t x = a; x < b; ++x) dst[x] = row[x * g.sw + off];
          zero_row(dst + b, g.ow - b);
        }
      }
  }
}

template <typename T>
void run(const Im2col& g, const void* in, void* out, ThreadPool& pool) {
  const T* src = static_cast<const T*>(in);
  T* dst = static_cast<T*>(out);
  auto part = [&](int64_t lo, int64_t hi) { g.by_rows ? rows(g, src, dst, lo, hi) : gather(g, src, dst, lo, hi); };
  pool.parallel_ranges(g.planes, static_cast<double>(g.planes * g.out_plane) * kNsPerElement, part);
}

}  // namespace

absl::StatusOr<Im2col> make_im2col(int64_t planes, int elem_size, const std::vector<int64_t>& in,
                                   const std::vector<int64_t>& out, const std::vector<int64_t>& kernel,
                                   const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                                   const std::vector<int64_t>& pads_begin) {
  Im2col g;
  g.planes = planes;
  g.elem_size = elem_size;
  g.in_plane = product(in);
  if (g.in_plane > INT32_MAX)
    return invalid_argument("window copy: an input plane of ", g.in_plane, " elements exceeds 2^31 - 1");
  size_t r = in.size();
  int64_t kn = product(kernel), on = product(out);
  g.out_plane = kn * on;
  if ((r == 1 || r == 2) && out[r - 1] >= kMinRowCopy) {
    size_t c = r - 1;  // the row's dim
    g.by_rows = true;
    g.w = in[c], g.ow = out[c], g.kw = kernel[c], g.sw = strides[c], g.dw = dilations[c], g.pw = pads_begin[c];
    if (r == 2) g.h = in[0], g.oh = out[0], g.kh = kernel[0], g.sh = strides[0], g.dh = dilations[0], g.ph = pads_begin[0];
    return g;
  }
  g.table.resize(static_cast<size_t>(kn * on));
  std::vector<int64_t> k(r, 0), o(r, 0);
  size_t j = 0;
  for (int64_t ki = 0; ki < kn; ++ki) {
    for (int64_t oi = 0; oi < on; ++oi) {
      int64_t at = 0;
      bool inside = true;
      for (size_t i = 0; i < r; ++i) {
        int64_t p = o[i] * strides[i] + k[i] * dilations[i] - pads_begin[i];
        inside = inside && p >= 0 && p < in[i];
        at = at * in[i] + p;
      }
      g.table[j++] = inside ? static_cast<int32_t>(at) : -1;
      for (size_t i = r; i-- > 0;) {
        if (++o[i] < out[i]) break;
        o[i] = 0;
      }
    }
    for (size_t i = r; i-- > 0;) {
      if (++k[i] < kernel[i]) break;
      k[i] = 0;
    }
  }
  return g;
}

void im2col(const Im2col& g, const void* in, void* out, ThreadPool& pool) {
  if (g.planes == 0 || g.out_plane == 0) return;
  switch (g.elem_size) {
    case 1: run<uint8_t>(g, in, out, pool); break;
    case 2: run<uint16_t>(g, in, out, pool); break;
    case 8: run<uint64_t>(g, in, out, pool); break;
    default: run<uint32_t>(g, in, out, pool); break;
  }
}

}  // namespace kiln::cpu
