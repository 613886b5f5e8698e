#include "frontends/onnx/onnx_import.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/cord.h"
#include "frontends/onnx/importer.h"
#include "frontends/onnx/onnx_tensor.h"
#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/verifier.h"

namespace kiln {
namespace onnx_detail {
namespace {

constexpr const char* kOpTypePayload = "kiln.onnx/op_type";

std::string attr_kind_name(int kind) {
  if (!onnx::AttributeProto::AttributeType_IsValid(kind)) return str_cat("type ", kind);
  return onnx::AttributeProto::AttributeType_Name(static_cast<onnx::AttributeProto::AttributeType>(kind));
}

}  // namespace

std::string sanitize(std::string_view s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? c : '_';
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "v" + out;
  return out;
}

double tidy(float f) {
  if (!std::isfinite(f)) return f;
  double d = std::strtod(fmt::format("{}", f).c_str(), nullptr);
  return static_cast<float>(d) == f ? d : f;
}

std::optional<std::vector<SymExpr>> known_from_data(const HostTensor& t) {
  // Shape arithmetic is i64, i32 or bool; the narrow and unsigned types would need their
  // wrapping in the folding of known values.
  DType d = t.dtype();
  if ((d != DType::i64 && d != DType::i32 && d != DType::boolean) || t.rank() > 1 || t.numel() > kMaxKnown)
    return std::nullopt;
  std::vector<SymExpr> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(t.get_int(i));
  return v;
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
      std::string name = sanitize(d.dim_param());
      auto m = multiples_.find(name);
      if (m == multiples_.end()) {
        shape.push_back(SymExpr::symbol(name));
      } else {
        std::string sym = str_cat(name, "_div", m->second);
        scaled_[sym] = {name, m->second};
        shape.push_back(m->second * SymExpr::symbol(sym));
      }
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
    if (data->dtype() == DType::f64) attrs.set("value", data->get(0));
    else if (is_float(data->dtype())) attrs.set("value", tidy(static_cast<float>(data->get(0))));
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
    if (!h.ok()) return prefix_error(h.status(), where(), "initializer: ");
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
    KILN_ASSIGN_OR_RETURN(auto type, value_info_type(vi));
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
    KILN_ASSIGN_OR_RETURN(auto v, materialize(vi.name(), it->second));
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
  // Handlers name what they add after the node's first output (empty where optional, as
  // an RNN's Y may be): a node without any output has nothing to compute.
  if (node_->output_size() == 0) return bad("the node has no outputs");
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
  auto it = env_.find(node_->input(i));
  if (it == env_.end()) return bad("input '", node_->input(i), "' is not defined before this node");
  return &it->second;
}

absl::StatusOr<Value*> Importer::value(int i) {
  KILN_ASSIGN_OR_RETURN(auto e, in(i));
  return materialize(node_->input(i), *e);
}

absl::StatusOr<std::vector<SymExpr>> Importer::known(int i, std::string_view what) {
  if (!has_input(i)) return bad(what, " (input ", i, ") is missing");
  KILN_ASSIGN_OR_RETURN(const Entry* e, in(i));
  if (e->known) return *e->known;
  if (e->data) return unsupported(what, " '", node_->input(i), "' must be an integer tensor of rank <= 1, got ", e->type.to_string());
  return needs_constant(what, " '", node_->input(i),
                        "' must be known at import time (a constant, or computed from shapes), but it is computed at run time");
}

absl::StatusOr<std::vector<int64_t>> Importer::known_ints(int i, std::string_view what) {
  KILN_ASSIGN_OR_RETURN(auto vals, known(i, what));
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
  KILN_ASSIGN_OR_RETURN(auto v, known_ints(i, name));
  return std::optional<std::vector<int64_t>>(std::move(v));
}

absl::StatusOr<Node*> Importer::emit_node(Op op, std::vector<Value*> operands, Attrs attrs) {
  absl::StatusOr<Node*> n = g_.add_node(op, std::move(operands), std::move(attrs), {}, loc());
  if (!n.ok()) return bad(n.status().message());
  return *n;
}

absl::StatusOr<Value*> Importer::emit(Op op, std::vector<Value*> operands, Attrs attrs) {
  KILN_ASSIGN_OR_RETURN(auto n, emit_node(op, std::move(operands), std::move(attrs)));
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

}  // namespace onnx_detail

namespace {

absl::StatusOr<Graph> import_model(const std::string& bytes, std::string_view source, const OnnxImportOptions& options) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes))
    return invalid_argument(source, ": not a valid ONNX model (protobuf parse failed; truncated or corrupt?)");
  // A model whose shapes agree only when some dims are multiples of constants is imported
  // again with those dims declared so (a call with other sizes is rejected at binding).
  std::map<std::string, int64_t> multiples;
  for (int attempt = 0;; ++attempt) {
    onnx_detail::Importer im(std::string(source), options, multiples);
    absl::StatusOr<Graph> g = im.run(model);
    if (g.ok() || im.wanted_multiples().empty() || attempt == 4) return g;
    for (const auto& [name, c] : im.wanted_multiples()) multiples[name] = c;
  }
}

}  // namespace

std::string onnx_error_op_type(const absl::Status& s) {
  auto p = s.GetPayload(onnx_detail::kOpTypePayload);  // absl::optional, not std::optional, on Debian
  return p ? std::string(*p) : std::string();
}

absl::StatusOr<Graph> import_onnx_file(const std::string& path, const OnnxImportOptions& options) {
  KILN_ASSIGN_OR_RETURN(std::string bytes, read_regular_file(path, max_input_file_bytes()));
  return import_model(std::move(bytes), path, options);
}

absl::StatusOr<Graph> import_onnx_bytes(std::string_view bytes, std::string_view source,
                                        const OnnxImportOptions& options) {
  return import_model(std::string(bytes), source, options);
}

}  // namespace kiln
