// Extern ops (ir/extern_op.h) on the CPU: the decoder layer with its two RMSNorms computed by
// a registered C++ function, compiled in default mode, against the same layer with the
// built-in rms_norm on the reference evaluator at several sizes of B and T; operands reached
// through views stored dense first; a result nobody reads still written; the extern step in
// the printed program with the kernels around it unchanged; the text IR's round trip, the
// tracing entry; the errors (unknown name, types that disagree with the shape rule, rejected
// operands, a duplicate registration, also from racing threads, no CPU implementation, not
// capturable) and their messages.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "compiler/compile.h"
#include "frontends/trace/trace.h"
#include "ir/compare.h"
#include "ir/extern_op.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/extern_rms.h"
#include "test/cpu/decoder_layer.h"

using namespace kiln;
using kiln::testing::parse_or_fail;

namespace {

int64_t count(const std::string& text, const std::string& what) {
  int64_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
    text.replace(at, from.size(), to);
}

// f32 x [N, D] -> softmax over D; f32 x [N, D] -> (mean [N], max [N]).
absl::StatusOr<std::vector<TensorType>> rows_infer(std::span<const TensorType> in, bool stats) {
  if (in.size() != 1 || in[0].dtype != DType::f32 || in[0].shape.size() != 2)
    return invalid_argument("takes one f32[N, D], got ", in.empty() ? std::string("nothing") : in[0].to_string());
  if (!stats) return std::vector<TensorType>{in[0]};
  TensorType row{DType::f32, {in[0].shape[0]}};
  return std::vector<TensorType>{row, row};
}

absl::Status rows_host(std::span<const ExternTensor> in, std::span<const ExternTensor> out, bool stats) {
  const float* x = static_cast<const float*>(in[0].data);
  const int64_t n = in[0].shape[0], d = in[0].shape[1];
  for (int64_t r = 0; r < n; ++r) {
    float mx = x[r * d];
    double sum = 0, e = 0;
    for (int64_t j = 0; j < d; ++j) mx = std::max(mx, x[r * d + j]), sum += x[r * d + j];
    if (stats) {
      static_cast<float*>(out[0].data)[r] = static_cast<float>(sum / static_cast<double>(d));
      static_cast<float*>(out[1].data)[r] = mx;
      continue;
    }
    for (int64_t j = 0; j < d; ++j) e += std::exp(x[r * d + j] - mx);
    for (int64_t j = 0; j < d; ++j)
      static_cast<float*>(out[0].data)[r * d + j] = static_cast<float>(std::exp(x[r * d + j] - mx) / e);
  }
  return absl::OkStatus();
}

// The ops these tests call, registered once per process.
void register_test_ops() {
  static std::once_flag once;
  std::call_once(once, [] {
    testing::require_ok(register_extern_op(
        {.name = "test.rms_norm", .infer = testing::extern_rms_infer, .cpu = testing::extern_rms_host}));
    testing::require_ok(register_extern_op({.name = "test.softmax",
                                            .infer = [](auto in) { return rows_infer(in, false); },
                                            .cpu = [](auto in, auto out) { return rows_host(in, out, false); }}));
    testing::require_ok(register_extern_op({.name = "test.row_stats",
                                            .infer = [](auto in) { return rows_infer(in, true); },
                                            .cpu = [](auto in, auto out) { return rows_host(in, out, true); }}));
    // Only a CUDA implementation (it is never run here), and one that cannot be captured.
    testing::require_ok(register_extern_op({.name = "test.cuda_only",
                                            .infer = [](auto in) { return rows_infer(in, false); },
                                            .cuda = [](auto, auto, void*) { return absl::OkStatus(); }}));
    testing::require_ok(register_extern_op({.name = "test.uncapturable",
                                            .infer = [](auto in) { return rows_infer(in, false); },
                                            .cpu = [](auto in, auto out) { return rows_host(in, out, false); },
                                            .cuda = [](auto, auto, void*) { return absl::OkStatus(); },
                                            .capturable = false}));
  });
}

// The decoder layer (test/cpu/decoder_layer.h) with its RMSNorms as calls of test.rms_norm.
std::string extern_layer_text(int d, int h, int e, int f) {
  std::string text = testing::decoder_layer_text(d, h, e, f);
  std::string results = str_cat("results=\"bf16[B, T, ", d, "]\")");
  replace_all(text, "rms_norm(%x, %attn_norm, axes=[-1], eps=1e-06)",
              str_cat("extern_call(%x, %attn_norm, name=\"test.rms_norm\", ", results));
  replace_all(text, "rms_norm(%attn_out, %mlp_norm, axes=[-1], eps=1e-06)",
              str_cat("extern_call(%attn_out, %mlp_norm, name=\"test.rms_norm\", ", results));
  return text;
}

CompiledGraph compile_cpu(const Graph& g, Mode mode = Mode::Default) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = mode, .device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  return *std::move(cg);
}

