#include "test/cuda/corpus.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "ir/parser.h"
#include "ir/str.h"
#include "test/common/graphs.h"

namespace kiln::test {
namespace {

struct Entry {
  std::string name;
  std::string text;
  std::vector<Bindings> bindings;
};

std::vector<Bindings> over(const std::string& sym, std::initializer_list<int64_t> values) {
  std::vector<Bindings> out;
  for (int64_t v : values) out.push_back(Bindings{{sym, v}});
  return out;
}

// The graph text with every `DT` replaced by `dt`.
std::string typed(std::string text, const char* dt) {
  for (size_t p = text.find("DT"); p != std::string::npos; p = text.find("DT", p)) text.replace(p, 2, dt);
  return text;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<Entry> entries() {
  std::vector<Entry> e;
  for (const char* dt : {"f32", "f16", "bf16"}) {
    std::string suffix = str_cat("_", dt);
    auto add = [&](const std::string& name, const char* text, std::vector<Bindings> b) {
      e.push_back({name + suffix, typed(text, dt), std::move(b)});
    };
    add("chain10", R"(graph chain10(%x: DT[B, 67], %y: DT[67], %z: DT[B, 1]) {
  %a = add(%x, %y)
  %b = mul(%a, %z)
  %c = tanh(%b)
  %d = sub(%c, %y)
  %e = sigmoid(%d)
  %f = gelu(%e, approximate="tanh")
  %g = maximum(%f, %x)
  %h = exp(%g)
  %i = div(%h, %z)
  %j = neg(%i)
  return %j
})", over("B", {1, 3, 129}));
    add("unary", R"(graph unary(%x: DT[B, 8]) {
  %p = abs(%x)
  %q = add(%p, %x)
  %a = log(%p)
  %b = sqrt(%p)
  %c = rsqrt(%p)
  %d = sin(%x)
  %e = cos(%x)
  %f = relu(%x)
  %g = silu(%x)
  %h = erf(%x)
  %i = reciprocal(%x)
  %j = floor(%x)
  %k = ceil(%x)
  %l = gelu(%x)
  %m = pow(%p, %x)
  %n = minimum(%x, %p)
  %o = atan(%x)
  %r = fmod(%x, %p)
  return %a, %b, %c, %d, %e, %f, %g, %h, %i, %j, %k, %l, %m, %n, %o, %q, %r
})", over("B", {1, 5, 33}));
    add("compare", R"(graph compare(%x: DT[B, 12], %y: DT[12]) {
  %a = lt(%x, %y)
  %b = ge(%x, %y)
  %c = eq(%x, %y)
  %d = ne(%x, %y)
  %e = and(%a, %d)
  %f = or(%b, %c)
  %g = not(%e)
  %h = where(%f, %x, %y)
  %i = cast(%g, dtype=f32)
  %j = cast(%x, dtype=i32)
  %k = cast(%j, dtype=DT)
  return %h, %i, %k, %e
})", over("B", {1, 7}));
    add("softmax", R"(graph softmax(%x: DT[B, T, 19]) {
  %y = softmax(%x, axis=-1)
  %z = log_softmax(%x, axis=1)
  return %y, %z
})", {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 5}}, {{"B", 3}, {"T", 64}}});
    add("softmax_wide", R"(graph softmax_wide(%x: DT[R, 2048]) {
  %y = softmax(%x, axis=-1)
  return %y
})", over("R", {1, 3, 40}));
    add("rms_residual", R"(graph rms_residual(%x: DT[B, 512], %r: DT[B, 512], %w: DT[512]) {
  %h = add(%x, %r)
  %n = rms_norm(%h, %w, axes=[-1], eps=1e-6)
  return %h, %n
})", over("B", {1, 5, 17}));
    // In bf16, adds, subs and muls of bf16 values go two lanes at a time (bf16x2): operands
    // from vector loads, constants, a per-row value, and lets of either kind; a row sum of them.
    add("pairs", R"(graph pairs(%x: DT[B, 64], %y: DT[64], %z: DT[B, 1]) {
  %c = constant(value=0.1, dtype=DT)
  %a = mul(%x, %c)
  %b = sub(%a, %y)
  %d = add(%b, %z)
  %e = silu(%x)
  %f = mul(%e, %d)
  %s = sum(%f, axes=[-1], keepdim=true)
  %o = sub(%f, %s)
  return %f, %b, %o
})", over("B", {1, 3, 65}));
    add("layer_norm_gelu", R"(graph layer_norm_gelu(%x: DT[B, 96], %w: DT[96], %b: DT[96]) {
  %n = layer_norm(%x, %w, %b, axes=[-1], eps=1e-5)
  %y = gelu(%n, approximate="tanh")
  return %y
})", over("B", {1, 3, 64}));
    add("reductions", R"(graph reductions(%x: DT[B, 5, 3]) {
  %a = sum(%x, axes=[0, 2])
  %b = max(%x, axes=[-2], keepdim=true)
  %c = min(%x)
  %d = prod(%x, axes=[1])
  %e = argmax(%x, axis=1, keepdim=true)
  %f = mean(%x, axes=[-1, 0], keepdim=true)
  return %a, %b, %c, %d, %e, %f
})", over("B", {1, 2, 7}));
    add("views", R"(graph views(%x: DT[B, 6, 4], %y: DT[4, 1, 6], %t: DT[B, 24]) {
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
})", over("B", {1, 2, 5}));
    add("concat_split_gather", R"(graph concat_split_gather(%a: DT[B, 3], %b: DT[B, 2], %c: DT[B, 1], %ids: i64[K], %emb: DT[10, 4]) {
  %x = concat(%a, %b, %c, axis=1)
  %p, %q = split(%x, axis=-1, sizes=[4, 2])
  %r = concat(%q, %q, axis=0)
  %e = gather(%emb, %ids, axis=0)
  %n = neg(%p)
  return %n, %r, %e, %x
})", {{{"B", 1}, {"K", 1}}, {{"B", 4}, {"K", 7}}});
    // Index checks (issue 21): a gather read by a reduction, one in a GEMM's epilogue, one
    // fused into an elementwise kernel; their masked stores in reduce and map stages.
    add("gather_checks", R"(graph gather_checks(%emb: DT[V, 64], %ids: i64[T], %w: DT[64], %wq: DT[8, 64], %table: DT[V, 8]) {
  %e = gather(%emb, %ids, axis=0)
  %n = rms_norm(%e, %w, axes=[-1], eps=1e-6)
  %l = linear(%n, %wq)
  %b = gather(%table, %ids, axis=0)
  %y = add(%l, %b)
  %z = exp(%b)
  return %y, %z
})", {{{"V", 2}, {"T", 1}}, {{"V", 5}, {"T", 7}}, {{"V", 50}, {"T", 64}}});
    add("conv_pool", R"(graph conv_pool(%x: DT[B, 4, 9, 7], %w: DT[6, 4, 3, 3], %b: DT[6], %wd: DT[4, 1, 3, 3], %wt: DT[4, 2, 2, 2]) {
  %c = conv(%x, %w, %b, strides=[2, 1], pads=[1, 1, 1, 1])
  %r = relu(%c)
  %d = conv(%x, %wd, groups=4, pads=[1, 1, 1, 1])
  %s = add(%d, %x)
  %m = max_pool(%x, kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
  %a = avg_pool(%x, kernel=[2, 2], strides=[2, 2], ceil_mode=true)
  %t = conv_transpose(%x, %wt, strides=[2, 2])
  return %r, %s, %m, %a, %t
})", over("B", {1, 3, 17}));
    add("linear_bias_gelu", R"(graph linear_bias_gelu(%x: DT[T, 64], %w: DT[48, 64], %b: DT[48]) {
  %l = linear(%x, %w, %b)
  %y = gelu(%l, approximate="tanh")
  return %y
})", over("T", {1, 5, 32}));
    add("linear_epilogue", R"(graph linear_epilogue(%x: DT[B, T, 16], %w: DT[8, 16], %bias: DT[8], %r: DT[B, T, 8]) {
  %l = linear(%x, %w, %bias)
  %g = gelu(%l)
  %y = add(%g, %r)
  return %y
})", {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 3}}});
    add("llama_mlp", R"(graph llama_mlp(%x: DT[T, 64], %w_gate: DT[96, 64], %w_up: DT[96, 64], %w_down: DT[64, 96]) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  return %y
})", over("T", {1, 3, 16}));
    add("batched_matmul", R"(graph batched_matmul(%q: DT[B, 2, T, 8], %k: DT[2, T, 8], %v: DT[8], %m: DT[8, 5]) {
  %kt = permute(%k, dims=[0, 2, 1])
  %s = matmul(%q, %kt)
  %z = matmul(%v, %m)
  %u = matmul(%q, %v)
  return %s, %z, %u
})", {{{"B", 1}, {"T", 1}}, {{"B", 3}, {"T", 4}}});
    add("attention", R"(graph attention(%q: DT[B, 4, T, 16], %k: DT[B, 4, T, 16], %v: DT[B, 4, T, 16]) {
  %o = scaled_dot_product_attention(%q, %k, %v, causal=true)
  return %o
})", {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 7}}});
    // The attention op: GQA 4, decode-style bottom-right causal with a sliding window.
    add("gqa_attention", R"(graph gqa_attention(%q: DT[B, 8, T, 16], %k: DT[B, 2, S, 16], %v: DT[B, 2, S, 16]) {
  %o = attention(%q, %k, %v, causal=true, window=6, softcap=3)
  return %o
})", {{{"B", 1}, {"T", 1}, {"S", 1}}, {{"B", 2}, {"T", 3}, {"S", 9}}});
    // A decode step writing its caches in place (random positions are 0 or 1).
    add("decode_step", R"(graph decode_step(%q: DT[B, 4, 1, 16], %kn: DT[B, 1, 1, 16], %pos: i32[B], %kc: DT[B, 1, S, 16] state, %vc: DT[B, 1, S, 16] state) {
  %kc1 = cache_write(%kc, %kn, %pos)
  %vc1 = cache_write(%vc, %kn, %pos)
  %one = constant(value=1, dtype=i32)
  %len = add(%pos, %one)
  %o = attention(%q, %kc1, %vc1, %len)
  return %o, %kc1, %vc1
})", {{{"B", 1}, {"S", 2}}, {{"B", 3}, {"S", 7}}});
  }
  e.push_back({"int64_constants", test_graphs::kInt64Constants, over("B", {1, 3})});
  e.push_back({"int_ops", R"(graph int_ops(%i: i32[B, 4], %j: i64[4], %x: f32[B, 4]) {
  %a = add(%i, %i)
  %b = cast(%a, dtype=i64)
  %c = mul(%b, %j)
  %d = div(%c, %j)
  %e = sub(%d, %j)
  %f = maximum(%e, %j)
  %g = neg(%f)
  %h = abs(%g)
  %s = sum(%i, axes=[1])
  %m = max(%c, axes=[0])
  %am = argmax(%x, axis=-1)
  return %h, %s, %m, %am
})", over("B", {1, 3})});
  e.push_back({"narrow_unsigned_ints", R"(graph narrow_unsigned_ints(%a: i8[B, 5], %c: u8[B, 5], %d: u8[5], %e: i16[B, 5], %h: u16[5], %p: u32[B, 5], %s: u64[B, 5], %t: u64[5], %x: f32[B, 5]) {
  %a1 = mul(%a, %a)
  %d8 = cast(%d, dtype=i8)
  %a2 = div(%a, %d8)
  %c1 = sub(%c, %d)
  %c2 = div(%c, %d)
  %c3 = lt(%c, %d)
  %h16 = cast(%h, dtype=i16)
  %e1 = add(%e, %h16)
  %c32 = cast(%c, dtype=u32)
  %p1 = maximum(%p, %c32)
  %s1 = div(%s, %t)
  %s2 = minimum(%s, %t)
  %s3 = ge(%s, %t)
  %s4 = cast(%s, dtype=f32)
  %x1 = cast(%x, dtype=u64)
  %x2 = cast(%x, dtype=u8)
  %r1 = sum(%c, axes=[1])
  %r2 = max(%s, axes=[1])
  %r3 = min(%s, axes=[0])
  %r4 = argmax(%s, axis=1)
  %r5 = max(%e, axes=[1])
  return %a1, %a2, %c1, %c2, %c3, %e1, %p1, %s1, %s2, %s3, %s4, %x1, %x2, %r1, %r2, %r3, %r4, %r5
})", over("B", {1, 3})});
  // The source tree: where it was configured, or $KILN_SOURCE_DIR when the binary runs
  // elsewhere (a GPU machine).
  const char* root = std::getenv("KILN_SOURCE_DIR");
  e.push_back({"decoder_layer", read_file(str_cat(root ? root : KILN_SOURCE_DIR, "/examples/decoder_layer.kiln")),
               {{{"B", 1}, {"T", 1}}, {{"B", 1}, {"T", 5}}, {{"B", 2}, {"T", 3}}}});
  return e;
}

}  // namespace

const std::vector<CorpusGraph>& cuda_corpus() {
  static const std::vector<CorpusGraph> corpus = [] {
    std::vector<CorpusGraph> out;
    for (Entry& e : entries()) {
      absl::StatusOr<Graph> g = parse_graph(e.text, e.name);
      if (!g.ok()) FAIL(str_cat("corpus graph ", e.name, ": ", status_message(g.status())));
      out.push_back({e.name, *std::move(g), std::move(e.bindings)});
    }
    return out;
  }();
  return corpus;
}

}  // namespace kiln::test
