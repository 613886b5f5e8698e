// `kiln run FILE`: runs a graph through the reference evaluator, or compiled for the CPU or
// CUDA (--device), on random or .npy inputs and prints a summary of each output (or JSON),
// optionally saving outputs as .npy files; --check compares compiled with reference. A
// .kilnpkg (kiln compile --save) runs compiled as it was saved, its kernels not compiled again.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "compiler/json.h"
#include "compiler/package.h"
#include "ir/compare.h"
#include "compiler/summary.h"
#include "ir/npy.h"
#include "ir/reference.h"
#include "ir/str.h"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

struct RunOptions {
  std::string file;
  std::string float_type;
  std::vector<std::string> binds;
  uint64_t seed = 0;
  std::string inputs_dir;
  std::string save_dir;
  bool json = false;
  std::string device = "reference";
  std::string mode = "default";
  bool check = false;
  bool device_given = false, mode_given = false, float_given = false;
};

// The arguments the caller must supply: inputs and parameters without data.
std::vector<const Value*> needed_args(const Graph& g) {
  std::vector<const Value*> out;
  for (const Value* v : g.args())
    if (v->is_input() || !v->data()) out.push_back(v);
  return out;
}

// NumPy has no bf16, and f16 data often arrives as float32 too.
// Whether a file of dtype `file` may feed an argument of dtype `t`, rounded: bf16/f16 from
// float32, and any float type from float64 (NumPy's default).
bool rounded_ok(DType t, DType file) {
  return t != file && ((file == DType::f32 && (t == DType::bf16 || t == DType::f16)) || (file == DType::f64 && is_float(t)));
}

// Reads DIR/<arg>.npy for every needed argument; float arguments may come as float32 or
// float64 and are rounded. Returns the tensors and the symbol values their shapes imply.
TensorMap read_inputs(const Graph& g, const std::string& dir, Bindings& bindings) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw CliError(str_cat("--inputs ", dir, ": not a directory"));
  std::vector<const Value*> args = needed_args(g);
  std::string expected = str_join(args, ", ", [](const Value* v) { return v->name() + ".npy"; });
  std::set<std::string> names;
  for (const Value* v : args) names.insert(v->name());
  std::vector<fs::path> files;
  // increment(ec), not a range-for, whose ++ throws on an I/O error.
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".npy") files.push_back(it->path());
  if (ec) throw CliError(str_cat("--inputs ", dir, ": ", ec.message()));
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files)
    if (!names.count(f.stem().string()))
      throw CliError(str_cat(f.string(), ": matches no input or parameter of graph ", g.name(),
                             " (expected ", expected, ")"));

  TensorMap tensors;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const Value* v : args) {
    std::string path = (fs::path(dir) / (v->name() + ".npy")).string();
    std::string what = str_cat(v->is_input() ? "input %" : "parameter %", v->name(), ": ", v->type().to_string());
    if (!fs::exists(path, ec)) throw CliError(str_cat(path, ": missing; it must hold ", what));
    HostTensor t = check(read_npy(path));
    bool rounded = rounded_ok(v->dtype(), t.dtype());
    if (t.dtype() != v->dtype() && !rounded)
      throw CliError(str_cat(path, ": holds ", t.type_string(), ", whose dtype does not fit ", what,
                             is_float(v->dtype()) ? " (or float64)" : ""));
    bool same_static = t.shape().size() == v->shape().size();
    for (size_t i = 0; same_static && i < t.shape().size(); ++i)
      if (auto c = v->shape()[i].constant(); c && *c != t.shape()[i]) same_static = false;
    if (!same_static)
      throw CliError(str_cat(path, ": holds ", t.type_string(), ", whose shape does not fit ", what));
    if (rounded) {
      HostTensor r(v->dtype(), t.shape());
      for (int64_t i = 0; i < t.numel(); ++i) r.set(i, t.get(i));
      t = std::move(r);
    }
    shapes[v->name()] = t.shape();
    tensors.emplace(v->name(), std::move(t));
  }
  // Symbols must agree across files (B from x.npy equals B from mask.npy).
  absl::StatusOr<Bindings> from_files = bind_symbols(g, shapes);
  if (!from_files.ok()) throw CliError(str_cat("--inputs ", dir, ": ", status_message(from_files.status())));
  for (const auto& [sym, value] : bindings) {
    auto it = from_files->find(sym);
    if (it != from_files->end() && it->second != value)
      throw CliError(str_cat("--bind ", sym, "=", value, " disagrees with the input files, which give ", sym, "=",
                             it->second));
  }
  bindings = *from_files;
  return tensors;
}

