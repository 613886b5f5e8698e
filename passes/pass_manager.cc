#include "passes/pass_manager.h"

#include <map>
#include <set>

#include "ir/status.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "passes/decompose.h"
#include "passes/fuse_elementwise.h"
#include "passes/fuse_linear.h"
#include "passes/schedule_util.h"
#include "passes/simplify.h"

namespace kiln {

absl::Status run_instrumented(const PassRun& run, const std::function<absl::StatusOr<bool>()>& body,
                              std::span<const std::unique_ptr<PassInstrumentation>> instrumentations) {
  for (const std::unique_ptr<PassInstrumentation>& i : instrumentations) i->before_pass(run);
  absl::StatusOr<bool> changed = body();
  absl::Status error;
  size_t done = 0;  // after hooks run so far, innermost first
  if (!changed.ok()) {
    error = invalid_argument("pass ", run.name, ": ", status_message(changed.status()));
  } else {
    for (; done < instrumentations.size() && error.ok(); ++done)
      error = instrumentations[instrumentations.size() - 1 - done]->after_pass(run, *changed);
  }
  if (!error.ok())
    for (size_t k = done; k < instrumentations.size(); ++k)
      instrumentations[instrumentations.size() - 1 - k]->after_pass_failed(run, error);
  return error;
}

absl::Status VerifyEachPass::after_pass(const PassRun& run, bool changed) {
  if (!run.verify) return absl::OkStatus();
  if (absl::Status s = run.verify(); !s.ok()) return invalid_argument("after pass ", run.name, ": ", status_message(s));
  return absl::OkStatus();
}

absl::Status PassTiming::after_pass(const PassRun& run, bool changed) {
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  stats_.push_back({std::string(run.name), ms, changed});
  return absl::OkStatus();
}

namespace {

std::string joined(const std::vector<PassText>& texts) {
  std::string s;
  for (const PassText& t : texts) s += t.text;
  return s;
}

}  // namespace

absl::Status PrintAfterPass::after_pass(const PassRun& run, bool changed) {
  if (wanted(run)) print_(str_cat("# after ", run.name, "\n", joined(run.show())));
  return absl::OkStatus();
}

void PrintAfterPass::after_pass_failed(const PassRun& run, const absl::Status& error) {
  if (wanted(run)) print_(str_cat("# after ", run.name, " (failed)\n", joined(run.show())));
}

absl::Status DumpEachPass::after_pass(const PassRun& run, bool changed) {
  std::map<std::filesystem::path, std::set<std::string>> folders;  // sub-folder -> the files written there
  for (const PassText& t : run.show()) {
    if (t.file.empty()) {
      KILN_RETURN_IF_ERROR(dump_.write_pass(run.index, run.name, t.text));
      continue;
    }
    std::filesystem::path file(t.file);
    KILN_RETURN_IF_ERROR(dump_.write(file, t.text));
    if (file.has_parent_path()) folders[file.parent_path()].insert(file.filename().string());
  }
  for (const auto& [folder, written] : folders) KILN_RETURN_IF_ERROR(dump_.sub(folder).remove_stale(written));
  return absl::OkStatus();
}

namespace {

// A graph pass: after it the graph verifies, and so does its schedule (with every computing
// node in a group when `schedule_complete`). It shows the scheduled IR, then `extra`'s text.
Pass<CompileState> graph_pass(std::string name, std::function<absl::StatusOr<bool>(CompileState&)> run,
                              bool schedule_complete = false,
                              std::function<PassText(const CompileState&)> extra = nullptr) {
  auto verify = [schedule_complete](const CompileState& st) -> absl::Status {
    if (absl::Status s = kiln::verify(st.graph); !s.ok()) return invalid_argument("invalid graph: ", status_message(s));
    if (absl::Status s = verify_schedule(st.graph, st.schedule, schedule_complete); !s.ok())
      return invalid_argument("invalid schedule: ", status_message(s));
    return absl::OkStatus();
  };
  auto show = [extra = std::move(extra)](const CompileState& st) {
    std::vector<PassText> texts = {{print_scheduled(st.graph, st.schedule)}};
    if (extra) texts.push_back(extra(st));
    return texts;
  };
  return {std::move(name), std::move(run), verify, show};
}

}  // namespace

PassManager<CompileState> graph_pipeline(const Bindings& layout, KeepAttention keep_attention) {
  PassManager<CompileState> pm;
  pm.add(graph_pass("decompose", [keep = std::move(keep_attention)](CompileState& st) { return decompose(st.graph, keep); }));
  pm.add(graph_pass("simplify", [](CompileState& st) { return simplify(st.graph); }));
  pm.add(graph_pass("fuse_linear", [](CompileState& st) { return fuse_linear(st.graph, st.schedule); }));
  pm.add(graph_pass("fuse_elementwise", [](CompileState& st) { return fuse_elementwise(st.graph, st.schedule); }, true));
  pm.add(graph_pass(
      "plan_memory", [](CompileState& st) { return plan_memory(st.graph, st.schedule, st.memory); }, true,
      [layout](const CompileState& st) {
        absl::StatusOr<ArenaLayout> l = st.memory.layout(layout);
        std::string plan = st.memory.to_string(l.ok() ? &*l : nullptr);
        if (!l.ok()) plan = str_cat("# no layout: ", status_message(l.status()), "\n", plan);
        return PassText{plan, "memory_plan.txt"};
      }));
  return pm;
}

}  // namespace kiln
