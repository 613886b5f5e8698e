#include "passes/simplify.h"

#include <algorithm>
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

// ---- GEMM epilogues: reshapes sunk below elementwise ops, per-row scales folded -----
// A conv's GEMM result is reshaped to [N, Cout, o...] (decompose); the elementwise ops after
// it (bias, batch norm, activation, residual) join the GEMM's epilogue only at the GEMM's
// shape, so e(reshape(z), o) becomes reshape(e(z, o')) where z comes from a GEMM. Batch
// norm's per-channel sub/div/mul/add of parameters then fold into the GEMM's weight (a
// per-row scale) and bias.

bool is_epilogue(const Node& n) {
  OpKind k = n.info().kind;
  return (k == OpKind::Elementwise || k == OpKind::Broadcast) && n.num_operands() > 0 && n.results().size() == 1;
}

// Whether v is a GEMM's result or an elementwise function of one of the same shape.
bool gemm_rooted(const Value* v) {
  const Node* p = v->producer();
  if (!p) return false;
  if (p->info().kind == OpKind::Gemm) return true;
  if (!is_epilogue(*p)) return false;
  return std::any_of(p->operands().begin(), p->operands().end(),
                     [&](const Value* o) { return o->shape() == v->shape() && gemm_rooted(o); });
}

// Whether v is computed from parameters and constants only.
bool param_only(const Value* v) {
  if (v->is_param()) return true;
  const Node* p = v->producer();
  if (!p) return false;
  return std::all_of(p->operands().begin(), p->operands().end(), [](const Value* o) { return param_only(o); });
}

// The only user of v (null if none, several, or v is an output).
Node* only_user(const Graph& g, const Value* v) {
  const std::vector<Node*>& users = v->users();
  if (users.empty() || std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end()) return nullptr;
  Node* u = users.front();
  return std::all_of(users.begin(), users.end(), [&](Node* x) { return x == u; }) ? u : nullptr;
}

// o, broadcast against `from`, as an operand of the same op at shape `to` (`from` reshaped):
// a scalar as it is; a tensor constant along every dim after the shapes' common leading
// dims as its leading part; else expanded to `from` and reshaped.
Value* reshaped_operand(Builder& b, Value* o, const Shape& from, const Shape& to) {
  if (o->shape().empty()) return o;
  if (o->shape() == from) return b.op(Op::Reshape, {o}, {{"shape", to}});
  size_t p = 0;
  while (p < from.size() && p < to.size() && from[p] == to[p]) ++p;
  Shape od(from.size() - o->shape().size(), SymExpr(1));
  od.insert(od.end(), o->shape().begin(), o->shape().end());
  if (std::all_of(od.begin() + p, od.end(), [](const Dim& d) { return d == SymExpr(1); })) {
    Shape lead(od.begin(), od.begin() + p);
    lead.resize(to.size(), SymExpr(1));
    return b.op(Op::Reshape, {o}, {{"shape", lead}});
  }
  return b.op(Op::Reshape, {b.op(Op::Expand, {o}, {{"shape", from}})}, {{"shape", to}});
}

// e(.., reshape(z), ..) -> reshape(e(.., z, ..)) for z GEMM-rooted and the reshape read by e only.
Value* sink_reshape(Builder& b, const Node& e) {
  if (!is_epilogue(e) || e.op() == Op::Iota) return nullptr;
  const Graph& g = b.graph();
  auto candidate = [&](size_t i) {
    const Node* r = e.operand(i)->producer();
    return r && r->op() == Op::Reshape && e.result()->shape() == r->result()->shape() &&
           only_user(g, r->result()) == &e && gemm_rooted(r->operand(0));
  };
  // Two such operands would trade places round after round: neither moves.
  int candidates = 0;
  for (size_t i = 0; i < e.num_operands(); ++i) candidates += candidate(i);
  if (candidates != 1) return nullptr;
  for (size_t i = 0; i < e.num_operands(); ++i) {
    if (!candidate(i)) continue;
    const Node* r = e.operand(i)->producer();
    Value* z = r->operand(0);
    std::vector<Value*> ops;
    for (size_t j = 0; j < e.num_operands(); ++j)
      ops.push_back(j == i ? z : reshaped_operand(b, e.operand(j), r->result()->shape(), z->shape()));
    return b.op(Op::Reshape, {b.op(e.op(), ops, e.attrs())}, {{"shape", r->result()->shape()}});
  }
  return nullptr;
}

