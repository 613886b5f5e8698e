// kiln's demo (`./dev.sh demo`): a Llama-style decoder layer traced from C++ (examples/
// models.cc) is compiled with kiln::compile on the best device present (CUDA when a GPU is
// there, else the CPU). Prints what the compiler made of it (ops fused into kernels, GEMMs,
// the arena against its lower bound), checks the compiled result against the reference
// evaluator and times a compiled call against a reference call.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "compiler/compile.h"
#include "examples/models.h"
#include "frontends/trace/trace.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "passes/schedule_util.h"

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::string mib(int64_t bytes) { return fmt::format("{:.2f} MiB", double(bytes) / (1 << 20)); }

// "rms_norm" for a group of one op, "mul+add+cast (5 ops)" for more: the source ops of a
// kernel, in order, each named once.
std::string group_ops(const kiln::KernelGroup& g) {
  std::vector<std::string> names;
  for (const kiln::Node* n : g.nodes) {
    std::string name(kiln::op_name(n->op()));
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  std::string s = kiln::str_join(names, "+", [](const std::string& n) { return n; });
  return g.nodes.size() > 1 ? kiln::str_cat(s, " (", g.nodes.size(), " ops)") : s;
}

int fail(const absl::Status& s) {
  std::fprintf(stderr, "demo: %s\n", kiln::status_message(s).c_str());
  return 1;
}

}  // namespace

int main() try {
  // Half the width of examples/decoder_layer.cc's layer, so that the reference evaluator (plain
  // loops) takes about a second.
  const kiln::examples::DecoderConfig config{.dim = 1024, .heads = 8, .hidden = 2816};
  const kiln::Bindings bindings{{"B", 1}, {"T", 8}};
  kiln::Graph graph = kiln::examples::trace_decoder_layer(config);
  std::printf("decoder_layer: a Llama-style decoder layer (dim %lld, %lld heads, MLP %lld, bf16) traced from C++; "
              "B=1, T=8\n",
              (long long)config.dim, (long long)config.heads, (long long)config.hidden);

  auto start = Clock::now();
  absl::StatusOr<kiln::CompiledGraph> cg = kiln::compile(graph);  // Device::Auto
  if (!cg.ok()) return fail(cg.status());
  if (absl::Status s = cg->warm_up(bindings); !s.ok()) return fail(s);
  double compile_ms = ms_since(start);
  kiln::DeviceId dev = cg->device();
  kiln::CompileStats stats = cg->stats();
  std::printf("device: %s (%s)\n", kiln::device_name(dev).c_str(),
              dev.type == kiln::DeviceType::cuda ? "a GPU is present" : "no CUDA device: the CPU backend");
  std::printf("compile: %.0f ms (passes %.0f ms, lowering %.0f ms, codegen %.0f ms, %s %.0f ms; kernel cache: "
              "%lld compiled, %lld from disk)\n",
              compile_ms, stats.pass_ms, stats.lower_ms, stats.codegen_ms,
              dev.type == kiln::DeviceType::cuda ? "NVRTC" : "LLVM O2 + JIT", stats.compile_ms,
              (long long)stats.cache_misses, (long long)stats.cache_disk_hits);

  // Fusion: the traced ops, and the kernels and GEMMs the pipeline made of them.
  const kiln::CompiledModule& m = cg->module();
  const auto& groups = m.state.schedule.groups;
  int gemm_groups = 0, weight_prep = 0;
  for (const kiln::KernelGroup& g : groups) {
    gemm_groups += g.kind == kiln::KernelGroup::Kind::Gemm;
    weight_prep += g.weight_prep;
  }
  std::printf("fusion: %zu traced ops -> %zu kernel groups (%d GEMMs with their fused prologue and epilogue, %d "
              "weight prep run once); %d kernels compiled, %d launches per call\n",
              graph.nodes().size(), groups.size(), gemm_groups, weight_prep, stats.kernels, stats.launches_per_call);
  for (size_t i = 0; i < m.kernels.size(); ++i) {
    const kiln::KernelGroup& g = groups[i];
    std::string kind = kiln::str_cat(g.weight_prep ? "weight-prep " : "", kiln::group_kind_name(g.kind));
    std::printf("  %-12s %-23s %s\n", m.kernels[i].name.c_str(), kind.c_str(), group_ops(g).c_str());
  }
  absl::StatusOr<kiln::ArenaLayout> layout = m.state.memory.layout(bindings);
  if (!layout.ok()) return fail(layout.status());
  std::printf("memory: arena %s for %zu intermediates (lower bound %s: the most live at one step; %s without reuse)\n",
              mib(layout->arena_bytes).c_str(), m.state.memory.buffers.size(), mib(layout->lower_bound_bytes).c_str(),
              mib(layout->no_reuse_bytes).c_str());

  // Check: the same random inputs through the compiled graph and the reference evaluator.
  kiln::TensorMap args = kiln::random_args(graph, bindings, /*seed=*/0);
  kiln::scale_weights_by_fan_in(graph, args);
  start = Clock::now();
  auto want = kiln::evaluate(graph, args);
  double reference_ms = ms_since(start);
  if (!want.ok()) return fail(want.status());
  auto got = kiln::run_host(*cg, args);
  if (!got.ok()) return fail(got.status());
  kiln::Comparison c = kiln::compare_tensors((*want)[0], (*got)[0], kiln::default_tolerance(kiln::DType::bf16));
  std::printf("check: %s (max abs err %.3g, max rel err %.3g)\n",
              c.ok ? "matches the reference evaluator" : c.message.c_str(), c.max_abs_err, c.max_rel_err);

  // Time: arguments resident on the device; the last output copied back ends the timing.
  std::vector<kiln::Tensor> device_args;
  for (const kiln::Value* a : m.args) {
    auto t = kiln::Tensor::from_host(args.at(a->name()), dev);
    if (!t.ok()) return fail(t.status());
    device_args.push_back(*std::move(t));
  }
  auto call = [&]() -> absl::Status {
    auto out = (*cg)(device_args);
    return out.ok() ? absl::OkStatus() : out.status();
  };
  for (int i = 0; i < 3; ++i)
    if (absl::Status s = call(); !s.ok()) return fail(s);
  const int calls = 20;
  start = Clock::now();
  absl::StatusOr<std::vector<kiln::Tensor>> last;
  for (int i = 0; i < calls; ++i) {
    last = (*cg)(device_args);
    if (!last.ok()) return fail(last.status());
  }
  if (auto h = (*last)[0].to_host(); !h.ok()) return fail(h.status());
  double compiled_ms = ms_since(start) / calls;
  std::printf("time per call: compiled %.3f ms, reference evaluator %.1f ms (%.0fx)\n", compiled_ms, reference_ms,
              reference_ms / compiled_ms);
  return c.ok ? 0 : 1;
} catch (const kiln::trace::TraceError& e) {
  std::fprintf(stderr, "demo: %s\n", e.what());
  return 1;
}
