#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "ir/op.h"

#include "ir/op_attrs.h"
#include "ir/ops_attention.h"
#include "ir/ops_collective.h"
#include "ir/parser.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

using Types = std::span<const TensorType>;
using Result = absl::StatusOr<std::vector<TensorType>>;

absl::Status err(auto&&... parts) { return invalid_argument(parts...); }

std::string types_to_string(Types in) {
  return str_join(in, ", ", [](const TensorType& t) { return t.to_string(); });
}

absl::Status require_dtype(const TensorType& t, bool ok, std::string_view what) {
  if (ok) return absl::OkStatus();
  return err("expected ", what, ", got ", t.to_string());
}

absl::Status same_dtypes(Types in) {
  for (const TensorType& t : in.subspan(1))
    if (t.dtype != in[0].dtype)
      return err("operand dtypes differ (", types_to_string(in), "); insert a cast");
  return absl::OkStatus();
}

// ---- elementwise ---------------------------------------------------------------

Result infer_unary_numeric(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype != DType::boolean, "a numeric tensor"));
  return std::vector{in[0]};
}

Result infer_unary_float(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "a floating-point tensor"));
  return std::vector{in[0]};
}

Result infer_unary_bool(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype == DType::boolean, "a bool tensor"));
  return std::vector{in[0]};
}

Result infer_gelu(Types in, const Attrs& a) {
  const std::string& approx = GeluAttrs(a).approximate();
  if (approx != "none" && approx != "tanh")
    return err("approximate must be \"none\" or \"tanh\", got \"", approx, "\"");
  return infer_unary_float(in, a);
}

Result infer_cast(Types in, const Attrs& a) {
  return std::vector{TensorType{CastAttrs(a).dtype(), in[0].shape}};
}

Result infer_constant(Types, const Attrs& a) {
  DType t = ConstantAttrs(a).dtype();
  const AttrValue& v = ConstantAttrs(a).value();
  if (std::holds_alternative<double>(v) && !is_float(t))
    return err("constant value ", attr_to_string(v), " is not a valid ", dtype_name(t));
  if (std::holds_alternative<bool>(v) && t != DType::boolean)
    return err("constant value ", attr_to_string(v), " is not a valid ", dtype_name(t));
  if (std::holds_alternative<int64_t>(v) && t == DType::boolean) {
    int64_t i = std::get<int64_t>(v);
    if (i != 0 && i != 1) return err("constant value ", i, " is not a valid bool");
  }
  return std::vector{TensorType{t, {}}};
}

Result infer_iota(Types, const Attrs& a) {
  IotaAttrs attrs(a);
  DType t = attrs.dtype();
  if (t == DType::boolean) return err("iota needs a numeric dtype, got bool");
  Shape s = attrs.shape();
  for (const Dim& d : s)
    if (auto c = d.constant(); c && *c < 0) return err("negative dim in shape ", shape_to_string(s));
  int64_t axis = attrs.axis();
  KILN_RETURN_IF_ERROR(normalize_axes(std::span(&axis, 1), s.size()).status());
  return std::vector{TensorType{t, std::move(s)}};
}

Result broadcast_all(Types in, DType out) {
  Shape s = in[0].shape;
  for (const TensorType& t : in.subspan(1)) {
    absl::StatusOr<Shape> b = broadcast_shapes(s, t.shape);
    if (!b.ok()) return err(b.status().message(), " (operands ", types_to_string(in), ")");
    s = *std::move(b);
  }
  return std::vector{TensorType{out, std::move(s)}};
}

Result infer_binary_numeric(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype != DType::boolean, "numeric operands"));
  return broadcast_all(in, in[0].dtype);
}

Result infer_binary_float(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "floating-point operands"));
  return broadcast_all(in, in[0].dtype);
}

Result infer_binary_bool(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype == DType::boolean, "bool operands"));
  return broadcast_all(in, DType::boolean);
}

Result infer_compare(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  return broadcast_all(in, DType::boolean);
}

Result infer_where(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype == DType::boolean, "a bool condition"));
  if (in[1].dtype != in[2].dtype)
    return err("where's branches differ in dtype (", types_to_string(in.subspan(1)), ")");
  return broadcast_all(in, in[1].dtype);
}

// ---- reductions ---------------------------------------------------------------

