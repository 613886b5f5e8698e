// Tests of the tracing frontend: every op reachable, operators and scalars, located errors,
// the traced MLP's IR, and traced graphs evaluated against their printed-and-parsed form.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <string>

#include "frontends/trace/trace.h"
#include "ir/compare.h"
#include "ir/extern_op.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/verifier.h"
#include "test/common/graphs.h"

namespace kt = kiln::trace;
using kiln::Graph;
using kiln::HostTensor;

namespace {

// The message of the TraceError that `f` throws; fails the test if it throws none.
template <typename F>
std::string trace_error(F f) {
  try {
    f();
  } catch (const kt::TraceError& e) {
    return e.what();
  }
  FAIL("no TraceError thrown");
  return "";
}

std::string here(int line) { return "trace_test.cc:" + std::to_string(line); }

// The graph printed, parsed back and printed again must give the same text; evaluated on
// the same random arguments, both must give bit-identical outputs (NaN matching NaN).
void check_matches_parsed(const Graph& g, const std::vector<kiln::Bindings>& bindings,
                          int64_t int_high = 2) {
  REQUIRE(kiln::verify(g).ok());
  std::string text = kiln::print_graph(g);
  absl::StatusOr<Graph> parsed = kiln::parse_graph(text, "traced.kiln");
  INFO(text);
  REQUIRE(parsed.ok());
  REQUIRE(kiln::print_graph(*parsed) == text);
  uint64_t seed = 1;
  for (const kiln::Bindings& b : bindings) {
    kiln::TensorMap args = kiln::random_args(g, b, seed++, int_high);
    auto want = kiln::evaluate(g, args);
    auto got = kiln::evaluate(*parsed, args);
    REQUIRE(want.ok());
    REQUIRE(got.ok());
    REQUIRE(want->size() == g.outputs().size());
    for (size_t i = 0; i < want->size(); ++i) {
      kiln::Comparison c = kiln::compare_tensors((*want)[i], (*got)[i], {0, 0});
      INFO("output " << i << " (%" << g.outputs()[i]->name() << "): " << c.message);
      CHECK(c.ok);
    }
  }
}

// The MLP of the issue; hidden sizes are parameters so numerics can run small.
Graph trace_mlp(int64_t d, int64_t h) {
  kt::Tracer t("mlp");
  auto x = t.input("x", kiln::bf16, {"B", d});
  auto w_up = t.param("w_up", kiln::bf16, {h, d});
  auto w_gate = t.param("w_gate", kiln::bf16, {h, d});
  auto w_down = t.param("w_down", kiln::bf16, {d, h});
  auto g = t.name(kt::linear(x, w_gate), "g");
  auto u = t.name(kt::linear(x, w_up), "u");
  auto a = t.name(kt::silu(g), "a");
  auto hid = t.name(a * u, "h");
  auto y = t.name(kt::linear(hid, w_down), "y");
  t.output(kt::rms_norm(y), "n");
  t.output(hid);
  return t.finish();
}

}  // namespace

