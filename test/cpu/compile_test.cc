// compile(graph, {.device = Device::Cpu}) end to end: guard dispatch over the CPU backend's
// specializations (0/1 specialization, guard hits, recompile reasons), statistics, the .ll
// dumps, and the full-size decoder layer of examples/decoder_layer.kiln against the reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/common/gather_check.h"
#include "test/cpu/decoder_layer.h"

using namespace kiln;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;

namespace {

std::vector<Tensor> tensors(const CompiledGraph& cg, const TensorMap& args) {
  std::vector<Tensor> out;
  for (const Value* a : cg.module().args) out.push_back(*Tensor::from_host(args.at(a->name())));
  return out;
}

// Calls `cg` on `args` and compares every output with the reference evaluator on `g`. Returns
// the argument tensors: a caller making several calls keeps them alive, since the executable
// takes a parameter at an address it saw before as unchanged (a freed one may come back).
std::vector<Tensor> require_matches(CompiledGraph& cg, const Graph& g, const TensorMap& args) {
  std::vector<Tensor> in = tensors(cg, args);
  absl::StatusOr<std::vector<Tensor>> got = cg(in);
  if (!got.ok()) FAIL(status_message(got.status()));
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  REQUIRE(want.ok());
  REQUIRE(got->size() == want->size());
  for (size_t i = 0; i < want->size(); ++i) {
    REQUIRE((*got)[i].device() == DeviceId::cpu());
    Comparison c = compare_tensors((*want)[i], *(*got)[i].to_host(), default_tolerance((*want)[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
  return in;
}

}  // namespace

TEST_CASE("compile on the CPU: guards, specializations, statistics, dumps", "[cpu][compile]") {
  Graph g = parse_or_fail(R"(graph m(%x: f32[B, 24], %w: f32[16, 24] param, %b: f32[16] param) {
  %l = linear(%x, %w, %b)
  %g = gelu(%l)
  %s = softmax(%g)
  return %s
})");
  std::filesystem::path dump = std::filesystem::temp_directory_path() / str_cat("kiln_cpu_compile_", ::getpid());
  std::filesystem::remove_all(dump);
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu, .dump_dir = dump.string()});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  REQUIRE(cg->device() == DeviceId::cpu());
  // Parameters stay alive across calls: the executable keeps data derived from them by pointer.
  std::vector<TensorMap> calls;
  std::vector<std::vector<Tensor>> alive;
  for (int64_t b : {1, 3, 8, 1, 5}) {
    calls.push_back(random_args(g, {{"B", b}}, 50 + calls.size()));
    alive.push_back(require_matches(*cg, g, calls.back()));
  }
  std::vector<std::string> specs = cg->specializations();
  REQUIRE(specs == std::vector<std::string>{"B == 1", "B >= 2"});
  CompileStats st = cg->stats();
  CHECK(st.calls == 5);
  CHECK(st.compiles == 2);
  CHECK(st.guard_hits == 3);
  CHECK(st.recompiles == 1);
  CHECK(st.kernels >= 2);
  CHECK(st.gemms == 2);
  CHECK(st.cache_misses + st.cache_memory_hits == st.kernels);
  CHECK(st.compile_ms >= 0);
  // Every kernel's optimized LLVM IR, per specialization.
  int ll = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dump))
    if (e.path().extension() == ".ll") ++ll;
  CHECK(ll == st.kernels);
  std::filesystem::remove_all(dump);
}

