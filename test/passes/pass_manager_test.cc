// The pass manager's instrumentation: hook order, a failing pass and a pass that breaks the
// graph (caught when verification is on), print-after of one pass and of lowering matching
// the dump, the step names derived from the pipeline, per-step timing including lowering.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test/common/scratch_dir.h"
#include "test/passes/util.h"

using namespace kiln;
using namespace kiln::testing;

namespace fs = std::filesystem;

namespace {

constexpr const char* kGraph = R"(graph g(%x: f32[B, 8], %w: f32[4, 8] param) {
  %l = linear(%x, %w)
  %e = exp(%l)
  %s = sum(%e, axes=[-1])
  return %s
})";

// Logs every hook call as "<tag> before|after|failed <pass>".
class Recorder : public PassInstrumentation {
 public:
  Recorder(std::string tag, std::vector<std::string>& log) : tag_(std::move(tag)), log_(log) {}
  void before_pass(const PassRun& run) override { log_.push_back(str_cat(tag_, " before ", run.name)); }
  absl::Status after_pass(const PassRun& run, bool changed) override {
    log_.push_back(str_cat(tag_, " after ", run.name));
    return absl::OkStatus();
  }
  void after_pass_failed(const PassRun& run, const absl::Status& error) override {
    log_.push_back(str_cat(tag_, " failed ", run.name));
  }

 private:
  std::string tag_;
  std::vector<std::string>& log_;
};

// Rejects every pass's result.
class RejectAll : public PassInstrumentation {
 public:
  absl::Status after_pass(const PassRun& run, bool changed) override {
    return absl::FailedPreconditionError(str_cat("rejected ", run.name));
  }
};

CompileState state_of(const char* text) {
  CompileState st;
  st.graph = parse_or_fail(text);
  return st;
}

// A graph pass that declares what decompose declares (graph and schedule verify; the IR).
Pass<CompileState> graph_pass_like_decompose(std::string name, std::function<absl::StatusOr<bool>(CompileState&)> run) {
  Pass<CompileState> decompose = graph_pipeline().passes().front();
  return {std::move(name), std::move(run), decompose.verify, decompose.show};
}

// Makes the first node read its own result: a graph the verifier rejects.
Pass<CompileState> breaking_pass() {
  return graph_pass_like_decompose("break", [](CompileState& st) -> absl::StatusOr<bool> {
    Node* n = st.graph.nodes().front().get();
    st.graph.replace_operand(n, 0, n->result());
    return true;
  });
}

Pass<CompileState> failing_pass() {
  return graph_pass_like_decompose("fail", [](CompileState&) -> absl::StatusOr<bool> {
    return absl::InternalError("out of luck");
  });
}

// The graph pipeline with `extra` inserted after the pass named `after`.
PassManager<CompileState> pipeline_with(Pass<CompileState> extra, const std::string& after) {
  PassManager<CompileState> graph = graph_pipeline();
  PassManager<CompileState> pm;
  for (const Pass<CompileState>& p : graph.passes()) {
    pm.add(p);
    if (p.name == after) pm.add(extra);
  }
  return pm;
}