TEST_CASE("every registry op is reachable from a traced program", "[trace]") {
  kt::Tracer t("all_ops");
  auto x = t.input("x", kiln::f32, {"B", 6});
  auto y = t.input("y", kiln::f32, {"B", 6});
  auto idx = t.input("idx", kiln::i64, {3});
  auto w = t.param("w", kiln::f32, {4, 6});
  auto bias = t.param("bias", kiln::f32, {4});
  auto gamma = t.param("gamma", kiln::f32, {6});
  auto beta = t.param("beta", kiln::f32, {6});
  std::vector<kt::Tensor> outs{
      kt::neg(x), kt::abs(x), kt::exp(x), kt::log(kt::abs(x) + 0.5f), kt::sqrt(kt::abs(x)),
      kt::rsqrt(kt::abs(x) + 0.25f), kt::sin(x), kt::cos(x), kt::tanh(x), kt::sigmoid(x),
      kt::relu(x), kt::gelu(x), kt::gelu(x, "tanh"), kt::silu(x), kt::erf(x), kt::atan(x),
      kt::reciprocal(x + 2.0f), kt::floor(x * 4), kt::ceil(x * 4), kt::cast(x, kiln::bf16),
      kt::logical_not(x > 0), t.constant(0.5, kiln::f32), t.iota({"B", 6}, 1), kt::add(x, y), kt::sub(x, y),
      kt::mul(x, y), kt::div(x, y + 3), kt::pow(kt::abs(x), y), kt::fmod(x, y + 3), kt::maximum(x, y),
      kt::minimum(x, 0), kt::eq(kt::floor(x), kt::floor(y)), kt::ne(x, y), kt::lt(x, y),
      kt::le(x, y), kt::gt(x, y), kt::ge(x, y), kt::logical_and(x > 0, y > 0),
      kt::logical_or(x > 0, y > 0), kt::where(x > y, x, 0.0f), kt::sum(x, kt::Axes{1}, true),
      kt::mean(x), kt::max(x, kt::Axes{0}), kt::min(x, kt::Axes{-1}), kt::prod(x, kt::Axes{1}),
      kt::argmax(x), kt::softmax(x, 1), kt::log_softmax(x), kt::layer_norm(x, gamma, beta),
      kt::rms_norm(x, gamma), kt::matmul(x, kt::transpose(w, 0, 1)), kt::linear(x, w, bias),
      kt::reshape(x, {"B", 3, 2}), kt::permute(x, {1, 0}), kt::expand(kt::unsqueeze(x, {0}), {2, "B", 6}),
      kt::squeeze(kt::unsqueeze(x, {1})), kt::slice(x, 1, 1, 5, 2), kt::slice(x, 0, 0),
      kt::concat({x, y}, 0), kt::gather(x, idx, 1)};
  auto q = kt::reshape(x, {"B", 2, 3});
  auto k = kt::reshape(y, {"B", 2, 3});
  outs.push_back(kt::scaled_dot_product_attention(q, k, k, std::nullopt, true));
  outs.push_back(kt::scaled_dot_product_attention(q, k, q, kt::slice(q > k, 2, 0, 2), false, 0.5));
  for (const kt::Tensor& s : kt::split(x, {2, 4}, 1)) outs.push_back(s);
  auto img = kt::reshape(x, {"B", 1, 2, 3});
  auto kw = t.param("kw", kiln::f32, {2, 1, 2, 2});
  outs.push_back(kt::conv(img, kw, std::nullopt, {1, 1}, {1, 1, 0, 0}));
  outs.push_back(kt::conv_transpose(img, kt::reshape(kw, {1, 2, 2, 2}), std::nullopt, {2, 2}));
  outs.push_back(kt::max_pool(img, {2, 2}, {1, 1}, {}, true));
  outs.push_back(kt::avg_pool(img, {1, 2}, {}, {0, 1, 0, 1}, false, true));
  outs.push_back(kt::window(x, {3}, {2}, {1, 1}, -1.0));
  auto cache = t.state("cache", kiln::f32, {"B", 2, 8, 3});
  auto pos = t.input("pos", kiln::i64, {"B"});
  auto written = kt::cache_write(cache, kt::reshape(x, {"B", 2, 1, 3}), pos);
  outs.push_back(written);
  outs.push_back(kt::attention(kt::reshape(y, {"B", 2, 1, 3}), written, written, {.causal = true, .window = 2}));
  // An extern op: 2x, registered here (the reference evaluator runs its cpu function).
  static const absl::Status registered = kiln::register_extern_op(
      {.name = "trace_test.twice",
       .infer = [](std::span<const kiln::TensorType> in) { return std::vector<kiln::TensorType>{in[0]}; },
       .cpu = [](std::span<const kiln::ExternTensor> in, std::span<const kiln::ExternTensor> out) {
         for (int64_t i = 0; i < in[0].numel(); ++i)
           static_cast<float*>(out[0].data)[i] = 2 * static_cast<const float*>(in[0].data)[i];
         return absl::OkStatus();
       }});
  REQUIRE(registered.ok());
  outs.push_back(kt::extern_call("trace_test.twice", {x})[0]);
  // Collectives of one rank (evaluate runs one; evaluate_ranks is tested in test/reference).
  outs.push_back(kt::reduce_scatter(kt::all_gather(kt::all_reduce(x, 1), 1, 1), -1, 1));
  for (const kt::Tensor& o : outs) t.output(o);
  Graph g = t.finish();
  CHECK(g.find("cache")->is_state());

  std::set<std::string> seen;
  for (const auto& n : g.nodes()) seen.insert(std::string(n->info().name));
  for (const kiln::OpInfo& info : kiln::all_ops()) {
    INFO("op " << info.name);
    CHECK(seen.count(std::string(info.name)) == 1);
  }
  check_matches_parsed(g, {{{"B", 1}}, {{"B", 3}}, {{"B", 8}}}, /*int_high=*/6);
}

