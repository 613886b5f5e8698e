#include "codegen/kernel_ir.h"

#include <cstdio>

#include "ir/attr.h"
#include "ir/graph.h"
#include "ir/index_error.h"
#include "ir/op_attrs.h"
#include "ir/scalar_ops.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln::kir {
namespace {

std::shared_ptr<IndexNode> index_node(IndexKind kind) {
  auto n = std::make_shared<IndexNode>();
  n->kind = kind;
  return n;
}

std::shared_ptr<ExprNode> expr_node(ExprKind kind, DType t) {
  auto n = std::make_shared<ExprNode>();
  n->kind = kind;
  n->dtype = t;
  return n;
}

}  // namespace

// ---- Index --------------------------------------------------------------------

Index::Index(int64_t value) {
  auto n = index_node(IndexKind::Const);
  n->value = value;
  p_ = std::move(n);
}

Index Index::outer(int var) {
  auto n = index_node(IndexKind::Outer);
  n->value = var;
  return Index(std::move(n));
}

Index Index::inner(int var) {
  auto n = index_node(IndexKind::Inner);
  n->value = var;
  return Index(std::move(n));
}

Index Index::sym(const std::string& name) {
  auto n = index_node(IndexKind::Sym);
  n->name = name;
  return Index(std::move(n));
}

Index Index::scalar(const Expr& e) {
  auto n = index_node(IndexKind::Scalar);
  n->expr = e;
  return Index(std::move(n));
}

// A canonical SymExpr is a sum of terms coeff * product(atom^exp); atoms are symbols or
// floordiv/mod of a polynomial by a constant.
static Index index_from_poly(const SymPoly& p) {
  Index sum(0);
  for (const SymTerm& term : p.terms) {
    Index t(term.coeff);
    for (const SymFactor& f : term.factors) {
      const SymAtom& a = *f.atom;
      Index atom = a.kind == SymAtom::Kind::Symbol   ? Index::sym(a.name)
                   : a.kind == SymAtom::Kind::FloorDiv ? Index::floordiv(index_from_poly(*a.arg), a.divisor)
                                                       : Index::mod(index_from_poly(*a.arg), a.divisor);
      for (int e = 0; e < f.exp; ++e) t = t * atom;
    }
    sum = sum + t;
  }
  return sum;
}

Index Index::from_dim(const Dim& d) { return index_from_poly(d.poly()); }

Index operator+(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb) return Index(*ca + *cb);
  if (ca == 0) return b;
  if (cb == 0) return a;
  auto n = index_node(IndexKind::Add);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

Index operator*(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb) return Index(*ca * *cb);
  if (ca == 0 || cb == 0) return Index(0);
  if (ca == 1) return b;
  if (cb == 1) return a;
  auto n = index_node(IndexKind::Mul);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

Index operator-(const Index& a, const Index& b) { return a + Index(-1) * b; }

Index Index::floordiv(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb && *cb != 0) return Index(floor_div(*ca, *cb));
  if (cb == 1 || ca == 0) return a;
  auto n = index_node(IndexKind::FloorDiv);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

Index Index::mod(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb && *cb != 0) return Index(*ca - floor_div(*ca, *cb) * *cb);
  if (cb == 1 || ca == 0) return Index(0);
  auto n = index_node(IndexKind::Mod);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

Index Index::min(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb) return Index(std::min(*ca, *cb));
  if (a.same_as(b)) return a;
  auto n = index_node(IndexKind::Min);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

Index Index::max(const Index& a, const Index& b) {
  auto ca = a.constant(), cb = b.constant();
  if (ca && cb) return Index(std::max(*ca, *cb));
  if (a.same_as(b)) return a;
  auto n = index_node(IndexKind::Max);
  n->a = a;
  n->b = b;
  return Index(std::move(n));
}

IndexKind Index::kind() const { return p_->kind; }

std::optional<int64_t> Index::constant() const {
  if (p_->kind == IndexKind::Const) return p_->value;
  return std::nullopt;
}

