// The ONNX importer's recurrent networks (LSTM and GRU unrolled over time) and
// ReverseSequence on models built here, with a symbolic batch, against loops written here:
// bidirectional, sequence_lens, initial states, peepholes, linear_before_reset, layout 1.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "test/onnx/import_util.h"

namespace kiln {
namespace {

using testing::import_error;
using testing::import_ok;
using testing::kF32;
using testing::ModelBuilder;
using testing::random_tensor;
using testing::run;
using testing::set_attr;

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// out[t][d][b][j] (layout 0) of a bidirectional LSTM or GRU, and the final states [d][b][j],
// computed step by step: direction 1 walks each sequence backwards from its length.
struct Rnn {
  bool lstm;
  bool lbr = false;  // GRU's linear_before_reset
  int64_t t, b, in, h;
  HostTensor x, w, r, bias, lens, h0, c0, p;
  std::vector<double> y, yh, yc;

  void compute() {
    int64_t g = lstm ? 4 : 3;
    y.assign(t * 2 * b * h, 0.0), yh.assign(2 * b * h, 0.0), yc.assign(2 * b * h, 0.0);
    for (int64_t d = 0; d < 2; ++d)
      for (int64_t n = 0; n < b; ++n) {
        std::vector<double> hs(h), cs(h);
        for (int64_t j = 0; j < h; ++j) hs[j] = h0.get((d * b + n) * h + j), cs[j] = lstm ? c0.get((d * b + n) * h + j) : 0;
        int64_t len = lens.get_int(n);
        for (int64_t s = 0; s < len; ++s) {
          int64_t step = d == 0 ? s : len - 1 - s;
          // pre[k][j]: W x + Wb + Rb, and R h separately (GRU's candidate needs it apart).
          std::vector<std::vector<double>> wx(g, std::vector<double>(h)), rh(g, std::vector<double>(h));
          for (int64_t k = 0; k < g; ++k)
            for (int64_t j = 0; j < h; ++j) {
              int64_t row = d * g * h + k * h + j;
              double a = bias.get(d * 2 * g * h + k * h + j), c = bias.get(d * 2 * g * h + g * h + k * h + j);
              for (int64_t i = 0; i < in; ++i) a += w.get(row * in + i) * x.get((step * b + n) * in + i);
              for (int64_t i = 0; i < h; ++i) c += r.get(row * h + i) * hs[i];
              wx[k][j] = a, rh[k][j] = c;
            }
          std::vector<double> hn(h), cn(h), rgs(h);
          for (int64_t j = 0; j < h; ++j) rgs[j] = sigmoid(wx[1][j] + rh[1][j]);
          for (int64_t j = 0; j < h; ++j) {
            if (lstm) {
              auto pp = [&](int k) { return p.get(d * 3 * h + k * h + j); };
              double i = sigmoid(wx[0][j] + rh[0][j] + pp(0) * cs[j]), f = sigmoid(wx[2][j] + rh[2][j] + pp(2) * cs[j]);
              double c = std::tanh(wx[3][j] + rh[3][j]);
              cn[j] = f * cs[j] + i * c;
              double o = sigmoid(wx[1][j] + rh[1][j] + pp(1) * cn[j]);
              hn[j] = o * std::tanh(cn[j]);
            } else {
              double z = sigmoid(wx[0][j] + rh[0][j]);
              double cand;
              if (lbr) {
                cand = wx[2][j] + rgs[j] * rh[2][j];
              } else {
                double rb = bias.get(d * 2 * g * h + g * h + 2 * h + j);
                cand = wx[2][j] + rb;
                for (int64_t i = 0; i < h; ++i) cand += r.get((d * g * h + 2 * h + j) * h + i) * rgs[i] * hs[i];
              }
              hn[j] = (1 - z) * std::tanh(cand) + z * hs[j];
            }
          }
          hs = hn, cs = cn;
          for (int64_t j = 0; j < h; ++j) y[((step * 2 + d) * b + n) * h + j] = hs[j];
        }
        for (int64_t j = 0; j < h; ++j) yh[(d * b + n) * h + j] = hs[j], yc[(d * b + n) * h + j] = cs[j];
      }
  }
};

TEST_CASE("LSTM and GRU, bidirectional with sequence_lens and initial states, on a symbolic batch", "[onnx][import]") {
  for (std::string type : {"LSTM", "GRU", "GRU_lbr"}) {
    bool lstm = type == "LSTM";
    int64_t g = lstm ? 4 : 3, t = 4, in = 3, h = 5;
    ModelBuilder m(14);
    m.input("x", kF32, {t, "B", in}).input("lens", onnx::TensorProto::INT32, {"B"});
    m.input("h0", kF32, {2, "B", h});
    if (lstm) m.input("c0", kF32, {2, "B", h});
    HostTensor w = random_tensor(DType::f32, {2, g * h, in}, 1), r = random_tensor(DType::f32, {2, g * h, h}, 2);
    HostTensor bias = random_tensor(DType::f32, {2, 2 * g * h}, 3), p = random_tensor(DType::f32, {2, 3 * h}, 4);
    m.initializer("w", w).initializer("r", r).initializer("bias", bias);
    std::vector<std::string> ins{"x", "w", "r", "bias", "lens", "h0"};
    if (lstm) ins.push_back("c0"), ins.push_back("p"), m.initializer("p", p);
    onnx::NodeProto& n = m.node(lstm ? "LSTM" : "GRU", ins, lstm ? std::vector<std::string>{"y", "yh", "yc"} : std::vector<std::string>{"y", "yh"});
    set_attr(n, "hidden_size", h);
    set_attr(n, "direction", std::string("bidirectional"));
    if (type == "GRU_lbr") set_attr(n, "linear_before_reset", int64_t{1});
    m.output("y", kF32, {}).output("yh", kF32, {});
    if (lstm) m.output("yc", kF32, {});
    Graph graph = import_ok(m);
    for (int64_t b : {1, 3, 8}) {
      Rnn ref{lstm, type == "GRU_lbr", t, b, in, h, random_tensor(DType::f32, {t, b, in}, 10 + b), w, r, bias,
              HostTensor(DType::i32, {b}), random_tensor(DType::f32, {2, b, h}, 20 + b), random_tensor(DType::f32, {2, b, h}, 30 + b), p};
      for (int64_t i = 0; i < b; ++i) ref.lens.set_int(i, 1 + (i * 3 + b) % t);
      ref.compute();
      TensorMap args{{"x", ref.x}, {"lens", ref.lens}, {"h0", ref.h0}};
      if (lstm) args["c0"] = ref.c0;
      std::vector<HostTensor> out = run(graph, args);
      INFO(type << " at batch " << b);
      REQUIRE(out[0].shape() == std::vector<int64_t>{t, 2, b, h});
      for (int64_t i = 0; i < out[0].numel(); ++i) CHECK(out[0].get(i) == Approx(ref.y[i]).margin(1e-5));
      for (int64_t i = 0; i < out[1].numel(); ++i) CHECK(out[1].get(i) == Approx(ref.yh[i]).margin(1e-5));
      if (lstm)
        for (int64_t i = 0; i < out[2].numel(); ++i) CHECK(out[2].get(i) == Approx(ref.yc[i]).margin(1e-5));
    }
  }
}

TEST_CASE("RNN with a symbolic sequence length is a located error", "[onnx][import]") {
  ModelBuilder m(14);
  m.input("x", kF32, {"T", 2, 3});
  m.initializer("w", random_tensor(DType::f32, {1, 4, 3}, 1)).initializer("r", random_tensor(DType::f32, {1, 4, 4}, 2));
  set_attr(m.node("RNN", {"x", "w", "r"}, {"y"}, "rnn"), "hidden_size", int64_t{4});
  m.output("y", kF32, {});
  absl::Status s = import_error(m);
  CHECK(s.code() == absl::StatusCode::kUnimplemented);
  CHECK_THAT(std::string(s.message()), Catch::Contains("node 'rnn' (RNN, opset 14)") && Catch::Contains("sequence length T is symbolic"));
}

TEST_CASE("ReverseSequence on a symbolic batch, time axis 0 and 1", "[onnx][import]") {
  for (int64_t time : {0, 1}) {
    ModelBuilder m(10);
    std::vector<testing::OnnxDim> dims{time == 0 ? testing::OnnxDim{int64_t{5}} : testing::OnnxDim{std::string("B")},
                                       time == 0 ? testing::OnnxDim{std::string("B")} : testing::OnnxDim{int64_t{5}}, int64_t{2}};
    m.input("x", kF32, dims).input("lens", testing::kI64, {"B"});
    onnx::NodeProto& n = m.node("ReverseSequence", {"x", "lens"}, {"y"});
    set_attr(n, "time_axis", time);
    set_attr(n, "batch_axis", 1 - time);
    m.output("y", kF32, {});
    Graph g = import_ok(m);
    for (int64_t b : {1, 4}) {
      std::vector<int64_t> shape = time == 0 ? std::vector<int64_t>{5, b, 2} : std::vector<int64_t>{b, 5, 2};
      HostTensor x = random_tensor(DType::f32, shape, 40 + b), lens(DType::i64, {b});
      for (int64_t i = 0; i < b; ++i) lens.set_int(i, (i * 2 + 1) % 6);
      HostTensor y = run(g, {{"x", x}, {"lens", lens}})[0];
      for (int64_t bi = 0; bi < b; ++bi)
        for (int64_t ti = 0; ti < 5; ++ti)
          for (int64_t k = 0; k < 2; ++k) {
            int64_t l = lens.get_int(bi), src = ti < l ? l - 1 - ti : ti;
            auto at = [&](int64_t tt) { return time == 0 ? (tt * b + bi) * 2 + k : (bi * 5 + tt) * 2 + k; };
            CHECK(y.get(at(ti)) == x.get(at(src)));
          }
    }
  }
}

}  // namespace
}  // namespace kiln
