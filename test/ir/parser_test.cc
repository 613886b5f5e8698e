// Text IR: the issue's example, byte-for-byte round trips over a corpus that uses every
// registered op, located errors for malformed input, and a mutation fuzz.
#include <catch2/catch.hpp>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <regex>
#include <set>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "test/common/graphs.h"

using namespace kiln;

namespace {

constexpr const char* kIssueExamplePrinted = R"(graph mlp(%x: bf16[B, 4096], %w_up: bf16[11008, 4096] param, %w_gate: bf16[11008, 4096] param, %w_down: bf16[4096, 11008] param) {
  %g = linear(%x, %w_gate) : bf16[B, 11008]
  %u = linear(%x, %w_up) : bf16[B, 11008]
  %a = silu(%g) : bf16[B, 11008]
  %h = mul(%a, %u) : bf16[B, 11008]
  %y = linear(%h, %w_down) : bf16[B, 4096]
  %n = rms_norm(%y, axes=[-1], eps=1e-06) : bf16[B, 4096]
  return %n, %h
}
)";

// Together these use every op of the registry (checked below).
const char* const kCorpus[] = {
    test_graphs::kIssueMlp,
    R"(# every elementwise, broadcast and reduction op
graph elementwise(%x: f32[B, 16], %y: f32[B, 16], %b: bool[B, 16], %i: i64[B, 16], %r: f32[16]) {
  symbol B in [1, 64]
  %neg = neg(%x)
  %abs = abs(%i)
  %exp = exp(%x)
  %log = log(%exp)
  %sqrt = sqrt(%exp)
  %rsqrt = rsqrt(%exp)
  %sin = sin(%x)
  %cos = cos(%x)
  %tanh = tanh(%x)
  %sig = sigmoid(%x)
  %relu = relu(%i)
  %gelu = gelu(%x)
  %gelu_t = gelu(%x, approximate="tanh")
  %silu = silu(%x)
  %erf = erf(%x)
  %atan = atan(%x)
  %rcp = reciprocal(%x)
  %floor = floor(%x)
  %ceil = ceil(%x)
  %cast = cast(%x, dtype=bf16)
  %not = not(%b)
  %c0 = constant(value=0.5, dtype=bf16)
  %c1 = constant(value=3, dtype=i32)
  %c2 = constant(value=true, dtype=bool)
  %c3 = constant(value=-inf)
  %c4 = constant(value=nan, dtype=f16)
  %c5 = constant(value=-2.0, dtype=f32)
  %add = add(%x, %r)
  %sub = sub(%x, %y)
  %mul = mul(%x, %y)
  %div = div(%i, %i)
  %pow = pow(%x, %y)
  %fmod = fmod(%x, %y)
  %max = maximum(%x, %y)
  %min = minimum(%x, %y)
  %eq = eq(%i, %i)
  %ne = ne(%x, %y)
  %lt = lt(%x, %y)
  %le = le(%x, %y)
  %gt = gt(%x, %y)
  %ge = ge(%x, %y)
  %and = and(%b, %eq)
  %or = or(%b, %ne)
  %where = where(%b, %x, %y)
  %sum = sum(%x, axes=[-1], keepdim=true)
  %mean = mean(%x)
  %rmax = max(%i, axes=[0])
  %rmin = min(%x, axes=[0, 1], keepdim=false)
  %prod = prod(%x, axes=[1])
  %am = argmax(%x, axis=0, keepdim=true)
  return %neg, %abs, %log, %sqrt, %rsqrt, %sin, %cos, %tanh, %sig, %relu, %gelu, %gelu_t, %silu, %erf, %atan, %rcp, %floor, %ceil, %cast, %not, %c0, %c1, %c2, %c3, %c4, %c5, %add, %sub, %mul, %div, %pow, %fmod, %max, %min, %and, %or, %lt, %le, %gt, %ge, %where, %sum, %mean, %rmax, %rmin, %prod, %am
}
)",
    R"(graph structure(%x: f32[B, 16], %y: f32[B, 16], %w: f32[32, 16] param, %bias: f32[32] param, %g16: f32[16] param, %emb: bf16[1000, 64] param, %idx: i32[T], %q: f16[B, 4, T, 8], %k: f16[B, 4, T, 8], %v: f16[B, 4, T, 8], %m: bool[T, T], %vec: f32[16]) {
  symbol T in [2, inf]
  symbol B in [1, 8192]
  %sm = softmax(%x, axis=-1)
  %lsm = log_softmax(%x)
  %ln = layer_norm(%x, %g16, %g16, axes=[-1], eps=1e-05)
  %rms = rms_norm(%x, %g16, eps=1e-6)
  %att = scaled_dot_product_attention(%q, %k, %v, causal=true, scale=0.125)
  %attm = scaled_dot_product_attention(%q, %k, %v, %m)
  %wt = permute(%w, dims=[1, 0])
  %mm = matmul(%x, %wt)
  %mv = matmul(%x, %vec)
  %vm = matmul(%vec, %wt)
  %lin = linear(%x, %w, %bias) : f32[B, 32]
  %r1 = reshape(%x, shape=[B, 4, -1]) : f32[B, 4, 4]
  %r2 = reshape(%x, shape=[B*16])
  %r3 = reshape(%r2, shape=[B, 2, 8])
  %ex = expand(%bias, shape=[B, 32])
  %ex2 = expand(%bias, shape=[3, -1])
  %us = unsqueeze(%x, axes=[1]) : f32[B, 1, 16]
  %sq = squeeze(%us, axes=[1])
  %sq2 = squeeze(%us)
  %sl = slice(%x, axis=1, start=2, end=-2, step=3) : f32[B, 4]
  %sl2 = slice(%x, axis=0, start=1)
  %cat = concat(%x, %y, axis=1)
  %cat0 = concat(%x, %y, %x, axis=0) : f32[3*B, 16]
  %s0, %s1 = split(%x, axis=1, sizes=[4, 12]) : f32[B, 4], f32[B, 12]
  %e = gather(%emb, %idx, axis=0) : bf16[T, 64]
  %io = iota(shape=[T, T], axis=1) : i64[T, T]
  %io2 = iota(shape=[4, B], axis=-1, dtype=f32)
  return %io, %io2, %sm, %lsm, %ln, %rms, %att, %attm, %mm, %mv, %vm, %lin, %r1, %r3, %ex, %ex2, %sq, %sq2, %sl, %sl2, %cat, %cat0, %s0, %s1, %e
}
)",
    R"(graph dims(%x: f32[(B + 1) // 2, 2*T + 1, T % 4, 8], %y: f32[B*T, 3 - 1], %s: f32[]) {
  %a = reshape(%x, shape=[-1]) : f32[8*((B + 1) // 2)*(2*T + 1)*(T % 4)]
  %b = reshape(%y, shape=[T, B, 2])
  %c0, %c1 = split(%y, axis=0, sizes=[B*T // 2, B*T - B*T // 2])
  %d = add(%s, %s) : f32[]
  return %a, %b, %c0, %c1, %d
}
)",
    R"(# convolution and pooling; attributes left out take their defaults
graph conv(%x: bf16[N, 4, H, W], %w: bf16[6, 2, 3, 3] param, %b: bf16[6] param, %wt: bf16[4, 3, 3, 3] param, %x1: f32[N, 3, 7]) {
  %c = conv(%x, %w, %b, strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 2], groups=2)
  %c1 = conv(%x1, %x1)
  %t = conv_transpose(%x, %wt, %b, strides=[2, 2], output_padding=[1, 0], groups=2)
  %m = max_pool(%x, kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=true)
  %a = avg_pool(%x1, kernel=[2], count_include_pad=true)
  %win = window(%x1, kernel=[3], strides=[2], pads=[1, 1], pad_value=-inf)
  return %c, %c1, %t, %m, %a, %win
}
)",
    R"(# every element type: f64 and the 8-, 16-bit and unsigned integers
