// The CPU's native window (im2col) copy: the columns a convolution's GEMM reads, copied row
// by row for 1-D and 2-D windows with long output rows (each kernel column's range of inside
// columns computed once per shape), else gathered through a table of input offsets made once
// per shape, instead of a generated kernel that computes clamped indices and bounds for every
// element
// (codegen/program.h WindowCopy says which kernels run this way).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

// out [planes, k..., o...] = window(in [planes, s...]) with zero padding: element
// (p, k, o) is in[p, o * stride + k * dilation - pad_begin] where that lies inside `in`.
struct Im2col {
  int64_t planes = 0;  // N * C
  int elem_size = 4;   // bytes: 1, 2, 4 or 8
  int64_t in_plane = 0;
  int64_t out_plane = 0;  // elements per plane of out: K * L
  // 1-D and 2-D windows with long rows are copied row by row: an output row [ow] of kernel position (i, j)
  // is input row y * sh + i * dh - ph read at columns x * sw + j * dw - pw, zeros outside
  // (1-D: h = oh = kh = 1).
  bool by_rows = false;
  int64_t h = 1, w = 1, oh = 1, ow = 1, kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, ph = 0, pw = 0;
  // Otherwise, per element of an output plane [k..., o...]: its offset in the input plane,
  // or -1 (padding).
  std::vector<int32_t> table;
};

// The copy for these sizes (spatial dims of in and out, the window per spatial dim); an
// error where an input plane has 2^31 elements or more.
absl::StatusOr<Im2col> make_im2col(int64_t planes, int elem_size, const std::vector<int64_t>& in,
                                   const std::vector<int64_t>& out, const std::vector<int64_t>& kernel,
                                   const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                                   const std::vector<int64_t>& pads_begin);

void im2col(const Im2col& g, const void* in, void* out, ThreadPool& pool);

}  // namespace kiln::cpu