std::vector<std::string> names_of(const std::vector<PassStat>& stats) {
  std::vector<std::string> names;
  for (const PassStat& s : stats) names.push_back(s.name);
  return names;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("pass manager: before hooks in order, after hooks in reverse", "[pass-manager]") {
  std::vector<std::string> log;
  PassManager<CompileState> pm = graph_pipeline();
  pm.instrument(std::make_unique<Recorder>("outer", log));
  pm.instrument(std::make_unique<Recorder>("inner", log));
  CompileState st = state_of(kGraph);
  require_ok(pm.run(st));
  REQUIRE(log.size() == 4 * pm.passes().size());
  CHECK(log[0] == "outer before decompose");
  CHECK(log[1] == "inner before decompose");
  CHECK(log[2] == "inner after decompose");
  CHECK(log[3] == "outer after decompose");
  CHECK(log.back() == "outer after plan_memory");
}

TEST_CASE("pass manager: a failing pass stops the pipeline, is named, and prints as failed", "[pass-manager]") {
  std::vector<std::string> log;
  std::string printed;
  PassManager<CompileState> pm = pipeline_with(failing_pass(), "simplify");
  pm.instrument(std::make_unique<Recorder>("rec", log));
  pm.instrument(std::make_unique<PrintAfterPass>("fail", [&](const std::string& s) { printed += s; }));
  PassTiming& timing = pm.instrument(std::make_unique<PassTiming>());
  CompileState st = state_of(kGraph);
  absl::Status s = pm.run(st);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(status_message(s) == "pass fail: out of luck");
  CHECK(log.back() == "rec failed fail");
  CHECK(std::find(log.begin(), log.end(), "rec before fuse_linear") == log.end());
  CHECK(printed.rfind("# after fail (failed)\ngraph g(", 0) == 0);
  // Timing records the passes that succeeded.
  CHECK(names_of(timing.stats()) == std::vector<std::string>{"decompose", "simplify"});
}

TEST_CASE("pass manager: a pass that breaks the graph is caught when verification is on", "[pass-manager]") {
  SECTION("on: the verifier names the pass; the broken IR is printed as failed") {
    std::vector<std::string> log;
    std::string printed;
    PassManager<CompileState> pm = pipeline_with(breaking_pass(), "decompose");
    pm.instrument(std::make_unique<Recorder>("rec", log));
    pm.instrument(std::make_unique<PrintAfterPass>("all", [&](const std::string& s) { printed += s; }));
    pm.instrument(std::make_unique<VerifyEachPass>());
    CompileState st = state_of(kGraph);
    absl::Status s = pm.run(st);
    INFO(status_message(s));
    CHECK(status_message(s).rfind("after pass break: invalid graph: ", 0) == 0);
    CHECK(status_message(s).find("is not defined before its use") != std::string::npos);
    CHECK(log.back() == "rec failed break");
    CHECK(printed.find("# after decompose\n") != std::string::npos);
    CHECK(printed.find("# after break (failed)\n") != std::string::npos);
  }
  SECTION("off: nothing checks it") {
    PassManager<CompileState> pm;
    pm.add(graph_pipeline().passes().front());
    pm.add(breaking_pass());
    CompileState st = state_of(kGraph);
    require_ok(pm.run(st));
  }
}

TEST_CASE("pass manager: an instrumentation's rejection stops the pipeline with its own error", "[pass-manager]") {
  std::vector<std::string> log;
  PassManager<CompileState> pm = graph_pipeline();
  pm.instrument(std::make_unique<Recorder>("outer", log));
  pm.instrument(std::make_unique<RejectAll>());
  pm.instrument(std::make_unique<Recorder>("inner", log));
  CompileState st = state_of(kGraph);
  absl::Status s = pm.run(st);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(status_message(s) == "rejected decompose");
  // The instrumentation inside the rejecting one saw the pass succeed, the one outside it fail.
  CHECK(log == std::vector<std::string>{"outer before decompose", "inner before decompose", "inner after decompose",
                                        "outer failed decompose"});
}

TEST_CASE("pipeline: the step names come from the pipeline, and every step is timed", "[pass-manager]") {
  std::vector<std::string> steps = {"decompose", "simplify", "fuse_linear", "fuse_elementwise", "plan_memory", "lower"};
  CHECK(default_pipeline().pass_names() == steps);
  std::vector<std::string> graph_steps(steps.begin(), steps.end() - 1);
  CHECK(graph_pipeline().pass_names() == graph_steps);
  std::vector<std::string> names = steps;
  names.push_back("all");
  CHECK(print_after_names() == names);

  PipelineResult r = compile_or_fail(parse_or_fail(kGraph));
  CHECK(names_of(r.summary.passes) == steps);
  for (const PassStat& p : r.summary.passes) CHECK(p.ms >= 0);
  CHECK(r.summary.passes.back().changed);  // lowering made kernels

  PipelineOptions bad;
  bad.print_after = "fusion";
  absl::StatusOr<PipelineResult> e = compile_to_kernels(parse_or_fail(kGraph), bad);
  CHECK(status_message(e.status()) ==
        "--print-after=fusion: no such pass (expected one of decompose, simplify, fuse_linear, fuse_elementwise, "
        "plan_memory, lower, all)");
}

TEST_CASE("pipeline: print-after of a pass and of lower is what the dump holds", "[pass-manager]") {
  testing::ScratchDir dir("kiln_pass_manager_test");
  auto printed_after = [&](const std::string& step) {
    PipelineOptions opts;
    opts.bindings = {{"B", 3}};
    opts.dump_dir = dir.path().string();
    opts.print_after = step;
    std::string printed;
    opts.print = [&](const std::string& s) { printed += s; };
    compile_or_fail(parse_or_fail(kGraph), opts);
    return printed;
  };
  std::string printed = printed_after("fuse_linear");
  CHECK(printed == "# after fuse_linear\n" + read_file(dir.path() / "03-fuse_linear.kiln"));
  printed = printed_after("plan_memory");
  std::string plan = read_file(dir.path() / "memory_plan.txt");
  CHECK(plan.find("# bindings: B=3\n") != std::string::npos);
  CHECK(printed == "# after plan_memory\n" + read_file(dir.path() / "05-plan_memory.kiln") + plan);

  printed = printed_after("lower");
  PipelineResult r = compile_or_fail(parse_or_fail(kGraph));
  REQUIRE(r.kernels.size() == 2);
  std::string kernels;
  for (const kir::Kernel& k : r.kernels) kernels += read_file(dir.path() / "kernels" / (k.name + ".kir"));
  CHECK(printed == "# after lower\n" + kernels);
  // Lowering's dump is its kernels/ folder, no numbered file.
  CHECK(!fs::exists(dir.path() / "06-lower.kiln"));
}

TEST_CASE("pipeline: the kernels/ folder is replaced, not added to", "[pass-manager]") {
  testing::ScratchDir dir("kiln_pass_manager_test");
  fs::create_directories(dir.path() / "kernels");
  std::ofstream(dir.path() / "kernels" / "k9_stale.kir") << "kernel k9_stale\n";
  std::ofstream(dir.path() / "kernels" / "notes.txt") << "mine\n";
  PipelineOptions opts;
  opts.dump_dir = dir.path().string();
  PipelineResult r = compile_or_fail(parse_or_fail(kGraph), opts);
  CHECK(!fs::exists(dir.path() / "kernels" / "k9_stale.kir"));
  CHECK(fs::exists(dir.path() / "kernels" / "notes.txt"));
  for (const kir::Kernel& k : r.kernels) CHECK(fs::exists(dir.path() / "kernels" / (k.name + ".kir")));
}

TEST_CASE("pipeline: a dump directory that cannot be made is reported before any pass runs", "[pass-manager]") {
  testing::ScratchDir dir("kiln_pass_manager_test");
  fs::create_directories(dir.path());
  std::ofstream(dir.path() / "file") << "x";
  PipelineOptions opts;
  opts.dump_dir = (dir.path() / "file" / "dump").string();
  absl::StatusOr<PipelineResult> r = compile_to_kernels(parse_or_fail(kGraph), opts);
  CHECK(status_message(r.status()).rfind(str_cat("cannot create dump directory ", opts.dump_dir, ": "), 0) == 0);
}