bool Index::same_as(const Index& o) const {
  if (p_ == o.p_) return true;
  const IndexNode &x = *p_, &y = *o.p_;
  if (x.kind != y.kind) return false;
  switch (x.kind) {
    case IndexKind::Const:
    case IndexKind::Outer:
    case IndexKind::Inner: return x.value == y.value;
    case IndexKind::Sym: return x.name == y.name;
    case IndexKind::Scalar: return x.expr.same_as(y.expr);
    default: return x.a.same_as(y.a) && x.b.same_as(y.b);
  }
}

std::optional<AffineIndex> affine_index(const Index& i, size_t n_outer, size_t n_inner) {
  const IndexNode& n = i.node();
  AffineIndex r{Dim(0), std::vector<Dim>(n_outer, Dim(0)), std::vector<Dim>(n_inner, Dim(0))};
  auto var_free = [](const AffineIndex& a) {
    for (const std::vector<Dim>* v : {&a.outer, &a.inner})
      for (const Dim& d : *v)
        if (d != Dim(0)) return false;
    return true;
  };
  switch (n.kind) {
    case IndexKind::Const: r.offset = n.value; return r;
    case IndexKind::Sym: r.offset = Dim::symbol(n.name); return r;
    case IndexKind::Outer:
      if (static_cast<size_t>(n.value) >= n_outer) return std::nullopt;
      r.outer[n.value] = 1;
      return r;
    case IndexKind::Inner:
      if (static_cast<size_t>(n.value) >= n_inner) return std::nullopt;
      r.inner[n.value] = 1;
      return r;
    case IndexKind::Add:
    case IndexKind::Mul:
    case IndexKind::FloorDiv:
    case IndexKind::Mod: {
      std::optional<AffineIndex> a = affine_index(n.a, n_outer, n_inner), b = affine_index(n.b, n_outer, n_inner);
      if (!a || !b) return std::nullopt;
      if (n.kind == IndexKind::Add) {
        r.offset = a->offset + b->offset;
        for (size_t d = 0; d < n_outer; ++d) r.outer[d] = a->outer[d] + b->outer[d];
        for (size_t d = 0; d < n_inner; ++d) r.inner[d] = a->inner[d] + b->inner[d];
        return r;
      }
      if (n.kind == IndexKind::Mul) {
        if (!var_free(*a) && !var_free(*b)) return std::nullopt;
        const AffineIndex& v = var_free(*a) ? *b : *a;
        const Dim& c = var_free(*a) ? a->offset : b->offset;
        r.offset = v.offset * c;
        for (size_t d = 0; d < n_outer; ++d) r.outer[d] = v.outer[d] * c;
        for (size_t d = 0; d < n_inner; ++d) r.inner[d] = v.inner[d] * c;
        return r;
      }
      std::optional<int64_t> c = b->offset.constant();
      if (!var_free(*a) || !var_free(*b) || !c || *c <= 0) return std::nullopt;
      r.offset = n.kind == IndexKind::FloorDiv ? a->offset.floordiv(*c) : a->offset.mod(*c);
      return r;
    }
    default: return std::nullopt;
  }
}

// ---- Expr ---------------------------------------------------------------------

Expr Expr::constant(double value, DType t) {
  if (!is_float(t)) return constant_int(t == DType::boolean ? value != 0 : float_to_int(value, t), t);
  auto n = expr_node(ExprKind::Const, t);
  n->value = round_to_dtype(value, t);
  return Expr(std::move(n));
}

Expr Expr::constant_int(int64_t value, DType t) {
  if (is_float(t)) return constant(static_cast<double>(value), t);
  auto n = expr_node(ExprKind::Const, t);
  n->int_value = wrap_int(value, t);
  n->value = t == DType::u64 ? static_cast<double>(static_cast<uint64_t>(n->int_value)) : static_cast<double>(n->int_value);
  return Expr(std::move(n));
}

Expr Expr::constant_of(const Node& c) {
  DType t = ConstantAttrs(c).dtype();
  const AttrValue& v = ConstantAttrs(c).value();
  if (const bool* b = std::get_if<bool>(&v)) return constant_int(*b, t);
  if (const double* d = std::get_if<double>(&v)) return constant(*d, t);
  int64_t i = std::get<int64_t>(v);
  if (!is_float(t)) return constant_int(i, t);
  return constant(t == DType::f64 ? static_cast<double>(i) : static_cast<double>(static_cast<float>(i)), t);
}