// Writes every output into a staging folder inside `dir`, then moves them into place, so
// that a failure leaves no output file behind.
void save_outputs(const Graph& g, const std::vector<HostTensor>& outs, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw CliError(str_cat("--save-outputs ", dir, ": ", ec.message()));
  fs::path staging = fs::path(dir) / ".kiln-run-staging";
  fs::remove_all(staging, ec);
  fs::create_directory(staging, ec);
  if (ec) throw CliError(str_cat("--save-outputs ", dir, ": cannot create ", staging.string(), ": ", ec.message()));
  std::vector<std::string> names;
  for (size_t i = 0; i < outs.size(); ++i) {
    std::string name = g.outputs()[i]->name() + ".npy";
    absl::Status s = write_npy((staging / name).string(), outs[i]);
    if (!s.ok()) {
      fs::remove_all(staging, ec);
      throw CliError(status_message(s));
    }
    names.push_back(name);
  }
  for (const std::string& name : names) {
    fs::rename(staging / name, fs::path(dir) / name, ec);
    if (ec) {
      std::string msg = str_cat("--save-outputs: cannot move ", name, " into ", dir, ": ", ec.message());
      fs::remove_all(staging, ec);
      throw CliError(msg);
    }
  }
  fs::remove_all(staging, ec);
}

// A package names its device and mode: options that disagree are errors, not ignored.
Package read_package_for(const RunOptions& o) {
  Package p = check(read_package(o.file));
  if (o.float_given) throw CliError(str_cat(o.file, ": --float applies when compiling; the package is compiled"));
  if (o.device_given && o.device != p.device)
    throw CliError(str_cat(o.file, ": the package was compiled for ", p.device, ", not --device ", o.device));
  if (o.mode_given && o.mode != mode_name(p.options.mode))
    throw CliError(str_cat(o.file, ": the package was compiled in mode ", mode_name(p.options.mode), ", not --mode ", o.mode));
  return p;
}