graph types(%d: f64[B, 3], %a: i8[B], %b: u8[B], %c: i16[2], %e: u16[2], %f: u32[], %g: u64[B]) {
  %d2 = mul(%d, %d) : f64[B, 3]
  %k = constant(value=0.1, dtype=f64)
  %k8 = constant(value=-128, dtype=i8)
  %ku = constant(value=255, dtype=u8)
  %s = sum(%d2, axes=[1]) : f64[B]
  %ca = cast(%a, dtype=u8) : u8[B]
  %cb = cast(%b, dtype=i16) : i16[B]
  %cc = cast(%c, dtype=u32) : u32[2]
  %ce = cast(%e, dtype=u64) : u64[2]
  %cf = cast(%f, dtype=f64) : f64[]
  %cg = cast(%g, dtype=f32) : f32[B]
  %lt = lt(%b, %ca) : bool[B]
  return %d2, %k, %k8, %ku, %s, %cb, %cc, %ce, %cf, %cg, %lt
}
)",
    R"(# a decode step over contiguous and paged KV caches: state inputs written in place
graph decode(%q: bf16[B, 8, 1, 64], %kn: bf16[B, 2, 1, 64], %pos: i32[B], %lens: i32[B], %kc: bf16[B, 2, S, 64] state, %pc: bf16[NB, 16, 2, 64] state, %bt: i32[B, MB], %m: bool[B, 1, 1, S]) {
  %kc1 = cache_write(%kc, %kn, %pos)
  %pc1 = cache_write(%pc, %kn, %pos, %bt)
  %a = attention(%q, %kc1, %kc1, %lens, causal=true)
  %am = attention(%q, %kc1, %kc1, %m, scale=0.125, window=128, softcap=30)
  %ap = attention(%q, %pc1, %pc1, %lens, %bt)
  return %a, %am, %ap, %kc1, %pc1
}
)",
    R"(# a tensor-parallel rank's collectives (passes/shard.h writes them)
