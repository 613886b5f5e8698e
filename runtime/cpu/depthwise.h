// The CPU's native depthwise convolution (one input channel per output channel), with its
// bias and clamp (ReLU, ReLU6) applied on the way out, where the generated reduction kernel
// computes one output point at a time through clamped indices (codegen/program.h
// DepthwiseConv says which kernels run this way). Two ways, by plane size:
//   planes       each output plane a sum of shifted phase planes of its input times one
//                weight, vectorized along the plane (large planes);
//   interleaved  eight planes at a time (sixteen with AVX-512), their elements interleaved so
//                that a vector holds one position of all of them (8x8 or 16x16 transposes in
//                and out), vectorized across planes: no per-row or per-stride edge work,
//                which is most of the cost of a small plane (mobilenet's 10x10 to 2x2 maps),
//                as NCHWc layouts do it.
#pragma once

#include <cstdint>
#include <limits>

#include "runtime/cpu/thread_pool.h"

namespace kiln::cpu {

// out [planes, oh, ow] = clamp(sum over (i, j) of in[plane, y * sh + i * dh - ph,
// x * sw + j * dw - pw] * w[channel, i, j] + bias[channel], lo, hi), positions outside the
// input counting as zero; channel = plane % channels. 1-D convs are the case h = oh = kh = 1.
struct Depthwise {
  int64_t planes = 0, channels = 1;  // N * C, C
  int64_t h = 1, w = 1, oh = 1, ow = 1;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, ph = 0, pw = 0;
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();  // the clamp
};

// Interleaved: sixteen planes a block where the CPU has AVX-512, else eight; Interleaved8:
// eight planes a block on any CPU (to compare and test).
enum class DepthwiseMethod { Auto, Planes, Interleaved, Interleaved8 };

// Auto's choice for `g`: interleaved for small output planes (up to 32 positions, 256 with
// AVX-512), planes otherwise (depthwise.cc has the measurements behind the crossovers).
DepthwiseMethod choose_depthwise(const Depthwise& g);

// `bias` may be null (no bias). NaN propagates through the clamp, as maximum/minimum do.
// Every method sums each output's taps in the same order (the reference's), then add the bias.
void depthwise_conv(const Depthwise& g, const float* in, const float* weight, const float* bias, float* out,
                    ThreadPool& pool, DepthwiseMethod method = DepthwiseMethod::Auto);

}  // namespace kiln::cpu