TEST_CASE("operators and scalars record nodes of the tensor's dtype", "[trace]") {
  kt::Tracer t("ops");
  auto x = t.input("x", kiln::f32, {"N"});
  auto y = t.input("y", kiln::f32, {"N"});
  auto z = (x * 2 - 1) / 4 + (-y);  // integer literals become f32 constants
  auto m = kt::where(x < y, x, y);  // a data-dependent choice, elementwise
  auto c = (x <= 0.25f) | !(y > x) & (x != y);
  t.output(z, "z");
  t.output(m, "m");
  t.output(c, "c");
  Graph g = t.finish();
  std::string text = kiln::print_graph(g);
  INFO(text);
  CHECK(text.find("%constant = constant(value=2.0, dtype=f32) : f32[]") != std::string::npos);
  CHECK(text.find("%mul = mul(%x, %constant) : f32[N]") != std::string::npos);
  CHECK(text.find("%neg = neg(%y) : f32[N]") != std::string::npos);
  CHECK(text.find("%c = or(") != std::string::npos);

  // Hand-derived values on fresh random inputs, at several sizes.
  for (int64_t n : {1, 7, 64}) {
    kiln::TensorMap args = kiln::random_args(g, {{"N", n}}, 100 + n);
    auto out = kiln::evaluate(g, args);
    REQUIRE(out.ok());
    const HostTensor &xs = args.at("x"), &ys = args.at("y");
    for (int64_t i = 0; i < n; ++i) {
      float xv = static_cast<float>(xs.get(i)), yv = static_cast<float>(ys.get(i));
      CHECK((*out)[0].get(i) == Approx((xv * 2.0f - 1.0f) / 4.0f + -yv).epsilon(1e-6));
      CHECK((*out)[1].get(i) == (xv < yv ? xv : yv));
      CHECK((*out)[2].get(i) == ((xv <= 0.25f) || (!(yv > xv) && xv != yv) ? 1.0 : 0.0));
    }
  }
  check_matches_parsed(g, {{{"N", 1}}, {{"N", 5}}});
}

TEST_CASE("scalars take the dtype of the tensor they meet", "[trace]") {
  kt::Tracer t("dtypes");
  auto x = t.input("x", kiln::bf16, {3});
  auto i = t.input("i", kiln::i32, {3});
  auto b = t.input("b", kiln::bool_, {3});
  t.output(1.5f - x);
  t.output(i * 3);
  t.output(kt::eq(b, true));
  t.output(kt::where(b, 0.0, x));
  std::string text = kiln::print_graph(t.finish());
  INFO(text);
  CHECK(text.find("constant(value=1.5, dtype=bf16) : bf16[]") != std::string::npos);
  CHECK(text.find("constant(value=3, dtype=i32) : i32[]") != std::string::npos);
  CHECK(text.find("constant(value=true, dtype=bool) : bool[]") != std::string::npos);
  CHECK(text.find("constant(value=0.0, dtype=bf16) : bf16[]") != std::string::npos);
}