graph tp(%x: f32[B, 8], %w: f32[8, 4] param) {
  %p = matmul(%x, %w) : f32[B, 4]
  %s = all_reduce(%p, ranks=2) : f32[B, 4]
  %g = all_gather(%s, axis=-1, ranks=2) : f32[B, 8]
  %r = reduce_scatter(%g, axis=1, ranks=4) : f32[B, 2]
  return %s, %r
}
)",
    R"(# extern calls type from their annotation (or a results attribute): no registry needed
graph ext(%x: f32[B, 64], %w: f32[64]) {
  %y = extern_call(%x, %w, name="user.rms_norm") : f32[B, 64]
  %m, %i = extern_call(%y, name="user.top1", results="f32[B], i32[B]")
  return %y, %m, %i
}
)",
};

std::string must_print(std::string_view text, std::string_view file = "<input>") {
  absl::StatusOr<Graph> g = parse_graph(text, file);
  INFO(text);
  REQUIRE(g.ok());
  REQUIRE(verify(*g).ok());
  return print_graph(*g);
}

void check_round_trip(std::string_view text) {
  std::string once = must_print(text);
  std::string twice = must_print(once);
  INFO(once);
  CHECK(twice == once);
  absl::StatusOr<Graph> g = parse_graph(once);
  REQUIRE(g.ok());
  CHECK(print_graph(g->clone()) == once);
}

}  // namespace

TEST_CASE("parser accepts the issue's example verbatim", "[parser]") {
  absl::StatusOr<Graph> g = parse_graph(test_graphs::kIssueMlp, "mlp.kiln");
  REQUIRE(g.ok());
  REQUIRE(verify(*g).ok());
  CHECK(g->name() == "mlp");
  REQUIRE(g->args().size() == 4);
  CHECK(g->inputs().size() == 1);
  CHECK(g->params().size() == 3);
  CHECK(g->find("w_gate")->is_param());
  CHECK(g->find("w_gate")->data() == nullptr);
  CHECK(g->num_nodes() == 6);
  REQUIRE(g->outputs().size() == 2);
  CHECK(g->outputs()[0]->name() == "n");
  CHECK(g->outputs()[1]->name() == "h");
  const Node& n = *g->find("n")->producer();
  CHECK(n.loc() == "mlp.kiln:7:3");
  CHECK(std::get<double>(*n.attrs().find("eps")) == 1e-6);
  CHECK(std::get<std::vector<int64_t>>(*n.attrs().find("axes")) == std::vector<int64_t>{-1});
  CHECK(g->find("g")->producer()->loc() == "mlp.kiln:2:3");
  CHECK(g->find("y")->type().to_string() == "bf16[B, 4096]");
  CHECK(print_graph(*g) == kIssueExamplePrinted);
  CHECK(print_node(*g->find("h")->producer()) == "%h = mul(%a, %u) : bf16[B, 11008]");
}

TEST_CASE("round trip is byte for byte", "[parser]") {
  for (const char* text : kCorpus) check_round_trip(text);
}

