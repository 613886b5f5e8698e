// Composite ops against small hand-derived examples computed here in double.
#include <limits>

#include "test/reference/util.h"

namespace kiln::test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> softmax_row(const std::vector<double>& x) {
  double m = *std::max_element(x.begin(), x.end()), s = 0;
  for (double v : x) s += std::exp(v - m);
  std::vector<double> out;
  for (double v : x) out.push_back(std::exp(v - m) / s);
  return out;
}

TEST_CASE("softmax and log_softmax along the last and a negative axis") {
  HostTensor x = tensor(DType::f32, {2, 3}, {1, 2, 3, -1, -1, -1});
  std::vector<double> want = softmax_row({1, 2, 3});
  for (int i = 0; i < 3; ++i) want.push_back(1.0 / 3);
  HostTensor y = run(Op::Softmax, {x});
  check_close(y, {2, 3}, want, 1e-7);
  for (int r = 0; r < 2; ++r) CHECK(std::fabs(y.get(3 * r) + y.get(3 * r + 1) + y.get(3 * r + 2) - 1) < 1e-6);
  std::vector<double> logs;
  for (double p : want) logs.push_back(std::log(p));
  check_close(run(Op::LogSoftmax, {x}), {2, 3}, logs, 1e-7);
  // axis -2 on the same tensor: columns.
  HostTensor c = run(Op::Softmax, {x}, {{"axis", int64_t{-2}}});
  std::vector<double> cols(6);
  for (int j = 0; j < 3; ++j) {
    std::vector<double> s = softmax_row({x.get(j), x.get(3 + j)});
    cols[j] = s[0];
    cols[3 + j] = s[1];
  }
  check_close(c, {2, 3}, cols, 1e-7);
}

TEST_CASE("softmax is max-subtracted, handles -inf, and rounds once in bf16") {
  HostTensor big = tensor(DType::f32, {3}, {1000, 1001, -kInf});
  check_close(run(Op::Softmax, {big}), {3}, {1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-1.0)), 0}, 1e-7);
  check_close(run(Op::LogSoftmax, {big}), {3}, {-1 - std::log1p(std::exp(-1.0)), -std::log1p(std::exp(-1.0)), -kInf}, 1e-7);
  // Size-1 axis: all ones.
  check_exact(run(Op::Softmax, {tensor(DType::bf16, {3, 1}, {5, -2, 0.5})}), DType::bf16, {3, 1}, {1, 1, 1});
  HostTensor b = tensor(DType::bf16, {4}, {0.5, -1.25, 2, 0.125});
  std::vector<double> s = softmax_row({0.5, -1.25, 2, 0.125});
  for (double& v : s) v = round_to_dtype(v, DType::bf16);
  check_exact(run(Op::Softmax, {b}), DType::bf16, {4}, s);
}

TEST_CASE("layer_norm: mean 0 and variance 1 with unit weight; weight and bias applied") {
  std::vector<double> v = {0.3, -1.7, 2.2, 0.9, -0.4, 1.1, 5.0, -3.0, 0.0, 0.25, -0.75, 2.5};
  HostTensor x = tensor(DType::f32, {3, 4}, v);
  HostTensor y = run(Op::LayerNorm, {x}, {{"eps", 0.0}});
  for (int r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (int j = 0; j < 4; ++j) mean += y.get(4 * r + j) / 4;
    for (int j = 0; j < 4; ++j) var += (y.get(4 * r + j) - mean) * (y.get(4 * r + j) - mean) / 4;
    CHECK(std::fabs(mean) < 1e-6);
    CHECK(std::fabs(var - 1) < 1e-6);
  }
  HostTensor w = tensor(DType::f32, {4}, {1, 2, -1, 0.5}), b = tensor(DType::f32, {4}, {0, 1, 0.5, -2});
  std::vector<double> want;
  for (int r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (int j = 0; j < 4; ++j) mean += static_cast<float>(v[4 * r + j]) / 4.0;
    for (int j = 0; j < 4; ++j) var += std::pow(static_cast<float>(v[4 * r + j]) - mean, 2) / 4;
    for (int j = 0; j < 4; ++j)
      want.push_back((static_cast<float>(v[4 * r + j]) - mean) / std::sqrt(var + 1e-5) * w.get(j) + b.get(j));
  }
  check_close(run(Op::LayerNorm, {x, w, b}), {3, 4}, want, 1e-7);
  // Weight only (bias absent).
  std::vector<double> want_w;
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 4; ++j) want_w.push_back(want[4 * r + j] - b.get(j));
  check_close(run(Op::LayerNorm, {x, w}), {3, 4}, want_w, 1e-6, 1e-6);
}

