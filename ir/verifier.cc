#include "ir/verifier.h"

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "ir/checked.h"
#include "ir/op_attrs.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

absl::Status check_slice_range(const Graph& g, const Node& n) {
  const Shape& shape = n.operand(0)->shape();
  int64_t rank = static_cast<int64_t>(shape.size()), axis = SliceAttrs(n).axis();
  const Dim& dim = shape[axis < 0 ? axis + rank : axis];
  auto range = [&](const std::string& s) {
    SymbolInfo info = g.symbol_info(s);
    return SymRange{info.min, info.max};
  };
  for (const auto& [e, what] : slice_conditions(slice_bounds(n), dim)) {
    std::optional<int64_t> lo = value_range(e, range).lo;
    if (!lo || *lo < 0) {
      std::set<std::string> syms;
      e.collect_symbols(syms);
      std::string bounds = str_join(syms, ", ", [&](const std::string& s) {
        SymbolInfo i = g.symbol_info(s);
        return str_cat(s, " in [", i.min, ", ", i.max ? std::to_string(*i.max) : std::string("inf"), "]");
      });
      return absl::FailedPreconditionError(str_cat("slice ", what, " does not hold for every value of ",
                                                   bounds, " (start ", SliceAttrs(n).start().to_string(), ", end ",
                                                   SliceAttrs(n).end().to_string(), ", dim ", dim.to_string(),
                                                   "); bound the symbols (symbol S in [lo, hi])"));
    }
  }
  return absl::OkStatus();
}

absl::Status check_state(const Graph& g) {
  auto fail = [](auto&&... parts) { return absl::FailedPreconditionError(str_cat(parts...)); };
  absl::flat_hash_map<const Value*, const Node*> writer;
  for (const auto& n : g.nodes()) {
    if (!writes_state(*n)) continue;
    const Value* s = n->operand(0);
    if (!s->is_state())
      return fail(n->describe(), ": writes %", s->name(), ", which is not a state input (mark the input `state`)");
    if (auto [it, fresh] = writer.try_emplace(s, n.get()); !fresh)
      return fail(n->describe(), ": state %", s->name(), " is already written by ", it->second->describe());
  }
  for (const auto& n : g.nodes())
    for (size_t i = 0; i < n->num_operands(); ++i)
      if (auto it = writer.find(n->operand(i)); it != writer.end() && it->second != n.get())
        return fail(n->describe(), ": reads state %", n->operand(i)->name(), ", which ", it->second->describe(),
                    " writes; read its result (the state after the write) instead");
  absl::flat_hash_set<const Value*> returned(g.outputs().begin(), g.outputs().end());
  for (const Value* v : g.outputs())
    if (v && v->is_state())
      return fail("graph ", g.name(), " returns state input %", v->name(), "; the caller holds it already");
  for (const auto& n : g.nodes())
    if (writes_state(*n) && !returned.contains(n->result()))
      return fail(n->describe(), ": the graph must return the updated state %", n->result()->name(),
                  " (an alias of %", n->operand(0)->name(), ", never a copy)");
  return absl::OkStatus();
}

absl::Status verify(const Graph& g) {
  auto fail = [](auto&&... parts) { return absl::FailedPreconditionError(str_cat(parts...)); };
  absl::flat_hash_set<const Value*> defined;
  absl::flat_hash_set<std::string> names;
  auto define = [&](const Value* v, const std::string& where) -> absl::Status {
    if (!names.insert(v->name()).second) return fail(where, ": value %", v->name(), " is defined twice");
    defined.insert(v);
    return absl::OkStatus();
  };
  for (const Value* v : g.args()) {
    if (v->producer()) return fail("argument %", v->name(), " has a producer");
    KILN_RETURN_IF_ERROR(define(v, "graph arguments"));
    if (absl::Status s = check_representable(v->dtype(), v->shape()); !s.ok())
      return fail("argument %", v->name(), ": ", s.message());
  }
  for (const auto& n : g.nodes()) {
    std::vector<TensorType> in;
    for (size_t i = 0; i < n->num_operands(); ++i) {
      const Value* v = n->operand(i);
      if (!v) return fail(n->describe(), ": operand ", i, " is null");
      if (!defined.contains(v))
        return fail(n->describe(), ": operand ", i, " (%", v->name(), ") is not defined before its use");
      in.push_back(v->type());
    }
    Attrs attrs = n->attrs();
    absl::StatusOr<std::vector<TensorType>> want = infer_types(n->op(), in, attrs);
    if (!want.ok()) return fail(n->describe(), ": ", want.status().message());
    if (want->size() != n->results().size())
      return fail(n->describe(), ": expected ", want->size(), " results, has ", n->results().size());
    for (size_t i = 0; i < want->size(); ++i) {
      const Value* r = n->result(i);
      if (r->producer() != n.get() || r->result_index() != static_cast<int>(i))
        return fail(n->describe(), ": result ", i, " does not point back to its node");
      if (r->type() != (*want)[i])
        return fail(n->describe(), ": result %", r->name(), " has type ", r->type().to_string(),
                    ", but the op gives ", (*want)[i].to_string());
      KILN_RETURN_IF_ERROR(define(r, n->describe()));
      if (absl::Status s = check_representable(r->dtype(), r->shape()); !s.ok())
        return fail(n->describe(), ": result %", r->name(), ": ", s.message());
    }
    if (n->op() == Op::Slice)
      if (absl::Status s = check_slice_range(g, *n); !s.ok()) return fail(n->describe(), ": ", s.message());
  }
  if (g.outputs().empty()) return fail("graph ", g.name(), " has no outputs");
  for (size_t i = 0; i < g.outputs().size(); ++i)
    if (!g.outputs()[i] || !defined.contains(g.outputs()[i]))
      return fail("output ", i, " is not defined in graph ", g.name());
  return check_state(g);
}

}  // namespace kiln
