// convert_float: rebuilds the graph node by node so that every type is inferred again from
// the converted arguments; the only attributes it edits are the dtype attributes that name
// f32 (Cast to, Constant and Iota element types).
//
// Before: a verified graph. After: a verified graph with no f32 value, whose outputs have
// the same names and shapes as before.
#include "passes/convert_float.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {
namespace {

TensorType converted(TensorType t, DType to) {
  if (t.dtype == DType::f32) t.dtype = to;
  return t;
}

// Finite f32 values beyond the narrow type's range become its largest finite value, not an
// infinity: exported masks use finfo(float32).min, and -inf there turns 0 * mask into NaN,
// while PyTorch's model.to(dtype) would have used finfo(dtype).min.
double saturated(double v, DType to) {
  const double max = to == DType::bf16 ? 0x1.fep127 : 65504.0;
  return std::isfinite(v) ? std::clamp(v, -max, max) : v;
}

std::shared_ptr<const HostTensor> converted(const std::shared_ptr<const HostTensor>& data, DType to) {
  if (!data || data->dtype() != DType::f32) return data;
  auto out = std::make_shared<HostTensor>(to, data->shape());
  for (int64_t i = 0; i < data->numel(); ++i) out->set(i, saturated(data->get(i), to));
  return out;
}

// The element type a node's attributes give its result (its default included), for the ops
// that have one.
std::optional<DType> dtype_attr(const Node& n) {
  switch (n.op()) {
    case Op::Cast: return CastAttrs(n).dtype();
    case Op::Constant: return ConstantAttrs(n).dtype();
    case Op::Iota: return IotaAttrs(n).dtype();
    default: return std::nullopt;
  }
}

}  // namespace

absl::StatusOr<Graph> convert_float(const Graph& g, DType to) {
  if (to != DType::bf16 && to != DType::f16)
    return invalid_argument("convert_float: the target type must be bf16 or f16, not ", dtype_name(to));
  Graph out(g.name());
  for (const auto& [sym, info] : g.symbol_bounds()) KILN_RETURN_IF_ERROR(out.set_symbol_bounds(sym, info));
  absl::flat_hash_map<const Value*, Value*> map;
  for (const Value* a : g.args()) {
    Value* c;
    if (a->is_input()) {
      KILN_ASSIGN_OR_RETURN(c, out.add_input(a->name(), converted(a->type(), to)));
    } else {
      KILN_ASSIGN_OR_RETURN(c, out.add_param(a->name(), converted(a->type(), to), converted(a->data(), to)));
    }
    map[a] = c;
  }
  for (const auto& n : g.nodes()) {
    std::vector<Value*> operands;
    for (Value* v : n->operands()) operands.push_back(map.at(v));
    Attrs attrs = n->attrs();
    if (dtype_attr(*n) == DType::f32) {
      attrs.set("dtype", to);
      if (n->op() == Op::Constant)
        if (const double* v = std::get_if<double>(&ConstantAttrs(*n).value())) attrs.set("value", saturated(*v, to));
    }
    std::vector<std::string> names;
    for (const Value* r : n->results()) names.push_back(r->name());
    absl::StatusOr<Node*> c = out.add_node(n->op(), std::move(operands), std::move(attrs), names, n->loc());
    if (!c.ok())
      return invalid_argument("storing floats as ", dtype_name(to), ": ", n->describe(), ": ", status_message(c.status()));
    for (size_t i = 0; i < n->results().size(); ++i) map[n->result(i)] = (*c)->result(i);
  }
  std::vector<Value*> outs;
  for (const Value* v : g.outputs()) outs.push_back(map.at(v));
  out.set_outputs(std::move(outs));
  return out;
}

}  // namespace kiln
