#include "frontends/trace/trace.h"

#include <string_view>

#include "ir/extern_op.h"
#include "ir/str.h"
#include "ir/verifier.h"

namespace kiln::trace {
namespace {

// "mlp.cc:12": the file's base name keeps node locations short and machine-independent.
std::string format_loc(const Loc& loc) {
  std::string_view file = loc.file_name();
  if (size_t slash = file.rfind('/'); slash != std::string_view::npos) file.remove_prefix(slash + 1);
  return str_cat(file, ":", loc.line());
}

[[noreturn]] void fail(const Loc& loc, std::string_view what, std::string_view message) {
  throw TraceError(str_cat(format_loc(loc), ": ", what, ": ", message));
}

std::string describe_operand(const Operand& o) {
  if (const Tensor* t = std::get_if<Tensor>(&o.v))
    return t->defined() ? t->type().to_string() : std::string("<empty tensor>");
  return std::visit([](auto x) { return attr_to_string(AttrValue(x)); }, std::get<Scalar>(o.v).value);
}

// "linear(bf16[B, 4096], bf16[11008, 4095])", with attributes after the operands.
std::string describe_call(Op op, const std::vector<Operand>& operands, const Attrs& attrs) {
  std::string s = str_cat(op_name(op), "(", str_join(operands, ", ", describe_operand));
  for (const auto& [name, value] : attrs)
    s += str_cat(operands.empty() ? "" : ", ", name, "=", attr_to_string(value));
  return s + ")";
}

AttrValue scalar_attr(const Scalar& s, DType dtype) {
  // An integer literal meeting a float tensor is a float constant (x * 2 on bf16 x).
  if (is_float(dtype))
    if (const int64_t* i = std::get_if<int64_t>(&s.value)) return static_cast<double>(*i);
  return std::visit([](auto x) { return AttrValue(x); }, s.value);
}

Tracer* tracer_of(const std::vector<Operand>& operands, Op op, const Loc& loc) {
  Tracer* tracer = nullptr;
  for (const Operand& o : operands) {
    const Tensor* t = std::get_if<Tensor>(&o.v);
    if (!t) continue;
    if (!t->defined())
      fail(loc, describe_call(op, operands, {}), "an operand is an empty Tensor (default-constructed)");
    if (tracer && t->tracer() != tracer)
      fail(loc, describe_call(op, operands, {}),
           str_cat("operands come from different tracers ('", tracer->graph().name(), "' and '",
                   t->tracer()->graph().name(), "')"));
    tracer = t->tracer();
  }
  if (!tracer) fail(loc, describe_call(op, operands, {}), "needs at least one tensor operand");
  return tracer;
}

Tensor one(Op op, const std::vector<Operand>& operands, Attrs attrs, const Loc& loc, int like = -1) {
  return record(op, operands, std::move(attrs), loc, like).front();
}

Attrs axes_attrs(const std::optional<Axes>& axes, bool keepdim) {
  Attrs a;
  if (axes) a.set("axes", *axes);
  a.set("keepdim", keepdim);
  return a;
}

}  // namespace

Dim Tensor::dim(int64_t axis, Loc loc) const {
  if (!defined()) fail(loc, "dim", "the Tensor is empty (default-constructed)");
  int64_t i = axis < 0 ? axis + rank() : axis;
  if (i < 0 || i >= rank())
    fail(loc, "dim", str_cat("axis ", axis, " is out of range for ", type().to_string()));
  return shape()[i];
}

Tracer::Tracer(std::string graph_name) : graph_(std::move(graph_name)) {}

void Tracer::check_open(Loc loc, std::string_view what) const {
  if (finished_)
    fail(loc, what, str_cat("tracer '", graph_.name(), "' has already finished its graph"));
}

Tensor Tracer::input(const std::string& name, DType dtype, Dims shape, Loc loc) {
  check_open(loc, "input");
  absl::StatusOr<Value*> v = graph_.add_input(name, TensorType{dtype, shape.shape()});
  if (!v.ok()) fail(loc, "input", status_message(v.status()));
  return Tensor(this, *v);
}

Tensor Tracer::state(const std::string& name, DType dtype, Dims shape, Loc loc) {
  check_open(loc, "state");
  absl::StatusOr<Value*> v = graph_.add_input(name, TensorType{dtype, shape.shape()}, true);
  if (!v.ok()) fail(loc, "state", status_message(v.status()));
  return Tensor(this, *v);
}

Tensor Tracer::param(const std::string& name, DType dtype, Dims shape, Loc loc) {
  check_open(loc, "param");
  absl::StatusOr<Value*> v = graph_.add_param(name, TensorType{dtype, shape.shape()});
  if (!v.ok()) fail(loc, "param", status_message(v.status()));
  return Tensor(this, *v);
}

Tensor Tracer::param(const std::string& name, std::shared_ptr<const HostTensor> data, Loc loc) {
  check_open(loc, "param");
  if (!data) fail(loc, "param", str_cat("no data given for parameter '", name, "'"));
  Shape shape(data->shape().begin(), data->shape().end());
  absl::StatusOr<Value*> v = graph_.add_param(name, TensorType{data->dtype(), shape}, data);
  if (!v.ok()) fail(loc, "param", status_message(v.status()));
  return Tensor(this, *v);
}

Tensor Tracer::param(const std::string& name, HostTensor data, Loc loc) {
  return param(name, std::make_shared<const HostTensor>(std::move(data)), loc);
}

Tensor Tracer::constant(Scalar value, DType dtype, Loc loc) {
  return record(Op::Constant, {}, {{"value", scalar_attr(value, dtype)}, {"dtype", dtype}}, loc).front();
}

Tensor Tracer::iota(Dims shape, int64_t axis, DType dtype, Loc loc) {
  return record(Op::Iota, {}, {{"shape", shape.shape()}, {"axis", axis}, {"dtype", dtype}}, loc).front();
}

void Tracer::set_symbol_bounds(const std::string& symbol, int64_t min, std::optional<int64_t> max,
                               Loc loc) {
  check_open(loc, "set_symbol_bounds");
  if (auto s = graph_.set_symbol_bounds(symbol, SymbolInfo{min, max}); !s.ok())
    fail(loc, "set_symbol_bounds", status_message(s));
}

Tensor Tracer::name(const Tensor& x, const std::string& name, Loc loc) {
  check_open(loc, "name");
  if (!x.defined() || x.tracer() != this)
    fail(loc, "name", str_cat("the tensor does not belong to tracer '", graph_.name(), "'"));
  if (x.name() == name) return x;
  if (!x.value()->producer())
    fail(loc, "name", str_cat("%", x.name(), " is an argument; name inputs and params where they are declared"));
  if (auto s = graph_.rename(x.value(), name); !s.ok()) fail(loc, "name", status_message(s));
  return x;
}

void Tracer::output(const Tensor& x, const std::string& name, Loc loc) {
  check_open(loc, "output");
  if (!x.defined() || x.tracer() != this)
    fail(loc, "output", str_cat("the tensor does not belong to tracer '", graph_.name(), "'"));
  if (!name.empty()) this->name(x, name, loc);
  std::vector<Value*> outs = graph_.outputs();
  outs.push_back(x.value());
  graph_.set_outputs(std::move(outs));
}

Graph Tracer::finish(Loc loc) {
  check_open(loc, "finish");
  if (graph_.outputs().empty())
    fail(loc, "finish", str_cat("graph '", graph_.name(), "' has no outputs; call output() first"));
  if (auto s = verify(graph_); !s.ok()) fail(loc, "finish", status_message(s));
  finished_ = true;
  return std::move(graph_);
}

std::vector<Tensor> Tracer::record(Op op, const std::vector<Operand>& operands, Attrs attrs, Loc loc,
                                   int like) {
  check_open(loc, op_name(op));
  std::string where = format_loc(loc);
  // Scalars become constants of the dtype of the tensor they meet.
  DType like_dtype = DType::f32;
  if (like >= 0) {
    if (const Tensor* t = std::get_if<Tensor>(&operands[like].v)) like_dtype = t->dtype();
  } else {
    for (const Operand& o : operands)
      if (const Tensor* t = std::get_if<Tensor>(&o.v)) {
        like_dtype = t->dtype();
        break;
      }
  }
  std::vector<Value*> values;
  std::vector<Node*> constants;
  auto drop_constants = [&] {
    for (auto it = constants.rbegin(); it != constants.rend(); ++it) graph_.erase(*it);
  };
  for (const Operand& o : operands) {
    if (const Tensor* t = std::get_if<Tensor>(&o.v)) {
      values.push_back(t->value());
      continue;
    }
    Attrs c{{"value", scalar_attr(std::get<Scalar>(o.v), like_dtype)}, {"dtype", like_dtype}};
    absl::StatusOr<Node*> n = graph_.add_node(Op::Constant, {}, std::move(c), {}, where);
    if (!n.ok()) {
      drop_constants();
      fail(loc, describe_call(op, operands, attrs), status_message(n.status()));
    }
    constants.push_back(*n);
    values.push_back((*n)->result());
  }
  absl::StatusOr<Node*> n = graph_.add_node(op, values, attrs, {}, where);
  if (!n.ok()) {
    drop_constants();
    // Re-derive the bare rule violation so the message reads call first, then reason.
    std::vector<TensorType> types;
    for (const Value* v : values) types.push_back(v->type());
    Attrs check = attrs;
    absl::StatusOr<std::vector<TensorType>> r = infer_types(op, types, check);
    if (r.ok()) throw TraceError(status_message(n.status()));
    fail(loc, describe_call(op, operands, attrs), status_message(r.status()));
  }
  std::vector<Tensor> out;
  for (Value* v : (*n)->results()) out.push_back(Tensor(this, v));
  return out;
}

std::vector<Tensor> record(Op op, const std::vector<Operand>& operands, Attrs attrs, Loc loc, int like) {
  return tracer_of(operands, op, loc)->record(op, operands, std::move(attrs), loc, like);
}

// ---- elementwise ------------------------------------------------------------------------
#define KILN_TRACE_UNARY(fn, id) \
  Tensor fn(const Tensor& x, Loc loc) { return one(Op::id, {x}, {}, loc); }
KILN_TRACE_UNARY(neg, Neg)
KILN_TRACE_UNARY(abs, Abs)
KILN_TRACE_UNARY(exp, Exp)
KILN_TRACE_UNARY(log, Log)
KILN_TRACE_UNARY(sqrt, Sqrt)
KILN_TRACE_UNARY(rsqrt, Rsqrt)
KILN_TRACE_UNARY(sin, Sin)
KILN_TRACE_UNARY(cos, Cos)
KILN_TRACE_UNARY(tanh, Tanh)
KILN_TRACE_UNARY(sigmoid, Sigmoid)
KILN_TRACE_UNARY(relu, Relu)
KILN_TRACE_UNARY(silu, Silu)
KILN_TRACE_UNARY(erf, Erf)
KILN_TRACE_UNARY(atan, Atan)
KILN_TRACE_UNARY(reciprocal, Reciprocal)
KILN_TRACE_UNARY(floor, Floor)
KILN_TRACE_UNARY(ceil, Ceil)
KILN_TRACE_UNARY(logical_not, Not)
#undef KILN_TRACE_UNARY

Tensor gelu(const Tensor& x, const std::string& approximate, Loc loc) {
  return one(Op::Gelu, {x}, {{"approximate", approximate}}, loc);
}

Tensor cast(const Tensor& x, DType dtype, Loc loc) { return one(Op::Cast, {x}, {{"dtype", dtype}}, loc); }

#define KILN_TRACE_BINARY(fn, id) \
  Tensor fn(const Operand& a, const Operand& b, Loc loc) { return one(Op::id, {a, b}, {}, loc); }
KILN_TRACE_BINARY(add, Add)
KILN_TRACE_BINARY(sub, Sub)
KILN_TRACE_BINARY(mul, Mul)
KILN_TRACE_BINARY(div, Div)
KILN_TRACE_BINARY(pow, Pow)
KILN_TRACE_BINARY(fmod, Fmod)
KILN_TRACE_BINARY(maximum, Maximum)
KILN_TRACE_BINARY(minimum, Minimum)
KILN_TRACE_BINARY(eq, Eq)
KILN_TRACE_BINARY(ne, Ne)
KILN_TRACE_BINARY(lt, Lt)
KILN_TRACE_BINARY(le, Le)
KILN_TRACE_BINARY(gt, Gt)
KILN_TRACE_BINARY(ge, Ge)
KILN_TRACE_BINARY(logical_and, And)
KILN_TRACE_BINARY(logical_or, Or)
#undef KILN_TRACE_BINARY

Tensor where(const Tensor& cond, const Operand& a, const Operand& b, Loc loc) {
  int like = std::holds_alternative<Tensor>(a.v) ? 1 : 2;
  return one(Op::Where, {cond, a, b}, {}, loc, like);
}

// ---- reductions -------------------------------------------------------------------------
#define KILN_TRACE_REDUCE(fn, id)                                                  \
  Tensor fn(const Tensor& x, std::optional<Axes> axes, bool keepdim, Loc loc) {    \
    return one(Op::id, {x}, axes_attrs(axes, keepdim), loc);                       \
  }
KILN_TRACE_REDUCE(sum, Sum)
KILN_TRACE_REDUCE(mean, Mean)
KILN_TRACE_REDUCE(max, Max)
KILN_TRACE_REDUCE(min, Min)
KILN_TRACE_REDUCE(prod, Prod)
#undef KILN_TRACE_REDUCE

Tensor argmax(const Tensor& x, int64_t axis, bool keepdim, Loc loc) {
  return one(Op::ArgMax, {x}, {{"axis", axis}, {"keepdim", keepdim}}, loc);
}

// ---- composites -------------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t axis, Loc loc) { return one(Op::Softmax, {x}, {{"axis", axis}}, loc); }

Tensor log_softmax(const Tensor& x, int64_t axis, Loc loc) {
  return one(Op::LogSoftmax, {x}, {{"axis", axis}}, loc);
}

Tensor layer_norm(const Tensor& x, std::optional<Tensor> weight, std::optional<Tensor> bias, Axes axes,
                  double eps, Loc loc) {
  if (bias && !weight)
    fail(loc, "layer_norm", "a bias needs a weight (the IR's operands are x, weight?, bias?)");
  std::vector<Operand> operands{x};
  if (weight) operands.push_back(*weight);
  if (bias) operands.push_back(*bias);
  return one(Op::LayerNorm, operands, {{"axes", axes}, {"eps", eps}}, loc);
}

Tensor rms_norm(const Tensor& x, std::optional<Tensor> weight, Axes axes, double eps, Loc loc) {
  std::vector<Operand> operands{x};
  if (weight) operands.push_back(*weight);
  return one(Op::RmsNorm, operands, {{"axes", axes}, {"eps", eps}}, loc);
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    std::optional<Tensor> mask, bool causal, std::optional<double> scale,
                                    Loc loc) {
  std::vector<Operand> operands{q, k, v};
  if (mask) operands.push_back(*mask);
  Attrs attrs{{"causal", causal}};
  if (scale) attrs.set("scale", *scale);
  return one(Op::Sdpa, operands, std::move(attrs), loc);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts, Loc loc) {
  std::vector<Operand> operands{q, k, v};
  for (const std::optional<Tensor>* t : {&opts.mask, &opts.kv_lens, &opts.block_table})
    if (*t) operands.push_back(**t);
  Attrs attrs{{"causal", opts.causal}, {"window", opts.window}, {"softcap", opts.softcap}};
  if (opts.scale) attrs.set("scale", *opts.scale);
  return one(Op::Attention, operands, std::move(attrs), loc);
}

Tensor cache_write(const Tensor& cache, const Tensor& x, const Tensor& positions, std::optional<Tensor> block_table,
                   Loc loc) {
  std::vector<Operand> operands{cache, x, positions};
  if (block_table) operands.push_back(*block_table);
  return one(Op::CacheWrite, operands, {}, loc);
}

Tensor all_reduce(const Tensor& x, int64_t ranks, Loc loc) { return one(Op::AllReduce, {x}, {{"ranks", ranks}}, loc); }

Tensor all_gather(const Tensor& x, int64_t axis, int64_t ranks, Loc loc) {
  return one(Op::AllGather, {x}, {{"axis", axis}, {"ranks", ranks}}, loc);
}

Tensor reduce_scatter(const Tensor& x, int64_t axis, int64_t ranks, Loc loc) {
  return one(Op::ReduceScatter, {x}, {{"axis", axis}, {"ranks", ranks}}, loc);
}

std::vector<Tensor> extern_call(const std::string& name, const std::vector<Tensor>& inputs, Loc loc) {
  std::vector<Operand> operands(inputs.begin(), inputs.end());
  const ExternOp* op = find_extern_op(name);
  std::string what = str_cat("extern_call \"", name, "\"");
  if (!op) fail(loc, what, "no extern op of this name is registered (register_extern_op)");
  std::vector<TensorType> in;
  for (const Tensor& t : inputs) {
    if (!t.defined()) fail(loc, what, "an operand is an empty Tensor (default-constructed)");
    in.push_back(t.type());
  }
  absl::StatusOr<std::vector<TensorType>> out = op->infer(in);
  if (!out.ok()) fail(loc, describe_call(Op::ExternCall, operands, {{"name", name}}), status_message(out.status()));
  return record(Op::ExternCall, operands, {{"name", name}, {"results", extern_results_text(*out)}}, loc);
}

// ---- linear algebra ---------------------------------------------------------------------
Tensor matmul(const Tensor& a, const Tensor& b, Loc loc) { return one(Op::MatMul, {a, b}, {}, loc); }

Tensor linear(const Tensor& x, const Tensor& w, std::optional<Tensor> bias, Loc loc) {
  std::vector<Operand> operands{x, w};
  if (bias) operands.push_back(*bias);
  return one(Op::Linear, operands, {}, loc);
}

// ---- shape and data movement ------------------------------------------------------------
Tensor reshape(const Tensor& x, Dims shape, Loc loc) {
  return one(Op::Reshape, {x}, {{"shape", shape.shape()}}, loc);
}

Tensor permute(const Tensor& x, Axes dims, Loc loc) { return one(Op::Permute, {x}, {{"dims", dims}}, loc); }

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1, Loc loc) {
  if (!x.defined()) fail(loc, "transpose", "the Tensor is empty (default-constructed)");
  int64_t rank = x.rank();
  auto norm = [&](int64_t d) {
    int64_t n = d < 0 ? d + rank : d;
    if (n < 0 || n >= rank)
      fail(loc, str_cat("transpose(", x.type().to_string(), ", ", dim0, ", ", dim1, ")"),
           str_cat("axis ", d, " is out of range for rank ", rank));
    return n;
  };
  int64_t a = norm(dim0), b = norm(dim1);
  Axes dims(rank);
  for (int64_t i = 0; i < rank; ++i) dims[i] = i;
  std::swap(dims[a], dims[b]);
  return permute(x, dims, loc);
}

