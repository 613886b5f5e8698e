// The CPU backend end to end: the lowering's numerics graphs (test/codegen/lower_test.cc),
// under hand-made schedules and the default pass pipeline, and the examples at small sizes,
// JIT-compiled and run against the reference evaluator with several bindings per symbol;
// special values; executable semantics (outputs, errors, weight prep, statistics, dumps).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/graphs.h"
#include "test/cpu/cpu_check.h"
#include "test/cpu/decoder_layer.h"
#include "test/fuzz/check.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;
using kiln::testing::check_cpu_matches_reference;
using kiln::testing::check_cpu_on_args;
using kiln::testing::make_module;
using kiln::testing::ScheduleFn;

namespace {

std::shared_ptr<const CompiledModule> module_of(const Graph& g, const ScheduleFn& schedule = {}) {
  absl::StatusOr<std::shared_ptr<const CompiledModule>> m = make_module(g, schedule);
  if (!m.ok()) FAIL(status_message(m.status()));
  return *m;
}

std::vector<Bindings> bindings_of(const std::string& sym, std::initializer_list<int64_t> values) {
  std::vector<Bindings> out;
  for (int64_t v : values) out.push_back(Bindings{{sym, v}});
  return out;
}

// The graph compiled three ways: one kernel per node, everything in one group of `fused`
// (when given), and the default pass pipeline.
void check_all_schedules(const Graph& g, const std::vector<Bindings>& bs, uint64_t seed,
                         std::optional<KernelGroup::Kind> fused) {
  SECTION("one kernel per node") { require_ok(check_cpu_matches_reference(g, module_of(g, schedule_per_node), bs, seed)); }
  if (fused) {
    SECTION("one fused kernel") {
      KernelGroup::Kind kind = *fused;
      auto single = [kind](const Graph& x) { return schedule_single_group(x, kind); };
      require_ok(check_cpu_matches_reference(g, module_of(g, single), bs, seed + 1));
    }
  }
  SECTION("default pipeline") { require_ok(check_cpu_matches_reference(g, module_of(g), bs, seed + 2)); }
}

}  // namespace

TEST_CASE("cpu: a chain of broadcasting elementwise ops", "[cpu]") {
  check_all_schedules(parse_or_fail(test_graphs::kChain), bindings_of("B", {1, 3, 17, 300}), 1, KernelGroup::Kind::Elementwise);
}

TEST_CASE("cpu: softmax as primitives (reduce max, reduce sum, map)", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kSoftmax);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 5}}, {{"B", 3}, {"T", 80}}};
  check_all_schedules(g, bs, 3, KernelGroup::Kind::Reduction);
}

TEST_CASE("cpu: rms_norm with the residual add before it, bf16", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kRmsNorm);
  check_all_schedules(g, bindings_of("B", {1, 5, 33}), 4, KernelGroup::Kind::Reduction);
}

TEST_CASE("cpu: reductions: axes, keepdim, negative axes, integer and argmax", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kReductions);
  check_all_schedules(g, bindings_of("B", {1, 2, 7}), 5, std::nullopt);
}

TEST_CASE("cpu: integer constants a double cannot hold stay exact (INT64_MAX, INT64_MIN, 2^53 + 1)", "[cpu]") {
  check_all_schedules(parse_or_fail(test_graphs::kInt64Constants), bindings_of("B", {1, 3, 17, 300}), 40,
                      KernelGroup::Kind::Elementwise);
}

TEST_CASE("cpu: views become index arithmetic", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kViews);
  check_all_schedules(g, bindings_of("B", {1, 2, 5}), 6, KernelGroup::Kind::Elementwise);
}

TEST_CASE("cpu: reshape of symbolic dims", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kReshape);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 3}, {"T", 5}}, {{"B", 4}, {"T", 2}}};
  check_all_schedules(g, bs, 8, KernelGroup::Kind::Elementwise);
}

TEST_CASE("cpu: concat, split and gather", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kConcatSplitGather);
  std::vector<Bindings> bs = {{{"B", 1}, {"K", 1}}, {{"B", 4}, {"K", 7}}, {{"B", 9}, {"K", 3}}};
  check_all_schedules(g, bs, 9, KernelGroup::Kind::Elementwise);
}