// The result of reducing x over `axes` (normalized, sorted).
Result reduce_shape(const TensorType& x, absl::StatusOr<std::vector<int64_t>> axes, bool keepdim, DType out) {
  KILN_RETURN_IF_ERROR(axes.status());
  Shape s;
  for (int64_t i = 0; i < static_cast<int64_t>(x.shape.size()); ++i) {
    bool reduced = std::binary_search(axes->begin(), axes->end(), i);
    if (!reduced) s.push_back(x.shape[i]);
    else if (keepdim) s.push_back(1);
  }
  return std::vector{TensorType{out, std::move(s)}};
}

Result infer_reduce_numeric(Types in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype != DType::boolean, "a numeric tensor"));
  ReduceAttrs attrs(a);
  return reduce_shape(in[0], reduction_axes(attrs, in[0].shape.size()), attrs.keepdim(), in[0].dtype);
}

Result infer_reduce_float(Types in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "a floating-point tensor"));
  ReduceAttrs attrs(a);
  return reduce_shape(in[0], reduction_axes(attrs, in[0].shape.size()), attrs.keepdim(), in[0].dtype);
}

Result infer_argmax(Types in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], in[0].dtype != DType::boolean, "a numeric tensor"));
  if (in[0].shape.empty()) return err("argmax needs a tensor of rank >= 1, got ", in[0].to_string());
  ArgMaxAttrs attrs(a);
  return reduce_shape(in[0], reduction_axes(attrs, in[0].shape.size()), attrs.keepdim(), DType::i64);
}

// ---- composites ---------------------------------------------------------------

Result infer_softmax(Types in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "a floating-point tensor"));
  int64_t axis = SoftmaxAttrs(a).axis();
  KILN_RETURN_IF_ERROR(normalize_axes(std::span(&axis, 1), in[0].shape.size()).status());
  return std::vector{in[0]};
}

// layer_norm(x, weight?, bias?) / rms_norm(x, weight?): normalized over trailing axes;
// weight and bias have the normalized dims' shape.
Result infer_norm(Types in, const std::vector<int64_t>& axes, double eps) {
  const TensorType& x = in[0];
  KILN_RETURN_IF_ERROR(require_dtype(x, is_float(x.dtype), "a floating-point tensor"));
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  int64_t rank = x.shape.size();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(axes, rank));
  if (ax.empty()) return err("axes must name at least one axis");
  std::vector<int64_t> sorted = ax;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i)
    if (sorted[i] != rank - static_cast<int64_t>(sorted.size() - i))
      return err("axes must be the trailing dimensions of ", x.to_string());
  if (eps < 0) return err("eps must be >= 0");
  Shape norm_shape(x.shape.end() - sorted.size(), x.shape.end());
  for (const TensorType& w : in.subspan(1))
    if (w.shape != norm_shape)
      return err("weight/bias must have shape ", shape_to_string(norm_shape), ", got ", w.to_string());
  return std::vector{x};
}

Result infer_layer_norm(Types in, const Attrs& a) {
  return infer_norm(in, LayerNormAttrs(a).axes(), LayerNormAttrs(a).eps());
}

Result infer_rms_norm(Types in, const Attrs& a) {
  return infer_norm(in, RmsNormAttrs(a).axes(), RmsNormAttrs(a).eps());
}

