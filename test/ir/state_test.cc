// State inputs and their in-place writes (DESIGN.md, State): the text syntax, the verifier's
// rules (one write per state, only state is written, reads after the write go through its
// result, the graph returns it) and the shape/dtype rules of cache_write and attention.
#include <catch2/catch.hpp>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"

using namespace kiln;

namespace {

// The verifier's message for `text`, or "ok".
std::string verdict(std::string_view text) {
  absl::StatusOr<Graph> g = parse_graph(text, "s.kiln");
  if (!g.ok()) return std::string(g.status().message());
  absl::Status s = verify(*g);
  return s.ok() ? "ok" : std::string(s.message());
}

}  // namespace

TEST_CASE("state inputs print, parse and clone as state", "[state]") {
  const char* text = R"(graph g(%c: f32[B, 2, S, 4] state, %x: f32[B, 2, T, 4], %p: i64[B]) {
  %c1 = cache_write(%c, %x, %p) : f32[B, 2, S, 4]
  return %c1
}
)";
  absl::StatusOr<Graph> g = parse_graph(text);
  REQUIRE(g.ok());
  REQUIRE(verify(*g).ok());
  CHECK(g->find("c")->is_state());
  CHECK(g->find("c")->is_input());
  CHECK_FALSE(g->find("x")->is_state());
  CHECK(print_graph(*g) == text);
  Graph c = g->clone();
  CHECK(c.find("c")->is_state());
  CHECK(state_storage(c.find("c1")) == c.find("c"));
  CHECK(state_storage(c.find("x")) == nullptr);
}

TEST_CASE("the verifier enforces the state rules", "[state]") {
  // Only a state input may be written.
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4], %x: f32[2, 2, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  return %c1
})"),
             Catch::Contains("writes %c, which is not a state input"));
  // At most one write per state value.
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  %c2 = cache_write(%c, %x, %p)
  return %c1, %c2
})"),
             Catch::Contains("state %c is already written by %c1 = cache_write"));
  // A write's result is not a state input: it cannot be written again.
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  %c2 = cache_write(%c1, %x, %p)
  return %c2
})"),
             Catch::Contains("writes %c1, which is not a state input"));
  // Once written, the state is read through the write's result only.
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  %s = sum(%c)
  return %c1, %s
})"),
             Catch::Contains("%s = sum (s.kiln:3:3): reads state %c, which %c1 = cache_write"));
  // The updated state is returned (an alias of the caller's buffer), the input never.
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  %s = sum(%c1)
  return %s
})"),
             Catch::Contains("must return the updated state %c1"));
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state) {
  return %c
})"),
             Catch::Contains("returns state input %c"));
  // A state that is only read is fine, as is reading the written state after the write.
  CHECK(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %q: f32[2, 4, 1, 4]) {
  %a = attention(%q, %c, %c)
  return %a
})") == "ok");
  CHECK(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: i64[2], %q: f32[2, 4, 1, 4]) {
  %c1 = cache_write(%c, %x, %p)
  %a = attention(%q, %c1, %c1)
  return %a, %c1
})") == "ok");
}

TEST_CASE("cache_write and attention check their operands with located errors", "[state]") {
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 3, 1, 4], %p: i64[2]) {
  %c1 = cache_write(%c, %x, %p)
  return %c1
})"),
             Catch::Contains("s.kiln:2:3: cache_write: new [B, KVH, T, D] f32[2, 3, 1, 4] does not fit the cache"));
  CHECK_THAT(verdict(R"(graph g(%c: f32[2, 2, 8, 4] state, %x: f32[2, 2, 1, 4], %p: f32[2]) {
  %c1 = cache_write(%c, %x, %p)
  return %c1
})"),
             Catch::Contains("positions must be an integer [2] or [2, 1], got f32[2]"));
  CHECK_THAT(verdict(R"(graph g(%c: f32[NB, 16, 2, 4] state, %x: f32[B, 2, 1, 4], %p: i32[B], %t: i32[3, 4]) {
  %c1 = cache_write(%c, %x, %p, %t)
  return %c1
})"),
             Catch::Contains("block_table must be an integer [B, max_blocks], got i32[3, 4]"));
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 6, T, 8], %k: f32[B, 4, T, 8]) {
  %a = attention(%q, %k, %k)
  return %a
})"),
             Catch::Contains("k's 4 heads must divide q's 6 (GQA)"));
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 4, T, 8], %k: f32[B, 4, T, 8], %l: i32[B], %m: bool[T, T]) {
  %a = attention(%q, %k, %k, %l, %m)
  return %a
})"),
             Catch::Contains("each at most once and in this order"));
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 4, 1, 8], %k: f32[NB, 16, 4, 8], %t: i32[B, 4]) {
  %a = attention(%q, %k, %k, %t)
  return %a
})"),
             Catch::Contains("the paged form needs kv_lens"));
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 4, T, 8], %k: f32[B, 4, T, 8]) {
  %a = attention(%q, %k, %k, window=-1)
  return %a
})"),
             Catch::Contains("window must be >= 0"));
  // Found by fuzz_compile (2026-12-07): i16 lengths were read as i32 by the CPU's routine, past
  // the end of the buffer. The devices read lengths and block ids as i32 or i64 only.
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 2, T, 8], %k: f32[B, 2, S, 8], %l: i16[B]) {
  %a = attention(%q, %k, %k, %l, causal=true)
  return %a
})"),
             Catch::Contains("kv_lens must be i32 or i64, got i16[B]"));
  CHECK_THAT(verdict(R"(graph g(%q: f32[B, 4, 1, 8], %k: f32[NB, 16, 4, 8], %l: i32[B], %t: u8[B, 4]) {
  %a = attention(%q, %k, %k, %l, %t)
  return %a
})"),
             Catch::Contains("block_table must be i32 or i64, got u8[B, 4]"));
  absl::StatusOr<Graph> g = parse_graph(R"(graph g(%q: bf16[B, 8, T, 64], %k: bf16[NB, 16, 2, 64], %l: i64[B], %t: i32[B, M]) {
  %a = attention(%q, %k, %k, %l, %t)
  return %a
})");
  REQUIRE(g.ok());
  CHECK(g->find("a")->type().to_string() == "bf16[B, 8, T, 64]");
}
