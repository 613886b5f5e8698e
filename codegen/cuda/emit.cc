#include "codegen/cuda/emit.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "codegen/acc_buffer.h"
#include "ir/str.h"

namespace kiln::cuda {
namespace {

using kir::Expr;
using kir::ExprKind;
using kir::Index;
using kir::IndexKind;

std::string value_type(DType t) {
  switch (t) {
    case DType::f32: case DType::f16: case DType::bf16: return "float";
    case DType::i32: return "int";
    case DType::i64: return "long long";
    case DType::boolean: return "bool";
  }
  return "float";
}

std::string storage_type(DType t) {
  switch (t) {
    case DType::f16: case DType::bf16: return "unsigned short";
    default: return value_type(t);
  }
}

// `v` (a value of dtype t) in the storage representation, and back.
std::string to_storage(const std::string& v, DType t) {
  if (t == DType::bf16) return str_cat("kiln_f2bf(", v, ")");
  if (t == DType::f16) return str_cat("kiln_f2h(", v, ")");
  return v;
}
std::string from_storage(const std::string& v, DType t) {
  if (t == DType::bf16) return str_cat("kiln_bf2f(", v, ")");
  if (t == DType::f16) return str_cat("kiln_h2f(", v, ")");
  return v;
}

// Registers holding `width` loaded elements of dtype t: bf16 pairs as 32-bit words, read by
// kiln_bf2f_at (one instruction per element where a 16-bit element takes two).
struct VecArray {
  std::string type;
  int count;
};
VecArray vec_array(DType t, int width) {
  if (t == DType::bf16 && width % 2 == 0) return {"unsigned", width / 2};
  return {storage_type(t), width};
}
// The declaration of `array`, then the load of `width` elements of dtype t at `ptr` into it,
// and element v of it as a float.
std::string vec_decl(DType t, int width, const std::string& array) {
  VecArray a = vec_array(t, width);
  return str_cat("alignas(16) ", a.type, " ", array, "[", a.count, "]");
}
// With `once` (the load reads each element once: its index takes every var of the domain, in
// a row kernel's vector entry), the load goes under the L2 policy kpol (kiln_policy); others,
// as of a broadcast weight, keep the normal priority.
std::string vec_load(DType t, int width, const std::string& ptr, const std::string& array, bool once) {
  VecArray a = vec_array(t, width);
  std::string p = a.type == storage_type(t) ? ptr : str_cat("reinterpret_cast<const ", a.type, "*>(", ptr, ")");
  if (once) return str_cat("kiln_ldv_once<", a.type, ", ", a.count, ">(", p, ", ", array, ", kpol)");
  return str_cat("kiln_ldv<", a.type, ", ", a.count, ">(", p, ", ", array, ")");
}
std::string vec_element(DType t, int width, const std::string& array, const std::string& pos) {
  if (vec_array(t, width).type != storage_type(t)) return str_cat("kiln_bf2f_at(", array, ", ", pos, ")");
  return from_storage(str_cat(array, "[", pos, "]"), t);
}
// Whether vector stores of dtype t collect floats and round them in pairs (kiln_stv_pairs).
bool stores_pairs(DType t, int width) { return (t == DType::bf16 || t == DType::f16) && width % 2 == 0; }

// A float result rounded to the storage precision of t.
std::string round_float(const std::string& v, DType t) {
  if (t == DType::bf16) return str_cat("kiln_rbf(", v, ")");
  if (t == DType::f16) return str_cat("kiln_rh(", v, ")");
  return v;
}

std::string float_literal(double v) {
  float f = static_cast<float>(v);
  if (std::isnan(f)) return "kiln_nan()";
  if (std::isinf(f)) return f > 0 ? "kiln_inf()" : "(-kiln_inf())";
  return fmt::format("{:a}f", f);
}

std::string int_literal(int64_t v) {
  if (v == std::numeric_limits<int64_t>::min()) return "(-9223372036854775807LL - 1)";
  return v < 0 ? str_cat("(", v, "LL)") : str_cat(v, "LL");
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Whether every term of `d` is a multiple of `v` (so d is, for every symbol value).
bool surely_divisible(const Dim& d, int v) {
  for (const SymTerm& t : d.poly().terms)
    if (t.coeff % v != 0) return false;
  return true;
}

class Emitter {
 public:
  Emitter(const kir::Kernel& k, const Bindings& baked, GemmForm form)
      : k_(k), baked_(baked), form_(form), recomputed_(kir::recomputed_lets(k)) {}

  absl::StatusOr<CudaKernel> run() {
    // The epilogue of a library GEMM: the accumulator is an extra f32 input.
    if (k_.gemm && form_ == GemmForm::AccBuffer) k_ = kir::with_accumulator_buffer(k_);
    for (const std::string& s : k_.symbols)
      if (!baked_.contains(s)) out_.symbols.push_back(s);
    out_.name = k_.name;
    out_.buffers = static_cast<int>(k_.buffers.size());
    for (const kir::Buffer& b : k_.buffers) out_.bytes += shape_numel(b.shape) * dtype_size(b.dtype);

    bool has_reduce = false;
    for (const kir::Stage& st : k_.stages) {
      has_reduce |= st.kind == kir::Stage::Kind::Reduce;
      if (!st.extents.empty() && !k_.domain.empty() && st.kind == kir::Stage::Kind::Map && !has_reduce)
        return err("a map stage with its own extents over a non-empty domain needs a reduce stage before it");
    }
    bool stages_form = !has_reduce && k_.domain.empty() &&
                       std::any_of(k_.stages.begin(), k_.stages.end(), [](const kir::Stage& s) { return !s.extents.empty(); });
    if (has_reduce && k_.gemm) return err("a GEMM kernel with reduce stages");

    if (has_reduce) {
      out_.launch = LaunchKind::Rows;
      out_.work = shape_numel(k_.domain);
      inner_ = k_.stages.front().extents;
      for (const kir::Stage& st : k_.stages)
        if (!st.extents.empty()) inner_ = st.extents;
      out_.row_length = shape_numel(inner_);
      plan_vector(false);
      emit_rows(1);
      if (out_.width > 1) emit_rows(out_.width);
    } else if (stages_form) {
      out_.launch = LaunchKind::Stages;
      out_.work = stage_work_bound();
      emit_stages();
    } else {
      out_.launch = LaunchKind::Elementwise;
      out_.work = shape_numel(k_.domain);
      if (!k_.gemm) plan_vector(true);
      emit_elementwise(1);
      if (out_.width > 1) emit_elementwise(out_.width);
    }
    out_.source = std::move(src_);
    return std::move(out_);
  }

 private:
  template <typename... A>
  absl::Status err(const A&... parts) const {
    return absl::InvalidArgumentError(str_cat("CUDA emission of kernel ", k_.name, ": ", parts...));
  }

  // The Stages form launches for its longest stage; with symbolic extents any one may be the
  // longest, so the bound is their sum (threads past a stage's end skip it).
  Dim stage_work_bound() const {
    Dim total(0);
    std::vector<Dim> seen;
    for (const kir::Stage& st : k_.stages) {
      Dim n = shape_numel(st.extents);
      if (std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
      seen.push_back(n);
    }
    bool all_static = std::all_of(seen.begin(), seen.end(), [](const Dim& d) { return d.is_constant(); });
    if (all_static) {
      int64_t m = 1;
      for (const Dim& d : seen) m = std::max(m, *d.constant());
      return m;
    }
    for (const Dim& d : seen) total = total + d;
    return total;
  }

  // ---- names and scalar code ---------------------------------------------------

  std::string sym(const std::string& name) const {
    if (auto it = baked_.find(name); it != baked_.end()) return int_literal(it->second);
    return str_cat("S_", name);
  }

  bool is_vec_var(bool outer, int64_t var) const {
    return width_ > 1 && vec_outer_ == outer && vec_var_ == var;
  }

  std::string var(bool outer, int64_t v) const {
    std::string name = str_cat(outer ? "o" : "r", v);
    if (!is_vec_var(outer, v)) return name;
    if (lane0_) return name + "_0";
    return pair_lane_ >= 0 ? str_cat(name, "_l", pair_lane_) : name;
  }

  static bool nonneg(const Index& i) {
    const kir::IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Const: return n.value >= 0;
      case IndexKind::Outer: case IndexKind::Inner: case IndexKind::Sym: return true;
      case IndexKind::Scalar: return false;
      default: return nonneg(n.a) && nonneg(n.b);
    }
  }

  std::string index(const Index& i) const {
    const kir::IndexNode& n = i.node();
    switch (n.kind) {
      case IndexKind::Const: return int_literal(n.value);
      case IndexKind::Outer: return var(true, n.value);
      case IndexKind::Inner: return var(false, n.value);
      case IndexKind::Sym: return sym(n.name);
      case IndexKind::Add: return str_cat("(", index(n.a), " + ", index(n.b), ")");
      case IndexKind::Mul: return str_cat("(", index(n.a), " * ", index(n.b), ")");
      case IndexKind::FloorDiv:
        return nonneg(n.a) ? str_cat("(", index(n.a), " / ", index(n.b), ")")
                           : str_cat("kiln_fdiv(", index(n.a), ", ", index(n.b), ")");
      case IndexKind::Mod:
        return nonneg(n.a) ? str_cat("(", index(n.a), " % ", index(n.b), ")")
                           : str_cat("kiln_fmod(", index(n.a), ", ", index(n.b), ")");
      case IndexKind::Min: return str_cat("kiln_imin(", index(n.a), ", ", index(n.b), ")");
      case IndexKind::Max: return str_cat("kiln_imax(", index(n.a), ", ", index(n.b), ")");
      case IndexKind::Scalar: return str_cat("((long long)(", expr(n.expr), "))");
    }
    return "0";
  }

  std::string dim(const Dim& d) const { return index(Index::from_dim(d)); }

  std::string buf(int b) const { return str_cat("b", b); }

  std::string expr(const Expr& e) const {
    const kir::ExprNode& n = e.node();
    DType t = n.dtype;
    switch (n.kind) {
      case ExprKind::Const:
        if (is_float(t)) return float_literal(round_to_dtype(n.value, t));
        if (t == DType::boolean) return n.value != 0 ? "true" : "false";
        return t == DType::i32 ? str_cat("((int)", int_literal(static_cast<int64_t>(n.value)), ")")
                               : int_literal(static_cast<int64_t>(n.value));
      case ExprKind::Load: {
        if (auto it = hoisted_.find(&e.node()); it != hoisted_.end()) return vec_element(t, width_, it->second, lane_pos());
        return from_storage(str_cat(buf(n.id), "[", index(n.index), "]"), t);
      }
      case ExprKind::Let: return let_name(n.id);
      case ExprKind::StageResult:  // an argmax stage's result is its position
        return k_.stages[n.id].combiner == kir::Combiner::ArgMax ? str_cat("s", n.id, "_p") : str_cat("s", n.id);
      case ExprKind::GemmAcc: return "acc";
      case ExprKind::IndexValue: return str_cat("((long long)", index(n.index), ")");
      case ExprKind::Select: return str_cat("(", expr(n.a), " ? ", expr(n.b), " : ", expr(n.c), ")");
      case ExprKind::Cast: return cast(expr(n.a), n.a.dtype(), t);
      case ExprKind::Unary: return unary(n.op, expr(n.a), n.a.dtype(), t);
      case ExprKind::Binary:
        if (const Expr* u = one_plus_tanh_of(n))
          return round_float(str_cat("(2.0f * kiln_half_one_plus_tanh(", expr(*u), "))"), t);
        if (auto g = gelu_tanh_of(n))
          return round_float(str_cat("kiln_gelu_tanh(", g->x, ", ", float_literal(g->k1), ", ", float_literal(g->k0), ")"), t);
        return binary(n.op, expr(n.a), expr(n.b), n.a.dtype(), t, &n.b);
    }
    return "0";
  }

  static std::string cast(const std::string& a, DType from, DType to) {
    if (from == to) return a;
    if (is_float(from)) {
      if (is_float(to)) return round_float(a, to);
      if (to == DType::boolean) return str_cat("(", a, " != 0.0f)");
      if (to == DType::i64) return str_cat("kiln_f2i(", a, ")");
      return str_cat("((int)kiln_f2i(", a, "))");
    }
    if (is_float(to)) return round_float(str_cat("((float)(", a, "))"), to);
    if (to == DType::boolean) return str_cat("(", a, " != 0)");
    return str_cat("((", value_type(to), ")(", a, "))");
  }

  std::string unary(Op op, const std::string& a, DType in, DType t) const {
    if (is_float(in)) {
      std::string f;
      switch (op) {
        case Op::Neg: f = str_cat("(-", a, ")"); break;
        case Op::Abs: f = str_cat("fabsf(", a, ")"); break;
        case Op::Exp: f = str_cat("kiln_exp(", a, ")"); break;
        case Op::Log: f = str_cat("logf(", a, ")"); break;
        case Op::Sqrt: f = str_cat("sqrtf(", a, ")"); break;
        case Op::Rsqrt: f = str_cat("(1.0f / sqrtf(", a, "))"); break;
        case Op::Sin: f = str_cat("sinf(", a, ")"); break;
        case Op::Cos: f = str_cat("cosf(", a, ")"); break;
        case Op::Tanh: f = str_cat("tanhf(", a, ")"); break;
        case Op::Sigmoid: f = str_cat("kiln_sigmoid(", a, ")"); break;
        case Op::Relu: f = str_cat("(", a, " < 0.0f ? 0.0f : ", a, ")"); break;
        case Op::Silu: f = str_cat("kiln_silu(", a, ")"); break;
        case Op::Erf: f = str_cat("kiln_erf(", a, ")"); break;
        case Op::Reciprocal: f = str_cat("(1.0f / ", a, ")"); break;
        case Op::Floor: f = str_cat("floorf(", a, ")"); break;
        case Op::Ceil: f = str_cat("ceilf(", a, ")"); break;
        default: f = "kiln_nan()"; break;
      }
      return round_float(f, t);
    }
    std::string i;
    switch (op) {
      case Op::Neg: i = str_cat("kiln_ineg(", a, ")"); break;
      case Op::Abs: i = str_cat("(", a, " < 0 ? kiln_ineg(", a, ") : (long long)", a, ")"); break;
      case Op::Relu: i = str_cat("(", a, " < 0 ? 0LL : (long long)", a, ")"); break;
      case Op::Not: i = str_cat("(!", a, ")"); break;
      default: i = "0LL"; break;
    }
    return cast(i, DType::i64, t);
  }

  // Whether the emitted value of `e` is already a bf16 value: every op, cast and load of
  // dtype bf16 rounds (round_float) or reads one; stage results and accumulators do not.
  bool rounded_to_bf16(const Expr& e) const {
    if (e.dtype() != DType::bf16) return false;
    switch (e.kind()) {
      case ExprKind::Const: case ExprKind::Load: case ExprKind::Unary: case ExprKind::Binary: case ExprKind::Cast:
        return true;
      case ExprKind::Select: return rounded_to_bf16(e.node().b) && rounded_to_bf16(e.node().c);
      case ExprKind::Let: {
        const Expr* v = kir::let_value(k_, e.node().id);
        return v && rounded_to_bf16(*v);
      }
      default: return false;
    }
  }

  // The f32 value that a store of `e` into a buffer of dtype t rounds: where e has dtype t
  // and is computed in stage `st`, its expression without its own final rounding, so that a
  // pair conversion rounds it once (the value is the same: rounding twice to t is rounding
  // once).
  std::string unrounded(const kir::Stage& st, const Expr& e, DType t) const {
    const Expr* x = &e;
    if (x->kind() == ExprKind::Let) {
      auto own = std::find_if(st.lets.begin(), st.lets.end(), [&](const kir::Let& l) { return l.id == x->node().id; });
      if (own == st.lets.end() || cache_read_.contains(own->id)) return expr(Expr::cast(e, DType::f32));
      x = &own->value;
    }
    const kir::ExprNode& n = x->node();
    if (x->dtype() == t) {  // the op itself, with an f32 result
      switch (n.kind) {
        case ExprKind::Unary: return unary(n.op, expr(n.a), n.a.dtype(), DType::f32);
        case ExprKind::Binary: return binary(n.op, expr(n.a), expr(n.b), n.a.dtype(), DType::f32, &n.b);
        case ExprKind::Cast: return cast(expr(n.a), n.a.dtype(), DType::f32);
        default: break;
      }
    }
    return is_float(x->dtype()) ? expr(*x) : expr(Expr::cast(e, DType::f32));
  }

  // u where `n` is 1 + tanh(u) in f32 (gelu's tanh form): 2 * sigmoid(2u) is the same value
  // with an exp and a fast reciprocal instead of tanhf's two branches, and no cancellation
  // where tanh(u) is near -1.
  static const Expr* one_plus_tanh_of(const kir::ExprNode& n) {
    if (n.op != Op::Add || n.dtype != DType::f32) return nullptr;
    for (auto [c, t] : {std::pair{&n.a, &n.b}, std::pair{&n.b, &n.a}})
      if (c->kind() == ExprKind::Const && c->node().value == 1.0 && t->kind() == ExprKind::Unary &&
          t->node().op == Op::Tanh && t->dtype() == DType::f32)
        return &t->node().a;
    return nullptr;
  }

  // x's text and {k1, k0} where `n` is (0.5 * x) * (1 + tanh(u)) in f32 with u = c * (x + ((k * x)
  // * x) * x), as lower.cc writes the tanh gelu: x * sigmoid(2u) is the same value (scaling by
  // 0.5 and by 2 is exact), and its exponent -2u log2(e) is x (k0 + k1 x^2) with k0 = -2 c
  // log2(e) and k1 = k0 k, from the f32 values of c and k, rounded to f32.
  struct GeluTanh {
    std::string x;
    double k1, k0;
  };
  std::optional<GeluTanh> gelu_tanh_of(const kir::ExprNode& n) const {
    auto f32_op = [](const Expr& e, Op op) {
      return e.kind() == ExprKind::Binary && e.node().op == op && e.dtype() == DType::f32;
    };
    auto constant = [](const Expr& e) {
      return e.kind() == ExprKind::Const ? std::optional<double>(round_to_dtype(e.node().value, DType::f32))
                                         : std::nullopt;
    };
    if (n.op != Op::Mul || n.dtype != DType::f32) return std::nullopt;
    for (auto [h, t] : {std::pair{&n.a, &n.b}, std::pair{&n.b, &n.a}}) {
      const Expr* u = t->kind() == ExprKind::Binary ? one_plus_tanh_of(t->node()) : nullptr;
      if (!u || !f32_op(*h, Op::Mul)) continue;
      const kir::ExprNode& m = h->node();
      for (auto [half, xe] : {std::pair{&m.a, &m.b}, std::pair{&m.b, &m.a}}) {
        if (constant(*half) != 0.5 || !f32_op(*u, Op::Mul) || !f32_op(u->node().b, Op::Add)) continue;
        std::string x = expr(*xe);
        const Expr& sum = u->node().b;
        std::optional<double> c = constant(u->node().a), k;
        const Expr* cube = &sum.node().b;
        bool ok = c && expr(sum.node().a) == x;
        for (int i = 0; ok && i < 2; ++i) {  // ((k * x) * x) * x: two outer products by x
          ok = f32_op(*cube, Op::Mul) && expr(cube->node().b) == x;
          if (ok) cube = &cube->node().a;
        }
        ok = ok && f32_op(*cube, Op::Mul) && (k = constant(cube->node().a)) && expr(cube->node().b) == x;
        if (!ok) continue;
        double k0 = -2.0 * *c * M_LOG2E;
        return GeluTanh{x, round_to_dtype(k0 * *k, DType::f32), round_to_dtype(k0, DType::f32)};
      }
    }
    return std::nullopt;
  }

  static bool divisor_is_row_statistic(const Expr* b) {
    while (b && b->kind() == ExprKind::Cast) b = &b->node().a;
    return b && b->kind() == ExprKind::StageResult;
  }

  std::string binary(Op op, const std::string& a, const std::string& b, DType in, DType t,
                     const Expr* b_expr = nullptr) const {
    auto cmp = [&](const char* o) { return str_cat("(", a, " ", o, " ", b, ")"); };
    switch (op) {
      case Op::Eq: return cmp("==");
      case Op::Ne: return cmp("!=");
      case Op::Lt: return cmp("<");
      case Op::Le: return cmp("<=");
      case Op::Gt: return cmp(">");
      case Op::Ge: return cmp(">=");
      default: break;
    }
    if (is_float(in)) {
      std::string f;
      switch (op) {
        case Op::Add: f = cmp("+"); break;
        case Op::Sub: f = cmp("-"); break;
        case Op::Mul: f = cmp("*"); break;
        // Division by a row statistic (softmax's sum) as a product with its reciprocal,
        // computed once per row (correctly rounded): within 1 ulp of the quotient.
        case Op::Div: f = divisor_is_row_statistic(b_expr) ? str_cat("(", a, " * __frcp_rn(", b, "))") : cmp("/"); break;
        case Op::Pow: f = str_cat("powf(", a, ", ", b, ")"); break;
        case Op::Maximum: f = str_cat("kiln_fmax(", a, ", ", b, ")"); break;
        case Op::Minimum: f = str_cat("kiln_fmin(", a, ", ", b, ")"); break;
        default: f = "kiln_nan()"; break;
      }
      return round_float(f, t);
    }
    std::string i;
    auto call = [&](const char* fn) { return str_cat(fn, "((long long)", a, ", (long long)", b, ")"); };
    switch (op) {
      case Op::Add: i = call("kiln_iadd"); break;
      case Op::Sub: i = call("kiln_isub"); break;
      case Op::Mul: i = call("kiln_imul"); break;
      case Op::Div: i = call("kiln_idiv"); break;
      case Op::Maximum: i = call("kiln_imax"); break;
      case Op::Minimum: i = call("kiln_imin"); break;
      case Op::And: return str_cat("(", a, " && ", b, ")");
      case Op::Or: return str_cat("(", a, " || ", b, ")");
      default: i = "0LL"; break;
    }
    return cast(i, DType::i64, t);
  }

  // ---- vectorization -------------------------------------------------------------

  // Chooses the vector width and the loads/stores that move `width` consecutive elements
  // of the vectorized variable (the last outer var for elementwise kernels, the last inner
  // var for row kernels) in one access.
  void plan_vector(bool outer) {
    const std::vector<Dim>& ext = outer ? k_.domain : inner_;
    if (ext.empty()) return;
    int var = static_cast<int>(ext.size()) - 1;
    size_t n_outer = k_.domain.size(), n_inner = outer ? 0 : inner_.size();
    struct Candidate {
      int buffer;
      Index index;
      kir::AffineIndex aff;
    };
    std::vector<Candidate> cands;
    auto consider = [&](int buffer, const Index& i) {
      std::optional<kir::AffineIndex> a = kir::affine_index(i, n_outer, n_inner);
      if (!a) return;
      const Dim& coef = outer ? a->outer[var] : a->inner[var];
      if (coef == Dim(1)) cands.push_back({buffer, i, *a});
    };
    for (const kir::Stage& st : k_.stages) {
      if (!outer && st.extents.empty()) continue;
      auto loads = [&](const Expr& e) {
        kir::visit_exprs(e, [&](const Expr& x) {
          if (x.kind() == ExprKind::Load) consider(x.node().id, x.node().index);
        });
      };
      for (const kir::Let& l : st.lets) loads(l.value);
      if (st.value.defined()) loads(st.value);
      for (const kir::Store& s : st.stores) {
        loads(s.value);
        consider(s.buffer, s.index);
      }
    }
    if (cands.empty()) return;
    int64_t min_size = 16;
    for (const Candidate& c : cands) min_size = std::min(min_size, dtype_size(k_.buffers[c.buffer].dtype));
    int w = static_cast<int>(std::min<int64_t>(16, 16 / min_size));
    const Dim& extent = ext[var];
    if (std::optional<int64_t> e = extent.constant())
      while (w > 1 && *e % w != 0) w /= 2;
    if (w < 2) return;
    std::vector<Dim> divisible;
    if (!extent.is_constant()) divisible.push_back(extent);
    std::set<int> aligned;
    for (const Candidate& c : cands) {
      std::vector<Dim> need = {c.aff.offset};
      for (size_t d = 0; d < n_outer; ++d)
        if (!(outer && static_cast<int>(d) == var)) need.push_back(c.aff.outer[d]);
      for (size_t d = 0; d < n_inner; ++d)
        if (!(!outer && static_cast<int>(d) == var)) need.push_back(c.aff.inner[d]);
      bool ok = true;
      std::vector<Dim> runtime;
      for (const Dim& d : need) {
        if (surely_divisible(d, w)) continue;
        if (d.is_constant()) ok = false;
        else runtime.push_back(d);
      }
      if (!ok) continue;
      for (const Dim& d : runtime)
        if (std::find(divisible.begin(), divisible.end(), d) == divisible.end()) divisible.push_back(d);
      vec_access_.insert(access_key(c.buffer, c.index));
      aligned.insert(c.buffer);
    }
    if (vec_access_.empty()) return;
    out_.width = w;
    out_.divisible = std::move(divisible);
    out_.aligned.assign(aligned.begin(), aligned.end());
    vec_outer_ = outer;
    vec_var_ = var;
  }

  std::string access_key(int buffer, const Index& i) const {
    bool saved = lane0_;
    lane0_ = false;
    std::string key = str_cat(buffer, ":", index(i));
    lane0_ = saved;
    return key;
  }

  // ---- stage bodies --------------------------------------------------------------

  // Declares the vars of `extents` used by `body_vars`, decomposed from the flat index `flat`.
  std::string decompose(const std::string& flat, const std::vector<Dim>& extents, bool outer,
                        const std::set<int>& used, const std::string& ind) const {
    std::string s;
    for (int d : used) {
      if (d >= static_cast<int>(extents.size())) continue;
      Dim stride = 1;
      for (size_t e = d + 1; e < extents.size(); ++e) stride = stride * extents[e];
      std::string v = flat;
      if (stride != Dim(1)) v = str_cat("(", v, " / ", dim(stride), ")");
      if (d > 0) v = str_cat("(", v, " % ", dim(extents[d]), ")");
      bool vec = is_vec_var(outer, d);
      s += str_cat(ind, "const long long ", outer ? "o" : "r", d, vec ? "_0" : "", " = ", v, ";\n");
    }
    return s;
  }

  void vars_of_stage(const kir::Stage& st, std::set<int>& outer, std::set<int>& inner) const {
    auto from_expr = [&](const Expr& e) {
      kir::visit_exprs(e, [&](const Expr& x) {
        if (x.node().index.defined()) kir::collect_vars(x.node().index, outer, inner);
      });
    };
    for (const kir::Let& l : st.lets) from_expr(l.value);
    if (st.value.defined()) from_expr(st.value);
    for (const kir::Store& s : st.stores) {
      from_expr(s.value);
      kir::collect_vars(s.index, outer, inner);
    }
  }

  // ---- bf16 pairs ----------------------------------------------------------------

  // Whether let `l` is computed two lanes at a time by a packed bf16x2 instruction: a bf16
  // add, sub or mul whose operands are bf16 values already (constants, loads, and lets
  // that round), so that the packed op gives the same bits as the f32 op and its rounding.
  bool packs(const kir::Let& l) const {
    const kir::ExprNode& n = l.value.node();
    if (n.kind != ExprKind::Binary || n.dtype != DType::bf16 || cache_read_.contains(l.id)) return false;
    if (n.op != Op::Add && n.op != Op::Sub && n.op != Op::Mul) return false;
    auto operand = [&](const Expr& e) {
      return e.dtype() == DType::bf16 && (e.kind() == ExprKind::Const || rounded_to_bf16(e));
    };
    return operand(n.a) && operand(n.b);
  }

  // The bf16 pair (lanes 2vp and 2vp + 1, the first in the low half) of a value that
  // packs() accepts as an operand, or of a value stored as bf16: a let's t<id>_p where the
  // pair loop has written it, else new_pair().
  std::string pair_of(const kir::Stage& st, const Expr& e) {
    if (e.kind() == ExprKind::Let && paired_.contains(e.node().id)) return str_cat("t", e.node().id, "_p");
    return new_pair(st, e);
  }

  // The pair of `e` made from what it reads: a constant twice, the 32-bit word of a vector
  // load (bf16 vector loads are words in the pair loop's even widths), else its two lanes
  // packed by one rounding.
  std::string new_pair(const kir::Stage& st, const Expr& e) {
    const kir::ExprNode& n = e.node();
    if (n.kind == ExprKind::Const && n.dtype == DType::bf16) {
      uint16_t bits = float_to_bf16_bits(static_cast<float>(n.value));
      return fmt::format("0x{:04x}{:04x}u", bits, bits);
    }
    if (n.kind == ExprKind::Let && !cache_read_.contains(n.id)) {  // a let of a load: the loaded pair
      auto own = std::find_if(st.lets.begin(), st.lets.end(), [&](const kir::Let& l) { return l.id == n.id; });
      if (own != st.lets.end() && own->value.kind() == ExprKind::Load && own->value.dtype() == DType::bf16)
        return new_pair(st, own->value);
    }
    if (n.kind == ExprKind::Load && n.dtype == DType::bf16)
      if (auto it = hoisted_.find(&n); it != hoisted_.end()) return str_cat(it->second, "[vp]");
    std::string lanes[2];
    int saved = pair_lane_;
    for (int lane : {0, 1}) {
      pair_lane_ = lane;
      lanes[lane] = unrounded(st, e, DType::bf16);
    }
    pair_lane_ = saved;
    return str_cat("kiln_pack_bf16x2(", lanes[0], ", ", lanes[1], ")");
  }

  std::string let_name(int id) const { return pair_lane_ >= 0 ? str_cat("t", id, "_", pair_lane_) : str_cat("t", id); }

  // Where the current lane's element sits in a thread's vector: v in the lane loop, 2vp and
  // 2vp + 1 in the pair loop.
  std::string lane_pos() const {
    if (pair_lane_ < 0) return "v";
    return pair_lane_ == 0 ? "2 * vp" : "2 * vp + 1";
  }

  // ---- stage bodies, continued -----------------------------------------------------

  // Lets and stores (and, for a reduce stage, `fold` of its value) at one point; with
  // width > 1, at `width` lanes of the vectorized var, vector accesses outside the lane loop.
  // Where a let packs(), the lanes go two at a time: each let is written for lane 0 and lane 1
  // (t<id>_0, t<id>_1), and a packed let and a let whose pair is needed also as t<id>_p.
  std::string body(const kir::Stage& st, int width, const std::string& ind,
                   const std::function<std::string(const std::string& value, const std::string& lane_pos)>& fold) {
    std::string s;
    std::string lane_ind = ind;
    hoisted_.clear();
    paired_.clear();
    pair_lane_ = -1;
    bool pairs = width > 1 && width % 2 == 0 &&
                 std::any_of(st.lets.begin(), st.lets.end(), [&](const kir::Let& l) { return packs(l); });
    std::set<int> packed;
    std::vector<std::pair<const kir::Store*, std::string>> vec_stores;
    // Vector stores whose value goes in as bf16 pairs (vs<n>[vp]), in the pair loop.
    auto word_store = [&](const kir::Store& store) { return pairs && k_.buffers[store.buffer].dtype == DType::bf16; };
    if (width > 1) {
      lane0_ = true;
      int n = 0;
      auto hoist = [&](const Expr& x) {
        if (x.kind() != ExprKind::Load || hoisted_.contains(&x.node())) return;
        std::string key = access_key(x.node().id, x.node().index);
        if (!vec_access_.contains(key)) return;
        if (row_cache_chunks_ > 0 && !st.extents.empty())
          for (size_t c = 0; c < cached_.size(); ++c)
            if (cached_[c].key == key) {
              hoisted_[&x.node()] = str_cat("rc", c, "[j]");
              return;
            }
        std::string name = str_cat("vl", n++);
        DType t = k_.buffers[x.node().id].dtype;
        s += str_cat(ind, vec_decl(t, width, name), ";\n");
        s += str_cat(ind, vec_load(t, width, str_cat(buf(x.node().id), " + ", index(x.node().index)), name,
                                   streamed_ && reads_once(x.node().index, st.extents.size())),
                     ";\n");
        hoisted_[&x.node()] = name;
      };
      for (const kir::Let& l : st.lets) kir::visit_exprs(l.value, hoist);
      if (st.value.defined()) kir::visit_exprs(st.value, hoist);
      for (const kir::Store& store : st.stores) {
        kir::visit_exprs(store.value, hoist);
        if (vec_access_.contains(access_key(store.buffer, store.index))) {
          std::string name = str_cat("vs", vec_stores.size());
          DType t = k_.buffers[store.buffer].dtype;
          std::string type = word_store(store) ? "unsigned" : stores_pairs(t, width) ? "float" : storage_type(t);
          s += str_cat(ind, "alignas(16) ", type, " ", name, "[", word_store(store) ? width / 2 : width, "];\n");
          vec_stores.push_back({&store, name});
        }
      }
      lane0_ = false;
      std::string vv = str_cat(vec_outer_ ? "o" : "r", vec_var_);
      lane_ind = ind + "  ";
      if (pairs) {
        s += str_cat(ind, "#pragma unroll\n", ind, "for (int vp = 0; vp < ", width / 2, "; ++vp) {\n");
        s += str_cat(lane_ind, "const long long ", vv, "_l0 = ", vv, "_0 + 2 * vp, ", vv, "_l1 = ", vv, "_l0 + 1;\n");
        s += str_cat(lane_ind, "(void)", vv, "_l0;\n", lane_ind, "(void)", vv, "_l1;\n");
        for (const kir::Let& l : st.lets) {
          if (!packs(l)) continue;
          packed.insert(l.id);
          paired_.insert(l.id);
          for (const Expr* o : {&l.value.node().a, &l.value.node().b})
            if (o->kind() == ExprKind::Let) paired_.insert(o->node().id);
        }
        for (const auto& [store, name] : vec_stores)
          if (word_store(*store) && store->value.kind() == ExprKind::Let) paired_.insert(store->value.node().id);
      } else {
        s += str_cat(ind, "#pragma unroll\n", ind, "for (int v = 0; v < ", width, "; ++v) {\n");
        s += str_cat(lane_ind, "const long long ", vv, " = ", vv, "_0 + v;\n");
        s += str_cat(lane_ind, "(void)", vv, ";\n");
      }
    }
    const std::vector<int> lanes = pairs ? std::vector<int>{0, 1} : std::vector<int>{-1};
    for (const kir::Let& l : st.lets) {
      if (packed.contains(l.id)) {
        const kir::ExprNode& n = l.value.node();
        const char* fn = n.op == Op::Add ? "kiln_add_bf16x2" : n.op == Op::Sub ? "kiln_sub_bf16x2" : "kiln_mul_bf16x2";
        s += str_cat(lane_ind, "const unsigned t", l.id, "_p = ", fn, "(", pair_of(st, n.a), ", ", pair_of(st, n.b), ");\n");
      }
      for (int lane : lanes) {
        pair_lane_ = lane;
        auto read = cache_read_.find(l.id);
        std::string value = packed.contains(l.id) ? str_cat(lane == 0 ? "kiln_bf_lo(t" : "kiln_bf_hi(t", l.id, "_p)")
                            : read != cache_read_.end() ? str_cat(read->second, "[j][", lane_pos(), "]")
                                                        : expr(l.value);
        s += str_cat(lane_ind, "const ", value_type(l.value.dtype()), " ", let_name(l.id), " = ", value, ";\n");
        if (auto store = cache_store_.find(l.id); store != cache_store_.end())
          s += str_cat(lane_ind, store->second, "[j][", lane_pos(), "] = ", let_name(l.id), ";\n");
      }
      if (paired_.contains(l.id) && !packed.contains(l.id))
        s += str_cat(lane_ind, "const unsigned t", l.id, "_p = ", new_pair(st, Expr::let(l.id, l.value.dtype())), ";\n");
    }
    for (int lane : lanes) {
      pair_lane_ = lane;
      if (st.kind == kir::Stage::Kind::Reduce) s += fold(expr(st.value), width > 1 ? lane_pos() : "0");
    }
    for (const kir::Store& store : st.stores) {
      DType t = k_.buffers[store.buffer].dtype;
      auto it = std::find_if(vec_stores.begin(), vec_stores.end(), [&](auto& p) { return p.first == &store; });
      if (it != vec_stores.end() && word_store(store)) {
        s += str_cat(lane_ind, it->second, "[vp] = ", pair_of(st, store.value), ";\n");
        continue;
      }
      for (int lane : lanes) {
        pair_lane_ = lane;
        if (it != vec_stores.end() && stores_pairs(t, width)) {
          s += str_cat(lane_ind, it->second, "[", lane_pos(), "] = ", unrounded(st, store.value, t), ";\n");
          continue;
        }
        std::string value = t == DType::bf16 && rounded_to_bf16(store.value)
                                ? str_cat("kiln_bf_bits(", expr(store.value), ")")
                                : to_storage(expr(Expr::cast(store.value, t)), t);
        if (it != vec_stores.end()) s += str_cat(lane_ind, it->second, "[", lane_pos(), "] = ", value, ";\n");
        else s += str_cat(lane_ind, buf(store.buffer), "[", index(store.index), "] = ", value, ";\n");
      }
    }
    pair_lane_ = -1;
    if (width > 1) {
      s += str_cat(ind, "}\n");
      lane0_ = true;
      std::string once = streamed_ ? "_once" : "", pol = streamed_ ? ", kpol" : "";
      for (auto& [store, name] : vec_stores) {
        DType t = k_.buffers[store->buffer].dtype;
        std::string at = str_cat(buf(store->buffer), " + ", index(store->index));
        if (word_store(*store))
          s += str_cat(ind, "kiln_stv", once, "<unsigned, ", width / 2, ">(reinterpret_cast<unsigned*>(", at, "), ", name, pol, ");\n");
        else if (stores_pairs(t, width))
          s += str_cat(ind, "kiln_stv_pairs", once, "<", t == DType::f16 ? "true" : "false", ", ", width, ">(", at, ", ", name, pol, ");\n");
        else
          s += str_cat(ind, "kiln_stv", once, "<", storage_type(t), ", ", width, ">(", at, ", ", name, pol, ");\n");
      }
      lane0_ = false;
    }
    return s;
  }

  std::string signature(const std::string& name, int max_threads) const {
    std::vector<bool> written(k_.buffers.size(), false);
    for (const kir::Stage& st : k_.stages)
      for (const kir::Store& s : st.stores) written[s.buffer] = true;
    std::vector<std::string> params;
    for (size_t b = 0; b < k_.buffers.size(); ++b) {
      std::string t = storage_type(k_.buffers[b].dtype);
      params.push_back(written[b] ? str_cat(t, "* __restrict__ b", b) : str_cat("const ", t, "* __restrict__ b", b));
    }
    for (const std::string& s : out_.symbols) params.push_back(str_cat("long long S_", s));
    params.push_back("int stream_l2");
    std::string comment = str_cat("// ", name, ": ", str_join(k_.buffers, ", ", [](const kir::Buffer& b) {
                                    return str_cat(b.role == kir::Buffer::Role::Input ? "in " : "out ", b.name, ": ",
                                                   dtype_name(b.dtype), shape_to_string(b.shape));
                                  }),
                                  "\n");
    return str_cat(comment, "extern \"C\" __global__ void __launch_bounds__(", max_threads, ") ", name, "(",
                   str_join(params, ", ", [](const std::string& p) { return p; }), ") {\n",
                   streamed_ ? "  const unsigned long long kpol = kiln_policy(stream_l2);\n" : "");
  }

  // Whether a load at index i reads each element once: i takes every var of the domain and,
  // in a stage over n_inner inner extents, every inner var.
  bool reads_once(const Index& i, size_t n_inner) const {
    std::set<int> outer, inner;
    kir::collect_vars(i, outer, inner);
    return outer.size() == k_.domain.size() && inner.size() == n_inner;
  }

  std::string entry_name(int width) const { return width > 1 ? str_cat(k_.name, "_v", width) : k_.name; }

  void set_width(int width) {
    width_ = width;
    streamed_ = false;
    cache_store_.clear();
    cache_read_.clear();
    if (width > 1) out_.vector_name = entry_name(width);
  }

  // ---- kernel forms ----------------------------------------------------------------

  void emit_elementwise(int width) {
    set_width(width);
    std::string s = signature(entry_name(width), 1024);
    std::string n = dim(shape_numel(k_.domain));
    std::set<int> outer, inner;
    for (const kir::Stage& st : k_.stages) vars_of_stage(st, outer, inner);
    if (k_.gemm)
      for (const kir::GemmOperand* op : {&k_.gemm->a, &k_.gemm->b}) kir::collect_vars(op->index, outer, inner);
    if (width > 1) outer.insert(vec_var_);
    s += str_cat("  const long long n = ", n, width > 1 ? str_cat(" / ", width) : std::string(), ";\n");
    s += "  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < n; c += (long long)gridDim.x * blockDim.x) {\n";
    s += str_cat("    const long long i = c", width > 1 ? str_cat(" * ", width) : std::string(), ";\n");
    s += decompose("i", k_.domain, true, outer, "    ");
    if (k_.gemm) s += naive_gemm("    ");
    for (const kir::Stage& st : k_.stages) s += body(st, width, "    ", {});
    s += "  }\n}\n";
    src_ += s;
  }

  // The accumulator of one output element, summed over k by this thread.
  std::string naive_gemm(const std::string& ind) const {
    const kir::GemmSpec& g = *k_.gemm;
    std::string acc_t = value_type(g.acc_dtype);
    auto operand = [&](const kir::GemmOperand& o) {
      DType t = k_.buffers[o.buffer].dtype;
      return cast(from_storage(str_cat(buf(o.buffer), "[", index(o.index), "]"), t), t, g.acc_dtype);
    };
    std::string s = str_cat(ind, acc_t, " acc = 0;\n");
    s += str_cat(ind, "for (long long r0 = 0; r0 < ", dim(g.k), "; ++r0) acc ");
    if (is_float(g.acc_dtype)) s += str_cat("+= ", operand(g.a), " * ", operand(g.b), ";\n");
    else s += str_cat("= kiln_iadd(acc, kiln_imul(", operand(g.a), ", ", operand(g.b), "));\n");
    return s;
  }

  void emit_stages() {
    set_width(1);
    std::string s = signature(entry_name(1), 1024);
    s += "  const long long gs = (long long)gridDim.x * blockDim.x;\n";
    s += "  const long long g0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n";
    for (const kir::Stage& st : k_.stages) {
      std::set<int> outer, inner;
      vars_of_stage(st, outer, inner);
      s += str_cat("  for (long long q = g0; q < ", dim(shape_numel(st.extents)), "; q += gs) {\n");
      s += decompose("q", st.extents, false, inner, "    ");
      s += body(st, 1, "    ", {});
      s += "  }\n";
    }
    s += "}\n";
    src_ += s;
  }

  struct Combine {
    std::string acc_t;     // value type of the accumulator
    std::string identity;  // its start value
    // a = a (+) b for accumulator expressions a, b (argmax also moves positions)
    std::string step(const std::string& a, const std::string& b) const { return fn(a, b); }
    std::function<std::string(const std::string&, const std::string&)> fn;
  };

  Combine combine_of(const kir::Stage& st) const {
    bool f = is_float(st.acc_dtype);
    Combine c;
    c.acc_t = f ? "float" : "long long";
    switch (st.combiner) {
      case kir::Combiner::Sum:
        c.identity = f ? "0.0f" : "0LL";
        c.fn = [f](const std::string& a, const std::string& b) {
          return f ? str_cat("(", a, " + ", b, ")") : str_cat("kiln_iadd(", a, ", ", b, ")");
        };
        break;
      case kir::Combiner::Prod:
        c.identity = f ? "1.0f" : "1LL";
        c.fn = [f](const std::string& a, const std::string& b) {
          return f ? str_cat("(", a, " * ", b, ")") : str_cat("kiln_imul(", a, ", ", b, ")");
        };
        break;
      case kir::Combiner::Max:
        c.identity = f ? "(-kiln_inf())" : "(-9223372036854775807LL - 1)";
        c.fn = [f](const std::string& a, const std::string& b) {
          return str_cat(f ? "kiln_fmax(" : "kiln_imax(", a, ", ", b, ")");
        };
        break;
      case kir::Combiner::Min:
        c.identity = f ? "kiln_inf()" : "9223372036854775807LL";
        c.fn = [f](const std::string& a, const std::string& b) {
          return str_cat(f ? "kiln_fmin(" : "kiln_imin(", a, ", ", b, ")");
        };
        break;
      case kir::Combiner::ArgMax:
        c.identity = f ? "(-kiln_inf())" : "(-9223372036854775807LL - 1)";
        break;
    }
    return c;
  }

  // The row cache of a vector row kernel: when the row length is static and every thread
  // holds at most 8 chunks, each vector load that several stages read is loaded from
  // global memory once per row into registers (rc<n>[j], chunk c = threadIdx.x + j *
  // blockDim.x) and the stages read it there, as a persistent reduction does. A thread
  // holds 8 chunks where they and the value cache fit in 48 registers and the row then
  // takes one warp (no reduction through shared memory) or at least four, else 4. On an
  // H200, with the warp count a constant (emit_rows), layer_norm + gelu ran 4% faster over
  // rows of 4096 with 4 chunks in 4 warps than with 8 in 2, and 2% faster over rows of 8192
  // with 8 chunks in 4 warps than with 4 in 8. The launch uses blockDim.x =
  // ceil(chunks / row_cache_chunks).
  // Where that many threads hold exactly the row's chunks (the usual case: 2048 or 4096
  // elements), the kernel is written for that blockDim.x (row_threads): no thread passes the
  // row's end, so the chunk loops need no guard and their loads issue ahead of the stores
  // before them (layer_norm+gelu 5% faster, softmax 2%, on an H200).
  void plan_row_cache(int width) {
    row_cache_chunks_ = 0;
    row_threads_ = 0;
    cached_.clear();
    std::optional<int64_t> row = shape_numel(inner_).constant();
    if (width < 2 || !row || *row < width) return;
    int64_t chunks = *row / width;
    std::map<std::string, int> stages_reading;
    std::map<std::string, std::pair<int, Index>> sample;
    for (const kir::Stage& st : k_.stages) {
      if (st.extents.empty()) continue;
      std::set<std::string> here;
      auto loads = [&](const Expr& e) {
        kir::visit_exprs(e, [&](const Expr& x) {
          if (x.kind() != ExprKind::Load) return;
          std::string key = access_key(x.node().id, x.node().index);
          if (!vec_access_.contains(key)) return;
          here.insert(key);
          sample.emplace(key, std::pair{x.node().id, x.node().index});
        });
      };
      for (const kir::Let& l : st.lets) loads(l.value);
      if (st.value.defined()) loads(st.value);
      for (const kir::Store& store : st.stores) loads(store.value);
      for (const std::string& k : here) ++stages_reading[k];
    }
    for (const auto& [key, n] : stages_reading)
      if (n >= 2) cached_.push_back({key, sample.at(key).first, sample.at(key).second});
    if (cached_.empty()) return;
    int64_t words = 0;  // registers per chunk: the cached loads, then the value cache's floats
    for (const CachedLoad& c : cached_) words += (width * dtype_size(k_.buffers[c.buffer].dtype) + 3) / 4;
    std::set<int> recomputed;
    for (const auto& [later, src] : recomputed_) recomputed.insert(src);
    words += static_cast<int64_t>(recomputed.size()) * width;
    int64_t kc = 0, tpr = 0;
    for (int64_t per : {8, 4}) {
      tpr = std::clamp<int64_t>(next_pow2((chunks + per - 1) / per), 32, 1024);
      kc = (chunks + tpr - 1) / tpr;
      if (kc * words <= 48 && (tpr == 32 || tpr >= 128)) break;
    }
    if (kc > 8) return;
    row_cache_chunks_ = static_cast<int>(kc);
    out_.row_cache_chunks = static_cast<int>(kc);
    if (tpr * kc == chunks) row_threads_ = static_cast<int>(tpr);
    out_.row_threads = row_threads_;
  }

  // The start of a loop over this thread's cached chunks of the row (chunk c, the j-th).
  std::string cached_chunk_loop(const std::string& chunks, const std::string& ind) const {
    // The stride stays blockDim.x even where it is row_threads: as a constant, ptxas hoists
    // more loads and spills layer_norm+gelu's registers under the 64 of 1024 threads.
    std::string s = str_cat(ind, "#pragma unroll\n", ind, "for (int j = 0; j < ", row_cache_chunks_, "; ++j) {\n", ind,
                            "  const long long c = threadIdx.x + (long long)j * blockDim.x;\n");
    return row_threads_ > 0 ? s : str_cat(s, ind, "  if (c >= ", chunks, ") break;\n");
  }

  std::string row_cache_preload(int width) {
    std::string s;
    std::set<int> o, in;
    for (const CachedLoad& c : cached_) kir::collect_vars(c.index, o, in);
    in.insert(vec_var_);
    for (size_t n = 0; n < cached_.size(); ++n)
      s += str_cat("    ", vec_decl(k_.buffers[cached_[n].buffer].dtype, width, str_cat("rc", n, "[", row_cache_chunks_, "]")),
                   ";\n");
    s += str_cat("    if (active) {\n", cached_chunk_loop(str_cat(dim(shape_numel(inner_)), " / ", width), "      "),
                 "        const long long q = c * ", width, ";\n", decompose("q", inner_, false, in, "        "));
    lane0_ = true;
    for (size_t n = 0; n < cached_.size(); ++n)
      s += str_cat("        ", vec_load(k_.buffers[cached_[n].buffer].dtype, width,
                                     str_cat(buf(cached_[n].buffer), " + ", index(cached_[n].index)), str_cat("rc", n, "[j]"),
                                     streamed_ && reads_once(cached_[n].index, inner_.size())),
                   ";\n");
    lane0_ = false;
    s += "      }\n    }\n";
    return s;
  }

  // The value cache of a row-cached kernel: a costly value that a later stage recomputes
  // (kir::recomputed_lets) is kept in registers (ec<n>[j][v]) by the first stage computing it
  // and read there by the later ones, within a budget of 64 floats per thread.
  void plan_value_cache(int width) {
    cache_store_.clear();
    cache_read_.clear();
    if (row_cache_chunks_ == 0 || width < 2) return;
    std::map<int, std::string> names;  // source let id -> array name
    for (const auto& [later, src] : recomputed_) {
      if (!names.contains(src)) {
        if (static_cast<int>(names.size() + 1) * row_cache_chunks_ * width > 64) continue;
        names[src] = str_cat("ec", names.size());
      }
      cache_store_[src] = names[src];
      cache_read_[later] = names[src];
    }
  }


  std::string value_cache_decls(int width) const {
    std::set<std::string> arrays;
    for (const auto& [id, name] : cache_store_) arrays.insert(name);
    std::string s;
    for (const std::string& a : arrays) s += str_cat("    float ", a, "[", row_cache_chunks_, "][", width, "];\n");
    return s;
  }

  // One row per (blockIdx.x, threadIdx.y); blockDim.x threads (a multiple of 32) share it.
  void emit_rows(int width) {
    set_width(width);
    // A row kernel's vector entry streams what it reads once and what it stores through L2
    // under kiln_policy. Elementwise kernels do not: on an H100, hinted accesses made
    // gelu*sigmoid over 2^26 f32 1.7% slower where they made layer_norm+gelu 2% faster
    // (bench/RESULTS.md, 2026-12-02).
    streamed_ = width > 1;
    out_.streams_l2 |= streamed_;
    std::string s = signature(entry_name(width), 1024);
    bool any_float = false, any_int = false, any_arg = false;
    for (const kir::Stage& st : k_.stages) {
      if (st.kind != kir::Stage::Kind::Reduce) continue;
      (is_float(st.acc_dtype) ? any_float : any_int) = true;
      any_arg |= st.combiner == kir::Combiner::ArgMax;
    }
    if (any_float) s += "  __shared__ float red_f[32];\n";
    if (any_int) s += "  __shared__ long long red_i[32];\n";
    if (any_arg) s += "  __shared__ long long red_p[32];\n";
    s += str_cat("  const long long rows = ", dim(shape_numel(k_.domain)), ";\n");
    plan_row_cache(width);
    // Where the kernel is written for one blockDim.x, the warps of a row are a constant and
    // the reads of their partial results below unroll into independent loads.
    s += row_threads_ > 0 ? str_cat("  constexpr int nw = ", row_threads_ / 32, ";\n") : "  const int nw = blockDim.x >> 5;\n";
    s += "  const int slot = threadIdx.y * nw + (threadIdx.x >> 5);\n";
    s += "  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {\n";
    s += "    const long long row = base + threadIdx.y;\n";
    s += "    const bool active = row < rows;\n";
    std::set<int> outer, inner_unused;
    for (const kir::Stage& st : k_.stages) vars_of_stage(st, outer, inner_unused);
    s += decompose("row", k_.domain, true, outer, "    ");
    if (row_cache_chunks_ > 0) s += row_cache_preload(width);
    plan_value_cache(width);
    s += value_cache_decls(width);
    for (size_t si = 0; si < k_.stages.size(); ++si) {
      const kir::Stage& st = k_.stages[si];
      std::set<int> o, in;
      vars_of_stage(st, o, in);
      int w = st.extents.empty() ? 1 : width;
      if (w > 1) in.insert(vec_var_);
      std::string chunks = str_cat(dim(shape_numel(st.extents)), w > 1 ? str_cat(" / ", w) : std::string());
      std::string loop =
          row_cache_chunks_ > 0 && w > 1
              ? cached_chunk_loop(chunks, "      ")
              : str_cat("      for (long long c = threadIdx.x; c < ", chunks, "; c += blockDim.x) {\n");
      loop += str_cat("        const long long q = c", w > 1 ? str_cat(" * ", w) : std::string(), ";\n",
                      decompose("q", st.extents, false, in, "        "));
      if (st.kind == kir::Stage::Kind::Map) {
        if (st.extents.empty()) {
          s += "    if (active && threadIdx.x == 0) {\n";
          s += body(st, 1, "      ", {});
          s += "    }\n";
        } else {
          s += "    if (active) {\n" + loop + body(st, w, "        ", {}) + "      }\n    }\n";
        }
        continue;
      }
      Combine c = combine_of(st);
      bool arg = st.combiner == kir::Combiner::ArgMax;
      std::string red = is_float(st.acc_dtype) ? "red_f" : "red_i";
      s += str_cat("    ", c.acc_t, " s", si, ";\n");
      if (arg) s += str_cat("    long long s", si, "_p;\n");
      s += str_cat("    {\n      ", c.acc_t, " a = ", c.identity, ";\n");
      if (arg) s += "      long long ap = 9223372036854775807LL;\n";
      auto fold = [&](const std::string& value, const std::string& lane) {
        std::string x = str_cat("        ", std::string(w > 1 ? "  " : ""), "{ const ", c.acc_t, " x = ", value, "; ");
        if (arg) return str_cat(x, "const long long p = q + ", lane, "; if (kiln_argmax_takes(x, p, a, ap)) { a = x; ap = p; } }\n");
        return str_cat(x, "a = ", c.step("a", "x"), "; }\n");
      };
      s += "      if (active) {\n" + loop + body(st, w, "        ", fold) + "      }\n      }\n";
      // Butterfly within each warp: every lane ends with the warp's result.
      s += "      #pragma unroll\n      for (int m = 16; m > 0; m >>= 1) {\n";
      s += str_cat("        const ", c.acc_t, " y = __shfl_xor_sync(0xffffffffu, a, m);\n");
      if (arg) s += "        const long long yp = __shfl_xor_sync(0xffffffffu, ap, m);\n        if (kiln_argmax_takes(y, yp, a, ap)) { a = y; ap = yp; }\n";
      else s += str_cat("        a = ", c.step("a", "y"), ";\n");
      s += "      }\n";
      // Across the warps of a row: lane 0 of each warp through shared memory.
      s += "      if (nw > 1) {\n";
      s += str_cat("        if ((threadIdx.x & 31) == 0) { ", red, "[slot] = a;", arg ? " red_p[slot] = ap;" : "", " }\n");
      s += "        __syncthreads();\n";
      s += str_cat("        a = ", red, "[threadIdx.y * nw];\n");
      if (arg) s += "        ap = red_p[threadIdx.y * nw];\n";
      s += "        for (int w2 = 1; w2 < nw; ++w2) {\n";
      s += str_cat("          const ", c.acc_t, " y = ", red, "[threadIdx.y * nw + w2];\n");
      if (arg) s += "          const long long yp = red_p[threadIdx.y * nw + w2];\n          if (kiln_argmax_takes(y, yp, a, ap)) { a = y; ap = yp; }\n";
      else s += str_cat("          a = ", c.step("a", "y"), ";\n");
      s += "        }\n        __syncthreads();\n      }\n";
      s += str_cat("      s", si, " = a;\n");
      if (arg) s += str_cat("      s", si, "_p = ap;\n");
      s += "    }\n";
    }
    s += "  }\n}\n";
    src_ += s;
  }

  kir::Kernel k_;
  Bindings baked_;
  GemmForm form_;
  CudaKernel out_;
  std::string src_;
  std::vector<Dim> inner_;
  int width_ = 1;
  bool vec_outer_ = true;
  bool streamed_ = false;  // the entry being written takes kpol (emit_rows)
  int vec_var_ = -1;
  mutable bool lane0_ = false;
  std::set<std::string> vec_access_;
  struct CachedLoad {
    std::string key;
    int buffer;
    Index index;
  };
  std::vector<CachedLoad> cached_;  // the row cache (plan_row_cache)
  int row_cache_chunks_ = 0;
  int row_threads_ = 0;  // the blockDim.x a row-cached kernel is written for; 0: any
  const std::map<int, int> recomputed_;  // kir::recomputed_lets of k_, for both caches
  std::map<int, std::string> cache_store_, cache_read_;  // the value cache (plan_value_cache): let id -> array
  absl::flat_hash_map<const kir::ExprNode*, std::string> hoisted_;
  std::set<int> paired_;  // lets with a bf16 pair t<id>_p in the current pair loop
  int pair_lane_ = -1;    // the lane being written in a pair loop (0 or 1), else -1
};

}  // namespace

std::string program_source(std::span<const CudaKernel* const> kernels) {
  std::string s = cuda_prelude();
  for (const CudaKernel* k : kernels) s += k->source;
  return s;
}

std::string_view launch_kind_name(LaunchKind k) {
  switch (k) {
    case LaunchKind::Elementwise: return "elementwise";
    case LaunchKind::Stages: return "stages";
    case LaunchKind::Rows: return "rows";
  }
  return "?";
}

absl::StatusOr<CudaKernel> emit_kernel(const kir::Kernel& k, const Bindings& baked, GemmForm gemm) {
  return Emitter(k, baked, gemm).run();
}

}  // namespace kiln::cuda
