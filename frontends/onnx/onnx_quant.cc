// The ONNX importer's handlers for bit shifts and quantization. Each is an exact
// composition of kiln ops: integer operands minus their zero points are exact in f64, so
// integer GEMMs and convolutions run as f64 ones (exact while |sum| < 2^53, which 8-bit
// operands reach only past 2^37 products per output); rounding is half to even (numpy's
// rint) and saturation to the output type happens only here, as ONNX specifies.
#include <cmath>
#include <functional>

#include "frontends/onnx/ex_ops.h"
#include "frontends/onnx/importer.h"

namespace kiln::onnx_detail {
namespace {

Ex cast_to(const Ex& x, DType t) { return x.im->apply(Op::Cast, {x}, {{"dtype", t}}); }

// round_half_even(scaled) + zero_point, clamped to type t's range and cast to t; `scaled`
// and `zero_point` share a float dtype.
Ex saturate_to(const Ex& scaled, std::optional<Ex> zero_point, DType t) {
  Ex q = round_half_even(scaled);
  if (zero_point) q = q + *zero_point;
  int64_t bits = dtype_bits(t);
  double lo = is_unsigned(t) ? 0.0 : -std::ldexp(1.0, static_cast<int>(bits - 1));
  double hi = std::ldexp(1.0, static_cast<int>(is_unsigned(t) ? bits : bits - 1)) - 1;
  return cast_to(minimum(maximum(q, lo), hi), t);
}

}  // namespace

// BitShift(X, Y, direction) on unsigned integers: X * 2^Y (wrapping) or X / 2^Y (unsigned
// division truncates, which is the logical shift). 2^Y is a gather from the table of powers
// of two, so a shift by the type's width or more is an out-of-range index, an error.
absl::Status Importer::bit_shift() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, value(1));
  std::string dir = attr_string("direction", "");
  if (dir != "LEFT" && dir != "RIGHT") return bad("direction must be LEFT or RIGHT, got '", dir, "'");
  DType t = x->dtype();
  if (!is_unsigned(t) || y->dtype() != t)
    return bad("expects two tensors of one unsigned integer type, got ", x->type().to_string(), " and ",
               y->type().to_string());
  int64_t bits = dtype_bits(t);
  HostTensor powers(t, {bits});
  for (int64_t k = 0; k < bits; ++k) powers.set_int(k, static_cast<int64_t>(uint64_t{1} << k));
  Entry e{TensorType{t, {bits}}, nullptr, std::make_shared<const HostTensor>(std::move(powers)), std::nullopt};
  KILN_ASSIGN_OR_RETURN(Value* table, materialize(str_cat(node_->output(0), "_powers_of_two"), e));
  Ex p = apply(Op::Gather, {ex(table), cast_to(ex(y), DType::i64)}, {{"axis", int64_t{0}}});
  return define(0, dir == "LEFT" ? ex(x) * p : ex(x) / p);
}

// QuantizeLinear(x, y_scale, y_zero_point?, axis): saturate(round(x / y_scale) + zp), per
// tensor or (a 1-D scale) per slice along axis; the output type is zp's (default u8).
absl::Status Importer::quantize_linear() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto scale, value(1));
  if (!is_float(scale->dtype()) || (!is_float(x->dtype()) && x->dtype() != DType::i32))
    return bad("expects a float or i32 x and a float scale, got ", x->type().to_string(), " and ", scale->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto along_axis, per_axis(x, scale));
  Ex xf = x->dtype() == scale->dtype() ? ex(x) : cast_to(ex(x), scale->dtype());
  std::optional<Ex> zp;
  DType t = DType::u8;
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto z, value(2));
    t = z->dtype();
    if (!is_integer(t) || dtype_bits(t) > 16) return unsupported("a zero point of ", z->type().to_string(), " is not supported");
    zp = cast_to(along_axis(z), scale->dtype());
  }
  return define(0, saturate_to(xf / along_axis(scale), zp, t));
}

// DequantizeLinear(x, x_scale, x_zero_point?, axis): (x - zp) * x_scale in the scale's type.
absl::Status Importer::dequantize_linear() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto scale, value(1));
  if (!is_integer(x->dtype()) || !is_float(scale->dtype()))
    return bad("expects an integer x and a float scale, got ", x->type().to_string(), " and ", scale->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto along_axis, per_axis(x, scale));
  Ex y = cast_to(ex(x), scale->dtype());
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto z, value(2));
    if (z->dtype() != x->dtype()) return bad("x ", x->type().to_string(), " and its zero point ", z->type().to_string(), " differ");
    y = y - cast_to(along_axis(z), scale->dtype());
  }
  return define(0, y * along_axis(scale));
}

// DynamicQuantizeLinear(x) -> y (u8), y_scale, y_zero_point (u8): the scale maps the range
// of x widened to include 0 onto [0, 255].
absl::Status Importer::dynamic_quantize_linear() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (xv->dtype() != DType::f32) return bad("expects an f32 tensor, got ", xv->type().to_string());
  Ex x = ex(xv);
  Ex lo = minimum(apply(Op::Min, {x}), 0.0), hi = maximum(apply(Op::Max, {x}), 0.0);
  Ex scale = (hi - lo) / 255.0;
  Ex zp = round_half_even(minimum(maximum(0.0 - lo / scale, 0.0), 255.0));
  KILN_RETURN_IF_ERROR(define(0, saturate_to(x / scale, zp, DType::u8)));
  KILN_RETURN_IF_ERROR(define(1, scale));
  return define(2, cast_to(zp, DType::u8));
}

