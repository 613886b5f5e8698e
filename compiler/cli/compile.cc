// `kiln compile FILE`: runs the pass pipeline and lowering, and prints the compile summary
// (groups, kernels, GEMMs, arena bytes against the lower bound, time per pass) or JSON;
// --dump-dir writes the IR after each pass, the memory plan and every kernel's IR. With
// --device cuda it also generates and NVRTC-compiles every kernel of the specialization for
// the --bind values (no GPU needed: running and tuning are what needs one), with --device
// cpu it JIT-compiles them; the dump then also holds each kernel's .cu and .ptx, or .ll.
// --save writes that specialization, compiled, as a package (compiler/package.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "compiler/graph_picture.h"
#include "compiler/guards.h"
#include "compiler/json.h"
#include "compiler/package.h"
#include "compiler/pipeline.h"
#include "passes/schedule_util.h"

namespace kiln::cli {
namespace {

struct CompileCliOptions {
  std::string file;
  std::string float_type;
  std::vector<std::string> binds;
  std::string dump_dir;
  std::string print_after;
  bool json = false;
  std::string device = "none";
  std::string mode = "default";
  bool no_fused_attention = false;
  std::string graph_file;  // --graph: .dot, .svg or .html
  std::string save;        // --save: a .kilnpkg
};

// What a device made of the kernels: one line each, and the statistics.
struct DeviceReport {
  std::string text;
  nlohmann::json json;
};

// One line per group in group order: the kernel as the device runs it, or the GEMM's form.
std::string group_lines(const Program& p, const std::vector<std::string>& kernel_notes) {
  std::vector<std::pair<int, std::string>> lines;
  auto add = [&](const Step& st, bool prep) {
    if (st.kind == Step::Kind::Copy) return;
    std::string what = st.kind == Step::Kind::Kernel ? kernel_notes[p.kernel_steps[st.index].kernel] : p.describe(st);
    lines.push_back({st.group, str_cat(what, prep ? ", weight prep" : "")});
  };
  for (const Step& st : p.prep) add(st, true);
  for (const Step& st : p.steps) add(st, false);
  std::stable_sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string s;
  for (const auto& [group, what] : lines) s += fmt::format("  group {:<3} {}\n", group, what);
  return s;
}

// The device part of `kiln compile`: the specialization that calls with the given bindings
// use (symbols left unbound stay dynamic), built as compile() builds it, compiled only.
DeviceReport compile_for_device(const CompileCliOptions& o, PipelineResult& r, const Bindings& given) {
  Device d = *parse_device(o.device);
  std::unique_ptr<DeviceAdapter> device = check(make_device_adapter(d, 0, /*compile_only=*/true));
  std::optional<DumpWriter> dump;
  if (!o.dump_dir.empty()) dump = DumpWriter(o.dump_dir).sub(o.device);
  std::shared_ptr<CompiledModule> m = CompiledModule::make(std::move(r.state), std::move(r.kernels));
  std::unique_ptr<Executor> exe =
      check(specialize(m, *device, GuardSet::for_bindings(given, true).baked(), *parse_mode(o.mode), dump));
  const Program& p = exe->program();
  BuildStats s = exe->build_stats();
  std::vector<std::string> notes;
  for (size_t k = 0; k < p.kernels.size(); ++k) notes.push_back(exe->describe_kernel(static_cast<int>(k)));
  DeviceReport rep;
  if (d == Device::Cuda) {
    std::string arch = device->arch();
    rep.text = str_cat("cuda ", arch, ": ", s.kernels, " kernels, ", p.gemms.size(), " cuBLASLt GEMMs; NVRTC ",
                       fmt::format("{:.1f}", s.compile_ms), " ms (", s.cache_misses, " compiled, ",
                       s.cache_memory_hits + s.cache_disk_hits, " from the kernel cache",
                       s.kernels_shared > 0 ? str_cat(", ", s.kernels_shared, " shared with an identical kernel") : "", ")\n");
    rep.json = {{"device", "cuda"},      {"arch", arch},          {"kernels", s.kernels},
                {"gemms", p.gemms.size()}, {"nvrtc_ms", s.compile_ms}, {"compiled", s.cache_misses},
                {"cache_hits", s.cache_memory_hits + s.cache_disk_hits}};
    rep.text += group_lines(p, notes);
    return rep;
  }
  rep.text = fmt::format("cpu: {} kernels, {} GEMMs; LLVM codegen {:.1f} ms, O2 + JIT {:.1f} ms ({} compiled, {} from "
                         "the JIT cache){}\n",
                         s.kernels, s.gemms, s.codegen_ms, s.compile_ms, s.cache_misses,
                         s.cache_memory_hits + s.cache_disk_hits,
                         dump ? str_cat("; optimized LLVM IR in ", dump->dir().string()) : std::string());
  for (const BuildStats::KernelTime& t : s.kernel_times)
    rep.text += fmt::format("  {:<24}{}\n", t.name,
                            t.cached ? std::string("from the JIT cache")
                                     : fmt::format("codegen {:.2f} ms, O2 + JIT {:.1f} ms", t.codegen_ms, t.compile_ms));
  rep.text += group_lines(p, notes);
  rep.json = {{"device", "cpu"},            {"kernels", s.kernels},         {"gemms", s.gemms},
              {"codegen_ms", s.codegen_ms}, {"compile_ms", s.compile_ms},   {"compiled", s.cache_misses},
              {"cache_hits", s.cache_memory_hits}, {"kernel_times", nlohmann::ordered_json(s.kernel_times)}};
  return rep;
}

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

// --graph: the picture of `before` and `r` in the format its extension names, written to a
// temporary file beside it and renamed into place.
void write_picture(const std::string& path, const Graph& before, const PipelineResult& r) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::string text = ext == ".dot" ? graph_dot(before, r)
                     : ext == ".svg" ? check(render_svg(graph_dot(before, r)))
                                     : check(graph_html(before, r));
  std::string tmp = path + ".kiln-tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    if (!f.flush()) throw CliError(str_cat("--graph ", path, ": cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw CliError(str_cat("--graph ", path, ": ", ec.message()));
  }
}

