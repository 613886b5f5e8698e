// Tan, Sinh, Cosh, Asinh, Acosh, Atanh, Atan, Asin and Acos as the importer composes them
// (the last three on kiln's atan), against the C library on inputs spanning their domains' magnitudes (where naive forms cancel or
// overflow), on the reference evaluator and compiled for the CPU.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <random>

#include "compiler/compile.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/onnx/model_builder.h"

namespace kiln {
namespace {

using testing::ModelBuilder;
constexpr int32_t kF32 = onnx::TensorProto::FLOAT;

struct Case {
  std::string op;
  std::function<double(double)> f;
  double lo, hi;  // |x| = 10^u for u uniform in [lo, hi] (acosh: 1 + that)
  bool odd;       // random signs
};

TEST_CASE("tan, the hyperbolic and the inverse trigonometric functions stay accurate across magnitudes", "[onnx][import][hyperbolic]") {
  std::vector<Case> cases = {
      {"Tan", [](double x) { return std::tan(x); }, -6, 0.1, true},
      {"Sinh", [](double x) { return std::sinh(x); }, -6, 1.9, true},
      {"Cosh", [](double x) { return std::cosh(x); }, -6, 1.9, true},
      {"Asinh", [](double x) { return std::asinh(x); }, -6, 30, true},
      {"Acosh", [](double x) { return std::acosh(x); }, -6, 30, false},
      {"Atanh", [](double x) { return std::atanh(x); }, -6, -0.01, true},
      {"Atan", [](double x) { return std::atan(x); }, -6, 30, true},
      {"Asin", [](double x) { return std::asin(x); }, -6, 0, true},
      {"Acos", [](double x) { return std::acos(x); }, -6, 0, true},
  };
  std::mt19937_64 rng(11);
  for (const Case& c : cases) {
    ModelBuilder m(13);
    m.input("x", kF32, {"N"});
    m.node(c.op, {"x"}, {"y"});
    m.output("y", kF32, {"N"});
    absl::StatusOr<Graph> g = import_onnx_bytes(m.bytes(), "trig.onnx");
    INFO(c.op << ": " << status_message(g.status()));
    REQUIRE(g.ok());
#if KILN_WITH_LLVM
    absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu});
    INFO(status_message(cg.status()));
    REQUIRE(cg.ok());
#endif
    for (int64_t n : {1, 33, 2000}) {
      HostTensor x(DType::f32, {n});
      std::uniform_real_distribution<double> u(c.lo, c.hi);
      for (int64_t i = 0; i < n; ++i) {
        double v = std::pow(10.0, u(rng));
        if (c.op == "Acosh") v += 1;
        if (c.odd && rng() % 2) v = -v;
        x.set(i, v);
      }
      std::vector<std::vector<HostTensor>> outs;
      absl::StatusOr<std::vector<HostTensor>> ref = evaluate(*g, {{"x", x}});
      INFO(status_message(ref.status()));
      REQUIRE(ref.ok());
      outs.push_back(*ref);
#if KILN_WITH_LLVM
      absl::StatusOr<std::vector<HostTensor>> cpu = run_host(*cg, {{"x", x}});
      INFO(status_message(cpu.status()));
      REQUIRE(cpu.ok());
      outs.push_back(*cpu);
#endif
      for (const std::vector<HostTensor>& y : outs)
        for (int64_t i = 0; i < n; ++i) {
          INFO(c.op << "(" << x.get(i) << "), N=" << n);
          CHECK(y[0].get(i) == Approx(c.f(x.get(i))).epsilon(2e-6));
        }
    }
  }
}

}  // namespace
}  // namespace kiln
