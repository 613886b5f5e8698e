// The CPU's direct convolution and the one place that decides how a convolution's GEMM runs.
//
// decompose lowers a conv to a window (im2col) view and a GEMM; the CPU runs the window as a
// native copy (im2col.h) and the GEMM on OpenBLAS, which copies the window once more into its
// packed panels: two passes over a matrix kh * kw times the input's size. The direct kernel
// here computes the same accumulator from the input itself: each input plane is copied once
// into zero-padded phase planes (stride s: padded row y and column x go to phase plane
// (y % sh, x % sw) at (y / sh, x / sw); stride 1: one plane) whose rows are ow plus the
// window's reach wide, so that an output position's tap (c, i, j) is the position plus a
// constant offset, and a register tile of output channels times output positions sums
// every tap with vector FMAs (the positions past ow in each row are computed and dropped).
//
// Contract of choose_conv_strategy (device.cc asks it per call shape; `kiln bench --profile`
// and the dump's kernel descriptions name the choice):
//   Direct     f32, strides of at most kMaxDirectStride, one or two spatial dims, the GEMM reading
//              the window densely and the weight in place, output planes of at least
//              kMinDirectPlane positions, a CPU with AVX2 and FMA;
//   Im2colBlas otherwise (the native window copy, then OpenBLAS).
// Measured on the 2-core AMD EPYC (AVX-512) build machine, one thread, CPU time, 3x3 convs
// (bench/RESULTS.md, cpuconv2): the direct kernel reached 90-97 GFLOP/s at 20x20 and 40x40
// planes, 72-77 at 8x8 and 10x10, 56-58 at 5x5 and 7x7, where a window copy (a plain loop)
// plus OpenBLAS sgemm reached 22-39, 44-56 and 53-54: even below 8x8, hence the threshold.
// The AVX2 variant (tiles of 8 channels x 8 positions, forced on the same machine) reached
// 64-75 GFLOP/s at 8x8 to 40x40, so AVX2 CPUs convolve directly too.
// ResNet's stem (7x7, stride 2, 3 -> 8 channels, 40x40 -> 20x20), whose window copy alone
// was a quarter of the model's time, runs directly too.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

// out [n, m, oh * ow] = sum over (c, i, j) of weight [m, (c * kh + i) * kw + j] *
// in [n, c, oy * sh + i * dh - ph, ox * sw + j * dw - pw] (zero outside the input): a conv's
// GEMM accumulator with the window as its B operand. 1-D convs are h = oh = kh = 1.
struct DirectConv {
  int64_t batch = 0, channels = 0, m = 0;  // N, C, output channels
  int64_t h = 1, w = 1, oh = 1, ow = 1, kh = 1, kw = 1, dh = 1, dw = 1, ph = 0, pw = 0, sh = 1, sw = 1;
  int64_t k() const { return channels * kh * kw; }
};

enum class ConvStrategy { Im2colBlas, Direct };

// Output planes below this many positions keep the window copy and OpenBLAS, and so do
// windows with a larger stride (phase planes of a few columns).
constexpr int64_t kMinDirectPlane = 64;
constexpr int64_t kMaxDirectStride = 2;

// The strategy for a conv GEMM: the largest window stride, `rank` (spatial dims), `f32`
// (input, weight and accumulator, the GEMM reading them as the direct kernel does), the
// output plane's positions.
ConvStrategy choose_conv_strategy(int64_t max_stride, int rank, bool f32, int64_t out_plane);
const char* conv_strategy_name(ConvStrategy s);

// The weight [m, k] (rows `ld` floats apart) in the kernel's order: blocks of the register
// tile's output channels, k-major within a block, rows past m zero.
int64_t packed_conv_weight_floats(const DirectConv& g);
void pack_conv_weight(const DirectConv& g, const float* weight, int64_t ld, float* packed);

// The accumulator `out` (dense [batch, m, oh * ow]) from `in` (dense [batch, channels, h, w])
// and pack_conv_weight's `packed`; `scratch` holds the padded planes between calls.
void direct_conv(const DirectConv& g, const float* in, const float* packed, float* out, std::vector<float>& scratch,
                 ThreadPool& pool);

}  // namespace kiln::cpu
