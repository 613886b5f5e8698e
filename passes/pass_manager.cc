#include "passes/pass_manager.h"

#include <chrono>
#include <filesystem>
#include <map>

#include "ir/str.h"
#include "ir/verifier.h"
#include "passes/decompose.h"
#include "passes/fuse_elementwise.h"
#include "passes/fuse_linear.h"
#include "passes/schedule_util.h"
#include "passes/simplify.h"

namespace kiln {
const std::vector<std::string>& PassManager::default_pass_names() {
  static const std::vector<std::string> names = {"decompose", "simplify", "fuse_linear", "fuse_elementwise",
                                                 "plan_memory"};
  return names;
}

PassManager PassManager::default_pipeline() {
  PassManager pm;
  pm.add("decompose", [](CompileState& st) { return decompose(st.graph); });
  pm.add("simplify", [](CompileState& st) { return simplify(st.graph); });
  pm.add("fuse_linear", [](CompileState& st) { return fuse_linear(st.graph, st.schedule); });
  pm.add("fuse_elementwise", [](CompileState& st) { return fuse_elementwise(st.graph, st.schedule); }, true);
  pm.add("plan_memory", [](CompileState& st) { return plan_memory(st.graph, st.schedule, st.memory); }, true);
  return pm;
}

void PassManager::add(std::string name, PassFn fn, bool schedule_complete) {
  passes_.push_back({std::move(name), std::move(fn), schedule_complete});
}

absl::Status PassManager::run(CompileState& st, const PassOptions& opts) {
  stats_.clear();
  if (!opts.dump_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(opts.dump_dir, ec);
    if (ec) return invalid_argument("cannot create dump directory ", opts.dump_dir, ": ", ec.message());
  }
  bool complete = false;
  for (size_t i = 0; i < passes_.size(); ++i) {
    const Entry& p = passes_[i];
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<bool> changed = p.fn(st);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!changed.ok()) return invalid_argument("pass ", p.name, ": ", status_message(changed.status()));
    stats_.push_back({p.name, ms, *changed});
    complete |= p.schedule_complete;
    if (auto s = verify(st.graph); !s.ok())
      return invalid_argument("after pass ", p.name, ": invalid graph: ", status_message(s));
    if (auto s = verify_schedule(st.graph, st.schedule, complete); !s.ok())
      return invalid_argument("after pass ", p.name, ": invalid schedule: ", status_message(s));
    std::string text = print_scheduled(st.graph, st.schedule);
    // The memory plan, laid out under the options' bindings, goes with plan_memory's IR.
    std::string plan;
    if (p.name == "plan_memory") {
      absl::StatusOr<ArenaLayout> l = st.memory.layout(opts.bindings);
      plan = st.memory.to_string(l.ok() ? &*l : nullptr);
      if (!l.ok()) plan = str_cat("# no layout: ", status_message(l.status()), "\n", plan);
    }
    if (opts.print && (opts.print_after == "all" || opts.print_after == p.name))
      opts.print(str_cat("# after ", p.name, "\n", text, plan));
    if (!opts.dump_dir.empty()) {
      std::filesystem::path dir(opts.dump_dir);
      if (auto s = write_dump_file(dir / fmt::format("{:02}-{}.kiln", i + 1, p.name), text); !s.ok()) return s;
      if (!plan.empty())
        if (auto s = write_dump_file(dir / "memory_plan.txt", plan); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CompileSummary> summarize(const CompileState& st, const std::vector<PassStat>& passes,
                                         const Bindings& b) {
  CompileSummary sum;
  sum.passes = passes;
  sum.groups = static_cast<int>(st.schedule.groups.size());
  for (const KernelGroup& g : st.schedule.groups) {
    if (g.weight_prep) ++sum.weight_prep;
    else if (g.kind == KernelGroup::Kind::Gemm) ++sum.gemms;
    else ++sum.kernels;
  }
  absl::StatusOr<ArenaLayout> l = st.memory.layout(b);
  if (!l.ok()) return l.status();
  sum.layout = *std::move(l);
  return sum;
}

std::string CompileSummary::to_text() const {
  auto pct = [](int64_t a, int64_t b) { return b == 0 ? 0.0 : 100.0 * (a - b) / b; };
  std::string s = str_cat("groups ", groups, ": ", kernels, " kernels, ", gemms, " GEMMs, ", weight_prep,
                          " weight-prep\n");
  s += str_cat("arena ", layout.arena_bytes, " bytes; lower bound ", layout.lower_bound_bytes, " (",
               fmt::format("{:+.1f}%", pct(layout.arena_bytes, layout.lower_bound_bytes)), "); without reuse ",
               layout.no_reuse_bytes, "\n");
  for (const PassStat& p : passes)
    s += fmt::format("  {:<18}{:8.3f} ms{}\n", p.name, p.ms, p.changed ? "" : "  (no change)");
  return s;
}

std::string CompileSummary::to_json() const {
  std::string passes_json = str_join(passes, ", ", [](const PassStat& p) {
    return fmt::format("{{\"name\": \"{}\", \"ms\": {:.3f}, \"changed\": {}}}", p.name, p.ms, p.changed);
  });
  std::map<std::string, int64_t> sorted(layout.bindings.begin(), layout.bindings.end());
  std::string bindings_json =
      str_join(sorted, ", ", [](const auto& kv) { return fmt::format("\"{}\": {}", kv.first, kv.second); });
  return fmt::format(
      "{{\"groups\": {}, \"kernels\": {}, \"gemms\": {}, \"weight_prep\": {}, \"bindings\": {{{}}}, "
      "\"arena_bytes\": {}, \"no_reuse_bytes\": {}, \"lower_bound_bytes\": {}, \"passes\": [{}]}}",
      groups, kernels, gemms, weight_prep, bindings_json, layout.arena_bytes, layout.no_reuse_bytes,
      layout.lower_bound_bytes, passes_json);
}

}  // namespace kiln
