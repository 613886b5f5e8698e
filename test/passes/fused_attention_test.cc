// The pipeline with a target that runs attention fused (PipelineOptions::fused_attention):
// decompose keeps the forms it accepts whole (and makes a matching sdpa one), fusion puts
// each alone in an attention group with the views it reads q, k, v through as its prologue
// (and a permute of its result), lowering gives it no loop nest; a form the target
// refuses is decomposed as before. Asserted on the printed schedule and the kernel counts.
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

bool f32_only(const AttentionForm& f) { return f.dtype == DType::f32; }

}  // namespace

TEST_CASE("fused attention: a kept attention is one attention group between the projections", "[attention][fused]") {
  Graph g = parse_or_fail(R"(graph g(%x: f32[B, T, 32], %w: f32[32, 32] param, %k: f32[B, 2, T, 16], %v: f32[B, 2, T, 16]) {
  %p = matmul(%x, %w)
  %r = reshape(%p, shape=[B, T, 2, 16])
  %q = permute(%r, dims=[0, 2, 1, 3])
  %a = attention(%q, %k, %v, causal=true)
  %y = mul(%a, %a)
  return %y
})");
  PipelineOptions fused;
  fused.fused_attention = f32_only;
  PipelineResult r = compile_or_fail(g, fused);
  std::string scheduled = print_scheduled(r.state.graph, r.state.schedule);
  INFO(scheduled);
  // q is read through the reshape and permute of the projection: no kernel makes it dense.
  require_checks(scheduled, R"(CHECK: %r = reshape(%p, shape=[B, T, 2, 16]) : f32[B, T, 2, 16]  # group 1 (attention prologue)
CHECK: %q = permute(%r, dims=[0, 2, 1, 3]) : f32[B, 2, T, 16]  # group 1 (attention prologue)
CHECK: %a = attention(%q, %k, %v, causal=true) : f32[B, 2, T, 16]  # group 1 (attention)
CHECK: attention: 3 nodes, reads (%p, %k, %v) writes (%a))");
  CHECK(r.summary.attentions == 1);
  CHECK(r.summary.gemms == 1);
  CHECK(r.summary.kernels == 1);  // the mul
  for (size_t i = 0; i < r.kernels.size(); ++i) {
    if (r.state.schedule.groups[i].kind != KernelGroup::Kind::Attention) continue;
    const kir::Kernel& k = r.kernels[i];  // buffers only: p, k, v, then a
    CHECK(k.name == str_cat("k", i, "_attention"));
    CHECK(k.stages.empty());
    REQUIRE(k.buffers.size() == 4);
    CHECK(k.buffers[0].name == "p");
    CHECK(k.buffers[3].name == "a");
  }

  PipelineResult d = compile_or_fail(g);  // no fused attention: GEMM -> softmax -> GEMM
  CHECK(d.summary.attentions == 0);
  CHECK(d.summary.gemms == 3);
  CHECK(print_scheduled(d.state.graph, d.state.schedule).find("attention(") == std::string::npos);
}

TEST_CASE("fused attention: a form the target refuses is decomposed; a matching sdpa is kept", "[attention][fused]") {
  Graph g = parse_or_fail(R"(graph g(%q: bf16[B, 4, T, 16], %k: bf16[B, 4, T, 16], %v: bf16[B, 4, T, 16], %q2: f32[B, 4, T, 16], %k2: f32[B, 4, S, 16], %v2: f32[B, 4, S, 16]) {
  %a = attention(%q, %k, %v)
  %s = scaled_dot_product_attention(%q2, %q2, %q2, causal=true)
  %c = scaled_dot_product_attention(%q2, %k2, %v2, causal=true)
  return %a, %s, %c
})");
  PipelineOptions fused;
  fused.fused_attention = f32_only;
  PipelineResult r = compile_or_fail(g, fused);
  std::string scheduled = print_scheduled(r.state.graph, r.state.schedule);
  INFO(scheduled);
  // bf16 is refused; the causal sdpa with Tq = Tk becomes attention; with Tq = T and Tk = S
  // its top-left causal alignment is not attention's, so it is decomposed.
  require_checks(scheduled, R"(CHECK-NOT: %a = attention
CHECK: %s = attention(%q2, %q2, %q2, causal=true) : f32[B, 4, T, 16]  # group {{[0-9]+}} (attention))");
  CHECK(r.summary.attentions == 1);
}