TEST_CASE("layer_norm over two trailing axes given as negative axes") {
  HostTensor x = tensor(DType::f32, {2, 2, 2}, {1, 2, 3, 4, -1, -1, 1, 1});
  // Group 0: mean 2.5, var 1.25; group 1: mean 0, var 1.
  double s = 1 / std::sqrt(1.25 + 1e-5), t = 1 / std::sqrt(1 + 1e-5);
  check_close(run(Op::LayerNorm, {x}, {{"axes", std::vector<int64_t>{-1, -2}}}), {2, 2, 2},
              {-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s, -t, -t, t, t}, 1e-7);
}

TEST_CASE("rms_norm") {
  HostTensor x = tensor(DType::f32, {2, 2}, {3, 4, -1, 1});
  HostTensor w = tensor(DType::f32, {2}, {2, 0.5});
  double a = 1 / std::sqrt(12.5 + 1e-6), b = 1 / std::sqrt(1 + 1e-6);
  check_close(run(Op::RmsNorm, {x, w}), {2, 2}, {6 * a, 2 * a, -2 * b, 0.5 * b}, 1e-7);
  check_close(run(Op::RmsNorm, {x}, {{"eps", 0.0}}), {2, 2}, {3 / std::sqrt(12.5), 4 / std::sqrt(12.5), -1, 1}, 1e-7);
  HostTensor xb = tensor(DType::bf16, {1, 3}, {0.5, 1.5, -2});
  double r = 1 / std::sqrt((0.25 + 2.25 + 4) / 3 + 1e-6);
  check_exact(run(Op::RmsNorm, {xb}), DType::bf16, {1, 3},
              {round_to_dtype(0.5 * r, DType::bf16), round_to_dtype(1.5 * r, DType::bf16), round_to_dtype(-2 * r, DType::bf16)});
}

// Attention computed the textbook way for one [L, E] slice.
std::vector<double> attention(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                              int64_t lq, int64_t lk, int64_t e, int64_t ev, double scale,
                              const std::vector<double>& bias /* [lq, lk], added */) {
  std::vector<double> out;
  for (int64_t i = 0; i < lq; ++i) {
    std::vector<double> s(lk);
    for (int64_t j = 0; j < lk; ++j) {
      for (int64_t t = 0; t < e; ++t) s[j] += q[i * e + t] * k[j * e + t];
      s[j] = s[j] * scale + bias[i * lk + j];
    }
    std::vector<double> p = softmax_row(s);
    for (int64_t t = 0; t < ev; ++t) {
      double acc = 0;
      for (int64_t j = 0; j < lk; ++j) acc += p[j] * v[j * ev + t];
      out.push_back(acc);
    }
  }
  return out;
}

TEST_CASE("scaled_dot_product_attention: plain, scale, causal, explicit masks") {
  std::vector<double> q = {0.5, -1, 1, 0.25, -0.5, 2}, k = {1, 0.5, -1, 1, 0.25, -0.75}, v = {1, 2, 3, -1, 0, 0.5};
  // q [1, 3, 2], k [1, 3, 2], v [1, 3, 2]
  HostTensor qt = tensor(DType::f32, {1, 3, 2}, q), kt = tensor(DType::f32, {1, 3, 2}, k), vt = tensor(DType::f32, {1, 3, 2}, v);
  std::vector<double> none(9, 0.0), causal = {0, -kInf, -kInf, 0, 0, -kInf, 0, 0, 0};
  check_close(run(Op::Sdpa, {qt, kt, vt}), {1, 3, 2}, attention(q, k, v, 3, 3, 2, 2, 1 / std::sqrt(2.0), none), 1e-6, 1e-7);
  check_close(run(Op::Sdpa, {qt, kt, vt}, {{"scale", 0.3}}), {1, 3, 2}, attention(q, k, v, 3, 3, 2, 2, 0.3, none), 1e-6, 1e-7);
  std::vector<double> want_causal = attention(q, k, v, 3, 3, 2, 2, 1 / std::sqrt(2.0), causal);
  HostTensor c = run(Op::Sdpa, {qt, kt, vt}, {{"causal", true}});
  check_close(c, {1, 3, 2}, want_causal, 1e-6, 1e-7);
  // The first query sees only the first key.
  CHECK(c.get(0) == 1);
  CHECK(c.get(1) == 2);
  // The same through a bool mask (lower triangle) and through an additive float mask.
  HostTensor tril = int_tensor(DType::boolean, {3, 3}, {1, 0, 0, 1, 1, 0, 1, 1, 1});
  HostTensor bm = run(Op::Sdpa, {qt, kt, vt, tril});
  HostTensor fm = run(Op::Sdpa, {qt, kt, vt, tensor(DType::f32, {3, 3}, causal)});
  for (int64_t i = 0; i < 6; ++i) {
    CHECK(bm.get(i) == c.get(i));
    CHECK(fm.get(i) == c.get(i));
  }
  // A float mask with finite values is added to the scores.
  std::vector<double> fmask = {0.5, -1, 0, 2, 0, -0.25, 0, 0, 1};
  check_close(run(Op::Sdpa, {qt, kt, vt, tensor(DType::f32, {1, 3, 3}, fmask)}), {1, 3, 2},
              attention(q, k, v, 3, 3, 2, 2, 1 / std::sqrt(2.0), fmask), 1e-6, 1e-7);
}

