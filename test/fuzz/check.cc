#include "test/fuzz/check.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/container/flat_hash_set.h"
#include "codegen/kernel_eval.h"
#include "codegen/lower.h"
#include "compiler/pipeline.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "passes/schedule_util.h"

namespace kiln {
namespace {

KernelGroup::Kind kind_of(const Node& n) {
  switch (n.info().kind) {
    case OpKind::Gemm: return KernelGroup::Kind::Gemm;
    case OpKind::Reduction: return KernelGroup::Kind::Reduction;
    default: return KernelGroup::Kind::Elementwise;
  }
}

bool is_constant(const Value* v) { return v->producer() && v->producer()->op() == Op::Constant; }

std::string kernels_text(const std::vector<kir::Kernel>& ks) {
  std::string s;
  for (const kir::Kernel& k : ks) s += kir::print_kernel(k);
  return s;
}

// What a compiled graph computes from `args` under one binding (`under` names it in errors).
using Runner = std::function<absl::StatusOr<std::vector<HostTensor>>(const Bindings& b, const std::string& under,
                                                                     const TensorMap& args)>;

// Under each binding, `run` against the reference evaluator of `g` (the graph before the
// passes) on random arguments seeded from `seed` and the binding's position, within
// tolerance_for; `fail` adds the IR and kernels to an error.
absl::Status compare_runs(const Graph& g, const std::vector<Bindings>& bindings, uint64_t seed, double slack,
                          const Runner& run, const std::function<absl::Status(const std::string&)>& fail) {
  for (size_t bi = 0; bi < bindings.size(); ++bi) {
    std::string under = bindings_to_string(bindings[bi]);
    TensorMap args = random_args(g, bindings[bi], seed * 7919 + bi);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
    if (!want.ok()) return fail(str_cat("reference failed under ", under, ": ", want.status().message()));
    absl::StatusOr<std::vector<HostTensor>> got = run(bindings[bi], under, args);
    if (!got.ok()) return fail(std::string(got.status().message()));
    for (size_t i = 0; i < want->size(); ++i) {
      Comparison c = compare_tensors((*want)[i], (*got)[i], tolerance_for(g.outputs()[i], (*want)[i], slack));
      if (!c.ok)
        return fail(str_cat("output ", i, " (%", g.outputs()[i]->name(), ") differs under ", under, ": ", c.message));
    }
  }
  return absl::OkStatus();
}

// Runs `kernels` (the lowering of schedule `s` of `compiled`) on the kernel-IR evaluator
// against the reference evaluator of `g`, checking the memory plan's layout first.
absl::Status compare_with_reference(const Graph& g, const Graph& compiled, const Schedule& s,
                                    const std::vector<kir::Kernel>& kernels, const MemoryPlan* plan,
                                    const std::vector<Bindings>& bindings, uint64_t seed, double slack) {
  auto fail = [&](const std::string& what) {
    std::string text = str_cat(what, "\n--- graph\n", print_graph(g));
    if (&compiled != &g) text += str_cat("--- after the passes\n", print_scheduled(compiled, s));
    return invalid_argument(text, "--- kernels\n", kernels_text(kernels));
  };
  auto run = [&](const Bindings& b, const std::string& under,
                 const TensorMap& args) -> absl::StatusOr<std::vector<HostTensor>> {
    if (plan) {
      absl::StatusOr<ArenaLayout> layout = plan->layout(b);
      if (!layout.ok()) return invalid_argument("memory layout under ", under, ": ", layout.status().message());
      if (absl::Status st = plan->check_layout(*layout); !st.ok())
        return invalid_argument("memory layout under ", under, ": ", st.message(), "\n", plan->to_string(&*layout));
    }
    absl::StatusOr<std::vector<HostTensor>> got = evaluate_kernels(compiled, s, kernels, args, plan);
    if (!got.ok()) return invalid_argument("kernel evaluation failed under ", under, ": ", got.status().message());
    return got;
  };
  return compare_runs(g, bindings, seed, slack, run, fail);
}

}  // namespace

Tolerance tolerance_for(const Value* v, const HostTensor& expected, double slack) {
  Tolerance tol = default_tolerance(v->dtype());
  if (!is_float(v->dtype())) return tol;
  bool accumulated = false;
  std::vector<const Value*> stack = {v};
  absl::flat_hash_set<const Value*> seen = {v};
  while (!stack.empty()) {
    const Value* x = stack.back();
    stack.pop_back();
    if (is_float(x->dtype())) {
      Tolerance t = default_tolerance(x->dtype());
      tol = {std::max(tol.rtol, t.rtol), std::max(tol.atol, t.atol)};
    }
    const Node* n = x->producer();
    if (!n) continue;
    OpKind k = n->info().kind;
    accumulated |= k == OpKind::Gemm || k == OpKind::Composite ||
                   (k == OpKind::Reduction && n->op() != Op::Max && n->op() != Op::Min && n->op() != Op::ArgMax);
    for (const Value* o : n->operands())
      if (seen.insert(o).second) stack.push_back(o);
  }
  if (!accumulated) return tol;
  double scale = 0;
  for (int64_t i = 0; i < expected.numel(); ++i)
    if (double e = std::fabs(expected.get(i)); std::isfinite(e)) scale = std::max(scale, e);
  return {tol.rtol * slack, (tol.atol + tol.rtol * scale) * slack};
}

KernelGroup make_group(const Graph& g, std::vector<Node*> nodes, KernelGroup::Kind kind, int id) {
  KernelGroup group;
  group.id = id;
  group.kind = kind;
  group.nodes = std::move(nodes);
  absl::flat_hash_set<const Node*> in(group.nodes.begin(), group.nodes.end());
  auto uses = g.uses();
  for (Node* n : group.nodes) {
    for (Value* v : n->operands())
      if ((!v->producer() || !in.contains(v->producer())) && !is_constant(v) &&
          std::find(group.inputs.begin(), group.inputs.end(), v) == group.inputs.end())
        group.inputs.push_back(v);
    for (Value* v : n->results()) {
      bool outside = std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end();
      for (const Node* user : uses[v]) outside = outside || !in.contains(user);
      if (outside) group.outputs.push_back(v);
    }
  }
  return group;
}

Schedule schedule_per_node(const Graph& g) {
  Schedule s;
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  for (const auto& n : g.nodes()) {
    if (n->op() == Op::Constant && !returned.contains(n->result())) continue;
    s.groups.push_back(make_group(g, {n.get()}, kind_of(*n), static_cast<int>(s.groups.size())));
  }
  return s;
}

Schedule schedule_single_group(const Graph& g, KernelGroup::Kind kind) {
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes())
    if (n->op() != Op::Constant) nodes.push_back(n.get());
  Schedule s;
  s.groups.push_back(make_group(g, std::move(nodes), kind, 0));
  return s;
}


