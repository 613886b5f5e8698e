// Arithmetic on Importer::Ex for the handlers that decompose an ONNX op into several kiln
// ops (onnx_ops.cc, onnx_quant.cc): each operator emits one node; a double operand is a
// constant of the other operand's dtype. Internal to frontends/onnx.
#pragma once

#include "frontends/onnx/importer.h"

namespace kiln::onnx_detail {

using Ex = Importer::Ex;

inline Ex ex_unary(Op op, const Ex& a) { return a.im->apply(op, {a}); }
inline Ex ex_binary(Op op, const Ex& a, const Ex& b) { return a.im->apply(op, {a, b}); }
inline Ex ex_binary(Op op, const Ex& a, double b) { return ex_binary(op, a, a.im->constant_like(a, b)); }
inline Ex ex_binary(Op op, double a, const Ex& b) { return ex_binary(op, b.im->constant_like(b, a), b); }

#define KILN_EX_BINARY(name, op)                                           \
  [[maybe_unused]] inline Ex name(const Ex& a, const Ex& b) { return ex_binary(op, a, b); } \
  [[maybe_unused]] inline Ex name(const Ex& a, double b) { return ex_binary(op, a, b); }    \
  [[maybe_unused]] inline Ex name(double a, const Ex& b) { return ex_binary(op, a, b); }
KILN_EX_BINARY(operator+, Op::Add)
KILN_EX_BINARY(operator-, Op::Sub)
KILN_EX_BINARY(operator*, Op::Mul)
KILN_EX_BINARY(operator/, Op::Div)
KILN_EX_BINARY(operator<, Op::Lt)
KILN_EX_BINARY(operator<=, Op::Le)
KILN_EX_BINARY(operator>, Op::Gt)
KILN_EX_BINARY(operator>=, Op::Ge)
KILN_EX_BINARY(operator==, Op::Eq)
KILN_EX_BINARY(operator!=, Op::Ne)
KILN_EX_BINARY(operator&&, Op::And)
KILN_EX_BINARY(operator||, Op::Or)
KILN_EX_BINARY(maximum, Op::Maximum)
KILN_EX_BINARY(minimum, Op::Minimum)
#undef KILN_EX_BINARY

inline Ex exp(const Ex& a) { return ex_unary(Op::Exp, a); }
inline Ex log(const Ex& a) { return ex_unary(Op::Log, a); }
inline Ex abs(const Ex& a) { return ex_unary(Op::Abs, a); }
inline Ex sqrt(const Ex& a) { return ex_unary(Op::Sqrt, a); }
// An order-reversing map that is its own inverse: -x for floats (NaN stays NaN), -x - 1 for
// integers (~x, which cannot overflow). ArgMin is ArgMax of it; TopK's smallest, the largest.
inline Ex order_reversed(const Ex& x) {
  if (!x.v.ok()) return x;
  Ex neg = ex_unary(Op::Neg, x);
  return is_float((*x.v)->dtype()) ? neg : neg - 1.0;
}

// where(c, a, b) (Importer::where() names the current node in messages).
inline Ex select(const Ex& c, const Ex& a, const Ex& b) { return c.im->apply(Op::Where, {c, a, b}); }
inline Ex select(const Ex& c, const Ex& a, double b) { return select(c, a, a.im->constant_like(a, b)); }

// Round half to even (ONNX Round, numpy's rint) from floor, exactly: ties are decided on
// the float's own fraction, which floor leaves exact.
inline Ex round_half_even(const Ex& x) {
  Ex r = ex_unary(Op::Floor, x);
  Ex frac = x - r;
  Ex even = r + (r - ex_unary(Op::Floor, r * 0.5) * 2.0);  // r + (r mod 2)
  return select(x == r, x, select(frac < 0.5, r, select(frac > 0.5, r + 1.0, even)));
}

}  // namespace kiln::onnx_detail