TEST_CASE("the corpus uses every registered op", "[parser]") {
  std::set<Op> seen;
  for (const char* text : kCorpus) {
    absl::StatusOr<Graph> g = parse_graph(text);
    REQUIRE(g.ok());
    for (const auto& n : g->nodes()) seen.insert(n->op());
  }
  for (const OpInfo& info : all_ops()) {
    INFO("op " << info.name << " is missing from the round-trip corpus");
    CHECK(seen.contains(info.op));
  }
}

TEST_CASE("multi-result split, symbols and dim expressions", "[parser]") {
  absl::StatusOr<Graph> g = parse_graph(kCorpus[2]);
  REQUIRE(g.ok());
  const Node& split = *g->find("s0")->producer();
  REQUIRE(split.results().size() == 2);
  CHECK(split.result(1)->name() == "s1");
  CHECK(split.result(1)->type().to_string() == "f32[B, 12]");
  CHECK(print_node(split) == "%s0, %s1 = split(%x, axis=1, sizes=[4, 12]) : f32[B, 4], f32[B, 12]");
  // Bounds print sorted by name, only where not default.
  CHECK(g->symbol_info("B") == SymbolInfo{1, 8192});
  CHECK(g->symbol_info("T") == SymbolInfo{2, std::nullopt});
  std::string text = print_graph(*g);
  CHECK(text.find("  symbol B in [1, 8192]\n  symbol T in [2, inf]\n") != std::string::npos);
  // Bounds equal to the default vanish.
  absl::StatusOr<Graph> d = parse_graph("graph g(%x: f32[B]) {\n  symbol B in [1, inf]\n  return %x\n}\n");
  REQUIRE(d.ok());
  CHECK(d->symbol_bounds().empty());
  CHECK(print_graph(*d) == "graph g(%x: f32[B]) {\n  return %x\n}\n");

  absl::StatusOr<Graph> e = parse_graph(kCorpus[3]);
  REQUIRE(e.ok());
  SymExpr B = SymExpr::symbol("B"), T = SymExpr::symbol("T");
  const Shape& xs = e->find("x")->shape();
  CHECK(xs[0] == (B + 1).floordiv(2));
  CHECK(xs[1] == T * 2 + 1);
  CHECK(xs[2] == T.mod(4));
  CHECK(e->find("y")->shape()[1] == SymExpr(2));
  CHECK(e->find("s")->shape().empty());
  // "B%4" (no spaces) is the mod operator, not a value reference; so is "B %4".
  absl::StatusOr<Graph> m = parse_graph("graph g(%x: f32[B%4, -(-B) %3, (B)//2]) {\n  return %x\n}\n");
  REQUIRE(m.ok());
  CHECK(m->find("x")->shape() == Shape{B.mod(4), B.mod(3), B.floordiv(2)});
  // Symbolic reshape shapes and lists.
  absl::StatusOr<Graph> r = parse_graph(
      "graph g(%x: f32[B, T, 2048]) {\n  %y = reshape(%x, shape=[B, T, 16, -1])\n  return %y\n}\n");
  REQUIRE(r.ok());
  CHECK(r->find("y")->type().to_string() == "f32[B, T, 16, 128]");
}