TEST_CASE("compile on the CPU: two graphs of one name dump into folders of their own", "[cpu][compile]") {
  Graph exp_graph = parse_or_fail("graph twin(%x: f32[N]) {\n  %y = exp(%x)\n  return %y\n}");
  Graph tanh_graph = parse_or_fail("graph twin(%x: f32[N]) {\n  %y = tanh(%x)\n  return %y\n}");
  std::filesystem::path dump = std::filesystem::temp_directory_path() / str_cat("kiln_cpu_twins_", ::getpid());
  std::filesystem::remove_all(dump);
  for (const Graph* g : {&exp_graph, &tanh_graph}) {
    absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cpu, .dump_dir = dump.string()});
    if (!cg.ok()) FAIL(status_message(cg.status()));
    require_ok(cg->warm_up({{"N", 4}}));
  }
  // Each folder holds its own graph's passes, kernels and specialization.
  for (auto [folder, op, kernel] : {std::tuple{"twin", "exp(", "k0_exp"}, {"twin-2", "tanh(", "k0_tanh"}}) {
    std::filesystem::path d = dump / folder;
    INFO(d.string());
    for (const char* f : {"01-decompose.kiln", "05-plan_memory.kiln", "memory_plan.txt", "spec0/guards.txt"})
      CHECK(std::filesystem::exists(d / f));
    CHECK(std::filesystem::exists(d / "kernels" / str_cat(kernel, ".kir")));
    CHECK(std::filesystem::exists(d / "spec0" / str_cat(kernel, ".ll")));
    std::ifstream ir(d / "05-plan_memory.kiln");
    std::string text((std::istreambuf_iterator<char>(ir)), std::istreambuf_iterator<char>());
    CHECK(text.find(op) != std::string::npos);
    std::ifstream guards(d / "spec0" / "guards.txt");
    std::string guard;
    std::getline(guards, guard);
    CHECK(guard == "N >= 2");
  }
  std::filesystem::remove_all(dump);
}

TEST_CASE("compile statistics as JSON: one line, strings escaped", "[cpu][compile]") {
  CompileStats st;
  st.compiles = 2;
  st.recompile_reasons = {"B = 1 fails guard \"B >= 2\" \\ (specialization 0)\n\tnext"};
  st.kernel_times = {{"k0_exp", 0.5, 1.25, false}, {"k1_tanh", 0, 0, true}};
  std::string text = st.to_json();
  CHECK(text.find('\n') == std::string::npos);
  nlohmann::json j = nlohmann::json::parse(text);
  CHECK(j["compiles"] == 2);
  CHECK(j["recompile_reasons"][0] == st.recompile_reasons[0]);
  CHECK(j["kernel_times"][0]["name"] == "k0_exp");
  CHECK(j["kernel_times"][0]["compile_ms"] == 1.25);
  CHECK(j["kernel_times"][1]["cached"] == true);
}

TEST_CASE("compile on the CPU: parameters_changed() after parameters are written in place", "[cpu][compile]") {
  // Merged q/k/v weights come from a weight-prep group, made once per parameter pointers.
  Graph g = parse_or_fail(R"(graph qkv(%x: f32[T, 16], %wq: f32[8, 16] param, %wk: f32[8, 16] param, %wv: f32[8, 16] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %v = linear(%x, %wv)
  %s = add(%q, %k)
  %y = mul(%s, %v)
  return %y
})");
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  TensorMap args = random_args(g, {{"T", 5}}, 70);
  std::vector<Tensor> in = tensors(*cg, args);
  for (uint64_t seed : {0, 71, 72}) {
    if (seed != 0) {
      // New weight values written into the same memory.
      TensorMap fresh = random_args(g, {{"T", 5}}, seed);
      for (size_t i = 0; i < in.size(); ++i) {
        const Value* a = cg->module().args[i];
        if (!a->is_param()) continue;
        args.at(a->name()) = fresh.at(a->name());
        std::memcpy(in[i].data(), fresh.at(a->name()).data(), fresh.at(a->name()).nbytes());
      }
      cg->parameters_changed();
    }
    absl::StatusOr<std::vector<Tensor>> got = (*cg)(in);
    REQUIRE(got.ok());
    Comparison c = compare_tensors(evaluate(g, args)->at(0), *got->at(0).to_host(), default_tolerance(DType::f32));
    INFO(c.message);
    REQUIRE(c.ok);
  }
}

