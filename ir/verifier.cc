#include "ir/verifier.h"

#include "absl/container/flat_hash_set.h"
#include "ir/status.h"
#include "ir/str.h"

namespace kiln {

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
    }
  }
  if (g.outputs().empty()) return fail("graph ", g.name(), " has no outputs");
  for (size_t i = 0; i < g.outputs().size(); ++i)
    if (!g.outputs()[i] || !defined.contains(g.outputs()[i]))
      return fail("output ", i, " is not defined in graph ", g.name());
  return absl::OkStatus();
}

}  // namespace kiln