TEST_CASE("attribute values", "[parser]") {
  auto node_attrs = [](const std::string& line) {
    std::string text = str_cat("graph g(%x: f32[B, 4]) {\n  ", line, "\n  return %r\n}\n");
    absl::StatusOr<Graph> g = parse_graph(text);
    INFO(text);
    REQUIRE(g.ok());
    REQUIRE(g->find("r"));
    check_round_trip(text);
    return g->find("r")->producer()->attrs();
  };
  CHECK(std::get<double>(*node_attrs("%r = constant(value=1e-6)").find("value")) == 1e-6);
  CHECK(std::get<double>(*node_attrs("%r = constant(value=-2.0)").find("value")) == -2.0);
  CHECK(std::get<double>(*node_attrs("%r = constant(value=inf)").find("value")) == INFINITY);
  CHECK(std::get<double>(*node_attrs("%r = constant(value=-inf)").find("value")) == -INFINITY);
  CHECK(std::isnan(std::get<double>(*node_attrs("%r = constant(value=nan)").find("value"))));
  CHECK(std::get<int64_t>(*node_attrs("%r = constant(value=-7, dtype=i64)").find("value")) == -7);
  CHECK(std::get<int64_t>(*node_attrs("%r = constant(value=-9223372036854775808, dtype=i64)").find("value")) ==
        std::numeric_limits<int64_t>::min());
  CHECK(std::get<bool>(*node_attrs("%r = constant(value=false, dtype=bool)").find("value")) == false);
  CHECK(std::get<DType>(*node_attrs("%r = cast(%x, dtype=i32)").find("dtype")) == DType::i32);
  // Ints coerce to the schema's float.
  CHECK(std::get<double>(*node_attrs("%r = rms_norm(%x, eps=1)").find("eps")) == 1.0);
  // All-int lists coerce to dims where the schema wants dims.
  CHECK(std::get<std::vector<SymExpr>>(*node_attrs("%r = reshape(%x, shape=[2, -1])").find("shape")) ==
        std::vector<SymExpr>{2, -1});
  // Escapes in strings survive the round trip (gelu rejects the value, so use the printer).
  Attrs a{{"approximate", std::string("a\"b\\c")}};
  CHECK(attr_to_string(*a.find("approximate")) == R"("a\"b\\c")");
  absl::StatusOr<Graph> s = parse_graph(
      "graph g(%x: f32[4]) {\n  %r = gelu(%x, approximate=\"t\\\"a\\\\\")\n  return %r\n}\n");
  REQUIRE_FALSE(s.ok());
  // gelu's message quotes the unescaped value.
  CHECK(status_message(s.status()).find(R"(got "t"a\")") != std::string::npos);
}

TEST_CASE("odd value and graph names round-trip quoted", "[parser]") {
  Graph g("my graph");
  Value* x = *g.add_input("layer.0/x", TensorType{DType::f32, {4}});
  Node* n = *g.add_node(Op::Relu, {x}, {}, {"0"});
  g.set_outputs({n->result()});
  std::string text = print_graph(g);
  CHECK(text == "graph \"my graph\"(%\"layer.0/x\": f32[4]) {\n  %0 = relu(%\"layer.0/x\") : f32[4]\n  return %0\n}\n");
  check_round_trip(text);
}

TEST_CASE("parse_graph_file", "[parser]") {
  std::string path = "kiln_test_ir_mlp.kiln";
  {
    std::ofstream out(path);
    out << test_graphs::kIssueMlp;
  }
  absl::StatusOr<Graph> g = parse_graph_file(path);
  REQUIRE(g.ok());
  CHECK(g->find("n")->producer()->loc() == path + ":7:3");
  std::remove(path.c_str());
  absl::StatusOr<Graph> missing = parse_graph_file("/nonexistent/dir/x.kiln");
  REQUIRE_FALSE(missing.ok());
  CHECK(status_message(missing.status()).rfind("/nonexistent/dir/x.kiln: cannot read", 0) == 0);
  absl::StatusOr<Graph> dir = parse_graph_file("/");
  REQUIRE_FALSE(dir.ok());
  CHECK(status_message(dir.status()).rfind("/: ", 0) == 0);
}

namespace {

struct BadCase {
  std::string text;
  std::string where;     // "t:L:C:"
  std::string fragment;  // part of the message after it
};

std::string small(const std::string& line2, const std::string& args = "%x: f32[B, 4]") {
  return str_cat("graph g(", args, ") {\n", line2, "\n  return %y\n}\n");
}

}  // namespace