absl::Status check_schedule_matches_reference(const Graph& g, const Schedule& s,
                                              const std::vector<Bindings>& bindings, uint64_t seed) {
  absl::StatusOr<std::vector<kir::Kernel>> kernels = lower_schedule(g, s);
  if (!kernels.ok())
    return invalid_argument("lowering failed: ", kernels.status().message(), "\n--- graph\n", print_graph(g));
  return compare_with_reference(g, g, s, *kernels, nullptr, bindings, seed, 1);
}

absl::Status check_fused_matches_unfused(const Graph& g, const std::vector<Bindings>& bindings, uint64_t seed) {
  absl::StatusOr<PipelineResult> r = compile_to_kernels(g.clone());
  if (!r.ok()) return invalid_argument("compiling failed: ", r.status().message(), "\n--- graph\n", print_graph(g));
  const Graph& compiled = r->state.graph;
  Schedule unfused = schedule_per_node(compiled);
  absl::StatusOr<std::vector<kir::Kernel>> one_each = lower_schedule(compiled, unfused);
  if (!one_each.ok())
    return invalid_argument("lowering one node per kernel failed: ", one_each.status().message(), "\n--- graph\n",
                            print_graph(compiled));
  for (size_t bi = 0; bi < bindings.size(); ++bi) {
    TensorMap args = random_args(g, bindings[bi], seed * 7919 + bi);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate_kernels(compiled, unfused, *one_each, args);
    absl::StatusOr<std::vector<HostTensor>> got =
        evaluate_kernels(compiled, r->state.schedule, r->kernels, args, &r->state.memory);
    for (const auto* s : {&want, &got})
      if (!s->ok()) return invalid_argument("kernel evaluation failed: ", s->status().message());
    for (size_t i = 0; i < want->size(); ++i) {
      Comparison c = compare_tensors((*want)[i], (*got)[i], {0, 0});
      if (!c.ok)
        return invalid_argument("fused output ", i, " (%", compiled.outputs()[i]->name(), ") differs from one node per kernel under ",
                                bindings_to_string(bindings[bi]), ": ", c.message, "\n--- after the passes\n",
                                print_scheduled(compiled, r->state.schedule), "--- kernels\n", kernels_text(r->kernels));
    }
  }
  return absl::OkStatus();
}

absl::Status check_device_matches_reference(const Graph& g, Device device, const std::vector<Bindings>& bindings,
                                            uint64_t seed, double accumulation_slack, Mode mode) {
  absl::StatusOr<CompiledGraph> cg = compile(g, {.mode = mode, .device = device});
  if (!cg.ok()) return invalid_argument("compile() failed: ", cg.status().message(), "\n--- graph\n", print_graph(g));
  auto fail = [&](const std::string& what) {
    return invalid_argument(what, " (compiled for ", device_kind_name(device), ", mode ", mode_name(mode),
                            ")\n--- graph\n", print_graph(g),
                            "--- after the passes\n", print_scheduled(cg->module().state.graph, cg->module().state.schedule),
                            "--- kernels\n", kernels_text(cg->module().kernels));
  };
  auto run = [&](const Bindings&, const std::string& under,
                 const TensorMap& args) -> absl::StatusOr<std::vector<HostTensor>> {
    // Fresh parameter values each time, maybe at addresses the last call's had.
    cg->parameters_changed();
    absl::StatusOr<std::vector<HostTensor>> got = run_host(*cg, args);
    if (!got.ok()) return invalid_argument("compiled call failed under ", under, ": ", got.status().message());
    return got;
  };
  return compare_runs(g, bindings, seed, accumulation_slack, run, fail);
}

absl::Status check_compiled_matches_reference(const Graph& g, const std::vector<Bindings>& bindings,
                                              uint64_t seed, double accumulation_slack) {
  absl::StatusOr<PipelineResult> r = compile_to_kernels(g.clone());
  if (!r.ok()) return invalid_argument("compiling failed: ", r.status().message(), "\n--- graph\n", print_graph(g));
  return compare_with_reference(g, r->state.graph, r->state.schedule, r->kernels, &r->state.memory, bindings, seed,
                                accumulation_slack);
}

}  // namespace kiln
