// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss as the importer composes them, on
// symbolic [N, C, D] inputs at several sizes, against the loss computed directly here; and
// their located errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/onnx/model_builder.h"

namespace kiln {
namespace {

using testing::ModelBuilder;
using testing::set_attr;
constexpr int32_t kF32 = onnx::TensorProto::FLOAT, kI64 = onnx::TensorProto::INT64;
constexpr int64_t kClasses = 5, kIgnored = 2;

// x [N, 5, D] and target [N, D] (weight [5] an initializer) -> loss, and log_prob for SCE.
ModelBuilder loss_model(const std::string& op, const std::string& reduction, const HostTensor& weight) {
  ModelBuilder m(13);
  m.input("x", kF32, {"N", kClasses, "D"});
  m.input("t", kI64, {"N", "D"});
  m.initializer("w", weight);
  bool sce = op == "SoftmaxCrossEntropyLoss";
  onnx::NodeProto& n = m.node(op, {"x", "t", "w"}, sce ? std::vector<std::string>{"loss", "log_prob"}
                                                          : std::vector<std::string>{"loss"});
  set_attr(n, "reduction", reduction);
  set_attr(n, "ignore_index", kIgnored);
  if (reduction == "none") m.output("loss", kF32, {"N", "D"});
  else m.output("loss", kF32, {});
  if (sce) m.output("log_prob", kF32, {"N", kClasses, "D"});
  return m;
}

// The loss as ONNX's reference defines it, from log-probabilities lp [N, 5, D].
HostTensor expected_loss(const HostTensor& lp, const HostTensor& t, const HostTensor& w, const std::string& reduction) {
  int64_t n = t.shape()[0], d = t.shape()[1];
  HostTensor loss(DType::f32, {n, d});
  double total = 0, weights = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      int64_t c = static_cast<int64_t>(t.get(i * d + j));
      double wc = c == kIgnored ? 0 : w.get(c);
      double l = c == kIgnored ? 0 : -lp.get((i * kClasses + c) * d + j) * wc;
      loss.set(i * d + j, l);
      total += l;
      weights += wc;
    }
  if (reduction == "none") return loss;
  HostTensor s(DType::f32, {});
  s.set(0, reduction == "sum" ? total : total / weights);
  return s;
}

HostTensor log_softmax_c(const HostTensor& x) {
  int64_t n = x.shape()[0], d = x.shape()[2];
  HostTensor y(DType::f32, x.shape());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double m = -INFINITY, s = 0;
      for (int64_t c = 0; c < kClasses; ++c) m = std::max(m, x.get((i * kClasses + c) * d + j));
      for (int64_t c = 0; c < kClasses; ++c) s += std::exp(x.get((i * kClasses + c) * d + j) - m);
      for (int64_t c = 0; c < kClasses; ++c)
        y.set((i * kClasses + c) * d + j, x.get((i * kClasses + c) * d + j) - m - std::log(s));
    }
  return y;
}

// A mean over targets that are all ignored is 0 / 0, NaN, as in ONNX's reference.
void check_close(const HostTensor& got, const HostTensor& want) {
  REQUIRE(got.shape() == want.shape());
  for (int64_t i = 0; i < want.numel(); ++i) {
    if (std::isnan(want.get(i))) CHECK(std::isnan(got.get(i)));
    else CHECK(got.get(i) == Approx(want.get(i)).epsilon(1e-5).margin(1e-6));
  }
}

TEST_CASE("NLL and softmax cross-entropy losses match the direct formula at several sizes", "[onnx][import][loss]") {
  std::mt19937_64 rng(17);
  HostTensor w(DType::f32, {kClasses});
  w.fill_random(rng, 0.5, 2.0);
  for (std::string op : {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"})
    for (std::string reduction : {"none", "sum", "mean"}) {
      absl::StatusOr<Graph> g = import_onnx_bytes(loss_model(op, reduction, w).bytes(), "loss.onnx");
      INFO(op << " reduction=" << reduction << ": " << status_message(g.status()));
      REQUIRE(g.ok());
      for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {64, 33}}) {
        INFO("N=" << n << " D=" << d);
        HostTensor x(DType::f32, {n, kClasses, d}), t(DType::i64, {n, d});
        x.fill_random(rng, -3.0, 3.0);
        std::uniform_int_distribution<int64_t> cls(0, kClasses - 1);
        for (int64_t i = 0; i < t.numel(); ++i) t.set(i, static_cast<double>(cls(rng)));
        bool sce = op == "SoftmaxCrossEntropyLoss";
        HostTensor lp = sce ? log_softmax_c(x) : x;
        TensorMap args{{"x", x}, {"t", t}};
        absl::StatusOr<std::vector<HostTensor>> ref = evaluate(*g, args);
        INFO(status_message(ref.status()));
        REQUIRE(ref.ok());
        check_close((*ref)[0], expected_loss(lp, t, w, reduction));
        if (sce) check_close((*ref)[1], lp);
#if KILN_WITH_LLVM
        absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
        INFO(status_message(cg.status()));
        REQUIRE(cg.ok());
        absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, args);
        INFO(status_message(cpu.status()));
        REQUIRE(cpu.ok());
        for (size_t i = 0; i < ref->size(); ++i) check_close((*cpu)[i], (*ref)[i]);
#endif
      }
    }
}

TEST_CASE("loss operands that do not fit fail naming the node", "[onnx][import][loss][errors]") {
  ModelBuilder m(13);
  m.input("x", kF32, {2, kClasses, 3});
  SECTION("a target of the wrong shape") {
    m.input("t", kI64, {2, 4});
    m.node("NegativeLogLikelihoodLoss", {"x", "t"}, {"loss"}, "nll");
    m.output("loss", kF32, {});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
    REQUIRE(!g.ok());
    CHECK(status_message(g.status()) ==
          "test.onnx: node 'nll' (NegativeLogLikelihoodLoss, opset 13): target must be an integer tensor of shape "
          "[2, 3] for input f32[2, 5, 3], got i64[2, 4]");
  }
  SECTION("a weight of the wrong length") {
    m.input("t", kI64, {2, 3});
    m.input("w", kF32, {4});
    m.node("SoftmaxCrossEntropyLoss", {"x", "t", "w"}, {"loss"}, "sce");
    m.output("loss", kF32, {});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
    REQUIRE(!g.ok());
    CHECK(status_message(g.status()) ==
          "test.onnx: node 'sce' (SoftmaxCrossEntropyLoss, opset 13): weight must be f32[5] for input f32[2, 5, 3], "
          "got f32[4]");
  }
  SECTION("an unknown reduction") {
    m.input("t", kI64, {2, 3});
    set_attr(m.node("NegativeLogLikelihoodLoss", {"x", "t"}, {"loss"}, "nll"), "reduction", std::string("max"));
    m.output("loss", kF32, {});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "test.onnx");
    REQUIRE(!g.ok());
    CHECK(status_message(g.status()) ==
          "test.onnx: node 'nll' (NegativeLogLikelihoodLoss, opset 13): reduction must be none, sum or mean, got 'max'");
  }
}

}  // namespace
}  // namespace kiln
