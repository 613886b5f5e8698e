#include "runtime/cpu/epilogue.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "runtime/cpu/vec8.h"

namespace kiln::cpu {
namespace {

// One thread's time per element, for ThreadPool::threads_for.
constexpr double kNsPerElement = 0.1;
// Rows shorter than this are taken as one stream where eight does not divide them (rows()).
constexpr int64_t kMaxStreamRow = 16;

__attribute__((always_inline)) inline float clamp1(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Rows [r0, r1). Columns eight at a time, the rest one by one; where eight divides by n
// (rows of 1, 2 or 4), eight elements span 8 / n whole rows and their biases are spread
// over the lanes by one shuffle.
KILN_VECTOR_CLONES void rows(const BiasClampShape& s, const float* acc, const float* bias, float* out, int64_t r0,
                             int64_t r1) {
  const V8 lo = V8{} + s.lo, hi = V8{} + s.hi;
  const int64_t n = s.n;
  auto row_bias = [&](int64_t r) { return bias && s.per_row ? bias[r % s.m] : 0.0f; };
  int64_t r = r0;
  if (s.per_row && n < 8 && 8 % n == 0) {
    const int64_t span = 8 / n;  // rows per vector
    for (; r + span <= r1; r += span) {
      V8 b{};
      if (bias) {
        const int64_t c = r % s.m;
        if (c + span <= s.m) {  // the rows' biases are consecutive
          if (n == 1) std::memcpy(&b, bias + c, sizeof b);
          else if (n == 2) {
            V4 q;
            std::memcpy(&q, bias + c, sizeof q);
            b = __builtin_shufflevector(q, q, 0, 0, 1, 1, 2, 2, 3, 3);
          } else {
            b = V8{bias[c], bias[c], bias[c], bias[c], bias[c + 1], bias[c + 1], bias[c + 1], bias[c + 1]};
          }
        } else {
          for (int l = 0; l < 8; ++l) b[l] = bias[(r + l / n) % s.m];
        }
      }
      V8 a;
      std::memcpy(&a, acc + r * n, sizeof a);
      store_clamped(a, b, lo, hi, out + r * n);
    }
  }
  // Rows shorter than 16 that eight does not divide (a 1x1 conv over a 3x3 map), bias along
  // them: taken as one stream of vectors, P = 8 / gcd(n, 8) rows (K = n P / 8 vectors) at a
  // time, lane l of the period's vector k in row (8 k + l) / n of it, its bias one permute of
  // the P rows' biases. A row's own vector and tail cost rows of 9 twice their elements
  // (2x1280 rows of 9: 5.1 -> 2.4 us on the build machine); rows of 25 and 100 keep them
  // (0.9 against 1.1 and 1.9 against 2.2 us as a stream).
  if (s.per_row && n % 8 != 0 && n < kMaxStreamRow) {
    const int64_t P = 8 / std::gcd<int64_t>(n, 8), K = n * P / 8;
    V8i row_of[kMaxStreamRow];  // K <= n
    for (int64_t k = 0; k < K; ++k)
      for (int l = 0; l < 8; ++l) row_of[k][l] = static_cast<int32_t>((8 * k + l) / n);
    for (; r + P <= r1; r += P) {
      V8 b8{};
      if (bias) {
        const int64_t c = r % s.m;
        if (c + 8 <= s.m) std::memcpy(&b8, bias + c, sizeof b8);
        else
          for (int64_t l = 0; l < P; ++l) b8[l] = bias[(r + l) % s.m];
      }
      const float* x = acc + r * n;
      float* o = out + r * n;
      for (int64_t k = 0; k < K; ++k) {
        V8 a;
        std::memcpy(&a, x + 8 * k, sizeof a);
        store_clamped(a, __builtin_shuffle(b8, row_of[k]), lo, hi, o + 8 * k);
      }
    }
  }
  // Rows of 8 or more that eight does not divide end with the eight elements [n - 8, n),
  // which overlap the last full vector: computed before anything of the row is stored (out
  // may be acc), stored last, so the overlapped lanes get the same values twice.
  const bool tail = n > 8 && n % 8 != 0;
  for (; r < r1; ++r) {
    const float* x = acc + r * n;
    float* o = out + r * n;
    const float rb = row_bias(r);
    const V8 bv = V8{} + rb;
    V8 a, b = bv, last{};
    if (tail) {
      std::memcpy(&last, x + n - 8, sizeof last);
      if (bias && !s.per_row) std::memcpy(&b, bias + n - 8, sizeof b);
      add_clamp(last, b, lo, hi);
    }
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      std::memcpy(&a, x + j, sizeof a);
      if (bias && !s.per_row) std::memcpy(&b, bias + j, sizeof b);
      store_clamped(a, b, lo, hi, o + j);
    }
    if (tail) std::memcpy(o + n - 8, &last, sizeof last);
    else
      for (; j < n; ++j) o[j] = clamp1(x[j] + (bias && !s.per_row ? bias[j] : rb), s.lo, s.hi);
  }
}

// The eight lanes' sum.
__attribute__((always_inline)) inline float sum_lanes(const V8& v) {
  V4 h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  h += __builtin_shufflevector(h, h, 2, 3, 0, 1);
  return h[0] + h[1];
}

// Rows [r0, r1) of `rows`, each into eight lanes, then their sum: the lanes past a row's
// end masked off, from the row's last eight elements (n > 8) or, for short rows, from the eight
// at its start where they lie inside the input (the last rows' short tails one by one: a
// row of 9 summed element by element was a chain of 9 dependent adds).
KILN_VECTOR_CLONES void reduce_rows(int64_t rows, int64_t n, bool mean, const float* in, float* out, int64_t r0,
                                    int64_t r1) {
  const V8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const float inv = 1.0f / static_cast<float>(n);
  const int32_t rem = static_cast<int32_t>(n % 8);
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = in + r * n;
    V8 acc{}, v;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
      std::memcpy(&v, x + j, sizeof v);
      acc += v;
    }
    float sum = 0;
    if (rem != 0 && n > 8) {
      std::memcpy(&v, x + n - 8, sizeof v);
      acc += lane >= 8 - rem ? v : V8{};
    } else if (rem != 0 && r * n + 8 <= rows * n) {
      std::memcpy(&v, x, sizeof v);
      acc += lane < rem ? v : V8{};
    } else {
      for (; j < n; ++j) sum += x[j];
    }
    sum += sum_lanes(acc);
    out[r] = mean ? sum * inv : sum;
  }
}

}  // namespace

void row_reduce(int64_t rows, int64_t n, bool mean, const float* in, float* out, ThreadPool& pool) {
  if (rows <= 0) return;
  if (n <= 0) {  // an empty sum is 0 and an empty mean NaN, as the reference gives them
    std::fill(out, out + rows, mean ? std::numeric_limits<float>::quiet_NaN() : 0.0f);
    return;
  }
  pool.parallel_ranges(rows, static_cast<double>(rows * n) * kNsPerElement,
                       [&](int64_t lo, int64_t hi) { reduce_rows(rows, n, mean, in, out, lo, hi); });
}

void bias_clamp(const BiasClampShape& s, const float* acc, const float* bias, float* out, ThreadPool& pool) {
  if (s.rows <= 0 || s.n <= 0) return;
  pool.parallel_ranges(s.rows, static_cast<double>(s.rows * s.n) * kNsPerElement,
                       [&](int64_t lo, int64_t hi) { rows(s, acc, bias, out, lo, hi); });
}

}  // namespace kiln::cpu