TEST_CASE("cpu: a linear with its epilogue", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kMlp);
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 2}, {"T", 3}}, {{"B", 5}, {"T", 33}}};
  check_all_schedules(g, bs, 11, KernelGroup::Kind::Gemm);
}

TEST_CASE("cpu: batched matmul with broadcast batch dims, vectors, and a transposing prologue", "[cpu]") {
  Graph g = parse_or_fail(test_graphs::kMatmuls);
  auto hand = [](const Graph& x) {
    Schedule s;
    s.groups.push_back(make_group(x, {x.find("s")->producer()}, KernelGroup::Kind::Gemm, 0));
    s.groups[0].inputs = {x.find("q"), x.find("k")};
    s.groups[0].prologue = {x.find("kt")->producer()};
    s.groups.push_back(make_group(x, {x.find("z")->producer()}, KernelGroup::Kind::Gemm, 1));
    s.groups.push_back(make_group(x, {x.find("u")->producer()}, KernelGroup::Kind::Gemm, 2));
    return s;
  };
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 3}, {"T", 4}}, {{"B", 2}, {"T", 21}}};
  SECTION("prologue views as GEMM strides") { require_ok(check_cpu_matches_reference(g, module_of(g, hand), bs, 12)); }
  SECTION("default pipeline") { require_ok(check_cpu_matches_reference(g, module_of(g), bs, 13)); }
}

TEST_CASE("cpu: bf16 and f16 GEMMs accumulate in f32 and round once", "[cpu]") {
  Graph g = parse_or_fail(R"(graph lin(%x: bf16[M, 96], %w: bf16[40, 96] param, %b: bf16[40] param, %h: f16[M, 24], %v: f16[24, 8]) {
  %l = linear(%x, %w, %b)
  %s = silu(%l)
  %p = matmul(%h, %v)
  %q = relu(%p)
  return %s, %q
})");
  check_all_schedules(g, bindings_of("M", {1, 3, 70}), 14, std::nullopt);
}

TEST_CASE("cpu: integer and bool ops follow the reference's wrapping and division rules", "[cpu]") {
  Graph g = parse_or_fail(R"(graph ints(%a: i32[N], %b: i32[N], %c: i64[N], %d: i64[N], %f: f32[N]) {
  %q = div(%a, %b)
  %r = div(%c, %d)
  %s = mul(%a, %a)
  %t = sub(%c, %d)
  %u = abs(%a)
  %v = neg(%c)
  %w = cast(%f, dtype=i32)
  %x = cast(%f, dtype=i64)
  %y = cast(%a, dtype=f32)
  %z = lt(%a, %b)
  %n = not(%z)
  %o = and(%n, %z)
  %m = maximum(%c, %d)
  %bs = cast(%f, dtype=bool)
  return %q, %r, %s, %t, %u, %v, %w, %x, %y, %z, %n, %o, %m, %bs
})");
  auto i32s = [](std::vector<int64_t> v) {
    HostTensor t(DType::i32, {static_cast<int64_t>(v.size())});
    for (size_t i = 0; i < v.size(); ++i) t.set_int(static_cast<int64_t>(i), v[i]);
    return t;
  };
  auto i64s = [](std::vector<int64_t> v) {
    HostTensor t(DType::i64, {static_cast<int64_t>(v.size())});
    for (size_t i = 0; i < v.size(); ++i) t.set_int(static_cast<int64_t>(i), v[i]);
    return t;
  };
  constexpr int64_t kMin32 = std::numeric_limits<int32_t>::min(), kMax32 = std::numeric_limits<int32_t>::max();
  constexpr int64_t kMin64 = std::numeric_limits<int64_t>::min(), kMax64 = std::numeric_limits<int64_t>::max();
  constexpr double kInf = std::numeric_limits<double>::infinity(), kNaN = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> fs = {kNaN, kInf, -kInf, 3.7, -3.7, 1e10, -1e19, 0.5, -0.0, 2147483648.0};
  HostTensor f(DType::f32, {10});
  for (int i = 0; i < 10; ++i) f.set(i, fs[i]);
  TensorMap args;
  args.emplace("a", i32s({7, -7, kMin32, kMax32, 5, 0, -1, 9, kMin32, 3}));
  args.emplace("b", i32s({2, 2, -1, 0, -3, 0, 0, -9, 1, 3}));
  args.emplace("c", i64s({kMin64, kMax64, -9, 100, 7, 0, kMin64, 1, -5, 6}));
  args.emplace("d", i64s({-1, -1, 4, 0, -2, 0, 1, kMax64, 5, -6}));
  args.emplace("f", std::move(f));
  Bindings b{{"N", 10}};
  require_ok(check_cpu_on_args(g, module_of(g, schedule_per_node), args, b, nullptr));
  require_ok(check_cpu_on_args(g, module_of(g, [](const Graph& x) {
    return schedule_single_group(x, KernelGroup::Kind::Elementwise);
  }), args, b, nullptr));
}

