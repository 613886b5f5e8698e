#include "models/sample.h"

#include <cmath>

namespace kiln::models {

using namespace kiln::trace;

namespace {

// The largest t = lo + j * 2^-bits * range (j integer, below 2^bits) with holds(t), for a
// monotone predicate that holds at lo; lo [B, 1]. Bit by bit, high bits first. Each step
// reads the last one's result once (lo + step * ok, never where(ok, mid, lo)): fused
// kernels expand such chains, and two reads per step would double them at every step.
template <typename Pred>
Tensor bisect(Tensor lo, double range, int bits, Pred holds) {
  for (int i = 1; i <= bits; ++i) {
    const double step = std::ldexp(range, -i);
    lo = lo + cast(holds(lo + step), DType::f32) * step;
  }
  return lo;
}

}  // namespace

Tensor sample_tokens(const Tensor& logits, const Tensor& temperature, const Tensor& top_k, const Tensor& top_p,
                     const Tensor& uniform) {
  Tracer& t = *logits.tracer();
  const Dim vocab_dim = logits.dim(1);
  const int64_t vocab = *vocab_dim.constant();
  Tensor temp = unsqueeze(maximum(temperature, 1e-6), {1});
  Tensor z = logits / temp;
  Tensor e = exp(z - max(z, Axes{-1}, true));  // unnormalized probabilities in (0, 1]
  Tensor zero = temp * 0.0;                      // [B, 1] zeros

  // Top-k: the largest threshold that keeps at least k tokens.
  Tensor k = unsqueeze(cast(where(top_k > 0, minimum(top_k, static_cast<int32_t>(vocab)), static_cast<int32_t>(vocab)),
                            DType::f32), {1});
  Tensor tk = bisect(zero, 1.0, 32, [&](const Tensor& th) { return sum(cast(e >= th, DType::f32), Axes{-1}, true) >= k; });
  e = where(e >= tk, e, 0.0);
  // Top-p: the largest threshold whose kept mass still reaches top_p of the total.
  Tensor want = sum(e, Axes{-1}, true) * unsqueeze(top_p, {1});
  Tensor tp = bisect(zero, 1.0, 32, [&](const Tensor& th) { return sum(where(e >= th, e, 0.0), Axes{-1}, true) >= want; });
  e = where(e >= tp, e, 0.0);
  // Inverse CDF in id order: the first id whose running mass exceeds uniform * total, which
  // is the largest m whose prefix of ids [0, m) stays at or under that target.
  Tensor target = sum(e, Axes{-1}, true) * unsqueeze(uniform, {1});
  Tensor ids = cast(t.iota(Dims{1, vocab}, 1, DType::i32), DType::f32);
  int bits = 1;
  while ((int64_t{1} << bits) <= vocab) ++bits;
  Tensor m = bisect(zero, std::ldexp(1.0, bits), bits,
                    [&](const Tensor& mid) { return sum(where(ids < mid, e, 0.0), Axes{-1}, true) <= target; });
  Tensor sampled = cast(squeeze(m, Axes{1}), DType::i64);
  return where(temperature > 0.0, minimum(sampled, static_cast<int64_t>(vocab - 1)), argmax(logits, -1));
}

}  // namespace kiln::models