Expr Expr::load(int buffer, const Index& index, DType t) {
  auto n = expr_node(ExprKind::Load, t);
  n->id = buffer;
  n->index = index;
  return Expr(std::move(n));
}

Expr Expr::let(int id, DType t) {
  auto n = expr_node(ExprKind::Let, t);
  n->id = id;
  return Expr(std::move(n));
}

Expr Expr::stage_result(int stage, DType t) {
  auto n = expr_node(ExprKind::StageResult, t);
  n->id = stage;
  return Expr(std::move(n));
}

Expr Expr::gemm_acc(DType t) { return Expr(expr_node(ExprKind::GemmAcc, t)); }

Expr Expr::index_value(const Index& index) {
  auto n = expr_node(ExprKind::IndexValue, DType::i64);
  n->index = index;
  return Expr(std::move(n));
}

Expr Expr::unary(Op op, const Expr& a, DType t) {
  auto n = expr_node(ExprKind::Unary, t);
  n->op = op;
  n->a = a;
  return Expr(std::move(n));
}

Expr Expr::binary(Op op, const Expr& a, const Expr& b, DType t) {
  auto n = expr_node(ExprKind::Binary, t);
  n->op = op;
  n->a = a;
  n->b = b;
  return Expr(std::move(n));
}

Expr Expr::select(const Expr& c, const Expr& a, const Expr& b) {
  auto n = expr_node(ExprKind::Select, a.dtype());
  n->a = c;
  n->b = a;
  n->c = b;
  return Expr(std::move(n));
}

Expr Expr::cast(const Expr& a, DType t) {
  if (a.dtype() == t) return a;
  auto n = expr_node(ExprKind::Cast, t);
  n->a = a;
  return Expr(std::move(n));
}

Expr Expr::intrinsic(Intrinsic f, DType t, const Expr& a, const Expr& b, const Expr& c) {
  auto n = expr_node(ExprKind::Intrinsic, t);
  n->intrinsic = f;
  n->a = a;
  n->b = b;
  n->c = c;
  return Expr(std::move(n));
}

ExprKind Expr::kind() const { return p_->kind; }
DType Expr::dtype() const { return p_->dtype; }

bool Expr::same_as(const Expr& o) const {
  if (p_ == o.p_) return true;
  if (!p_ || !o.p_) return false;
  const ExprNode &x = *p_, &y = *o.p_;
  if (x.kind != y.kind || x.dtype != y.dtype || x.op != y.op || x.intrinsic != y.intrinsic || x.id != y.id)
    return false;
  if (x.kind == ExprKind::Const && (is_float(x.dtype) ? !(x.value == y.value || (x.value != x.value && y.value != y.value))
                                                    : x.int_value != y.int_value))
    return false;
  if ((x.kind == ExprKind::Load || x.kind == ExprKind::IndexValue) && !x.index.same_as(y.index)) return false;
  auto same = [](const Expr& p, const Expr& q) { return p.defined() == q.defined() && (!p.defined() || p.same_as(q)); };
  return same(x.a, y.a) && same(x.b, y.b) && same(x.c, y.c);
}

Index substitute_vars(const Index& i, const std::function<Index(bool outer, int var)>& var) {
  const IndexNode& n = i.node();
  switch (n.kind) {
    case IndexKind::Const:
    case IndexKind::Sym: return i;
    case IndexKind::Outer:
    case IndexKind::Inner: return var(n.kind == IndexKind::Outer, static_cast<int>(n.value));
    case IndexKind::Add: return substitute_vars(n.a, var) + substitute_vars(n.b, var);
    case IndexKind::Mul: return substitute_vars(n.a, var) * substitute_vars(n.b, var);
    case IndexKind::FloorDiv: return Index::floordiv(substitute_vars(n.a, var), substitute_vars(n.b, var));
    case IndexKind::Mod: return Index::mod(substitute_vars(n.a, var), substitute_vars(n.b, var));
    case IndexKind::Min: return Index::min(substitute_vars(n.a, var), substitute_vars(n.b, var));
    case IndexKind::Max: return Index::max(substitute_vars(n.a, var), substitute_vars(n.b, var));
    case IndexKind::Scalar: return Index::scalar(substitute_vars(n.expr, var));
  }
  return i;
}

