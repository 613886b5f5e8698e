// Graphs that several test suites share: the issue's MLP (parser, tracer, CLI), and the
// graphs that the kernel IR evaluator (test/codegen) and the CPU backend (test/cpu) check
// against the reference evaluator. One text each, so that the suites exercise the same
// graphs.
#pragma once

#include "ir/str.h"
#include "passes/shard.h"

namespace kiln::test_graphs {

// The foundation issue's example, verbatim: a Llama MLP with its annotated types.
inline constexpr const char* kIssueMlp = R"(graph mlp(%x: bf16[B, 4096], %w_up: bf16[11008, 4096] param, %w_gate: bf16[11008, 4096] param, %w_down: bf16[4096, 11008] param) {
  %g = linear(%x, %w_gate) : bf16[B, 11008]
  %u = linear(%x, %w_up) : bf16[B, 11008]
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down) : bf16[B, 4096]
  %n = rms_norm(%y, eps=1e-6, axes=[-1])
  return %n, %h
}
)";

// A chain of broadcasting elementwise ops, f32 and bf16.
inline constexpr const char* kChain = R"(graph chain(%x: f32[B, 7], %y: f32[7], %z: bf16[B, 1]) {
  %a = add(%x, %y)
  %b = mul(%a, %a)
  %c = tanh(%b)
  %d = cast(%z, dtype=f32)
  %e = sub(%c, %d)
  %f = sigmoid(%e)
  %g = gelu(%f, approximate="tanh")
  %h = maximum(%g, %x)
  %i = exp(%h)
  %j = gt(%i, %x)
  %k = where(%j, %i, %y)
  %l = cast(%k, dtype=bf16)
  return %l, %b
})";

// Softmax written as primitives (reduce max, reduce sum, map).
inline constexpr const char* kSoftmax = R"(graph softmax(%x: f32[B, T, 19]) {
  %m = max(%x, axes=[-1], keepdim=true)
  %d = sub(%x, %m)
  %e = exp(%d)
  %s = sum(%e, axes=[2], keepdim=true)
  %y = div(%e, %s)
  return %y
})";

// Rms_norm of a residual sum in bf16, with a weight.
inline constexpr const char* kRmsNorm = R"(graph rms(%x: bf16[B, 32], %r: bf16[B, 32], %w: bf16[32] param) {
  %h = add(%x, %r)
  %f = cast(%h, dtype=f32)
  %sq = mul(%f, %f)
  %ms = mean(%sq, axes=[-1], keepdim=true)
  %eps = constant(value=1e-6)
  %v = add(%ms, %eps)
  %inv = rsqrt(%v)
  %n = mul(%f, %inv)
  %nb = cast(%n, dtype=bf16)
  %y = mul(%nb, %w)
  return %h, %y
})";

// Every reduction, over several axes, on floats and integers.
inline constexpr const char* kReductions = R"(graph red(%x: f32[B, 5, 3], %i: i32[B, 4]) {
  %a = sum(%x, axes=[0, 2])
  %b = max(%x, axes=[-2], keepdim=true)
  %c = min(%x)
  %d = prod(%x, axes=[1])
  %e = argmax(%x, axis=1, keepdim=true)
  %f = mean(%x, axes=[-1, 0], keepdim=true)
  %g = sum(%i, axes=[1])
  %h = max(%i, axes=[0])
  return %a, %b, %c, %d, %e, %f, %g, %h
})";

// Permute, reshape, slice, squeeze, unsqueeze and expand feeding elementwise ops.
inline constexpr const char* kViews = R"(graph views(%x: f32[B, 6, 4], %y: f32[4, 1, 6], %t: f32[B, 24]) {
  %p = permute(%x, dims=[2, 0, 1])
  %r = reshape(%p, shape=[4, B, 3, 2])
  %s = slice(%r, axis=-1, start=1, end=2)
  %q = squeeze(%s, axes=[3])
  %u = unsqueeze(%q, axes=[0])
  %e = expand(%y, shape=[4, B, 6])
  %re = reshape(%e, shape=[4, B, 3, 2])
  %sl = slice(%re, axis=2, start=-1, end=-4, step=-1)
  %a = add(%sl, %r)
  %t2 = reshape(%t, shape=[B, 4, 6])
  %t3 = permute(%t2, dims=[1, 0, 2])
  %t4 = reshape(%t3, shape=[4, B, 3, 2])
  %m = mul(%a, %t4)
  return %m, %u
})";

