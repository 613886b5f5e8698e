// The op handlers of the ONNX importer: each maps one ONNX op type (opset 13 and later
// forms, and the earlier ones the node tests use) to kiln ops, or folds it at import time
// when its operands are known.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>

#include "frontends/onnx/ex_ops.h"
#include "frontends/onnx/importer.h"
#include "frontends/onnx/onnx_tensor.h"
#include "ir/scalar_ops.h"

namespace kiln::onnx_detail {
namespace {

// Python slice of a sequence of length n, as kiln's slice and the node tests' NumPy
// expectations define it; empty if step 0.
std::vector<int64_t> slice_indices(int64_t n, int64_t start, int64_t end, int64_t step) {
  std::vector<int64_t> idx;
  if (step == 0) return idx;
  auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
    if (v < 0) v = v < -n ? lo : v + n;
    return std::clamp(v, lo, hi);
  };
  if (step > 0) {
    for (int64_t i = clamp(start, 0, n), e = clamp(end, 0, n); i < e; i += step) idx.push_back(i);
  } else {
    for (int64_t i = clamp(start, -1, n - 1), e = clamp(end, -1, n - 1); i > e; i += step) idx.push_back(i);
  }
  return idx;
}

// True when e >= 0 for every value of its symbols, which are dims of at least 1 (and its
// floordiv/mod atoms dims or parts of dims, at least 0): every non-constant term has a
// nonnegative coefficient, so e is smallest with each symbol at 1 and each atom at 0.
// Where this holds, floor division agrees with the truncating division of kiln's integers.
bool nonnegative(const SymExpr& e) {
  int64_t least = 0;
  for (const SymTerm& t : e.poly().terms) {
    if (!t.factors.empty() && t.coeff < 0) return false;
    bool at_least_coeff = std::all_of(t.factors.begin(), t.factors.end(),
                                      [](const SymFactor& f) { return f.atom->kind == SymAtom::Kind::Symbol; });
    if (at_least_coeff && __builtin_add_overflow(least, t.coeff, &least)) return false;
  }
  return least >= 0;
}

// Which orders of x and y are possible for dims >= 1 (x - y might be < 0, = 0, > 0).
struct Order {
  bool lt, eq, gt;
};
Order order(const SymExpr& x, const SymExpr& y) {
  SymExpr d = x - y;
  if (std::optional<int64_t> c = d.constant()) return {*c < 0, *c == 0, *c > 0};
  return {!nonnegative(d), !(nonnegative(d - 1) || nonnegative(-d - 1)), !nonnegative(-d)};
}

// Elementwise integer arithmetic, comparisons and logic on known rank <= 1 values (shape
// computations), broadcasting a single value; nullopt when a result is not known at import
// time (sizes that do not broadcast, division by a symbol or zero, an undecided order).
std::optional<std::vector<SymExpr>> fold_binary(Op op, const std::vector<SymExpr>& a, const std::vector<SymExpr>& b) {
  size_t n = std::max(a.size(), b.size());
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1) return std::nullopt;
  std::vector<SymExpr> out;
  for (size_t i = 0; i < n; ++i) {
    const SymExpr& x = a[a.size() == 1 ? 0 : i];
    const SymExpr& y = b[b.size() == 1 ? 0 : i];
    std::optional<int64_t> cx = x.constant(), cy = y.constant();
    // Two constants fold as the reference computes them (wrapping, INT64_MIN / -1 wraps);
    // symbolic sums and products that overflow are marked (SymExpr::overflowed) and rejected.
    if (cx && cy && (op == Op::Add || op == Op::Sub || op == Op::Mul)) {
      out.push_back(binary_int(op, *cx, *cy));
      continue;
    }
    switch (op) {
      case Op::Add: out.push_back(x + y); break;
      case Op::Sub: out.push_back(x - y); break;
      case Op::Mul: out.push_back(x * y); break;
      case Op::Div:
        if (!cy || *cy == 0) return std::nullopt;
        if (cx) out.push_back(binary_int(Op::Div, *cx, *cy));  // kiln's integer division truncates
        else if (std::optional<SymExpr> q = x.divide_exact(*cy)) out.push_back(*q);
        else if (*cy > 0 && nonnegative(x)) out.push_back(x.floordiv(*cy));  // floor == trunc
        else return std::nullopt;
        break;
      case Op::Eq: case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge: {
        Order o = order(x, y);
        bool lt = op == Op::Lt || op == Op::Le, eq = op == Op::Eq || op == Op::Le || op == Op::Ge,
             gt = op == Op::Gt || op == Op::Ge;  // the orders for which the result is true
        bool can_true = (o.lt && lt) || (o.eq && eq) || (o.gt && gt);
        bool can_false = (o.lt && !lt) || (o.eq && !eq) || (o.gt && !gt);
        if (can_true == can_false) return std::nullopt;
        out.push_back(can_true ? 1 : 0);
        break;
      }
      case Op::And: case Op::Or: case Op::Ne:  // bool operands
        if (!cx || !cy) return std::nullopt;
        out.push_back(op == Op::And ? (*cx && *cy) : op == Op::Or ? (*cx || *cy) : (*cx != 0) != (*cy != 0));
        break;
      default: return std::nullopt;
    }
  }
  return out;
}

}  // namespace

Ex Importer::apply(Op op, std::vector<Ex> operands, Attrs attrs) {
  std::vector<Value*> vs;
  for (const Ex& e : operands) {
    if (!e.v.ok()) return {this, e.v.status()};
    vs.push_back(*e.v);
  }
  return {this, emit(op, std::move(vs), std::move(attrs))};
}

Ex Importer::constant_like(const Ex& like, double c) {
  if (!like.v.ok()) return like;
  return {this, scalar(c, (*like.v)->dtype())};
}

const std::map<std::string, Importer::OpSpec, std::less<>>& Importer::op_table() {
  constexpr AttrKind kInt = onnx::AttributeProto::INT, kFloat = onnx::AttributeProto::FLOAT,
                     kInts = onnx::AttributeProto::INTS, kFloats = onnx::AttributeProto::FLOATS,
                     kString = onnx::AttributeProto::STRING, kTensor = onnx::AttributeProto::TENSOR,
                     kStrings = onnx::AttributeProto::STRINGS;
  static const std::map<std::string, AttrKind, std::less<>> reduce_attrs{
      {"axes", kInts}, {"keepdims", kInt}, {"noop_with_empty_axes", kInt}};
  static const std::map<std::string, AttrKind, std::less<>> arg_attrs{
      {"axis", kInt}, {"keepdims", kInt}, {"select_last_index", kInt}};
  static const auto* table = new std::map<std::string, OpSpec, std::less<>>{
      {"Neg", {&Importer::unary, {}}}, {"Abs", {&Importer::unary, {}}},
      {"Exp", {&Importer::unary, {}}}, {"Log", {&Importer::unary, {}}},
      {"Sqrt", {&Importer::unary, {}}}, {"Reciprocal", {&Importer::unary, {}}},
      {"Floor", {&Importer::unary, {}}}, {"Ceil", {&Importer::unary, {}}},
      {"Tanh", {&Importer::unary, {}}}, {"Sigmoid", {&Importer::unary, {}}},
      {"Relu", {&Importer::unary, {}}}, {"Erf", {&Importer::unary, {}}},
      {"Sin", {&Importer::unary, {}}}, {"Cos", {&Importer::unary, {}}},
      {"Not", {&Importer::unary, {}}},
      {"Add", {&Importer::binary, {}}}, {"Sub", {&Importer::binary, {}}},
      {"Mul", {&Importer::binary, {}}}, {"Div", {&Importer::binary, {}}},
      {"Equal", {&Importer::binary, {}}}, {"Less", {&Importer::binary, {}}},
      {"LessOrEqual", {&Importer::binary, {}}}, {"Greater", {&Importer::binary, {}}},
      {"GreaterOrEqual", {&Importer::binary, {}}}, {"And", {&Importer::binary, {}}},
      {"Or", {&Importer::binary, {}}},
      {"Max", {&Importer::variadic, {}}}, {"Min", {&Importer::variadic, {}}},
      {"Pow", {&Importer::pow, {}}},
      {"Gelu", {&Importer::gelu, {{"approximate", kString}}}},
      {"Cast", {&Importer::cast, {{"to", kInt}}}},
      {"CastLike", {&Importer::cast, {}}},
      {"Where", {&Importer::where_op, {}}},
      {"MatMul", {&Importer::matmul, {}}},
      {"Gemm", {&Importer::gemm, {{"alpha", kFloat}, {"beta", kFloat}, {"transA", kInt}, {"transB", kInt}}}},
      {"Reshape", {&Importer::reshape, {{"allowzero", kInt}, {"shape", kInts}}}},
      {"Transpose", {&Importer::transpose, {{"perm", kInts}}}},
      {"Squeeze", {&Importer::squeeze, {{"axes", kInts}}}},
      {"Unsqueeze", {&Importer::unsqueeze, {{"axes", kInts}}}},
      {"Flatten", {&Importer::flatten, {{"axis", kInt}}}},
      {"Expand", {&Importer::expand, {}}},
      {"Slice", {&Importer::slice, {{"starts", kInts}, {"ends", kInts}, {"axes", kInts}}}},
      {"Concat", {&Importer::concat, {{"axis", kInt}}}},
      {"Split", {&Importer::split, {{"axis", kInt}, {"split", kInts}, {"num_outputs", kInt}}}},
      {"Gather", {&Importer::gather, {{"axis", kInt}}}},
      {"ReduceSum", {&Importer::reduce, reduce_attrs}},
      {"ReduceMean", {&Importer::reduce, reduce_attrs}},
      {"ReduceMax", {&Importer::reduce, reduce_attrs}},
      {"ReduceMin", {&Importer::reduce, reduce_attrs}},
      {"ReduceProd", {&Importer::reduce, reduce_attrs}},
      {"ArgMax", {&Importer::argmax, arg_attrs}},
      {"ArgMin", {&Importer::argmax, arg_attrs}},
      {"Softmax", {&Importer::softmax, {{"axis", kInt}}}},
      {"LogSoftmax", {&Importer::softmax, {{"axis", kInt}}}},
      {"LayerNormalization", {&Importer::layer_norm, {{"axis", kInt}, {"epsilon", kFloat}, {"stash_type", kInt}}}},
      {"Identity", {&Importer::identity, {}}},
      {"Constant", {&Importer::constant, {{"value", kTensor}, {"value_float", kFloat}, {"value_floats", kFloats},
                                          {"value_int", kInt}, {"value_ints", kInts}}}},
      {"Shape", {&Importer::shape, {{"start", kInt}, {"end", kInt}}}},
      {"Size", {&Importer::size, {}}},
      {"ConstantOfShape", {&Importer::constant_of_shape, {{"value", kTensor}}}},
      // Beyond the ops kiln set out to support: each one exact in kiln's ops.
      {"Sum", {&Importer::variadic, {}}}, {"Mean", {&Importer::variadic, {}}},
      {"Xor", {&Importer::binary, {}}},
      {"Clip", {&Importer::clip, {{"min", kFloat}, {"max", kFloat}}}},
      {"LeakyRelu", {&Importer::activation, {{"alpha", kFloat}}}},
      {"PRelu", {&Importer::activation, {}}},
      {"Elu", {&Importer::activation, {{"alpha", kFloat}}}},
      {"Selu", {&Importer::activation, {{"alpha", kFloat}, {"gamma", kFloat}}}},
      {"Celu", {&Importer::activation, {{"alpha", kFloat}}}},
      {"HardSigmoid", {&Importer::activation, {{"alpha", kFloat}, {"beta", kFloat}}}},
      {"HardSwish", {&Importer::activation, {}}},
      {"Softplus", {&Importer::activation, {}}},
      {"Softsign", {&Importer::activation, {}}},
      {"ThresholdedRelu", {&Importer::activation, {{"alpha", kFloat}}}},
      {"Shrink", {&Importer::activation, {{"bias", kFloat}, {"lambd", kFloat}}}},
      {"IsNaN", {&Importer::is_nan_inf, {}}},
      {"IsInf", {&Importer::is_nan_inf, {{"detect_negative", kInt}, {"detect_positive", kInt}}}},
      {"Sign", {&Importer::sign, {}}},
      {"ReduceL1", {&Importer::reduce, reduce_attrs}},
      {"ReduceL2", {&Importer::reduce, reduce_attrs}},
      {"ReduceSumSquare", {&Importer::reduce, reduce_attrs}},
      {"ReduceLogSum", {&Importer::reduce, reduce_attrs}},
      {"ReduceLogSumExp", {&Importer::reduce, reduce_attrs}},
      {"GlobalAveragePool", {&Importer::global_pool, {}}},
      {"GlobalMaxPool", {&Importer::global_pool, {}}},
      {"Hardmax", {&Importer::hardmax, {{"axis", kInt}}}},
      {"Dropout", {&Importer::dropout, {{"seed", kInt}, {"ratio", kFloat}}}},
      {"Trilu", {&Importer::trilu, {{"upper", kInt}}}},
      {"Range", {&Importer::range, {}}},
      {"Tile", {&Importer::tile, {}}},
      {"DepthToSpace", {&Importer::depth_space, {{"blocksize", kInt}, {"mode", kString}}}},
      {"SpaceToDepth", {&Importer::depth_space, {{"blocksize", kInt}}}},
      {"BatchNormalization", {&Importer::batch_norm, {{"epsilon", kFloat}, {"momentum", kFloat}, {"training_mode", kInt}}}},
      {"InstanceNormalization", {&Importer::instance_norm, {{"epsilon", kFloat}}}},
      {"MeanVarianceNormalization", {&Importer::mean_variance_norm, {{"axes", kInts}}}},
      {"Round", {&Importer::round, {}}},
      {"Mod", {&Importer::mod, {{"fmod", kInt}}}},
      {"EyeLike", {&Importer::eye_like, {{"dtype", kInt}, {"k", kInt}}}},
      {"Conv", {&Importer::conv, {{"auto_pad", kString}, {"dilations", kInts}, {"group", kInt},
                                  {"kernel_shape", kInts}, {"pads", kInts}, {"strides", kInts}}}},
      {"ConvTranspose", {&Importer::conv, {{"auto_pad", kString}, {"dilations", kInts}, {"group", kInt},
                                           {"kernel_shape", kInts}, {"output_padding", kInts},
                                           {"output_shape", kInts}, {"pads", kInts}, {"strides", kInts}}}},
      {"Resize", {&Importer::resize, {{"antialias", kInt}, {"axes", kInts}, {"coordinate_transformation_mode", kString},
                                      {"cubic_coeff_a", kFloat}, {"exclude_outside", kInt},
                                      {"extrapolation_value", kFloat}, {"keep_aspect_ratio_policy", kString},
                                      {"mode", kString}, {"nearest_mode", kString}}}},
      {"GroupNormalization", {&Importer::group_norm, {{"epsilon", kFloat}, {"num_groups", kInt}, {"stash_type", kInt}}}},
      {"Einsum", {&Importer::einsum, {{"equation", kString}}}},
      {"CumSum", {&Importer::cumsum, {{"exclusive", kInt}, {"reverse", kInt}}}},
      {"TopK", {&Importer::top_k, {{"axis", kInt}, {"k", kInt}, {"largest", kInt}, {"sorted", kInt}}}},
      {"Pad", {&Importer::pad, {{"mode", kString}, {"pads", kInts}, {"value", kFloat}}}},
      {"MaxPool", {&Importer::pool, {{"auto_pad", kString}, {"ceil_mode", kInt}, {"dilations", kInts},
                                     {"kernel_shape", kInts}, {"pads", kInts}, {"storage_order", kInt},
                                     {"strides", kInts}}}},
      {"AveragePool", {&Importer::pool, {{"auto_pad", kString}, {"ceil_mode", kInt}, {"count_include_pad", kInt},
                                         {"dilations", kInts}, {"kernel_shape", kInts}, {"pads", kInts},
                                         {"strides", kInts}}}},
      // losses, gathers and scatters, inverse trigonometric and hyperbolic functions
      {"NegativeLogLikelihoodLoss", {&Importer::nll_loss_op, {{"reduction", kString}, {"ignore_index", kInt}}}},
      {"SoftmaxCrossEntropyLoss",
       {&Importer::softmax_cross_entropy, {{"reduction", kString}, {"ignore_index", kInt}}}},
      {"GatherElements", {&Importer::gather_elements, {{"axis", kInt}}}},
      {"ScatterElements", {&Importer::scatter_elements, {{"axis", kInt}, {"reduction", kString}}}},
      {"Scatter", {&Importer::scatter_elements, {{"axis", kInt}}}},
      {"GatherND", {&Importer::gather_nd, {{"batch_dims", kInt}}}},
      {"Tan", {&Importer::hyperbolic, {}}}, {"Sinh", {&Importer::hyperbolic, {}}},
      {"Cosh", {&Importer::hyperbolic, {}}}, {"Asinh", {&Importer::hyperbolic, {}}},
      {"Acosh", {&Importer::hyperbolic, {}}}, {"Atanh", {&Importer::hyperbolic, {}}},
      {"Atan", {&Importer::arc_trig, {}}}, {"Asin", {&Importer::arc_trig, {}}}, {"Acos", {&Importer::arc_trig, {}}},
      // bit shifts and quantization (onnx_quant.cc)
      {"BitShift", {&Importer::bit_shift, {{"direction", kString}}}},
      {"QuantizeLinear", {&Importer::quantize_linear, {{"axis", kInt}}}},
      {"DequantizeLinear", {&Importer::dequantize_linear, {{"axis", kInt}}}},
      {"DynamicQuantizeLinear", {&Importer::dynamic_quantize_linear, {}}},
      {"MatMulInteger", {&Importer::integer_product, {}}},
      {"ConvInteger", {&Importer::integer_product, {{"auto_pad", kString}, {"dilations", kInts}, {"group", kInt},
                                                    {"kernel_shape", kInts}, {"pads", kInts}, {"strides", kInts}}}},
      {"QLinearMatMul", {&Importer::qlinear_product, {}}},
      {"QLinearConv", {&Importer::qlinear_product, {{"auto_pad", kString}, {"dilations", kInts}, {"group", kInt},
                                                    {"kernel_shape", kInts}, {"pads", kInts}, {"strides", kInts}}}},
      // recurrent networks, LRN, ReverseSequence, Upsample (issue 16)
      {"RNN", {&Importer::recurrent, {{"activation_alpha", kFloats}, {"activation_beta", kFloats}, {"activations", kStrings},
                                      {"clip", kFloat}, {"direction", kString}, {"hidden_size", kInt}, {"layout", kInt}}}},
      {"GRU", {&Importer::recurrent, {{"activation_alpha", kFloats}, {"activation_beta", kFloats}, {"activations", kStrings},
                                      {"clip", kFloat}, {"direction", kString}, {"hidden_size", kInt}, {"layout", kInt},
                                      {"linear_before_reset", kInt}}}},
      {"LSTM", {&Importer::recurrent, {{"activation_alpha", kFloats}, {"activation_beta", kFloats}, {"activations", kStrings},
                                       {"clip", kFloat}, {"direction", kString}, {"hidden_size", kInt}, {"layout", kInt},
                                       {"input_forget", kInt}}}},
      {"ReverseSequence", {&Importer::reverse_sequence, {{"batch_axis", kInt}, {"time_axis", kInt}}}},
      {"LRN", {&Importer::lrn, {{"alpha", kFloat}, {"beta", kFloat}, {"bias", kFloat}, {"size", kInt}}}},
      {"Upsample", {&Importer::resize, {{"mode", kString}}}},
      {"DFT", {&Importer::dft, {{"axis", kInt}, {"inverse", kInt}, {"onesided", kInt}}}},
      {"STFT", {&Importer::stft, {{"onesided", kInt}}}},
      {"ScatterND", {&Importer::scatter_nd, {{"reduction", kString}}}},
      {"Det", {&Importer::det, {}}},
      {"MaxUnpool", {&Importer::max_unpool, {{"kernel_shape", kInts}, {"pads", kInts}, {"strides", kInts}}}},
      {"GridSample", {&Importer::grid_sample, {{"align_corners", kInt}, {"mode", kString}, {"padding_mode", kString}}}},
  };
  return *table;
}

// ---- elementwise -------------------------------------------------------------------

absl::Status Importer::unary() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"Neg", Op::Neg},   {"Abs", Op::Abs},     {"Exp", Op::Exp},         {"Log", Op::Log},
      {"Sqrt", Op::Sqrt}, {"Floor", Op::Floor}, {"Ceil", Op::Ceil},       {"Tanh", Op::Tanh},
      {"Relu", Op::Relu}, {"Erf", Op::Erf},     {"Sigmoid", Op::Sigmoid}, {"Sin", Op::Sin},
      {"Cos", Op::Cos},   {"Not", Op::Not},     {"Reciprocal", Op::Reciprocal}};
  auto it = kOps.find(node_->op_type());
  if (it == kOps.end()) return unsupported("unsupported op");  // op_table() and kOps disagree
  Op op = it->second;
  KILN_ASSIGN_OR_RETURN(auto e, in(0));
  if (op == Op::Neg && e->known) {  // shape arithmetic: a negated axis or length
    std::vector<SymExpr> vals;
    for (const SymExpr& v : *e->known) vals.push_back(-v);
    return define_known(0, e->type.dtype, std::move(vals), e->type.shape);
  }
  if (op == Op::Not && e->known) {  // a known condition
    std::vector<SymExpr> vals;
    for (const SymExpr& v : *e->known) vals.push_back(SymExpr(1) - v);
    return define_known(0, e->type.dtype, std::move(vals), e->type.shape);
  }
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(op, {x}));
  return define(0, y);
}

