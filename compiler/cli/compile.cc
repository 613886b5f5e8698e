// `kiln compile FILE`: runs the pass pipeline and lowering, and prints the compile summary
// (groups, kernels, GEMMs, arena bytes against the lower bound, time per pass) or JSON;
// --dump-dir writes the IR after each pass, the memory plan and every kernel's IR.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "compiler/cli/commands.h"
#include "compiler/pipeline.h"
#include "passes/schedule_util.h"

namespace kiln::cli {
namespace {

struct CompileCliOptions {
  std::string file;
  std::vector<std::string> binds;
  std::string dump_dir;
  std::string print_after;
  bool json = false;
};

std::string bindings_text(const Bindings& given, const Bindings& used) {
  std::map<std::string, int64_t> sorted(used.begin(), used.end());
  return str_join(sorted, " ", [&](const auto& kv) {
    return str_cat(kv.first, "=", kv.second, given.contains(kv.first) ? "" : " (unbound: its lower bound)");
  });
}

// One line per kernel group: its kernel's name, kind, node count and iteration domain.
std::string kernels_text(const PipelineResult& r) {
  std::string s;
  for (size_t i = 0; i < r.kernels.size(); ++i) {
    const KernelGroup& grp = r.state.schedule.groups[i];
    const kir::Kernel& k = r.kernels[i];
    s += fmt::format("  {:<24}{:<14}{:>3} nodes  domain {}\n", k.name,
                     str_cat(grp.weight_prep ? "weight-prep " : "", group_kind_name(grp.kind)),
                     grp.nodes.size() + grp.prologue.size(), shape_to_string(k.domain));
  }
  return s;
}

void run(const CompileCliOptions& o) {
  Graph g = load_verified(o.file);
  PipelineOptions po;
  po.bindings = parse_binds(g, o.binds);
  po.dump_dir = o.dump_dir;
  po.print_after = o.print_after;
  // Like MLIR's --mlir-print-ir-after: IR goes to stderr, so stdout stays the summary.
  po.print = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  std::string name = g.name();
  PipelineResult r = check(compile_to_kernels(std::move(g), po));
  if (o.json) {
    std::puts(r.summary.to_json().c_str());
    return;
  }
  std::printf("graph %s%s%s\n", name.c_str(), r.layout_bindings.empty() ? "" : " with ",
              bindings_text(po.bindings, r.layout_bindings).c_str());
  std::fputs(r.summary.to_text().c_str(), stdout);
  std::fputs(kernels_text(r).c_str(), stdout);
  if (!o.dump_dir.empty()) std::printf("dumped to %s\n", o.dump_dir.c_str());
}

}  // namespace

void register_compile(CLI::App& app) {
  auto o = std::make_shared<CompileCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compile", "Run the optimization passes and lowering to kernel IR; print the compile summary");
  cmd->add_option("FILE", o->file, "the graph to compile (.kiln or .onnx)")->required();
  cmd->add_option("--bind", o->binds,
                  "a symbol's value for the memory figures, e.g. --bind B=8 (repeatable; an unbound symbol "
                  "takes its lower bound)");
  cmd->add_option("--dump-dir", o->dump_dir,
                  "write DIR/NN-<pass>.kiln after each pass, DIR/memory_plan.txt and DIR/kernels/<kernel>.kir "
                  "(written as the passes run, so a failing pass leaves the dumps before it)");
  cmd->add_option("--print-after", o->print_after,
                  str_cat("print on stderr the IR after this step, one of: ",
                          str_join(print_after_names(), ", ", [](const std::string& n) { return n; }),
                          " (lower: the kernel IR; plan_memory: with the memory plan)"));
  cmd->add_flag("--json", o->json, "print the summary as JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