// --save: compile() for the device (compile only: CUDA needs no GPU), the specialization for
// `bindings` built, the package written and read back; what it holds, as text and JSON.
DeviceReport save_package(const CompileCliOptions& o, const Graph& source, const Bindings& bindings) {
  CompileOptions co{.mode = *parse_mode(o.mode),
                    .device = o.device == "none" ? Device::Auto : *parse_device(o.device),
                    .compile_only = true,
                    .fused_attention = !o.no_fused_attention};
  CompiledGraph cg = check(compile(source, co));
  auto or_fail = [&](const absl::Status& s) {
    if (!s.ok()) throw CliError(str_cat("--save ", o.save, ": ", status_message(s)));
  };
  or_fail(cg.warm_up(bindings));
  or_fail(save_compiled(source, cg, o.save));
  Package p = check(read_package(o.save));
  std::error_code ec;
  auto bytes = static_cast<int64_t>(std::filesystem::file_size(o.save, ec));
  std::vector<std::string> guards;
  for (const Package::Specialization& sp : p.specializations) guards.push_back(sp.guards);
  DeviceReport rep;
  rep.text = str_cat("saved ", o.save, " (", bytes, " bytes): ", p.device, " ", p.target, ", ", p.specializations.size(),
                     " specialization", p.specializations.size() == 1 ? "" : "s", " (",
                     str_join(guards, "; ", [](const std::string& g) { return g.empty() ? std::string("no guards") : g; }),
                     "), ", p.kernels.size(), " compiled kernels, ", p.tune.size(), " tuning choices\n");
  rep.json = {{"path", o.save},        {"bytes", bytes},           {"device", p.device},
              {"target", p.target},    {"specializations", guards}, {"kernels", p.kernels.size()},
              {"tune_records", p.tune.size()}};
  return rep;
}