absl::Status Importer::binary() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"Add", Op::Add}, {"Sub", Op::Sub}, {"Mul", Op::Mul}, {"Div", Op::Div},
      {"Equal", Op::Eq}, {"Less", Op::Lt}, {"LessOrEqual", Op::Le}, {"Greater", Op::Gt},
      {"GreaterOrEqual", Op::Ge}, {"And", Op::And}, {"Or", Op::Or}, {"Xor", Op::Ne}};
  auto it = kOps.find(node_->op_type());
  if (it == kOps.end()) return unsupported("unsupported op");  // op_table() and kOps disagree
  Op op = it->second;
  if (node_->input_size() != 2) return bad("expects 2 inputs, got ", node_->input_size());
  KILN_ASSIGN_OR_RETURN(auto a, in(0));
  KILN_ASSIGN_OR_RETURN(auto b, in(1));
  if (a->known && b->known && a->type.dtype == b->type.dtype) {
    if (std::optional<std::vector<SymExpr>> r = fold_binary(op, *a->known, *b->known)) {
      Shape shape = a->type.shape.size() >= b->type.shape.size() ? a->type.shape : b->type.shape;
      if (!shape.empty()) shape[0] = static_cast<int64_t>(r->size());
      bool logical = op != Op::Add && op != Op::Sub && op != Op::Mul && op != Op::Div;
      return define_known(0, logical ? DType::boolean : a->type.dtype, *std::move(r), std::move(shape));
    }
  }
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, value(1));
  KILN_ASSIGN_OR_RETURN(auto out, emit(op, {x, y}));
  return define(0, out);
}

// Max, Min, Sum and Mean of one or more inputs, broadcast together.
absl::Status Importer::variadic() {
  const std::string& type = node_->op_type();
  Op op = type == "Max" ? Op::Maximum : type == "Min" ? Op::Minimum : Op::Add;
  if (node_->input_size() < 1) return bad("expects at least one input");
  KILN_ASSIGN_OR_RETURN(auto first, value(0));
  Ex acc = ex(first);
  for (int i = 1; i < node_->input_size(); ++i) {
    KILN_ASSIGN_OR_RETURN(auto x, value(i));
    acc = apply(op, {acc, ex(x)});
  }
  if (type == "Mean") acc = apply(Op::Div, {acc, constant_like(acc, node_->input_size())});
  return define(0, acc);
}

absl::Status Importer::pow() {
  KILN_ASSIGN_OR_RETURN(auto base, value(0));
  KILN_ASSIGN_OR_RETURN(auto exponent, value(1));
  if (is_integer(base->dtype())) return integer_pow(base, exponent);
  if (!is_float(base->dtype())) return bad("expects a numeric base, got ", base->type().to_string());
  if (exponent->dtype() != base->dtype()) {
    // ONNX lets the exponent's type differ; kiln's binary ops want equal dtypes.
    KILN_ASSIGN_OR_RETURN(auto c, emit(Op::Cast, {exponent}, {{"dtype", base->dtype()}}));
    exponent = c;
  }
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Pow, {base, exponent}));
  return define(0, y);
}

absl::Status Importer::gelu() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Gelu, {x}, {{"approximate", attr_string("approximate", "none")}}));
  return define(0, y);
}

// Cast(x, to=T), or CastLike(x, like): x converted to T or to like's dtype.
absl::Status Importer::cast() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  std::optional<DType> t;
  if (node_->op_type() == "CastLike") {
    KILN_ASSIGN_OR_RETURN(auto like, in(1));
    t = like->type.dtype;
  } else {
    const onnx::AttributeProto* to = attr("to");
    if (!to) return bad("missing attribute 'to'");
    t = dtype_from_onnx(static_cast<int32_t>(to->i()));
    if (!t) return unsupported("cast to unsupported element type ", onnx_type_name(static_cast<int32_t>(to->i())));
  }
  if (x->known && (*t == DType::i32 || *t == DType::i64)) {
    std::vector<SymExpr> vals = *x->known;
    if (*t == DType::i32)
      for (SymExpr& v : vals)
        if (std::optional<int64_t> c = v.constant()) v = wrap_int(*c, DType::i32);
    return define_known(0, *t, std::move(vals), x->type.shape);
  }
  if (x->known && std::all_of(x->known->begin(), x->known->end(), [](const SymExpr& v) { return v.is_constant(); })) {
    // Constant integers cast to a float or bool stay constants (Range's float operands).
    std::vector<int64_t> dims;
    for (const Dim& d : x->type.shape) dims.push_back(*d.constant());
    HostTensor out(*t, dims);
    for (size_t i = 0; i < x->known->size(); ++i) {
      int64_t v = *(*x->known)[i].constant();
      if (*t == DType::boolean) out.set_int(i, v != 0);
      else if (*t == DType::f64) out.set(i, static_cast<double>(v));
      else if (is_float(*t)) out.set(i, static_cast<float>(v));  // as kiln's cast: through float
      else out.set_int(i, v);  // wrapped to the target's width
    }
    return define_data(0, std::move(out));
  }
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Cast, {xv}, {{"dtype", *t}}));
  return define(0, y);
}

absl::Status Importer::where_op() {
  KILN_ASSIGN_OR_RETURN(auto ck, in(0));
  KILN_ASSIGN_OR_RETURN(auto ak, in(1));
  KILN_ASSIGN_OR_RETURN(auto bk, in(2));
  if (ck->known && ak->known && bk->known && ak->type.dtype == bk->type.dtype) {
    // Shape arithmetic: a known condition picks among known values.
    size_t n = std::max({ck->known->size(), ak->known->size(), bk->known->size()});
    auto at = [n](const std::vector<SymExpr>& v, size_t i) -> const SymExpr* {
      return v.size() == 1 ? &v[0] : v.size() == n ? &v[i] : nullptr;
    };
    std::vector<SymExpr> vals;
    for (size_t i = 0; i < n; ++i) {
      const SymExpr *c = at(*ck->known, i), *x = at(*ak->known, i), *y = at(*bk->known, i);
      if (!c || !x || !y || !c->constant()) break;
      vals.push_back(*c->constant() ? *x : *y);
    }
    size_t rank = std::max({ck->type.shape.size(), ak->type.shape.size(), bk->type.shape.size()});
    if (vals.size() == n) return define_known(0, ak->type.dtype, std::move(vals), rank ? Shape{static_cast<int64_t>(n)} : Shape{});
  }
  KILN_ASSIGN_OR_RETURN(auto c, value(0));
  KILN_ASSIGN_OR_RETURN(auto a, value(1));
  KILN_ASSIGN_OR_RETURN(auto b, value(2));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Where, {c, a, b}));
  return define(0, y);
}

// ---- linear algebra ------------------------------------------------------------------

absl::Status Importer::matmul() {
  KILN_ASSIGN_OR_RETURN(auto a, value(0));
  KILN_ASSIGN_OR_RETURN(auto b, value(1));
  if (!is_float(a->dtype()))
    return unsupported("MatMul on ", dtype_name(a->dtype()), " is not supported: kiln's matmul is floating-point only");
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::MatMul, {a, b}));
  return define(0, y);
}

// Y = alpha * A' B' + beta * C, with A' = A^T if transA, B' = B^T if transB.
absl::Status Importer::gemm() {
  KILN_ASSIGN_OR_RETURN(auto a, value(0));
  KILN_ASSIGN_OR_RETURN(auto b, value(1));
  if (!is_float(a->dtype()))
    return unsupported("Gemm on ", dtype_name(a->dtype()), " is not supported: kiln's matmul is floating-point only");
  Attrs swap{{"dims", std::vector<int64_t>{1, 0}}};
  if (attr_int("transA", 0)) {
    KILN_ASSIGN_OR_RETURN(auto t, emit(Op::Permute, {a}, swap));
    a = t;
  }
  if (attr_int("transB", 0)) {
    KILN_ASSIGN_OR_RETURN(auto t, emit(Op::Permute, {b}, swap));
    b = t;
  }
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::MatMul, {a, b}));
  if (double alpha = attr_float("alpha", 1.0); alpha != 1.0) {
    KILN_ASSIGN_OR_RETURN(auto s, scalar(alpha, y->dtype()));
    KILN_ASSIGN_OR_RETURN(auto scaled, emit(Op::Mul, {y, s}));
    y = scaled;
  }
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto c, value(2));
    if (double beta = attr_float("beta", 1.0); beta != 1.0) {
      KILN_ASSIGN_OR_RETURN(auto s, scalar(beta, c->dtype()));
      KILN_ASSIGN_OR_RETURN(auto scaled, emit(Op::Mul, {c, s}));
      c = scaled;
    }
    KILN_ASSIGN_OR_RETURN(auto sum, emit(Op::Add, {y, c}));
    y = sum;
  }
  return define(0, y);
}

// ---- shape and data movement ---------------------------------------------------------

absl::Status Importer::reshape() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  std::vector<SymExpr> shape;
  if (opset_ < 5) {
    std::optional<std::vector<int64_t>> s = attr_ints("shape");
    if (!s) return bad("missing attribute 'shape'");
    shape.assign(s->begin(), s->end());
  } else {
    KILN_ASSIGN_OR_RETURN(auto s, known(1, "shape"));
    shape = std::move(s);
  }
  bool allowzero = attr_int("allowzero", 0) != 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] != SymExpr(0) || allowzero) continue;
    if (i >= x->type.shape.size()) return bad("shape[", i, "] = 0 copies a dim the input ", x->type.to_string(), " lacks");
    shape[i] = x->type.shape[i];
  }
  if (x->known && shape.size() <= 1) {
    Shape out;
    if (!shape.empty()) out.push_back(static_cast<int64_t>(x->known->size()));
    if (shape.empty() ? x->known->size() == 1
                      : shape[0] == SymExpr(-1) || shape[0] == SymExpr(static_cast<int64_t>(x->known->size())))
      return define_known(0, x->type.dtype, *x->known, std::move(out));
  }
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Reshape, {xv}, {{"shape", shape}}));
  return define(0, y);
}

absl::Status Importer::transpose() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  std::vector<int64_t> perm;
  if (std::optional<std::vector<int64_t>> p = attr_ints("perm")) {
    perm = *p;
  } else {
    for (int64_t i = static_cast<int64_t>(x->shape().size()) - 1; i >= 0; --i) perm.push_back(i);
  }
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Permute, {x}, {{"dims", perm}}));
  return define(0, y);
}

absl::Status Importer::squeeze() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  KILN_ASSIGN_OR_RETURN(auto axes, ints_operand(1, "axes"));
  if (x->known && x->type.shape.size() == 1 && x->known->size() == 1 &&
      (!axes || (axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1))))
    return define_known(0, x->type.dtype, *x->known, {});
  Attrs attrs;
  if (axes) attrs.set("axes", *axes);
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Squeeze, {xv}, attrs));
  return define(0, y);
}

absl::Status Importer::unsqueeze() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  KILN_ASSIGN_OR_RETURN(auto axes, ints_operand(1, "axes"));
  if (!axes) return bad("missing axes");
  if (x->known && x->type.shape.empty() && axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1))
    return define_known(0, x->type.dtype, *x->known, {1});
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Unsqueeze, {xv}, {{"axes", *axes}}));
  return define(0, y);
}

absl::Status Importer::flatten() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  int64_t axis = attr_int("axis", 1);
  if (axis < -rank || axis > rank) return bad("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  Shape outer(x->shape().begin(), x->shape().begin() + axis), inner(x->shape().begin() + axis, x->shape().end());
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{shape_numel(outer), shape_numel(inner)}}}));
  return define(0, y);
}

absl::Status Importer::expand() {
  KILN_ASSIGN_OR_RETURN(auto dims, known(1, "shape"));
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  // ONNX's Expand broadcasts both ways: the result has the broadcast of both shapes.
  absl::StatusOr<Shape> target = broadcast_shapes(x->shape(), dims);
  if (!target.ok()) return bad(target.status().message());
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Expand, {x}, {{"shape", *target}}));
  return define(0, y);
}

absl::Status Importer::slice() {
  std::vector<SymExpr> starts, ends;
  std::vector<int64_t> axes, steps;
  if (opset_ < 10) {
    std::optional<std::vector<int64_t>> s = attr_ints("starts"), e = attr_ints("ends");
    if (!s || !e) return bad("missing attribute 'starts' or 'ends'");
    starts.assign(s->begin(), s->end()), ends.assign(e->begin(), e->end());
    if (std::optional<std::vector<int64_t>> a = attr_ints("axes")) axes = *a;
  } else {
    KILN_ASSIGN_OR_RETURN(starts, known(1, "starts"));
    KILN_ASSIGN_OR_RETURN(ends, known(2, "ends"));
    if (has_input(3)) {
      KILN_ASSIGN_OR_RETURN(auto a, known_ints(3, "axes"));
      axes = a;
    }
    if (has_input(4)) {
      KILN_ASSIGN_OR_RETURN(auto st, known_ints(4, "steps"));
      steps = st;
    }
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return bad("starts, ends, axes and steps differ in length");
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  int64_t rank = x->type.shape.size();
  for (size_t i = 0; i < starts.size(); ++i) {
    if (steps[i] == 0) return bad("steps must not be 0");
    KILN_ASSIGN_OR_RETURN(auto ax, axis_in("axis", axes[i], rank));
    axes[i] = ax;
  }
  if (x->known && rank == 1 && starts.size() == 1 && starts[0].constant() && ends[0].constant()) {
    std::vector<SymExpr> vals;
    for (int64_t j : slice_indices(x->known->size(), *starts[0].constant(), *ends[0].constant(), steps[0]))
      vals.push_back((*x->known)[j]);
    int64_t n = vals.size();
    return define_known(0, x->type.dtype, std::move(vals), {n});
  }
  KILN_ASSIGN_OR_RETURN(auto y, value(0));
  for (size_t i = 0; i < starts.size(); ++i) {
    SymExpr s = starts[i], e = ends[i];
    const Dim& d = y->shape()[axes[i]];
    if (!(d.constant() && s.constant() && e.constant())) {
      KILN_ASSIGN_OR_RETURN(std::tie(s, e), in_dim_bounds(d, s, e, steps[i]));
    }
    Attrs attrs{{"axis", axes[i]}, {"start", s}, {"end", e}};
    if (steps[i] != 1) attrs.set("step", steps[i]);
    KILN_ASSIGN_OR_RETURN(y, emit(Op::Slice, {y}, std::move(attrs)));
  }
  return define(0, y);
}

// ONNX's clamping cannot be written on symbolic bounds, so the slice's bounds are made to
// lie in [0, dim]: a bound kiln can prove negative counts from the end, and every bound is
// proved in range from the symbols' bounds, else assumed by narrowing the one symbol it
// depends on (`seq <= 512` for position_ids[:, :seq] of a [1, 512] table). The narrowed
// bounds are the graph's (`symbol seq in [1, 512]`): a call outside them is rejected, where
// onnxruntime would clamp.
absl::StatusOr<std::pair<SymExpr, SymExpr>> Importer::in_dim_bounds(const Dim& d, SymExpr s, SymExpr e, int64_t step) {
  if (step < 0)
    return needs_constant("a negative step needs a static dim and constant starts and ends, got dim ", d.to_string(),
                          ", start ", s.to_string(), ", end ", e.to_string());
  auto normalize = [&](SymExpr b, std::string_view what) -> absl::StatusOr<SymExpr> {
    if (std::optional<int64_t> c = b.constant()) {
      if (*c >= (int64_t{1} << 62)) return d;  // INT64_MAX: to the end
      if (*c < 0) b = d + *c;
    } else {
      SymRange r = symbol_value_range(b);
      if (r.hi && *r.hi < 0) b = d + b;
      else if (!r.lo || *r.lo < 0)
        return needs_constant(what, " ", b.to_string(), " may be negative or not for the symbols' bounds: kiln cannot "
                              "tell whether it counts from the end");
    }
    KILN_RETURN_IF_ERROR(assume_nonnegative(b, str_cat("slice bound: ", what, " >= 0")));
    KILN_RETURN_IF_ERROR(assume_nonnegative(d - b, str_cat("slice bound: ", what, " <= dim ", d.to_string())));
    return b;
  };
  KILN_ASSIGN_OR_RETURN(SymExpr first, normalize(s, "start"));
  KILN_ASSIGN_OR_RETURN(SymExpr last, normalize(e, "end"));
  KILN_RETURN_IF_ERROR(assume_nonnegative(last - first, "slice bound: start <= end"));
  return std::pair{first, last};
}

SymRange Importer::symbol_value_range(const SymExpr& e) const {
  return value_range(e, [&](const std::string& s) {
    SymbolInfo info = g_.symbol_info(s);
    return SymRange{info.min, info.max};
  });
}

absl::Status Importer::assume_nonnegative(const SymExpr& e, std::string_view what) {
  std::optional<int64_t> lo = symbol_value_range(e).lo;
  if (lo && *lo >= 0) return absl::OkStatus();
  // c + k * S, or c + k * (S // m) with k > 0: a bound on S.
  const std::vector<SymTerm>& terms = e.poly().terms;
  int64_t c = 0, m = 1;
  const SymTerm* linear = nullptr;
  std::string sym;
  bool other = false;
  for (const SymTerm& t : terms) {
    const SymAtom* atom = t.factors.size() == 1 && t.factors[0].exp == 1 ? t.factors[0].atom.get() : nullptr;
    bool symbol = atom && atom->kind == SymAtom::Kind::Symbol;
    const SymAtom* inner = nullptr;  // S of S // m
    if (atom && atom->kind == SymAtom::Kind::FloorDiv && t.coeff > 0 && atom->arg->terms.size() == 1) {
      const SymTerm& a = atom->arg->terms[0];
      if (a.coeff == 1 && a.factors.size() == 1 && a.factors[0].exp == 1 && a.factors[0].atom->kind == SymAtom::Kind::Symbol)
        inner = a.factors[0].atom.get();
    }
    bool div = inner != nullptr;
    if (t.factors.empty()) c = t.coeff;
    else if (!linear && (symbol || div)) {
      linear = &t;
      sym = symbol ? atom->name : inner->name;
      if (div) m = atom->divisor;
    } else {
      other = true;
    }
  }
  if (!linear || other)
    return needs_constant(what, " (", e.to_string(), " >= 0) is not implied by the symbols' bounds");
  SymbolInfo info = g_.symbol_info(sym);
  int64_t k = linear->coeff;
  if (k > 0) info.min = std::max(info.min, m * -floor_div(c, k));  // S // m >= ceil(-c / k)
  else info.max = std::min(info.max.value_or(std::numeric_limits<int64_t>::max()), floor_div(c, -k));
  if (info.max && info.min > *info.max)
    return bad(what, " (", e.to_string(), " >= 0) needs ", sym, " outside its bounds");
  return g_.set_symbol_bounds(sym, info);
}

absl::Status Importer::concat() {
  const onnx::AttributeProto* axis = attr("axis");
  if (!axis) return bad("missing attribute 'axis'");
  if (node_->input_size() < 1) return bad("expects at least one input");
  std::vector<Entry*> ins;
  for (int i = 0; i < node_->input_size(); ++i) {
    KILN_ASSIGN_OR_RETURN(auto e, in(i));
    ins.push_back(e);
  }
  bool all_known = std::all_of(ins.begin(), ins.end(), [&](const Entry* e) {
    return e->known && e->type.shape.size() == 1 && e->type.dtype == ins[0]->type.dtype;
  });
  if (all_known) {
    std::vector<SymExpr> vals;
    for (const Entry* e : ins) vals.insert(vals.end(), e->known->begin(), e->known->end());
    int64_t n = vals.size();
    if (n <= kMaxKnown) return define_known(0, ins[0]->type.dtype, std::move(vals), {n});
  }
  std::vector<Value*> vs;
  std::vector<std::pair<SymExpr, SymExpr>> differing;
  for (int i = 0; i < node_->input_size(); ++i) {
    KILN_ASSIGN_OR_RETURN(auto v, value(i));
    vs.push_back(v);
    const Shape &a = vs[0]->shape(), &b = v->shape();
    int64_t ax = axis->i() < 0 ? axis->i() + static_cast<int64_t>(a.size()) : axis->i();
    if (a.size() == b.size())
      for (size_t j = 0; j < a.size(); ++j)
        if (static_cast<int64_t>(j) != ax && a[j] != b[j]) differing.push_back({a[j], b[j]});
  }
  if (!differing.empty() && want_multiples(differing))
    return unsupported("operand dims ", differing[0].first.to_string(), " and ", differing[0].second.to_string(),
                       " agree only for some sizes (the import is rerun with the inputs' dims declared multiples)");
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Concat, vs, {{"axis", axis->i()}}));
  return define(0, y);
}

namespace {
// The divisors of the floordiv and mod atoms of p, by the symbols their arguments involve.
void collect_divisors(const SymPoly& p, std::map<std::string, int64_t>& lcm_of, int64_t outer) {
  for (const SymTerm& t : p.terms)
    for (const SymFactor& f : t.factors) {
      const SymAtom& a = *f.atom;
      if (a.kind == SymAtom::Kind::Symbol) {
        int64_t& l = lcm_of.try_emplace(a.name, 1).first->second;
        l = std::lcm(l, outer);
      } else {
        collect_divisors(*a.arg, lcm_of, std::lcm(outer, a.divisor));
      }
    }
}
}  // namespace

bool Importer::want_multiples(const std::vector<std::pair<SymExpr, SymExpr>>& differing) {
  std::map<std::string, int64_t> lcm_of;
  for (const auto& [a, b] : differing) collect_divisors(a.poly(), lcm_of, 1), collect_divisors(b.poly(), lcm_of, 1);
  std::map<std::string, SymExpr> repl;
  for (const auto& [s, c] : lcm_of)
    if (c > 1 && c <= 1024) repl[s] = c * SymExpr::symbol(str_cat(s, "_q"));
  if (repl.empty()) return false;
  for (const auto& [a, b] : differing)
    if (a.substitute(repl) != b.substitute(repl)) return false;
  std::map<std::string, int64_t> want;
  for (const auto& [s, c] : lcm_of) {
    if (c == 1) continue;
    if (auto it = scaled_.find(s); it != scaled_.end()) want[it->second.first] = it->second.second * c;
    else if (dim_params_.contains(s) && !multiples_.contains(s)) want[s] = c;
    else return false;
  }
  wanted_ = std::move(want);
  return true;
}