Tensor expand(const Tensor& x, Dims shape, Loc loc) { return one(Op::Expand, {x}, {{"shape", shape.shape()}}, loc); }

Tensor squeeze(const Tensor& x, std::optional<Axes> axes, Loc loc) {
  Attrs attrs;
  if (axes) attrs.set("axes", *axes);
  return one(Op::Squeeze, {x}, std::move(attrs), loc);
}

Tensor unsqueeze(const Tensor& x, Axes axes, Loc loc) { return one(Op::Unsqueeze, {x}, {{"axes", axes}}, loc); }

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step, Loc loc) {
  Attrs attrs{{"axis", axis}, {"start", start}, {"step", step}};
  if (end != kToEnd) attrs.set("end", end);  // absent means "to the end", like the registry's default
  return one(Op::Slice, {x}, std::move(attrs), loc);
}

// strides, pads, dilations (and output_padding) as attributes, the empty ones left out.
Attrs window_attrs(std::initializer_list<std::pair<const char*, const Axes*>> lists) {
  Attrs a;
  for (auto [name, v] : lists)
    if (!v->empty()) a.set(name, *v);
  return a;
}

Tensor conv(const Tensor& x, const Tensor& w, std::optional<Tensor> bias, Axes strides, Axes pads, Axes dilations,
            int64_t groups, Loc loc) {
  std::vector<Operand> operands{x, w};
  if (bias) operands.push_back(*bias);
  Attrs a = window_attrs({{"strides", &strides}, {"pads", &pads}, {"dilations", &dilations}});
  a.set("groups", groups);
  return one(Op::Conv, operands, std::move(a), loc);
}