TEST_CASE("cpu: NaN, infinities, zeros and denormals through math, max/min and argmax", "[cpu]") {
  Graph g = parse_or_fail(R"(graph special(%x: f32[R, 8], %h: bf16[R, 8]) {
  %e = exp(%x)
  %l = log(%x)
  %t = tanh(%x)
  %r = erf(%x)
  %s = sigmoid(%x)
  %q = sqrt(%x)
  %mx = max(%x, axes=[-1])
  %mn = min(%x, axes=[-1])
  %am = argmax(%x, axis=-1)
  %sm = sum(%x, axes=[-1])
  %hb = exp(%h)
  %hm = max(%h, axes=[-1])
  %rl = relu(%x)
  %mm = maximum(%x, %e)
  %si = silu(%x)
  return %e, %l, %t, %r, %s, %q, %mx, %mn, %am, %sm, %hb, %hm, %rl, %mm, %si
})");
  constexpr double kInf = std::numeric_limits<double>::infinity(), kNaN = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::vector<double>> rows = {
      {kNaN, 1, 2, 3, 4, 5, 6, 7},
      {1, 2, 3, kNaN, 0, -1, kInf, -kInf},
      {0.0, -0.0, 1e-40, -1e-40, 1e-45, 1.17549435e-38, 88.72, 88.73},
      {-87.3, -87.4, -103.9, -104.5, -150, 89, 1e30, -1e30},
      {0.0004, -0.0004, 0.00039, 7.9, -7.91, 3.99, 4.01, -4.5},
      {5, 5, 5, 5, 5, 5, 5, 5},
      {-kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf},
      {1e-3, 0.5, 0.69314718, 0.70710677, 0.70710678, 1.41421356, 2.0, 1e6},
  };
  HostTensor x(DType::f32, {8, 8}), h(DType::bf16, {8, 8});
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) {
      x.set(r * 8 + c, rows[r][c]);
      h.set(r * 8 + c, rows[r][c]);
    }
  TensorMap args;
  args.emplace("x", std::move(x));
  args.emplace("h", std::move(h));
  require_ok(check_cpu_on_args(g, module_of(g, schedule_per_node), args, {{"R", 8}}, nullptr));
}

