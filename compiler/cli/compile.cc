// `kiln compile FILE`: runs the pass pipeline and lowering, and prints the compile summary
// (groups, kernels, GEMMs, arena bytes against the lower bound, time per pass) or JSON;
// --dump-dir writes the IR after each pass, the memory plan and every kernel's IR. With
// --device cuda it also generates and NVRTC-compiles every kernel of the specialization for
// the --bind values (no GPU needed: running and tuning are what needs one), with --device
// cpu it JIT-compiles them; the dump then also holds each kernel's .cu and .ptx, or .ll.
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compiler/cli/commands.h"
#include "compiler/compile.h"
#include "compiler/guards.h"
#include "compiler/json.h"
#include "compiler/pipeline.h"
#include "passes/schedule_util.h"
#if KILN_WITH_CUDA_BACKEND
#include "runtime/cuda/backend.h"
#include "runtime/cuda/plan.h"
#endif
#if KILN_WITH_LLVM
#include "runtime/cpu/backend.h"
#endif

namespace kiln::cli {
namespace {

struct CompileCliOptions {
  std::string file;
  std::vector<std::string> binds;
  std::string dump_dir;
  std::string print_after;
  bool json = false;
  std::string device = "none";
  std::string mode = "default";
};

// What a device backend made of the kernels: one line each, and the statistics.
struct DeviceReport {
  std::string text;
  nlohmann::json json;
};

#if KILN_WITH_CUDA_BACKEND
DeviceReport compile_cuda(const CompiledModule& m, const Bindings& baked, const std::string& dump_dir) {
  cuda::SpecializationPlan plan = check(cuda::plan_specialization(m, baked));
  std::vector<const cuda::CudaKernel*> kernels = plan.kernels();
  std::string arch = cuda::default_arch();
  std::vector<cuda::NvrtcProgram> programs = cuda::nvrtc_programs(kernels, arch);
  KernelCacheStats before = cuda::kernel_cache().stats();
  std::vector<absl::StatusOr<std::shared_ptr<const CompiledKernel>>> out =
      cuda::nvrtc_compile_cached(cuda::kernel_cache(), programs);
  KernelCacheStats after = cuda::kernel_cache().stats();
  for (size_t i = 0; i < out.size(); ++i) {
    std::shared_ptr<const CompiledKernel> k = check(std::move(out[i]));
    if (!dump_dir.empty()) {
      std::filesystem::path dir = std::filesystem::path(dump_dir) / "cuda";
      if (absl::Status s = write_dump_file(dir / (programs[i].name + ".cu"), programs[i].source); !s.ok())
        throw CliError(status_message(s));
      if (absl::Status s = write_dump_file(dir / (programs[i].name + ".ptx"), k->ptx); !s.ok())
        throw CliError(status_message(s));
    }
  }
  DeviceReport r;
  r.text = str_cat("cuda ", arch, ": ", kernels.size(), " kernels, ", plan.gemms(), " cuBLASLt GEMMs; NVRTC ",
                   fmt::format("{:.1f}", after.compile_ms - before.compile_ms), " ms (", after.misses - before.misses,
                   " compiled, ", after.memory_hits + after.disk_hits - before.memory_hits - before.disk_hits,
                   " from the kernel cache)\n");
  for (const cuda::PlannedStep& st : plan.steps) {
    std::string what;
    if (st.kind == cuda::PlannedStep::Kind::Gemm) {
      const cuda::GemmLayout& l = st.gemm;
      what = str_cat("cuBLASLt ", dtype_name(l.dtype), " m=", l.m.to_string(), " n=", l.n.to_string(), " k=",
                     l.k.to_string(), " batch=", l.batch.to_string(), " epilogue ", gemm_epilogue_name(l.epilogue),
                     st.copy_a ? ", A gathered" : "", st.copy_b ? ", B gathered" : "",
                     st.epilogue_kernel ? str_cat(", f32 accumulator into ", st.kernel.name) : std::string());
    } else {
      const cuda::CudaKernel& k = st.kernel;
      std::string cache;  // how a row-cached kernel holds its row
      if (k.row_cache_chunks > 0)
        cache = k.row_threads > 0 ? str_cat(", row cached (", k.row_threads, " threads x ", k.row_cache_chunks, " chunks)")
                                  : str_cat(", row cached (at most ", k.row_cache_chunks,
                                            k.row_cache_chunks == 1 ? " chunk" : " chunks", " per thread)");
      what = str_cat(k.name, " ", cuda::launch_kind_name(k.launch), k.width > 1 ? str_cat(", ", k.width, " lanes") : std::string(),
                     cache, k.streams_l2 ? ", evict-first in L2 when its data exceed it" : "",
                     st.weight_prep ? ", weight prep" : "");
    }
    r.text += fmt::format("  group {:<3} {}\n", st.group, what);
  }
  r.json = {{"device", "cuda"},
            {"arch", arch},
            {"kernels", kernels.size()},
            {"gemms", plan.gemms()},
            {"nvrtc_ms", after.compile_ms - before.compile_ms},
            {"compiled", after.misses - before.misses},
            {"cache_hits", after.memory_hits + after.disk_hits - before.memory_hits - before.disk_hits}};
  return r;
}
#endif

#if KILN_WITH_LLVM
DeviceReport compile_cpu(std::shared_ptr<const CompiledModule> m, const BuildOptions& bo) {
  std::unique_ptr<Executable> exe = check(cpu::make_backend()->build(std::move(m), bo));
  const BuildStats& s = exe->build_stats();
  DeviceReport r;
  r.text = fmt::format("cpu: {} kernels, {} GEMMs; LLVM codegen {:.1f} ms, O2 + JIT {:.1f} ms ({} compiled, {} from "
                       "the JIT cache){}\n",
                       s.kernels, s.gemms, s.codegen_ms, s.compile_ms, s.cache_misses, s.cache_memory_hits,
                       bo.dump_dir.empty() ? "" : str_cat("; optimized LLVM IR in ", bo.dump_dir));
  for (const BuildStats::KernelTime& t : s.kernel_times)
    r.text += fmt::format("  {:<24}{}\n", t.name,
                          t.cached ? std::string("from the JIT cache")
                                   : fmt::format("codegen {:.2f} ms, O2 + JIT {:.1f} ms", t.codegen_ms, t.compile_ms));
  r.json = {{"device", "cpu"},          {"kernels", s.kernels},       {"gemms", s.gemms},
            {"codegen_ms", s.codegen_ms}, {"compile_ms", s.compile_ms}, {"compiled", s.cache_misses},
            {"cache_hits", s.cache_memory_hits}, {"kernel_times", nlohmann::ordered_json(s.kernel_times)}};
  return r;
}
#endif

// The device part of `kiln compile`, or why this build cannot do it.
DeviceReport compile_for_device(const CompileCliOptions& o, PipelineResult& r, const Bindings& given) {
  Device d = *parse_device(o.device);
  if (d == Device::Cuda) {
#if KILN_WITH_CUDA_BACKEND
    std::shared_ptr<CompiledModule> m = CompiledModule::make(std::move(r.state), std::move(r.kernels));
    return compile_cuda(*m, GuardSet::for_bindings(given, true).baked(), o.dump_dir);
#else
    throw CliError("--device cuda: this build of kiln has no CUDA backend (configured without the CUDA toolkit)");
#endif
  }
#if KILN_WITH_LLVM
  BuildOptions bo;
  bo.mode = *parse_mode(o.mode);
  bo.baked = GuardSet::for_bindings(given, true).baked();
  bo.example = r.layout_bindings;
  if (!o.dump_dir.empty()) bo.dump_dir = (std::filesystem::path(o.dump_dir) / "cpu").string();
  return compile_cpu(CompiledModule::make(std::move(r.state), std::move(r.kernels)), bo);
#else
  throw CliError("--device cpu: this build of kiln has no CPU backend (configured with KILN_WITH_LLVM=OFF)");
#endif
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

void run(const CompileCliOptions& o) {
  Graph g = load_verified(o.file);
  PipelineOptions po;
  po.bindings = parse_binds(g, o.binds);
  po.dump_dir = o.dump_dir;
  po.print_after = o.print_after;
  // Like MLIR's --mlir-print-ir-after: IR goes to stderr, so stdout stays the summary.
  po.print = [](const std::string& text) { std::fputs(text.c_str(), stderr); };
  // A developer's tool: a pass that leaves a broken graph is named here, whatever the build.
  po.verify_passes = true;
  std::string name = g.name();
  PipelineResult r = check(compile_to_kernels(std::move(g), po));
  if (o.json) {
    nlohmann::ordered_json j = r.summary;
    if (o.device != "none") j["backend"] = compile_for_device(o, r, po.bindings).json;
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
  cmd->add_option("--device", o->device,
                  "none (default: stop at kernel IR), cuda (generate and NVRTC-compile every kernel; needs no "
                  "GPU) or cpu (LLVM JIT)")
      ->check(CLI::IsMember({"none", "cpu", "cuda"}));
  cmd->add_option("--mode", o->mode, "default, reduce-overhead or max-autotune")
      ->check(CLI::IsMember({"default", "reduce-overhead", "max-autotune"}));
  cmd->callback([o] { run(*o); });
}

}  // namespace kiln::cli