Tensor conv_transpose(const Tensor& x, const Tensor& w, std::optional<Tensor> bias, Axes strides, Axes pads,
                      Axes output_padding, int64_t groups, Loc loc) {
  std::vector<Operand> operands{x, w};
  if (bias) operands.push_back(*bias);
  Attrs a = window_attrs({{"strides", &strides}, {"pads", &pads}, {"output_padding", &output_padding}});
  a.set("groups", groups);
  return one(Op::ConvTranspose, operands, std::move(a), loc);
}

Tensor max_pool(const Tensor& x, Axes kernel, Axes strides, Axes pads, bool ceil_mode, Loc loc) {
  Attrs a = window_attrs({{"strides", &strides}, {"pads", &pads}});
  a.set("kernel", kernel);
  a.set("ceil_mode", ceil_mode);
  return one(Op::MaxPool, {x}, std::move(a), loc);
}

Tensor avg_pool(const Tensor& x, Axes kernel, Axes strides, Axes pads, bool ceil_mode, bool count_include_pad, Loc loc) {
  Attrs a = window_attrs({{"strides", &strides}, {"pads", &pads}});
  a.set("kernel", kernel);
  a.set("ceil_mode", ceil_mode);
  a.set("count_include_pad", count_include_pad);
  return one(Op::AvgPool, {x}, std::move(a), loc);
}

Tensor window(const Tensor& x, Axes kernel, Axes strides, Axes pads, double pad_value, Loc loc) {
  Attrs a = window_attrs({{"strides", &strides}, {"pads", &pads}});
  a.set("kernel", kernel);
  a.set("pad_value", pad_value);
  return one(Op::Window, {x}, std::move(a), loc);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis, Loc loc) {
  return one(Op::Concat, std::vector<Operand>(xs.begin(), xs.end()), {{"axis", axis}}, loc);
}

std::vector<Tensor> split(const Tensor& x, Dims sizes, int64_t axis, Loc loc) {
  return record(Op::Split, {x}, {{"axis", axis}, {"sizes", sizes.shape()}}, loc);
}

Tensor gather(const Tensor& x, const Tensor& indices, int64_t axis, Loc loc) {
  return one(Op::Gather, {x, indices}, {{"axis", axis}}, loc);
}

}  // namespace kiln::trace
