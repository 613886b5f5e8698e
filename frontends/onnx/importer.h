// The ONNX importer's state and op handlers, shared by onnx_import.cc (the model, the
// graph's inputs and outputs, operands and results) and onnx_ops.cc (one handler per ONNX
// op type). Internal to frontends/onnx.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "frontends/onnx/onnx_import.h"
#include "ir/graph.h"
#include "ir/status.h"
#include "ir/str.h"
#include "onnx.pb.h"

namespace kiln::onnx_detail {

// Small integer and bool tensors (shapes, axes, indices and conditions of shape
// arithmetic) are tracked by value so that Reshape/Expand/Slice operands computed from
// shapes fold at import time.
constexpr int64_t kMaxKnown = 1024;

// What the importer knows about one ONNX tensor name.
struct Entry {
  TensorType type;
  Value* value = nullptr;                     // the kiln value; made lazily for constants
  std::shared_ptr<const HostTensor> data;     // contents, for initializers and Constants
  std::optional<std::vector<SymExpr>> known;  // contents of a small int/bool tensor, rank <= 1
};

// kiln value and symbol names are identifiers; ONNX names are arbitrary strings.
std::string sanitize(std::string_view s);
// The double with the float's shortest text (1e-05, not 9.999999747378752e-06), so that
// the IR reads as the model was written; it rounds back to the same float.
double tidy(float f);
// The values of a small integer or bool tensor of rank <= 1; nullopt for any other.
std::optional<std::vector<SymExpr>> known_from_data(const HostTensor& t);
inline Shape static_shape(const std::vector<int64_t>& dims) { return Shape(dims.begin(), dims.end()); }

class Importer {
 public:
  // `multiples`: the dim_params to import as multiples of a constant (c*S_divc), as an
  // earlier run of the import asked for.
  Importer(std::string source, const OnnxImportOptions& options, std::map<std::string, int64_t> multiples = {})
      : source_(std::move(source)), options_(options), multiples_(std::move(multiples)) {}
  absl::StatusOr<Graph> run(const onnx::ModelProto& model);
  // After a failed run: the dim_params that, declared multiples of these constants, let the
  // model's shapes agree (a Concat of height // 2 with 2 * (height // 4)); empty if none.
  const std::map<std::string, int64_t>& wanted_multiples() const { return wanted_; }

  // An expression under construction for the ops that decompose into several kiln ops:
  // each operation on it emits one node, and the first error carries through the rest
  // (operators in onnx_ops.cc; a double operand is a constant of the other's dtype).
  struct Ex {
    Importer* im;
    absl::StatusOr<Value*> v;
  };
  Ex apply(Op op, std::vector<Ex> operands, Attrs attrs = {});
  Ex constant_like(const Ex& like, double c);

 private:
  using Handler = absl::Status (Importer::*)();
  using AttrKind = onnx::AttributeProto::AttributeType;
  struct OpSpec {
    Handler handler;
    // The attributes the handler understands, with their types: any other attribute is
    // an error, so that no attribute is silently ignored.
    std::map<std::string, AttrKind, std::less<>> attrs;
  };
  static const std::map<std::string, OpSpec, std::less<>>& op_table();

  // ---- errors, located at the current node --------------------------------------
  std::string where() const {
    if (!node_) return str_cat(source_, ": ");
    std::string who = node_->name().empty() ? str_cat("#", node_index_) : str_cat("'", node_->name(), "'");
    return str_cat(source_, ": node ", who, " (", node_->op_type(), ", opset ", opset_, "): ");
  }
  template <typename... A>
  absl::Status unsupported(const A&... a) const { return absl::UnimplementedError(str_cat(where(), a...)); }
  template <typename... A>
  absl::Status bad(const A&... a) const { return absl::InvalidArgumentError(str_cat(where(), a...)); }
  template <typename... A>
  absl::Status needs_constant(const A&... a) const {
    return absl::FailedPreconditionError(str_cat(where(), a...));
  }

  // Where nodes made for the current ONNX node come from: "model.onnx:name" or "model.onnx:#3".
  std::string loc() const {
    return str_cat(source_, ":", node_->name().empty() ? str_cat("#", node_index_) : node_->name());
  }
  absl::StatusOr<TensorType> value_info_type(const onnx::ValueInfoProto& vi);
  absl::Status import_node();
  absl::StatusOr<Value*> materialize(const std::string& name, Entry& e);