absl::Status Importer::split() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", 0), rank));
  std::vector<SymExpr> sizes;
  if (std::optional<std::vector<int64_t>> s = attr_ints("split")) {
    sizes.assign(s->begin(), s->end());
  } else if (has_input(1)) {
    KILN_ASSIGN_OR_RETURN(auto s, known(1, "split"));
    sizes = std::move(s);
  } else {
    int64_t n = attr_int("num_outputs", node_->output_size());
    if (n <= 0) return bad("cannot split into ", n, " parts");
    std::optional<SymExpr> part = x->shape()[axis].divide_exact(SymExpr(n));
    if (!part) return unsupported("dim ", x->shape()[axis].to_string(), " does not split into ", n, " equal parts");
    sizes.assign(n, *part);
  }
  if (static_cast<int>(sizes.size()) != node_->output_size())
    return bad(sizes.size(), " split sizes for ", node_->output_size(), " outputs");
  KILN_ASSIGN_OR_RETURN(auto n, emit_node(Op::Split, {x}, {{"axis", axis}, {"sizes", sizes}}));
  for (int i = 0; i < node_->output_size(); ++i) KILN_RETURN_IF_ERROR(define(i, n->result(i)));
  return absl::OkStatus();
}

absl::Status Importer::gather() {
  KILN_ASSIGN_OR_RETURN(auto data, in(0));
  KILN_ASSIGN_OR_RETURN(auto idx, in(1));
  int64_t axis = attr_int("axis", 0);
  if (data->known && idx->known && data->type.shape.size() == 1 && (axis == 0 || axis == -1)) {
    int64_t n = data->known->size();
    std::vector<SymExpr> vals;
    bool in_range = true;
    for (const SymExpr& i : *idx->known) {
      std::optional<int64_t> c = i.constant();
      if (!c || *c < -n || *c >= n) {
        in_range = false;
        break;
      }
      vals.push_back((*data->known)[*c < 0 ? *c + n : *c]);
    }
    if (in_range) return define_known(0, data->type.dtype, std::move(vals), idx->type.shape);
  }
  KILN_ASSIGN_OR_RETURN(auto d, value(0));
  KILN_ASSIGN_OR_RETURN(auto i, value(1));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Gather, {d, i}, {{"axis", axis}}));
  return define(0, y);
}

// ---- reductions ----------------------------------------------------------------------

// ReduceSum/Mean/Max/Min/Prod map to kiln's reductions; L1, L2, SumSquare, LogSum and
// LogSumExp (with the row maximum subtracted first) are built from them.
absl::Status Importer::reduce() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"ReduceSum", Op::Sum}, {"ReduceMean", Op::Mean}, {"ReduceMax", Op::Max},
      {"ReduceMin", Op::Min}, {"ReduceProd", Op::Prod}};
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto axes, ints_operand(1, "axes"));
  bool keepdim = attr_int("keepdims", 1) != 0;
  if ((!axes || axes->empty()) && attr_int("noop_with_empty_axes", 0)) return define(0, xv);
  auto reduce = [&](Op op, const Ex& e, bool keep) {
    Attrs attrs{{"keepdim", keep}};
    if (axes && !axes->empty()) attrs.set("axes", *axes);
    return apply(op, {e}, std::move(attrs));
  };
  const std::string& type = node_->op_type();
  Ex x = ex(xv);
  if (auto it = kOps.find(type); it != kOps.end()) return define(0, reduce(it->second, x, keepdim));
  if (type == "ReduceL1") return define(0, reduce(Op::Sum, abs(x), keepdim));
  if (type == "ReduceL2") return define(0, sqrt(reduce(Op::Sum, x * x, keepdim)));
  if (type == "ReduceSumSquare") return define(0, reduce(Op::Sum, x * x, keepdim));
  if (type == "ReduceLogSum") return define(0, log(reduce(Op::Sum, x, keepdim)));
  Ex m = reduce(Op::Max, x, true);  // ReduceLogSumExp
  return define(0, log(reduce(Op::Sum, exp(x - m), keepdim)) + (keepdim ? m : reduce(Op::Max, x, false)));
}

// ArgMin is the argmax of order_reversed(x) (ex_ops.h; NaN stays NaN, so the first NaN
// still wins). select_last_index reverses the axis and maps the index i found there back to
// n - 1 - i.
absl::Status Importer::argmax() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", 0), rank));
  Value* v = x;
  if (node_->op_type() == "ArgMin") {
    if (x->dtype() == DType::boolean) return unsupported("ArgMin of a bool tensor is not supported");
    KILN_ASSIGN_OR_RETURN(v, order_reversed(ex(x)).v);
  }
  std::optional<int64_t> n = x->shape()[axis].constant();
  bool last = attr_int("select_last_index", 0) != 0;
  if (last) {
    if (!n) return unsupported("select_last_index=1 needs a static dim at axis ", axis, ", got ", x->type().to_string());
    KILN_ASSIGN_OR_RETURN(auto rev, emit(Op::Slice, {v}, {{"axis", axis}, {"start", int64_t{-1}},
                                           {"end", std::numeric_limits<int64_t>::min()}, {"step", int64_t{-1}}}));
    v = rev;
  }
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::ArgMax, {v}, {{"axis", axis}, {"keepdim", attr_int("keepdims", 1) != 0}}));
  if (last) {
    KILN_ASSIGN_OR_RETURN(auto top, scalar(static_cast<double>(*n - 1), DType::i64));
    KILN_ASSIGN_OR_RETURN(auto idx, emit(Op::Sub, {top, y}));
    y = idx;
  }
  return define(0, y);
}

// TopK(x, K): the K largest (largest=1) or smallest elements along `axis` and their int64
// indices, in order; equal elements in index order, NaN taken first (as ArgMax and ArgMin
// take the first NaN). K must be a constant (it is the results' dim); a symbolic dim along
// `axis` is guarded to be at least K. Decomposed into K rounds over the elements not yet
// taken: m = their maximum, then the first untaken index holding m (NaN matches NaN). A
// round is two reductions, so this is O(K n); K is capped at kMaxTopK. smallest is the
// largest of order_reversed(x), mapped back by the same function. sorted=0 allows any order:
// the sorted one is returned.
absl::Status Importer::top_k() {
  constexpr int64_t kMaxTopK = 256;
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size();
  if (xv->dtype() == DType::boolean) return unsupported("TopK of a bool tensor is not supported");
  if (rank == 0) return bad("expects a tensor of rank >= 1, got ", xv->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", -1), rank));
  int64_t k = attr_int("k", -1);
  if (opset_ >= 10) {
    KILN_ASSIGN_OR_RETURN(auto ks, known_ints(1, "K"));
    if (ks.size() != 1) return bad("K must hold one value, got ", ks.size());
    k = ks[0];
  }
  const Dim& n = xv->shape()[axis];
  if (k < 0 || (n.constant() && k > *n.constant()))
    return bad("K = ", k, " is outside [0, ", n.to_string(), "] for ", xv->type().to_string());
  if (k > kMaxTopK) return unsupported("K = ", k, ": TopK runs as K rounds of reductions, at most ", kMaxTopK);
  // A symbolic dim gets the guard n >= K.
  if (!n.constant())
    KILN_RETURN_IF_ERROR(assume_nonnegative(n - k, str_cat("TopK's K = ", k, " <= dim ", n.to_string())));
  DType t = xv->dtype();
  Ex x = ex(xv);
  bool largest = attr_int("largest", 1) != 0;
  Ex v = largest ? x : order_reversed(x);
  Ex pos = apply(Op::Iota, {}, {{"shape", xv->shape()}, {"axis", axis}, {"dtype", DType::i64}});
  double lowest = is_float(t)      ? -std::numeric_limits<double>::infinity()
                  : is_unsigned(t) ? 0.0
                                   : -std::ldexp(1.0, static_cast<int>(dtype_bits(t)) - 1);
  Ex free{this, scalar(1, DType::boolean)};
  std::vector<Ex> values, indices;
  for (int64_t round = 0; round < k; ++round) {
    Ex m = apply(Op::Max, {select(free, v, lowest)}, {{"axes", std::vector<int64_t>{axis}}, {"keepdim", true}});
    Ex hit = free && ((v == m) || ((v != v) && (m != m)));
    Ex i = apply(Op::ArgMax, {apply(Op::Cast, {hit}, {{"dtype", DType::i32}})}, {{"axis", axis}, {"keepdim", true}});
    values.push_back(largest ? m : order_reversed(m));
    indices.push_back(i);
    free = free && (pos != i);
  }
  if (k == 0) {
    Ex none = apply(Op::Slice, {x}, {{"axis", axis}, {"start", SymExpr(0)}, {"end", SymExpr(0)}});
    KILN_RETURN_IF_ERROR(define(0, none));
    return define(1, apply(Op::Cast, {none}, {{"dtype", DType::i64}}));
  }
  auto join = [&](std::vector<Ex> parts) {
    return parts.size() == 1 ? parts[0] : apply(Op::Concat, parts, {{"axis", axis}});
  };
  KILN_RETURN_IF_ERROR(define(0, join(values)));
  return define(1, join(indices));
}

// Opset 13 works along one axis (default -1); earlier opsets flatten the input to 2-D at
// `axis` (default 1) and work along each row.
absl::Status Importer::along_axis(const std::function<Ex(Ex, int64_t)>& f) {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  if (opset_ >= 13) {
    KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", -1), rank));
    return define(0, f(ex(x), axis));
  }
  int64_t axis = attr_int("axis", 1);
  if (axis < -rank || axis > rank) return bad("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  if (axis == rank - 1) return define(0, f(ex(x), axis));
  Shape outer(x->shape().begin(), x->shape().begin() + axis), inner(x->shape().begin() + axis, x->shape().end());
  Ex flat = apply(Op::Reshape, {ex(x)}, {{"shape", std::vector<SymExpr>{shape_numel(outer), shape_numel(inner)}}});
  return define(0, apply(Op::Reshape, {f(flat, 1)}, {{"shape", x->shape()}}));
}

absl::Status Importer::softmax() {
  Op op = node_->op_type() == "Softmax" ? Op::Softmax : Op::LogSoftmax;
  return along_axis([&](Ex x, int64_t axis) { return apply(op, {x}, {{"axis", axis}}); });
}

// One at the first maximum along the axis, zero elsewhere.
absl::Status Importer::hardmax() {
  return along_axis([&](Ex x, int64_t axis) -> Ex {
    if (!x.v.ok()) return x;
    const TensorType& t = (*x.v)->type();
    Ex first = apply(Op::ArgMax, {x}, {{"axis", axis}, {"keepdim", true}});
    Ex index = apply(Op::Iota, {}, {{"shape", t.shape}, {"axis", axis}, {"dtype", DType::i64}});
    return apply(Op::Cast, {apply(Op::Eq, {index, first})}, {{"dtype", t.dtype}});
  });
}

// Y = layer_norm over axes [axis, rank); the optional Mean and InvStdDev outputs are
// computed beside it (kept dims of size 1, as ONNX defines them).
absl::Status Importer::layer_norm() {
  if (attr_int("stash_type", 1) != 1) return unsupported("stash_type other than 1 (float) is not supported");
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", -1), rank));
  std::vector<int64_t> axes;
  for (int64_t i = axis; i < rank; ++i) axes.push_back(i);
  Shape norm_shape(x->shape().begin() + axis, x->shape().end());
  std::vector<Value*> operands{x};
  for (int i = 1; i <= 2; ++i) {
    if (!has_input(i)) break;  // kiln's layer_norm takes weight, then bias
    KILN_ASSIGN_OR_RETURN(auto w, value(i));
    if (w->shape() != norm_shape) {
      // ONNX allows scale/bias that broadcast to the normalized shape; kiln wants it exact.
      KILN_ASSIGN_OR_RETURN(auto e, emit(Op::Expand, {w}, {{"shape", norm_shape}}));
      w = e;
    }
    operands.push_back(w);
  }
  double eps = attr_float("epsilon", 1e-5);
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::LayerNorm, operands, {{"axes", axes}, {"eps", eps}}));
  KILN_RETURN_IF_ERROR(define(0, y));
  bool want_mean = node_->output_size() > 1 && !node_->output(1).empty();
  bool want_inv = node_->output_size() > 2 && !node_->output(2).empty();
  if (!want_mean && !want_inv) return absl::OkStatus();
  // Mean and InvStdDev have the stash type (f32) whatever x's type.
  Value* xs = x;
  if (x->dtype() != DType::f32) {
    KILN_ASSIGN_OR_RETURN(auto c, emit(Op::Cast, {x}, {{"dtype", DType::f32}}));
    xs = c;
  }
  Attrs reduce{{"axes", axes}, {"keepdim", true}};
  KILN_ASSIGN_OR_RETURN(auto mean, emit(Op::Mean, {xs}, reduce));
  KILN_RETURN_IF_ERROR(define(1, mean));
  if (!want_inv) return absl::OkStatus();
  KILN_ASSIGN_OR_RETURN(auto centered, emit(Op::Sub, {xs, mean}));
  KILN_ASSIGN_OR_RETURN(auto sq, emit(Op::Mul, {centered, centered}));
  KILN_ASSIGN_OR_RETURN(auto var, emit(Op::Mean, {sq}, reduce));
  KILN_ASSIGN_OR_RETURN(auto e, scalar(eps, DType::f32));
  KILN_ASSIGN_OR_RETURN(auto shifted, emit(Op::Add, {var, e}));
  KILN_ASSIGN_OR_RETURN(auto inv, emit(Op::Rsqrt, {shifted}));
  return define(2, inv);
}

// ---- constants and shapes ------------------------------------------------------------

absl::Status Importer::identity() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  return define_entry(0, *x);
}

absl::Status Importer::constant() {
  if (node_->attribute_size() != 1) return bad("expects exactly one value attribute");
  const onnx::AttributeProto& a = node_->attribute(0);
  if (a.name() == "value") {
    absl::StatusOr<HostTensor> t = tensor_from_onnx(a.t());
    if (!t.ok()) return prefix_error(t.status(), where());
    return define_data(0, *std::move(t));
  }
  bool is_list = a.name() == "value_floats" || a.name() == "value_ints";
  bool is_float_value = a.name() == "value_float" || a.name() == "value_floats";
  int64_t n = !is_list ? 1 : is_float_value ? a.floats_size() : a.ints_size();
  HostTensor t(is_float_value ? DType::f32 : DType::i64, is_list ? std::vector<int64_t>{n} : std::vector<int64_t>{});
  for (int64_t i = 0; i < n; ++i) {
    if (is_float_value) t.set(i, is_list ? a.floats(i) : a.f());
    else t.set_int(i, is_list ? a.ints(i) : a.i());
  }
  return define_data(0, std::move(t));
}

absl::Status Importer::shape() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  int64_t rank = x->type.shape.size();
  auto clamp = [rank](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  int64_t start = clamp(attr_int("start", 0)), end = clamp(attr_int("end", rank));
  std::vector<SymExpr> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(x->type.shape[i]);
  int64_t n = dims.size();
  return define_known(0, DType::i64, std::move(dims), {n});
}

absl::Status Importer::size() {
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  return define_known(0, DType::i64, {shape_numel(x->type.shape)}, {});
}

// A small static integer result is data (shape arithmetic may read it); anything else is
// a scalar constant expanded, which costs no memory at import time whatever the shape.
absl::Status Importer::constant_of_shape() {
  KILN_ASSIGN_OR_RETURN(auto dims, known(0, "shape"));
  HostTensor fill(DType::f32, {1});
  if (const onnx::AttributeProto* v = attr("value")) {
    absl::StatusOr<HostTensor> t = tensor_from_onnx(v->t());
    if (!t.ok()) return prefix_error(t.status(), where());
    if (t->numel() != 1) return bad("value must hold one element, got ", t->type_string());
    fill = *std::move(t);
  }
  Shape shape(dims.begin(), dims.end());
  for (const Dim& d : shape)
    if (std::optional<int64_t> c = d.constant(); c && *c < 0) return bad("negative dim in shape ", shape_to_string(shape));
  std::optional<int64_t> numel = shape_numel(shape).constant();
  if (numel && shape.size() <= 1 && *numel <= kMaxKnown && !is_float(fill.dtype())) {
    HostTensor out(fill.dtype(), shape.empty() ? std::vector<int64_t>{} : std::vector<int64_t>{*numel});
    for (int64_t i = 0; i < *numel; ++i) out.set_int(i, fill.get_int(0));
    return define_data(0, std::move(out));
  }
  Attrs value{{"dtype", fill.dtype()}};
  if (is_float(fill.dtype())) value.set("value", fill.get(0));
  else if (fill.dtype() == DType::boolean) value.set("value", fill.get_int(0) != 0);
  else value.set("value", fill.get_int(0));
  KILN_ASSIGN_OR_RETURN(auto c, emit(Op::Constant, {}, std::move(value)));
  KILN_ASSIGN_OR_RETURN(auto y, emit(Op::Expand, {c}, {{"shape", shape}}));
  return define(0, y);
}

// ---- ops built from several kiln ops --------------------------------------------------

// Clip(x, min?, max?) = minimum(maximum(x, min), max); before opset 11 min and max are
// attributes.
absl::Status Importer::clip() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  Ex y = ex(xv);
  if (opset_ < 11) {
    if (attr("min")) y = maximum(y, attr_float("min", 0));
    if (attr("max")) y = minimum(y, attr_float("max", 0));
    return define(0, y);
  }
  if (has_input(1)) {
    KILN_ASSIGN_OR_RETURN(auto lo, value(1));
    y = maximum(y, ex(lo));
  }
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto hi, value(2));
    y = minimum(y, ex(hi));
  }
  return define(0, y);
}

// The activations ONNX defines by a formula, computed by that formula in the input's type.
absl::Status Importer::activation() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  const std::string& type = node_->op_type();
  if (!is_float(xv->dtype())) return unsupported(type, " of ", xv->type().to_string(), " is not supported (floating-point only)");
  Ex x = ex(xv);
  if (type == "LeakyRelu") return define(0, select(x < 0.0, x * attr_float("alpha", 0.01), x));
  if (type == "PRelu") {
    KILN_ASSIGN_OR_RETURN(auto slope, value(1));
    return define(0, select(x < 0.0, x * ex(slope), x));
  }
  if (type == "Elu") return define(0, select(x < 0.0, (exp(x) - 1.0) * attr_float("alpha", 1.0), x));
  if (type == "Selu") {
    double alpha = attr_float("alpha", 1.67326319217681884765625), gamma = attr_float("gamma", 1.05070102214813232421875);
    return define(0, select(x <= 0.0, exp(x) * alpha - alpha, x) * gamma);
  }
  if (type == "Celu") {
    double alpha = attr_float("alpha", 1.0);
    return define(0, maximum(x, 0.0) + minimum((exp(x / alpha) - 1.0) * alpha, 0.0));
  }
  if (type == "HardSigmoid")
    return define(0, maximum(minimum(x * attr_float("alpha", 0.2) + attr_float("beta", 0.5), 1.0), 0.0));
  if (type == "HardSwish") return define(0, x * maximum(minimum(x * (1.0 / 6.0) + 0.5, 1.0), 0.0));
  if (type == "Softplus") return define(0, log(exp(x) + 1.0));
  if (type == "Softsign") return define(0, x / (abs(x) + 1.0));
  if (type == "ThresholdedRelu") return define(0, select(x > attr_float("alpha", 1.0), x, 0.0));
  double lambd = attr_float("lambd", 0.5), bias = attr_float("bias", 0.0);  // Shrink
  return define(0, select(x < -lambd, x + bias, select(x > lambd, x - bias, 0.0)));
}

// IsNaN(x) is x != x. x - x is NaN exactly where x is NaN or infinite, which IsInf
// narrows to the signs it asks for.
absl::Status Importer::is_nan_inf() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (!is_float(xv->dtype())) return unsupported(node_->op_type(), " of ", xv->type().to_string(), " is not supported");
  Ex x = ex(xv);
  if (node_->op_type() == "IsNaN") return define(0, x != x);
  Ex d = x - x;
  Ex inf = (d != d) && (x == x);
  bool pos = attr_int("detect_positive", 1) != 0, neg = attr_int("detect_negative", 1) != 0;
  if (pos && neg) return define(0, inf);
  if (pos) return define(0, inf && (x > 0.0));
  if (neg) return define(0, inf && (x < 0.0));
  return define(0, inf && (x != x));  // detects nothing: false everywhere
}

// Sign(x): 1, -1 or 0 (x * 0 keeps NaN).
absl::Status Importer::sign() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (xv->dtype() == DType::boolean) return unsupported("Sign of a bool tensor is not supported");
  Ex x = ex(xv);
  return define(0, select(x > 0.0, constant_like(x, 1), select(x < 0.0, constant_like(x, -1), x * 0.0)));
}

absl::Status Importer::global_pool() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  if (rank < 3) return bad("expects [N, C, spatial...], got ", x->type().to_string());
  std::vector<int64_t> axes;
  for (int64_t i = 2; i < rank; ++i) axes.push_back(i);
  Op op = node_->op_type() == "GlobalAveragePool" ? Op::Mean : Op::Max;
  return define(0, apply(op, {ex(x)}, {{"axes", axes}, {"keepdim", true}}));
}

// Inference: the output is the input and the mask all true. Training mode draws random
// masks, which kiln does not do.
absl::Status Importer::dropout() {
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto training, in(2));
    if (!training->data)
      return needs_constant("training_mode '", node_->input(2), "' must be known at import time");
    if (training->data->numel() != 1 || training->data->get(0) != 0)
      return unsupported("training mode (random masks) is not supported");
  }
  KILN_ASSIGN_OR_RETURN(auto x, in(0));
  KILN_RETURN_IF_ERROR(define_entry(0, *x));
  if (node_->output_size() < 2 || node_->output(1).empty()) return absl::OkStatus();
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto t, scalar(1, DType::boolean));
  return define(1, apply(Op::Expand, {ex(t)}, {{"shape", xv->shape()}}));
}

