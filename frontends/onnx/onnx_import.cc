#include "frontends/onnx/onnx_import.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/cord.h"
#include "frontends/onnx/onnx_tensor.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "onnx.pb.h"

namespace kiln {
namespace {

#define ONNX_TRY(expr)                              \
  do {                                              \
    if (absl::Status s_ = (expr); !s_.ok()) return s_; \
  } while (0)
#define ONNX_ASSIGN(lhs, expr)                         \
  auto lhs##_or_ = (expr);                             \
  if (!lhs##_or_.ok()) return lhs##_or_.status();      \
  auto lhs = *std::move(lhs##_or_)

constexpr const char* kOpTypePayload = "kiln.onnx/op_type";

// Small integer tensors (shapes, axes, indices of shape arithmetic) are tracked by value
// so that Reshape/Expand/Slice operands computed from shapes fold at import time.
constexpr int64_t kMaxKnown = 1024;

// kiln value and symbol names are identifiers; ONNX names are arbitrary strings.
std::string sanitize(std::string_view s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? c : '_';
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "v" + out;
  return out;
}

// What the importer knows about one ONNX tensor name.
struct Entry {
  TensorType type;
  Value* value = nullptr;                     // the kiln value; made lazily for constants
  std::shared_ptr<const HostTensor> data;     // contents, for initializers and Constants
  std::optional<std::vector<SymExpr>> known;  // contents of a small integer tensor, rank <= 1
};

// The double with the float's shortest text (1e-05, not 9.999999747378752e-06), so that
// the IR reads as the model was written; it rounds back to the same float.
double tidy(float f) {
  if (!std::isfinite(f)) return f;
  double d = std::strtod(fmt::format("{}", f).c_str(), nullptr);
  return static_cast<float>(d) == f ? d : f;
}

std::string attr_kind_name(int kind) {
  if (!onnx::AttributeProto::AttributeType_IsValid(kind)) return str_cat("type ", kind);
  return onnx::AttributeProto::AttributeType_Name(static_cast<onnx::AttributeProto::AttributeType>(kind));
}

std::optional<std::vector<SymExpr>> known_from_data(const HostTensor& t) {
  if (!is_integer(t.dtype()) || t.rank() > 1 || t.numel() > kMaxKnown) return std::nullopt;
  std::vector<SymExpr> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.get_int(i));
  return v;
}

Shape static_shape(const std::vector<int64_t>& dims) { return Shape(dims.begin(), dims.end()); }

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

class Importer {
 public:
  Importer(std::string source, const OnnxImportOptions& options)
      : source_(std::move(source)), options_(options) {}
  absl::StatusOr<Graph> run(const onnx::ModelProto& model);

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
  // A constant of dtype t: a float, a bool (v != 0) or an integer (v truncated).
  absl::StatusOr<Value*> scalar(double v, DType t) {
    Attrs attrs{{"dtype", t}};
    if (is_float(t)) attrs.set("value", v);
    else if (t == DType::boolean) attrs.set("value", v != 0);
    else attrs.set("value", static_cast<int64_t>(v));
    return emit(Op::Constant, {}, std::move(attrs));
  }
  absl::Status define(int i, Value* v);
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
  absl::Status leaky_relu();
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
};

const std::map<std::string, Importer::OpSpec, std::less<>>& Importer::op_table() {
  constexpr AttrKind kInt = onnx::AttributeProto::INT, kFloat = onnx::AttributeProto::FLOAT,
                     kInts = onnx::AttributeProto::INTS, kFloats = onnx::AttributeProto::FLOATS,
                     kString = onnx::AttributeProto::STRING, kTensor = onnx::AttributeProto::TENSOR;
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
      {"LeakyRelu", {&Importer::leaky_relu, {{"alpha", kFloat}}}},
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
  };
  return *table;
}

// ---- graph level ------------------------------------------------------------------

// A graph input's type. A dim with neither value nor name gets a fresh symbol (unk0, ...)
// that no dim_param of the model uses.
absl::StatusOr<TensorType> Importer::value_info_type(const onnx::ValueInfoProto& vi) {
  std::string what = str_cat("graph input '", vi.name(), "': ");
  const onnx::TypeProto& t = vi.type();
  if (!t.has_tensor_type())
    return unsupported(what, "not a tensor (sequence, map and optional types are not supported)");
  std::optional<DType> dtype = dtype_from_onnx(t.tensor_type().elem_type());
  if (!dtype) return unsupported(what, "unsupported element type ", onnx_type_name(t.tensor_type().elem_type()));
  if (!t.tensor_type().has_shape()) return unsupported(what, "no shape (unknown rank is not supported)");
  Shape shape;
  for (const onnx::TensorShapeProto::Dimension& d : t.tensor_type().shape().dim()) {
    if (d.has_dim_value()) {
      if (d.dim_value() < 0) return bad(what, "negative dim ", d.dim_value());
      shape.push_back(d.dim_value());
    } else if (d.has_dim_param() && !d.dim_param().empty()) {
      shape.push_back(SymExpr::symbol(sanitize(d.dim_param())));
    } else {
      std::string sym;
      do sym = str_cat("unk", fresh_symbols_++);
      while (dim_params_.contains(sym));
      shape.push_back(SymExpr::symbol(sym));
    }
  }
  return TensorType{*dtype, std::move(shape)};
}

absl::StatusOr<Value*> Importer::materialize(const std::string& name, Entry& e) {
  if (e.value) return e.value;
  std::shared_ptr<const HostTensor> data = e.data;
  if (!data) {
    std::vector<int64_t> dims;
    for (const Dim& d : e.type.shape) dims.push_back(*d.constant());
    HostTensor t(e.type.dtype, dims);
    for (size_t i = 0; i < e.known->size(); ++i) {
      std::optional<int64_t> c = (*e.known)[i].constant();
      if (!c)
        return unsupported("'", name, "' holds symbolic dims [",
                           str_join(*e.known, ", ", [](const SymExpr& s) { return s.to_string(); }),
                           "], which kiln cannot turn into a runtime tensor");
      t.set_int(i, *c);
    }
    data = std::make_shared<const HostTensor>(std::move(t));
  }
  if (node_ && data->rank() == 0) {
    // A scalar operand becomes a constant node, which passes fold into the kernels using it.
    Attrs attrs{{"dtype", data->dtype()}};
    if (is_float(data->dtype())) attrs.set("value", tidy(static_cast<float>(data->get(0))));
    else if (data->dtype() == DType::boolean) attrs.set("value", data->get_int(0) != 0);
    else attrs.set("value", data->get_int(0));
    absl::StatusOr<Node*> n = g_.add_node(Op::Constant, {}, std::move(attrs), {g_.fresh_name(sanitize(name))}, loc());
    if (!n.ok()) return bad(n.status().message());
    e.value = (*n)->result();
    return e.value;
  }
  absl::StatusOr<Value*> v = g_.add_param(g_.fresh_name(sanitize(name)), e.type, data);
  if (!v.ok()) return bad(v.status().message());
  e.value = *v;
  return *v;
}

absl::StatusOr<Graph> Importer::run(const onnx::ModelProto& model) {
  for (const onnx::OperatorSetIdProto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = o.version();
  if (!model.has_graph()) return bad("the model has no graph");
  if (model.opset_import_size() == 0) return bad("the model imports no opset");
  const onnx::GraphProto& gp = model.graph();
  if (gp.output_size() == 0) return bad("the graph has no outputs");
  for (const onnx::ValueInfoProto& vi : gp.input())
    if (vi.type().has_tensor_type())
      for (const onnx::TensorShapeProto::Dimension& d : vi.type().tensor_type().shape().dim())
        if (d.has_dim_param()) dim_params_.insert(sanitize(d.dim_param()));
  g_.set_name(sanitize(gp.name().empty() ? "main" : gp.name()));
  if (gp.sparse_initializer_size() > 0) return unsupported("sparse initializers are not supported");

  for (const onnx::TensorProto& t : gp.initializer()) {
    if (t.name().empty()) return bad("an initializer has no name");
    if (env_.contains(t.name())) return bad("initializer '", t.name(), "' is defined twice");
    absl::StatusOr<HostTensor> h = tensor_from_onnx(t);
    if (!h.ok()) return absl::Status(h.status().code(), str_cat(where(), "initializer: ", h.status().message()));
    auto data = std::make_shared<const HostTensor>(*std::move(h));
    env_[t.name()] = Entry{TensorType{data->dtype(), static_shape(data->shape())}, nullptr, data,
                           known_from_data(*data)};
  }
  std::set<std::string> frozen_used, input_names;
  for (const onnx::ValueInfoProto& vi : gp.input()) {
    if (vi.name().empty()) return bad("a graph input has no name");
    if (!input_names.insert(vi.name()).second) return bad("graph input '", vi.name(), "' is listed twice");
    // An input that also has an initializer (older exporters list both) is a parameter.
    if (env_.contains(vi.name())) continue;
    if (auto f = options_.frozen_inputs.find(vi.name()); f != options_.frozen_inputs.end()) {
      auto data = std::make_shared<const HostTensor>(f->second);
      env_[vi.name()] = Entry{TensorType{data->dtype(), static_shape(data->shape())}, nullptr, data,
                              known_from_data(*data)};
      frozen_used.insert(vi.name());
      continue;
    }
    ONNX_ASSIGN(type, value_info_type(vi));
    absl::StatusOr<Value*> v = g_.add_input(g_.fresh_name(sanitize(vi.name())), type);
    if (!v.ok()) return bad(v.status().message());
    env_[vi.name()] = Entry{type, *v, nullptr, std::nullopt};
  }
  for (const auto& [name, t] : options_.frozen_inputs)
    if (!frozen_used.contains(name)) return bad("frozen input '", name, "' is not an input of the graph");

  for (const onnx::NodeProto& n : gp.node()) {
    node_ = &n;
    if (absl::Status s = import_node(); !s.ok()) {
      s.SetPayload(kOpTypePayload, absl::Cord(n.op_type()));
      return s;
    }
    ++node_index_;
  }
  node_ = nullptr;

  std::vector<Value*> outs;
  for (const onnx::ValueInfoProto& vi : gp.output()) {
    std::string what = str_cat("graph output '", vi.name(), "': ");
    auto it = env_.find(vi.name());
    if (it == env_.end()) return bad(what, "not computed by any node");
    // The type is checked where the model states one.
    if (vi.type().value_case() != onnx::TypeProto::VALUE_NOT_SET) {
      if (!vi.type().has_tensor_type()) return unsupported(what, "not a tensor");
      int32_t et = vi.type().tensor_type().elem_type();
      std::optional<DType> declared = dtype_from_onnx(et);
      if (!declared) return unsupported(what, "unsupported element type ", onnx_type_name(et));
      if (*declared != it->second.type.dtype)
        return bad(what, "declared ", dtype_name(*declared), ", but computes ", it->second.type.to_string());
    }
    ONNX_ASSIGN(v, materialize(vi.name(), it->second));
    outs.push_back(v);
  }
  g_.set_outputs(std::move(outs));
  g_.remove_dead_nodes();
  if (absl::Status s = verify(g_); !s.ok())
    return absl::InternalError(str_cat(where(), "imported graph fails verification: ", s.message()));
  return std::move(g_);
}

absl::Status Importer::import_node() {
  const std::string& domain = node_->domain();
  if (!domain.empty() && domain != "ai.onnx") return unsupported("ops of domain '", domain, "' are not supported");
  if (opset_ == 0) return bad("the model imports no opset of the default ONNX domain (ai.onnx)");
  auto it = op_table().find(node_->op_type());
  if (it == op_table().end()) return unsupported("unsupported op");
  std::set<std::string> seen;
  for (const onnx::AttributeProto& a : node_->attribute()) {
    auto spec = it->second.attrs.find(a.name());
    if (spec == it->second.attrs.end()) return unsupported("unsupported attribute '", a.name(), "'");
    if (a.type() != spec->second)
      return bad("attribute '", a.name(), "' must be ", onnx::AttributeProto::AttributeType_Name(spec->second),
                 ", got ", attr_kind_name(a.type()));
    if (!seen.insert(a.name()).second) return bad("attribute '", a.name(), "' is given twice");
  }
  for (const std::string& x : node_->input())
    if (!x.empty() && !env_.contains(x)) return bad("input '", x, "' is not defined before this node");
  return (this->*it->second.handler)();
}

// ---- operands and results ---------------------------------------------------------

absl::StatusOr<Entry*> Importer::in(int i) {
  if (!has_input(i)) return bad("input ", i, " is missing");
  return &env_.at(node_->input(i));
}

absl::StatusOr<Value*> Importer::value(int i) {
  ONNX_ASSIGN(e, in(i));
  return materialize(node_->input(i), *e);
}

absl::StatusOr<std::vector<SymExpr>> Importer::known(int i, std::string_view what) {
  if (!has_input(i)) return bad(what, " (input ", i, ") is missing");
  const Entry& e = env_.at(node_->input(i));
  if (e.known) return *e.known;
  if (e.data) return unsupported(what, " '", node_->input(i), "' must be an integer tensor of rank <= 1, got ", e.type.to_string());
  return needs_constant(what, " '", node_->input(i),
                        "' must be known at import time (a constant, or computed from shapes), but it is computed at run time");
}

absl::StatusOr<std::vector<int64_t>> Importer::known_ints(int i, std::string_view what) {
  ONNX_ASSIGN(vals, known(i, what));
  std::vector<int64_t> out;
  for (const SymExpr& v : vals) {
    std::optional<int64_t> c = v.constant();
    if (!c) return unsupported(what, " '", node_->input(i), "' holds the symbolic value ", v.to_string(), "; kiln needs a constant");
    out.push_back(*c);
  }
  return out;
}

absl::StatusOr<std::optional<std::vector<int64_t>>> Importer::ints_operand(int i, std::string_view name) {
  if (std::optional<std::vector<int64_t>> a = attr_ints(name)) return a;
  if (!has_input(i)) return std::optional<std::vector<int64_t>>();
  ONNX_ASSIGN(v, known_ints(i, name));
  return std::optional<std::vector<int64_t>>(std::move(v));
}

absl::StatusOr<Node*> Importer::emit_node(Op op, std::vector<Value*> operands, Attrs attrs) {
  absl::StatusOr<Node*> n = g_.add_node(op, std::move(operands), std::move(attrs), {}, loc());
  if (!n.ok()) return bad(n.status().message());
  return *n;
}

absl::StatusOr<Value*> Importer::emit(Op op, std::vector<Value*> operands, Attrs attrs) {
  ONNX_ASSIGN(n, emit_node(op, std::move(operands), std::move(attrs)));
  return n->result();
}

absl::Status Importer::define_entry(int i, Entry e) {
  if (i >= node_->output_size() || node_->output(i).empty()) return absl::OkStatus();  // unused optional output
  const std::string& name = node_->output(i);
  if (env_.contains(name)) return bad("output '", name, "' is already defined (ONNX graphs are SSA)");
  env_[name] = std::move(e);
  return absl::OkStatus();
}

absl::Status Importer::define(int i, Value* v) {
  if (i < node_->output_size() && !node_->output(i).empty() && v->producer() && !named_.contains(v)) {
    if (absl::Status s = g_.rename(v, g_.fresh_name(sanitize(node_->output(i)))); !s.ok()) return bad(s.message());
    named_.insert(v);
  }
  return define_entry(i, Entry{v->type(), v, nullptr, std::nullopt});
}

absl::Status Importer::define_data(int i, HostTensor t) {
  auto data = std::make_shared<const HostTensor>(std::move(t));
  return define_entry(i, Entry{TensorType{data->dtype(), static_shape(data->shape())}, nullptr, data,
                               known_from_data(*data)});
}

// ---- elementwise -------------------------------------------------------------------

absl::Status Importer::unary() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"Neg", Op::Neg},   {"Abs", Op::Abs},     {"Exp", Op::Exp},         {"Log", Op::Log},
      {"Sqrt", Op::Sqrt}, {"Floor", Op::Floor}, {"Ceil", Op::Ceil},       {"Tanh", Op::Tanh},
      {"Relu", Op::Relu}, {"Erf", Op::Erf},     {"Sigmoid", Op::Sigmoid}, {"Sin", Op::Sin},
      {"Cos", Op::Cos},   {"Not", Op::Not},     {"Reciprocal", Op::Reciprocal}};
  Op op = kOps.at(node_->op_type());
  ONNX_ASSIGN(e, in(0));
  if (op == Op::Neg && e->known) {  // shape arithmetic: a negated axis or length
    std::vector<SymExpr> vals;
    for (const SymExpr& v : *e->known) vals.push_back(-v);
    return define_known(0, e->type.dtype, std::move(vals), e->type.shape);
  }
  ONNX_ASSIGN(x, value(0));
  ONNX_ASSIGN(y, emit(op, {x}));
  return define(0, y);
}