// q [..., Lq, E], k [..., Lk, E], v [..., Lk, Ev], mask broadcastable to [..., Lq, Lk].
Result infer_sdpa(Types in, const Attrs& a) {
  const TensorType &q = in[0], &k = in[1], &v = in[2];
  KILN_RETURN_IF_ERROR(require_dtype(q, is_float(q.dtype), "floating-point q, k, v"));
  KILN_RETURN_IF_ERROR(same_dtypes(in.subspan(0, 3)));
  if (q.shape.size() < 2 || k.shape.size() != q.shape.size() || v.shape.size() != q.shape.size())
    return err("q, k and v must have the same rank >= 2, got ", types_to_string(in.subspan(0, 3)));
  size_t r = q.shape.size();
  if (q.shape[r - 1] != k.shape[r - 1])
    return err("q and k must agree in the last dim, got ", types_to_string(in.subspan(0, 2)));
  if (k.shape[r - 2] != v.shape[r - 2])
    return err("k and v must agree in sequence length, got ", types_to_string(in.subspan(1, 2)));
  Shape batch(q.shape.begin(), q.shape.end() - 2);
  for (const TensorType* t : {&k, &v}) {
    absl::StatusOr<Shape> b = broadcast_shapes(batch, Shape(t->shape.begin(), t->shape.end() - 2));
    if (!b.ok()) return err("batch dims of q, k, v: ", b.status().message());
    batch = *b;
  }
  if (in.size() == 4) {
    const TensorType& m = in[3];
    if (m.dtype != DType::boolean && m.dtype != q.dtype)
      return err("mask must be bool or ", dtype_name(q.dtype), ", got ", m.to_string());
    Shape scores = batch;
    scores.push_back(q.shape[r - 2]);
    scores.push_back(k.shape[r - 2]);
    absl::StatusOr<Shape> b = broadcast_shapes(scores, m.shape);
    if (!b.ok() || *b != scores)
      return err("mask ", m.to_string(), " does not broadcast to the scores' shape ", shape_to_string(scores));
  }
  if (std::optional<double> scale = SdpaAttrs(a).scale(); scale && !(*scale > 0)) return err("scale must be > 0");
  Shape out = batch;
  out.push_back(q.shape[r - 2]);
  out.push_back(v.shape[r - 1]);
  return std::vector{TensorType{q.dtype, std::move(out)}};
}

// The declared results; the registered shape rule is checked when compiling (ir/extern_op.h).
Result infer_extern_call(Types, const Attrs& a) {
  absl::StatusOr<std::vector<TensorType>> out = parse_types(ExternAttrs(a).results());
  if (!out.ok()) return err("results \"", ExternAttrs(a).results(), "\": ", out.status().message());
  return out;
}

// ---- linear algebra -----------------------------------------------------------

Result infer_matmul(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "floating-point operands"));
  Shape a = in[0].shape, b = in[1].shape;
  if (a.empty() || b.empty()) return err("matmul needs operands of rank >= 1, got ", types_to_string(in));
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  if (a.back() != b[b.size() - 2])
    return err("inner dims differ: ", a.back().to_string(), " vs ", b[b.size() - 2].to_string(),
               " (operands ", types_to_string(in), ")");
  absl::StatusOr<Shape> batch = broadcast_shapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!batch.ok()) return err("batch dims: ", batch.status().message(), " (operands ", types_to_string(in), ")");
  Shape out = *batch;
  if (!a_vec) out.push_back(a[a.size() - 2]);
  if (!b_vec) out.push_back(b.back());
  return std::vector{TensorType{in[0].dtype, std::move(out)}};
}

// linear(x [..., K], w [N, K], bias [N]?) -> [..., N]
Result infer_linear(Types in, const Attrs&) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  KILN_RETURN_IF_ERROR(require_dtype(in[0], is_float(in[0].dtype), "floating-point operands"));
  const Shape &x = in[0].shape, &w = in[1].shape;
  if (x.empty() || w.size() != 2)
    return err("expected x of rank >= 1 and w of rank 2 ([out, in]), got ", types_to_string(in));
  if (x.back() != w[1])
    return err("x's last dim ", x.back().to_string(), " differs from w's in-features ", w[1].to_string(),
               " (operands ", types_to_string(in), ")");
  if (in.size() == 3 && in[2].shape != Shape{w[0]})
    return err("bias must have shape [", w[0].to_string(), "], got ", in[2].to_string());
  Shape out = x;
  out.back() = w[0];
  return std::vector{TensorType{in[0].dtype, std::move(out)}};
}

// ---- convolution and pooling ----------------------------------------------------

// The output's spatial dims for x's trailing w.rank() dims.
absl::StatusOr<Shape> window_out(const WindowDims& w, const Shape& x) {
  Shape out;
  for (size_t i = 0; i < w.rank(); ++i) {
    KILN_ASSIGN_OR_RETURN(SymExpr o, w.out(i, x[x.size() - w.rank() + i]));
    out.push_back(o);
  }
  return out;
}