// Keeps the elements on and above (upper) or below (lower) diagonal k of the last two
// dims, comparing column - row with k.
absl::Status Importer::trilu() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size();
  if (rank < 2) return bad("expects a tensor of rank >= 2, got ", xv->type().to_string());
  int64_t k = 0;
  if (has_input(1)) {
    KILN_ASSIGN_OR_RETURN(auto ks, known_ints(1, "k"));
    if (ks.size() != 1) return bad("k must hold one value, got ", ks.size());
    k = ks[0];
  }
  Shape mat{xv->shape()[rank - 2], xv->shape()[rank - 1]};
  Ex rows = apply(Op::Iota, {}, {{"shape", mat}, {"axis", int64_t{0}}, {"dtype", DType::i64}});
  Ex cols = apply(Op::Iota, {}, {{"shape", mat}, {"axis", int64_t{1}}, {"dtype", DType::i64}});
  Ex diag = cols - rows;
  Ex keep = attr_int("upper", 1) ? diag >= static_cast<double>(k) : diag <= static_cast<double>(k);
  return define(0, select(keep, ex(xv), 0.0));
}

// Range(start, limit, delta): start + i * delta for i < max(ceil((limit - start) / delta), 0).
// Known integer operands give a known result (limit may be a symbolic dim when delta > 0);
// float operands must be constants.
absl::Status Importer::range() {
  KILN_ASSIGN_OR_RETURN(auto start_e, in(0));
  DType t = start_e->type.dtype;
  if (is_integer(t)) {
    KILN_ASSIGN_OR_RETURN(auto s, known(0, "start"));
    KILN_ASSIGN_OR_RETURN(auto l, known(1, "limit"));
    KILN_ASSIGN_OR_RETURN(auto d, known_ints(2, "delta"));
    if (s.size() != 1 || l.size() != 1 || d.size() != 1) return bad("start, limit and delta must be scalars");
    if (d[0] == 0) return bad("delta must not be 0");
    SymExpr span = l[0] - s[0];
    std::optional<SymExpr> n;
    std::optional<int64_t> s_c = s[0].constant(), l_c = l[0].constant();
    if (s_c && l_c) {
      // In 128 bits: the span of INT64_MIN..INT64_MAX does not fit int64.
      __int128 sp = static_cast<__int128>(*l_c) - *s_c, dd = d[0];
      __int128 len = dd > 0 ? (sp + dd - 1) / dd : (sp + dd + 1) / dd;
      if (len < 0) len = 0;
      if (len > (int64_t{1} << 31))
        return bad("Range(", *s_c, ", ", *l_c, ", ", d[0], ") is too long (more than 2^31 elements)");
      n = SymExpr(static_cast<int64_t>(len));
    } else if (span.overflowed()) {
      return bad("the span of Range(", s[0].to_string(), ", ", l[0].to_string(), ") overflows int64");
    } else if (d[0] > 0 && nonnegative(span)) {
      n = (span + (d[0] - 1)).floordiv(d[0]);
    } else {
      return unsupported("the length of a range from ", s[0].to_string(), " to ", l[0].to_string(), " by ", d[0],
                         " is not a dim kiln can express");
    }
    if (std::optional<int64_t> len = n->constant(); len && *len <= kMaxKnown) {
      std::vector<SymExpr> vals;
      for (int64_t i = 0; i < *len; ++i) {
        // i * delta in 128 bits: it may leave int64 even where start + i * delta does not.
        __int128 off = static_cast<__int128>(i) * d[0], v = s_c ? *s_c + off : off;
        if (v < INT64_MIN || v > INT64_MAX)
          return bad("element ", i, " of Range(", s[0].to_string(), ", ..., ", d[0], ") overflows int64");
        vals.push_back(s_c ? SymExpr(static_cast<int64_t>(v)) : s[0] + static_cast<int64_t>(v));
      }
      return define_known(0, t, std::move(vals), {*len});
    }
    std::optional<int64_t> s0 = s[0].constant();
    if (!s0) return unsupported("a range from the symbolic value ", s[0].to_string(), " is not supported");
    Ex y = apply(Op::Iota, {}, {{"shape", Shape{*n}}, {"axis", int64_t{0}}, {"dtype", t}});
    if (d[0] != 1) y = y * static_cast<double>(d[0]);
    if (*s0 != 0) y = y + static_cast<double>(*s0);
    return define(0, y);
  }
  std::shared_ptr<const HostTensor> ops[3];
  for (int i = 0; i < 3; ++i) {
    KILN_ASSIGN_OR_RETURN(auto e, in(i));
    if (!e->data) return needs_constant("Range's operands must be known at import time");
    if (e->data->numel() != 1) return bad("start, limit and delta must be scalars");
    ops[i] = e->data;
  }
  double start = ops[0]->get(0), limit = ops[1]->get(0), delta = ops[2]->get(0);
  if (delta == 0 || !std::isfinite(start) || !std::isfinite(limit) || !std::isfinite(delta))
    return bad("Range(", start, ", ", limit, ", ", delta, ") is not a finite sequence");
  double count = std::max(0.0, std::ceil((limit - start) / delta));
  if (count > double{int64_t{1} << 31}) return bad("Range(", start, ", ", limit, ", ", delta, ") is too long");
  HostTensor out(t, {static_cast<int64_t>(count)});
  for (int64_t i = 0; i < out.numel(); ++i) out.set(i, start + static_cast<double>(i) * delta);
  return define_data(0, std::move(out));
}

// Tile(x, repeats): along each axis, the input concatenated `repeats` times.
constexpr int64_t kMaxTileRepeats = 4096;
absl::Status Importer::tile() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto reps, known_ints(1, "repeats"));
  int64_t rank = xv->shape().size();
  if (static_cast<int64_t>(reps.size()) != rank) return bad(reps.size(), " repeats for a tensor of rank ", rank);
  Ex y = ex(xv);
  for (int64_t axis = 0; axis < rank; ++axis) {
    if (reps[axis] < 0) return bad("repeats must be >= 0, got ", reps[axis]);
    // One concat operand per repeat: a bound keeps a malformed model from asking for 2^40.
    if (reps[axis] > kMaxTileRepeats)
      return unsupported("Tile repeats ", reps[axis], " on axis ", axis, " (at most ", kMaxTileRepeats, ")");
    if (reps[axis] == 0) y = apply(Op::Slice, {y}, {{"axis", axis}, {"start", int64_t{0}}, {"end", int64_t{0}}});
    else if (reps[axis] > 1) y = apply(Op::Concat, std::vector<Ex>(reps[axis], y), {{"axis", axis}});
  }
  return define(0, y);
}

// DepthToSpace and SpaceToDepth as reshape -> transpose -> reshape, with ONNX's DCR and
// CRD orders.
absl::Status Importer::depth_space() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (xv->shape().size() != 4) return bad("expects [N, C, H, W], got ", xv->type().to_string());
  int64_t bs = attr_int("blocksize", 0);
  if (bs <= 0) return bad("blocksize must be > 0, got ", bs);
  const Shape& s = xv->shape();
  const SymExpr &n = s[0], &c = s[1], &h = s[2], &w = s[3];
  auto reshape = [&](const Ex& e, std::vector<SymExpr> dims) { return apply(Op::Reshape, {e}, {{"shape", std::move(dims)}}); };
  auto permute = [&](const Ex& e, std::vector<int64_t> dims) { return apply(Op::Permute, {e}, {{"dims", std::move(dims)}}); };
  if (node_->op_type() == "SpaceToDepth") {
    std::optional<SymExpr> h2 = h.divide_exact(bs), w2 = w.divide_exact(bs);
    if (!h2 || !w2) return bad("H and W of ", xv->type().to_string(), " must divide by blocksize ", bs);
    Ex t = permute(reshape(ex(xv), {n, c, *h2, bs, *w2, bs}), {0, 3, 5, 1, 2, 4});
    return define(0, reshape(t, {n, c * (bs * bs), *h2, *w2}));
  }
  std::optional<SymExpr> c2 = c.divide_exact(bs * bs);
  if (!c2) return bad("C of ", xv->type().to_string(), " must divide by blocksize^2 = ", bs * bs);
  std::string mode = attr_string("mode", "DCR");
  Ex t = mode == "DCR"   ? permute(reshape(ex(xv), {n, bs, bs, *c2, h, w}), {0, 3, 4, 1, 5, 2})
         : mode == "CRD" ? permute(reshape(ex(xv), {n, *c2, bs, bs, h, w}), {0, 1, 4, 2, 5, 3})
                         : Ex{this, unsupported("mode \"", mode, "\" is not supported (DCR or CRD)")};
  return define(0, reshape(t, {n, *c2, h * bs, w * bs}));
}

// ---- convolution and pooling ----------------------------------------------------------

absl::StatusOr<Importer::WindowAttrs> Importer::window_attrs(const Shape& in, const std::vector<int64_t>& kernel) {
  size_t r = kernel.size();
  for (int64_t k : kernel)
    if (k < 1) return bad("kernel dims must be at least 1, got ", shape_to_string(static_shape(kernel)));
  auto list = [&](std::string_view name, int64_t def, size_t len) -> absl::StatusOr<std::vector<int64_t>> {
    std::vector<int64_t> v = attr_ints(name).value_or(std::vector<int64_t>(len, def));
    if (v.size() != len) return bad(name, " has ", v.size(), " entries, expected ", len);
    return v;
  };
  WindowAttrs w;
  KILN_ASSIGN_OR_RETURN(w.strides, list("strides", 1, r));
  KILN_ASSIGN_OR_RETURN(w.dilations, list("dilations", 1, r));
  KILN_ASSIGN_OR_RETURN(w.pads, list("pads", 0, 2 * r));
  KILN_ASSIGN_OR_RETURN(w.output_padding, list("output_padding", 0, r));
  std::string auto_pad = attr_string("auto_pad", "NOTSET");
  bool transpose = node_->op_type() == "ConvTranspose";
  std::optional<std::vector<int64_t>> out_shape = transpose ? attr_ints("output_shape") : std::nullopt;
  if (auto_pad == "NOTSET" && !out_shape) return w;
  if (auto_pad == "VALID") {
    std::fill(w.pads.begin(), w.pads.end(), 0);
    return w;
  }
  bool upper = auto_pad == "SAME_UPPER";  // NOTSET with output_shape: the extra pad at the begin
  if (!upper && auto_pad != "SAME_LOWER" && auto_pad != "NOTSET") return bad("auto_pad \"", auto_pad, "\" is not NOTSET, SAME_UPPER, SAME_LOWER or VALID");
  if (out_shape && out_shape->size() != r) return bad("output_shape has ", out_shape->size(), " entries, expected ", r);
  for (size_t i = 0; i < r; ++i) {
    int64_t s = w.strides[i], span = w.dilations[i] * (kernel[i] - 1) + 1, total;
    std::optional<int64_t> n = in[in.size() - r + i].constant();
    if (transpose) {
      // total = stride*(in-1) + output_padding + span - output size (output_shape, or in*stride).
      if (!out_shape && !n && s != 1)
        return unsupported("auto_pad ", auto_pad, " with stride ", s, " needs static spatial sizes, got ", shape_to_string(in));
      if (out_shape && !n) return unsupported("output_shape needs static spatial sizes, got ", shape_to_string(in));
      total = out_shape ? s * (*n - 1) + w.output_padding[i] + span - (*out_shape)[i] : w.output_padding[i] + span - s;
    } else {
      // total = max(0, (ceil(in/stride) - 1)*stride + span - in)
      if (!n && s != 1)
        return unsupported("auto_pad ", auto_pad, " with stride ", s, " needs static spatial sizes, got ", shape_to_string(in));
      total = n ? std::max<int64_t>(0, ((*n + s - 1) / s - 1) * s + span - *n) : span - 1;
    }
    int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);  // floor
    w.pads[i] = upper ? half : total - half;
    w.pads[r + i] = total - w.pads[i];
    if (w.pads[r + i] < 0) {  // an output longer than the pads allow: extended at the end
      w.output_padding[i] -= w.pads[r + i];
      w.pads[r + i] = 0;
    }
    if (w.pads[i] < 0)
      return out_shape ? bad("output_shape ", (*out_shape)[i], " is out of the transposed convolution's reach")
                       : bad("auto_pad ", auto_pad, " needs a negative pad on spatial axis ", i);
  }
  return w;
}

// Conv(x, W, B?) and ConvTranspose(x, W, B?): the kernel is W's trailing dims (kernel_shape,
// when given, must agree).
absl::Status Importer::conv() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto w, value(1));
  Value* bias = nullptr;
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(bias, value(2));
  }
  KILN_ASSIGN_OR_RETURN(auto y, conv_of(x, w, bias));
  return define(0, y);
}

absl::StatusOr<Value*> Importer::conv_of(Value* x, Value* w, Value* bias) {
  const Shape &xs = x->shape(), &ws = w->shape();
  if (xs.size() < 3 || ws.size() != xs.size())
    return bad("expects x [N, C, spatial...] and W of the same rank, got ", x->type().to_string(), " and ", w->type().to_string());
  std::vector<int64_t> kernel;
  for (size_t i = 2; i < ws.size(); ++i) {
    std::optional<int64_t> k = ws[i].constant();
    if (!k) return unsupported("W's kernel dims must be static, got ", w->type().to_string());
    kernel.push_back(*k);
  }
  if (std::optional<std::vector<int64_t>> ks = attr_ints("kernel_shape"); ks && *ks != kernel)
    return bad("kernel_shape ", shape_to_string(static_shape(*ks)), " differs from W ", w->type().to_string());
  KILN_ASSIGN_OR_RETURN(WindowAttrs wa, window_attrs(xs, kernel));
  std::vector<Value*> operands{x, w};
  if (bias) operands.push_back(bias);
  Attrs attrs{{"strides", wa.strides}, {"pads", wa.pads}, {"dilations", wa.dilations}, {"groups", attr_int("group", 1)}};
  bool transpose = node_->op_type() == "ConvTranspose";
  if (transpose)
    attrs.set("output_padding", wa.output_padding);
  return emit(transpose ? Op::ConvTranspose : Op::Conv, operands, std::move(attrs));
}

absl::Status Importer::pool() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  std::optional<std::vector<int64_t>> kernel = attr_ints("kernel_shape");
  if (!kernel) return bad("needs kernel_shape");
  if (x->shape().size() != kernel->size() + 2)
    return bad("a ", kernel->size(), "-D kernel expects x [N, C, ", kernel->size(), " spatial dims], got ", x->type().to_string());
  KILN_ASSIGN_OR_RETURN(WindowAttrs wa, window_attrs(x->shape(), *kernel));
  bool max = node_->op_type() == "MaxPool";
  DType t = x->dtype();
  if (max && is_integer(t) && dtype_bits(t) <= 16) {  // exact in f32, and back
    KILN_ASSIGN_OR_RETURN(x, emit(Op::Cast, {x}, {{"dtype", DType::f32}}));
  } else if (!is_float(t)) {
    return unsupported(node_->op_type(), " of ", x->type().to_string(), " is not supported");
  }
  KILN_ASSIGN_OR_RETURN(auto y, emit(max ? Op::MaxPool : Op::AvgPool, {x},
                                     {{"kernel", *kernel}, {"strides", wa.strides}, {"pads", wa.pads},
                                      {"dilations", wa.dilations}, {"ceil_mode", attr_int("ceil_mode", 0) != 0},
                                      {"count_include_pad", attr_int("count_include_pad", 0) != 0}}));
  if (max && node_->output_size() > 1 && !node_->output(1).empty()) KILN_RETURN_IF_ERROR(max_pool_indices(x, *kernel, wa));
  if (x->dtype() != t) return define(0, apply(Op::Cast, {ex(y)}, {{"dtype", t}}));
  return define(0, y);
}

// Pad(data, pads [begin..., end...], constant_value?, axes?): constant mode as a window of
// kernel 1 whose padding reads the value (any dims), after a slice for negative pads;
// edge and reflect as a gather along each padded axis by indices computed here (static dims).
absl::Status Importer::pad() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size();
  KILN_ASSIGN_OR_RETURN(auto given, ints_operand(1, "pads"));
  if (!given) return bad("needs pads");
  std::vector<int64_t> axes(rank);
  std::iota(axes.begin(), axes.end(), 0);
  if (has_input(3)) {
    KILN_ASSIGN_OR_RETURN(axes, known_ints(3, "axes"));
  }
  if (given->size() != 2 * axes.size()) return bad("pads has ", given->size(), " entries for ", axes.size(), " axes");
  std::vector<int64_t> pb(rank, 0), pe(rank, 0);
  for (size_t i = 0; i < axes.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(int64_t a, axis_in("axis", axes[i], rank));
    pb[a] = (*given)[i];
    pe[a] = (*given)[axes.size() + i];
  }
  std::string mode = attr_string("mode", "constant");
  Ex y = ex(xv);
  if (mode == "constant") {
    double fill = attr_float("value", 0.0);
    std::optional<Ex> runtime_fill;  // a value computed at run time: selected where a window of trues reads false
    if (has_input(2)) {
      KILN_ASSIGN_OR_RETURN(auto c, in(2));
      if (c->data && c->data->numel() == 1) {
        fill = is_float(c->type.dtype) ? c->data->get(0) : static_cast<double>(c->data->get_int(0));
      } else {
        KILN_ASSIGN_OR_RETURN(auto cv, value(2));
        if (shape_numel(cv->shape()) != SymExpr(1)) return bad("constant_value must be a scalar, got ", cv->type().to_string());
        runtime_fill = apply(Op::Reshape, {ex(cv)}, {{"shape", Shape{}}});
      }
    }
    for (int64_t a = 0; a < rank; ++a) {
      if (pb[a] >= 0 && pe[a] >= 0) continue;
      int64_t start = std::max<int64_t>(0, -pb[a]), end = pe[a] < 0 ? pe[a] : std::numeric_limits<int64_t>::max();
      y = apply(Op::Slice, {y}, {{"axis", a}, {"start", start}, {"end", end}});
      pb[a] = std::max<int64_t>(0, pb[a]);
      pe[a] = std::max<int64_t>(0, pe[a]);
    }
    int64_t first = 0;
    while (first < rank && pb[first] == 0 && pe[first] == 0) ++first;
    if (first == rank) return define(0, y);
    std::vector<int64_t> pads(pb.begin() + first, pb.end());
    pads.insert(pads.end(), pe.begin() + first, pe.end());
    KILN_ASSIGN_OR_RETURN(Value* cur, y.v);
    Shape out = cur->shape();
    for (int64_t a = 0; a < rank; ++a) out[a] = out[a] + (pb[a] + pe[a]);
    Attrs wa{{"kernel", std::vector<int64_t>(rank - first, 1)}, {"pads", pads}, {"pad_value", runtime_fill ? 0.0 : fill}};
    Ex w = apply(Op::Reshape, {apply(Op::Window, {y}, wa)}, {{"shape", out}});
    if (runtime_fill) {
      KILN_ASSIGN_OR_RETURN(auto t, scalar(1, DType::boolean));
      Ex inside = apply(Op::Window, {apply(Op::Expand, {ex(t)}, {{"shape", cur->shape()}})}, wa);
      w = select(apply(Op::Reshape, {inside}, {{"shape", out}}), w, *runtime_fill);
    }
    return define(0, w);
  }
  if (mode != "edge" && mode != "reflect") return unsupported("mode \"", mode, "\" is not supported (constant, edge, reflect)");
  for (int64_t a = 0; a < rank; ++a) {
    if (pb[a] == 0 && pe[a] == 0) continue;
    std::optional<int64_t> n = xv->shape()[a].constant();
    if (!n) return unsupported(mode, " padding of the symbolic dim ", xv->shape()[a].to_string(), " is not supported");
    int64_t len = *n + pb[a] + pe[a];
    if (*n == 0 || len < 0) return bad("pads ", pb[a], ", ", pe[a], " do not fit axis ", a, " of ", xv->type().to_string());
    if (mode == "reflect" && (pb[a] >= *n || pe[a] >= *n))
      return bad("reflect pads ", pb[a], ", ", pe[a], " must be less than axis ", a, "'s size ", *n);
    HostTensor idx(DType::i64, {len});
    for (int64_t j = 0; j < len; ++j) {
      int64_t src = j - pb[a];
      if (mode == "edge") src = std::clamp<int64_t>(src, 0, *n - 1);
      else if (src < 0) src = -src;
      else if (src > *n - 1) src = 2 * (*n - 1) - src;
      idx.set_int(j, src);
    }
    Entry e{TensorType{DType::i64, {len}}, nullptr, std::make_shared<const HostTensor>(std::move(idx)), std::nullopt};
    KILN_ASSIGN_OR_RETURN(Value* iv, materialize(str_cat(node_->output(0), "_pad_index"), e));
    y = apply(Op::Gather, {y, ex(iv)}, {{"axis", a}});
  }
  return define(0, y);
}

// Where output element o of a resized axis reads: the real input coordinate of ONNX's
// coordinate_transformation_mode for an input of length n resized by s to `len` (n * s,
// unfloored) and `out` elements.
absl::StatusOr<double> Importer::resize_coordinate(const std::string& ctm, double o, double n, double s, double len) {
  if (ctm == "half_pixel") return (o + 0.5) / s - 0.5;
  if (ctm == "pytorch_half_pixel") return len > 1 ? (o + 0.5) / s - 0.5 : 0;
  if (ctm == "align_corners") return len > 1 ? o * (n - 1) / (len - 1) : 0;
  if (ctm == "asymmetric") return o / s;
  if (ctm == "tf_half_pixel_for_nn") return (o + 0.5) / s;
  return unsupported("coordinate_transformation_mode \"", ctm, "\" is not supported");
}