// True when no coefficient is negative: symbols are dims (>= 1), so the value is >= 0 and
// floor division agrees with the truncating division of kiln's integers.
bool nonnegative(const SymExpr& e) {
  return std::all_of(e.poly().terms.begin(), e.poly().terms.end(), [](const SymTerm& t) { return t.coeff >= 0; });
}

// Integer arithmetic on known rank <= 1 values (shape computations); nullopt when the
// result is not expressible (shapes that do not broadcast, division by a symbol or zero).
std::optional<std::vector<SymExpr>> fold_arith(Op op, const std::vector<SymExpr>& a, const std::vector<SymExpr>& b) {
  size_t n = std::max(a.size(), b.size());
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1) return std::nullopt;
  std::vector<SymExpr> out;
  for (size_t i = 0; i < n; ++i) {
    const SymExpr& x = a[a.size() == 1 ? 0 : i];
    const SymExpr& y = b[b.size() == 1 ? 0 : i];
    switch (op) {
      case Op::Add: out.push_back(x + y); break;
      case Op::Sub: out.push_back(x - y); break;
      case Op::Mul: out.push_back(x * y); break;
      case Op::Div: {
        std::optional<int64_t> cy = y.constant(), cx = x.constant();
        if (!cy || *cy == 0) return std::nullopt;
        if (cx) out.push_back(*cx / *cy);  // kiln's integer division truncates
        else if (std::optional<SymExpr> q = x.divide_exact(*cy)) out.push_back(*q);
        else if (*cy > 0 && nonnegative(x)) out.push_back(x.floordiv(*cy));  // floor == trunc
        else return std::nullopt;
        break;
      }
      default: return std::nullopt;
    }
  }
  return out;
}

