// compile(graph, {.device = Cuda}) against the reference evaluator on a GPU: every corpus
// graph (every op family and fusion pattern, f32/f16/bf16) at several bindings per symbol,
// in default mode, and reduce-overhead and max-autotune agreeing with it; guards and
// recompiles; the disk cache seen from a second process. Without a GPU the [gpu] tests skip
// with the reason, and compile() itself must say "no CUDA device".
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/cuda/allocator.h"
#include "runtime/cuda_driver.h"
#include "test/common/catch_helpers.h"
#include "test/common/gather_check.h"
#include "test/common/gpu_test.h"
#include "runtime/tune_store.h"
#include "test/cuda/corpus.h"

using namespace kiln;

namespace {

struct Outcome {
  std::string failure;  // empty when every output matched
  double worst_rel = 0;
  std::vector<HostTensor> outputs;
};

std::vector<Tensor> device_args(const CompiledGraph& cg, const TensorMap& host) {
  std::vector<Tensor> args;
  for (const Value* v : cg.module().args) {
    absl::StatusOr<Tensor> t = Tensor::from_host(host.at(v->name()), DeviceId::cuda(0));
    if (!t.ok()) FAIL(status_message(t.status()));
    args.push_back(*std::move(t));
  }
  return args;
}

// Inputs that a linear layer reads as its weight, scaled by 1/sqrt(fan-in) as parameters
// are: with weights uniform in [-1, 1) a 16-bit MLP's outputs reach ~100, and an output
// that cancels to ~0.1 then differs from the reference by one rounding of a large
// intermediate (0.004 in f16), beyond the elementwise tolerance, though both are right.
void scale_input_weights(const Graph& g, TensorMap& host) {
  std::set<const Value*> done;
  for (const auto& n : g.nodes()) {
    const Value* w = n->op() == Op::Linear ? n->operand(1) : nullptr;
    if (w == nullptr || !w->is_input() || w->shape().size() != 2 || !done.insert(w).second) continue;
    HostTensor& t = host.at(w->name());
    const double scale = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(t.shape()[1], 1)));
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, t.get(i) * scale);
  }
}

// One call of `cg` on fresh random arguments under `b`, compared with the reference.
Outcome check_call(CompiledGraph& cg, const Graph& g, const Bindings& b, uint64_t seed) {
  Outcome o;
  TensorMap host = random_args(g, b, seed);
  scale_weights_by_fan_in(g, host);
  scale_input_weights(g, host);
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, host);
  if (!want.ok()) {
    o.failure = str_cat("reference: ", status_message(want.status()));
    return o;
  }
  // Every call brings new parameter values, and their device memory may land where the last
  // call's was: without this, weight prep (merged QKV, casts) would be taken as current.
  cg.parameters_changed();
  absl::StatusOr<std::vector<Tensor>> got = cg(device_args(cg, host));
  if (!got.ok()) {
    o.failure = str_cat("compiled call: ", status_message(got.status()));
    return o;
  }
  for (size_t i = 0; i < want->size(); ++i) {
    absl::StatusOr<HostTensor> h = (*got)[i].to_host();
    if (!h.ok()) {
      o.failure = str_cat("output ", i, " to host: ", status_message(h.status()));
      return o;
    }
    Comparison c = compare_tensors((*want)[i], *h, default_tolerance((*want)[i].dtype()));
    o.worst_rel = std::max(o.worst_rel, c.max_rel_err);
    if (!c.ok && o.failure.empty()) o.failure = str_cat("output ", i, " (%", g.outputs()[i]->name(), "): ", c.message);
    o.outputs.push_back(*std::move(h));
  }
  return o;
}

}  // namespace

TEST_CASE("cuda: compile() without a GPU reports no CUDA device", "[cuda]") {
  if (test::gpu_unavailable_reason().empty()) return;  // the [gpu] tests cover the device
  absl::StatusOr<Graph> g = parse_graph("graph g(%x: f32[4]) {\n  %y = exp(%x)\n  return %y\n}");
  REQUIRE(g.ok());
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cuda});
  REQUIRE_FALSE(cg.ok());
  CHECK_THAT(status_message(cg.status()), Catch::StartsWith("no CUDA device"));
}

