// Compiling a graph down to kernel IR: the whole pipeline (the graph passes, then lowering of
// every kernel group as its last step) under the instrumentations its options ask for, the
// compile summary, and the dumps of `kiln compile --dump-dir`. The backends (CUDA, CPU)
// start from its result; compile(), `kiln compile` and the tests call it.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/attention.h"
#include "codegen/kernel_ir.h"
#include "codegen/module.h"
#include "ir/graph.h"
#include "passes/pass_manager.h"

namespace kiln {

// The last step of the pipeline: every kernel group lowered to kernel IR.
inline constexpr std::string_view kLowerPass = "lower";

// The graph passes (passes/'s graph_pipeline, showing the memory plan under `layout`) on the
// module's CompileState, then lowering into module.kernels, which shows as
// kernels/<kernel>.kir. `lower_log` receives lowering's decisions, one line per step.
// `fused_attention`: see PipelineOptions.
PassManager<CompiledModule> default_pipeline(const Bindings& layout = {},
                                             std::function<void(const std::string&)> lower_log = nullptr,
                                             bool (*fused_attention)(const AttentionForm&) = nullptr);

// Names print_after accepts: the default pipeline's steps and "all".
const std::vector<std::string>& print_after_names();

// Whether the pipeline verifies each pass's result when not told: in debug builds (no
// NDEBUG), or when the environment sets KILN_VERIFY=1.
bool verify_passes_by_default();

struct PipelineOptions {
  // Symbol values for the memory layout in the summary and the dumped memory plan; a
  // symbol left unbound takes its lower bound (see PipelineResult::layout_bindings).
  Bindings bindings;
  // When set: NN-<pass>.kiln after each pass, memory_plan.txt, and kernels/<kernel>.kir
  // for every group, written as the steps run.
  std::string dump_dir;
  // "all" or a step's name: that step's output goes to `print`.
  std::string print_after;
  std::function<void(const std::string&)> print;
  // When set, receives lowering's decisions, one line per step (KILN_LOG=lower).
  std::function<void(const std::string&)> lower_log;
  // Check, after every pass, the graph and schedule it leaves: the verifier between passes.
  bool verify_passes = verify_passes_by_default();
  // The attention forms kept whole as one fused step (the target's supports_attention);
  // null: every attention is decomposed (GEMM -> softmax -> GEMM).
  bool (*fused_attention)(const AttentionForm&) = nullptr;
};

struct CompileSummary {
  int groups = 0;
  int kernels = 0;      // elementwise and reduction groups run per call
  int gemms = 0;
  int attentions = 0;   // fused attention steps
  int externs = 0;      // extern op calls (ir/extern_op.h)
  int collectives = 0;  // all_reduce, all_gather, reduce_scatter calls (runtime/communicator.h)
  int weight_prep = 0;  // groups run once when parameters are bound
  ArenaLayout layout;
  std::vector<PassStat> passes;
  std::string to_text() const;  // its JSON form is in compiler/json.h
};

struct PipelineResult {
  CompileState state;                // graph, kernel groups and memory plan after the passes
  std::vector<kir::Kernel> kernels;  // kernels[i] is state.schedule.groups[i] lowered
  Bindings layout_bindings;          // every symbol: given, or its lower bound
  CompileSummary summary;            // its `passes` end with the "lower" step
};

// Runs the default pipeline on `g`, which must verify, and fills the summary (the arena
// under layout_bindings). Errors name the pass or group at fault, an unknown print_after
// name, a binding of an unknown symbol, or a dump file that cannot be written.
absl::StatusOr<PipelineResult> compile_to_kernels(Graph g, const PipelineOptions& opts = {});

}  // namespace kiln