// x [N, C, spatial...] and w [a, b, k...] of x's rank and dtype, float; bias [bias_len]?.
absl::Status check_conv_operands(Types in, const SymExpr& bias_len) {
  const TensorType &x = in[0], &w = in[1];
  KILN_RETURN_IF_ERROR(require_dtype(x, is_float(x.dtype), "floating-point operands"));
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  if (x.shape.size() < 3 || x.shape.size() > 5 || w.shape.size() != x.shape.size())
    return err("expected x [N, C, spatial...] with 1 to 3 spatial dims and w of the same rank, got ",
               types_to_string(in));
  if (in.size() == 3 && in[2].shape != Shape{bias_len})
    return err("bias must have shape [", bias_len.to_string(), "], got ", in[2].to_string());
  return absl::OkStatus();
}

// Whether `d` is a multiple of `groups` (symbolic dims must divide exactly).
bool divides(const SymExpr& d, int64_t groups) {
  if (std::optional<int64_t> c = d.constant()) return *c % groups == 0;
  return d.divide_exact(groups).has_value();
}

// conv(x [N, C, s...], w [Cout, C/groups, k...], bias [Cout]?) -> [N, Cout, o...]
Result infer_conv(Types in, const Attrs& a) {
  const TensorType &x = in[0], &w = in[1];
  KILN_RETURN_IF_ERROR(check_conv_operands(in, w.shape.size() > 0 ? w.shape[0] : SymExpr(0)));
  int64_t groups = ConvAttrs(a).groups();
  if (groups < 1) return err("groups must be >= 1, got ", groups);
  if (x.shape[1] != w.shape[1] * groups)
    return err("x has ", x.shape[1].to_string(), " channels but w ", w.to_string(), " with ", groups,
               " groups expects ", (w.shape[1] * groups).to_string());
  if (!divides(w.shape[0], groups))
    return err("output channels ", w.shape[0].to_string(), " do not divide into ", groups, " groups");
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(Op::Conv, a, w.shape));
  KILN_ASSIGN_OR_RETURN(Shape spatial, window_out(wd, x.shape));
  Shape out{x.shape[0], w.shape[0]};
  out.insert(out.end(), spatial.begin(), spatial.end());
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

// conv_transpose(x [N, C, s...], w [C, Cout/groups, k...], bias [Cout]?) -> [N, Cout, o...],
// o = stride*(s-1) + output_padding + dilation*(k-1) + 1 - pads.
Result infer_conv_transpose(Types in, const Attrs& a) {
  const TensorType &x = in[0], &w = in[1];
  ConvTransposeAttrs attrs(a);
  int64_t groups = attrs.groups();
  if (groups < 1) return err("groups must be >= 1, got ", groups);
  SymExpr cout = w.shape.size() > 1 ? w.shape[1] * groups : SymExpr(0);
  KILN_RETURN_IF_ERROR(check_conv_operands(in, cout));
  if (x.shape[1] != w.shape[0])
    return err("x has ", x.shape[1].to_string(), " channels but w ", w.to_string(), " has ", w.shape[0].to_string());
  if (!divides(w.shape[0], groups))
    return err("input channels ", w.shape[0].to_string(), " do not divide into ", groups, " groups");
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(Op::ConvTranspose, a, w.shape));
  std::vector<int64_t> op = attrs.output_padding().value_or(std::vector<int64_t>(wd.rank(), 0));
  if (op.size() != wd.rank()) return err("output_padding has ", op.size(), " entries, expected ", wd.rank());
  Shape out{x.shape[0], cout};
  for (size_t i = 0; i < wd.rank(); ++i) {
    if (op[i] < 0 || (op[i] >= wd.strides[i] && op[i] >= wd.dilations[i]))
      return err("output_padding ", op[i], " must be >= 0 and less than the stride or the dilation");
    SymExpr o = (x.shape[2 + i] - 1) * wd.strides[i] + (op[i] + wd.span(i) - wd.pads_begin[i] - wd.pads_end[i]);
    if (auto c = o.constant(); c && *c < 0) return err("pads ", wd.pads_begin[i], "+", wd.pads_end[i], " exceed the output");
    out.push_back(o);
  }
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

// max_pool / avg_pool(x [N, C, s...]) -> [N, C, o...]
Result infer_pool(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  KILN_RETURN_IF_ERROR(require_dtype(x, is_float(x.dtype), "a floating-point tensor"));
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(Op::MaxPool, a, {}));
  if (x.shape.size() != wd.rank() + 2)
    return err("a pool with a ", wd.rank(), "-D kernel expects x [N, C, ", wd.rank(), " spatial dims], got ", x.to_string());
  KILN_ASSIGN_OR_RETURN(Shape spatial, window_out(wd, x.shape));
  Shape out{x.shape[0], x.shape[1]};
  out.insert(out.end(), spatial.begin(), spatial.end());
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