// s as an operand of A [.., M, K] scaling its rows, for s broadcast against A @ B [.., M, N]:
// null unless s is 1 along N and along the batch dims A lacks.
Value* row_scale(Builder& b, const Value* s, const Value* a, const Shape& out) {
  const Shape& as = a->shape();
  Shape sd(out.size() - std::min(out.size(), s->shape().size()), SymExpr(1));
  sd.insert(sd.end(), s->shape().begin(), s->shape().end());
  if (sd.size() != out.size() || as.size() < 2 || sd.back() != SymExpr(1)) return nullptr;
  size_t extra = out.size() - as.size();
  if (!std::all_of(sd.begin(), sd.begin() + extra, [](const Dim& d) { return d == SymExpr(1); })) return nullptr;
  Shape sa(sd.begin() + extra, sd.end());
  absl::StatusOr<Shape> bs = broadcast_shapes(as, sa);
  if (!bs.ok() || *bs != as) return nullptr;
  return b.op(Op::Reshape, {const_cast<Value*>(s)}, {{"shape", sa}});
}

// With y = A @ B (+ c), A and c from parameters, s and t per-row parameters, y read by e only:
// y * s -> (A*s) @ B (+ c*s); y / s -> (A/s) @ B (+ c/s); (A @ B + c) + t -> A @ B + (c + t);
// y - t -> y + (-t) as a bias.
Value* fold_into_gemm(Builder& b, const Node& e) {
  Op op = e.op();
  if (op != Op::Mul && op != Op::Div && op != Op::Add && op != Op::Sub) return nullptr;
  for (size_t i = 0; i < 2; ++i) {
    if (i == 1 && (op == Op::Div || op == Op::Sub)) break;
    Value *y = e.operand(i), *s = e.operand(1 - i);
    const Node* yp = y->producer();
    if (!yp || !param_only(s) || y->shape() != e.result()->shape() || only_user(b.graph(), y) != &e) continue;
    const Node* mm = yp;
    Value* c = nullptr;
    if (yp->op() == Op::Add) {
      for (size_t k = 0; k < 2 && !c; ++k) {
        const Node* p = yp->operand(k)->producer();
        if (p && p->op() == Op::MatMul && param_only(yp->operand(1 - k)) &&
            only_user(b.graph(), yp->operand(k)) == yp) {
          mm = p;
          c = yp->operand(1 - k);
        }
      }
      if (!c) continue;
    }
    if (mm->op() != Op::MatMul || !is_float(y->dtype())) continue;
    if (op == Op::Add || op == Op::Sub) {
      Value* t = op == Op::Sub ? b.op(Op::Neg, {s}) : s;
      if (!c) return op == Op::Sub ? b.op(Op::Add, {mm->result(), t}) : nullptr;
      return b.op(Op::Add, {mm->result(), b.op(Op::Add, {c, t})});
    }
    Value* a = mm->operand(0);
    if (!param_only(a)) continue;
    Value* sa = row_scale(b, s, a, mm->result()->shape());
    if (!sa) continue;
    Value* out = b.op(Op::MatMul, {b.op(op, {a, sa}), mm->operand(1)});
    return c ? b.op(Op::Add, {out, b.op(op, {c, s})}) : out;
  }
  return nullptr;
}

absl::StatusOr<bool> epilogue_sweep(Graph& g) {
  std::vector<Node*> nodes;
  for (const auto& n : g.nodes()) nodes.push_back(n.get());
  bool changed = false;
  for (Node* n : nodes) {
    if (!is_epilogue(*n)) continue;
    Builder b(g, n, n->loc());
    Value* v = fold_into_gemm(b, *n);
    if (!v) v = sink_reshape(b, *n);
    KILN_RETURN_IF_ERROR(b.status());
    if (!v) continue;
    std::string name = n->result()->name();
    g.replace_all_uses(n->result(), v);
    g.erase(n);
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
    KILN_ASSIGN_OR_RETURN(bool epilogue, epilogue_sweep(g));
    rewrote = rewrote || epilogue;
    bool merged = cse(g);
    bool removed = g.remove_dead_nodes() > 0;
    if (!rewrote && !merged && !removed) return changed;
    changed = true;
  }
  return changed;
}

}  // namespace kiln