absl::Status Importer::binary() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"Add", Op::Add}, {"Sub", Op::Sub}, {"Mul", Op::Mul}, {"Div", Op::Div},
      {"Equal", Op::Eq}, {"Less", Op::Lt}, {"LessOrEqual", Op::Le}, {"Greater", Op::Gt},
      {"GreaterOrEqual", Op::Ge}, {"And", Op::And}, {"Or", Op::Or}};
  Op op = kOps.at(node_->op_type());
  if (node_->input_size() != 2) return bad("expects 2 inputs, got ", node_->input_size());
  ONNX_ASSIGN(a, in(0));
  ONNX_ASSIGN(b, in(1));
  if (a->known && b->known && a->type.dtype == b->type.dtype) {
    if (std::optional<std::vector<SymExpr>> r = fold_arith(op, *a->known, *b->known)) {
      Shape shape = a->type.shape.size() >= b->type.shape.size() ? a->type.shape : b->type.shape;
      if (!shape.empty()) shape[0] = static_cast<int64_t>(r->size());
      return define_known(0, a->type.dtype, *std::move(r), std::move(shape));
    }
  }
  ONNX_ASSIGN(x, value(0));
  ONNX_ASSIGN(y, value(1));
  ONNX_ASSIGN(out, emit(op, {x, y}));
  return define(0, out);
}