// window(x [lead..., s...]) -> [lead..., k..., o...]
Result infer_window(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  KILN_ASSIGN_OR_RETURN(WindowDims wd, window_dims(Op::Window, a, {}));
  if (x.shape.size() < wd.rank()) return err("a ", wd.rank(), "-D window needs a tensor of rank >= ", wd.rank(), ", got ", x.to_string());
  double pad = WindowAttrs(a).pad_value();
  if (!is_float(x.dtype) && (pad != std::floor(pad) || (x.dtype == DType::boolean && pad != 0 && pad != 1)))
    return err("pad_value ", pad, " is not a valid ", dtype_name(x.dtype));
  KILN_ASSIGN_OR_RETURN(Shape spatial, window_out(wd, x.shape));
  Shape out(x.shape.begin(), x.shape.end() - wd.rank());
  out.insert(out.end(), wd.kernel.begin(), wd.kernel.end());
  out.insert(out.end(), spatial.begin(), spatial.end());
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

// ---- shape and data movement --------------------------------------------------

Result infer_reshape(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  Shape out = ReshapeAttrs(a).shape();
  int infer_at = -1;
  SymExpr known(1);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == SymExpr(-1)) {
      if (infer_at >= 0) return err("shape has more than one -1: ", shape_to_string(out));
      infer_at = static_cast<int>(i);
      continue;
    }
    if (auto c = out[i].constant(); c && *c < 0) return err("negative dim in shape ", shape_to_string(out));
    known = known * out[i];
  }
  SymExpr numel = shape_numel(x.shape);
  if (numel.overflowed() || known.overflowed())
    return err("the element count of ", numel.overflowed() ? x.to_string() : shape_to_string(out), " overflows int64");
  if (infer_at >= 0) {
    std::optional<SymExpr> q = known == SymExpr(0) ? std::nullopt : numel.divide_exact(known);
    if (!q) return err("cannot infer -1: ", numel.to_string(), " elements do not divide into ",
                       shape_to_string(out), " (input ", x.to_string(), ")");
    out[infer_at] = *q;
  } else if (shape_numel(out) != numel) {
    return err("cannot reshape ", x.to_string(), " (", numel.to_string(), " elements) to ",
               shape_to_string(out), " (", shape_numel(out).to_string(), " elements)");
  }
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

Result infer_permute(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  const std::vector<int64_t>& dims = PermuteAttrs(a).dims();
  if (dims.size() != x.shape.size())
    return err("dims must list all ", x.shape.size(), " axes of ", x.to_string());
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> d, normalize_axes(dims, x.shape.size()));
  Shape out;
  for (int64_t i : d) out.push_back(x.shape[i]);
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

Result infer_expand(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  Shape target = ExpandAttrs(a).shape();
  if (target.size() < x.shape.size())
    return err("cannot expand ", x.to_string(), " to fewer dims ", shape_to_string(target));
  size_t off = target.size() - x.shape.size();
  for (size_t i = 0; i < target.size(); ++i) {
    if (target[i] == SymExpr(-1)) {
      if (i < off) return err("-1 in expand's shape needs an existing dim at position ", i);
      target[i] = x.shape[i - off];
      continue;
    }
    if (i >= off && x.shape[i - off] != target[i] && x.shape[i - off] != SymExpr(1))
      return err("cannot expand dim ", i - off, " of ", x.to_string(), " to ", target[i].to_string(),
                 " (only size-1 dims expand)");
  }
  return std::vector{TensorType{x.dtype, std::move(target)}};
}

Result infer_squeeze(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  std::vector<int64_t> axes;
  if (std::optional<std::vector<int64_t>> given = SqueezeAttrs(a).axes()) {
    KILN_ASSIGN_OR_RETURN(axes, normalize_axes(*given, x.shape.size()));
    for (int64_t i : axes)
      if (x.shape[i] != SymExpr(1))
        return err("cannot squeeze axis ", i, " of ", x.to_string(), ": its size is not 1");
  } else {
    for (size_t i = 0; i < x.shape.size(); ++i)
      if (x.shape[i] == SymExpr(1)) axes.push_back(i);
  }
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i)
    if (std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) == axes.end()) out.push_back(x.shape[i]);
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

