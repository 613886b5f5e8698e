// The executor (runtime/executor.h) through compile() on a device adapter written for tests
// (interpreter_device.h: kernels on the kernel-IR evaluator, host memory): results against
// the reference evaluator at sizes 1, odd and large, weight prep run once per parameter set,
// capture once and replay, static slots with no copies, the bounded plan cache, and GEMMs
// the library refuses falling back to their own kernel.
#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "test/common/catch_helpers.h"
#include "test/executor/interpreter_device.h"

using namespace kiln;
using kiln::testing::DeviceCounts;
using kiln::testing::make_interpreter_device;
using kiln::testing::parse_or_fail;
using kiln::testing::require_ok;

namespace {

// Linear + bias + tanh gelu, merged q/k/v projections (a weight-prep group), a softmax, an
// argument returned as it is and an output returned twice.
constexpr const char* kGraph = R"(graph block(%x: f32[B, 12], %wq: f32[8, 12] param, %wk: f32[8, 12] param,
                                   %wv: f32[8, 12] param, %w: f32[6, 8] param, %b: f32[6] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %v = linear(%x, %wv)
  %s = mul(%q, %k)
  %t = add(%s, %v)
  %l = linear(%t, %w, %b)
  %g = gelu(%l, approximate="tanh")
  %y = softmax(%g)
  return %y, %x, %y
})";

struct Fixture {
  explicit Fixture(Mode mode = Mode::Default, GemmLibrary library = GemmLibrary::None)
      : graph(parse_or_fail(kGraph)), counts(std::make_shared<DeviceCounts>()) {
    absl::StatusOr<CompiledGraph> c = compile(graph, make_interpreter_device(counts, library), {.mode = mode});
    if (!c.ok()) FAIL(status_message(c.status()));
    cg.emplace(*std::move(c));
  }
  Graph graph;
  std::shared_ptr<DeviceCounts> counts;
  std::optional<CompiledGraph> cg;
};

std::vector<Tensor> tensors(const CompiledGraph& cg, const TensorMap& args) {
  std::vector<Tensor> out;
  for (const Value* v : cg.module().args) out.push_back(*Tensor::from_host(args.at(v->name())));
  return out;
}

// The outputs of `cg` on `in` equal the reference evaluator's on `args`.
void require_matches(CompiledGraph& cg, const Graph& g, const TensorMap& args, const std::vector<Tensor>& in,
                     std::vector<Tensor> out = {}) {
  if (out.empty()) out.resize(g.outputs().size());
  require_ok(cg.run(in, out));
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  require_ok(want.status());
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], *out[i].to_host(), default_tolerance((*want)[i].dtype()));
    INFO("output " << i << ": " << c.message);
    REQUIRE(c.ok);
  }
}

int prep_launches(const DeviceCounts& c) {
  int n = 0;
  for (const auto& [name, count] : c.launches)
    if (name.find("concat") != std::string::npos) n += count;
  return n;
}

}  // namespace

TEST_CASE("executor: a third device runs compiled graphs as the reference does", "[executor]") {
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead, Mode::MaxAutotune}) {
    Fixture f(mode);
    for (int64_t b : {1, 7, 64, 7}) {
      INFO(mode_name(mode) << " B=" << b);
      TensorMap args = random_args(f.graph, {{"B", b}}, 100 + b);
      require_matches(*f.cg, f.graph, args, tensors(*f.cg, args));
    }
    CHECK(f.cg->specializations() == std::vector<std::string>{"B == 1", "B >= 2"});
  }
}

