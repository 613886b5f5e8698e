// The CPU's native routines over short rows: a GEMM's epilogue (codegen/program.h BiasClamp),
// a library's f32 accumulator plus a bias, clamped, into the GEMM's output; and sums and means
// over trailing axes (RowReduce). A generated kernel pays a loop's overhead per row, and a
// 1x1 conv or a global average pool over a 2x2 map has rows of 4.
#pragma once

#include <cstdint>
#include <limits>

#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

struct BiasClampShape {
  int64_t rows = 0, m = 1, n = 1;  // rows of n elements; row r is GEMM row r % m
  bool per_row = true;             // bias[r % m] for row r, else bias[j] for column j
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
};

// out[r * n + j] = clamp(acc[r * n + j] + bias, lo, hi); `bias` may be null (none). NaN
// propagates through the clamp, as maximum/minimum do. out may be acc.
void bias_clamp(const BiasClampShape& s, const float* acc, const float* bias, float* out, ThreadPool& pool);

// out[r] = the sum of in[r * n .. r * n + n), divided by n when `mean` (codegen/program.h
// RowReduce), for r < rows: eight partial sums per row where n >= 16, in order otherwise.
void row_reduce(int64_t rows, int64_t n, bool mean, const float* in, float* out, ThreadPool& pool);

}  // namespace kiln::cpu