Expr map_expr(const Expr& e, const std::function<std::optional<Expr>(const Expr&)>& rewrite) {
  if (std::optional<Expr> r = rewrite(e)) return *std::move(r);
  const ExprNode& n = e.node();
  auto sub = [&](const Expr& x) { return x.defined() ? map_expr(x, rewrite) : x; };
  switch (n.kind) {
    case ExprKind::Unary: return Expr::unary(n.op, sub(n.a), n.dtype);
    case ExprKind::Binary: return Expr::binary(n.op, sub(n.a), sub(n.b), n.dtype);
    case ExprKind::Select: return Expr::select(sub(n.a), sub(n.b), sub(n.c));
    case ExprKind::Cast: return Expr::cast(sub(n.a), n.dtype);
    case ExprKind::Intrinsic: return Expr::intrinsic(n.intrinsic, n.dtype, sub(n.a), sub(n.b), sub(n.c));
    default: return e;
  }
}

// The nodes that hold an index: loads and index values, rebuilt with `f` applied to it.
std::optional<Expr> with_index(const Expr& e, const std::function<Index(const Index&)>& f) {
  const ExprNode& n = e.node();
  if (n.kind == ExprKind::Load) return Expr::load(n.id, f(n.index), n.dtype);
  if (n.kind == ExprKind::IndexValue) return Expr::index_value(f(n.index));
  return std::nullopt;
}

Expr substitute_vars(const Expr& e, const std::function<Index(bool outer, int var)>& var) {
  return map_expr(e, [&](const Expr& x) { return with_index(x, [&](const Index& i) { return substitute_vars(i, var); }); });
}

void visit_exprs(const Expr& e, const std::function<void(const Expr&)>& f) {
  f(e);
  const ExprNode& n = e.node();
  if (n.index.defined()) {
    std::function<void(const Index&)> in_index = [&](const Index& i) {
      const IndexNode& x = i.node();
      if (x.kind == IndexKind::Scalar) visit_exprs(x.expr, f);
      if (x.a.defined()) in_index(x.a);
      if (x.b.defined()) in_index(x.b);
    };
    in_index(n.index);
  }
  for (const Expr* c : {&n.a, &n.b, &n.c})
    if (c->defined()) visit_exprs(*c, f);
}

void collect_vars(const Index& i, std::set<int>& outer, std::set<int>& inner) {
  const IndexNode& n = i.node();
  if (n.kind == IndexKind::Outer) outer.insert(static_cast<int>(n.value));
  if (n.kind == IndexKind::Inner) inner.insert(static_cast<int>(n.value));
  if (n.kind == IndexKind::Scalar)
    visit_exprs(n.expr, [&](const Expr& e) {
      if (e.node().index.defined()) collect_vars(e.node().index, outer, inner);
    });
  if (n.a.defined()) collect_vars(n.a, outer, inner);
  if (n.b.defined()) collect_vars(n.b, outer, inner);
}

const Expr* let_value(const Kernel& k, int id) {
  for (const Stage& st : k.stages)
    for (const Let& l : st.lets)
      if (l.id == id) return &l.value;
  return nullptr;
}

// ---- printing -------------------------------------------------------------------

std::string_view combiner_name(Combiner c) {
  switch (c) {
    case Combiner::Sum: return "sum";
    case Combiner::Prod: return "prod";
    case Combiner::Max: return "max";
    case Combiner::Min: return "min";
    case Combiner::ArgMax: return "argmax";
  }
  return "?";
}

std::string_view intrinsic_name(Intrinsic f) {
  switch (f) {
    case Intrinsic::GeluTanh: return "gelu_tanh";
    case Intrinsic::OnePlusTanh: return "one_plus_tanh";
    case Intrinsic::MulReciprocal: return "mul_reciprocal";
  }
  return "?";
}

std::string_view launch_name(Schedule::Launch l) {
  switch (l) {
    case Schedule::Launch::Elementwise: return "elementwise";
    case Schedule::Launch::Stages: return "stages";
    case Schedule::Launch::Rows: return "rows";
  }
  return "?";
}