// The taps of one output element at input coordinate x: (index before clamping, weight).
absl::StatusOr<std::vector<std::pair<int64_t, double>>> Importer::resize_taps(double x) {
  std::string mode = attr_string("mode", "nearest");
  if (mode == "nearest") {
    std::string nearest = attr_string("nearest_mode", opset_ < 11 ? "floor" : "round_prefer_floor");
    double f = std::floor(x), r;
    if (nearest == "floor") r = f;
    else if (nearest == "ceil") r = std::ceil(x);
    else if (nearest == "round_prefer_floor") r = x - f == 0.5 ? f : std::round(x);
    else if (nearest == "round_prefer_ceil") r = x - f == 0.5 ? f + 1 : std::round(x);
    else return unsupported("nearest_mode \"", nearest, "\" is not supported");
    return std::vector<std::pair<int64_t, double>>{{static_cast<int64_t>(r), 1.0}};
  }
  int taps = mode == "linear" ? 2 : 4;
  double ca = attr_float("cubic_coeff_a", -0.75);
  int64_t base = static_cast<int64_t>(std::floor(x)) - (taps == 4 ? 1 : 0);
  std::vector<std::pair<int64_t, double>> t(taps);
  for (int i = 0; i < taps; ++i) {
    double d = std::fabs(x - static_cast<double>(base + i));
    double w = taps == 2 ? std::max(0.0, 1 - d)
               : d <= 1 ? ((ca + 2) * d - (ca + 3)) * d * d + 1
               : d < 2  ? ((ca * d - 5 * ca) * d + 8 * ca) * d - 4 * ca
                        : 0;
    t[i] = {base + i, w};
  }
  return t;
}

// x shifted by d along `axis` with its edge repeated: element i reads x[clamp(i + d, 0, n-1)]
// (slices and a concat; n >= 1 is assumed by the caller).
Importer::Ex Importer::shift_clamped(Ex x, int64_t axis, int64_t d) {
  if (d == 0 || !x.v.ok()) return x;
  Dim n = (*x.v)->shape()[axis];
  auto part = [&](SymExpr s, SymExpr e) { return apply(Op::Slice, {x}, {{"axis", axis}, {"start", s}, {"end", e}}); };
  std::vector<Ex> parts;
  if (d < 0) {
    for (int64_t i = 0; i < -d; ++i) parts.push_back(part(0, 1));
    parts.push_back(part(0, n + d));
  } else {
    parts.push_back(part(d, n));
    for (int64_t i = 0; i < d; ++i) parts.push_back(part(n - 1, n));
  }
  return apply(Op::Concat, parts, {{"axis", axis}});
}

// A symbolic dim n resized by an integer factor k: output element q*k + r reads input
// q + t for the taps t of phase r, edge-clamped, with weights that depend on r alone (every
// coordinate mode but align_corners is shift-invariant), so each phase is a weighted sum of
// shifted views of x and the k phases interleave into [.., n*k, ..] by a concat and a reshape.
Importer::Ex Importer::resize_by_phases(Ex y, int64_t axis, int64_t k, const std::string& ctm) {
  if (!y.v.ok()) return y;
  Shape shape = (*y.v)->shape();
  const Dim n = shape[axis];
  if (ctm == "align_corners" || attr_int("exclude_outside", 0) != 0)
    return {this, unsupported("resizing the symbolic dim ", n.to_string(), " with align_corners or exclude_outside is not "
                              "supported (their weights depend on the dim's value)")};
  Shape one = shape;
  one.insert(one.begin() + axis + 1, SymExpr(1));
  std::vector<Ex> phases;
  std::vector<std::vector<std::pair<int64_t, double>>> taps_of;
  for (int64_t r = 0; r < k; ++r) {
    double kd = static_cast<double>(k);
    absl::StatusOr<double> x = resize_coordinate(ctm, static_cast<double>(r), 1e9, kd, 1e9 * kd);
    if (!x.ok()) return {this, x.status()};
    absl::StatusOr<std::vector<std::pair<int64_t, double>>> taps = resize_taps(*x);
    if (!taps.ok()) return {this, taps.status()};
    taps_of.push_back(*taps);
  }
  bool same = std::all_of(taps_of.begin(), taps_of.end(), [&](const auto& t) { return t == taps_of[0]; });
  int64_t reach = 1;  // the shifted views slice n - |d| elements
  for (const auto& taps : taps_of)
    for (auto [d, w] : taps) reach = std::max(reach, std::abs(d));
  if (absl::Status s = assume_nonnegative(n - reach, str_cat("resized dim ", n.to_string(), " >= ", reach)); !s.ok())
    return {this, s};
  for (int64_t r = 0; r < (same ? 1 : k); ++r) {
    std::optional<Ex> sum;
    for (auto [d, w] : taps_of[r]) {
      if (w == 0) continue;
      Ex t = shift_clamped(y, axis, d);
      if (w != 1) t = t * w;
      sum = sum ? *sum + t : t;
    }
    if (!sum) sum = y * 0.0;
    phases.push_back(apply(Op::Reshape, {*sum}, {{"shape", one}}));
  }
  Shape both = one;
  both[axis + 1] = k;
  Ex stacked = same ? apply(Op::Expand, {phases[0]}, {{"shape", both}}) : apply(Op::Concat, phases, {{"axis", axis + 1}});
  shape[axis] = n * k;
  return apply(Op::Reshape, {stacked}, {{"shape", shape}});
}

// Resize(X, roi?, scales?, sizes?) with nearest, linear or cubic interpolation. A static
// axis is the sum over the taps t of gather(x, index_t) * weight_t, indices (edge-clamped)
// and weights computed here from the coordinate transformation; a symbolic axis needs an
// integer factor (resize_by_phases). In f32, one cast back. tf_crop_and_resize, antialias
// and aspect-ratio policies are not supported.
absl::Status Importer::resize() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size();
  std::string mode = attr_string("mode", "nearest");
  std::string ctm = attr_string("coordinate_transformation_mode", opset_ < 11 ? "asymmetric" : "half_pixel");
  if (mode != "nearest" && mode != "linear" && mode != "cubic") return unsupported("mode \"", mode, "\" is not supported");
  if (attr_int("antialias", 0) != 0 || attr_string("keep_aspect_ratio_policy", "stretch") != "stretch")
    return unsupported("antialias and keep_aspect_ratio_policy are not supported");
  std::vector<int64_t> axes(rank);
  std::iota(axes.begin(), axes.end(), 0);
  if (std::optional<std::vector<int64_t>> a = attr_ints("axes")) axes = *a;
  std::vector<double> scale(rank, 1.0);
  std::vector<std::optional<SymExpr>> size(rank);
  int scales_at = opset_ < 11 ? 1 : 2;
  if (has_input(scales_at)) {
    KILN_ASSIGN_OR_RETURN(auto e, in(scales_at));
    if (!e->data) return needs_constant("scales must be known at import time");
    if (e->data->numel() > 0) {
      if (e->data->numel() != static_cast<int64_t>(axes.size())) return bad("scales has ", e->data->numel(), " entries for ", axes.size(), " axes");
      for (size_t i = 0; i < axes.size(); ++i) {
        KILN_ASSIGN_OR_RETURN(int64_t a, axis_in("axis", axes[i], rank));
        scale[a] = e->data->get(i);
      }
    }
  }
  if (opset_ >= 11 && has_input(3)) {
    KILN_ASSIGN_OR_RETURN(auto sz, known(3, "sizes"));
    if (!sz.empty()) {
      if (sz.size() != axes.size()) return bad("sizes has ", sz.size(), " entries for ", axes.size(), " axes");
      for (size_t i = 0; i < axes.size(); ++i) {
        KILN_ASSIGN_OR_RETURN(int64_t a, axis_in("axis", axes[i], rank));
        size[a] = sz[i];
      }
    }
  }
  // tf_crop_and_resize: the region of interest [starts..., ends...] (of the resized axes), as
  // fractions of each dim; output points outside the input take extrapolation_value.
  bool crop = ctm == "tf_crop_and_resize";
  std::vector<double> roi_start(rank, 0.0), roi_end(rank, 1.0);
  if (crop) {
    KILN_ASSIGN_OR_RETURN(auto e, in(1));
    if (!e->data) return needs_constant("roi must be known at import time");
    if (e->data->numel() != 2 * static_cast<int64_t>(axes.size())) return bad("roi has ", e->data->numel(), " entries for ", axes.size(), " axes");
    for (size_t i = 0; i < axes.size(); ++i) {
      KILN_ASSIGN_OR_RETURN(int64_t a, axis_in("axis", axes[i], rank));
      roi_start[a] = e->data->get(i), roi_end[a] = e->data->get(axes.size() + i);
    }
  }
  Ex y = apply(Op::Cast, {ex(xv)}, {{"dtype", DType::f32}});
  // Axes one by one (innermost first for the crop, as ONNX's recursion extrapolates).
  for (int64_t step = 0; step < rank; ++step) {
    int64_t a = crop ? rank - 1 - step : step;
    if (!crop && !size[a] && scale[a] == 1.0) continue;
    if (!(scale[a] > 0)) return bad("scale ", scale[a], " must be > 0");
    const Dim& dim = xv->shape()[a];
    std::optional<int64_t> n = dim.constant();
    std::optional<int64_t> out_size = size[a] ? size[a]->constant() : std::nullopt;
    if (!n || (size[a] && !out_size)) {
      // A symbolic dim (or size): an integer factor k, from the scale or from size = k * dim.
      std::optional<int64_t> k;
      if (size[a]) {
        if (std::optional<SymExpr> q = size[a]->divide_exact(dim)) k = q->constant();
      } else if (scale[a] >= 1 && scale[a] == std::floor(scale[a])) {
        k = static_cast<int64_t>(scale[a]);
      }
      if (!k || *k < 1 || crop)
        return unsupported("resizing the symbolic dim ", dim.to_string(), " to ",
                           size[a] ? size[a]->to_string() : str_cat("scale ", scale[a]),
                           " is not supported (kiln needs an integer factor)");
      if (*k > 1) y = resize_by_phases(y, a, *k, ctm);
      continue;
    }
    int64_t out = out_size ? *out_size : static_cast<int64_t>(std::floor(static_cast<double>(*n) * scale[a]));
    double s = size[a] ? static_cast<double>(out) / static_cast<double>(*n) : scale[a];
    double len = static_cast<double>(*n) * s;  // the resized length as ONNX's formulas take it, unfloored
    if (out == *n && s == 1.0 && !crop) continue;
    int taps = mode == "nearest" ? 1 : mode == "linear" ? 2 : 4;
    std::vector<HostTensor> idx(taps, HostTensor(DType::i64, {out})), wt(taps, HostTensor(DType::f32, {out}));
    HostTensor outside(DType::boolean, {out});
    bool exclude = attr_int("exclude_outside", 0) != 0, any_outside = false;
    for (int64_t o = 0; o < out; ++o) {
      double x, od = static_cast<double>(o), last = static_cast<double>(*n - 1);
      if (crop) {
        double st = roi_start[a], en = roi_end[a];
        x = out > 1 ? st * last + od * (en - st) * last / static_cast<double>(out - 1) : 0.5 * (st + en) * last;
        outside.set_int(o, x < 0 || x > last);
        any_outside |= x < 0 || x > last;
      } else {
        KILN_ASSIGN_OR_RETURN(x, resize_coordinate(ctm, od, static_cast<double>(*n), s, len));
      }
      KILN_ASSIGN_OR_RETURN(auto w, resize_taps(x));
      double total = 0;
      for (auto& [i, wi] : w) {
        if (exclude && (i < 0 || i >= *n)) wi = 0;
        total += wi;
      }
      for (int t = 0; t < taps; ++t) {
        idx[t].set_int(o, std::clamp<int64_t>(w[t].first, 0, *n - 1));
        wt[t].set(o, exclude && total != 0 ? w[t].second / total : w[t].second);
      }
    }
    Shape wshape(rank - a, SymExpr(1));
    wshape[0] = out;
    std::optional<Ex> sum;
    for (int t = 0; t < taps; ++t) {
      std::string base = str_cat(node_->output(0), "_resize", a, "_", t);
      Entry ie{TensorType{DType::i64, {out}}, nullptr, std::make_shared<const HostTensor>(std::move(idx[t])), std::nullopt};
      KILN_ASSIGN_OR_RETURN(Value* iv, materialize(base + "_index", ie));
      Ex g = apply(Op::Gather, {y, ex(iv)}, {{"axis", a}});
      if (taps > 1) {
        Entry we{TensorType{DType::f32, {out}}, nullptr, std::make_shared<const HostTensor>(std::move(wt[t])), std::nullopt};
        KILN_ASSIGN_OR_RETURN(Value* wv, materialize(base + "_weight", we));
        g = g * apply(Op::Reshape, {ex(wv)}, {{"shape", wshape}});
      }
      sum = sum ? *sum + g : g;
    }
    y = *sum;
    if (any_outside) {
      Entry me{TensorType{DType::boolean, {out}}, nullptr, std::make_shared<const HostTensor>(std::move(outside)), std::nullopt};
      KILN_ASSIGN_OR_RETURN(Value* mv, materialize(str_cat(node_->output(0), "_resize", a, "_outside"), me));
      y = select(apply(Op::Reshape, {ex(mv)}, {{"shape", wshape}}), constant_like(y, attr_float("extrapolation_value", 0.0)), y);
    }
  }
  return define(0, apply(Op::Cast, {y}, {{"dtype", xv->dtype()}}));
}

// GroupNormalization(X [N, C, spatial...], scale, bias): layer_norm over [C/G, spatial...] of
// X as [N, G, C/G, spatial...], then scale and bias per channel ([C], opset 21) or per group
// ([G], as opset 18 wrote it).
absl::Status Importer::group_norm() {
  if (attr_int("stash_type", 1) != 1) return unsupported("stash_type other than 1 (float) is not supported");
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto scale, value(1));
  KILN_ASSIGN_OR_RETURN(auto bias, value(2));
  const Shape& xs = xv->shape();
  int64_t rank = xs.size(), groups = attr_int("num_groups", 0);
  if (rank < 3) return bad("expects [N, C, spatial...], got ", xv->type().to_string());
  if (groups < 1) return bad("num_groups must be >= 1, got ", groups);
  std::optional<SymExpr> cg = xs[1].divide_exact(groups);
  if (!cg) return bad("channels ", xs[1].to_string(), " do not divide into ", groups, " groups");
  Shape grouped{xs[0], groups, *cg};
  grouped.insert(grouped.end(), xs.begin() + 2, xs.end());
  std::vector<int64_t> axes;
  for (int64_t i = 2; i <= rank; ++i) axes.push_back(i);
  Ex n = apply(Op::LayerNorm, {apply(Op::Reshape, {ex(xv)}, {{"shape", grouped}})},
               {{"axes", axes}, {"eps", attr_float("epsilon", 1e-5)}});
  if (scale->shape() == Shape{xs[1]} && bias->shape() == Shape{xs[1]})
    return define(0, apply(Op::Reshape, {n}, {{"shape", xs}}) * per_channel(scale, rank) + per_channel(bias, rank));
  if (scale->shape() != Shape{groups} || bias->shape() != Shape{groups})
    return bad("scale and bias must be [C] or [num_groups], got ", scale->type().to_string(), " and ", bias->type().to_string());
  return define(0, apply(Op::Reshape, {n * per_channel(scale, rank + 1) + per_channel(bias, rank + 1)}, {{"shape", xs}}));
}

// CumSum(x, axis): the sum of x where the input index along axis is <= the output's (< when
// exclusive, >= or > when reverse), over x broadcast along a new axis: exact for integers.
absl::Status Importer::cumsum() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto ax, known_ints(1, "axis"));
  int64_t rank = xv->shape().size();
  if (ax.size() != 1) return bad("axis must hold one value, got ", ax.size());
  KILN_ASSIGN_OR_RETURN(int64_t a, axis_in("axis", ax[0], rank));
  if (xv->dtype() == DType::boolean) return unsupported("CumSum of a bool tensor is not supported");
  const Dim& n = xv->shape()[a];
  // [.., n_out, n_in, ..]: x read along n_in.
  Shape wide = xv->shape();
  wide.insert(wide.begin() + a, n);
  Ex x = apply(Op::Expand, {apply(Op::Unsqueeze, {ex(xv)}, {{"axes", std::vector<int64_t>{a}}})}, {{"shape", wide}});
  Shape square(rank + 1, SymExpr(1));
  square[a] = n;
  square[a + 1] = n;
  Ex out_i = apply(Op::Iota, {}, {{"shape", square}, {"axis", a}, {"dtype", DType::i64}});
  Ex in_i = apply(Op::Iota, {}, {{"shape", square}, {"axis", a + 1}, {"dtype", DType::i64}});
  bool exclusive = attr_int("exclusive", 0) != 0, reverse = attr_int("reverse", 0) != 0;
  Ex keep = reverse ? (exclusive ? in_i > out_i : in_i >= out_i) : (exclusive ? in_i < out_i : in_i <= out_i);
  return define(0, apply(Op::Sum, {select(keep, x, 0.0)}, {{"axes", std::vector<int64_t>{a + 1}}, {"keepdim", false}}));
}

// Einsum of one or two operands without ellipsis or repeated letters within an operand:
// letters only one operand has and the output lacks are summed first; two operands become
// one batched matmul, [batch, A's free, contracted] @ [batch, contracted, B's free], reshaped
// and permuted to the output's letters.
absl::Status Importer::einsum() {
  std::string eq;
  for (char ch : attr_string("equation", "")) if (ch != ' ') eq.push_back(ch);
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow), out;
  std::vector<std::string> terms;
  for (size_t at = 0;;) {
    size_t comma = lhs.find(',', at);
    terms.push_back(lhs.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  auto count = [&](char ch) {
    int64_t c = 0;
    for (const std::string& t : terms) c += std::count(t.begin(), t.end(), ch);
    return c;
  };
  if (arrow != std::string::npos) {
    out = eq.substr(arrow + 2);
  } else {
    for (char ch = 'A'; ch <= 'z'; ++ch)
      if (std::isalpha(static_cast<unsigned char>(ch)) && count(ch) == 1) out.push_back(ch);
  }
  if (terms.size() > 2 || eq.find('.') != std::string::npos)
    return unsupported("equation \"", eq, "\": only one or two operands without ellipsis are supported");
  std::vector<Ex> xs;
  std::map<char, SymExpr> dim;
  for (size_t i = 0; i < terms.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(auto v, value(static_cast<int>(i)));
    if (!is_float(v->dtype())) return unsupported("Einsum of ", v->type().to_string(), " is not supported (floating-point only)");
    const std::string& t = terms[i];
    if (t.size() != v->shape().size()) return bad("term \"", t, "\" does not match operand ", v->type().to_string());
    for (size_t k = 0; k < t.size(); ++k) {
      if (!std::isalpha(static_cast<unsigned char>(t[k])) || std::count(t.begin(), t.end(), t[k]) != 1)
        return unsupported("term \"", t, "\": only distinct letters are supported (no diagonals)");
      auto [it, fresh] = dim.emplace(t[k], v->shape()[k]);
      if (!fresh && it->second != v->shape()[k])
        return unsupported("letter '", t[k], "' has sizes ", it->second.to_string(), " and ", v->shape()[k].to_string(),
                           " (broadcasting is not supported)");
    }
    xs.push_back(ex(v));
  }
  for (char ch : out)
    if (!dim.contains(ch)) return bad("output letter '", ch, "' is in no operand");
  auto in_out = [&](char ch) { return out.find(ch) != std::string::npos; };
  // Sum each operand's letters that neither the output nor the other operand has.
  for (size_t i = 0; i < terms.size(); ++i) {
    std::vector<int64_t> axes;
    std::string kept;
    for (size_t k = 0; k < terms[i].size(); ++k) {
      char ch = terms[i][k];
      if (!in_out(ch) && count(ch) == 1) axes.push_back(static_cast<int64_t>(k));
      else kept.push_back(ch);
    }
    if (!axes.empty()) xs[i] = apply(Op::Sum, {xs[i]}, {{"axes", axes}, {"keepdim", false}});
    terms[i] = kept;
  }
  auto permute_to = [&](Ex x, const std::string& from, const std::string& to) {
    std::vector<int64_t> perm;
    for (char ch : to) perm.push_back(static_cast<int64_t>(from.find(ch)));
    bool identity = true;
    for (size_t k = 0; k < perm.size(); ++k) identity = identity && perm[k] == static_cast<int64_t>(k);
    return identity ? x : apply(Op::Permute, {x}, {{"dims", perm}});
  };
  if (terms.size() == 1) return define(0, permute_to(xs[0], terms[0], out));
  std::string batch, afree, bfree, contracted;
  for (char ch : terms[0]) {
    bool in_b = terms[1].find(ch) != std::string::npos;
    (in_b ? (in_out(ch) ? batch : contracted) : afree).push_back(ch);
  }
  for (char ch : terms[1])
    if (terms[0].find(ch) == std::string::npos) bfree.push_back(ch);
  auto product = [&](const std::string& letters) {
    SymExpr p = 1;
    for (char ch : letters) p = p * dim.at(ch);
    return p;
  };
  auto reshape = [&](Ex x, Shape s) { return apply(Op::Reshape, {x}, {{"shape", std::move(s)}}); };
  Ex a = reshape(permute_to(xs[0], terms[0], batch + afree + contracted), {product(batch), product(afree), product(contracted)});
  Ex b = reshape(permute_to(xs[1], terms[1], batch + contracted + bfree), {product(batch), product(contracted), product(bfree)});
  Shape full;
  for (char ch : batch + afree + bfree) full.push_back(dim.at(ch));
  return define(0, permute_to(reshape(apply(Op::MatMul, {a, b}), full), batch + afree + bfree, out));
}

Ex Importer::per_channel(Value* v, int64_t rank) {
  if (v->shape().size() != 1) return {this, bad("expects a per-channel vector [C], got ", v->type().to_string())};
  std::vector<SymExpr> dims(rank - 1, SymExpr(1));
  dims[0] = v->shape()[0];
  return apply(Op::Reshape, {ex(v)}, {{"shape", dims}});
}

// Inference form: (x - mean) / sqrt(var + epsilon) * scale + B, per channel.
absl::Status Importer::batch_norm() {
  if (attr_int("training_mode", 0) != 0 || (node_->output_size() > 1 && !node_->output(1).empty()))
    return unsupported("training mode (running statistics) is not supported");
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  int64_t rank = x->shape().size();
  if (rank < 2) return bad("expects [N, C, ...], got ", x->type().to_string());
  std::vector<Ex> p;  // scale, B, mean, var
  for (int i = 1; i <= 4; ++i) {
    KILN_ASSIGN_OR_RETURN(auto v, value(i));
    p.push_back(per_channel(v, rank));
  }
  const Ex &scale = p[0], &bias = p[1], &mean = p[2], &var = p[3];
  return define(0, (ex(x) - mean) / sqrt(var + attr_float("epsilon", 1e-5)) * scale + bias);
}

// layer_norm over the spatial axes, then scale and B per channel.
absl::Status Importer::instance_norm() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  KILN_ASSIGN_OR_RETURN(auto scale, value(1));
  KILN_ASSIGN_OR_RETURN(auto bias, value(2));
  int64_t rank = x->shape().size();
  if (rank < 3) return bad("expects [N, C, spatial...], got ", x->type().to_string());
  std::vector<int64_t> axes;
  for (int64_t i = 2; i < rank; ++i) axes.push_back(i);
  Ex n = apply(Op::LayerNorm, {ex(x)}, {{"axes", axes}, {"eps", attr_float("epsilon", 1e-5)}});
  return define(0, n * per_channel(scale, rank) + per_channel(bias, rank));
}