TEST_CASE("cpu: pow by a small integral constant is products, any other exponent powf", "[cpu]") {
  // Squares, cubes (gelu's tanh form as exported), fourth powers and their reciprocals; 0;
  // and exponents that stay libm calls (fractional, or beyond 4).
  Graph g = parse_or_fail(R"(graph pw(%x: f32[B, 5], %y: f32[B, 5]) {
  %c0 = constant(value=0.0, dtype=f32)
  %c1 = constant(value=1.0, dtype=f32)
  %c2 = constant(value=2.0, dtype=f32)
  %c3 = constant(value=3.0, dtype=f32)
  %c4 = constant(value=4.0, dtype=f32)
  %m1 = constant(value=-1.0, dtype=f32)
  %m2 = constant(value=-2.0, dtype=f32)
  %m3 = constant(value=-3.0, dtype=f32)
  %m4 = constant(value=-4.0, dtype=f32)
  %h = constant(value=0.5, dtype=f32)
  %c5 = constant(value=5.0, dtype=f32)
  %a = abs(%x)
  %p0 = pow(%x, %c0)
  %p1 = pow(%x, %c1)
  %p2 = pow(%x, %c2)
  %p3 = pow(%x, %c3)
  %p4 = pow(%x, %c4)
  %q1 = pow(%y, %m1)
  %q2 = pow(%y, %m2)
  %q3 = pow(%y, %m3)
  %q4 = pow(%y, %m4)
  %ph = pow(%a, %h)
  %p5 = pow(%x, %c5)
  %pv = pow(%a, %y)
  return %p0, %p1, %p2, %p3, %p4, %q1, %q2, %q3, %q4, %ph, %p5, %pv
})");
  SECTION("random inputs") { check_all_schedules(g, bindings_of("B", {1, 7, 300}), 21, KernelGroup::Kind::Elementwise); }
  SECTION("special values") {
    constexpr double kInf = std::numeric_limits<double>::infinity(), kNaN = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> xs = {0.0, -0.0, kInf, -kInf, kNaN, 1e10, -1e-12, 3.5, -2.25, 1e-30};
    HostTensor x(DType::f32, {2, 5}), y(DType::f32, {2, 5});
    for (int i = 0; i < 10; ++i) {
      x.set(i, xs[i]);
      y.set(i, xs[(i + 3) % 10]);
    }
    TensorMap args;
    args.emplace("x", std::move(x));
    args.emplace("y", std::move(y));
    require_ok(check_cpu_on_args(g, module_of(g, schedule_per_node), args, {{"B", 2}}, nullptr));
  }
}

TEST_CASE("cpu: fmod is C's fmod in f32, f64 and bf16 (LLVM's frem)", "[cpu]") {
  // ONNX's float Mod. The quotients of random inputs reach 2^24 (x up to 1e6, y down to 0.06),
  // where a - trunc(a / b) * b in floats loses every digit.
  Graph g = parse_or_fail(R"(graph fm(%x: f32[B, 5], %y: f32[B, 5], %d: f64[B, 5], %h: bf16[B, 5]) {
  %big = constant(value=1000000.0, dtype=f32)
  %lo = constant(value=0.0625, dtype=f32)
  %s = mul(%x, %big)
  %m = maximum(%y, %lo)
  %r = fmod(%s, %m)
  %n = fmod(%x, %y)
  %e = fmod(%d, %d)
  %yh = cast(%y, dtype=bf16)
  %k = fmod(%h, %yh)
  return %r, %n, %e, %k
})");
  SECTION("random inputs") { check_all_schedules(g, bindings_of("B", {1, 7, 300}), 9, KernelGroup::Kind::Elementwise); }
  SECTION("special values") {
    constexpr double kInf = std::numeric_limits<double>::infinity(), kNaN = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> xs = {5.5, -5.5, 0.0, -0.0, kInf, kNaN, 1e30, -3.0, 1e-40, 7.25};
    std::vector<double> ys = {2.0, 2.0, 3.0, -3.0, 2.0, 1.0, 3.3, 0.0, 1e-41, kInf};
    HostTensor x(DType::f32, {2, 5}), y(DType::f32, {2, 5}), d(DType::f64, {2, 5}), h(DType::bf16, {2, 5});
    for (int i = 0; i < 10; ++i) {
      x.set(i, xs[i]);
      y.set(i, ys[i]);
      d.set(i, xs[i]);
      h.set(i, xs[i]);
    }
    TensorMap args;
    args.emplace("x", std::move(x));
    args.emplace("y", std::move(y));
    args.emplace("d", std::move(d));
    args.emplace("h", std::move(h));
    require_ok(check_cpu_on_args(g, module_of(g, schedule_per_node), args, {{"B", 2}}, nullptr));
  }
}

TEST_CASE("cpu: the MLP example at small sizes", "[cpu][examples]") {
  // examples/mlp.cc's graph with hidden 4096 -> 64 and intermediate 11008 -> 176.
  Graph g = parse_or_fail(R"(graph mlp(%x: bf16[B, 64], %w_up: bf16[176, 64] param, %w_gate: bf16[176, 64] param, %w_down: bf16[64, 176] param) {
  %g = linear(%x, %w_gate)
  %u = linear(%x, %w_up)
  %a = silu(%g)
  %h = mul(%a, %u)
  %y = linear(%h, %w_down)
  %n = rms_norm(%y, axes=[-1], eps=1e-06)
  return %n, %h
})");
  require_ok(check_cpu_matches_reference(g, module_of(g), bindings_of("B", {1, 3, 64}), 20));
}