namespace {

bool is_atomic(const Index& i) {
  switch (i.kind()) {
    case IndexKind::Const: return *i.constant() >= 0;
    case IndexKind::Outer:
    case IndexKind::Inner:
    case IndexKind::Sym:
    case IndexKind::Min:
    case IndexKind::Max:
    case IndexKind::Scalar: return true;
    default: return false;
  }
}

std::string paren(const Index& i, const Kernel* k) {
  return is_atomic(i) ? print_index(i, k) : str_cat("(", print_index(i, k), ")");
}

std::string buffer_name(int id, const Kernel* k) {
  if (k && id >= 0 && id < static_cast<int>(k->buffers.size())) return k->buffers[id].name;
  return str_cat("b", id);
}

std::string print_dims_loop(const std::vector<Dim>& extents, char var) {
  return str_join(extents, ", ", [&, i = 0](const Dim& d) mutable {
    return str_cat(var, i++, " < ", d.to_string());
  });
}

}  // namespace

std::string print_index(const Index& i, const Kernel* k) {
  const IndexNode& n = i.node();
  switch (n.kind) {
    case IndexKind::Const: return std::to_string(n.value);
    case IndexKind::Outer: return str_cat("o", n.value);
    case IndexKind::Inner: return str_cat("r", n.value);
    case IndexKind::Sym: return n.name;
    case IndexKind::Add: return str_cat(print_index(n.a, k), " + ", print_index(n.b, k));
    case IndexKind::Mul: {
      // Left to right reads a // b * c as (a // b) * c: a floordiv or mod on the right needs parentheses.
      auto side = [&](const Index& x, bool right) {
        bool p = x.kind() == IndexKind::Add || (right && (x.kind() == IndexKind::FloorDiv || x.kind() == IndexKind::Mod));
        return p ? str_cat("(", print_index(x, k), ")") : print_index(x, k);
      };
      return str_cat(side(n.a, false), " * ", side(n.b, true));
    }
    case IndexKind::FloorDiv: return str_cat(paren(n.a, k), " // ", paren(n.b, k));
    case IndexKind::Mod: return str_cat(paren(n.a, k), " % ", paren(n.b, k));
    case IndexKind::Min: return str_cat("min(", print_index(n.a, k), ", ", print_index(n.b, k), ")");
    case IndexKind::Max: return str_cat("max(", print_index(n.a, k), ", ", print_index(n.b, k), ")");
    case IndexKind::Scalar: return str_cat("int(", print_expr(n.expr, k), ")");
  }
  return "?";
}

std::string print_expr(const Expr& e, const Kernel* k) {
  const ExprNode& n = e.node();
  switch (n.kind) {
    case ExprKind::Const:
      if (n.dtype == DType::boolean) return n.int_value != 0 ? "true" : "false";
      if (is_float(n.dtype)) return str_cat(format_double(n.value), ":", dtype_name(n.dtype));
      if (n.dtype == DType::u64) return str_cat(static_cast<uint64_t>(n.int_value), ":u64");
      return str_cat(n.int_value, ":", dtype_name(n.dtype));
    case ExprKind::Load: return str_cat("load ", buffer_name(n.id, k), "[", print_index(n.index, k), "]");
    case ExprKind::Let: return str_cat("t", n.id);
    case ExprKind::StageResult: return str_cat("s", n.id);
    case ExprKind::GemmAcc: return "acc";
    case ExprKind::IndexValue: return str_cat("index(", print_index(n.index, k), ")");
    case ExprKind::Unary: return str_cat(op_name(n.op), "(", print_expr(n.a, k), ")");
    case ExprKind::Binary:
      return str_cat(op_name(n.op), "(", print_expr(n.a, k), ", ", print_expr(n.b, k), ")");
    case ExprKind::Select:
      return str_cat("select(", print_expr(n.a, k), ", ", print_expr(n.b, k), ", ", print_expr(n.c, k), ")");
    case ExprKind::Cast: return str_cat("cast<", dtype_name(n.dtype), ">(", print_expr(n.a, k), ")");
    case ExprKind::Intrinsic: {
      std::string s = str_cat(intrinsic_name(n.intrinsic), "(", print_expr(n.a, k));
      for (const Expr* c : {&n.b, &n.c})
        if (c->defined()) s += str_cat(", ", print_expr(*c, k));
      return s + ")";
    }
  }
  return "?";
}