TEST_CASE("scaled_dot_product_attention: a fully masked row is NaN; Lq != Lk; Ev != E") {
  std::vector<double> q = {0.5, -1, 1, 0.25}, k = {1, 0.5, -1, 1, 0.25, -0.75}, v = {1, 2, 3, -1, 0, 0.5, 2, 2, 2};
  // q [2, 2], k [3, 2], v [3, 3]: Lq=2, Lk=3, E=2, Ev=3; row 1 fully masked.
  HostTensor m = int_tensor(DType::boolean, {2, 3}, {1, 0, 1, 0, 0, 0});
  HostTensor out = run(Op::Sdpa, {tensor(DType::f32, {2, 2}, q), tensor(DType::f32, {3, 2}, k), tensor(DType::f32, {3, 3}, v), m});
  std::vector<double> want = attention(q, k, v, 1, 3, 2, 3, 1 / std::sqrt(2.0), {0, -kInf, 0});
  want.insert(want.end(), {kNaN, kNaN, kNaN});
  check_close(out, {2, 3}, want, 1e-6, 1e-7);
  // Causal with Lq < Lk is top-left aligned: query i sees keys 0..i.
  HostTensor c = run(Op::Sdpa, {tensor(DType::f32, {2, 2}, q), tensor(DType::f32, {3, 2}, k), tensor(DType::f32, {3, 3}, v)},
                     {{"causal", true}});
  check_close(c, {2, 3}, attention(q, k, v, 2, 3, 2, 3, 1 / std::sqrt(2.0), {0, -kInf, -kInf, 0, 0, -kInf}), 1e-6, 1e-7);
}

TEST_CASE("scaled_dot_product_attention broadcasts batch dims and the mask, rounds bf16 once") {
  // q [2, 1, 2, 2], k and v [1, 3, 2, 2] -> [2, 3, 2, 2]; mask [2, 1, 1, 2] (per batch, per key).
  std::vector<double> q = {0.5, -1, 1, 0.25, -0.5, 2, 0.75, 0};
  std::vector<double> k = {1, 0.5, -1, 1, 0.25, -0.75, 2, 0, 0, 1, -0.5, 0.5};
  std::vector<double> v = {1, 2, 3, -1, 0, 0.5, 2, 2, -1, 0.25, 1, 1};
  std::vector<int64_t> mask = {1, 1, 0, 1};
  for (DType t : {DType::f32, DType::bf16}) {
    HostTensor out = run(Op::Sdpa, {tensor(t, {2, 1, 2, 2}, q), tensor(t, {1, 3, 2, 2}, k), tensor(t, {1, 3, 2, 2}, v),
                                    int_tensor(DType::boolean, {2, 1, 1, 2}, mask)});
    std::vector<double> want;
    for (int b = 0; b < 2; ++b)
      for (int h = 0; h < 3; ++h) {
        std::vector<double> bias = {mask[2 * b] ? 0 : -kInf, mask[2 * b + 1] ? 0 : -kInf,
                                    mask[2 * b] ? 0 : -kInf, mask[2 * b + 1] ? 0 : -kInf};
        std::vector<double> r = attention(std::vector<double>(q.begin() + 4 * b, q.begin() + 4 * b + 4),
                                          std::vector<double>(k.begin() + 4 * h, k.begin() + 4 * h + 4),
                                          std::vector<double>(v.begin() + 4 * h, v.begin() + 4 * h + 4), 2, 2, 2, 2,
                                          1 / std::sqrt(2.0), bias);
        for (double x : r) want.push_back(round_to_dtype(x, t));
      }
    INFO(dtype_name(t));
    // bf16: the f64 result rounded once, so exactly the rounded textbook value (barring a
    // result within 1e-12 of a rounding midpoint, which these inputs avoid).
    if (t == DType::bf16) check_exact(out, t, {2, 3, 2, 2}, want);
    else check_close(out, {2, 3, 2, 2}, want, 1e-6, 1e-7);
  }
}

}  // namespace
}  // namespace kiln::test