TEST_CASE("the traced MLP prints the issue's IR", "[trace]") {
  const char* expected =
      "graph mlp(%x: bf16[B, 4096], %w_up: bf16[11008, 4096] param, %w_gate: bf16[11008, 4096] param, "
      "%w_down: bf16[4096, 11008] param) {\n"
      "  %g = linear(%x, %w_gate) : bf16[B, 11008]\n"
      "  %u = linear(%x, %w_up) : bf16[B, 11008]\n"
      "  %a = silu(%g) : bf16[B, 11008]\n"
      "  %h = mul(%a, %u) : bf16[B, 11008]\n"
      "  %y = linear(%h, %w_down) : bf16[B, 4096]\n"
      "  %n = rms_norm(%y, axes=[-1], eps=1e-06) : bf16[B, 4096]\n"
      "  return %n, %h\n"
      "}\n";
  Graph g = trace_mlp(4096, 11008);
  CHECK(kiln::print_graph(g) == expected);

  // The same text as the issue's hand-written example, once parsed and printed.
  absl::StatusOr<Graph> parsed = kiln::parse_graph(kiln::test_graphs::kIssueMlp, "issue.kiln");
  REQUIRE(parsed.ok());
  CHECK(kiln::print_graph(*parsed) == expected);

  check_matches_parsed(trace_mlp(64, 96), {{{"B", 1}}, {{"B", 3}}, {{"B", 17}}});
}

TEST_CASE("C++ control flow records the path taken", "[trace]") {
  for (int layers : {1, 3}) {
    kt::Tracer t("loop");
    auto x = t.input("x", kiln::f32, {"B", 8});
    auto w = t.param("w", kiln::f32, {8, 8});
    for (int i = 0; i < layers; ++i) x = kt::relu(kt::linear(x, w)) + x;
    if (layers > 2) x = kt::softmax(x);
    t.output(x, "out");
    Graph g = t.finish();
    std::string text = kiln::print_graph(g);
    int linears = 0;
    for (size_t p = text.find("= linear("); p != std::string::npos; p = text.find("= linear(", p + 1)) ++linears;
    CHECK(linears == layers);
    CHECK((text.find("softmax") != std::string::npos) == (layers > 2));
    check_matches_parsed(g, {{{"B", 1}}, {{"B", 5}}});
  }
}

TEST_CASE("parameters with host data evaluate with that data", "[trace]") {
  HostTensor w(kiln::f32, {2, 3});
  for (int64_t i = 0; i < w.numel(); ++i) w.set(i, 0.25 * static_cast<double>(i) - 0.6);
  kt::Tracer t("with_data");
  auto x = t.input("x", kiln::f32, {"B", 3});
  auto wp = t.param("w", w);
  CHECK(wp.type().to_string() == "f32[2, 3]");
  t.output(kt::linear(x, wp), "y");
  Graph g = t.finish();
  REQUIRE(g.params().size() == 1);
  REQUIRE(g.params()[0]->data() != nullptr);
  kiln::TensorMap args = kiln::random_args(g, {{"B", 3}}, 7);
  CHECK(args.count("w") == 0);  // parameters with data are not arguments
  auto out = kiln::evaluate(g, args);
  REQUIRE(out.ok());
  const HostTensor& xs = args.at("x");
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t o = 0; o < 2; ++o) {
      double want = 0;
      for (int64_t k = 0; k < 3; ++k) want += xs.get(b * 3 + k) * w.get(o * 3 + k);
      CHECK((*out)[0].get(b * 2 + o) == Approx(want).epsilon(1e-6));
    }
}