namespace {

std::string let_list(const std::vector<int>& ids) {
  return str_join(ids, ", ", [](int id) { return str_cat("t", id); });
}

std::string print_schedule(const Schedule& s, const Kernel& k) {
  std::string out = str_cat("  schedule:\n    launch ", launch_name(s.launch), ", work ", s.work.to_string());
  if (s.launch == Schedule::Launch::Rows) out += str_cat(", row ", shape_to_string(s.row));
  out += "\n";
  if (s.width == 1) return out;
  auto access = [&](const Access& a) { return str_cat(buffer_name(a.buffer, &k), "[", print_index(a.index, &k), "]"); };
  out += str_cat("    vector width ", s.width, " along ", s.vector_outer ? "o" : "r", s.vector_var, ", divisible ",
                 shape_to_string(s.divisible), ", aligned [",
                 str_join(s.aligned, ", ", [&](int b) { return buffer_name(b, &k); }), "]",
                 s.streams_l2 ? ", streams L2" : "", ":\n");
  for (const Schedule::VectorAccess& v : s.vector)
    out += str_cat("      ", access(v.access), v.streamed ? " streamed" : "", "\n");
  if (!s.row_cache.empty())
    out += str_cat("    row cache ", s.row_cache_chunks, " chunks per thread",
                   s.row_threads > 0 ? str_cat(", ", s.row_threads, " threads") : std::string(), ": ",
                   str_join(s.row_cache, ", ", [&](int v) { return access(s.vector[v].access); }), "\n");
  for (size_t i = 0; i < s.value_cache.size(); ++i)
    out += str_cat("    value cache ec", i, ": t", s.value_cache[i].let, " read by ", let_list(s.value_cache[i].readers),
                   "\n");
  for (size_t si = 0; si < s.pairs.size(); ++si)
    if (!s.pairs[si].packed.empty())
      out += str_cat("    stage ", si, " in bf16 pairs: packed ", let_list(s.pairs[si].packed), "; paired ",
                     let_list(s.pairs[si].paired), "\n");
  return out;
}

}  // namespace

absl::Status index_check_error(const IndexCheck& c, const int64_t* words) {
  if (words[0] == 0) return absl::OkStatus();
  const int64_t dim = words[0] - 1;
  return gather_index_error(c.node, words[1], dim, c.axis);
}

std::string print_kernel(const Kernel& k) {
  std::string s = str_cat("kernel ", k.name, "\n");
  for (const Buffer& b : k.buffers)
    s += str_cat("  ", b.role == Buffer::Role::Input ? "in  " : b.role == Buffer::Role::Output ? "out " : "chk ", b.name, ": ", dtype_name(b.dtype),
                 shape_to_string(b.shape), "\n");
  if (!k.symbols.empty()) s += str_cat("  symbols ", str_join(k.symbols, ", ", [](const std::string& x) { return x; }), "\n");
  std::string ind = "  ";
  if (!k.domain.empty()) {
    s += str_cat("  for ", print_dims_loop(k.domain, 'o'), ":\n");
    ind = "    ";
  }
  if (k.gemm) {
    const GemmSpec& g = *k.gemm;
    auto operand = [&](const GemmOperand& o) {
      std::string strides =
          o.strides ? str_cat(" strides offset ", o.strides->offset.to_string(), " outer ", shape_to_string(o.strides->outer),
                              " k ", o.strides->k.to_string())
                    : std::string(" (not affine)");
      return str_cat(buffer_name(o.buffer, &k), "[", print_index(o.index, &k), "]", strides);
    };
    s += str_cat(ind, "acc: ", dtype_name(g.acc_dtype), " = gemm batch ", shape_to_string(g.batch), " m ",
                 g.m.to_string(), " n ", g.n.to_string(), " k ", g.k.to_string(), " (r0 = k)\n");
    s += str_cat(ind, "  a ", operand(g.a), "\n", ind, "  b ", operand(g.b), "\n");
  }
  for (size_t si = 0; si < k.stages.size(); ++si) {
    const Stage& st = k.stages[si];
    std::string loop = st.extents.empty() ? "" : str_cat(" for ", print_dims_loop(st.extents, 'r'));
    if (st.kind == Stage::Kind::Reduce)
      s += str_cat(ind, "s", si, " = reduce ", combiner_name(st.combiner), " acc ", dtype_name(st.acc_dtype), loop, ":\n");
    else
      s += str_cat(ind, "map", loop, ":\n");
    for (const Let& l : st.lets)
      s += str_cat(ind, "  t", l.id, ": ", dtype_name(l.value.dtype()), " = ", print_expr(l.value, &k), "\n");
    for (const Store& st_ : st.stores)
      s += str_cat(ind, "  store ", st_.mask.defined() ? str_cat("if ", print_expr(st_.mask, &k), " ") : std::string(),
                   buffer_name(st_.buffer, &k), "[", print_index(st_.index, &k), "] = ",
                   print_expr(st_.value, &k), "\n");
    if (st.kind == Stage::Kind::Reduce) s += str_cat(ind, "  fold ", print_expr(st.value, &k), "\n");
  }
  if (k.schedule) s += print_schedule(*k.schedule, k);
  return s;
}