TEST_CASE("cuda: every corpus graph matches the reference in every mode", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  int calls = 0, failures = 0;
  double worst = 0;
  uint64_t seed = 1;
  for (const test::CorpusGraph& c : test::cuda_corpus()) {
    absl::StatusOr<CompiledGraph> def = compile(c.graph, {.mode = Mode::Default, .device = Device::Cuda});
    if (!def.ok()) {
      FAIL_CHECK(c.name << ": compile: " << status_message(def.status()));
      ++failures;
      continue;
    }
    for (const Bindings& b : c.bindings) {
      INFO(c.name << " " << bindings_to_string(b));
      Outcome o = check_call(*def, c.graph, b, seed++);
      ++calls;
      worst = std::max(worst, o.worst_rel);
      if (!o.failure.empty()) {
        ++failures;
        FAIL_CHECK(o.failure);
      }
    }
    // The other modes give the same answers on the same inputs, and the reference's.
    for (Mode mode : {Mode::ReduceOverhead, Mode::MaxAutotune}) {
      absl::StatusOr<CompiledGraph> cg = compile(c.graph, {.mode = mode, .device = Device::Cuda});
      if (!cg.ok()) {
        FAIL_CHECK(c.name << " " << mode_name(mode) << ": compile: " << status_message(cg.status()));
        ++failures;
        continue;
      }
      for (const Bindings& b : c.bindings) {
        INFO(c.name << " " << mode_name(mode) << " " << bindings_to_string(b));
        // Twice: the second call replays (reduce-overhead) or runs tuned (max-autotune).
        for (int rep = 0; rep < 2; ++rep) {
          Outcome o = check_call(*cg, c.graph, b, seed++);
          ++calls;
          if (!o.failure.empty()) {
            ++failures;
            FAIL_CHECK(o.failure);
          }
        }
      }
    }
  }
  test::gpu_summary().push_back(
      {"compiled vs reference (corpus x bindings x 3 modes)",
       fmt::format("{} calls, {} failures, worst relative error {:.2e}", calls, failures, worst)});
}

TEST_CASE("cuda: guards specialize 0/1, stay dynamic above, and record why they recompiled", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<Graph> g = parse_graph(R"(graph g(%x: f32[B, 64], %y: f32[64]) {
  %a = add(%x, %y)
  %s = softmax(%a, axis=-1)
  return %s
})");
  REQUIRE(g.ok());
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cuda});
  REQUIRE(cg.ok());
  for (int64_t b : {5, 9, 1, 33, 1}) {
    Outcome o = check_call(*cg, *g, {{"B", b}}, 100 + b);
    INFO("B=" << b);
    CHECK(o.failure.empty());
  }
  CompileStats s = cg->stats();
  CHECK(s.calls == 5);
  CHECK(s.compiles == 2);
  CHECK(s.recompiles == 1);
  CHECK(s.guard_hits == 3);
  REQUIRE(s.recompile_reasons.size() == 1);
  CHECK(s.recompile_reasons[0] == "B = 1 fails guard B >= 2 (specialization 0)");
  CHECK(cg->specializations() == std::vector<std::string>{"B >= 2", "B == 1"});
  // A wrong argument is a located error, not a crash, and does not count as a compile.
  TensorMap host = random_args(*g, {{"B", 3}}, 7);
  std::vector<Tensor> args = device_args(*cg, host);
  std::swap(args[0], args[1]);
  absl::StatusOr<std::vector<Tensor>> bad = (*cg)(args);
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("argument 0 (%x)"));
  CHECK(cg->stats().compiles == 2);
}

TEST_CASE("cuda: kernels over more data than the L2 cache stream it through and still match", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  // layer_norm + gelu (a row kernel: x read once, w and b by every row) and an elementwise
  // product with w beside it.
  Graph g = kiln::testing::parse_or_fail(R"(graph g(%x: bf16[R, 4096], %w: bf16[4096], %b: bf16[4096]) {
  %n = layer_norm(%x, %w, %b, axes=[-1], eps=1e-5)
  %y = gelu(%n, approximate="tanh")
  %z = mul(%x, %w)
  return %y, %z
})");
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cuda});
  REQUIRE(cg.ok());
  absl::StatusOr<cuda::Device> dev = cuda::Device::get(0);
  REQUIRE(dev.ok());
  // At R = 4099 the row kernel reads x and writes y, 2 x 4099 x 4096 bf16 (67 MB), more than
  // this GPU's L2 cache (50 MB on an H100): the host passes stream_l2 = 1 and those loads and
  // stores go evict-first. R = 1 and 7 stay far below, at normal priority.
  REQUIRE(int64_t{2} * 4099 * 4096 * 2 > dev->properties().l2_cache_bytes);
  for (int64_t r : {1, 4099, 7}) {
    Outcome o = check_call(*cg, g, {{"R", r}}, 500 + r);
    INFO("R=" << r);
    CHECK(o.failure.empty());
  }
}