  // ---- operands and results of the current node ---------------------------------
  bool has_input(int i) const { return i < node_->input_size() && !node_->input(i).empty(); }
  absl::StatusOr<Entry*> in(int i);
  absl::StatusOr<Value*> value(int i);
  absl::StatusOr<std::vector<SymExpr>> known(int i, std::string_view what);
  absl::StatusOr<std::vector<int64_t>> known_ints(int i, std::string_view what);
  // An int list given as attribute `name` (older opsets) or as input i (newer ones).
  absl::StatusOr<std::optional<std::vector<int64_t>>> ints_operand(int i, std::string_view name);
  absl::StatusOr<Node*> emit_node(Op op, std::vector<Value*> operands, Attrs attrs = {});
  absl::StatusOr<Value*> emit(Op op, std::vector<Value*> operands, Attrs attrs = {});
  // A constant of dtype t: a float, a bool (v != 0) or an integer (v truncated; an error
  // where v is NaN or beyond int64).
  absl::StatusOr<Value*> scalar(double v, DType t) {
    Attrs attrs{{"dtype", t}};
    if (is_float(t)) attrs.set("value", v);
    else if (t == DType::boolean) attrs.set("value", v != 0);
    else if (!(v >= -0x1p63 && v < 0x1p63)) return bad("the constant ", v, " does not fit ", dtype_name(t));
    else attrs.set("value", static_cast<int64_t>(v));
    return emit(Op::Constant, {}, std::move(attrs));
  }
  absl::Status define(int i, Value* v);
  absl::Status define(int i, const Ex& e) { return e.v.ok() ? define(i, *e.v) : e.v.status(); }
  absl::Status define_entry(int i, Entry e);
  absl::Status define_known(int i, DType t, std::vector<SymExpr> vals, Shape shape) {
    return define_entry(i, Entry{TensorType{t, std::move(shape)}, nullptr, nullptr, std::move(vals)});
  }
  absl::Status define_data(int i, HostTensor t);