void run(const CompileCliOptions& o) {
  std::string picture_ext = std::filesystem::path(o.graph_file).extension().string();
  if (!o.graph_file.empty() && picture_ext != ".dot") {
    if (absl::Status s = graphviz_available(); !s.ok()) throw CliError(str_cat("--graph ", o.graph_file, ": ", status_message(s)));
  }
  Graph g = load_verified(o.file, o.float_type);
  // --save: compiled as its package will hold it, so that the kernels below are the package's.
  if (!o.save.empty()) g = check(package_graph(g));
  std::optional<Graph> before;
  if (!o.graph_file.empty() || !o.save.empty()) before = g.clone();
  PipelineOptions po;
  po.bindings = parse_binds(g, o.binds);
  po.dump_dir = o.dump_dir;
  po.print_after = o.print_after;
  // Like MLIR's --mlir-print-ir-after: IR goes to stderr, so stdout stays the summary.
  po.print = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  // A developer's tool: a pass that leaves a broken graph is named here, whatever the build.
  po.verify_passes = true;
  // Attention stays one fused step where the device runs its form (as compile() does).
  if (o.device != "none" && !o.no_fused_attention)
    po.fused_attention = check(make_device_adapter(*parse_device(o.device), 0, true))->target().supports_attention;
  std::string name = g.name();
  PipelineResult r = check(compile_to_kernels(std::move(g), po));
  if (!o.graph_file.empty()) write_picture(o.graph_file, *before, r);
  Bindings layout_bindings = r.layout_bindings;
  if (o.json) {
    nlohmann::ordered_json j = r.summary;
    if (o.device != "none") j["backend"] = compile_for_device(o, r, po.bindings).json;
    if (!o.save.empty()) j["package"] = save_package(o, *before, layout_bindings).json;
    std::puts(json_text(j, 2).c_str());
    return;
  }
  std::printf("graph %s%s%s\n", name.c_str(), r.layout_bindings.empty() ? "" : " with ",
              bindings_text(po.bindings, r.layout_bindings).c_str());
  std::fputs(r.summary.to_text().c_str(), stdout);
  std::fputs(kernels_text(r).c_str(), stdout);
  if (o.device != "none") {
    std::fflush(stdout);
    std::fputs(compile_for_device(o, r, po.bindings).text.c_str(), stdout);
    if (o.mode != "default")
      std::printf("mode %s: applies when the graph runs (CUDA graph capture, autotuning on the device)\n", o.mode.c_str());
  }
  if (!o.save.empty()) {
    std::fflush(stdout);
    std::fputs(save_package(o, *before, layout_bindings).text.c_str(), stdout);
  }
  if (!o.dump_dir.empty()) std::printf("dumped to %s\n", o.dump_dir.c_str());
  if (!o.graph_file.empty()) std::printf("graph before and after fusion drawn in %s\n", o.graph_file.c_str());
}

}  // namespace

void register_compile(CLI::App& app) {
  auto o = std::make_shared<CompileCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compile", "Run the optimization passes and lowering to kernel IR; print the compile summary");
  cmd->add_option("FILE", o->file, "the graph to compile (.kiln or .onnx)")->required();
  add_float_option(cmd, &o->float_type);
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
  cmd->add_option("--graph", o->graph_file,
                  "draw the graph before fusion beside the graph after it (one box per kernel, GEMMs marked, edges "
                  "with dtype and shape, arena offsets in tooltips) into FILE.dot, FILE.svg or FILE.html (one "
                  "self-contained page; .svg and .html need Graphviz's dot)")
      ->check([](const std::string& f) {
        std::string ext = std::filesystem::path(f).extension().string();
        return ext == ".dot" || ext == ".svg" || ext == ".html" ? std::string()
                                                                : std::string("--graph takes a .dot, .svg or .html file");
      });
  cmd->add_option("--device", o->device,
                  "none (default: stop at kernel IR), cuda (generate and NVRTC-compile every kernel; needs no "
                  "GPU) or cpu (LLVM JIT)")
      ->check(CLI::IsMember({"none", "cpu", "cuda"}));
  cmd->add_flag("--no-fused-attention", o->no_fused_attention,
                "decompose every attention into GEMM -> softmax -> GEMM, even where --device runs its form fused");
  cmd->add_option("--save", o->save,
                  "also compile for --device (none: CUDA where a GPU is present, else the CPU; CUDA needs no GPU) "
                  "the specialization for the --bind values and write it into FILE.kilnpkg: the graph, options, "
                  "guards, every kernel's compiled code and the tuning choices, versioned and checksummed, so that "
                  "`kiln run FILE.kilnpkg` and kiln::load_compiled() start without compiling")
      ->check([](const std::string& f) {
        return std::filesystem::path(f).extension() == ".kilnpkg" ? std::string() : std::string("--save takes a .kilnpkg file");
      });
  cmd->add_option("--mode", o->mode, "default, reduce-overhead or max-autotune")
      ->check(CLI::IsMember({"default", "reduce-overhead", "max-autotune"}));
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
