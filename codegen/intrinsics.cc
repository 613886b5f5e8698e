#include "codegen/intrinsics.h"

#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "ir/scalar_ops.h"

namespace kiln::kir {
namespace {

bool is_f32_binary(const Expr& e, Op op) {
  return e.kind() == ExprKind::Binary && e.node().op == op && e.dtype() == DType::f32;
}

// A constant's value as f32 (of any constant dtype).
std::optional<double> f32_constant(const Expr& e) {
  if (e.kind() != ExprKind::Const) return std::nullopt;
  return round_to_dtype(e.node().value, DType::f32);
}

// u where `e` is 1 + tanh(u) in f32.
const Expr* one_plus_tanh_of(const Expr& e) {
  if (!is_f32_binary(e, Op::Add)) return nullptr;
  const ExprNode& n = e.node();
  for (auto [c, t] : {std::pair{&n.a, &n.b}, std::pair{&n.b, &n.a}})
    if (c->kind() == ExprKind::Const && c->node().value == 1.0 && t->kind() == ExprKind::Unary &&
        t->node().op == Op::Tanh && t->dtype() == DType::f32)
      return &t->node().a;
  return nullptr;
}

// x, k1 and k0 where `e` is (0.5 * x) * (1 + tanh(c * (x + ((k * x) * x) * x))) in f32.
struct GeluTanh {
  const Expr* x;
  double k1, k0;
};
std::optional<GeluTanh> gelu_tanh_of(const Expr& e) {
  if (!is_f32_binary(e, Op::Mul)) return std::nullopt;
  const ExprNode& n = e.node();
  for (auto [h, t] : {std::pair{&n.a, &n.b}, std::pair{&n.b, &n.a}}) {
    const Expr* u = one_plus_tanh_of(*t);
    if (!u || !is_f32_binary(*h, Op::Mul) || !is_f32_binary(*u, Op::Mul) || !is_f32_binary(u->node().b, Op::Add))
      continue;
    const ExprNode& m = h->node();
    for (auto [half, x] : {std::pair{&m.a, &m.b}, std::pair{&m.b, &m.a}}) {
      if (f32_constant(*half) != 0.5) continue;
      const Expr& sum = u->node().b;
      std::optional<double> c = f32_constant(u->node().a), k;
      const Expr* cube = &sum.node().b;
      bool ok = c && sum.node().a.same_as(*x);
      for (int i = 0; ok && i < 2; ++i) {  // ((k * x) * x) * x: two outer products by x
        ok = is_f32_binary(*cube, Op::Mul) && cube->node().b.same_as(*x);
        if (ok) cube = &cube->node().a;
      }
      ok = ok && is_f32_binary(*cube, Op::Mul) && (k = f32_constant(cube->node().a)) && cube->node().b.same_as(*x);
      if (!ok) continue;
      double k0 = -2.0 * *c * M_LOG2E;
      return GeluTanh{x, round_to_dtype(k0 * *k, DType::f32), round_to_dtype(k0, DType::f32)};
    }
  }
  return std::nullopt;
}

// Whether `b` is a stage result, under casts or not.
bool is_row_statistic(const Expr& b) {
  const Expr* e = &b;
  while (e->kind() == ExprKind::Cast) e = &e->node().a;
  return e->kind() == ExprKind::StageResult;
}

class Rewriter {
 public:
  bool changed() const { return changed_; }

  Expr expr(const Expr& e) {
    if (auto it = done_.find(&e.node()); it != done_.end()) return it->second.second;
    Expr r = rewrite(e);
    changed_ |= &r.node() != &e.node();
    done_.emplace(&e.node(), std::pair{e, r});
    return r;
  }

  Index index(const Index& i) {
    const IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Scalar: {
        Expr x = expr(n.expr);
        return &x.node() == &n.expr.node() ? i : Index::scalar(x);
      }
      case IndexKind::Add:
      case IndexKind::Mul:
      case IndexKind::FloorDiv:
      case IndexKind::Mod:
      case IndexKind::Min:
      case IndexKind::Max: {
        Index a = index(n.a), b = index(n.b);
        if (&a.node() == &n.a.node() && &b.node() == &n.b.node()) return i;
        switch (n.kind) {
          case IndexKind::Add: return a + b;
          case IndexKind::Mul: return a * b;
          case IndexKind::FloorDiv: return Index::floordiv(a, b);
          case IndexKind::Mod: return Index::mod(a, b);
          case IndexKind::Min: return Index::min(a, b);
          default: return Index::max(a, b);
        }
      }
      default: return i;
    }
  }

 private:
  Expr rewrite(const Expr& e) {
    const ExprNode& n = e.node();
    if (n.kind == ExprKind::Binary) {
      if (const Expr* u = one_plus_tanh_of(e)) return Expr::intrinsic(Intrinsic::OnePlusTanh, DType::f32, expr(*u));
      if (std::optional<GeluTanh> g = gelu_tanh_of(e))
        return Expr::intrinsic(Intrinsic::GeluTanh, DType::f32, expr(*g->x), Expr::constant(g->k1, DType::f32),
                               Expr::constant(g->k0, DType::f32));
      if (n.op == Op::Div && is_float(n.a.dtype()) && n.a.dtype() != DType::f64 && is_row_statistic(n.b))
        return Expr::intrinsic(Intrinsic::MulReciprocal, n.dtype, expr(n.a), expr(n.b));
    }
    Expr a = n.a.defined() ? expr(n.a) : n.a, b = n.b.defined() ? expr(n.b) : n.b, c = n.c.defined() ? expr(n.c) : n.c;
    Index at = n.index.defined() ? index(n.index) : n.index;
    auto same = [](const Expr& x, const Expr& y) { return !x.defined() || &x.node() == &y.node(); };
    if (same(n.a, a) && same(n.b, b) && same(n.c, c) && (!n.index.defined() || &at.node() == &n.index.node())) return e;
    switch (n.kind) {
      case ExprKind::Load: return Expr::load(n.id, at, n.dtype);
      case ExprKind::IndexValue: return Expr::index_value(at);
      case ExprKind::Unary: return Expr::unary(n.op, a, n.dtype);
      case ExprKind::Binary: return Expr::binary(n.op, a, b, n.dtype);
      case ExprKind::Select: return Expr::select(a, b, c);
      case ExprKind::Cast: return Expr::cast(a, n.dtype);
      case ExprKind::Intrinsic: return Expr::intrinsic(n.intrinsic, n.dtype, a, b, c);
      default: return e;
    }
  }

  // Each node rewritten so far -> (the node, kept alive so that its address stays its own; the result).
  absl::flat_hash_map<const ExprNode*, std::pair<Expr, Expr>> done_;
  bool changed_ = false;
};

}  // namespace

bool rewrite_intrinsics(Kernel& k) {
  Rewriter r;
  for (Stage& st : k.stages) {
    for (Let& l : st.lets) l.value = r.expr(l.value);
    for (Store& s : st.stores) {
      s.index = r.index(s.index);
      s.value = r.expr(s.value);
    }
    if (st.value.defined()) st.value = r.expr(st.value);
  }
  if (k.gemm)
    for (GemmOperand* o : {&k.gemm->a, &k.gemm->b}) o->index = r.index(o->index);
  return r.changed();
}

}  // namespace kiln::kir
