#include "test/fuzz/check.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "codegen/kernel_eval.h"
#include "codegen/lower.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"

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

std::string bindings_text(const Bindings& b) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : b) parts.push_back(str_cat(k, "=", v));
  std::sort(parts.begin(), parts.end());
  return str_cat("{", str_join(parts, ", ", [](const std::string& s) { return s; }), "}");
}

std::string kernels_text(const std::vector<kir::Kernel>& ks) {
  std::string s;
  for (const kir::Kernel& k : ks) s += kir::print_kernel(k);
  return s;
}

}  // namespace

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
  for (const auto& n : g.nodes()) {
    if (n->op() == Op::Constant) continue;
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
  auto context = [&](const std::string& what, const std::string& kernels) {
    return str_cat(what, "\n--- graph\n", print_graph(g), "--- kernels\n", kernels);
  };
  absl::StatusOr<std::vector<kir::Kernel>> kernels = lower_schedule(g, s);
  if (!kernels.ok()) return invalid_argument(context(str_cat("lowering failed: ", kernels.status().message()), ""));
  for (size_t bi = 0; bi < bindings.size(); ++bi) {
    TensorMap args = random_args(g, bindings[bi], seed * 7919 + bi);
    absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
    if (!want.ok())
      return invalid_argument(context(str_cat("reference failed under ", bindings_text(bindings[bi]), ": ",
                                              want.status().message()), ""));
    absl::StatusOr<std::vector<HostTensor>> got = evaluate_kernels(g, s, *kernels, args);
    if (!got.ok())
      return invalid_argument(context(str_cat("kernel evaluation failed under ", bindings_text(bindings[bi]), ": ",
                                              got.status().message()), kernels_text(*kernels)));
    for (size_t i = 0; i < want->size(); ++i) {
      Comparison c = compare_tensors((*want)[i], (*got)[i], default_tolerance((*want)[i].dtype()));
      if (!c.ok)
        return invalid_argument(context(str_cat("output ", i, " (%", g.outputs()[i]->name(), ") differs under ",
                                                bindings_text(bindings[bi]), ": ", c.message),
                                        kernels_text(*kernels)));
    }
  }
  return absl::OkStatus();
}

absl::Status check_compiled_matches_reference(const Graph& g, const std::vector<Bindings>& bindings,
                                              uint64_t seed) {
  return check_schedule_matches_reference(g, schedule_per_node(g), bindings, seed);
}

}  // namespace kiln