using kiln::testing::decoder_layer_text;
using kiln::testing::layer_args;

TEST_CASE("cpu: decoder_layer_text at full size is examples/decoder_layer.kiln", "[cpu][examples]") {
  std::ifstream f(KILN_SOURCE_DIR "/examples/decoder_layer.kiln");
  if (!f) {
    WARN("examples/decoder_layer.kiln is not in this tree");
    return;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  REQUIRE(print_graph(parse_or_fail(ss.str())) == print_graph(parse_or_fail(decoder_layer_text(2048, 16, 128, 5632))));
}

TEST_CASE("cpu: the decoder layer example at small sizes", "[cpu][examples]") {
  Graph g = parse_or_fail(decoder_layer_text(64, 4, 16, 160));
  auto m = module_of(g);
  auto exe = kiln::testing::build_cpu(m);
  REQUIRE(exe.ok());
  std::vector<std::vector<Tensor>> alive;
  std::vector<Bindings> bs = {{{"B", 1}, {"T", 1}}, {{"B", 1}, {"T", 7}}, {{"B", 2}, {"T", 5}}, {{"B", 3}, {"T", 24}}};
  for (size_t i = 0; i < bs.size(); ++i)
    require_ok(check_cpu_on_args(g, m, layer_args(g, bs[i], 21 + i), bs[i], exe->get(), &alive));
}

TEST_CASE("cpu: the 8-, 16-bit and unsigned integer types wrap, divide and compare as the reference", "[cpu]") {
  Graph g = parse_or_fail(R"(graph narrow(%a: i8[N], %b: i8[N], %c: u8[N], %d: u8[N], %e: i16[N], %h: u16[N], %p: u32[N], %q: u32[N], %s: u64[N], %t: u64[N], %f: f32[N]) {
  %a1 = add(%a, %b)
  %a2 = mul(%a, %b)
  %a3 = div(%a, %b)
  %a4 = abs(%a)
  %c1 = sub(%c, %d)
  %c2 = div(%c, %d)
  %c3 = lt(%c, %d)
  %c4 = maximum(%c, %d)
  %e1 = mul(%e, %e)
  %e2 = cast(%e, dtype=u16)
  %h1 = add(%h, %h)
  %h2 = cast(%h, dtype=i8)
  %p1 = sub(%p, %q)
  %p2 = div(%p, %q)
  %p3 = ge(%p, %q)
  %s1 = div(%s, %t)
  %s2 = gt(%s, %t)
  %s3 = minimum(%s, %t)
  %s4 = cast(%s, dtype=f32)
  %f1 = cast(%f, dtype=u8)
  %f2 = cast(%f, dtype=i16)
  %f3 = cast(%f, dtype=u64)
  %f4 = cast(%f, dtype=u32)
  return %a1, %a2, %a3, %a4, %c1, %c2, %c3, %c4, %e1, %e2, %h1, %h2, %p1, %p2, %p3, %s1, %s2, %s3, %s4, %f1, %f2, %f3, %f4
})");
  // Fresh random inputs at sizes 1, odd and large...
  std::vector<Bindings> bs = bindings_of("N", {1, 7, 300});
  require_ok(check_cpu_matches_reference(g, module_of(g, schedule_per_node), bs, 41));
  require_ok(check_cpu_matches_reference(g, module_of(g), bs, 42));
  // ...and the edge values: type limits, zero divisors, u64 values past 2^63.
  auto ints = [](DType t, std::vector<int64_t> v) {
    HostTensor h(t, {static_cast<int64_t>(v.size())});
    for (size_t i = 0; i < v.size(); ++i) h.set_int(static_cast<int64_t>(i), v[i]);
    return h;
  };
  const int64_t big = static_cast<int64_t>((uint64_t{1} << 63) + 9);
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  TensorMap args;
  args.emplace("a", ints(DType::i8, {-128, 127, -7, 100, 0, -1}));
  args.emplace("b", ints(DType::i8, {-1, 127, 2, 0, 5, -128}));
  args.emplace("c", ints(DType::u8, {0, 255, 200, 3, 7, 1}));
  args.emplace("d", ints(DType::u8, {1, 255, 3, 0, 9, 200}));
  args.emplace("e", ints(DType::i16, {-32768, 32767, 300, -300, 1, 0}));
  args.emplace("h", ints(DType::u16, {65535, 40000, 128, 255, 0, 1}));
  args.emplace("p", ints(DType::u32, {0, 4294967295LL, 7, 100, 3000000000LL, 5}));
  args.emplace("q", ints(DType::u32, {1, 2, 0, 4294967295LL, 3, 5}));
  args.emplace("s", ints(DType::u64, {big, -1, 5, 0, big, 3}));
  args.emplace("t", ints(DType::u64, {3, big, 0, -1, 2, 3}));
  HostTensor f(DType::f32, {6});
  std::vector<double> fv = {300.7, -1.5, kNaN, 1e19, -40000.2, 4294967296.0};
  for (int i = 0; i < 6; ++i) f.set(i, fv[i]);
  args.emplace("f", std::move(f));
  require_ok(check_cpu_on_args(g, module_of(g), args, Bindings{{"N", 6}}, nullptr));
}