namespace {

// A structural key of `e` (lets expanded): equal keys compute the same value at the same
// inner point of stages with the same extents. Sets `costly` when `e` has a costly op.
std::string value_key(const Kernel& k, const Expr& e, bool& costly) {
  const ExprNode& n = e.node();
  auto kids = [&] {
    std::string s;
    for (const Expr* c : {&n.a, &n.b, &n.c})
      if (c->defined()) s += str_cat(value_key(k, *c, costly), ",");
    return s;
  };
  switch (n.kind) {
    case ExprKind::Const: {
      if (!is_float(n.dtype)) return str_cat("c", dtype_name(n.dtype), n.int_value);
      char exact[40];
      std::snprintf(exact, sizeof exact, "%a", n.value);
      return str_cat("c", dtype_name(n.dtype), exact);
    }
    case ExprKind::Load: return str_cat("L", n.id, ":", print_index(n.index));
    case ExprKind::Let:
      for (const Stage& st : k.stages)
        for (const Let& l : st.lets)
          if (l.id == n.id) return value_key(k, l.value, costly);
      return str_cat("?", n.id);
    case ExprKind::StageResult: return str_cat("s", n.id);
    case ExprKind::GemmAcc: return "acc";
    case ExprKind::IndexValue: return str_cat("i", print_index(n.index));
    case ExprKind::Unary:
      costly |= n.op == Op::Exp || n.op == Op::Log || n.op == Op::Tanh || n.op == Op::Erf || n.op == Op::Sin ||
                n.op == Op::Cos || n.op == Op::Sigmoid || n.op == Op::Silu;
      return str_cat("u", static_cast<int>(n.op), dtype_name(n.dtype), "(", kids(), ")");
    case ExprKind::Binary:
      costly |= n.op == Op::Pow || n.op == Op::Fmod;
      return str_cat("b", static_cast<int>(n.op), dtype_name(n.dtype), "(", kids(), ")");
    case ExprKind::Select: return str_cat("?(", kids(), ")");
    case ExprKind::Cast: return str_cat("k", dtype_name(n.dtype), "(", kids(), ")");
    case ExprKind::Intrinsic:
      costly |= n.intrinsic != Intrinsic::MulReciprocal;  // the tanh forms take an exp
      return str_cat("n", static_cast<int>(n.intrinsic), dtype_name(n.dtype), "(", kids(), ")");
  }
  return "";
}

}  // namespace

std::map<int, int> recomputed_lets(const Kernel& k) {
  std::map<std::string, std::pair<size_t, int>> first;  // key -> (stage, let id)
  std::map<int, int> out;
  for (size_t si = 0; si < k.stages.size(); ++si) {
    const Stage& st = k.stages[si];
    if (st.extents.empty()) continue;
    for (const Let& l : st.lets) {
      if (!is_float(l.value.dtype())) continue;
      bool costly = false;
      std::string key = str_cat(shape_to_string(st.extents), value_key(k, l.value, costly));
      if (!costly) continue;
      auto [it, fresh] = first.emplace(key, std::pair{si, l.id});
      if (!fresh && it->second.first != si) out[l.id] = it->second.second;
    }
  }
  return out;
}

}  // namespace kiln::kir
