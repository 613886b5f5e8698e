#include "passes/builder.h"

#include <algorithm>

namespace kiln {

Builder::Builder(Graph& g, Node* before, std::string loc) : g_(g), saved_(g.insertion_point()), loc_(std::move(loc)) {
  g_.set_insertion_point(before);
}

std::vector<Value*> Builder::op_results(Op op, std::vector<Value*> operands, Attrs attrs) {
  if (!status_.ok()) return {};
  for (Value* v : operands)
    if (!v) return {};
  absl::StatusOr<Node*> n = g_.add_node(op, std::move(operands), std::move(attrs), {}, loc_);
  if (!n.ok()) {
    status_ = n.status();
    return {};
  }
  created_.push_back(*n);
  return (*n)->results();
}

bool Builder::created(const Value* v) const {
  return v->producer() && std::find(created_.begin(), created_.end(), v->producer()) != created_.end();
}

Value* Builder::op(Op op, std::vector<Value*> operands, Attrs attrs) {
  std::vector<Value*> r = op_results(op, std::move(operands), std::move(attrs));
  return r.empty() ? nullptr : r[0];
}

Value* Builder::constant(double value, DType t) {
  AttrValue v = value;
  if (t == DType::boolean) v = value != 0;
  else if (!is_float(t)) v = static_cast<int64_t>(value);
  return op(Op::Constant, {}, {{"value", v}, {"dtype", t}});
}

Value* Builder::cast(Value* v, DType t) {
  if (!v || v->dtype() == t) return v;
  return op(Op::Cast, {v}, {{"dtype", t}});
}

}  // namespace kiln