TEST_CASE("compile on the CPU: a packed weight copy is remade when its buffer holds new values", "[cpu][compile]") {
  // Few rows: the weight's packed [K, N] copy is kept across calls (runtime/cpu/gemm.cc). New
  // values at the same address, with no parameters_changed() (a freed weight's address given
  // to a new one by the allocator), must not be answered from the old copy.
  Graph g = parse_or_fail(R"(graph lin(%x: f32[T, 16], %w: f32[24, 16] param) {
  %y = linear(%x, %w)
  return %y
})");
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  for (int64_t t : {3, 5, 40}) {
    TensorMap args = random_args(g, {{"T", t}}, 80 + t);
    std::vector<Tensor> in = tensors(*cg, args);
    for (uint64_t seed : {0, 81, 82}) {
      if (seed != 0) {
        HostTensor w = random_args(g, {{"T", t}}, seed + t).at("w");
        args.at("w") = w;
        std::memcpy(in[1].data(), w.data(), w.nbytes());
      }
      absl::StatusOr<std::vector<Tensor>> got = (*cg)(in);
      REQUIRE(got.ok());
      Comparison c = compare_tensors(evaluate(g, args)->at(0), *got->at(0).to_host(), default_tolerance(DType::f32));
      INFO("T=" << t << " seed " << seed << ": " << c.message);
      REQUIRE(c.ok);
    }
  }
}

TEST_CASE("compile on the CPU: static slots are for CUDA graphs only; copy_from_host", "[cpu][compile]") {
  Graph g = parse_or_fail("graph g(%x: f32[N]) {\n  %y = exp(%x)\n  return %y\n}");
  absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = Mode::ReduceOverhead, .device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  absl::StatusOr<StaticSlots> slots = cg->static_slots({{"N", 4}});
  REQUIRE_FALSE(slots.ok());
  CHECK_THAT(status_message(slots.status()), Catch::Contains("only for CUDA graphs"));
  CHECK_THAT(status_message(cg->static_slots({}).status()), Catch::Contains("static_slots: symbol N is not bound"));
  // A graph without symbols writes into given outputs (their shapes are known up front).
  Graph fixed = parse_or_fail("graph f(%x: f32[4]) {\n  %y = exp(%x)\n  return %y\n}");
  absl::StatusOr<CompiledGraph> fcg = compile(fixed, {.device = Device::Cpu});
  if (!fcg.ok()) FAIL(status_message(fcg.status()));
  TensorMap fargs = random_args(fixed, {}, 5);
  std::vector<Tensor> outs = {Tensor::empty_host(DType::f32, {4})};
  REQUIRE(fcg->run(tensors(*fcg, fargs), outs).ok());
  CHECK(compare_tensors(evaluate(fixed, fargs)->at(0), *outs[0].to_host(), default_tolerance(DType::f32)).ok);
  // A host tensor written into an existing one; a mismatch is refused.
  TensorMap args = random_args(g, {{"N", 4}}, 3);
  Tensor t = Tensor::empty_host(DType::f32, {4});
  REQUIRE(t.copy_from_host(args.at("x")).ok());
  CHECK(compare_tensors(args.at("x"), *t.to_host(), {0, 0}).ok);
  CHECK_THAT(status_message(t.copy_from_host(HostTensor(DType::f32, {5}))), Catch::Contains("f32[5] into f32[4]"));
}

TEST_CASE("compile on the CPU: examples/decoder_layer.kiln at full size", "[cpu][compile][examples]") {
  Graph g = parse_or_fail(testing::decoder_layer_text(2048, 16, 128, 5632));
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  if (!cg.ok()) FAIL(status_message(cg.status()));
  Bindings b{{"B", 1}, {"T", 5}};
  require_matches(*cg, g, testing::layer_args(g, b, 60));
}

TEST_CASE("compile on the CPU: a gather index out of range is the reference's error, from the call itself",
          "[cpu][compile][gather]") {
  kiln::testing::check_gather_indices(Device::Cpu, Mode::Default, /*immediate=*/true);
}