// Reshapes through a flat view, over two symbols.
inline constexpr const char* kReshape = R"(graph r(%x: f32[B, T]) {
  %a = reshape(%x, shape=[-1])
  %b = reshape(%a, shape=[T, B])
  %c = exp(%b)
  return %c
})";

// Concat, split and gather.
inline constexpr const char* kConcatSplitGather = R"(graph cs(%a: f32[B, 3], %b: f32[B, 2], %c: f32[B, 1], %ids: i64[K], %emb: f32[10, 4]) {
  %x = concat(%a, %b, %c, axis=1)
  %p, %q = split(%x, axis=-1, sizes=[4, 2])
  %r = concat(%q, %q, axis=0)
  %e = gather(%emb, %ids, axis=0)
  %n = neg(%p)
  return %n, %r, %e, %x
})";

// A linear layer with bias, gelu and a residual add.
inline constexpr const char* kMlp = R"(graph mlp(%x: f32[B, T, 16], %w: f32[8, 16] param, %bias: f32[8] param, %r: f32[B, T, 8]) {
  %l = linear(%x, %w, %bias)
  %g = gelu(%l)
  %y = add(%g, %r)
  return %y
})";

// Matmuls: batched with a transposed operand, vector-matrix, matrix-vector.
inline constexpr const char* kMatmuls = R"(graph mm(%q: f32[B, 2, T, 8], %k: f32[2, T, 8], %v: f32[8], %m: f32[8, 5]) {
  %kt = permute(%k, dims=[0, 2, 1])
  %s = matmul(%q, %kt)
  %z = matmul(%v, %m)
  %u = matmul(%q, %v)
  return %s, %z, %u
})";

// Integer constants that a double cannot hold (issue 21): INT64_MAX, INT64_MIN, 2^53 + 1,
// and u64's 2^64 - 1. Through a double, INT64_MAX became 0 and 2^53 + 1 became 2^53.
inline constexpr const char* kInt64Constants = R"(graph int64_constants(%i: i64[B, 4], %u: u64[B, 4]) {
  %max = constant(value=9223372036854775807, dtype=i64)
  %min = constant(value=-9223372036854775808, dtype=i64)
  %big = constant(value=9007199254740993, dtype=i64)
  %umax = constant(value=-1, dtype=u64)
  %a = minimum(%i, %max)
  %b = maximum(%i, %min)
  %c = add(%i, %big)
  %d = minimum(%u, %umax)
  %e = lt(%i, %max)
  return %a, %b, %c, %d, %e
})";

// A GQA decoder layer (4 query heads, 2 kv heads, RoPE as products, SwiGLU) over f32
// weights: what the tensor-parallel tests shard (gqa_layer_plan).
inline constexpr const char* kGqaLayer =
    R"(graph layer(%x: f32[B, T, 32], %cos: f32[T, 8], %sin: f32[T, 8], %n1: f32[32] param, %wq: f32[32, 32] param, %wk: f32[16, 32] param, %wv: f32[16, 32] param, %wo: f32[32, 32] param, %n2: f32[32] param, %wg: f32[64, 32] param, %wu: f32[64, 32] param, %wd: f32[32, 64] param) {
  %h = rms_norm(%x, %n1, axes=[-1], eps=1e-06)
  %q0 = linear(%h, %wq)
  %q1 = reshape(%q0, shape=[B, T, 4, 8])
  %q = permute(%q1, dims=[0, 2, 1, 3])
  %k0 = linear(%h, %wk)
  %k1 = reshape(%k0, shape=[B, T, 2, 8])
  %k = permute(%k1, dims=[0, 2, 1, 3])
  %v0 = linear(%h, %wv)
  %v1 = reshape(%v0, shape=[B, T, 2, 8])
  %v = permute(%v1, dims=[0, 2, 1, 3])
  %qc = mul(%q, %cos)
  %qs = mul(%q, %sin)
  %qr = add(%qc, %qs)
  %a = attention(%qr, %k, %v, causal=true)
  %a1 = permute(%a, dims=[0, 2, 1, 3])
  %a2 = reshape(%a1, shape=[B, T, 32])
  %o = linear(%a2, %wo)
  %r = add(%x, %o)
  %m = rms_norm(%r, %n2, axes=[-1], eps=1e-06)
  %g = linear(%m, %wg)
  %gs = silu(%g)
  %u = linear(%m, %wu)
  %gu = mul(%gs, %u)
  %d = linear(%gu, %wd)
  %y = add(%r, %d)
  return %y
})";