  const onnx::AttributeProto* attr(std::string_view name) const {
    for (const onnx::AttributeProto& a : node_->attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t attr_int(std::string_view name, int64_t def) const {
    const onnx::AttributeProto* a = attr(name);
    return a ? a->i() : def;
  }
  double attr_float(std::string_view name, double def) const {
    const onnx::AttributeProto* a = attr(name);
    return a ? tidy(a->f()) : def;
  }
  std::optional<std::vector<int64_t>> attr_ints(std::string_view name) const {
    const onnx::AttributeProto* a = attr(name);
    if (!a) return std::nullopt;
    return std::vector<int64_t>(a->ints().begin(), a->ints().end());
  }
  std::string attr_string(std::string_view name, std::string def) const {
    const onnx::AttributeProto* a = attr(name);
    return a ? a->s() : def;
  }
  absl::StatusOr<int64_t> axis_in(std::string_view what, int64_t axis, int64_t rank) const {
    if (axis < -rank || axis >= rank) return bad(what, " ", axis, " is out of range for rank ", rank);
    return axis < 0 ? axis + rank : axis;
  }

  // ---- op handlers ----------------------------------------------------------------
  absl::Status unary();
  absl::Status binary();
  absl::Status variadic();
  absl::Status pow();
  absl::Status gelu();
  absl::Status cast();
  absl::Status where_op();
  absl::Status matmul();
  absl::Status gemm();
  absl::Status reshape();
  absl::Status transpose();
  absl::Status squeeze();
  absl::Status unsqueeze();
  absl::Status flatten();
  absl::Status expand();
  absl::Status slice();
  absl::StatusOr<std::pair<SymExpr, SymExpr>> in_dim_bounds(const Dim& d, SymExpr s, SymExpr e, int64_t step);
  SymRange symbol_value_range(const SymExpr& e) const;
  // Narrows one symbol's bounds so that e >= 0 holds, or says why it cannot.
  absl::Status assume_nonnegative(const SymExpr& e, std::string_view what);
  absl::Status concat();
  absl::Status split();
  absl::Status gather();
  absl::Status reduce();
  absl::Status argmax();
  absl::Status softmax();
  absl::Status layer_norm();
  absl::Status identity();
  absl::Status constant();
  absl::Status shape();
  absl::Status size();
  absl::Status constant_of_shape();
  absl::Status clip();
  absl::Status activation();
  absl::Status is_nan_inf();
  absl::Status sign();
  absl::Status global_pool();
  absl::Status dropout();
  absl::Status trilu();
  absl::Status range();
  absl::Status tile();
  absl::Status depth_space();
  absl::Status batch_norm();
  absl::Status instance_norm();
  absl::Status mean_variance_norm();
  absl::Status hardmax();
  absl::Status round();
  absl::Status mod();
  absl::Status eye_like();
  absl::Status conv();
  // Conv or ConvTranspose (by the node's type) of x and w, bias optional, with the node's
  // attributes.
  absl::StatusOr<Value*> conv_of(Value* x, Value* w, Value* bias);
  absl::Status pool();
  absl::Status pad();
  absl::Status resize();
  absl::StatusOr<double> resize_coordinate(const std::string& ctm, double o, double n, double s, double len);
  absl::StatusOr<std::vector<std::pair<int64_t, double>>> resize_taps(double x);
  Ex shift_clamped(Ex x, int64_t axis, int64_t d);
  Ex resize_by_phases(Ex y, int64_t axis, int64_t k, const std::string& ctm);
  absl::Status group_norm();
  absl::Status cumsum();
  absl::Status top_k();
  absl::Status einsum();
  // Conv, ConvTranspose and pool attributes as kiln's: strides, dilations and pads
  // ([begin..., end...]) with auto_pad resolved against x's spatial dims `in` (for
  // ConvTranspose, against output_shape or in*stride; output_shape beyond the pads' reach
  // becomes output_padding).
  struct WindowAttrs {
    std::vector<int64_t> strides, dilations, pads, output_padding;
  };
  absl::StatusOr<WindowAttrs> window_attrs(const Shape& in, const std::vector<int64_t>& kernel);
  // losses, gathers and scatters, inverse trigonometric and hyperbolic functions
  absl::Status nll_loss_op();
  absl::Status softmax_cross_entropy();
  absl::Status gather_elements();
  absl::Status scatter_elements();
  absl::Status gather_nd();
  absl::Status hyperbolic();
  absl::Status arc_trig();
  // bit shifts and quantization (onnx_quant.cc)
  absl::Status bit_shift();
  absl::Status quantize_linear();
  absl::Status dequantize_linear();
  absl::Status dynamic_quantize_linear();
  absl::Status integer_product();  // MatMulInteger, ConvInteger
  absl::Status qlinear_product();  // QLinearMatMul, QLinearConv
  // Input x (an integer tensor) minus input zp (when given), in f64; a 1-D zero point is
  // reshaped per_channel to rank zp_rank (per row or output channel) unless zp_rank is 0.
  absl::StatusOr<Value*> centered_f64(int x, int zp, int64_t zp_rank);
  absl::StatusOr<std::function<Ex(Value*)>> per_axis(Value* x, Value* scale);
  // MatMul or Conv (by the node's type) of the f64 operands a and b, bias optional.
  absl::StatusOr<Value*> integer_product_of(Value* a, Value* b, Value* bias);

  // recurrent networks, LRN, ReverseSequence, integer Pow (issue 16)
  absl::Status recurrent();
  Ex rnn_activation(const Ex& x, const std::string& f, std::optional<double> alpha, std::optional<double> beta);
  Ex reverse_within(const Ex& x, const Ex& lens, int64_t time, int64_t batch_axis);
  absl::Status reverse_sequence();
  absl::Status lrn();
  absl::Status integer_pow(Value* base, Value* exponent);
  // DFT and STFT (issue 16)
  std::pair<Ex, Ex> dft_last(Ex re, std::optional<Ex> im, int64_t n, int64_t len, bool inverse, bool onesided);
  std::pair<Ex, std::optional<Ex>> complex_parts(Value* x);
  Ex stack_complex(const Ex& re, const Ex& im);
  absl::Status dft();
  absl::Status stft();
  absl::Status grid_sample();
  absl::Status scatter_nd();
  absl::Status det();
  absl::Status max_unpool();
  absl::Status max_pool_indices(Value* x, const std::vector<int64_t>& kernel, const WindowAttrs& wa);

  Ex ex(Value* v) { return {this, v}; }
  // softmax, log_softmax and hardmax along `axis`; before opset 13 they see the input
  // flattened to 2-D at `axis` and work along its rows.
  absl::Status along_axis(const std::function<Ex(Ex, int64_t)>& f);
  // [C] -> [C, 1, ..., 1], to broadcast a per-channel vector over x [N, C, ...].
  Ex per_channel(Value* v, int64_t rank);
  // NegativeLogLikelihoodLoss of log-probabilities x against the node's inputs
  // target_input and (optional) weight_input, reduced as the node's attributes say.
  Ex nll_loss(Value* x, int target_input, int weight_input);
  Ex index_hits(Value* indices, int64_t axis, const Dim& n);

  std::string source_;
  const OnnxImportOptions& options_;
  Graph g_;
  int64_t opset_ = 0;
  const onnx::NodeProto* node_ = nullptr;
  int node_index_ = 0;
  std::map<std::string, Entry> env_;  // node-based: Entry pointers stay valid
  std::set<const Value*> named_;      // values already renamed after an ONNX output
  int fresh_symbols_ = 0;
  std::set<std::string> dim_params_;  // symbols named by the model (sanitized)
  std::map<std::string, int64_t> multiples_, wanted_;  // by dim_param (sanitized)
  std::map<std::string, std::pair<std::string, int64_t>> scaled_;  // symbol -> its dim_param, c
  // Asks for a rerun with symbols declared multiples of constants when that makes `a` and
  // `b` equal; false if nothing does.
  bool want_multiples(const std::vector<std::pair<SymExpr, SymExpr>>& differing);
};

}  // namespace kiln::onnx_detail