TEST_CASE("cuda: outputs can be written into caller tensors, and come from the pool", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<Graph> g = parse_graph("graph g(%x: bf16[N]) {\n  %y = gelu(%x)\n  %z = relu(%y)\n  return %z, %x\n}");
  REQUIRE(g.ok());
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.device = Device::Cuda});
  REQUIRE(cg.ok());
  TensorMap host = random_args(*g, {{"N", 1000}}, 3);
  std::vector<Tensor> args = device_args(*cg, host);
  absl::StatusOr<Tensor> z = Tensor::empty_cuda(DType::bf16, {1000});
  REQUIRE(z.ok());
  std::vector<Tensor> outs = {*z, Tensor()};
  REQUIRE(cg->run(args, outs).ok());
  CHECK(outs[0].data() == z->data());
  absl::StatusOr<HostTensor> x_back = outs[1].to_host();
  REQUIRE(x_back.ok());
  CHECK(compare_tensors(host.at("x"), *x_back, {0, 0}).ok);
  std::vector<HostTensor> want = *evaluate(*g, host);
  CHECK(compare_tensors(want[0], *outs[0].to_host(), default_tolerance(DType::bf16)).ok);
  // A wrong output slot is refused before anything runs.
  absl::StatusOr<Tensor> wrong = Tensor::empty_cuda(DType::f32, {1000});
  std::vector<Tensor> bad = {*wrong, Tensor()};
  CHECK_THAT(status_message(cg->run(args, bad)), Catch::Contains("output 0 (%z)"));
  // Steady state allocates nothing from the driver.
  for (int i = 0; i < 3; ++i) REQUIRE((*cg)(args).ok());
  int64_t before = cuda::pool_stats(0).driver_allocations;
  for (int i = 0; i < 10; ++i) REQUIRE((*cg)(args).ok());
  CHECK(cuda::pool_stats(0).driver_allocations == before);
}

TEST_CASE("cuda: reduce-overhead replays from static slots with no copies", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<Graph> g = parse_graph(R"(graph g(%x: bf16[B, 64], %w: bf16[32, 64] param) {
  %y = linear(%x, %w)
  %z = gelu(%y)
  return %z
})");
  REQUIRE(g.ok());
  absl::StatusOr<CompiledGraph> def = compile(*g, {.device = Device::Cuda});
  REQUIRE(def.ok());
  CHECK_THAT(status_message(def->static_slots({{"B", 3}}).status()), Catch::Contains("compiled in default mode"));
  absl::StatusOr<CompiledGraph> cg = compile(*g, {.mode = Mode::ReduceOverhead, .device = Device::Cuda});
  REQUIRE(cg.ok());
  absl::StatusOr<StaticSlots> slots = cg->static_slots({{"B", 3}});
  REQUIRE(slots.ok());
  REQUIRE(slots->inputs.size() == 2);
  CHECK(slots->inputs[0].shape() == std::vector<int64_t>{3, 64});
  CHECK(slots->inputs[1].data() == nullptr);  // the parameter is read in place
  REQUIRE(slots->outputs.size() == 1);
  CHECK(slots->outputs[0].shape() == std::vector<int64_t>{3, 32});
  // New values written into the same slots each call; outputs land in the output slot.
  for (uint64_t seed : {1, 2, 3}) {
    TensorMap host = random_args(*g, {{"B", 3}}, seed);
    scale_weights_by_fan_in(*g, host);
    REQUIRE(slots->inputs[0].copy_from_host(host.at("x")).ok());
    absl::StatusOr<Tensor> w = Tensor::from_host(host.at("w"), DeviceId::cuda(0));
    REQUIRE(w.ok());
    std::vector<Tensor> outs = slots->outputs;
    REQUIRE(cg->run({slots->inputs[0], *w}, outs).ok());
    CHECK(outs[0].data() == slots->outputs[0].data());
    Comparison c = compare_tensors((*evaluate(*g, host))[0], *outs[0].to_host(), default_tolerance(DType::bf16));
    INFO(c.message);
    CHECK(c.ok);
  }
}