// Megatron's split of kGqaLayer: q/k/v and gate/up column-parallel, o and down row-parallel;
// over more ranks than its 2 kv heads, k and v in 2 groups (each kv head on ranks / 2 ranks).
// `kv_groups` = 0: k and v split one chunk per rank anyway (half heads: gathered back).
inline ShardPlan gqa_layer_plan(int64_t ranks, int64_t kv_groups = -1) {
  if (kv_groups < 0) kv_groups = ranks > 2 ? 2 : 0;
  return {ranks, {{"wq", 0}, {"wk", 0, kv_groups}, {"wv", 0, kv_groups}, {"wg", 0}, {"wu", 0}, {"wo", 1}, {"wd", 1}}};
}

// `blocks` GPT-J-style parallel-residual blocks over x [B, T, 16]: y = x + (attn(h) + mlp(h))
// with h = rms_norm(x), 2 heads of 8; block i's parameters end in i. With `biases`, the
// output projections (o, down) have biases: sharded, each branch is then summed on its own
// (an all_reduce before each bias), and the attention branch's sum has the MLP branch beside it.
inline std::string parallel_residual(int blocks, bool biases = false) {
  std::string params, body, in = "%x";
  for (int i = 0; i < blocks; ++i) {
    params += str_cat(", %n", i, ": f32[16] param");
    for (const char* w : {"wq", "wk", "wv", "wo"}) params += str_cat(", %", w, i, ": f32[16, 16] param");
    params += str_cat(", %wi", i, ": f32[32, 16] param, %wd", i, ": f32[16, 32] param");
    if (biases) params += str_cat(", %bo", i, ": f32[16] param, %bd", i, ": f32[16] param");
    body += str_cat("  %h", i, " = rms_norm(", in, ", %n", i, ", axes=[-1], eps=1e-06)\n");
    for (const char* p : {"q", "k", "v"})
      body += str_cat("  %", p, i, " = linear(%h", i, ", %w", p, i, ")\n  %", p, "h", i, " = reshape(%", p, i,
                      ", shape=[B, T, 2, 8])\n  %", p, "p", i, " = permute(%", p, "h", i, ", dims=[0, 2, 1, 3])\n");
    body += str_cat("  %a", i, " = attention(%qp", i, ", %kp", i, ", %vp", i, ", causal=true)\n  %ap", i,
                    " = permute(%a", i, ", dims=[0, 2, 1, 3])\n  %ar", i, " = reshape(%ap", i,
                    ", shape=[B, T, 16])\n  %o", i, " = linear(%ar", i, ", %wo", i, biases ? str_cat(", %bo", i) : "",
                    ")\n  %i", i, " = linear(%h", i, ", %wi", i, ")\n  %g", i, " = gelu(%i", i, ")\n  %d", i,
                    " = linear(%g", i, ", %wd", i, biases ? str_cat(", %bd", i) : "", ")\n  %s", i, " = add(%o", i,
                    ", %d", i, ")\n  %y", i, " = add(%s", i, ", ", in, ")\n");
    in = str_cat("%y", i);
  }
  return str_cat("graph pr(%x: f32[B, T, 16]", params, ") {\n", body, "  return ", in, "\n}\n");
}

// Megatron's split of parallel_residual: q/k/v and the MLP's in column-parallel, o and down
// row-parallel (their biases replicated).
inline ShardPlan parallel_residual_plan(int64_t ranks) {
  return {ranks, {{"wq*", 0}, {"wk*", 0}, {"wv*", 0}, {"wi*", 0}, {"wo*", 1}, {"wd*", 1}}};
}

}  // namespace kiln::test_graphs
