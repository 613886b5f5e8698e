// Kernel counts of the default pipeline on the patterns the fusion passes exist for, and
// each fused graph against the reference evaluator (fresh random inputs; every symbol 1,
// then odd and larger sizes).
#include "test/fuzz/check.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

struct Counts {
  int kernels, gemms;
};

// Compiles `text`, checks the counts and (when given) the scheduled IR, then numerics.
void require_counts(const char* text, Counts want, const char* checks = nullptr) {
  Graph g = parse_or_fail(text);
  PipelineResult r = compile_or_fail(g);
  std::string scheduled = print_scheduled(r.state.graph, r.state.schedule);
  INFO(scheduled);
  CHECK(r.summary.kernels == want.kernels);
  CHECK(r.summary.gemms == want.gemms);
  if (checks) require_checks(scheduled, checks);
  require_ok(check_compiled_matches_reference(g, test_bindings(g), 7));
  require_ok(check_fused_matches_unfused(g, test_bindings(g), 7));
}

}  // namespace

TEST_CASE("rms_norm(x + residual) * w returning the sum and the norm: 1 kernel", "[kernel-count]") {
  require_counts(R"(graph g(%x: bf16[B, T, 64], %residual: bf16[B, T, 64], %w: bf16[64] param) {
  %sum = add(%x, %residual)
  %y = rms_norm(%sum, %w, axes=[-1], eps=1e-6)
  return %sum, %y
})", {1, 0}, "CHECK: reduction: 9 nodes, reads (%x, %residual, %cast_1) writes (%sum, %y)");
}

TEST_CASE("softmax over the last axis: 1 kernel", "[kernel-count]") {
  require_counts(R"(graph g(%x: bf16[B, 4, T, 33]) {
  %p = softmax(%x, axis=-1)
  return %p
})", {1, 0});
}

TEST_CASE("layer_norm followed by gelu: 1 kernel", "[kernel-count]") {
  require_counts(R"(graph g(%x: bf16[B, T, 96], %w: bf16[96] param, %b: bf16[96] param) {
  %n = layer_norm(%x, %w, %b, axes=[-1], eps=1e-5)
  %y = gelu(%n)
  return %y
})", {1, 0}, "CHECK: %y = gelu(%n) : bf16[B, T, 96]  # group {{[0-9]}} (reduction)");
}

TEST_CASE("linear + bias + gelu: 1 GEMM carrying its epilogue", "[kernel-count]") {
  // The bias as an add after the GEMM, and as linear's third operand.
  require_counts(R"(graph g(%x: bf16[B, 64], %w: bf16[128, 64] param, %b: bf16[128] param) {
  %h = linear(%x, %w)
  %hb = add(%h, %b)
  %y = gelu(%hb, approximate="tanh")
  return %y
})", {0, 1}, "CHECK: group 0 gemm: 3 nodes, reads (%x, %w, %b) writes (%y)");
  require_counts(R"(graph g(%x: f32[B, T, 48], %w: f32[40, 48] param, %b: f32[40] param) {
  %h = linear(%x, %w, %b)
  %y = gelu(%h)
  return %y
})", {0, 1}, "CHECK: group 0 gemm: 2 nodes, reads (%x, %w, %b) writes (%y)");
}

TEST_CASE("Llama MLP: 2 GEMMs (gate and up merged) and silu * mul in one kernel", "[kernel-count]") {
  require_counts(R"(graph g(%x: bf16[B, 64], %w_gate: bf16[172, 64] param, %w_up: bf16[172, 64] param, %w_down: bf16[64, 172] param) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  return %y
})", {1, 2}, R"(
CHECK: %concat = concat(%w_gate, %w_up, axis=0) : bf16[344, 64]  # group 0 (weight-prep elementwise)
CHECK: %linear = linear(%x, %concat) : bf16[B, 344]  # group 1 (gemm)
CHECK: %g = slice(%linear, axis=-1, start=0, end=172) : bf16[B, 172]  # group 2 (elementwise)
CHECK: %h = mul(%a, %u) : bf16[B, 172]  # group 2 (elementwise)
CHECK: %y = linear(%h, %w_down) : bf16[B, 64]  # group 3 (gemm)
)");
}

TEST_CASE("a chain of 10 elementwise ops with broadcasting: 1 kernel", "[kernel-count]") {
  require_counts(R"(graph g(%x: f32[B, 1, 33], %y: f32[1, T, 33], %z: f32[33], %s: bf16[B, T, 1]) {
  %a = add(%x, %y)
  %b = mul(%a, %z)
  %c = tanh(%b)
  %sf = cast(%s, dtype=f32)
  %d = sub(%c, %sf)
  %e = exp(%d)
  %f = maximum(%e, %x)
  %g = sigmoid(%f)
  %h = div(%g, %y)
  %i = neg(%h)
  %j = mul(%i, %sf)
  return %j
})", {1, 0}, "CHECK: group 0 elementwise: 11 nodes, reads (%x, %y, %z, %s) writes (%j)");
}

TEST_CASE("depthwise conv + bias + relu6 + residual: 1 kernel, no GEMM", "[kernel-count]") {
  require_counts(R"(graph g(%x: f32[B, 8, H, W], %w: f32[8, 1, 3, 3] param, %b: f32[8] param) {
  %d = conv(%x, %w, %b, groups=8, pads=[1, 1, 1, 1])
  %zero = constant(value=0.0, dtype=f32)
  %six = constant(value=6.0, dtype=f32)
  %r = maximum(%d, %zero)
  %c = minimum(%r, %six)
  %y = add(%c, %x)
  return %y
})", {1, 0});
}
