#include "compiler/pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "codegen/lower.h"
#include "ir/str.h"
#include "ir/verifier.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

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

// Replaces the kernel files of an earlier dump into the same directory.
absl::Status dump_kernels(const fs::path& dir, const std::vector<kir::Kernel>& kernels) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".kir") fs::remove(e.path(), ec);
    if (ec) return invalid_argument("cannot clear ", dir.string(), ": ", ec.message());
  }
  for (const kir::Kernel& k : kernels)
    if (absl::Status s = write_dump_file(dir / (k.name + ".kir"), kir::print_kernel(k)); !s.ok()) return s;
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& print_after_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n = PassManager::default_pass_names();
    n.push_back("lower");
    n.push_back("all");
    return n;
  }();
  return names;
}

absl::StatusOr<PipelineResult> compile_to_kernels(Graph g, const PipelineOptions& opts) {
  const std::vector<std::string>& names = print_after_names();
  if (!opts.print_after.empty() && std::find(names.begin(), names.end(), opts.print_after) == names.end())
    return invalid_argument("--print-after=", opts.print_after, ": no such pass (expected one of ",
                            str_join(names, ", ", [](auto& s) { return s; }), ")");
  if (absl::Status s = verify(g); !s.ok()) return s;
  PipelineResult r;
  absl::StatusOr<Bindings> b = complete_bindings(g, opts.bindings);
  if (!b.ok()) return b.status();
  r.layout_bindings = *std::move(b);

  r.state.graph = std::move(g);
  PassManager pm = PassManager::default_pipeline();
  PassOptions po{opts.dump_dir, opts.print_after, opts.print, r.layout_bindings};
  if (absl::Status s = pm.run(r.state, po); !s.ok()) return s;

  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<kir::Kernel>> kernels = lower_schedule(r.state.graph, r.state.schedule, opts.lower_log);
  if (!kernels.ok()) return kernels.status();
  r.kernels = *std::move(kernels);
  std::vector<PassStat> stats = pm.stats();
  stats.push_back({"lower", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                   !r.kernels.empty()});
  if (opts.print && (opts.print_after == "all" || opts.print_after == "lower")) {
    std::string text = "# after lower\n";
    for (const kir::Kernel& k : r.kernels) text += kir::print_kernel(k);
    opts.print(text);
  }
  if (!opts.dump_dir.empty())
    if (absl::Status s = dump_kernels(fs::path(opts.dump_dir) / "kernels", r.kernels); !s.ok()) return s;

  absl::StatusOr<CompileSummary> sum = summarize(r.state, stats, r.layout_bindings);
  if (!sum.ok()) return sum.status();
  r.summary = *std::move(sum);
  return r;
}

}  // namespace kiln