// As ONNX's function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over `axes`.
absl::Status Importer::mean_variance_norm() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  std::vector<int64_t> axes = attr_ints("axes").value_or(std::vector<int64_t>{0, 2, 3});
  Attrs reduce{{"axes", axes}, {"keepdim", true}};
  Ex x = ex(xv);
  Ex mean = apply(Op::Mean, {x}, reduce);
  Ex var = apply(Op::Mean, {x * x}, reduce) - mean * mean;
  return define(0, (x - mean) / (sqrt(var) + 1e-9));
}

// Round half to even: x where it is already integral (and inf, NaN stays NaN); else the
// nearer of floor(x) and floor(x) + 1, the even one on a tie. Exact in f32: |x| < 2^23
// whenever x has a fraction.
absl::Status Importer::round() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (!is_float(xv->dtype())) return unsupported("Round of ", xv->type().to_string(), " is not supported");
  return define(0, round_half_even(ex(xv)));
}

// Mod. Integers: a - b * trunc(a / b) (fmod=1, the sign of a), moved by b when its sign
// differs from b's (fmod=0, the sign of b, as Python's %). Floats (ONNX requires fmod=1):
// kiln's fmod op, C's fmod.
absl::Status Importer::mod() {
  KILN_ASSIGN_OR_RETURN(auto av, value(0));
  KILN_ASSIGN_OR_RETURN(auto bv, value(1));
  bool fmod = attr_int("fmod", 0) != 0;
  Ex a = ex(av), b = ex(bv);
  if (is_float(av->dtype())) {
    if (!fmod) return bad("Mod of floats needs fmod=1");
    return define(0, apply(Op::Fmod, {a, b}));
  }
  Ex r = a - b * (a / b);  // kiln's integer division truncates
  if (fmod) return define(0, r);
  return define(0, select((r != 0.0) && ((r < 0.0) != (b < 0.0)), r + b, r));
}

// EyeLike(x): ones where column - row == k in x's 2-D shape, in `dtype` (default x's).
absl::Status Importer::eye_like() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (xv->shape().size() != 2) return bad("expects a 2-D tensor, got ", xv->type().to_string());
  DType t = xv->dtype();
  if (const onnx::AttributeProto* d = attr("dtype")) {
    std::optional<DType> dt = dtype_from_onnx(static_cast<int32_t>(d->i()));
    if (!dt) return unsupported("dtype ", onnx_type_name(static_cast<int32_t>(d->i())), " is not supported");
    t = *dt;
  }
  Ex rows = apply(Op::Iota, {}, {{"shape", xv->shape()}, {"axis", int64_t{0}}, {"dtype", DType::i64}});
  Ex cols = apply(Op::Iota, {}, {{"shape", xv->shape()}, {"axis", int64_t{1}}, {"dtype", DType::i64}});
  Ex diag = cols - rows;
  return define(0, apply(Op::Cast, {diag == static_cast<double>(attr_int("k", 0))}, {{"dtype", t}}));
}

// ---- losses (inference-time forms) ----------------------------------------------------

// The loss of x [N, C, d1, ...] (log-probabilities) against target [N, d1, ...], as
// NegativeLogLikelihoodLoss defines it: -x[n, target, d...] * weight[target], zero where
// target == ignore_index, then `reduction` none, sum, or mean (divided by the sum of the
// weights picked). The class is picked by a one-hot select (iota over C == target) summed
// over C: the other terms are exact zeros, so the pick is exact. A target outside [0, C)
// picks nothing and counts as ignored (ONNX leaves it undefined).
Ex Importer::nll_loss(Value* x, int target_input, int weight_input) {
  const Shape& xs = x->shape();
  if (xs.size() < 2) return {this, bad("input must be [N, C, d1, ...], got ", x->type().to_string())};
  if (!is_float(x->dtype())) return {this, bad("input must be a float tensor, got ", x->type().to_string())};
  absl::StatusOr<Value*> t = value(target_input);
  if (!t.ok()) return {this, t.status()};
  Shape want = xs;
  want.erase(want.begin() + 1);
  if (!is_integer((*t)->dtype()) || (*t)->shape() != want)
    return {this, bad("target must be an integer tensor of shape ", shape_to_string(want), " for input ",
                      x->type().to_string(), ", got ", (*t)->type().to_string())};
  std::string reduction = attr_string("reduction", "mean");
  if (reduction != "none" && reduction != "sum" && reduction != "mean")
    return {this, bad("reduction must be none, sum or mean, got '", reduction, "'")};
  Attrs over_c{{"axes", std::vector<int64_t>{1}}, {"keepdim", false}};
  Ex target = apply(Op::Unsqueeze, {ex(*t)}, {{"axes", std::vector<int64_t>{1}}});
  Ex hit = apply(Op::Iota, {}, {{"shape", xs}, {"axis", int64_t{1}}, {"dtype", (*t)->dtype()}}) == target;
  if (const onnx::AttributeProto* ii = attr("ignore_index")) hit = hit && (target != static_cast<double>(ii->i()));
  Ex picked = apply(Op::Sum, {select(hit, ex(x), 0.0)}, over_c);
  Ex weight = apply(Op::Cast, {hit}, {{"dtype", x->dtype()}});
  if (has_input(weight_input)) {
    absl::StatusOr<Value*> w = value(weight_input);
    if (!w.ok()) return {this, w.status()};
    if ((*w)->dtype() != x->dtype() || (*w)->shape() != Shape{xs[1]})
      return {this, bad("weight must be ", dtype_name(x->dtype()), shape_to_string(Shape{xs[1]}), " for input ",
                        x->type().to_string(), ", got ", (*w)->type().to_string())};
    weight = select(hit, per_channel(*w, static_cast<int64_t>(xs.size())), 0.0);
  }
  weight = apply(Op::Sum, {weight}, over_c);
  Ex loss = apply(Op::Neg, {picked * weight});
  if (reduction == "none") return loss;
  Ex total = apply(Op::Sum, {loss});
  if (reduction == "sum") return total;
  return total / apply(Op::Sum, {weight});
}

absl::Status Importer::nll_loss_op() {
  KILN_ASSIGN_OR_RETURN(auto x, value(0));
  return define(0, nll_loss(x, 1, 2));
}

// SoftmaxCrossEntropyLoss: the loss above of log_softmax(scores) over C; the optional
// second output is that log_softmax.
absl::Status Importer::softmax_cross_entropy() {
  KILN_ASSIGN_OR_RETURN(auto scores, value(0));
  if (scores->shape().size() < 2) return bad("scores must be [N, C, d1, ...], got ", scores->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto log_prob, emit(Op::LogSoftmax, {scores}, {{"axis", int64_t{1}}}));
  KILN_RETURN_IF_ERROR(define(0, nll_loss(log_prob, 1, 2)));
  return define(1, log_prob);
}

// hit[.., j, d, ..] (the indices' dims with d in [0, n) inserted after `axis`): whether
// indices[.., j, ..], counted from the end if negative, is d. An index out of range hits
// nothing, so gathers and scatters built on it are exact sums of one term and zeros.
Ex Importer::index_hits(Value* indices, int64_t axis, const Dim& n) {
  DType t = indices->dtype();
  Ex count = n.constant() ? Ex{this, scalar(static_cast<double>(*n.constant()), t)}
                          : apply(Op::Sum, {apply(Op::Expand, {Ex{this, scalar(1, t)}}, {{"shape", Shape{n}}})});
  Ex i = apply(Op::Unsqueeze, {ex(indices)}, {{"axes", std::vector<int64_t>{axis + 1}}});
  Shape iota(indices->shape().size() + 1, SymExpr(1));
  iota[axis + 1] = n;
  return apply(Op::Iota, {}, {{"shape", iota}, {"axis", axis + 1}, {"dtype", t}}) == select(i < 0.0, i + count, i);
}

// GatherElements: out[.., j, ..] = data[.., indices[.., j, ..], ..] along `axis`, the sum
// over data's axis of the elements an index hits (data sliced to the indices' other dims).
absl::Status Importer::gather_elements() {
  KILN_ASSIGN_OR_RETURN(auto data, value(0));
  KILN_ASSIGN_OR_RETURN(auto idx, value(1));
  int64_t rank = data->shape().size();
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", 0), rank));
  if (!is_integer(idx->dtype()) || static_cast<int64_t>(idx->shape().size()) != rank)
    return bad("indices must be an integer tensor of rank ", rank, ", got ", idx->type().to_string());
  Ex d = ex(data);
  for (int64_t m = 0; m < rank; ++m)
    if (m != axis && idx->shape()[m] != data->shape()[m])
      d = apply(Op::Slice, {d}, {{"axis", m}, {"end", idx->shape()[m]}});
  d = apply(Op::Unsqueeze, {d}, {{"axes", std::vector<int64_t>{axis}}});
  Ex hit = index_hits(idx, axis, data->shape()[axis]);
  return define(0, apply(Op::Sum, {select(hit, d, 0.0)}, {{"axes", std::vector<int64_t>{axis + 1}}, {"keepdim", false}}));
}

// ScatterElements (and Scatter): data with updates[.., j, ..] written at [.., indices[.., j,
// ..], ..] along `axis`. Per data element, the updates whose index hits it are summed
// (reduction none, where duplicates are undefined, and add) or multiplied, or their max or
// min taken together with the element itself.
absl::Status Importer::scatter_elements() {
  KILN_ASSIGN_OR_RETURN(auto data, value(0));
  KILN_ASSIGN_OR_RETURN(auto idx, value(1));
  KILN_ASSIGN_OR_RETURN(auto upd, value(2));
  int64_t rank = data->shape().size();
  KILN_ASSIGN_OR_RETURN(auto axis, axis_in("axis", attr_int("axis", 0), rank));
  if (!is_integer(idx->dtype()) || static_cast<int64_t>(idx->shape().size()) != rank || upd->shape() != idx->shape() ||
      upd->dtype() != data->dtype())
    return bad("indices must be integers of rank ", rank, " and updates ", dtype_name(data->dtype()),
               " of their shape, got ", idx->type().to_string(), " and ", upd->type().to_string());
  for (int64_t m = 0; m < rank; ++m)
    if (m != axis && idx->shape()[m] != data->shape()[m])
      return unsupported("indices ", idx->type().to_string(), " narrower than data ", data->type().to_string(),
                         " outside axis ", axis, " are not supported");
  std::string reduction = attr_string("reduction", "none");
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"none", Op::Sum}, {"add", Op::Sum}, {"mul", Op::Prod}, {"max", Op::Max}, {"min", Op::Min}};
  auto it = kOps.find(reduction);
  if (it == kOps.end()) return bad("reduction must be none, add, mul, max or min, got '", reduction, "'");
  Ex hit = index_hits(idx, axis, data->shape()[axis]), x = ex(data);
  Ex u = apply(Op::Unsqueeze, {ex(upd)}, {{"axes", std::vector<int64_t>{axis + 1}}});
  Ex fill = it->second == Op::Sum ? constant_like(x, 0) : it->second == Op::Prod ? constant_like(x, 1)
                                                                                   : apply(Op::Unsqueeze, {x}, {{"axes", std::vector<int64_t>{axis}}});
  Attrs over_j{{"axes", std::vector<int64_t>{axis}}, {"keepdim", false}};
  Ex combined = apply(it->second, {select(hit, u, fill)}, over_j);
  if (reduction == "add") return define(0, x + combined);
  if (reduction == "mul") return define(0, x * combined);
  if (reduction == "max") return define(0, maximum(x, combined));  // x too where every index hits
  if (reduction == "min") return define(0, minimum(x, combined));
  Ex any = apply(Op::Max, {apply(Op::Cast, {hit}, {{"dtype", DType::i32}})}, over_j) > 0.0;
  return define(0, select(any, combined, x));
}

// Tan, Sinh, Cosh, Asinh, Acosh and Atanh from sin, cos, exp, log, sqrt and tanh, in forms
// that avoid cancellation: sinh as 2t / (1 - t^2) with t = tanh(x / 2) below 1 in magnitude,
// asinh and atanh by their odd series below 1/8 (truncation under 1e-8 relative), asinh as
// log|x| + log(1 + sqrt(1 + 1/x^2)) above (no x^2 to overflow), acosh through log1p near 1
// and as log(2x) above 1e4.
absl::Status Importer::hyperbolic() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (!is_float(xv->dtype())) return bad("expects a float tensor, got ", xv->type().to_string());
  const std::string& type = node_->op_type();
  auto f = [](Op op, const Ex& e) { return ex_unary(op, e); };
  Ex x = ex(xv), a = abs(x), x2 = x * x;
  if (type == "Tan") return define(0, f(Op::Sin, x) / f(Op::Cos, x));
  if (type == "Cosh") return define(0, (exp(x) + exp(f(Op::Neg, x))) * 0.5);
  if (type == "Sinh") {
    Ex t = f(Op::Tanh, x * 0.5);
    return define(0, select(a < 1.0, 2.0 * t / (1.0 - t * t), (exp(x) - exp(f(Op::Neg, x))) * 0.5));
  }
  if (type == "Acosh") {  // below 2, log1p(u) for u = d + sqrt(d (d + 2)), d = x - 1, by Kahan's log(w) u / (w - 1)
    Ex d = x - 1.0, u = d + sqrt(d * (d + 2.0)), w = 1.0 + u;
    Ex near_one = select(w == 1.0, u, log(w) * u / (w - 1.0));
    return define(0, select(x < 2.0, near_one, select(x > 1e4, log(x) + 0.6931471805599453, log(x + sqrt(d * (x + 1.0))))));
  }
  if (type == "Atanh")
    return define(0, select(a < 0.125, x * (1.0 + x2 * (1.0 / 3 + x2 * (1.0 / 5 + x2 * (1.0 / 7)))),
                            0.5 * log((1.0 + x) / (1.0 - x))));
  Ex big = log(a) + log(1.0 + sqrt(1.0 + 1.0 / x2));  // Asinh
  return define(0, select(a < 0.125, x * (1.0 + x2 * (-1.0 / 6 + x2 * (3.0 / 40 + x2 * (-15.0 / 336)))),
                          select(x < 0.0, f(Op::Neg, big), big)));
}

// GatherND: the k-tuples along indices' last axis (each entry counted from the end if
// negative) become one flat index into data viewed as [batch * d0 * .. * d(k-1), rest..],
// which kiln's gather reads. The batch and indexed dims must be static (strides).
absl::Status Importer::gather_nd() {
  KILN_ASSIGN_OR_RETURN(auto data, value(0));
  KILN_ASSIGN_OR_RETURN(auto idx, value(1));
  const Shape &ds = data->shape(), &is = idx->shape();
  int64_t b = attr_int("batch_dims", 0), ir = is.size();
  std::optional<int64_t> k = ir > 0 ? is.back().constant() : std::nullopt;
  if (!is_integer(idx->dtype()) || !k || b < 0 || ir < b + 1 || b + *k > static_cast<int64_t>(ds.size()))
    return bad("indices ", idx->type().to_string(), " do not index data ", data->type().to_string(), " with batch_dims ", b);
  for (int64_t j = 0; j < b; ++j)
    if (is[j] != ds[j]) return bad("batch dim ", j, " of indices and data differ: ", shape_to_string(is), ", ", shape_to_string(ds));
  std::vector<int64_t> dims;  // the batch dims, then the indexed ones
  for (int64_t j = 0; j < b + *k; ++j) {
    if (!ds[j].constant()) return unsupported("GatherND needs static batch and indexed dims, got ", data->type().to_string());
    dims.push_back(*ds[j].constant());
  }
  Shape lead(is.begin(), is.end() - 1);
  Ex flat = constant_like(ex(idx), 0);
  int64_t stride = 1;
  for (int64_t j = b + *k; j-- > 0;) {
    Ex i = j < b ? apply(Op::Iota, {}, {{"shape", lead}, {"axis", j}, {"dtype", idx->dtype()}})
                 : apply(Op::Gather, {ex(idx), Ex{this, scalar(static_cast<double>(j - b), DType::i64)}}, {{"axis", ir - 1}});
    flat = flat + select(i < 0.0, i + static_cast<double>(dims[j]), i) * static_cast<double>(stride);
    stride *= dims[j];
  }
  std::vector<SymExpr> viewed{SymExpr(stride)};
  viewed.insert(viewed.end(), ds.begin() + b + *k, ds.end());
  return define(0, apply(Op::Gather, {apply(Op::Reshape, {ex(data)}, {{"shape", viewed}}), flat}, {{"axis", int64_t{0}}}));
}

// Atan is kiln's atan; asin(x) = atan(x / sqrt((1 - x)(1 + x))) and acos(x) =
// 2 atan(sqrt((1 - x) / (1 + x))), exact at +-1 (atan(+-inf) = +-pi/2) and without the
// cancellation of pi/2 - asin(x) near 1.
absl::Status Importer::arc_trig() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  if (!is_float(xv->dtype())) return bad("expects a float tensor, got ", xv->type().to_string());
  const std::string& type = node_->op_type();
  Ex x = ex(xv);
  if (type == "Atan") return define(0, ex_unary(Op::Atan, x));
  if (type == "Asin") return define(0, ex_unary(Op::Atan, x / sqrt((1.0 - x) * (1.0 + x))));
  return define(0, 2.0 * ex_unary(Op::Atan, sqrt((1.0 - x) / (1.0 + x))));
}

// ---- recurrent networks, LRN, ReverseSequence (issue 16) ------------------------------

// An RNN activation by its ONNX name, with its alpha and beta (the defaults ONNX gives when
// the node's activation_alpha/beta lists do not).
Ex Importer::rnn_activation(const Ex& x, const std::string& f, std::optional<double> alpha, std::optional<double> beta) {
  auto a = [&](double d) { return alpha.value_or(d); };
  auto b = [&](double d) { return beta.value_or(d); };
  if (f == "Sigmoid") return ex_unary(Op::Sigmoid, x);
  if (f == "Tanh") return ex_unary(Op::Tanh, x);
  if (f == "Relu") return ex_unary(Op::Relu, x);
  if (f == "Affine") return x * a(1.0) + b(0.0);
  if (f == "LeakyRelu") return select(x < 0.0, x * a(0.01), x);
  if (f == "ThresholdedRelu") return select(x > a(1.0), x, 0.0);
  if (f == "ScaledTanh") return ex_unary(Op::Tanh, x * b(1.0)) * a(1.0);
  if (f == "HardSigmoid") return maximum(minimum(x * a(0.2) + b(0.5), 1.0), 0.0);
  if (f == "Elu") return select(x < 0.0, (exp(x) - 1.0) * a(1.0), x);
  if (f == "Softsign") return x / (abs(x) + 1.0);
  if (f == "Softplus") return log(exp(x) + 1.0);
  return {this, unsupported("activation '", f, "' is not supported")};
}