TEST_CASE("misuse throws TraceError with the op, the shapes and the call site", "[trace]") {
  kt::Tracer t("bad");
  auto x = t.input("x", kiln::bf16, {"B", 4096});
  auto w = t.param("w", kiln::bf16, {11008, 4095});

  std::string e = trace_error([&] { kt::linear(x, w); }); int line = __LINE__;
  CHECK_THAT(e, Catch::Contains(here(line)));
  CHECK_THAT(e, Catch::Contains("linear(bf16[B, 4096], bf16[11008, 4095])"));
  CHECK_THAT(e, Catch::Contains("4095"));

  e = trace_error([&] { kt::softmax(x, 2); }); line = __LINE__;
  CHECK_THAT(e, Catch::StartsWith(here(line) + ": softmax(bf16[B, 4096], axis=2): axis 2 is out of range"));

  // Operators report the line of the expression too.
  e = trace_error([&] { return x + w; }); line = __LINE__;
  CHECK_THAT(e, Catch::StartsWith(here(line) + ": add(bf16[B, 4096], bf16[11008, 4095]): cannot broadcast"));

  e = trace_error([&] { kt::reshape(x, {"B", 7, -1}); }); line = __LINE__;
  CHECK_THAT(e, Catch::Contains(here(line)));
  CHECK_THAT(e, Catch::Contains("reshape(bf16[B, 4096], shape=[B, 7, -1])"));

  e = trace_error([&] { kt::transpose(x, 0, 2); }); line = __LINE__;
  CHECK_THAT(e, Catch::StartsWith(here(line) + ": transpose(bf16[B, 4096], 0, 2): axis 2 is out of range"));

  e = trace_error([&] { x.dim(-3); }); line = __LINE__;
  CHECK_THAT(e, Catch::Contains(here(line)));
  CHECK_THAT(e, Catch::Contains("bf16[B, 4096]"));

  kt::Tracer other("other");
  auto y = other.input("y", kiln::bf16, {"B", 4096});
  e = trace_error([&] { kt::mul(x, y); }); line = __LINE__;
  CHECK_THAT(e, Catch::StartsWith(here(line) + ": mul(bf16[B, 4096], bf16[B, 4096]): operands come from different tracers ('bad' and 'other')"));

  e = trace_error([&] { kt::exp(kt::Tensor()); });
  CHECK_THAT(e, Catch::Contains("empty Tensor"));
  e = trace_error([&] { t.input("x", kiln::f32, {2}); });
  CHECK_THAT(e, Catch::Contains("%x is already defined"));
  e = trace_error([&] { t.name(x, "renamed"); });
  CHECK_THAT(e, Catch::Contains("argument"));
  e = trace_error([&] { t.finish(); });
  CHECK_THAT(e, Catch::Contains("no outputs"));

  // A failed op leaves no constants behind for its scalars.
  auto i = t.input("i", kiln::i32, {3});
  size_t before = t.graph().num_nodes();
  e = trace_error([&] { kt::pow(i, 2); });
  CHECK_THAT(e, Catch::Contains("pow(i32[3], 2)"));
  CHECK_THAT(e, Catch::Contains("floating-point"));
  CHECK(t.graph().num_nodes() == before);

  t.output(kt::exp(x));
  Graph g = t.finish();
  CHECK(kiln::verify(g).ok());
  e = trace_error([&] { kt::exp(x); });
  CHECK_THAT(e, Catch::Contains("already finished"));
}

TEST_CASE("names are the op's by default, unique, and settable", "[trace]") {
  kt::Tracer t("names");
  auto x = t.input("x", kiln::f32, {4});
  auto a = kt::exp(x);
  auto b = kt::exp(a);
  auto c = t.name(kt::exp(b), "exp_3");
  auto d = kt::exp(c);
  CHECK(a.name() == "exp");
  CHECK(b.name() == "exp_1");
  CHECK(c.name() == "exp_3");
  CHECK(d.name() == "exp_4");  // the counter moved past exp_2 when it was taken
  std::string e = trace_error([&] { t.name(d, "exp"); });
  CHECK_THAT(e, Catch::Contains("%exp is already defined"));
  auto parts = kt::split(x, {1, 3}, 0);
  CHECK(parts[0].name() == "split");
  CHECK(parts[1].name() == "split_1");
  t.output(d, "result");
  CHECK(t.finish().outputs()[0]->name() == "result");
}