TEST_CASE("executor: weight prep runs once per parameter set, again after parameters_changed()", "[executor]") {
  Fixture f;
  REQUIRE(f.cg->module().state.schedule.groups.front().weight_prep);
  TensorMap args = random_args(f.graph, {{"B", 5}}, 7);
  std::vector<Tensor> in = tensors(*f.cg, args);
  for (int i = 0; i < 3; ++i) require_matches(*f.cg, f.graph, args, in);
  CHECK(prep_launches(*f.counts) == 1);
  // New values written into a parameter in place: stale until the executor is told.
  TensorMap changed = random_args(f.graph, {{"B", 5}}, 8);
  changed["x"] = args["x"];
  for (size_t i = 0; i < in.size(); ++i)
    if (f.cg->module().args[i]->is_param()) require_ok(in[i].copy_from_host(changed[f.cg->module().args[i]->name()]));
  f.cg->parameters_changed();
  require_matches(*f.cg, f.graph, changed, in);
  CHECK(prep_launches(*f.counts) == 2);
  // Parameters at new addresses are noticed without being told.
  TensorMap moved = random_args(f.graph, {{"B", 5}}, 9);
  require_matches(*f.cg, f.graph, moved, tensors(*f.cg, moved));
  CHECK(prep_launches(*f.counts) == 3);
}

TEST_CASE("executor: reduce-overhead captures once per shape, replays, and static slots copy nothing", "[executor]") {
  Fixture f(Mode::ReduceOverhead);
  TensorMap args = random_args(f.graph, {{"B", 9}}, 3);
  std::vector<Tensor> in = tensors(*f.cg, args);
  for (int i = 0; i < 3; ++i) require_matches(*f.cg, f.graph, args, in);
  CHECK(f.counts->captures == 1);
  CHECK(f.counts->replays == 3);
  // Inputs written into the static slots, outputs read from them: no copy in or out.
  absl::StatusOr<StaticSlots> slots = f.cg->static_slots({{"B", 9}});
  require_ok(slots.status());
  std::vector<Tensor> slot_in = slots->inputs;
  for (size_t i = 0; i < slot_in.size(); ++i) {
    const Value* a = f.cg->module().args[i];
    if (a->is_param()) {
      slot_in[i] = in[i];  // parameters are read where the caller keeps them
    } else {
      require_ok(slot_in[i].copy_from_host(args[a->name()]));
    }
  }
  int copies = f.counts->copies;
  require_matches(*f.cg, f.graph, args, slot_in, slots->outputs);
  CHECK(f.counts->copies == copies);
  CHECK(f.counts->captures == 1);
  // Another shape captures its own.
  TensorMap other = random_args(f.graph, {{"B", 4}}, 4);
  require_matches(*f.cg, f.graph, other, tensors(*f.cg, other));
  CHECK(f.counts->captures == 2);
}

TEST_CASE("executor: call plans are kept for at most 256 shapes", "[executor]") {
  Graph g = parse_or_fail("graph e(%x: f32[N]) {\n  %y = exp(%x)\n  return %y\n}");
  auto counts = std::make_shared<DeviceCounts>();
  absl::StatusOr<CompiledGraph> cg = compile(g, make_interpreter_device(counts), {});
  require_ok(cg.status());
  auto call = [&](int64_t n) {
    TensorMap args = random_args(g, {{"N", n}}, n);
    std::vector<Tensor> in = {*Tensor::from_host(args.at("x"))};
    require_matches(*cg, g, args, in);
  };
  call(2);
  int plans = counts->plans;
  call(2);
  CHECK(counts->plans == plans);  // the same shape reuses its plan
  for (int64_t n = 3; n < 2 + 256; ++n) call(n);
  plans = counts->plans;
  call(2);
  CHECK(counts->plans == plans);  // 256 shapes fit
  call(2 + 256);                  // the 257th starts the cache over
  call(2);
  CHECK(counts->plans == plans + 2);
}

TEST_CASE("executor: a GEMM the library refuses runs its fallback kernel", "[executor]") {
  Fixture f(Mode::Default, GemmLibrary::CublasLt);
  for (int64_t b : {1, 6}) {
    TensorMap args = random_args(f.graph, {{"B", b}}, 30 + b);
    require_matches(*f.cg, f.graph, args, tensors(*f.cg, args));
  }
  CHECK(f.counts->gemm_calls > 0);
  int naive = 0;
  for (const auto& [name, count] : f.counts->launches) naive += name.ends_with("_naive") ? count : 0;
  CHECK(naive == f.counts->gemm_calls);
}
