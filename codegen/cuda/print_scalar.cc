// Types, literals, indices and scalar expressions of the CUDA printer (printer.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "codegen/cuda/printer.h"
#include "ir/scalar_ops.h"
#include "ir/str.h"

namespace kiln::cuda {

using kir::Expr;
using kir::ExprKind;
using kir::Index;
using kir::IndexKind;

std::string value_type(DType t) {
  switch (t) {
    case DType::f32: case DType::f16: case DType::bf16: return "float";
    case DType::f64: return "double";
    case DType::i8: return "signed char";
    case DType::u8: return "unsigned char";
    case DType::i16: return "short";
    case DType::u16: return "unsigned short";
    case DType::i32: return "int";
    case DType::u32: return "unsigned int";
    case DType::i64: return "long long";
    case DType::u64: return "unsigned long long";
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

std::string round_float(const std::string& v, DType t) {
  if (t == DType::bf16) return str_cat("kiln_rbf(", v, ")");
  if (t == DType::f16) return str_cat("kiln_rh(", v, ")");
  return v;
}

VecArray vec_array(DType t, int width) {
  if (t == DType::bf16 && width % 2 == 0) return {"unsigned", width / 2};
  return {storage_type(t), width};
}

std::string cast(const std::string& a, DType from, DType to) {
  if (from == to) return a;
  if (is_float(from)) {
    if (is_float(to)) return round_float(a, to);
    if (to == DType::boolean) return str_cat("(", a, " != 0.0f)");
    if (to == DType::i64) return str_cat("kiln_f2i(", a, ")");
    if (to == DType::u64) return str_cat("kiln_f2u64(", a, ")");
    return str_cat("((", value_type(to), ")kiln_f2i(", a, "))");  // wraps, as kiln::wrap_int
  }
  if (is_float(to)) return round_float(str_cat("((float)(", a, "))"), to);
  if (to == DType::boolean) return str_cat("(", a, " != 0)");
  return str_cat("((", value_type(to), ")(", a, "))");
}

namespace {

// Element `pos` of the registers `array` holding a vector load of dtype t.
std::string vec_element(DType t, int width, const std::string& array, const std::string& pos) {
  if (vec_array(t, width).type != storage_type(t)) return str_cat("kiln_bf2f_at(", array, ", ", pos, ")");
  return from_storage(str_cat(array, "[", pos, "]"), t);
}

bool nonneg(const Index& i) {
  const kir::IndexNode& n = i.node();
  switch (n.kind) {
    case IndexKind::Const: return n.value >= 0;
    case IndexKind::Outer: case IndexKind::Inner: case IndexKind::Sym: return true;
    case IndexKind::Scalar: return false;
    default: return nonneg(n.a) && nonneg(n.b);
  }
}

std::string unary(Op op, const std::string& a, DType in, DType t) {
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
      case Op::Atan: f = str_cat("atanf(", a, ")"); break;
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

std::string binary(Op op, const std::string& a, const std::string& b, DType in, DType t) {
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
      case Op::Div: f = cmp("/"); break;
      case Op::Pow: f = str_cat("powf(", a, ", ", b, ")"); break;
      case Op::Fmod: f = str_cat(in == DType::f64 ? "fmod(" : "fmodf(", a, ", ", b, ")"); break;
      case Op::Maximum: f = str_cat("kiln_fmax(", a, ", ", b, ")"); break;
      case Op::Minimum: f = str_cat("kiln_fmin(", a, ", ", b, ")"); break;
      default: f = "kiln_nan()"; break;
    }
    return round_float(f, t);
  }
  std::string i;
  auto call = [&](const char* fn) { return str_cat(fn, "((long long)", a, ", (long long)", b, ")"); };
  if (is_unsigned(in)) {
    auto ucall = [&](const char* fn) { return str_cat(fn, "((unsigned long long)", a, ", (unsigned long long)", b, ")"); };
    if (op == Op::Div) return cast(ucall("kiln_udiv"), DType::u64, t);
    if (op == Op::Maximum) return cast(ucall("kiln_umax"), DType::u64, t);
    if (op == Op::Minimum) return cast(ucall("kiln_umin"), DType::u64, t);
  }
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

}  // namespace

bool EntryPrinter::is_vector_var(bool outer, int64_t var) const {
  return width_ > 1 && s_.vector_outer == outer && s_.vector_var == var;
}

std::string EntryPrinter::var(bool outer, int64_t v, const At& at) const {
  std::string name = str_cat(outer ? "o" : "r", v);
  if (!is_vector_var(outer, v)) return name;
  if (at.first) return name + "_0";
  return at.pair >= 0 ? str_cat(name, "_l", at.pair) : name;
}

std::string EntryPrinter::sym(const std::string& name) const {
  if (auto it = baked_.find(name); it != baked_.end()) return int_literal(it->second);
  return str_cat("S_", name);
}

std::string EntryPrinter::index(const Index& i, const At& at) const {
  const kir::IndexNode& n = i.node();
  switch (n.kind) {
    case IndexKind::Const: return int_literal(n.value);
    case IndexKind::Outer: return var(true, n.value, at);
    case IndexKind::Inner: return var(false, n.value, at);
    case IndexKind::Sym: return sym(n.name);
    case IndexKind::Add: return str_cat("(", index(n.a, at), " + ", index(n.b, at), ")");
    case IndexKind::Mul: return str_cat("(", index(n.a, at), " * ", index(n.b, at), ")");
    case IndexKind::FloorDiv:
      return nonneg(n.a) ? str_cat("(", index(n.a, at), " / ", index(n.b, at), ")")
                         : str_cat("kiln_fdiv(", index(n.a, at), ", ", index(n.b, at), ")");
    case IndexKind::Mod:
      return nonneg(n.a) ? str_cat("(", index(n.a, at), " % ", index(n.b, at), ")")
                         : str_cat("kiln_fmod(", index(n.a, at), ", ", index(n.b, at), ")");
    case IndexKind::Min: return str_cat("kiln_imin(", index(n.a, at), ", ", index(n.b, at), ")");
    case IndexKind::Max: return str_cat("kiln_imax(", index(n.a, at), ", ", index(n.b, at), ")");
    case IndexKind::Scalar: return str_cat("((long long)(", expr(n.expr, at), "))");
  }
  return "0";
}

std::string EntryPrinter::dim(const Dim& d) const { return index(Index::from_dim(d), At{}); }

std::string EntryPrinter::let_name(int id, const At& at) const {
  return at.pair >= 0 ? str_cat("t", id, "_", at.pair) : str_cat("t", id);
}

// Where the current lane's element sits in a thread's vector: v in the lane loop, 2vp and
// 2vp + 1 in the pair loop.
std::string EntryPrinter::lane_pos(const At& at) const {
  if (at.pair < 0) return "v";
  return at.pair == 0 ? "2 * vp" : "2 * vp + 1";
}

std::string EntryPrinter::expr(const Expr& e, const At& at) const {
  const kir::ExprNode& n = e.node();
  DType t = n.dtype;
  switch (n.kind) {
    case ExprKind::Const:
      if (is_float(t)) return float_literal(round_to_dtype(n.value, t));
      if (t == DType::boolean) return n.int_value != 0 ? "true" : "false";
      return t == DType::i64 ? int_literal(n.int_value) : str_cat("((", value_type(t), ")", int_literal(n.int_value), ")");
    case ExprKind::Load:
      if (at.hoisted)
        if (auto it = at.hoisted->find(&n); it != at.hoisted->end()) return vec_element(t, width_, it->second, lane_pos(at));
      return from_storage(str_cat("b", n.id, "[", index(n.index, at), "]"), t);
    case ExprKind::Let: return let_name(n.id, at);
    case ExprKind::StageResult:  // an argmax stage's result is its position
      return k_.stages[n.id].combiner == kir::Combiner::ArgMax ? str_cat("s", n.id, "_p") : str_cat("s", n.id);
    case ExprKind::GemmAcc: return "acc";
    case ExprKind::IndexValue: return str_cat("((long long)", index(n.index, at), ")");
    case ExprKind::Select: return str_cat("(", expr(n.a, at), " ? ", expr(n.b, at), " : ", expr(n.c, at), ")");
    case ExprKind::Cast: return cast(expr(n.a, at), n.a.dtype(), t);
    case ExprKind::Unary: return unary(n.op, expr(n.a, at), n.a.dtype(), t);
    case ExprKind::Binary: return binary(n.op, expr(n.a, at), expr(n.b, at), n.a.dtype(), t);
    case ExprKind::Intrinsic: return intrinsic(n, t, at);
  }
  return "0";
}

// The intrinsics (kir::Intrinsic) with the prelude's fast forms: gelu_tanh and
// one_plus_tanh as 2^x and a reciprocal (kiln_gelu_tanh, kiln_half_one_plus_tanh), where
// tanhf takes two branches; mul_reciprocal with the reciprocal correctly rounded, which
// the compiler computes once per row.
std::string EntryPrinter::intrinsic(const kir::ExprNode& n, DType t, const At& at) const {
  switch (n.intrinsic) {
    case kir::Intrinsic::GeluTanh:
      return round_float(str_cat("kiln_gelu_tanh(", expr(n.a, at), ", ", expr(n.b, at), ", ", expr(n.c, at), ")"), t);
    case kir::Intrinsic::OnePlusTanh:
      return round_float(str_cat("(2.0f * kiln_half_one_plus_tanh(", expr(n.a, at), "))"), t);
    case kir::Intrinsic::MulReciprocal:
      return round_float(str_cat("(", expr(n.a, at), " * __frcp_rn(", expr(n.b, at), "))"), t);
  }
  return "kiln_nan()";
}

// The f32 value that a store of `e` into a buffer of dtype t rounds: where e has dtype t
// and is computed in stage `st`, its expression without its own final rounding, so that a
// pair conversion rounds it once (the value is the same: rounding twice to t is rounding
// once).
std::string EntryPrinter::unrounded(const kir::Stage& st, const Expr& e, DType t, const At& at) const {
  const Expr* x = &e;
  if (x->kind() == ExprKind::Let) {
    auto own = std::find_if(st.lets.begin(), st.lets.end(), [&](const kir::Let& l) { return l.id == x->node().id; });
    if (own == st.lets.end() || cache_read_.contains(own->id)) return expr(Expr::cast(e, DType::f32), at);
    x = &own->value;
  }
  const kir::ExprNode& n = x->node();
  if (x->dtype() == t) {  // the op itself, with an f32 result
    switch (n.kind) {
      case ExprKind::Unary: return unary(n.op, expr(n.a, at), n.a.dtype(), DType::f32);
      case ExprKind::Binary: return binary(n.op, expr(n.a, at), expr(n.b, at), n.a.dtype(), DType::f32);
      case ExprKind::Cast: return cast(expr(n.a, at), n.a.dtype(), DType::f32);
      case ExprKind::Intrinsic: return intrinsic(n, DType::f32, at);
      default: break;
    }
  }
  return is_float(x->dtype()) ? expr(*x, at) : expr(Expr::cast(e, DType::f32), at);
}

}  // namespace kiln::cuda