absl::Status Importer::variadic() {
  Op op = node_->op_type() == "Max" ? Op::Maximum : Op::Minimum;
  if (node_->input_size() < 1) return bad("expects at least one input");
  ONNX_ASSIGN(acc, value(0));
  for (int i = 1; i < node_->input_size(); ++i) {
    ONNX_ASSIGN(x, value(i));
    ONNX_ASSIGN(next, emit(op, {acc, x}));
    acc = next;
  }
  return define(0, acc);
}

absl::Status Importer::pow() {
  ONNX_ASSIGN(base, value(0));
  ONNX_ASSIGN(exponent, value(1));
  if (!is_float(base->dtype()))
    return unsupported("a ", dtype_name(base->dtype()), " base is not supported: kiln's pow is floating-point only");
  if (exponent->dtype() != base->dtype()) {
    // ONNX lets the exponent's type differ; kiln's binary ops want equal dtypes.
    ONNX_ASSIGN(c, emit(Op::Cast, {exponent}, {{"dtype", base->dtype()}}));
    exponent = c;
  }
  ONNX_ASSIGN(y, emit(Op::Pow, {base, exponent}));
  return define(0, y);
}

absl::Status Importer::leaky_relu() {
  ONNX_ASSIGN(x, value(0));
  ONNX_ASSIGN(zero, scalar(0.0, x->dtype()));
  ONNX_ASSIGN(alpha, scalar(attr_float("alpha", 0.01), x->dtype()));
  ONNX_ASSIGN(negative, emit(Op::Lt, {x, zero}));
  ONNX_ASSIGN(scaled, emit(Op::Mul, {x, alpha}));
  ONNX_ASSIGN(y, emit(Op::Where, {negative, scaled, x}));
  return define(0, y);
}