// Axes name positions in the output, as in ONNX.
Result infer_unsqueeze(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  const std::vector<int64_t>& axes = UnsqueezeAttrs(a).axes();
  int64_t rank = x.shape.size() + axes.size();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(axes, rank));
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) {
    if (std::find(ax.begin(), ax.end(), i) != ax.end()) out.push_back(1);
    else out.push_back(x.shape[next++]);
  }
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

Result infer_slice(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  SliceAttrs attrs(a);
  int64_t axis = attrs.axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), x.shape.size()));
  const Dim& d = x.shape[ax[0]];
  if (absl::Status s = slice_step_ok(d, attrs.start(), attrs.end(), attrs.step()); !s.ok()) return err(s.message());
  Shape out = x.shape;
  out[ax[0]] = slice_bounds(d, attrs.start(), attrs.end(), attrs.step()).length;
  return std::vector{TensorType{x.dtype, std::move(out)}};
}

Result infer_concat(Types in, const Attrs& a) {
  KILN_RETURN_IF_ERROR(same_dtypes(in));
  const Shape& first = in[0].shape;
  int64_t axis = ConcatAttrs(a).axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), first.size()));
  Shape out = first;
  for (const TensorType& t : in.subspan(1)) {
    if (t.shape.size() != first.size()) return err("operands differ in rank: ", types_to_string(in));
    for (size_t i = 0; i < first.size(); ++i) {
      if (static_cast<int64_t>(i) == ax[0]) continue;
      if (t.shape[i] != first[i]) return err("operands differ outside axis ", ax[0], ": ", types_to_string(in));
    }
    out[ax[0]] = out[ax[0]] + t.shape[ax[0]];
  }
  return std::vector{TensorType{in[0].dtype, std::move(out)}};
}

Result infer_split(Types in, const Attrs& a) {
  const TensorType& x = in[0];
  int64_t axis = SplitAttrs(a).axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), x.shape.size()));
  const std::vector<SymExpr>& sizes = SplitAttrs(a).sizes();
  if (sizes.empty()) return err("sizes must not be empty");
  SymExpr total(0);
  for (const SymExpr& s : sizes) {
    if (auto c = s.constant(); c && *c < 0) return err("negative size in sizes");
    total = total + s;
  }
  if (total != x.shape[ax[0]])
    return err("sizes add up to ", total.to_string(), ", but axis ", ax[0], " of ", x.to_string(),
               " has ", x.shape[ax[0]].to_string());
  std::vector<TensorType> out;
  for (const SymExpr& s : sizes) {
    TensorType t = x;
    t.shape[ax[0]] = s;
    out.push_back(std::move(t));
  }
  return out;
}

// data[..., N, ...] gathered along `axis` by integer indices of any shape.
Result infer_gather(Types in, const Attrs& a) {
  const TensorType &data = in[0], &idx = in[1];
  if (idx.dtype != DType::i32 && idx.dtype != DType::i64) return err("indices must be i32 or i64, got ", idx.to_string());
  int64_t axis = GatherAttrs(a).axis();
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> ax, normalize_axes(std::span(&axis, 1), data.shape.size()));
  Shape out(data.shape.begin(), data.shape.begin() + ax[0]);
  out.insert(out.end(), idx.shape.begin(), idx.shape.end());
  out.insert(out.end(), data.shape.begin() + ax[0] + 1, data.shape.end());
  return std::vector{TensorType{data.dtype, std::move(out)}};
}

// ---- the registry -------------------------------------------------------------

// The schema of attribute set `Set`: its KILN_ATTR lines, in order.
template <typename Set>
std::vector<AttrSpec> attr_specs() {
  enum Presence { Required, Optional, Default };
  std::vector<AttrSpec> specs;
#define KILN_ATTR(set, name, type, presence, ...)                        \
  if constexpr (std::is_same_v<Set, attr_set::set>)                       \
    specs.push_back(AttrSpec{#name, AttrType::type, presence == Required, \
                             __VA_OPT__(AttrValue(attr_cpp_t<AttrType::type>{__VA_ARGS__}))});
#include "ir/ops.def"
  return specs;
}