std::vector<HostTensor> run(CompiledGraph& cg, const TensorMap& args) {
  std::vector<Tensor> in;
  for (const Value* a : cg.module().args) in.push_back(*Tensor::from_host(args.at(a->name())));
  absl::StatusOr<std::vector<Tensor>> out = cg(in);
  if (!out.ok()) FAIL(status_message(out.status()));
  std::vector<HostTensor> host;
  for (const Tensor& t : *out) host.push_back(*t.to_host());
  return host;
}

void require_close(const std::vector<HostTensor>& want, const std::vector<HostTensor>& got) {
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    Comparison c = compare_tensors(want[i], got[i], default_tolerance(want[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
}

const Program& last_program(const CompiledGraph& cg) { return *cg.specialization_info().back().program; }
std::string program_text(const CompiledGraph& cg) { return last_program(cg).to_string(); }

std::string compile_error(const Graph& g, Mode mode = Mode::Default) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = mode, .device = Device::Cpu});
  REQUIRE_FALSE(cg.ok());
  return status_message(cg.status());
}

}  // namespace

TEST_CASE("extern: the decoder layer with its RMSNorms as an extern op matches the built-in layer", "[cpu][extern]") {
  register_test_ops();
  Graph builtin = parse_or_fail(testing::decoder_layer_text(64, 4, 16, 128));
  Graph ext = parse_or_fail(extern_layer_text(64, 4, 16, 128), "layer.kiln");
  CompiledGraph cg = compile_cpu(ext);
  CompiledGraph plain = compile_cpu(builtin);
  uint64_t seed = 7;
  for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 1}, {2, 7}, {1, 61}, {2, 130}}) {
    INFO("B = " << b << ", T = " << t);
    TensorMap args = testing::layer_args(builtin, {{"B", b}, {"T", t}}, ++seed);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(builtin, args);
    REQUIRE(want.ok());
    require_close(*want, run(cg, args));
    // The reference evaluator runs the extern op too (its cpu function by default).
    absl::StatusOr<std::vector<HostTensor>> ref = evaluate(ext, args);
    REQUIRE(ref.ok());
    require_close(*want, *ref);
    run(plain, args);
  }
  // Each norm's reduction kernel became one extern step; the GEMMs and every other kernel
  // around them are as they were, and the norms' results are arena buffers (no copy).
  std::string prog = program_text(cg);
  INFO(prog);
  CHECK(count(prog, "extern test.rms_norm(") == 2);
  CHECK(count(prog, "copy ") == 0);
  CHECK_THAT(prog, Catch::Contains("b0 x: bf16[B, T, 64] (argument 0)"));
  CHECK_THAT(prog, Catch::Matches("[\\s\\S]*attn_in: bf16\\[B, T, 64\\] \\(arena \\d+\\)[\\s\\S]*"));
  // Both built their specializations in the same order, for the same calls.
  const Program &p = last_program(cg), &q = last_program(plain);
  INFO("with the built-in rms_norm: " << q.to_string());
  CHECK(p.gemms.size() == q.gemms.size());
  CHECK(p.attentions.size() == q.attentions.size());
  auto kernel_steps = [](const Program& pr) {
    return std::count_if(pr.steps.begin(), pr.steps.end(), [](const Step& s) { return s.kind == Step::Kind::Kernel; });
  };
  CHECK(p.steps.size() == q.steps.size());
  CHECK(kernel_steps(p) == kernel_steps(q) - 2);
  CHECK(p.launches() == q.launches());
  // The built-in norms read their weights cast to f32 once (weight prep); the call reads them as they are.
  CHECK(p.prep.size() + 2 == q.prep.size());
}

TEST_CASE("extern: operands reached through views are stored dense; every result is written", "[cpu][extern]") {
  register_test_ops();
  // softmax of a transposed input: the permute is a copy kernel before the call; row_stats'
  // max is never read, and still has a buffer to be written to.
  Graph g = parse_or_fail(R"(graph views(%x: f32[64, N]) {
  %t = permute(%x, dims=[1, 0])
  %s = extern_call(%t, name="test.softmax", results="f32[N, 64]")
  %y = mul(%s, %t)
  %mean, %max = extern_call(%y, name="test.row_stats", results="f32[N], f32[N]")
  %z = exp(%mean)
  return %y, %z
})");
  Graph want_g = parse_or_fail(R"(graph views(%x: f32[64, N]) {
  %t = permute(%x, dims=[1, 0])
  %s = softmax(%t, axis=-1)
  %y = mul(%s, %t)
  %mean = mean(%y, axes=[1])
  %z = exp(%mean)
  return %y, %z
})");
  CompiledGraph cg = compile_cpu(g);
  for (int64_t n : {1, 3, 257}) {
    INFO("N = " << n);
    TensorMap args = random_args(want_g, {{"N", n}}, static_cast<uint64_t>(n));
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(want_g, args);
    REQUIRE(want.ok());
    require_close(*want, run(cg, args));
  }
  std::string prog = program_text(cg);
  INFO(prog);
  CHECK(count(prog, "extern test.") == 2);
  CHECK_THAT(prog, Catch::Contains("max: f32[N] (arena"));
  // permute -> [call] -> mul -> [call] -> exp: three kernels, the permute stored before the call.
  CHECK(last_program(cg).compiled_kernels() == 3);
  CHECK(last_program(cg).launches() == 5);
}

