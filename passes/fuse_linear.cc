#include "passes/fuse_linear.h"

#include <limits>
#include <map>

#include "absl/container/flat_hash_set.h"

#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"
#include "passes/fold.h"
#include "passes/schedule_util.h"

namespace kiln {
namespace {

// The weight of a mergeable GEMM and the axis its output features run along.
struct GemmShape {
  Value* weight;
  Value* bias;     // null if none
  int64_t axis;    // output-feature axis of the weight: 0 for linear [N, K], 1 for matmul [K, N]
};

std::optional<GemmShape> mergeable(const Node& n) {
  if (n.op() == Op::Linear) {
    Value* bias = n.num_operands() > 2 ? n.operand(2) : nullptr;
    if (!n.operand(1)->is_param() || (bias && !bias->is_param())) return std::nullopt;
    return GemmShape{n.operand(1), bias, 0};
  }
  if (n.op() == Op::MatMul && n.operand(1)->is_param() && n.operand(1)->shape().size() == 2 &&
      n.operand(0)->shape().size() >= 2)
    return GemmShape{n.operand(1), nullptr, 1};
  return std::nullopt;
}

// concat of parameters along `axis`, folded to a parameter with data when all have data.
absl::StatusOr<Value*> concat_params(Builder& b, const std::vector<Value*>& params, int64_t axis) {
  Value* cat = b.op(Op::Concat, params, {{"axis", axis}});
  KILN_RETURN_IF_ERROR(b.status());
  if (!foldable(*cat->producer(), std::numeric_limits<int64_t>::max())) return cat;
  return fold_on_host(b.graph(), cat->producer());
}

// Merges one set of GEMMs reading the same input: one GEMM, then a slice per former result.
absl::Status merge(Graph& g, const std::vector<Node*>& gemms) {
  Node* first = gemms[0];
  int64_t axis = mergeable(*first)->axis;
  std::vector<Value*> weights, biases;
  for (Node* n : gemms) {
    GemmShape s = *mergeable(*n);
    weights.push_back(s.weight);
    if (s.bias) biases.push_back(s.bias);
  }
  Builder b(g, first, first->loc());
  KILN_ASSIGN_OR_RETURN(Value* w, concat_params(b, weights, axis));
  std::vector<Value*> operands = {first->operand(0), w};
  if (!biases.empty()) {
    KILN_ASSIGN_OR_RETURN(Value* bias, concat_params(b, biases, 0));
    operands.push_back(bias);
  }
  Value* y = b.op(first->op(), operands);
  int64_t start = 0;
  for (Node* n : gemms) {
    int64_t size = *n->result()->shape().back().constant();
    Value* part = b.op(Op::Slice, {y}, {{"axis", int64_t{-1}}, {"start", start}, {"end", start + size}});
    start += size;
    KILN_RETURN_IF_ERROR(b.status());
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), part);
    g.erase(n);
    KILN_RETURN_IF_ERROR(g.rename(part, name));
  }
  return b.status();
}

// Groups mergeable GEMMs by (op, input, weight dtype and in-features, has bias).
absl::StatusOr<bool> merge_horizontal(Graph& g) {
  std::map<std::string, std::vector<Node*>> sets;
  std::vector<std::string> order;
  for (const auto& n : g.nodes()) {
    std::optional<GemmShape> s = mergeable(*n);
    // Static output features: the slices need constant bounds.
    if (!s || !n->result()->shape().back().constant()) continue;
    const Shape& ws = s->weight->shape();
    std::string key = str_cat(op_name(n->op()), reinterpret_cast<uintptr_t>(n->operand(0)), "/",
                              dtype_name(s->weight->dtype()), "/", ws[1 - s->axis].to_string(), "/", s->bias != nullptr);
    if (!sets.contains(key)) order.push_back(key);
    sets[key].push_back(n.get());
  }
  bool changed = false;
  for (const std::string& key : order) {
    if (sets[key].size() < 2) continue;
    KILN_RETURN_IF_ERROR(merge(g, sets[key]));
    changed = true;
  }
  return changed;
}

bool is_epilogue_op(const Node& n) {
  OpKind k = n.info().kind;
  return (k == OpKind::Elementwise || k == OpKind::Broadcast) && n.op() != Op::Constant && n.op() != Op::Iota;
}

// The GEMM and the chain of epilogue ops after it: each op the only user of the previous
// value (which is not returned), elementwise, of the GEMM's output shape, and not yet in
// another GEMM's epilogue (sub(gemm1, gemm2) joins gemm1's).
KernelGroup gemm_group(Node* gemm, const absl::flat_hash_map<const Value*, std::vector<Node*>>& uses,
                       const absl::flat_hash_set<const Value*>& outputs, absl::flat_hash_set<const Node*>& claimed) {
  KernelGroup grp;
  grp.kind = KernelGroup::Kind::Gemm;
  grp.nodes = {gemm};
  Value* cur = gemm->result();
  for (;;) {
    auto it = uses.find(cur);
    if (outputs.contains(cur) || it == uses.end()) break;
    std::vector<Node*> users = it->second;
    users.erase(std::unique(users.begin(), users.end()), users.end());
    if (users.size() != 1) break;
    Node* c = users[0];
    if (!is_epilogue_op(*c) || c->result()->shape() != gemm->result()->shape() || !claimed.insert(c).second) break;
    grp.nodes.push_back(c);
    cur = c->result();
  }
  return grp;
}

}  // namespace

absl::StatusOr<bool> fuse_linear(Graph& g, Schedule& s) {
  KILN_ASSIGN_OR_RETURN(bool merged, merge_horizontal(g));
  auto uses = g.uses();
  absl::flat_hash_set<const Value*> outputs(g.outputs().begin(), g.outputs().end());
  absl::flat_hash_set<const Node*> claimed;
  bool attached = false;
  for (const auto& n : g.nodes()) {
    if (n->info().kind != OpKind::Gemm) continue;
    s.groups.push_back(gemm_group(n.get(), uses, outputs, claimed));
    s.groups.back().id = static_cast<int>(s.groups.size()) - 1;
    attached |= s.groups.back().nodes.size() > 1;
  }
  compute_group_io(g, s);
  return merged || attached;
}

}  // namespace kiln
