// The executor (runtime/executor.h) through compile() on a device adapter written for tests
// (interpreter_device.h: kernels on the kernel-IR evaluator, host memory): results against
// the reference evaluator at sizes 1, odd and large, weight prep run once per parameter set,
// capture once and replay, static slots with no copies, the bounded plan cache, and GEMMs
// the library refuses falling back to their own kernel; an overlapped collective forked onto
// the device's side stream and joined back before its join step, and on an error.
#include <catch2/catch.hpp>

#include <regex>

#include "compiler/compile.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/communicator.h"
#include "test/common/catch_helpers.h"
#include "test/common/graphs.h"
#include "test/common/parallel_check.h"
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

// A host group of one that logs each all_reduce into `counts->log` ("on the side stream" where
// it is given a stream: the interpreter's calls have none) and fails call `fail` (1-based; 0: none).
class LoggedCommunicator final : public Communicator {
 public:
  LoggedCommunicator(std::shared_ptr<DeviceCounts> counts, int fail)
      : inner_(host_group(1)[0]), counts_(std::move(counts)), fail_(fail) {}
  int64_t rank() const override { return 0; }
  int64_t ranks() const override { return 1; }
  ExternDevice device() const override { return ExternDevice::Cpu; }
  std::string describe() const override { return "logged host group of one"; }
  absl::Status all_reduce(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    counts_->log.push_back(stream ? "all_reduce on the side stream" : "all_reduce in line");
    if (++calls_ == fail_) return absl::InternalError("the link went down");
    return inner_->all_reduce(in, out, count, dtype, stream);
  }
  absl::Status all_gather(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    return inner_->all_gather(in, out, count, dtype, stream);
  }
  absl::Status reduce_scatter(const void* in, void* out, int64_t count, DType dtype, void* stream) override {
    return inner_->reduce_scatter(in, out, count, dtype, stream);
  }
  void abort(const absl::Status& why) override { inner_->abort(why); }

 private:
  std::shared_ptr<Communicator> inner_;
  std::shared_ptr<DeviceCounts> counts_;
  int fail_ = 0, calls_ = 0;
};

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

TEST_CASE("executor: an overlapped all_reduce runs on the side stream, joined before its join step, and on an error",
          "[executor][parallel]") {
  // One parallel-residual block with biases, sharded over 2 ranks, run as a group of one: the
  // attention branch's all_reduce overlaps the MLP branch (what of it comes after: its down
  // projection); the MLP's runs in line.
  absl::StatusOr<ShardedGraph> s =
      shard(parse_or_fail(test_graphs::parallel_residual(1, true)), test_graphs::parallel_residual_plan(2));
  require_ok(s.status());
  Graph g = kiln::testing::one_rank_graph(*s, 2);
  TensorMap args = random_args(g, {{"B", 2}, {"T", 3}}, 4);
  scale_weights_by_fan_in(g, args);
  absl::StatusOr<std::vector<std::vector<HostTensor>>> want = evaluate_ranks(g, std::vector<TensorMap>{args});
  require_ok(want.status());
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    DYNAMIC_SECTION(mode_name(mode)) {
      auto counts = std::make_shared<DeviceCounts>();
      counts->side_stream = true;
      absl::StatusOr<CompiledGraph> cg =
          compile(g, make_interpreter_device(counts),
                  {.mode = mode, .communicator = std::make_shared<LoggedCommunicator>(counts, 0)});
      require_ok(cg.status());
      std::vector<Tensor> out(1);
      require_ok(cg->run(tensors(*cg, args), out));
      // (The interpreter's replay holds its launches, not the host group's calls: only the
      // direct call's results are the graph's.)
      if (mode == Mode::Default) {
        Comparison c = compare_tensors((*want)[0][0], *out[0].to_host(), default_tolerance(DType::f32));
        INFO(c.message);
        CHECK(c.ok);
      }
      std::string text = cg->specialization_info().back().program->to_string();
      INFO(text);
      std::smatch m;
      REQUIRE(std::regex_search(text, m, std::regex("all_reduce f32 .*, overlaps ([0-9]+) steps? on the comm stream")));
      const int between = std::stoi(m[1]);
      // Each run (a capture runs the steps twice): the fork, the all_reduce there and its
      // event; the steps between (one launch each: no GEMM library) while it runs; its join;
      // then the MLP's all_reduce in line.
      std::vector<std::string> run = {"fork", "all_reduce on the side stream", "record 0"};
      for (int i = 0; i < between; ++i) run.push_back("launch");
      run.insert(run.end(), {"join 0", "all_reduce in line"});
      std::vector<std::string> log;
      for (const std::string& e : counts->log) log.push_back(e.rfind("launch ", 0) == 0 ? "launch" : e);
      INFO(kiln::str_join(counts->log, "\n", [](const std::string& e) { return e; }));
      CHECK(between >= 1);
      CHECK(std::count(log.begin(), log.end(), "fork") == (mode == Mode::ReduceOverhead ? 2 : 1));
      for (auto at = std::find(log.begin(), log.end(), "fork"); at != log.end();
           at = std::find(at + 1, log.end(), "fork")) {
        REQUIRE(log.end() - at >= static_cast<std::ptrdiff_t>(run.size()));
        CHECK(std::vector<std::string>(at, at + static_cast<std::ptrdiff_t>(run.size())) == run);
      }
    }
  }
  SECTION("the overlapped all_reduce fails: the call's stream joins everything forked, then the error returns") {
    auto counts = std::make_shared<DeviceCounts>();
    counts->side_stream = true;
    absl::StatusOr<CompiledGraph> cg =
        compile(g, make_interpreter_device(counts), {.communicator = std::make_shared<LoggedCommunicator>(counts, 1)});
    require_ok(cg.status());
    std::vector<Tensor> out(1);
    absl::Status st = cg->run(tensors(*cg, args), out);
    REQUIRE(!st.ok());
    CHECK_THAT(status_message(st), Catch::Contains("all_reduce") && Catch::Contains("the link went down"));
    // Event 2 (one per collective, then one for all): everything forked so far, joined.
    REQUIRE(counts->log.size() >= 5);
    std::vector<std::string> tail(counts->log.end() - 5, counts->log.end());
    CHECK(tail == std::vector<std::string>{"fork", "all_reduce on the side stream", "record 0", "record 2", "join 2"});
  }
}