TEST_CASE("extern: extern_call prints, parses back and traces", "[cpu][extern]") {
  register_test_ops();
  std::string text = extern_layer_text(64, 4, 16, 128);
  Graph g = parse_or_fail(text);
  std::string printed = print_graph(g);
  CHECK_THAT(printed,
             Catch::Contains("%attn_in = extern_call(%x, %attn_norm, name=\"test.rms_norm\") : bf16[B, T, 64]"));
  CHECK(print_graph(parse_or_fail(printed)) == printed);
  // The types live in the node: a graph naming an op no one registered still parses.
  Graph other = parse_or_fail(R"(graph g(%x: f32[N, 8]) {
  %a, %b = extern_call(%x, %x, name="nobody.registered") : f32[N], i32[2, N]
  return %a, %b
})");
  CHECK(other.find("b")->type().to_string() == "i32[2, N]");
  CHECK_THAT(print_graph(other), Catch::Contains("name=\"nobody.registered\") : f32[N], i32[2, N]"));

  trace::Tracer t("traced");
  trace::Tensor x = t.input("x", DType::f32, {"N", 16});
  std::vector<trace::Tensor> s = trace::extern_call("test.row_stats", {x});
  REQUIRE(s.size() == 2);
  CHECK(s[1].type().to_string() == "f32[N]");
  t.output(s[0] + s[1]);
  CHECK_THAT(print_graph(t.finish()), Catch::Contains("extern_call(%x, name=\"test.row_stats\") : f32[N], f32[N]"));
  trace::Tracer bad("bad");
  trace::Tensor y = bad.input("y", DType::f32, {4});
  CHECK_THROWS_WITH(trace::extern_call("no.such.op", {y}), Catch::Contains("extern_call \"no.such.op\": no extern op"));
  CHECK_THROWS_WITH(trace::extern_call("test.softmax", {y}), Catch::Contains("takes one f32[N, D], got f32[4]"));
}

TEST_CASE("extern: errors name the node, the op and what disagrees", "[cpu][extern]") {
  register_test_ops();
  auto graph = [](const std::string& call, const std::string& x = "f32[N, 8]") {
    return parse_or_fail(str_cat("graph g(%x: ", x, ") {\n  %y = ", call, "\n  return %y\n}"), "e.kiln");
  };
  CHECK_THAT(compile_error(graph("extern_call(%x, name=\"nope\", results=\"f32[N, 8]\")")),
             Catch::Contains("%y = extern_call (e.kiln:2:3): no extern op \"nope\" is registered"));
  CHECK_THAT(compile_error(graph("extern_call(%x, name=\"test.softmax\", results=\"f32[N, 9]\")")),
             Catch::Contains("extern op \"test.softmax\" gives (f32[N, 8]) for (f32[N, 8]), but the node declares "
                             "(f32[N, 9])"));
  CHECK_THAT(compile_error(graph("extern_call(%x, name=\"test.softmax\", results=\"f32[N, 8, 1]\")", "f32[N, 8, 1]")),
             Catch::Contains("rejects operands (f32[N, 8, 1]): takes one f32[N, D], got f32[N, 8, 1]"));
  CHECK_THAT(compile_error(graph("extern_call(%x, name=\"test.cuda_only\", results=\"f32[N, 8]\")")),
             Catch::Contains("extern op \"test.cuda_only\" has no cpu implementation"));
  absl::StatusOr<Graph> bad =
      parse_graph("graph g(%x: f32[4]) {\n  %y = extern_call(%x, name=\"a\", results=\"f32[\")\n  return %y\n}");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("extern_call: results \"f32[\""));

  absl::Status dup = register_extern_op({.name = "test.softmax",
                                         .infer = [](auto in) { return rows_infer(in, false); },
                                         .cpu = [](auto in, auto out) { return rows_host(in, out, false); }});
  CHECK_THAT(status_message(dup), Catch::Contains("\"test.softmax\" is already registered"));
  // Registration races: of eight threads registering one name, exactly one wins.
  std::atomic<int> won{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      won += register_extern_op({.name = "test.race",
                                 .infer = [](auto in) { return rows_infer(in, false); },
                                 .cpu = [](auto in, auto out) { return rows_host(in, out, false); }})
                 .ok();
    });
  for (std::thread& t : threads) t.join();
  CHECK(won == 1);
  CHECK(find_extern_op("test.race") != nullptr);
  CHECK_THAT(status_message(
                 register_extern_op({.name = "test.no_impl", .infer = [](auto in) { return rows_infer(in, false); }})),
             Catch::Contains("no implementation"));

  // Not capturable: fine on the CPU (nothing is captured) and in default mode, an error where
  // reduce-overhead captures CUDA graphs.
  Graph u = graph("extern_call(%x, name=\"test.uncapturable\", results=\"f32[N, 8]\")");
  compile_cpu(u, Mode::ReduceOverhead);
  REQUIRE(check_extern_calls(u, ExternDevice::Cuda, false).ok());
  CHECK_THAT(status_message(check_extern_calls(u, ExternDevice::Cuda, true)),
             Catch::Contains("registered with capturable = false, so reduce-overhead cannot capture"));
}