TEST_CASE("malformed input gives located errors", "[parser]") {
  std::string deep = "graph g(%x: f32[" + std::string(300, '(') + "B" + std::string(300, ')') + "]) {\n}\n";
  const BadCase cases[] = {
      {"", "t:1:1:", "empty input"},
      {"# only a comment\n", "t:2:1:", "empty input"},
      {"grap g() {}", "t:1:1:", "expected 'graph', got 'grap'"},
      {small("  %y = foo(%x)"), "t:2:8:", "unknown op 'foo'"},
      {small("  %y = relu(%z)"), "t:2:13:", "undefined value %z"},
      {small("  %x = relu(%x)"), "t:2:3:", "value %x is already defined"},
      {small("  %y, %y = split(%x, axis=1, sizes=[1, 3])"), "t:2:7:", "value %y is already defined"},
      {small("  %y = relu(%x)", "%x: f31[B, 4]"), "t:1:13:", "bad dtype 'f31'"},
      {small("  %y = relu(%x)", "%x: f32[B, 4], %x: f32[B]"), "t:1:24:", "value %x is already defined"},
      {small("  %y = softmax(%x, axs=1)"), "t:2:20:", "softmax has no attribute 'axs' (expected one of: axis)"},
      {small("  %y = relu(%x, axis=1)"), "t:2:17:", "relu has no attribute 'axis' (it takes none)"},
      {small("  %y = softmax(%x, axis=1.5)"), "t:2:25:", "attribute 'axis' of softmax: expected int, got 1.5"},
      {small("  %y = softmax(%x, axis=1, axis=0)"), "t:2:28:", "attribute 'axis' is given twice"},
      {small("  %y = softmax(%x, axis=B)"), "t:2:25:", "expected a value for attribute axis"},
      {small("  %y = relu(%x, %x)"), "t:2:3:", "relu: relu takes 1 operand, got 2"},
      {small("  %y = not(%x)"), "t:2:3:", "not: expected a bool tensor, got f32[B, 4]"},
      {small("  %y = cast(%x)"), "t:2:3:", "cast needs attribute 'dtype'"},
      {small("  %y = add(%x, %z)", "%x: f32[B, 4], %z: f32[3]"), "t:2:3:",
       "cannot broadcast [B, 4] with [3]"},
      {small("  %y = relu(%x) : f32[B, 5]"), "t:2:19:",
       "type annotation f32[B, 5] of %y does not match the inferred type f32[B, 4]"},
      {small("  %y = relu(%x) : f32[B, 4], f32[B, 4]"), "t:2:28:", "expected a result name such as %y, got ','"},
      {small("  %y = split(%x, axis=1, sizes=[1, 3])"), "t:2:3:", "split gives 2 result(s), but 1 name(s)"},
      {small("  %y = softmax(axis=1, %x)"), "t:2:24:", "operands must come before attributes"},
      {"graph g(%x: f32[B, 4]) {\n  %y = relu(%x)\n}\n", "t:3:1:", "missing 'return'"},
      {small("  %y = relu(%x)") + "extra", "t:5:1:", "expected end of input after the graph's '}', got 'extra'"},
      {small("  %y = gelu(%x, approximate=\"tanh)"), "t:2:29:", "unterminated string"},
      {small("  %y = gelu(%x, approximate=\"ta\\nh\")"), "t:2:32:", "bad escape"},
      {small("  %y = relu(%x)", "%x: f32[B, 4x]"), "t:1:20:", "bad number '4x'"},
      {small("  %y = relu(%x)", "%x: f32[B, 99999999999999999999]"), "t:1:20:", "bad number"},
      {small("  %y = relu(%x)", "%x: f32[B, 99999999999999999]"), "t:1:20:", "too large"},
      {small("  %y = relu(%x)", "%x: f32[B, 1.5]"), "t:1:20:", "expected a dim"},
      {small("  %y = constant(value=1e999)"), "t:2:23:", "bad number '1e999' (out of range)"},
      {"graph g(%x: f32[B, 4]) {\n  %y = relu(", "t:2:13:", "expected an operand (%x) or an attribute (name=value), got end of input"},
      {"graph g(%x: f32[B, 4", "t:1:21:", "expected ',' or ']' in the shape, got end of input"},
      {small("  %y = relu(%x)", "%x: f32[B // T, 4]"), "t:1:22:", "expected a positive integer constant after '//', got T"},
      {small("  %y = relu(%x)", "%x: f32[B % 0, 4]"), "t:1:21:", "expected a positive integer constant after '%', got 0"},
      {small("  %y = relu(%x)", "%x: f32[B // -2, 4]"), "t:1:22:", "positive integer constant after '//', got -2"},
      {small("  %y = relu(%x)", "%x: f32[B%x, 4]"), "t:1:19:", "expected a positive integer constant after '%', got 'x'"},
      {small("  %y = relu(%x)\n  return %y\n  %z = relu(%y)"), "t:4:3:", "expected '}' after the return"},
      {small("  %y = relu(%x)\n  symbol B in [1, 4]"), "t:3:3:", "symbol bounds must come before the first node"},
      {small("  symbol B in [5, 2]\n  %y = relu(%x)"), "t:2:3:", "symbol B: max 2 < min 5"},
      {small("  symbol B in [1, 2]\n  symbol B in [1, 3]\n  %y = relu(%x)"), "t:3:3:", "bounds of symbol B are given twice"},
      {small("  symbol B in [1, x]\n  %y = relu(%x)"), "t:2:19:", "expected the symbol's maximum"},
      {small("  %y = relu(%x)", "%x f32[B, 4]"), "t:1:12:", "expected ':' after the argument's name, got 'f32'"},
      {small("  %y = relu(%x) ;"), "t:2:17:", "unexpected character ';'"},
      {small("  %y = reshape(%x, shape=[B, -])"), "t:2:31:", "expected a dim"},
      {small("  %y = reshape(%x, shape=[B, 1.5])"), "t:2:26:", "a list mixes floats and symbolic dims"},
      {small("  %y = reshape(%x, shape=[B, 3])"), "t:2:3:", "cannot reshape f32[B, 4] (4*B elements) to [B, 3]"},
      {small("  %y relu(%x)"), "t:2:6:", "expected '=' or ',' after the result names, got 'relu'"},
      {small("  %y = relu(%x)", "%x: f32[B, 4] parm"), "t:1:23:", "expected ',' or ')' after an argument, got 'parm'"},
      {small("  return"), "t:3:3:", "expected a value to return, got 'return'"},
      {deep, "t:1:218:", "nested too deeply"},
      {"graph g(%\"\": f32[]) {\n}", "t:1:9:", "a value name must not be empty"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<Graph> g = parse_graph(c.text, "t");
    INFO(c.text);
    REQUIRE_FALSE(g.ok());
    std::string msg = status_message(g.status());
    INFO(msg);
    CHECK(g.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(msg.rfind(c.where + " ", 0) == 0);
    CHECK(msg.find(c.fragment) != std::string::npos);
  }
  CHECK(std::size(cases) >= 25);
}

// An ASan build (.ci/sanitize, clang's __has_feature or g++'s macro) runs the mutation
// test several times slower: its time bound is 10x there.
#if defined(__SANITIZE_ADDRESS__)
constexpr double kParseBudgetSeconds = 20.0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr double kParseBudgetSeconds = 20.0;
#else
constexpr double kParseBudgetSeconds = 2.0;
#endif
#else
constexpr double kParseBudgetSeconds = 2.0;
#endif

TEST_CASE("mutated files parse to a verified graph or a located error", "[parser][fuzz]") {
  std::mt19937 rng(1234);
  const std::string alphabet = "%[](){},:=+-*/#\"\\ \n0123456789BTxyabe.-_";
  const std::regex located(R"(^fz\.kiln:\d+:\d+: .+)");
  // CPU time, not wall time: the bound is on the parser's cost, whatever else the machine runs.
  std::clock_t start = std::clock();
  int ok = 0, errors = 0;
  std::vector<std::string> seeds;
  for (const char* t : kCorpus) seeds.push_back(t);
  for (const char* t : kCorpus) seeds.push_back(must_print(t));
  for (int iter = 0; iter < 10000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    int edits = rng() % 4 == 0 ? 2 + rng() % 3 : 1;
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 5) {
        case 0: s.resize(at); break;
        case 1: s.erase(at, 1 + rng() % 8); break;
        case 2: s.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        case 3: s[at] = alphabet[rng() % alphabet.size()]; break;
        case 4: s[at] = static_cast<char>(rng() % 256); break;
      }
    }
    absl::StatusOr<Graph> g = parse_graph(s, "fz.kiln");
    if (g.ok()) {
      ++ok;
      absl::Status v = verify(*g);
      INFO(s);
      INFO(status_message(v));
      REQUIRE(v.ok());
      std::string once = print_graph(*g);
      absl::StatusOr<Graph> again = parse_graph(once, "fz.kiln");
      INFO(once);
      REQUIRE(again.ok());
      REQUIRE(print_graph(*again) == once);
    } else {
      ++errors;
      std::string msg = status_message(g.status());
      INFO(s);
      INFO(msg);
      REQUIRE(std::regex_match(msg, located));
    }
  }
  double secs = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
  INFO("ok " << ok << ", errors " << errors << ", " << secs << " s of CPU");
  CHECK(ok > 100);
  CHECK(errors > 5000);
  CHECK(secs < kParseBudgetSeconds);
}