// RNN, GRU and LSTM, unrolled over a static sequence length: X's projection through W (and
// both biases) is one linear for all steps; each step adds H_{t-1} R^T and applies the gates.
// Steps at or past a batch entry's sequence_lens keep its state and output zeros; the
// reverse direction runs over each sequence reversed within its length.
absl::Status Importer::recurrent() {
  const std::string& type = node_->op_type();
  int gates = type == "RNN" ? 1 : type == "GRU" ? 3 : 4;
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto wv, value(1));
  KILN_ASSIGN_OR_RETURN(auto rv, value(2));
  int64_t layout = attr_int("layout", 0);
  if (xv->shape().size() != 3) return bad("X must have rank 3, got ", xv->type().to_string());
  Ex x = ex(xv);
  if (layout == 1) x = apply(Op::Permute, {x}, {{"dims", std::vector<int64_t>{1, 0, 2}}});
  if (!x.v.ok()) return x.v.status();
  const Shape& xs = (*x.v)->shape();
  std::optional<int64_t> steps = xs[0].constant();
  if (!steps) return unsupported("the sequence length ", xs[0].to_string(), " is symbolic: kiln unrolls recurrent ops over a static length");
  Dim batch = xs[1];
  std::string direction = attr_string("direction", "forward");
  int dirs = direction == "bidirectional" ? 2 : 1;
  if (direction != "forward" && direction != "reverse" && dirs != 2) return bad("unknown direction '", direction, "'");
  const Dim& gh = wv->shape().size() == 3 ? wv->shape()[1] : SymExpr(0);
  std::optional<int64_t> ghc = gh.constant();
  if (wv->shape().size() != 3 || !ghc || *ghc % gates != 0 || wv->shape()[0] != SymExpr(dirs))
    return bad("W must be [", dirs, ", ", gates, "*hidden, input], got ", wv->type().to_string());
  int64_t hidden = *ghc / gates;
  if (attr("hidden_size") && attr_int("hidden_size", hidden) != hidden) return bad("hidden_size disagrees with W");
  if (rv->shape() != Shape{dirs, gh, hidden}) return bad("R must be [", dirs, ", ", gh.to_string(), ", ", hidden, "], got ", rv->type().to_string());
  if (type == "LSTM" && attr_int("input_forget", 0) != 0) return unsupported("input_forget is not supported");
  static const std::map<std::string, std::vector<std::string>, std::less<>> kDefault = {
      {"RNN", {"Tanh"}}, {"GRU", {"Sigmoid", "Tanh"}}, {"LSTM", {"Sigmoid", "Tanh", "Tanh"}}};
  std::vector<std::string> acts;
  if (const onnx::AttributeProto* a = attr("activations")) acts.assign(a->strings().begin(), a->strings().end());
  size_t per_dir = kDefault.at(type).size();
  if (acts.empty())
    for (int d = 0; d < dirs; ++d) acts.insert(acts.end(), kDefault.at(type).begin(), kDefault.at(type).end());
  if (acts.size() != per_dir * dirs) return bad("expects ", per_dir * dirs, " activations, got ", acts.size());
  std::vector<float> alphas, betas;
  if (const onnx::AttributeProto* a = attr("activation_alpha")) alphas.assign(a->floats().begin(), a->floats().end());
  if (const onnx::AttributeProto* a = attr("activation_beta")) betas.assign(a->floats().begin(), a->floats().end());
  std::optional<double> clip;
  if (attr("clip")) clip = attr_float("clip", 0);
  auto act = [&](const Ex& v, size_t i) {
    Ex c = clip ? maximum(minimum(v, *clip), -*clip) : v;
    std::optional<double> al, be;
    if (i < alphas.size()) al = tidy(alphas[i]);
    if (i < betas.size()) be = tidy(betas[i]);
    return rnn_activation(c, acts[i], al, be);
  };
  // Operand d of a [dirs, ...] tensor, or of a [batch, dirs, H] one under layout 1.
  auto of_dir = [&](int input, int64_t d, int64_t axis) -> std::optional<Ex> {
    if (!has_input(input)) return std::nullopt;
    absl::StatusOr<Value*> v = value(input);
    if (!v.ok()) return Ex{this, v.status()};
    Ex s = apply(Op::Slice, {ex(*v)}, {{"axis", axis}, {"start", SymExpr(d)}, {"end", SymExpr(d + 1)}});
    return apply(Op::Squeeze, {s}, {{"axes", std::vector<int64_t>{axis}}});
  };
  auto part = [&](const Ex& e, int64_t axis, int64_t g) {
    return apply(Op::Slice, {e}, {{"axis", axis}, {"start", SymExpr(g * hidden)}, {"end", SymExpr((g + 1) * hidden)}});
  };
  std::optional<Ex> mask_lens;  // [T, batch, 1]: t < sequence_lens[b]
  std::optional<Ex> lens;
  if (has_input(4)) {
    KILN_ASSIGN_OR_RETURN(auto lv, value(4));
    lens = apply(Op::Cast, {ex(lv)}, {{"dtype", DType::i64}});
    Ex t = apply(Op::Iota, {}, {{"shape", Shape{*steps, batch, 1}}, {"axis", int64_t{0}}, {"dtype", DType::i64}});
    mask_lens = t < apply(Op::Reshape, {*lens}, {{"shape", Shape{1, batch, 1}}});
  }
  std::vector<Ex> ys, hs, cs;
  for (int64_t d = 0; d < dirs; ++d) {
    bool reverse = direction == "reverse" || d == 1;
    Ex xd = x;
    if (reverse) xd = lens ? reverse_within(x, *lens, 0, 1) : apply(Op::Slice, {x}, {{"axis", int64_t{0}}, {"start", SymExpr(*steps - 1)}, {"end", SymExpr(-*steps - 1)}, {"step", int64_t{-1}}});
    Ex w = *of_dir(1, d, 0), r = *of_dir(2, d, 0);
    std::optional<Ex> bias = of_dir(3, d, 0), wb, rb;  // B [dirs, 2*gates*H]: W's bias, then R's
    if (bias) {
      wb = apply(Op::Slice, {*bias}, {{"axis", int64_t{0}}, {"start", SymExpr(0)}, {"end", gh}});
      rb = apply(Op::Slice, {*bias}, {{"axis", int64_t{0}}, {"start", gh}, {"end", 2 * gh}});
    }
    // GRU's candidate gate adds R's bias inside the reset product: keep it out of the sum.
    std::optional<Ex> rb_sum = rb;
    if (type == "GRU" && rb) rb_sum = apply(Op::Concat, {part(*rb, 0, 0), part(*rb, 0, 1), constant_like(*wb, 0) * part(*rb, 0, 2)}, {{"axis", int64_t{0}}});
    std::vector<Ex> lin_ops{xd, w};
    if (wb) lin_ops.push_back(*wb + *rb_sum);
    Ex xw = apply(Op::Linear, lin_ops);  // [T, batch, gates*H]
    int64_t state_axis = layout == 1 ? 1 : 0;
    Ex zeros = apply(Op::Expand, {constant_like(xw, 0)}, {{"shape", Shape{batch, hidden}}});
    Ex h = of_dir(5, d, state_axis).value_or(zeros);
    Ex c = type == "LSTM" ? of_dir(6, d, state_axis).value_or(zeros) : zeros;
    std::optional<Ex> p = type == "LSTM" ? of_dir(7, d, 0) : std::nullopt;
    size_t a0 = d * per_dir;
    std::vector<Ex> outs;
    for (int64_t t = 0; t < *steps; ++t) {
      Ex xt = apply(Op::Squeeze, {apply(Op::Slice, {xw}, {{"axis", int64_t{0}}, {"start", SymExpr(t)}, {"end", SymExpr(t + 1)}})},
                    {{"axes", std::vector<int64_t>{0}}});
      Ex hr = apply(Op::Linear, {h, r});  // [batch, gates*H]
      Ex h_new = h, c_new = c;
      if (type == "RNN") {
        h_new = act(xt + hr, a0);
      } else if (type == "GRU") {
        Ex z = act(part(xt, 1, 0) + part(hr, 1, 0), a0), rg = act(part(xt, 1, 1) + part(hr, 1, 1), a0);
        Ex rh = rb ? part(*rb, 0, 2) : constant_like(xt, 0);
        Ex cand = attr_int("linear_before_reset", 0) != 0
                      ? part(xt, 1, 2) + rg * (part(hr, 1, 2) + rh)
                      : part(xt, 1, 2) + apply(Op::Linear, {rg * h, part(r, 0, 2)}) + rh;
        Ex n = act(cand, a0 + 1);
        h_new = (1.0 - z) * n + z * h;
      } else {
        auto peep = [&](int k, const Ex& cell) { return p ? part(*p, 0, k) * cell : constant_like(xt, 0); };
        Ex i = act(part(xt, 1, 0) + part(hr, 1, 0) + peep(0, c), a0);
        Ex f = act(part(xt, 1, 2) + part(hr, 1, 2) + peep(2, c), a0);
        Ex g = act(part(xt, 1, 3) + part(hr, 1, 3), a0 + 1);
        c_new = f * c + i * g;
        Ex o = act(part(xt, 1, 1) + part(hr, 1, 1) + peep(1, c_new), a0);
        h_new = o * act(c_new, a0 + 2);
      }
      Ex out = h_new;
      if (mask_lens) {
        Ex m = apply(Op::Squeeze, {apply(Op::Slice, {*mask_lens}, {{"axis", int64_t{0}}, {"start", SymExpr(t)}, {"end", SymExpr(t + 1)}})},
                     {{"axes", std::vector<int64_t>{0}}});
        h_new = select(m, h_new, h), c_new = select(m, c_new, c), out = select(m, out, 0.0);
      }
      h = h_new, c = c_new;
      outs.push_back(apply(Op::Unsqueeze, {out}, {{"axes", std::vector<int64_t>{0}}}));
    }
    Ex y = apply(Op::Concat, outs, {{"axis", int64_t{0}}});  // [T, batch, H]
    if (reverse) y = lens ? reverse_within(y, *lens, 0, 1) : apply(Op::Slice, {y}, {{"axis", int64_t{0}}, {"start", SymExpr(*steps - 1)}, {"end", SymExpr(-*steps - 1)}, {"step", int64_t{-1}}});
    ys.push_back(apply(Op::Unsqueeze, {y}, {{"axes", std::vector<int64_t>{1}}}));
    hs.push_back(apply(Op::Unsqueeze, {h}, {{"axes", std::vector<int64_t>{0}}}));
    cs.push_back(apply(Op::Unsqueeze, {c}, {{"axes", std::vector<int64_t>{0}}}));
  }
  Ex y = apply(Op::Concat, ys, {{"axis", int64_t{1}}}), yh = apply(Op::Concat, hs, {{"axis", int64_t{0}}}),
     yc = apply(Op::Concat, cs, {{"axis", int64_t{0}}});
  if (layout == 1) {
    y = apply(Op::Permute, {y}, {{"dims", std::vector<int64_t>{2, 0, 1, 3}}});
    yh = apply(Op::Permute, {yh}, {{"dims", std::vector<int64_t>{1, 0, 2}}});
    yc = apply(Op::Permute, {yc}, {{"dims", std::vector<int64_t>{1, 0, 2}}});
  }
  std::vector<Ex> results{y, yh, yc};
  for (int i = 0; i < node_->output_size() && i < (type == "LSTM" ? 3 : 2); ++i)
    if (!node_->output(i).empty()) KILN_RETURN_IF_ERROR(define(i, results[i]));
  return absl::OkStatus();
}

// x with each batch entry b's first lens[b] elements along `time` reversed, the rest kept:
// element t reads t' = lens[b] - 1 - t where t < lens[b] (a gather of the one index that hits).
Ex Importer::reverse_within(const Ex& x, const Ex& lens, int64_t time, int64_t batch_axis) {
  if (!x.v.ok()) return x;
  if (!lens.v.ok()) return lens;
  const Shape& s = (*x.v)->shape();
  int64_t rank = s.size();
  Shape ts(rank, SymExpr(1)), ls(rank, SymExpr(1));
  ts[time] = s[time];
  ls[batch_axis] = s[batch_axis];
  Ex t = apply(Op::Iota, {}, {{"shape", ts}, {"axis", time}, {"dtype", DType::i64}});
  Ex len = apply(Op::Reshape, {apply(Op::Cast, {lens}, {{"dtype", DType::i64}})}, {{"shape", ls}});
  Ex src = select(t < len, len - 1.0 - t, t);  // broadcast over time and batch
  // out[.., t, ..] = sum over t2 of x[.., t2, ..] where t2 == src[.., t, ..]
  Shape t2s(rank + 1, SymExpr(1));
  t2s[time + 1] = s[time];
  Ex t2 = apply(Op::Iota, {}, {{"shape", t2s}, {"axis", time + 1}, {"dtype", DType::i64}});
  Ex hit = apply(Op::Unsqueeze, {src}, {{"axes", std::vector<int64_t>{time + 1}}}) == t2;
  Ex xu = apply(Op::Unsqueeze, {x}, {{"axes", std::vector<int64_t>{time}}});
  return apply(Op::Sum, {select(hit, xu, 0.0)}, {{"axes", std::vector<int64_t>{time + 1}}, {"keepdim", false}});
}

absl::Status Importer::reverse_sequence() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto lv, value(1));
  int64_t rank = xv->shape().size();
  if (rank < 2) return bad("expects x of rank >= 2, got ", xv->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto time, axis_in("time_axis", attr_int("time_axis", 0), rank));
  KILN_ASSIGN_OR_RETURN(auto batch, axis_in("batch_axis", attr_int("batch_axis", 1), rank));
  if (time == batch || time > 1 || batch > 1) return bad("time_axis and batch_axis must be 0 and 1 in some order");
  if (!is_integer(lv->dtype()) || lv->shape() != Shape{xv->shape()[batch]})
    return bad("sequence_lens must be integers [", xv->shape()[batch].to_string(), "], got ", lv->type().to_string());
  return define(0, reverse_within(ex(xv), ex(lv), time, batch));
}

// LRN: x / (bias + alpha / size * sum of x^2 over the channels [c - (size-1)/2, c + size/2])^beta,
// the channel window as a window view of x^2 with channels moved last.
absl::Status Importer::lrn() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size(), size = attr_int("size", 0);
  if (rank < 3 || size < 1 || !is_float(xv->dtype()))
    return bad("expects a float x [N, C, ...] and size >= 1, got ", xv->type().to_string(), " and size ", size);
  std::vector<int64_t> last(rank), back(rank);
  std::iota(last.begin(), last.end(), 0);
  last.erase(last.begin() + 1);
  last.push_back(1);
  for (int64_t i = 0; i < rank; ++i) back[last[i]] = i;
  Ex x = ex(xv);
  Ex sq = apply(Op::Permute, {x * x}, {{"dims", last}});
  Ex win = apply(Op::Window, {sq}, {{"kernel", std::vector<int64_t>{size}}, {"pads", std::vector<int64_t>{(size - 1) / 2, size / 2}}});
  Ex sum = apply(Op::Sum, {win}, {{"axes", std::vector<int64_t>{rank - 1}}, {"keepdim", false}});
  Ex s = apply(Op::Permute, {sum}, {{"dims", back}});
  Ex base = s * (attr_float("alpha", 1e-4) / static_cast<double>(size)) + attr_float("bias", 1.0);
  return define(0, x / apply(Op::Pow, {base, constant_like(base, attr_float("beta", 0.75))}));
}

// Pow of an integer base: with an integer exponent, exact square-and-multiply over the
// exponent's bits (a negative exponent gives 0, or +-1 for a base of +-1, as integer
// division would); with a float exponent, pow in f32 truncated back to the base's type.
absl::Status Importer::integer_pow(Value* base, Value* exponent) {
  DType t = base->dtype();
  if (is_float(exponent->dtype())) {
    Ex b = apply(Op::Cast, {ex(base)}, {{"dtype", DType::f32}});
    Ex e = apply(Op::Cast, {ex(exponent)}, {{"dtype", DType::f32}});
    return define(0, apply(Op::Cast, {apply(Op::Pow, {b, e})}, {{"dtype", t}}));
  }
  Ex b = ex(base), e = apply(Op::Cast, {ex(exponent)}, {{"dtype", t}});
  Ex r = constant_like(b, 1), sq = b, rest = select(e < 0.0, constant_like(e, 0), e);
  int bits = t == DType::i64 ? 63 : 31;
  for (int i = 0; i < bits; ++i) {
    r = select(rest - (rest / 2.0) * 2.0 != 0.0, r * sq, r);
    rest = rest / 2.0;
    if (i + 1 < bits) sq = sq * sq;
  }
  Ex neg = select(b == 1.0, constant_like(b, 1), select(b == -1.0, select(e - (e / 2.0) * 2.0 != 0.0, constant_like(b, -1), constant_like(b, 1)), constant_like(b, 0)));
  return define(0, select(e < 0.0, neg, r));
}

// ---- DFT and STFT (issue 16) -------------------------------------------------------

// The DFT of re (+ i im) along their last dim of static length n, zero-padded or cut to
// `len`, to k = len (or len/2 + 1 one-sided) bins: two real matmuls per part with constant
// cos and sin matrices [len', k]. Forward: exp(-2 pi i j f / len); inverse: exp(+...) / len.
std::pair<Ex, Ex> Importer::dft_last(Ex re, std::optional<Ex> im, int64_t n, int64_t len, bool inverse, bool onesided) {
  int64_t k = onesided ? len / 2 + 1 : len, rows = std::min(n, len);
  auto cut = [&](Ex e) {
    if (rows == n || !e.v.ok()) return e;
    return apply(Op::Slice, {e}, {{"axis", static_cast<int64_t>((*e.v)->shape().size()) - 1}, {"end", SymExpr(rows)}});
  };
  HostTensor c(DType::f32, {rows, k}), s(DType::f32, {rows, k});
  double sign = inverse ? 1 : -1, scale = inverse ? 1.0 / static_cast<double>(len) : 1.0;
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t f = 0; f < k; ++f) {
      double theta = 2 * M_PI * static_cast<double>((j * f) % len) / static_cast<double>(len);
      c.set(j * k + f, std::cos(theta) * scale);
      s.set(j * k + f, sign * std::sin(theta) * scale);
    }
  auto param = [&](HostTensor t, const char* what) -> Ex {
    Entry e{TensorType{DType::f32, {rows, k}}, nullptr, std::make_shared<const HostTensor>(std::move(t)), std::nullopt};
    absl::StatusOr<Value*> v = materialize(str_cat(node_->output(0), "_", what), e);
    if (!v.ok()) return {this, v.status()};
    return ex(*v);
  };
  Ex cm = param(std::move(c), "cos"), sm = param(std::move(s), "sin");
  re = cut(re);
  // (re + i im)(cos + i sin'), sin' carrying the sign.
  Ex out_re = apply(Op::MatMul, {re, cm}), out_im = apply(Op::MatMul, {re, sm});
  if (im) {
    Ex i = cut(*im);
    out_re = out_re - apply(Op::MatMul, {i, sm});
    out_im = out_im + apply(Op::MatMul, {i, cm});
  }
  return {out_re, out_im};
}

// x [.., 1 or 2] -> its real part and (for 2) its imaginary part, each without the last dim, in f32.
std::pair<Ex, std::optional<Ex>> Importer::complex_parts(Value* x) {
  int64_t last = static_cast<int64_t>(x->shape().size()) - 1;
  auto part = [&](int64_t p) {
    Ex s = apply(Op::Slice, {ex(x)}, {{"axis", last}, {"start", SymExpr(p)}, {"end", SymExpr(p + 1)}});
    return apply(Op::Cast, {apply(Op::Squeeze, {s}, {{"axes", std::vector<int64_t>{last}}})}, {{"dtype", DType::f32}});
  };
  if (x->shape()[last] == SymExpr(2)) return {part(0), part(1)};
  return {part(0), std::nullopt};
}

Ex Importer::stack_complex(const Ex& re, const Ex& im) {
  if (!re.v.ok()) return re;
  int64_t r = (*re.v)->shape().size();
  return apply(Op::Concat, {apply(Op::Unsqueeze, {re}, {{"axes", std::vector<int64_t>{r}}}),
                            apply(Op::Unsqueeze, {im}, {{"axes", std::vector<int64_t>{r}}})}, {{"axis", r}});
}

absl::Status Importer::dft() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  int64_t rank = xv->shape().size();
  if (rank < 3 || !is_float(xv->dtype()) || (xv->shape()[rank - 1] != SymExpr(1) && xv->shape()[rank - 1] != SymExpr(2)))
    return bad("expects a float signal [batch, .., 1 or 2], got ", xv->type().to_string());
  int64_t axis_attr = attr_int("axis", 1);
  if (opset_ >= 20) return unsupported("DFT of opset 20 (axis as an input) is not supported");
  KILN_ASSIGN_OR_RETURN(int64_t axis, axis_in("axis", axis_attr, rank - 1));
  if (axis == 0) return bad("axis 0 is the batch dim");
  std::optional<int64_t> n = xv->shape()[axis].constant();
  if (!n) return unsupported("the DFT length ", xv->shape()[axis].to_string(), " is symbolic: kiln needs a static one");
  int64_t len = *n;
  if (has_input(1)) {
    KILN_ASSIGN_OR_RETURN(auto l, known_ints(1, "dft_length"));
    if (l.size() != 1 || l[0] < 1) return bad("dft_length must be one positive integer");
    len = l[0];
  }
  bool inverse = attr_int("inverse", 0) != 0, onesided = attr_int("onesided", 0) != 0;
  if (inverse && onesided) return unsupported("inverse with onesided is not supported");
  auto [re, im] = complex_parts(xv);
  std::vector<int64_t> to_last(rank - 1), back(rank - 1);
  std::iota(to_last.begin(), to_last.end(), 0);
  to_last.erase(to_last.begin() + axis);
  to_last.push_back(axis);
  for (int64_t i = 0; i < rank - 1; ++i) back[to_last[i]] = i;
  auto perm = [&](Ex e, const std::vector<int64_t>& p) { return apply(Op::Permute, {e}, {{"dims", p}}); };
  std::optional<Ex> imp;
  if (im) imp = perm(*im, to_last);
  auto [yr, yi] = dft_last(perm(re, to_last), imp, *n, len, inverse, onesided);
  return define(0, apply(Op::Cast, {stack_complex(perm(yr, back), perm(yi, back))}, {{"dtype", xv->dtype()}}));
}