std::vector<OpInfo> build_registry() {
  std::vector<OpInfo> ops;
#define KILN_OP(id, name, kind, lo, hi, set, fn) \
  ops.push_back(OpInfo{Op::id, name, OpKind::kind, lo, hi, attr_specs<attr_set::set>(), fn});
#include "ir/ops.def"
  return ops;
}

const std::vector<OpInfo>& registry() {
  static const std::vector<OpInfo> r = build_registry();
  return r;
}

}  // namespace

std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Elementwise: return "elementwise";
    case OpKind::Broadcast: return "broadcast";
    case OpKind::Reduction: return "reduction";
    case OpKind::View: return "view";
    case OpKind::Gemm: return "gemm";
    case OpKind::Composite: return "composite";
    case OpKind::Opaque: return "opaque";
  }
  return "?";
}

std::string TensorType::to_string() const {
  return str_cat(dtype_name(dtype), shape_to_string(shape));
}

const AttrSpec* OpInfo::find_attr(std::string_view n) const {
  for (const AttrSpec& s : attrs)
    if (s.name == n) return &s;
  return nullptr;
}

const OpInfo& op_info(Op op) { return registry()[static_cast<size_t>(op)]; }
std::string_view op_name(Op op) { return op_info(op).name; }
std::span<const OpInfo> all_ops() { return registry(); }

std::optional<Op> find_op(std::string_view name) {
  for (const OpInfo& info : registry())
    if (info.name == name) return info.op;
  return std::nullopt;
}

absl::Status check_attrs(Op op, Attrs& attrs) {
  const OpInfo& info = op_info(op);
  for (const auto& [name, value] : attrs) {
    const AttrSpec* spec = info.find_attr(name);
    if (!spec) {
      std::string known = str_join(info.attrs, ", ", [](const AttrSpec& s) { return s.name; });
      return err(info.name, " has no attribute '", name, "'",
                 known.empty() ? std::string(" (it takes none)") : str_cat(" (expected one of: ", known, ")"));
    }
    absl::StatusOr<AttrValue> v = coerce_attr(value, spec->type);
    if (!v.ok()) return err("attribute ", name, ": ", v.status().message());
    attrs.set(name, *std::move(v));
  }
  for (const AttrSpec& s : info.attrs)
    if (s.required && !attrs.find(s.name))
      return err(info.name, " needs attribute '", s.name, "' (", attr_type_name(s.type), ")");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TensorType>> infer_types(Op op, std::span<const TensorType> in, Attrs& attrs) {
  const OpInfo& info = op_info(op);
  int n = static_cast<int>(in.size());
  if (n < info.min_operands || (info.max_operands >= 0 && n > info.max_operands)) {
    std::string want = info.max_operands < 0 ? str_cat("at least ", info.min_operands)
                       : info.min_operands == info.max_operands
                           ? str_cat(info.min_operands)
                           : str_cat(info.min_operands, " to ", info.max_operands);
    return err(info.name, " takes ", want, " operand", want == "1" ? "" : "s", ", got ", n);
  }
  KILN_RETURN_IF_ERROR(check_attrs(op, attrs));
  return info.infer(in, attrs);
}

absl::StatusOr<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const Dim* da = i < n - a.size() ? nullptr : &a[i - (n - a.size())];
    const Dim* db = i < n - b.size() ? nullptr : &b[i - (n - b.size())];
    if (!da) out[i] = *db;
    else if (!db) out[i] = *da;
    else if (*da == *db || *db == SymExpr(1)) out[i] = *da;
    else if (*da == SymExpr(1)) out[i] = *db;
    else
      return err("cannot broadcast ", shape_to_string(a), " with ", shape_to_string(b), ": dim ",
                 da->to_string(), " vs ", db->to_string());
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> normalize_axes(std::span<const int64_t> axes, int64_t rank) {
  std::vector<int64_t> out;
  for (int64_t a : axes) {
    int64_t n = a < 0 ? a + rank : a;
    if (n < 0 || n >= rank) return err("axis ", a, " is out of range for rank ", rank);
    if (std::find(out.begin(), out.end(), n) != out.end()) return err("axis ", a, " is repeated");
    out.push_back(n);
  }
  return out;
}

}  // namespace kiln