absl::Status Importer::gelu() {
  ONNX_ASSIGN(x, value(0));
  ONNX_ASSIGN(y, emit(Op::Gelu, {x}, {{"approximate", attr_string("approximate", "none")}}));
  return define(0, y);
}

// Cast(x, to=T), or CastLike(x, like): x converted to T or to like's dtype.
absl::Status Importer::cast() {
  ONNX_ASSIGN(x, in(0));
  std::optional<DType> t;
  if (node_->op_type() == "CastLike") {
    ONNX_ASSIGN(like, in(1));
    t = like->type.dtype;
  } else {
    const onnx::AttributeProto* to = attr("to");
    if (!to) return bad("missing attribute 'to'");
    t = dtype_from_onnx(static_cast<int32_t>(to->i()));
    if (!t) return unsupported("cast to unsupported element type ", onnx_type_name(static_cast<int32_t>(to->i())));
  }
  if (x->known && is_integer(*t)) {
    std::vector<SymExpr> vals = *x->known;
    if (*t == DType::i32)
      for (SymExpr& v : vals)
        if (std::optional<int64_t> c = v.constant()) v = static_cast<int64_t>(static_cast<int32_t>(*c));
    return define_known(0, *t, std::move(vals), x->type.shape);
  }
  ONNX_ASSIGN(xv, value(0));
  ONNX_ASSIGN(y, emit(Op::Cast, {xv}, {{"dtype", *t}}));
  return define(0, y);
}

absl::Status Importer::where_op() {
  ONNX_ASSIGN(c, value(0));
  ONNX_ASSIGN(a, value(1));
  ONNX_ASSIGN(b, value(2));
  ONNX_ASSIGN(y, emit(Op::Where, {c, a, b}));
  return define(0, y);
}

// ---- linear algebra ------------------------------------------------------------------

absl::Status Importer::matmul() {
  ONNX_ASSIGN(a, value(0));
  ONNX_ASSIGN(b, value(1));
  if (!is_float(a->dtype()))
    return unsupported("MatMul on ", dtype_name(a->dtype()), " is not supported: kiln's matmul is floating-point only");
  ONNX_ASSIGN(y, emit(Op::MatMul, {a, b}));
  return define(0, y);
}

// Y = alpha * A' B' + beta * C, with A' = A^T if transA, B' = B^T if transB.
absl::Status Importer::gemm() {
  ONNX_ASSIGN(a, value(0));
  ONNX_ASSIGN(b, value(1));
  if (!is_float(a->dtype()))
    return unsupported("Gemm on ", dtype_name(a->dtype()), " is not supported: kiln's matmul is floating-point only");
  Attrs swap{{"dims", std::vector<int64_t>{1, 0}}};
  if (attr_int("transA", 0)) {
    ONNX_ASSIGN(t, emit(Op::Permute, {a}, swap));
    a = t;
  }
  if (attr_int("transB", 0)) {
    ONNX_ASSIGN(t, emit(Op::Permute, {b}, swap));
    b = t;
  }
  ONNX_ASSIGN(y, emit(Op::MatMul, {a, b}));
  if (double alpha = attr_float("alpha", 1.0); alpha != 1.0) {
    ONNX_ASSIGN(s, scalar(alpha, y->dtype()));
    ONNX_ASSIGN(scaled, emit(Op::Mul, {y, s}));
    y = scaled;
  }
  if (has_input(2)) {
    ONNX_ASSIGN(c, value(2));
    if (double beta = attr_float("beta", 1.0); beta != 1.0) {
      ONNX_ASSIGN(s, scalar(beta, c->dtype()));
      ONNX_ASSIGN(scaled, emit(Op::Mul, {c, s}));
      c = scaled;
    }
    ONNX_ASSIGN(sum, emit(Op::Add, {y, c}));
    y = sum;
  }
  return define(0, y);
}

// ---- shape and data movement ---------------------------------------------------------

absl::Status Importer::reshape() {
  ONNX_ASSIGN(x, in(0));
  std::vector<SymExpr> shape;
  if (opset_ < 5) {
    std::optional<std::vector<int64_t>> s = attr_ints("shape");
    if (!s) return bad("missing attribute 'shape'");
    shape.assign(s->begin(), s->end());
  } else {
    ONNX_ASSIGN(s, known(1, "shape"));
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
  ONNX_ASSIGN(xv, value(0));
  ONNX_ASSIGN(y, emit(Op::Reshape, {xv}, {{"shape", shape}}));
  return define(0, y);
}

absl::Status Importer::transpose() {
  ONNX_ASSIGN(x, value(0));
  std::vector<int64_t> perm;
  if (std::optional<std::vector<int64_t>> p = attr_ints("perm")) {
    perm = *p;
  } else {
    for (int64_t i = static_cast<int64_t>(x->shape().size()) - 1; i >= 0; --i) perm.push_back(i);
  }
  ONNX_ASSIGN(y, emit(Op::Permute, {x}, {{"dims", perm}}));
  return define(0, y);
}

absl::Status Importer::squeeze() {
  ONNX_ASSIGN(x, in(0));
  ONNX_ASSIGN(axes, ints_operand(1, "axes"));
  if (x->known && x->type.shape.size() == 1 && x->known->size() == 1 &&
      (!axes || (axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1))))
    return define_known(0, x->type.dtype, *x->known, {});
  Attrs attrs;
  if (axes) attrs.set("axes", *axes);
  ONNX_ASSIGN(xv, value(0));
  ONNX_ASSIGN(y, emit(Op::Squeeze, {xv}, attrs));
  return define(0, y);
}