// STFT(signal [batch, length, 1 or 2], frame_step, window?, frame_length?): the frames
// (a window view with stride frame_step), times the window, through dft_last.
absl::Status Importer::stft() {
  KILN_ASSIGN_OR_RETURN(auto sv, value(0));
  if (sv->shape().size() != 3 || !is_float(sv->dtype())) return bad("expects a float signal [batch, length, 1 or 2], got ", sv->type().to_string());
  KILN_ASSIGN_OR_RETURN(auto step, known_ints(1, "frame_step"));
  if (step.size() != 1 || step[0] < 1) return bad("frame_step must be one positive integer");
  std::optional<Value*> window;
  int64_t flen = -1;
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(auto w, value(2));
    if (w->shape().size() != 1 || !w->shape()[0].constant()) return bad("window must be a static [frame_length], got ", w->type().to_string());
    window = w, flen = *w->shape()[0].constant();
  }
  if (has_input(3)) {
    KILN_ASSIGN_OR_RETURN(auto l, known_ints(3, "frame_length"));
    if (l.size() != 1 || l[0] < 1 || (flen >= 0 && l[0] != flen)) return bad("frame_length must be one positive integer, the window's length");
    flen = l[0];
  }
  if (flen < 1) return bad("needs a window or a frame_length");
  bool onesided = attr_int("onesided", 1) != 0;
  // [batch, length, c] -> [batch, c, length] -> frames [batch, c, flen, frames] -> [batch, frames, c, flen]
  Ex s = apply(Op::Cast, {apply(Op::Permute, {ex(sv)}, {{"dims", std::vector<int64_t>{0, 2, 1}}})}, {{"dtype", DType::f32}});
  Ex f = apply(Op::Window, {s}, {{"kernel", std::vector<int64_t>{flen}}, {"strides", std::vector<int64_t>{step[0]}}});
  f = apply(Op::Permute, {f}, {{"dims", std::vector<int64_t>{0, 3, 1, 2}}});
  if (window) f = f * apply(Op::Cast, {ex(*window)}, {{"dtype", DType::f32}});
  auto part = [&](int64_t p) {
    return apply(Op::Squeeze, {apply(Op::Slice, {f}, {{"axis", int64_t{2}}, {"start", SymExpr(p)}, {"end", SymExpr(p + 1)}})},
                 {{"axes", std::vector<int64_t>{2}}});
  };
  std::optional<Ex> im;
  if (sv->shape()[2] == SymExpr(2)) im = part(1);
  else if (sv->shape()[2] != SymExpr(1)) return bad("the signal's last dim must be 1 or 2");
  auto [yr, yi] = dft_last(part(0), im, flen, flen, false, onesided && !im);
  return define(0, apply(Op::Cast, {stack_complex(yr, yi)}, {{"dtype", sv->dtype()}}));
}

// ---- GridSample (issue 16) -----------------------------------------------------------

// GridSample(X [N, C, H, W], grid [N, Ho, Wo, 2]) as PyTorch's grid_sample defines it: grid
// (x, y) in [-1, 1] unnormalized to pixel coordinates; for bilinear and nearest the padding
// mode applies to the coordinate (border clamps, reflection reflects, then clamps), for
// bicubic to each of the 4x4 taps. Every tap is a row gather of X viewed as [N*H*W, C] at
// n*H*W + y*W + x; taps outside X (padding zeros) weigh 0. Static H and W.
absl::Status Importer::grid_sample() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto gv, value(1));
  if (xv->shape().size() != 4 || gv->shape().size() != 4 || gv->shape()[3] != SymExpr(2) || !is_float(xv->dtype()))
    return unsupported("only 2-D GridSample of a float X [N, C, H, W] and grid [N, Ho, Wo, 2] is supported, got ",
                       xv->type().to_string(), " and ", gv->type().to_string());
  std::optional<int64_t> h = xv->shape()[2].constant(), w = xv->shape()[3].constant();
  if (!h || !w) return unsupported("GridSample needs static H and W, got ", xv->type().to_string());
  std::string mode = attr_string("mode", opset_ >= 20 ? "linear" : "bilinear");
  if (mode == "linear") mode = "bilinear";
  if (mode == "cubic") mode = "bicubic";
  std::string pad = attr_string("padding_mode", "zeros");
  bool align = attr_int("align_corners", 0) != 0;
  if (mode != "bilinear" && mode != "nearest" && mode != "bicubic") return bad("unknown mode '", mode, "'");
  if (pad != "zeros" && pad != "border" && pad != "reflection") return bad("unknown padding_mode '", pad, "'");
  Ex grid = apply(Op::Cast, {ex(gv)}, {{"dtype", DType::f32}});
  auto coord = [&](int64_t c, int64_t size) {
    Ex g = apply(Op::Squeeze, {apply(Op::Slice, {grid}, {{"axis", int64_t{3}}, {"start", SymExpr(c)}, {"end", SymExpr(c + 1)}})},
                 {{"axes", std::vector<int64_t>{3}}});
    double s = static_cast<double>(size);
    return align ? (g + 1.0) * ((s - 1) / 2) : ((g + 1.0) * s - 1.0) * 0.5;
  };
  // Reflection into [lo, hi] (align_corners: [0, size-1], else [-0.5, size-0.5]), then clamped.
  auto padded = [&](Ex v, int64_t size) {
    double hi_c = static_cast<double>(size - 1);
    if (pad == "reflection") {
      double lo = align ? 0.0 : -0.5, hi = align ? hi_c : hi_c + 0.5, span = hi - lo;
      if (span <= 0) {
        v = constant_like(v, 0) * v;
      } else {
        Ex d = abs(v - lo);
        Ex flips = ex_unary(Op::Floor, d / span);
        Ex extra = d - flips * span;
        Ex odd = flips - ex_unary(Op::Floor, flips * 0.5) * 2.0;
        v = select(odd == 0.0, extra + lo, (hi - extra));
      }
    }
    return maximum(minimum(v, hi_c), 0.0);
  };
  Ex x = coord(0, *w), y = coord(1, *h);
  if (mode != "bicubic" && pad != "zeros") x = padded(x, *w), y = padded(y, *h);
  Ex xt = apply(Op::Cast, {ex(xv)}, {{"dtype", DType::f32}});
  Ex rows = apply(Op::Reshape, {apply(Op::Permute, {xt}, {{"dims", std::vector<int64_t>{0, 2, 3, 1}}})},
                  {{"shape", Shape{xv->shape()[0] * (*h * *w), xv->shape()[1]}}});
  Ex n = apply(Op::Iota, {}, {{"shape", Shape{gv->shape()[0], 1, 1}}, {"axis", int64_t{0}}, {"dtype", DType::f32}});
  std::optional<Ex> sum;
  // One tap at integer-valued coordinates (tx, ty) with weight wt.
  auto tap = [&](Ex tx, Ex ty, Ex wt) {
    if (mode == "bicubic" && pad != "zeros") tx = padded(tx, *w), ty = padded(ty, *h);
    Ex inside = (tx >= 0.0) && (tx <= static_cast<double>(*w - 1)) && (ty >= 0.0) && (ty <= static_cast<double>(*h - 1));
    Ex cx = maximum(minimum(tx, static_cast<double>(*w - 1)), 0.0), cy = maximum(minimum(ty, static_cast<double>(*h - 1)), 0.0);
    Ex flat = apply(Op::Cast, {n * static_cast<double>(*h * *w) + cy * static_cast<double>(*w) + cx}, {{"dtype", DType::i64}});
    Ex v = apply(Op::Gather, {rows, flat}, {{"axis", int64_t{0}}});  // [N, Ho, Wo, C]
    Ex wv = apply(Op::Unsqueeze, {select(inside, wt, 0.0)}, {{"axes", std::vector<int64_t>{3}}});
    Ex t = v * wv;
    sum = sum ? *sum + t : t;
  };
  if (mode == "nearest") {
    auto rne = [&](Ex v) {  // round half to even
      Ex r = ex_unary(Op::Floor, v), frac = v - r;
      Ex even = r + (r - ex_unary(Op::Floor, r * 0.5) * 2.0);
      return select(frac < 0.5, r, select(frac > 0.5, r + 1.0, even));
    };
    tap(rne(x), rne(y), constant_like(x, 1) + x * 0.0);
  } else if (mode == "bilinear") {
    Ex x0 = ex_unary(Op::Floor, x), y0 = ex_unary(Op::Floor, y);
    Ex fx = x - x0, fy = y - y0;
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx)
        tap(x0 + static_cast<double>(dx), y0 + static_cast<double>(dy), (dx ? fx : 1.0 - fx) * (dy ? fy : 1.0 - fy));
  } else {
    const double a = -0.75;
    auto cubic = [&](Ex t, int k) {  // weight of tap k in {-1, 0, 1, 2} at fraction t
      Ex d = k <= 0 ? t - static_cast<double>(k) : static_cast<double>(k) - t;  // distance >= 0
      Ex near = ((d * (a + 2) - (a + 3)) * d * d) + 1.0;
      Ex far = ((d * a - 5 * a) * d + 8 * a) * d - 4 * a;
      return (k == 0 || k == 1) ? near : far;
    };
    Ex x0 = ex_unary(Op::Floor, x), y0 = ex_unary(Op::Floor, y);
    Ex fx = x - x0, fy = y - y0;
    for (int dy = -1; dy <= 2; ++dy)
      for (int dx = -1; dx <= 2; ++dx)
        tap(x0 + static_cast<double>(dx), y0 + static_cast<double>(dy), cubic(fx, dx) * cubic(fy, dy));
  }
  Ex out = apply(Op::Permute, {*sum}, {{"dims", std::vector<int64_t>{0, 3, 1, 2}}});
  return define(0, apply(Op::Cast, {out}, {{"dtype", xv->dtype()}}));
}

// ScatterND(data, indices [.., k], updates [.., data dims k..]): each index row names one
// slice data[i0, .., ik-1]; per slice (data viewed as [M, rest..]), the update rows whose
// flat index hits it are summed (reduction none, where duplicates are undefined, and add)
// or multiplied. Needs static leading data dims and a static k.
absl::Status Importer::scatter_nd() {
  KILN_ASSIGN_OR_RETURN(auto data, value(0));
  KILN_ASSIGN_OR_RETURN(auto idx, value(1));
  KILN_ASSIGN_OR_RETURN(auto upd, value(2));
  const Shape &ds = data->shape(), &is = idx->shape();
  std::optional<int64_t> k = is.empty() ? std::nullopt : is.back().constant();
  if (!is_integer(idx->dtype()) || !k || *k < 1 || *k > static_cast<int64_t>(ds.size()))
    return bad("indices must be integers [.., k] with 1 <= k <= rank of data, got ", idx->type().to_string());
  Shape lead(is.begin(), is.end() - 1), rest(ds.begin() + *k, ds.end()), want = lead;
  want.insert(want.end(), rest.begin(), rest.end());
  if (upd->shape() != want || upd->dtype() != data->dtype())
    return bad("updates must be ", dtype_name(data->dtype()), " ", shape_to_string(want), ", got ", upd->type().to_string());
  std::string reduction = attr_string("reduction", "none");
  if (reduction != "none" && reduction != "add" && reduction != "mul") return unsupported("reduction '", reduction, "' is not supported");
  int64_t m = 1;
  for (int64_t j = 0; j < *k; ++j) {
    if (!ds[j].constant()) return unsupported("the indexed dims of data must be static, got ", data->type().to_string());
    m *= *ds[j].constant();
  }
  SymExpr u = shape_numel(lead);
  Ex flat = constant_like(ex(idx), 0);
  int64_t stride = m;
  for (int64_t j = 0; j < *k; ++j) {
    int64_t dj = *ds[j].constant();
    stride /= dj;
    Ex i = apply(Op::Squeeze, {apply(Op::Slice, {ex(idx)}, {{"axis", static_cast<int64_t>(is.size()) - 1}, {"start", SymExpr(j)}, {"end", SymExpr(j + 1)}})},
                 {{"axes", std::vector<int64_t>{static_cast<int64_t>(is.size()) - 1}}});
    flat = flat + select(i < 0.0, i + static_cast<double>(dj), i) * static_cast<double>(stride);
  }
  Shape hit_shape{u, SymExpr(m)}, upd_shape{u, SymExpr(1)}, data_shape{SymExpr(m)};
  hit_shape.insert(hit_shape.end(), rest.size(), SymExpr(1));
  upd_shape.insert(upd_shape.end(), rest.begin(), rest.end());
  data_shape.insert(data_shape.end(), rest.begin(), rest.end());
  Ex slots = apply(Op::Iota, {}, {{"shape", Shape{1, m}}, {"axis", int64_t{1}}, {"dtype", idx->dtype()}});
  Ex hit = apply(Op::Reshape, {apply(Op::Reshape, {flat}, {{"shape", Shape{u, 1}}}) == slots}, {{"shape", hit_shape}});
  Ex x = apply(Op::Reshape, {ex(data)}, {{"shape", data_shape}}), up = apply(Op::Reshape, {ex(upd)}, {{"shape", upd_shape}});
  Attrs over_u{{"axes", std::vector<int64_t>{0}}, {"keepdim", false}};
  Ex y = x;
  if (reduction == "mul") {
    y = x * apply(Op::Prod, {select(hit, up, constant_like(x, 1))}, over_u);
  } else {
    Ex s = apply(Op::Sum, {select(hit, up, 0.0)}, over_u);
    if (reduction == "add") y = x + s;
    else y = select(apply(Op::Max, {apply(Op::Cast, {hit}, {{"dtype", DType::i32}})}, over_u) > 0.0, s, x);
  }
  return define(0, apply(Op::Reshape, {y}, {{"shape", ds}}));
}

// MaxPool's Indices output: the window view of x (padding at the lowest float) reduced by
// argmax over its flattened kernel dims gives the window offset of the first maximum, from
// which the flat row-major index into x [N, C, spatial...] follows. Static C and spatial dims.
absl::Status Importer::max_pool_indices(Value* x, const std::vector<int64_t>& kernel, const WindowAttrs& wa) {
  const Shape& xs = x->shape();
  int64_t sp = kernel.size(), rank = xs.size();
  std::vector<int64_t> dims;  // C, spatial...
  for (int64_t i = 1; i < rank; ++i) {
    if (!xs[i].constant()) return unsupported("the Indices output needs static channel and spatial dims, got ", x->type().to_string());
    dims.push_back(*xs[i].constant());
  }
  Ex win = apply(Op::Window, {ex(x)}, {{"kernel", kernel}, {"strides", wa.strides}, {"pads", wa.pads}, {"dilations", wa.dilations},
                                      {"ceil_mode", attr_int("ceil_mode", 0) != 0},
                                      {"pad_value", static_cast<double>(std::numeric_limits<float>::lowest())}});
  if (!win.v.ok()) return win.v.status();
  Shape ws = (*win.v)->shape(), flat_k(ws.begin(), ws.begin() + 2);  // [N, C, k..., o...]
  int64_t kn = 1;
  for (int64_t k : kernel) kn *= k;
  flat_k.push_back(kn);
  flat_k.insert(flat_k.end(), ws.begin() + 2 + sp, ws.end());
  Ex local = apply(Op::ArgMax, {apply(Op::Reshape, {win}, {{"shape", flat_k}})}, {{"axis", int64_t{2}}, {"keepdim", false}});
  Shape out(ws.begin(), ws.begin() + 2);
  out.insert(out.end(), ws.begin() + 2 + sp, ws.end());
  auto iota = [&](int64_t axis) {
    Shape s(rank, SymExpr(1));
    s[axis] = out[axis];
    return apply(Op::Iota, {}, {{"shape", s}, {"axis", axis}, {"dtype", DType::i64}});
  };
  // storage_order 1 numbers the spatial positions column-major (the first spatial dim fastest).
  bool column_major = attr_int("storage_order", 0) != 0;
  int64_t plane = 1;
  for (int64_t i = 0; i < sp; ++i) plane *= dims[1 + i];
  Ex flat = (iota(0) * static_cast<double>(dims[0]) + iota(1)) * static_cast<double>(plane);  // (n * C + c) * plane
  int64_t inner = kn;
  for (int64_t i = 0; i < sp; ++i) {
    inner /= kernel[i];
    Ex ki = local / static_cast<double>(inner);
    ki = ki - (ki / static_cast<double>(kernel[i])) * static_cast<double>(kernel[i]);  // (local // inner) % k_i
    Ex pos = iota(2 + i) * static_cast<double>(wa.strides[i]) - static_cast<double>(wa.pads[i]) + ki * static_cast<double>(wa.dilations[i]);
    int64_t stride = 1;
    for (int64_t j = column_major ? 0 : i + 1; j < (column_major ? i : sp); ++j) stride *= dims[1 + j];
    flat = flat + pos * static_cast<double>(stride);
  }
  return define(1, flat);
}

// Det of [.., n, n] for static n <= 4: the Leibniz sum over the n! permutations of signed
// products of entries (at most 24 terms of 4 factors; larger n needs an LU op).
absl::Status Importer::det() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  const Shape& s = xv->shape();
  int64_t rank = s.size();
  std::optional<int64_t> n = rank >= 2 ? s[rank - 1].constant() : std::nullopt;
  if (!is_float(xv->dtype()) || !n || s[rank - 2] != s[rank - 1]) return bad("expects float square matrices [.., n, n], got ", xv->type().to_string());
  if (*n > 4) return unsupported("Det of ", *n, "x", *n, " matrices is not supported (kiln computes n <= 4 by the Leibniz formula)");
  Shape flat(s.begin(), s.end() - 2);
  flat.push_back(*n * *n);
  Ex x = apply(Op::Reshape, {apply(Op::Cast, {ex(xv)}, {{"dtype", DType::f32}})}, {{"shape", flat}});
  std::vector<Ex> entry;
  for (int64_t i = 0; i < *n * *n; ++i)
    entry.push_back(apply(Op::Squeeze, {apply(Op::Slice, {x}, {{"axis", rank - 2}, {"start", SymExpr(i)}, {"end", SymExpr(i + 1)}})},
                          {{"axes", std::vector<int64_t>{rank - 2}}}));
  std::vector<int64_t> perm(*n);
  std::iota(perm.begin(), perm.end(), 0);
  std::optional<Ex> sum;
  do {
    int64_t inversions = 0;
    for (int64_t i = 0; i < *n; ++i)
      for (int64_t j = i + 1; j < *n; ++j) inversions += perm[i] > perm[j];
    Ex term = entry[perm[0]];
    for (int64_t i = 1; i < *n; ++i) term = term * entry[i * *n + perm[i]];
    if (!sum) sum = inversions % 2 ? 0.0 - term : term;
    else sum = inversions % 2 ? *sum - term : *sum + term;
  } while (std::next_permutation(perm.begin(), perm.end()));
  return define(0, apply(Op::Cast, {*sum}, {{"dtype", xv->dtype()}}));
}

// MaxUnpool(X, I, output_shape?): zeros of the unpooled shape with X's values written at
// the flat indices I (MaxPool's Indices into [N, C, spatial...]). Per (n, c) plane, output
// position m sums the inputs whose index is (n*C + c)*plane + m: an index-hit sum, quadratic
// in the plane size (like ScatterElements). Static C and spatial dims.
absl::Status Importer::max_unpool() {
  KILN_ASSIGN_OR_RETURN(auto xv, value(0));
  KILN_ASSIGN_OR_RETURN(auto iv, value(1));
  std::optional<std::vector<int64_t>> kernel = attr_ints("kernel_shape");
  const Shape& xs = xv->shape();
  int64_t rank = xs.size();
  if (!kernel || rank != static_cast<int64_t>(kernel->size()) + 2) return bad("needs kernel_shape for x [N, C, spatial...], got ", xv->type().to_string());
  if (!is_integer(iv->dtype()) || iv->shape() != xs) return bad("I must be integer indices of x's shape, got ", iv->type().to_string());
  int64_t sp = kernel->size();
  std::vector<int64_t> strides = attr_ints("strides").value_or(std::vector<int64_t>(sp, 1));
  std::vector<int64_t> pads = attr_ints("pads").value_or(std::vector<int64_t>(2 * sp, 0));
  if (static_cast<int64_t>(strides.size()) != sp || static_cast<int64_t>(pads.size()) != 2 * sp) return bad("strides and pads do not match kernel_shape");
  Shape out{xs[0], xs[1]};
  int64_t pin = 1, pout = 1;
  for (int64_t i = 1; i < rank; ++i)
    if (!xs[i].constant()) return unsupported("MaxUnpool needs static channel and spatial dims, got ", xv->type().to_string());
  for (int64_t i = 0; i < sp; ++i) {
    int64_t in = *xs[2 + i].constant(), o = (in - 1) * strides[i] + (*kernel)[i] - pads[i] - pads[sp + i];
    out.push_back(o), pin *= in, pout *= o;
  }
  std::vector<int64_t> os;  // output_shape: the default-shaped result padded (or cut) at the end
  if (has_input(2)) {
    KILN_ASSIGN_OR_RETURN(os, known_ints(2, "output_shape"));
    if (static_cast<int64_t>(os.size()) != rank) return bad("output_shape must have ", rank, " entries");
  }
  int64_t c = *xs[1].constant();
  Shape col{xs[0], xs[1], SymExpr(pin), SymExpr(1)};
  Ex x = apply(Op::Reshape, {ex(xv)}, {{"shape", col}});
  Ex idx = apply(Op::Reshape, {apply(Op::Cast, {ex(iv)}, {{"dtype", DType::i64}})}, {{"shape", col}});
  auto iota = [&](Shape s, int64_t axis) { return apply(Op::Iota, {}, {{"shape", s}, {"axis", axis}, {"dtype", DType::i64}}); };
  Ex base = (iota({xs[0], 1, 1, 1}, 0) * static_cast<double>(c) + iota({1, xs[1], 1, 1}, 1)) * static_cast<double>(pout);
  Ex hit = (idx - base) == iota({1, 1, 1, pout}, 3);
  Ex y = apply(Op::Reshape, {apply(Op::Sum, {select(hit, x, 0.0)}, {{"axes", std::vector<int64_t>{2}}, {"keepdim", false}})},
                {{"shape", out}});
  for (int64_t i = 0; !os.empty() && i < sp; ++i) {
    int64_t have = *out[2 + i].constant(), want = os[2 + i];
    if (want < have) y = apply(Op::Slice, {y}, {{"axis", 2 + i}, {"end", SymExpr(want)}});
    if (want > have) {
      Shape zs = out;
      zs[2 + i] = want - have;
      y = apply(Op::Concat, {y, apply(Op::Expand, {constant_like(y, 0)}, {{"shape", zs}})}, {{"axis", 2 + i}});
    }
    out[2 + i] = want;
  }
  return define(0, y);
}

}  // namespace kiln::onnx_detail
