// The pass manager: kiln's fixed optimization pipeline (decompose, simplify, fuse_linear,
// fuse_elementwise, plan_memory), the verifier after every pass, wall time per pass, dumps
// after each or a named pass, and the compile summary `kiln compile` prints.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dump.h"
#include "ir/graph.h"
#include "passes/memory_plan.h"
#include "passes/schedule.h"

namespace kiln {

// What the passes build up: the graph, its kernel groups and the memory plan.
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

struct PassOptions {
  std::string dump_dir;     // when set: NN-<pass>.kiln after each pass and memory_plan.txt
  std::string print_after;  // "all" or a pass name: its IR (and memory plan) goes to `print`
  std::function<void(const std::string&)> print;
  Bindings bindings;        // symbol values for the memory plan's layout in dumps and prints
};

class PassManager {
 public:
  using PassFn = std::function<absl::StatusOr<bool>(CompileState&)>;

  // decompose -> simplify -> fuse_linear -> fuse_elementwise -> plan_memory.
  static PassManager default_pipeline();
  static const std::vector<std::string>& default_pass_names();

  // `schedule_complete`: after this pass every node must be in a group.
  void add(std::string name, PassFn fn, bool schedule_complete = false);
  // Runs the passes in order; after each, verifies the graph and schedule and dumps as
  // asked. An error names the pass (and the verifier's complaint).
  absl::Status run(CompileState& st, const PassOptions& opts = {});
  const std::vector<PassStat>& stats() const { return stats_; }

 private:
  struct Entry {
    std::string name;
    PassFn fn;
    bool schedule_complete;
  };
  std::vector<Entry> passes_;
  std::vector<PassStat> stats_;
};

struct CompileSummary {
  int groups = 0;
  int kernels = 0;      // elementwise and reduction groups run per call
  int gemms = 0;
  int weight_prep = 0;  // groups run once when parameters are bound
  ArenaLayout layout;
  std::vector<PassStat> passes;
  std::string to_text() const;
  // One line: groups, kernels, gemms, weight_prep, bindings, arena_bytes, no_reuse_bytes,
  // lower_bound_bytes, and passes [{name, ms, changed}].
  std::string to_json() const;
};

// Counts over the schedule and the memory plan's layout under `b`.
absl::StatusOr<CompileSummary> summarize(const CompileState& st, const std::vector<PassStat>& passes,
                                         const Bindings& b);

}  // namespace kiln