void run(const RunOptions& in) {
  RunOptions o = in;
  std::optional<Package> package;
  if (fs::path(o.file).extension() == ".kilnpkg") {
    package = read_package_for(o);
    o.device = package->device;
    o.mode = mode_name(package->options.mode);
  }
  Graph g = package ? package->graph.clone() : load_verified(o.file, o.float_type);
  for (const Value* v : g.outputs())
    if (!o.save_dir.empty() && (v->name().find('/') != std::string::npos || v->name().starts_with(".")))
      throw CliError(str_cat("--save-outputs: output %", v->name(), " does not make a file name"));
  if (o.check && o.device == "reference")
    throw CliError("--check compares a compiled run with the reference evaluator: give --device cpu or cuda");
  Bindings bindings = parse_binds(g, o.binds);
  TensorMap args = o.inputs_dir.empty() ? random_inputs(g, bindings, o.seed, " (or --inputs DIR)") : read_inputs(g, o.inputs_dir, bindings);
  std::vector<HostTensor> outs;
  std::optional<CompileStats> stats;
  if (o.device == "reference") {
    outs = check(evaluate(g, args));
  } else {
    CompiledGraph cg = package ? check(load_compiled(*package))
                               : check(compile(g, {.mode = *parse_mode(o.mode), .device = *parse_device(o.device)}));
    outs = check(run_host(cg, args));
    stats = cg.stats();
  }
  std::vector<Comparison> checks;
  if (o.check) {
    std::vector<HostTensor> want = check(evaluate(g, args));
    for (size_t i = 0; i < outs.size(); ++i)
      checks.push_back(compare_tensors(want[i], outs[i], default_tolerance(want[i].dtype())));
  }
  bool mismatch = std::any_of(checks.begin(), checks.end(), [](const Comparison& c) { return !c.ok; });
  if (!o.save_dir.empty()) save_outputs(g, outs, o.save_dir);

  std::map<std::string, int64_t> sorted(bindings.begin(), bindings.end());
  if (o.json) {
    nlohmann::ordered_json j;
    j["graph"] = g.name();
    j["bindings"] = nlohmann::ordered_json::object();
    for (const auto& [sym, value] : sorted) j["bindings"][sym] = value;
    if (o.inputs_dir.empty()) j["seed"] = o.seed;
    else j["inputs"] = o.inputs_dir;
    j["device"] = o.device;
    if (package) j["package"] = {{"path", o.file}, {"target", package->target}, {"kernels", package->kernels.size()}};
    if (stats) {
      j["mode"] = o.mode;
      j["stats"] = *stats;
    }
    j["outputs"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < outs.size(); ++i) {
      TensorSummary s = summarize(outs[i]);
      j["outputs"].push_back({{"name", g.outputs()[i]->name()},
                              {"dtype", std::string(dtype_name(s.dtype))},
                              {"shape", s.shape},
                              {"min", s.min},
                              {"max", s.max},
                              {"mean", s.mean},
                              {"checksum", checksum_hex(s.checksum)}});
      if (o.check)
        j["outputs"].back()["check"] = {{"ok", checks[i].ok},
                                        {"max_abs_err", checks[i].max_abs_err},
                                        {"max_rel_err", checks[i].max_rel_err},
                                        {"message", checks[i].message}};
    }
    std::puts(json_text(j, 2).c_str());
    if (mismatch) throw CliError("compiled outputs differ from the reference");
    return;
  }
  std::string binds = str_join(sorted, " ", [](const auto& kv) { return str_cat(kv.first, "=", kv.second); });
  std::printf("graph %s%s%s, %s\n", g.name().c_str(), binds.empty() ? "" : " with ", binds.c_str(),
              o.inputs_dir.empty() ? str_cat("random inputs (seed ", o.seed, ")").c_str()
                                   : str_cat("inputs from ", o.inputs_dir).c_str());
  if (package)
    std::printf("loaded %s: %s %s, %zu specialization%s, %zu compiled kernels\n", o.file.c_str(), package->device.c_str(),
                package->target.c_str(), package->specializations.size(), package->specializations.size() == 1 ? "" : "s",
                package->kernels.size());
  if (stats) std::printf("compiled for %s (%s): %s", o.device.c_str(), o.mode.c_str(), stats->to_text().c_str());
  for (size_t i = 0; i < outs.size(); ++i) {
    std::printf("%s\n", format_summary(g.outputs()[i]->name(), summarize(outs[i])).c_str());
    if (o.check)
      std::printf("  check: %s\n", checks[i].ok ? fmt::format("matches the reference (max abs err {:.3g}, max rel err {:.3g})",
                                                               checks[i].max_abs_err, checks[i].max_rel_err)
                                                           .c_str()
                                                     : str_cat("DIFFERS: ", checks[i].message).c_str());
  }
  std::fflush(stdout);
  if (mismatch) throw CliError("compiled outputs differ from the reference");
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Run a graph (reference evaluator, or compiled for cpu/cuda) and summarize its outputs");
  cmd->add_option("FILE", o->file,
                  "the graph to run (.kiln or .onnx), or a compiled package (.kilnpkg, from kiln compile --save: runs "
                  "on its device and mode without compiling its kernels again)")
      ->required();
  add_float_option(cmd, &o->float_type);
  CLI::Option* float_opt = cmd->get_option("--float");
  cmd->add_option("--bind", o->binds, "a symbol's value, e.g. --bind B=8 (repeatable)");
  cmd->add_option("--seed", o->seed, "seed of the random inputs (default 0): floats uniform in [-1, 1), "
                 "2-D parameters scaled by 1/sqrt(fan-in)");
  cmd->add_option("--inputs", o->inputs_dir,
                  "read inputs and parameters from DIR/<name>.npy instead (bf16 and f16 as float32); "
                  "their shapes bind the symbols");
  cmd->add_option("--save-outputs", o->save_dir, "write each output to DIR/<name>.npy (bf16 as float32)");
  cmd->add_flag("--json", o->json, "print the summary as JSON (with the compile statistics of a compiled run)");
  CLI::Option* device_opt =
      cmd->add_option("--device", o->device, "reference (default: the reference evaluator), cpu or cuda (compiled)")
          ->check(CLI::IsMember({"reference", "cpu", "cuda"}));
  CLI::Option* mode_opt = cmd->add_option("--mode", o->mode, "compile mode: default, reduce-overhead or max-autotune")
                              ->check(CLI::IsMember({"default", "reduce-overhead", "max-autotune"}));
  cmd->add_flag("--check", o->check,
                "also run the reference evaluator and compare every output within its dtype's tolerance; "
                "exit status 1 and the worst element on a mismatch");
  cmd->callback([o, float_opt, device_opt, mode_opt] {
    o->float_given = float_opt->count() > 0;
    o->device_given = device_opt->count() > 0;
    o->mode_given = mode_opt->count() > 0;
    run(*o);
  });
}

}  // namespace kiln::cli
