// convert_float: every f32 value of a graph stored as bf16 or f16 (the CLI's --float), with
// the types re-inferred, constants and parameter data saturated instead of overflowing, and
// the converted graph evaluating to the f32 graph's answer within the narrow type's error.
#include <cmath>
#include <random>

#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/verifier.h"
#include "passes/convert_float.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

// The shape of an exported attention mask: (1 - mask) * finfo(float32).min, added to scores
// (%one is f32 by the constant's default dtype).
constexpr const char* kGraph = R"(graph g(%x: f32[B, 8], %mask: i64[B, 8], %w: f32[8, 8] param) {
  %l = linear(%x, %w)
  %m = cast(%mask, dtype=f32)
  %one = constant(value=1)
  %inv = sub(%one, %m)
  %low = constant(value=-3.4028234663852886e38, dtype=f32)
  %bias = mul(%inv, %low)
  %s = add(%l, %bias)
  %p = softmax(%s, axis=-1)
  %pos = iota(shape=[B, 8], axis=1, dtype=f32)
  %q = add(%p, %pos)
  %n = cast(%mask, dtype=i32)
  return %q, %n
})";

Graph parsed() { return parse_or_fail(kGraph); }

TEST_CASE("convert_float stores every f32 value as bf16 and keeps the rest", "[passes][convert_float]") {
  Graph g = parsed();
  absl::StatusOr<Graph> c = convert_float(g, DType::bf16);
  require_ok(c.status());
  require_ok(verify(*c));
  const std::string ir = print_graph(*c);
  CHECK(ir.find("f32") == std::string::npos);
  require_checks(ir, R"(
    CHECK: graph g(%x: bf16[B, 8], %mask: i64[B, 8], %w: bf16[8, 8] param)
    CHECK: %m = cast(%mask, dtype=bf16)
    CHECK: %low = constant(value=-3.3895313892515355e+38, dtype=bf16)
    CHECK: %pos = iota(shape=[B, 8], axis=1, dtype=bf16)
    CHECK: %n = cast(%mask, dtype=i32)
    CHECK: return %q, %n
  )");
}

TEST_CASE("convert_float: the saturated mask keeps masked rows finite, and values stay close to f32",
          "[passes][convert_float]") {
  Graph g = parsed();
  for (DType t : {DType::bf16, DType::f16}) {
    absl::StatusOr<Graph> c = convert_float(g, t);
    require_ok(c.status());
    for (int64_t b : {1, 3, 17}) {
      std::mt19937_64 rng(b);
      HostTensor x(DType::f32, {b, 8}), mask(DType::i64, {b, 8}), w(DType::f32, {8, 8});
      x.fill_random(rng);
      w.fill_random(rng);
      mask.fill_random(rng, 0, 2);
      HostTensor xn(t, {b, 8}), wn(t, {8, 8});
      for (int64_t i = 0; i < x.numel(); ++i) xn.set(i, x.get(i));
      for (int64_t i = 0; i < w.numel(); ++i) wn.set(i, w.get(i));
      auto want = evaluate(g, {{"x", x}, {"mask", mask}, {"w", w}});
      auto got = evaluate(*c, {{"x", xn}, {"mask", mask}, {"w", wn}});
      require_ok(want.status());
      require_ok(got.status());
      REQUIRE((*got)[0].dtype() == t);
      for (int64_t i = 0; i < (*want)[0].numel(); ++i) {
        INFO(dtype_name(t) << " B=" << b << " element " << i);
        REQUIRE(std::isfinite((*got)[0].get(i)));
        CHECK(std::abs((*got)[0].get(i) - (*want)[0].get(i)) <= 0.05 + 0.02 * std::abs((*want)[0].get(i)));
      }
      CHECK((*got)[1].dtype() == DType::i32);
    }
  }
}

TEST_CASE("convert_float only narrows to bf16 or f16", "[passes][convert_float]") {
  absl::StatusOr<Graph> c = convert_float(parsed(), DType::i32);
  REQUIRE(!c.ok());
  CHECK(status_message(c.status()) == "convert_float: the target type must be bf16 or f16, not i32");
}

}  // namespace
