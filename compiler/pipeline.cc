#include "compiler/pipeline.h"

#include <algorithm>
#include <cstdlib>

#include "codegen/lower.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

// The given values, checked against the graph's symbols, plus each unbound symbol's lower
// bound.
absl::StatusOr<Bindings> complete_bindings(const Graph& g, const Bindings& given) {
  std::vector<std::string> syms = g.symbols();
  for (const auto& [name, value] : given)
    if (std::find(syms.begin(), syms.end(), name) == syms.end())
      return invalid_argument("graph ", g.name(), " has no symbol ", name,
                              syms.empty() ? std::string(" (it has none)")
                                           : str_cat(" (its symbols: ", str_join(syms, ", ", [](auto& s) { return s; }), ")"));
  Bindings b = given;
  for (const std::string& s : syms) b.emplace(s, g.symbol_info(s).min);
  return b;
}

// Lowering's result as text: every kernel, each in its own file of the dump's kernels/.
std::vector<PassText> show_kernels(const CompiledModule& m) {
  std::vector<PassText> texts;
  for (const kir::Kernel& k : m.kernels) texts.push_back({kir::print_kernel(k), str_cat("kernels/", k.name, ".kir")});
  return texts;
}

// Counts over the schedule and the memory plan's layout under `b`.
absl::StatusOr<CompileSummary> summarize(const CompileState& st, std::vector<PassStat> passes, const Bindings& b) {
  CompileSummary sum;
  sum.passes = std::move(passes);
  sum.groups = static_cast<int>(st.schedule.groups.size());
  for (const KernelGroup& g : st.schedule.groups) {
    if (g.weight_prep) ++sum.weight_prep;
    else if (g.kind == KernelGroup::Kind::Gemm) ++sum.gemms;
    else if (g.kind == KernelGroup::Kind::Attention) ++sum.attentions;
    else if (g.kind == KernelGroup::Kind::Extern) ++sum.externs;
    else if (g.kind == KernelGroup::Kind::Collective) ++sum.collectives;
    else ++sum.kernels;
  }
  KILN_ASSIGN_OR_RETURN(sum.layout, st.memory.layout(b));
  return sum;
}

}  // namespace

PassManager<CompiledModule> default_pipeline(const Bindings& layout, std::function<void(const std::string&)> lower_log,
                                             bool (*fused_attention)(const AttentionForm&)) {
  PassManager<CompiledModule> pm;
  KeepAttention keep;
  if (fused_attention) keep = [fused_attention](const Node& n) {
    absl::StatusOr<AttentionForm> f = attention_form(n);
    return f.ok() && fused_attention(*f);
  };
  pm.nest(graph_pipeline(layout, std::move(keep)), &CompiledModule::state);
  pm.add({std::string(kLowerPass),
          [lower_log = std::move(lower_log)](CompiledModule& m) -> absl::StatusOr<bool> {
            KILN_ASSIGN_OR_RETURN(m.kernels, lower_schedule(m.state.graph, m.state.schedule, lower_log));
            return !m.kernels.empty();
          },
          nullptr, show_kernels});
  return pm;
}

const std::vector<std::string>& print_after_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n = default_pipeline().pass_names();
    n.push_back("all");
    return n;
  }();
  return names;
}

bool verify_passes_by_default() {
#ifndef NDEBUG
  return true;
#else
  static const bool asked = [] {
    const char* v = std::getenv("KILN_VERIFY");
    return v && std::string_view(v) == "1";
  }();
  return asked;
#endif
}

std::string CompileSummary::to_text() const {
  auto pct = [](int64_t a, int64_t b) { return b == 0 ? 0.0 : 100.0 * (a - b) / b; };
  std::string s =
      str_cat("groups ", groups, ": ", kernels, " kernels, ", gemms, " GEMMs, ",
              attentions > 0 ? str_cat(attentions, " fused attention, ") : std::string(),
              externs > 0 ? str_cat(externs, " extern, ") : std::string(),
              collectives > 0 ? str_cat(collectives, " collective, ") : std::string(), weight_prep, " weight-prep\n");
  s += str_cat("arena ", layout.arena_bytes, " bytes; lower bound ", layout.lower_bound_bytes, " (",
               fmt::format("{:+.1f}%", pct(layout.arena_bytes, layout.lower_bound_bytes)), "); without reuse ",
               layout.no_reuse_bytes, "\n");
  for (const PassStat& p : passes)
    s += fmt::format("  {:<18}{:8.3f} ms{}\n", p.name, p.ms, p.changed ? "" : "  (no change)");
  return s;
}

absl::StatusOr<PipelineResult> compile_to_kernels(Graph g, const PipelineOptions& opts) {
  const std::vector<std::string>& names = print_after_names();
  if (!opts.print_after.empty() && std::find(names.begin(), names.end(), opts.print_after) == names.end())
    return invalid_argument("--print-after=", opts.print_after, ": no such pass (expected one of ",
                            str_join(names, ", ", [](auto& s) { return s; }), ")");
  PipelineResult r;
  KILN_ASSIGN_OR_RETURN(r.layout_bindings, complete_bindings(g, opts.bindings));

  PassManager<CompiledModule> pm = default_pipeline(r.layout_bindings, opts.lower_log, opts.fused_attention);
  // Added outermost first. After a step the innermost runs first: the timing covers the step
  // alone, and a result is verified before it is printed or dumped.
  if (!opts.dump_dir.empty()) {
    DumpWriter dump(opts.dump_dir);
    KILN_RETURN_IF_ERROR(dump.create());
    pm.instrument(std::make_unique<DumpEachPass>(dump));
  }
  if (opts.print && !opts.print_after.empty())
    pm.instrument(std::make_unique<PrintAfterPass>(opts.print_after, opts.print));
  if (opts.verify_passes) pm.instrument(std::make_unique<VerifyEachPass>());
  PassTiming& timing = pm.instrument(std::make_unique<PassTiming>());

  CompiledModule m;
  m.state.graph = std::move(g);
  KILN_RETURN_IF_ERROR(pm.run(m));
  KILN_ASSIGN_OR_RETURN(r.summary, summarize(m.state, timing.stats(), r.layout_bindings));
  r.state = std::move(m.state);
  r.kernels = std::move(m.kernels);
  return r;
}

}  // namespace kiln