// A decode step over a paged KV cache in every mode: the cache is written where the caller
// keeps it (never copied into a static slot), the replay of a captured step writes it again
// at the next call's positions, and a cache at another address captures again.
TEST_CASE("cuda: a decode step writes its paged cache in place, captured or not", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<Graph> g = parse_graph(R"(graph decode(%q: bf16[B, 8, 1, 64], %kn: bf16[B, 2, 1, 64], %pos: i32[B], %kc: bf16[NB, 16, 2, 64] state, %t: i32[B, MB]) {
  %kc1 = cache_write(%kc, %kn, %pos, %t)
  %one = constant(value=1, dtype=i32)
  %len = add(%pos, %one)
  %o = attention(%q, %kc1, %kc1, %len, %t)
  return %o, %kc1
})");
  REQUIRE(g.ok());
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune}) {
    absl::StatusOr<CompiledGraph> cg = compile(*g, {.mode = mode, .device = Device::Cuda});
    REQUIRE(cg.ok());
    std::mt19937_64 rng(7);
    int64_t b = 4, mb = 9, blocks = 40;
    TensorMap host{{"kc", HostTensor(DType::bf16, {blocks, 16, 2, 64})}, {"t", HostTensor(DType::i32, {b, mb})}};
    host.at("kc").fill_random(rng);
    std::vector<int64_t> ids(blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (int64_t i = 0; i < b * mb; ++i) host.at("t").set_int(i, ids[i]);
    Tensor cache = *Tensor::from_host(host.at("kc"), DeviceId::cuda(0));
    for (int step = 0; step < 4; ++step) {
      INFO(mode_name(mode) << " step " << step);
      if (step == 3) cache = *Tensor::from_host(host.at("kc"), DeviceId::cuda(0));  // moved: captured again
      host["q"] = HostTensor(DType::bf16, {b, 8, 1, 64});
      host["kn"] = HostTensor(DType::bf16, {b, 2, 1, 64});
      host.at("q").fill_random(rng);
      host.at("kn").fill_random(rng);
      host["pos"] = HostTensor(DType::i32, {b});
      for (int64_t i = 0; i < b; ++i) host.at("pos").set_int(i, std::vector<int64_t>{0, 6, 126, 128}[i] + step);
      std::vector<Tensor> args;
      for (const Value* a : cg->module().args)
        args.push_back(a->name() == "kc" ? cache : *Tensor::from_host(host.at(a->name()), DeviceId::cuda(0)));
      absl::StatusOr<std::vector<Tensor>> out = cg->operator()(args);
      REQUIRE(out.ok());
      CHECK((*out)[1].data() == cache.data());
      absl::StatusOr<std::vector<HostTensor>> want = evaluate(*g, host);
      REQUIRE(want.ok());
      for (int i : {0, 1}) {
        Comparison c = compare_tensors((*want)[i], *(*out)[i].to_host(), default_tolerance(DType::bf16));
        INFO("output " << i << ": " << c.message);
        CHECK(c.ok);
      }
      host["kc"] = (*want)[1];
    }
  }
  // max-autotune timed the attention step's tile configurations and key splits and kept one.
  std::vector<std::pair<std::string, std::string>> tuned = TuneStore::instance().entries();
  auto paged = std::find_if(tuned.begin(), tuned.end(), [](const auto& e) {
    return e.second.starts_with("attention bf16 ") && e.second.find(" paged(16)") != std::string::npos &&
           e.second.find(" tq=1 ") != std::string::npos;
  });
  REQUIRE(paged != tuned.end());
  INFO(paged->first << "  # " << paged->second);
  CHECK(paged->first.find('/') != std::string::npos);
}

// Run by "a second process hits the disk cache" in a child process: compiles the decoder
// layer and prints its stats as JSON.
TEST_CASE("cuda: a gather index out of range is the reference's error, at the call or the synchronize after it",
          "[cuda][gpu][gather]") {
  KILN_REQUIRE_GPU();
  for (Mode m : {Mode::Default, Mode::ReduceOverhead}) kiln::testing::check_gather_indices(Device::Cuda, m, false);
}

TEST_CASE("cuda: child process compiles the decoder layer", "[.cuda_child]") {
  for (const test::CorpusGraph& c : test::cuda_corpus()) {
    if (c.name != "decoder_layer") continue;
    absl::StatusOr<CompiledGraph> cg = compile(c.graph, {.device = Device::Cuda});
    REQUIRE(cg.ok());
    REQUIRE(cg->warm_up({{"B", 1}, {"T", 5}}).ok());
    std::printf("KILN_CHILD_STATS %s\n", cg->stats().to_json().c_str());
  }
}

TEST_CASE("cuda: a second process hits the disk cache", "[cuda][gpu]") {
  KILN_REQUIRE_GPU();
  std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("kiln_cache_{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  auto child = [&]() {
    std::string cmd = fmt::format("KILN_CACHE_DIR={} '{}' '[.cuda_child]' 2>&1", dir.string(), self);
    FILE* f = popen(cmd.c_str(), "r");
    REQUIRE(f);
    std::string out;
    char buf[4096];
    while (fgets(buf, sizeof buf, f)) out += buf;
    REQUIRE(pclose(f) == 0);
    INFO(out);
    size_t at = out.find("KILN_CHILD_STATS ");
    REQUIRE(at != std::string::npos);
    at += std::strlen("KILN_CHILD_STATS ");
    nlohmann::json stats = nlohmann::json::parse(out.substr(at, out.find('\n', at) - at), nullptr, false);
    REQUIRE(!stats.is_discarded());
    return stats;
  };
  nlohmann::json first = child(), second = child();
  INFO(first.dump());
  INFO(second.dump());
  CHECK(first["cache_disk_hits"] == 0);
  CHECK(second["cache_misses"] == 0);
  CHECK(second["cache_disk_hits"] != 0);
  std::filesystem::remove_all(dir);
}
