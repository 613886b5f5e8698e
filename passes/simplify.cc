#include "passes/simplify.h"

#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"
#include "passes/fold.h"

namespace kiln {
namespace {

constexpr int64_t kMaxFoldNumel = int64_t{1} << 20;
constexpr int kMaxRounds = 32;

// A local rewrite: the value that replaces n's result, or null when the rule does not apply.
using Rule = Value* (*)(Builder& b, const Node& n);

bool is_scalar(const Value* v, double c) {
  std::optional<double> x = constant_value(v);
  return x && *x == c;
}

// x op c -> x when c is the identity and the result is x unchanged (no broadcast, same dtype).
Value* keep_if_same_type(const Node& n, Value* x) { return x->type() == n.result()->type() ? x : nullptr; }

Value* add_zero(Builder&, const Node& n) {
  if (is_scalar(n.operand(1), 0)) return keep_if_same_type(n, n.operand(0));
  if (is_scalar(n.operand(0), 0)) return keep_if_same_type(n, n.operand(1));
  return nullptr;
}
Value* sub_zero(Builder&, const Node& n) {
  return is_scalar(n.operand(1), 0) ? keep_if_same_type(n, n.operand(0)) : nullptr;
}
Value* mul_one(Builder&, const Node& n) {
  if (is_scalar(n.operand(1), 1)) return keep_if_same_type(n, n.operand(0));
  if (is_scalar(n.operand(0), 1)) return keep_if_same_type(n, n.operand(1));
  return nullptr;
}
Value* div_one(Builder&, const Node& n) {
  return is_scalar(n.operand(1), 1) ? keep_if_same_type(n, n.operand(0)) : nullptr;
}
Value* neg_neg(Builder&, const Node& n) {
  const Node* p = n.operand(0)->producer();
  return p && p->op() == Op::Neg ? p->operand(0) : nullptr;
}
// cast to the same dtype; reshape/expand/squeeze/step-1 slice that keep the shape; concat of one.
Value* identity_view(Builder&, const Node& n) {
  if (n.op() == Op::Slice && SliceAttrs(n).step() != 1) return nullptr;
  return keep_if_same_type(n, n.operand(0));
}
Value* permute(Builder& b, const Node& n) {
  const std::vector<int64_t>& dims = PermuteAttrs(n).dims();
  int64_t r = static_cast<int64_t>(dims.size());
  std::vector<int64_t> d(r);
  for (int64_t i = 0; i < r; ++i) d[i] = dims[i] < 0 ? dims[i] + r : dims[i];
  Value* x = n.operand(0);
  const Node* p = x->producer();
  if (p && p->op() == Op::Permute) {
    // out[i] = mid[d[i]] = x[inner[d[i]]]
    std::vector<int64_t> inner = PermuteAttrs(*p).dims();
    for (int64_t& i : inner) i = i < 0 ? i + r : i;
    for (int64_t& i : d) i = inner[i];
    x = p->operand(0);
  }
  std::vector<int64_t> id(r);
  std::iota(id.begin(), id.end(), 0);
  if (d == id) return x;
  if (x == n.operand(0)) return nullptr;
  return b.op(Op::Permute, {x}, {{"dims", d}});
}
Value* reshape(Builder& b, const Node& n) {
  if (n.operand(0)->type() == n.result()->type()) return n.operand(0);
  const Node* p = n.operand(0)->producer();
  if (!p || p->op() != Op::Reshape) return nullptr;
  return b.op(Op::Reshape, {p->operand(0)}, {{"shape", n.result()->shape()}});
}

Rule rule_for(Op op) {
  switch (op) {
    case Op::Add: return add_zero;
    case Op::Sub: return sub_zero;
    case Op::Mul: return mul_one;
    case Op::Div: return div_one;
    case Op::Neg: return neg_neg;
    case Op::Cast: case Op::Expand: case Op::Squeeze: case Op::Slice: case Op::Concat: return identity_view;
    case Op::Permute: return permute;
    case Op::Reshape: return reshape;
    default: return nullptr;
  }
}

// One sweep of the rule table and of host folding over the nodes in order.
absl::StatusOr<bool> rewrite_sweep(Graph& g) {
  bool changed = false;
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  for (Node* n : nodes) {
    if (foldable(*n, kMaxFoldNumel)) {
      KILN_RETURN_IF_ERROR(fold_on_host(g, n).status());
      changed = true;
      continue;
    }
    Rule rule = rule_for(n->op());
    if (!rule || (n->op() == Op::Concat && n->num_operands() != 1)) continue;
    Builder b(g, n, n->loc());
    Value* v = rule(b, *n);
    KILN_RETURN_IF_ERROR(b.status());
    if (!v) continue;
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), v);
    g.erase(n);
    // A node a rule made takes the name of the value it replaces (dumps stay readable).
    if (b.created(v))
      KILN_RETURN_IF_ERROR(g.rename(v, name));
    changed = true;
  }
  return changed;
}

// Replaces every node that repeats an earlier node (same op, operands and attributes).
bool cse(Graph& g) {
  absl::flat_hash_map<std::string, Node*> seen;
  std::vector<std::pair<Node*, Node*>> dups;
  for (const auto& n : g.nodes()) {
    std::string key = str_cat(op_name(n->op()), "(");
    for (const Value* v : n->operands()) key += str_cat(reinterpret_cast<uintptr_t>(v), ",");
    for (const auto& [name, value] : n->attrs()) key += str_cat(name, "=", attr_to_string(value), ";");
    auto [it, inserted] = seen.emplace(key, n.get());
    if (!inserted) dups.push_back({n.get(), it->second});
  }
  for (auto [dup, orig] : dups) {
    for (size_t i = 0; i < dup->results().size(); ++i) g.replace_all_uses(dup->result(i), orig->result(i));
    g.erase(dup);
  }
  return !dups.empty();
}

}  // namespace

absl::StatusOr<bool> simplify(Graph& g) {
  bool changed = false;
  for (int round = 0; round < kMaxRounds; ++round) {
    KILN_ASSIGN_OR_RETURN(bool rewrote, rewrite_sweep(g));
    bool merged = cse(g);
    bool removed = g.remove_dead_nodes() > 0;
    if (!rewrote && !merged && !removed) return changed;
    changed = true;
  }
  return changed;
}

}  // namespace kiln
