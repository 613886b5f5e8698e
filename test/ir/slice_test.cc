// Slices whose bounds are dims: text form, the length they give, and the verifier's proof
// that they lie in the sliced dim for every value the symbols' bounds allow.
#include <catch2/catch.hpp>

#include "ir/op_attrs.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "ir/verifier.h"

namespace kiln {
namespace {

absl::StatusOr<Graph> parse_and_verify(std::string_view text) {
  absl::StatusOr<Graph> g = parse_graph(text, "slice.kiln");
  if (!g.ok()) return g.status();
  if (absl::Status s = verify(*g); !s.ok()) return s;
  return g;
}

TEST_CASE("symbolic slice bounds print and parse back", "[ir][slice]") {
  const char* text = R"(graph g(%x: f32[B, T, 8], %t: f32[1, 512, 8]) {
  symbol T in [2, 512]
  %a = slice(%x, axis=1, start=1, end=T - 1) : f32[B, T - 2, 8]
  %b = slice(%t, axis=1, start=0, end=T) : f32[1, T, 8]
  %c = slice(%x, axis=1, start=T - 2, end=9223372036854775807, step=3) : f32[B, 1, 8]
  return %a, %b, %c
}
)";
  absl::StatusOr<Graph> g = parse_and_verify(text);
  INFO(status_message(g.status()));
  REQUIRE(g.ok());
  CHECK(print_graph(*g) == text);
}

TEST_CASE("slice bounds: constants on a static dim clamp, others are taken as given", "[ir][slice]") {
  SliceBounds s = slice_bounds(Dim(10), -3, 100, 1);
  CHECK(s.clamped);
  CHECK(s.start == SymExpr(7));
  CHECK(s.length == SymExpr(3));
  SymExpr T = SymExpr::symbol("T");
  SliceBounds t = slice_bounds(T, -1, int64_t{1} << 62, 1);
  CHECK(!t.clamped);
  CHECK(t.start == T - 1);
  CHECK(t.end == T);
  CHECK(t.length == SymExpr(1));
  SliceBounds u = slice_bounds(Dim(512), 0, T, 2);  // a symbolic bound on a static dim
  CHECK(!u.clamped);
  CHECK(u.length == (T + 1).floordiv(2));
  CHECK(slice_conditions(u, Dim(512)).size() == 3);
  CHECK(!slice_step_ok(T, 0, T, -1).ok());
  CHECK(!slice_step_ok(Dim(4), 0, 4, 0).ok());
}

TEST_CASE("the verifier rejects a slice that may leave its dim, naming the bound", "[ir][slice][errors]") {
  // end = 5 on a dim T >= 1: T could be 3.
  absl::StatusOr<Graph> g = parse_and_verify(R"(graph g(%x: f32[T]) {
  %y = slice(%x, axis=0, start=0, end=5) : f32[5]
  return %y
})");
  REQUIRE(!g.ok());
  CHECK_THAT(status_message(g.status()), Catch::Contains("slice end <= dim does not hold for every value of T in [1, inf]"));
  // Bounded so that it holds: accepted.
  CHECK(parse_and_verify(R"(graph g(%x: f32[T]) {
  symbol T in [5, 64]
  %y = slice(%x, axis=0, start=0, end=5) : f32[5]
  return %y
})")
            .ok());
  // end = T on a static dim 512 needs T <= 512.
  g = parse_and_verify(R"(graph g(%x: f32[512], %n: f32[T]) {
  %y = slice(%x, axis=0, start=0, end=T) : f32[T]
  return %y
})");
  REQUIRE(!g.ok());
  CHECK_THAT(status_message(g.status()), Catch::Contains("end <= dim"));
  // start after end.
  g = parse_and_verify(R"(graph g(%x: f32[T]) {
  symbol T in [4, 100]
  %y = slice(%x, axis=0, start=T - 1, end=2) : f32[3 - T]
  return %y
})");
  REQUIRE(!g.ok());
  CHECK_THAT(status_message(g.status()), Catch::Contains("start <= end"));
}

TEST_CASE("value_range bounds expressions by the symbols' ranges", "[ir][sym]") {
  SymExpr T = SymExpr::symbol("T"), B = SymExpr::symbol("B");
  auto r = [](const std::string& s) { return s == "T" ? SymRange{2, 10} : SymRange{1, std::nullopt}; };
  SymRange a = value_range(T - 2, r);
  CHECK(a.lo == 0);
  CHECK(a.hi == 8);
  SymRange b = value_range(B * T - 1, r);
  CHECK(b.lo == 1);
  CHECK(!b.hi);
  SymRange c = value_range(T.mod(4) + T.floordiv(3), r);
  CHECK(c.lo == 0);
  CHECK(c.hi == 6);
  SymRange d = value_range(SymExpr(3) - B, r);
  CHECK(!d.lo);
  CHECK(d.hi == 2);
}

}  // namespace
}  // namespace kiln