// A function reshaping a per-axis operand (1-D, the length of x's dim `axis`) to broadcast
// along that dim of x; per-tensor operands (scalars, or all when `scale` is not 1-D) as they
// are. The axis is only read for a 1-D scale.
absl::StatusOr<std::function<Importer::Ex(Value*)>> Importer::per_axis(Value* x, Value* scale) {
  if (scale->shape().size() != 1) return std::function<Ex(Value*)>([this](Value* v) { return ex(v); });
  int64_t rank = x->shape().size();
  KILN_ASSIGN_OR_RETURN(int64_t axis, axis_in("axis", attr_int("axis", 1), rank));
  return std::function<Ex(Value*)>([this, rank, axis](Value* v) {
    return v->shape().size() == 1 ? per_channel(v, rank - axis + 1) : ex(v);
  });
}

absl::StatusOr<Value*> Importer::centered_f64(int x, int zp, int64_t zp_rank) {
  KILN_ASSIGN_OR_RETURN(auto xv, value(x));
  if (!is_integer(xv->dtype())) return bad("expects integer operands, got ", xv->type().to_string());
  Ex c = cast_to(ex(xv), DType::f64);
  if (has_input(zp)) {
    KILN_ASSIGN_OR_RETURN(auto z, value(zp));
    if (z->dtype() != xv->dtype())
      return bad("operand ", xv->type().to_string(), " and its zero point ", z->type().to_string(), " differ");
    c = c - cast_to(z->shape().size() == 1 && zp_rank > 0 ? per_channel(z, zp_rank) : ex(z), DType::f64);
  }
  return c.v;
}

absl::StatusOr<Value*> Importer::integer_product_of(Value* a, Value* b, Value* bias) {
  if (node_->op_type().find("Conv") != std::string::npos) return conv_of(a, b, bias);
  return emit(Op::MatMul, {a, b});
}

// MatMulInteger(A, B, a_zero_point?, b_zero_point?) and ConvInteger(x, w, x_zero_point?,
// w_zero_point?): the product of the centered operands, as i32. A's zero point may be per
// row, B's per column, w's per output channel.
absl::Status Importer::integer_product() {
  bool conv = node_->op_type() == "ConvInteger";
  KILN_ASSIGN_OR_RETURN(auto b, value(1));
  KILN_ASSIGN_OR_RETURN(Value * ac, centered_f64(0, 2, conv ? 0 : 2));
  KILN_ASSIGN_OR_RETURN(Value * bc, centered_f64(1, 3, conv ? static_cast<int64_t>(b->shape().size()) : 0));
  KILN_ASSIGN_OR_RETURN(Value * y, integer_product_of(ac, bc, nullptr));
  return define(0, cast_to(ex(y), DType::i32));
}

// QLinearMatMul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp) and QLinearConv(x,
// x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?): the integer product (plus the i32
// bias), times a_scale * b_scale / y_scale (computed in the scales' type, applied in f64),
// requantized to y_zp's type.
absl::Status Importer::qlinear_product() {
  bool conv = node_->op_type() == "QLinearConv";
  KILN_ASSIGN_OR_RETURN(auto b, value(3));
  int64_t wrank = b->shape().size();
  KILN_ASSIGN_OR_RETURN(Value * ac, centered_f64(0, 2, conv ? 0 : 2));
  KILN_ASSIGN_OR_RETURN(Value * bc, centered_f64(3, 5, conv ? wrank : 0));
  Value* bias = nullptr;
  if (conv && has_input(8)) {
    KILN_ASSIGN_OR_RETURN(auto bv, value(8));
    KILN_ASSIGN_OR_RETURN(bias, cast_to(ex(bv), DType::f64).v);
  }
  KILN_ASSIGN_OR_RETURN(Value * acc, integer_product_of(ac, bc, bias));
  std::vector<Value*> s;  // a_scale, b_scale, y_scale, y_zp
  for (int i : {1, 4, 6, 7}) {
    KILN_ASSIGN_OR_RETURN(auto v, value(i));
    s.push_back(v);
  }
  auto per = [&](Value* v, int64_t r) { return v->shape().size() == 1 && r > 0 ? per_channel(v, r) : ex(v); };
  // a_scale per row of a ([M] -> [M, 1]); w_scale per output channel ([M] -> [M, 1, ...]
  // against y [N, M, ...]); b_scale per column broadcasts as it is.
  Ex factor = per(s[0], conv ? 0 : 2) * per(s[1], conv ? wrank - 1 : 0) / ex(s[2]);
  if (!is_integer(s[3]->dtype())) return bad("y_zero_point must be an integer tensor, got ", s[3]->type().to_string());
  Ex scaled = ex(acc) * cast_to(factor, DType::f64);
  return define(0, saturate_to(scaled, cast_to(ex(s[3]), DType::f64), s[3]->dtype()));
}

}  // namespace kiln::onnx_detail