TEST_CASE("cpu: reductions over the narrow and unsigned integer types", "[cpu]") {
  Graph g = parse_or_fail(R"(graph red(%a: u8[B, 9], %b: i16[B, 9], %c: u64[B, 9], %d: u32[B, 9]) {
  %s = sum(%a, axes=[1])
  %m = max(%b, axes=[1])
  %n = min(%c, axes=[1])
  %x = max(%c, axes=[1])
  %i = argmax(%c, axis=1)
  %p = prod(%d, axes=[1])
  return %s, %m, %n, %x, %i, %p
})");
  require_ok(check_cpu_matches_reference(g, module_of(g), bindings_of("B", {1, 5, 257}), 43));
  HostTensor c(DType::u64, {1, 9});
  int64_t vals[] = {3, -1, static_cast<int64_t>(uint64_t{1} << 63), 0, 7, -2, 1, 9, 2};
  for (int i = 0; i < 9; ++i) c.set_int(i, vals[i]);
  TensorMap args;
  std::mt19937_64 rng(44);
  for (auto [name, t] : {std::pair{"a", DType::u8}, {"b", DType::i16}, {"d", DType::u32}}) {
    HostTensor h(t, {1, 9});
    h.fill_random(rng, -100, 100);
    args.emplace(name, std::move(h));
  }
  args.emplace("c", std::move(c));
  require_ok(check_cpu_on_args(g, module_of(g), args, Bindings{{"B", 1}}, nullptr));
}

TEST_CASE("cpu: f64 elementwise math, reductions, GEMMs and softmax compute in f64", "[cpu]") {
  // f64's default tolerance is 1e-10 relative: any f32 step on the way would fail it.
  Graph g = parse_or_fail(R"(graph f64(%x: f64[B, 37], %y: f64[37], %w: f64[19, 37], %bias: f64[19], %f: f32[B, 37]) {
  %a = add(%x, %y)
  %b = div(%a, %y)
  %e = exp(%x)
  %t = tanh(%b)
  %r = erf(%x)
  %s = sigmoid(%x)
  %m = maximum(%x, %y)
  %c = cast(%x, dtype=f32)
  %i = cast(%b, dtype=i64)
  %u = cast(%f, dtype=f64)
  %su = sum(%x, axes=[1])
  %mx = max(%b, axes=[0])
  %am = argmax(%x, axis=1)
  %mn = mean(%e, axes=[1], keepdim=true)
  %mm = matmul(%x, %y)
  %li = linear(%x, %w, %bias)
  %sm = softmax(%b, axis=-1)
  %ln = layer_norm(%x, %y, %y)
  return %a, %b, %e, %t, %r, %s, %m, %c, %i, %u, %su, %mx, %am, %mn, %mm, %li, %sm, %ln
})");
  require_ok(check_cpu_matches_reference(g, module_of(g), bindings_of("B", {1, 7, 300}), 46));
}
