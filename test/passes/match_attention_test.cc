// match_attention: attention as HF models export it becomes the attention op (printed IR),
// a softmax whose scores are used elsewhere stays, and the rewritten graph compiled through
// the default pipeline matches the reference evaluator on the original.
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/match_attention.h"
#include "test/fuzz/check.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

// GPT-2's form: scores divided by a computed scalar, a bool causal mask applied with
// where(mask, s, min_float), an additive padding mask, same-dtype casts between the steps.
// The computed divisor scales q; the two masks become one additive mask.
constexpr const char* kGpt2 = R"(graph gpt2(%q: f32[B, 4, T, 8], %kt: f32[B, 4, 8, T], %v: f32[B, 4, T, 8], %causal: bool[1, 1, T, T], %pad: f32[B, 1, 1, T], %d: f32[]) {
  %s = matmul(%q, %kt)
  %e = abs(%d)
  %one = constant(value=1.0, dtype=f32)
  %r = add(%e, %one)
  %root = sqrt(%r)
  %scaled = div(%s, %root)
  %c = cast(%scaled, dtype=f32)
  %min = constant(value=-3.4028235e+38, dtype=f32)
  %masked = where(%causal, %c, %min)
  %added = add(%masked, %pad)
  %p = softmax(%added, axis=3)
  %pc = cast(%p, dtype=f32)
  %o = matmul(%pc, %v)
  %other = softmax(%q)
  return %o, %other
}
)";

constexpr const char* kGpt2Checks = R"(CHECK: %root = sqrt(%r) : f32[]
CHECK: %div = div(%q, %root) : f32[B, 4, T, 8]
CHECK-NEXT: %permute = permute(%kt, dims=[0, 1, 3, 2]) : f32[B, 4, T, 8]
CHECK: %where = where(%causal, %constant, %min) : f32[1, 1, T, T]
CHECK-NEXT: %add = add(%where, %pad) : f32[B, 1, T, T]
CHECK-NEXT: %o = attention(%div, %permute, %v, %add, scale=1.0) : f32[B, 4, T, 8]
CHECK-NEXT: %other = softmax(%q) : f32[B, 4, T, 8]
CHECK-NOT: matmul
)";

}  // namespace

TEST_CASE("match_attention: GPT-2's exported attention becomes one attention op", "[passes][attention]") {
  Graph g = parse_or_fail(kGpt2);
  Graph m = g.clone();
  absl::StatusOr<bool> changed = match_attention(m);
  REQUIRE(changed.ok());
  CHECK(*changed);
  require_ok(verify(m));
  require_checks(print_graph(m), kGpt2Checks);
  require_ok(check_compiled_matches_reference(g, test_bindings(g), 1));
}

TEST_CASE("match_attention: leaves softmaxes whose pieces are read elsewhere", "[passes][attention]") {
  Graph g = parse_or_fail(R"(graph g(%q: f32[B, 4, T, 8], %kt: f32[B, 4, 8, T], %v: f32[B, 4, T, 8]) {
  %s = matmul(%q, %kt)
  %p = softmax(%s)
  %o = matmul(%p, %v)
  return %o, %s
})");
  absl::StatusOr<bool> changed = match_attention(g);
  REQUIRE(changed.ok());
  CHECK_FALSE(*changed);
  // Scores with a batch that broadcasts are no attention op's either.
  Graph b = parse_or_fail(R"(graph g(%q: f32[B, 4, T, 8], %kt: f32[1, 4, 8, T], %v: f32[B, 4, T, 8]) {
  %s = matmul(%q, %kt)
  %p = softmax(%s)
  %o = matmul(%p, %v)
  return %o
})");
  changed = match_attention(b);
  REQUIRE(changed.ok());
  CHECK_FALSE(*changed);
}
