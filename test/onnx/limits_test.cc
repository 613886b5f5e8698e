// Extreme values in ONNX models: constant folding never traps and follows the reference's
// integer semantics, ranges and tiles are bounded, and dims whose sizes overflow are
// refused with an error instead of a crash or a wrong size (issue 21).
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>

#include "test/onnx/import_util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// out = op(a, b) for two known i64 vectors; the importer folds it.
std::vector<int64_t> folded(const std::string& op, const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  ModelBuilder m;
  m.ints("a", a).ints("b", b);
  m.node(op, {"a", "b"}, {"y"});
  m.output("y", kI64, {static_cast<int64_t>(std::max(a.size(), b.size()))});
  Graph g = import_ok(m);
  std::vector<HostTensor> out = run(g, {});
  std::vector<int64_t> v;
  for (int64_t i = 0; i < out[0].numel(); ++i) v.push_back(out[0].get_int(i));
  return v;
}

}  // namespace

TEST_CASE("folding Div(INT64_MIN, -1) wraps as the reference does, no SIGFPE", "[onnx][limits]") {
  CHECK(folded("Div", {kMin, 7, -7}, {-1, -2, 2}) == std::vector<int64_t>{kMin, -3, -3});
  CHECK(folded("Mul", {kMax}, {2}) == std::vector<int64_t>{-2});  // wrapping, as binary_int
  CHECK(folded("Sub", {kMin}, {1}) == std::vector<int64_t>{kMax});
}

TEST_CASE("Range with spans beyond int64 is refused or exact, never a trap", "[onnx][limits]") {
  auto range = [](int64_t start, int64_t limit, int64_t delta) {
    ModelBuilder m;
    m.int_scalar("s", start).int_scalar("l", limit).int_scalar("d", delta);
    m.node("Range", {"s", "l", "d"}, {"y"});
    m.output("y", kI64, {std::string("N")});
    return import_onnx_bytes(m.bytes(), "test.onnx");
  };
  absl::StatusOr<Graph> down = range(0, kMin, -1);  // 2^63 elements: too long
  REQUIRE(!down.ok());
  CHECK_THAT(status_message(down.status()), Catch::Contains("too long"));
  absl::StatusOr<Graph> all = range(kMin, kMax, 1);  // its span does not fit int64
  REQUIRE(!all.ok());
  CHECK_THAT(status_message(all.status()), Catch::Contains("too long"));
  absl::StatusOr<Graph> top = range(kMax - 2, kMax, 1);  // near the top: two values, exact
  REQUIRE(top.ok());
  std::vector<HostTensor> out = run(*top, {});
  REQUIRE(out[0].numel() == 2);
  CHECK(out[0].get_int(0) == kMax - 2);
  CHECK(out[0].get_int(1) == kMax - 1);
}

TEST_CASE("Tile with huge repeats is an error, not an abort", "[onnx][limits]") {
  ModelBuilder m;
  m.input("x", kF32, {2, 3});
  m.ints("r", {int64_t{1} << 40, 1});
  m.node("Tile", {"x", "r"}, {"y"});
  m.output("y", kF32, {std::string("A"), 3});
  absl::Status s = import_error(m);
  CHECK_THAT(status_message(s), Catch::Contains("Tile repeats"));
}

TEST_CASE("input dims whose byte size overflows are refused at import", "[onnx][limits]") {
  ModelBuilder m;
  m.input("x", kF32, {int64_t{1} << 62, int64_t{1} << 62});
  m.node("ReduceSum", {"x"}, {"y"});
  m.output("y", kF32, {1, 1});
  absl::Status s = import_error(m);
  CHECK_THAT(status_message(s), Catch::Contains("overflows int64"));
}