absl::Status Importer::unsqueeze() {
  ONNX_ASSIGN(x, in(0));
  ONNX_ASSIGN(axes, ints_operand(1, "axes"));
  if (!axes) return bad("missing axes");
  if (x->known && x->type.shape.empty() && axes->size() == 1 && ((*axes)[0] == 0 || (*axes)[0] == -1))
    return define_known(0, x->type.dtype, *x->known, {1});
  ONNX_ASSIGN(xv, value(0));
  ONNX_ASSIGN(y, emit(Op::Unsqueeze, {xv}, {{"axes", *axes}}));
  return define(0, y);
}

absl::Status Importer::flatten() {
  ONNX_ASSIGN(x, value(0));
  int64_t rank = x->shape().size();
  int64_t axis = attr_int("axis", 1);
  if (axis < -rank || axis > rank) return bad("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  Shape outer(x->shape().begin(), x->shape().begin() + axis), inner(x->shape().begin() + axis, x->shape().end());
  ONNX_ASSIGN(y, emit(Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{shape_numel(outer), shape_numel(inner)}}}));
  return define(0, y);
}

absl::Status Importer::expand() {
  ONNX_ASSIGN(dims, known(1, "shape"));
  ONNX_ASSIGN(x, value(0));
  // ONNX's Expand broadcasts both ways: the result has the broadcast of both shapes.
  absl::StatusOr<Shape> target = broadcast_shapes(x->shape(), dims);
  if (!target.ok()) return bad(target.status().message());
  ONNX_ASSIGN(y, emit(Op::Expand, {x}, {{"shape", *target}}));
  return define(0, y);
}

absl::Status Importer::slice() {
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset_ < 10) {
    std::optional<std::vector<int64_t>> s = attr_ints("starts"), e = attr_ints("ends");
    if (!s || !e) return bad("missing attribute 'starts' or 'ends'");
    starts = *s, ends = *e;
    if (std::optional<std::vector<int64_t>> a = attr_ints("axes")) axes = *a;
  } else {
    ONNX_ASSIGN(s, known_ints(1, "starts"));
    ONNX_ASSIGN(e, known_ints(2, "ends"));
    starts = s, ends = e;
    if (has_input(3)) {
      ONNX_ASSIGN(a, known_ints(3, "axes"));
      axes = a;
    }
    if (has_input(4)) {
      ONNX_ASSIGN(st, known_ints(4, "steps"));
      steps = st;
    }
  }
  if (axes.empty())
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return bad("starts, ends, axes and steps differ in length");
  ONNX_ASSIGN(x, in(0));
  int64_t rank = x->type.shape.size();
  for (size_t i = 0; i < starts.size(); ++i) {
    if (steps[i] == 0) return bad("steps must not be 0");
    ONNX_ASSIGN(ax, axis_in("axis", axes[i], rank));
    axes[i] = ax;
  }
  if (x->known && rank == 1 && starts.size() == 1) {
    std::vector<SymExpr> vals;
    for (int64_t j : slice_indices(x->known->size(), starts[0], ends[0], steps[0])) vals.push_back((*x->known)[j]);
    int64_t n = vals.size();
    return define_known(0, x->type.dtype, std::move(vals), {n});
  }
  ONNX_ASSIGN(y, value(0));
  for (size_t i = 0; i < starts.size(); ++i) {
    ONNX_ASSIGN(s, emit(Op::Slice, {y}, {{"axis", axes[i]}, {"start", starts[i]}, {"end", ends[i]}, {"step", steps[i]}}));
    y = s;
  }
  return define(0, y);
}

