// The pass manager: runs a pipeline of named passes over a compile state, calling
// instrumentations around every pass in the spirit of MLIR's PassInstrumentation. The
// verifier, per-pass timing, print-after and the dump are instrumentations, so the manager
// itself only runs passes and knows none by name. The graph pipeline (decompose ...
// plan_memory) is listed here, once; compiler/pipeline.h nests it in the whole pipeline,
// which ends with lowering.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dump.h"
#include "ir/graph.h"
#include "ir/status.h"
#include "passes/decompose.h"
#include "passes/memory_plan.h"
#include "passes/schedule.h"

namespace kiln {

// What the graph passes build up: the graph, its kernel groups and the memory plan.
struct CompileState {
  Graph graph;
  Schedule schedule;
  MemoryPlan memory;
};

struct PassStat {
  std::string name;
  double ms = 0;
  bool changed = false;
};

// A piece of a pass's result as text. --print-after prints a pass's texts in order after
// "# after <pass>"; the dump writes each to its file.
struct PassText {
  std::string text;
  // Where the dump writes it, under the dump directory; empty: NN-<pass>.kiln, numbered by
  // the pass's place in the pipeline.
  std::string file = {};
};

// A pass over `State`: what it does and what it declares about its result.
template <typename State>
struct Pass {
  std::string name;
  std::function<absl::StatusOr<bool>(State&)> run;  // whether it changed anything
  // What holds after it (empty: nothing to check); the error says what does not.
  std::function<absl::Status(const State&)> verify;
  // Its result as text: the IR it leaves, and whatever else it wants seen (the memory plan).
  std::function<std::vector<PassText>(const State&)> show;
};

// What an instrumentation sees of one pass as it runs: its name and place, and what the pass
// declared about its result, bound to the state it runs on.
struct PassRun {
  std::string_view name;
  int index;  // 1-based place in the pipeline
  std::function<absl::Status()> verify;
  std::function<std::vector<PassText>()> show;
};

// Hooks around every pass. before_pass hooks run in the order the instrumentations were
// added, the after hooks in reverse order, so that instrumentations nest like scopes: the
// one added last sits closest to the pass. Each instrumentation gets exactly one after hook
// per pass that started.
class PassInstrumentation {
 public:
  virtual ~PassInstrumentation() = default;
  virtual void before_pass(const PassRun& run) {}
  // The pass succeeded. An error rejects its result and stops the pipeline with that error.
  virtual absl::Status after_pass(const PassRun& run, bool changed) { return absl::OkStatus(); }
  // The pass failed, or an after_pass hook nested inside this one rejected its result.
  virtual void after_pass_failed(const PassRun& run, const absl::Status& error) {}
};

// Runs `body` (the pass at run.index) between the instrumentations' hooks. The pass's own
// error comes back as "pass <name>: <error>", a rejection as its instrumentation wrote it.
absl::Status run_instrumented(const PassRun& run, const std::function<absl::StatusOr<bool>()>& body,
                              std::span<const std::unique_ptr<PassInstrumentation>> instrumentations);

template <typename State>
class PassManager {
 public:
  void add(Pass<State> pass) { passes_.push_back(std::move(pass)); }
  // Adds `inner`'s passes, each running on the part of the state that `part` selects (the
  // graph passes on a CompiledModule's CompileState), as MLIR nests a pass manager.
  template <typename Part>
  void nest(const PassManager<Part>& inner, Part State::*part) {
    for (const Pass<Part>& p : inner.passes()) {
      Pass<State> outer{p.name, [run = p.run, part](State& st) { return run(st.*part); }, nullptr, nullptr};
      if (p.verify) outer.verify = [verify = p.verify, part](const State& st) { return verify(st.*part); };
      if (p.show) outer.show = [show = p.show, part](const State& st) { return show(st.*part); };
      add(std::move(outer));
    }
  }
  // Owned by the manager; the reference reads what it recorded once run() returns.
  template <typename I>
  I& instrument(std::unique_ptr<I> instrumentation) {
    I& i = *instrumentation;
    instrumentations_.push_back(std::move(instrumentation));
    return i;
  }

  const std::vector<Pass<State>>& passes() const { return passes_; }
  std::vector<std::string> pass_names() const {
    std::vector<std::string> names;
    for (const Pass<State>& p : passes_) names.push_back(p.name);
    return names;
  }

  // Runs the passes in order; the first error (a pass's, or an instrumentation's rejection
  // of a result) stops the pipeline and is returned.
  absl::Status run(State& st) {
    for (size_t i = 0; i < passes_.size(); ++i) {
      const Pass<State>& p = passes_[i];
      PassRun r{p.name, static_cast<int>(i + 1), nullptr, [&] { return p.show ? p.show(st) : std::vector<PassText>{}; }};
      if (p.verify) r.verify = [&] { return p.verify(st); };
      KILN_RETURN_IF_ERROR(run_instrumented(r, [&] { return p.run(st); }, instrumentations_));
    }
    return absl::OkStatus();
  }

 private:
  std::vector<Pass<State>> passes_;
  std::vector<std::unique_ptr<PassInstrumentation>> instrumentations_;
};

// Checks what each pass declared to hold after it, as XLA runs its verifier between passes:
// "after pass <name>: <what does not hold>".
class VerifyEachPass : public PassInstrumentation {
 public:
  absl::Status after_pass(const PassRun& run, bool changed) override;
};

// Wall time of every pass that succeeded, in pipeline order.
class PassTiming : public PassInstrumentation {
 public:
  void before_pass(const PassRun& run) override { start_ = std::chrono::steady_clock::now(); }
  absl::Status after_pass(const PassRun& run, bool changed) override;
  const std::vector<PassStat>& stats() const { return stats_; }

 private:
  std::chrono::steady_clock::time_point start_;
  std::vector<PassStat> stats_;
};

// Gives `print` the texts of the pass named `which` (or of every pass: "all") after it ran:
// "# after <pass>\n" then its texts. A pass that failed or whose result was rejected is
// printed as "# after <pass> (failed)", so that the broken IR can be seen.
class PrintAfterPass : public PassInstrumentation {
 public:
  PrintAfterPass(std::string which, std::function<void(const std::string&)> print)
      : which_(std::move(which)), print_(std::move(print)) {}
  absl::Status after_pass(const PassRun& run, bool changed) override;
  void after_pass_failed(const PassRun& run, const absl::Status& error) override;

 private:
  bool wanted(const PassRun& run) const { return which_ == "all" || which_ == run.name; }
  std::string which_;
  std::function<void(const std::string&)> print_;
};

// Writes every pass's texts into the dump as it runs, so that a failing pass leaves the
// dumps before it. A pass's files in a sub-folder (kernels/) replace what an earlier dump
// left there with the same extension.
class DumpEachPass : public PassInstrumentation {
 public:
  explicit DumpEachPass(DumpWriter dump) : dump_(std::move(dump)) {}
  absl::Status after_pass(const PassRun& run, bool changed) override;

 private:
  DumpWriter dump_;
};

// decompose -> simplify -> fuse_linear -> fuse_elementwise -> plan_memory. Each pass declares
// that the graph and its schedule verify after it (every node in a group from
// fuse_elementwise on) and shows the scheduled IR; plan_memory also shows the memory plan
// laid out under `layout` (memory_plan.txt in the dump). `keep_attention`: decompose's.
PassManager<CompileState> graph_pipeline(const Bindings& layout = {}, KeepAttention keep_attention = nullptr);

}  // namespace kiln