absl::Status Importer::concat() {
  const onnx::AttributeProto* axis = attr("axis");
  if (!axis) return bad("missing attribute 'axis'");
  if (node_->input_size() < 1) return bad("expects at least one input");
  std::vector<Entry*> ins;
  for (int i = 0; i < node_->input_size(); ++i) {
    ONNX_ASSIGN(e, in(i));
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
  for (int i = 0; i < node_->input_size(); ++i) {
    ONNX_ASSIGN(v, value(i));
    vs.push_back(v);
  }
  ONNX_ASSIGN(y, emit(Op::Concat, vs, {{"axis", axis->i()}}));
  return define(0, y);
}

absl::Status Importer::split() {
  ONNX_ASSIGN(x, value(0));
  int64_t rank = x->shape().size();
  ONNX_ASSIGN(axis, axis_in("axis", attr_int("axis", 0), rank));
  std::vector<SymExpr> sizes;
  if (std::optional<std::vector<int64_t>> s = attr_ints("split")) {
    sizes.assign(s->begin(), s->end());
  } else if (has_input(1)) {
    ONNX_ASSIGN(s, known(1, "split"));
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
  ONNX_ASSIGN(n, emit_node(Op::Split, {x}, {{"axis", axis}, {"sizes", sizes}}));
  for (int i = 0; i < node_->output_size(); ++i) ONNX_TRY(define(i, n->result(i)));
  return absl::OkStatus();
}

absl::Status Importer::gather() {
  ONNX_ASSIGN(data, in(0));
  ONNX_ASSIGN(idx, in(1));
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
  ONNX_ASSIGN(d, value(0));
  ONNX_ASSIGN(i, value(1));
  ONNX_ASSIGN(y, emit(Op::Gather, {d, i}, {{"axis", axis}}));
  return define(0, y);
}

// ---- reductions ----------------------------------------------------------------------

absl::Status Importer::reduce() {
  static const std::map<std::string, Op, std::less<>> kOps = {
      {"ReduceSum", Op::Sum}, {"ReduceMean", Op::Mean}, {"ReduceMax", Op::Max},
      {"ReduceMin", Op::Min}, {"ReduceProd", Op::Prod}};
  ONNX_ASSIGN(x, value(0));
  ONNX_ASSIGN(axes, ints_operand(1, "axes"));
  Attrs attrs{{"keepdim", attr_int("keepdims", 1) != 0}};
  if (axes && !axes->empty()) attrs.set("axes", *axes);
  else if (attr_int("noop_with_empty_axes", 0)) return define(0, x);
  ONNX_ASSIGN(y, emit(kOps.at(node_->op_type()), {x}, attrs));
  return define(0, y);
}

// ArgMin is the argmax of an order-reversing map: -x for floats (NaN stays NaN, so the
// first NaN still wins), -x - 1 for integers (that is ~x, which cannot overflow).
// select_last_index reverses the axis and maps the index i found there back to n - 1 - i.
absl::Status Importer::argmax() {
  ONNX_ASSIGN(x, value(0));
  int64_t rank = x->shape().size();
  ONNX_ASSIGN(axis, axis_in("axis", attr_int("axis", 0), rank));
  Value* v = x;
  if (node_->op_type() == "ArgMin") {
    if (x->dtype() == DType::boolean) return unsupported("ArgMin of a bool tensor is not supported");
    ONNX_ASSIGN(neg, emit(Op::Neg, {v}));
    v = neg;
    if (is_integer(x->dtype())) {
      ONNX_ASSIGN(one, scalar(1, x->dtype()));
      ONNX_ASSIGN(not_x, emit(Op::Sub, {neg, one}));
      v = not_x;
    }
  }
  std::optional<int64_t> n = x->shape()[axis].constant();
  bool last = attr_int("select_last_index", 0) != 0;
  if (last) {
    if (!n) return unsupported("select_last_index=1 needs a static dim at axis ", axis, ", got ", x->type().to_string());
    ONNX_ASSIGN(rev, emit(Op::Slice, {v}, {{"axis", axis}, {"start", int64_t{-1}},
                                           {"end", std::numeric_limits<int64_t>::min()}, {"step", int64_t{-1}}}));
    v = rev;
  }
  ONNX_ASSIGN(y, emit(Op::ArgMax, {v}, {{"axis", axis}, {"keepdim", attr_int("keepdims", 1) != 0}}));
  if (last) {
    ONNX_ASSIGN(top, scalar(static_cast<double>(*n - 1), DType::i64));
    ONNX_ASSIGN(idx, emit(Op::Sub, {top, y}));
    y = idx;
  }
  return define(0, y);
}

// Opset 13 normalizes along one axis (default -1); earlier opsets flatten the input to 2-D
// at `axis` (default 1) and normalize each row.
absl::Status Importer::softmax() {
  Op op = node_->op_type() == "Softmax" ? Op::Softmax : Op::LogSoftmax;
  ONNX_ASSIGN(x, value(0));
  int64_t rank = x->shape().size();
  if (opset_ >= 13) {
    ONNX_ASSIGN(axis, axis_in("axis", attr_int("axis", -1), rank));
    ONNX_ASSIGN(y, emit(op, {x}, {{"axis", axis}}));
    return define(0, y);
  }
  int64_t axis = attr_int("axis", 1);
  if (axis < -rank || axis > rank) return bad("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  if (axis == rank - 1) {
    ONNX_ASSIGN(y, emit(op, {x}, {{"axis", axis}}));
    return define(0, y);
  }
  Shape outer(x->shape().begin(), x->shape().begin() + axis), inner(x->shape().begin() + axis, x->shape().end());
  ONNX_ASSIGN(flat, emit(Op::Reshape, {x}, {{"shape", std::vector<SymExpr>{shape_numel(outer), shape_numel(inner)}}}));
  ONNX_ASSIGN(sm, emit(op, {flat}, {{"axis", int64_t{1}}}));
  ONNX_ASSIGN(y, emit(Op::Reshape, {sm}, {{"shape", x->shape()}}));
  return define(0, y);
}

// Y = layer_norm over axes [axis, rank); the optional Mean and InvStdDev outputs are
// computed beside it (kept dims of size 1, as ONNX defines them).
absl::Status Importer::layer_norm() {
  if (attr_int("stash_type", 1) != 1) return unsupported("stash_type other than 1 (float) is not supported");
  ONNX_ASSIGN(x, value(0));
  int64_t rank = x->shape().size();
  ONNX_ASSIGN(axis, axis_in("axis", attr_int("axis", -1), rank));
  std::vector<int64_t> axes;
  for (int64_t i = axis; i < rank; ++i) axes.push_back(i);
  Shape norm_shape(x->shape().begin() + axis, x->shape().end());
  std::vector<Value*> operands{x};
  for (int i = 1; i <= 2; ++i) {
    if (!has_input(i)) break;  // kiln's layer_norm takes weight, then bias
    ONNX_ASSIGN(w, value(i));
    if (w->shape() != norm_shape) {
      // ONNX allows scale/bias that broadcast to the normalized shape; kiln wants it exact.
      ONNX_ASSIGN(e, emit(Op::Expand, {w}, {{"shape", norm_shape}}));
      w = e;
    }
    operands.push_back(w);
  }
  double eps = attr_float("epsilon", 1e-5);
  ONNX_ASSIGN(y, emit(Op::LayerNorm, operands, {{"axes", axes}, {"eps", eps}}));
  ONNX_TRY(define(0, y));
  bool want_mean = node_->output_size() > 1 && !node_->output(1).empty();
  bool want_inv = node_->output_size() > 2 && !node_->output(2).empty();
  if (!want_mean && !want_inv) return absl::OkStatus();
  // Mean and InvStdDev have the stash type (f32) whatever x's type.
  Value* xs = x;
  if (x->dtype() != DType::f32) {
    ONNX_ASSIGN(c, emit(Op::Cast, {x}, {{"dtype", DType::f32}}));
    xs = c;
  }
  Attrs reduce{{"axes", axes}, {"keepdim", true}};
  ONNX_ASSIGN(mean, emit(Op::Mean, {xs}, reduce));
  ONNX_TRY(define(1, mean));
  if (!want_inv) return absl::OkStatus();
  ONNX_ASSIGN(centered, emit(Op::Sub, {xs, mean}));
  ONNX_ASSIGN(sq, emit(Op::Mul, {centered, centered}));
  ONNX_ASSIGN(var, emit(Op::Mean, {sq}, reduce));
  ONNX_ASSIGN(e, scalar(eps, DType::f32));
  ONNX_ASSIGN(shifted, emit(Op::Add, {var, e}));
  ONNX_ASSIGN(inv, emit(Op::Rsqrt, {shifted}));
  return define(2, inv);
}

// ---- constants and shapes ------------------------------------------------------------

absl::Status Importer::identity() {
  ONNX_ASSIGN(x, in(0));
  return define_entry(0, *x);
}

absl::Status Importer::constant() {
  if (node_->attribute_size() != 1) return bad("expects exactly one value attribute");
  const onnx::AttributeProto& a = node_->attribute(0);
  if (a.name() == "value") {
    absl::StatusOr<HostTensor> t = tensor_from_onnx(a.t());
    if (!t.ok()) return absl::Status(t.status().code(), str_cat(where(), t.status().message()));
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
  ONNX_ASSIGN(x, in(0));
  int64_t rank = x->type.shape.size();
  auto clamp = [rank](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  int64_t start = clamp(attr_int("start", 0)), end = clamp(attr_int("end", rank));
  std::vector<SymExpr> dims;
  for (int64_t i = start; i < end; ++i) dims.push_back(x->type.shape[i]);
  int64_t n = dims.size();
  return define_known(0, DType::i64, std::move(dims), {n});
}

absl::Status Importer::size() {
  ONNX_ASSIGN(x, in(0));
  return define_known(0, DType::i64, {shape_numel(x->type.shape)}, {});
}

// A small static integer result is data (shape arithmetic may read it); anything else is
// a scalar constant expanded, which costs no memory at import time whatever the shape.
absl::Status Importer::constant_of_shape() {
  ONNX_ASSIGN(dims, known(0, "shape"));
  HostTensor fill(DType::f32, {1});
  if (const onnx::AttributeProto* v = attr("value")) {
    absl::StatusOr<HostTensor> t = tensor_from_onnx(v->t());
    if (!t.ok()) return absl::Status(t.status().code(), str_cat(where(), t.status().message()));
    if (t->numel() != 1) return bad("value must hold one element, got ", t->type_string());
    fill = *std::move(t);
  }
  Shape shape(dims.begin(), dims.end());
  for (const Dim& d : shape)
    if (std::optional<int64_t> c = d.constant(); c && *c < 0) return bad("negative dim in shape ", shape_to_string(shape));
  std::optional<int64_t> numel = shape_numel(shape).constant();
  if (numel && shape.size() <= 1 && *numel <= kMaxKnown && is_integer(fill.dtype())) {
    HostTensor out(fill.dtype(), shape.empty() ? std::vector<int64_t>{} : std::vector<int64_t>{*numel});
    for (int64_t i = 0; i < *numel; ++i) out.set_int(i, fill.get_int(0));
    return define_data(0, std::move(out));
  }
  Attrs value{{"dtype", fill.dtype()}};
  if (is_float(fill.dtype())) value.set("value", fill.get(0));
  else if (fill.dtype() == DType::boolean) value.set("value", fill.get_int(0) != 0);
  else value.set("value", fill.get_int(0));
  ONNX_ASSIGN(c, emit(Op::Constant, {}, std::move(value)));
  ONNX_ASSIGN(y, emit(Op::Expand, {c}, {{"shape", shape}}));
  return define(0, y);
}

absl::StatusOr<Graph> import_model(const std::string& bytes, std::string_view source, const OnnxImportOptions& options) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes))
    return invalid_argument(source, ": not a valid ONNX model (protobuf parse failed; truncated or corrupt?)");
  return Importer(std::string(source), options).run(model);
}

}  // namespace

std::string onnx_error_op_type(const absl::Status& s) {
  auto p = s.GetPayload(kOpTypePayload);  // absl::optional, not std::optional, on Debian
  return p ? std::string(*p) : std::string();
}

absl::StatusOr<Graph> import_onnx_file(const std::string& path, const OnnxImportOptions& options) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(str_cat(path, ": cannot open"));
  std::stringstream buf;
  buf << f.rdbuf();
  return import_model(buf.str(), path, options);
}

absl::StatusOr<Graph> import_onnx_bytes(std::string_view bytes, std::string_view source,
                                        const OnnxImportOptions& options) {
  return import_model(std::string(bytes), source, options);
}

}  // namespace kiln
