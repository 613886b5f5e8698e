#include "passes/fold.h"

#include "absl/container/flat_hash_map.h"
#include "ir/ops_collective.h"
#include "ir/reference.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/builder.h"

namespace kiln {

bool foldable(const Node& n, int64_t max_numel) {
  // Nodes without operands (constants, iota) are already as cheap as they get: an iota is
  // index arithmetic, which folding would turn into loads.
  if (n.num_operands() == 0) return false;
  // An extern call is the user's function, run where it is compiled for, never at compile time.
  if (n.op() == Op::ExternCall) return false;
  // A collective's result depends on the other ranks' operands.
  if (is_collective(n.op())) return false;
  for (const Value* v : n.operands()) {
    bool known = constant_value(v).has_value() || (v->is_param() && v->data());
    if (!known) return false;
  }
  for (const Value* r : n.results()) {
    std::optional<int64_t> numel = shape_numel(r->shape()).constant();
    // [B, 0] has a constant size but still needs B.
    if (!shape_is_static(r->shape()) || !numel || *numel > max_numel) return false;
  }
  return true;
}

absl::StatusOr<Value*> fold_on_host(Graph& g, Node* n) {
  // A one-node graph over copies of the operands (one per distinct operand: mul(%w, %w)
  // reads one parameter), run by the reference evaluator.
  Graph mini("fold");
  absl::flat_hash_map<const Value*, Value*> copy;
  std::vector<Value*> operands;
  for (const Value* v : n->operands()) {
    Value* c;
    if (auto it = copy.find(v); it != copy.end()) {
      c = it->second;
    } else if (v->is_param()) {
      KILN_ASSIGN_OR_RETURN(c, mini.add_param(v->name(), v->type(), v->data()));
    } else {
      KILN_ASSIGN_OR_RETURN(Node* k, mini.add_node(Op::Constant, {}, v->producer()->attrs(), {v->name()}));
      c = k->result();
    }
    copy[v] = c;
    operands.push_back(c);
  }
  KILN_ASSIGN_OR_RETURN(Node* m, mini.add_node(n->op(), operands, n->attrs()));
  mini.set_outputs(m->results());
  absl::StatusOr<std::vector<HostTensor>> out = evaluate(mini, {});
  if (!out.ok()) return invalid_argument("folding ", n->describe(), ": ", status_message(out.status()));

  Builder b(g, n, n->loc());
  std::vector<Value*> repl;
  for (size_t i = 0; i < out->size(); ++i) {
    HostTensor& t = (*out)[i];
    Value* r = n->result(i);
    Value* v;
    if (t.rank() == 0) {
      v = b.constant(is_float(t.dtype()) ? t.get(0) : static_cast<double>(t.get_int(0)), t.dtype());
    } else {
      KILN_ASSIGN_OR_RETURN(
          v, g.add_param(g.fresh_name(r->name()), r->type(), std::make_shared<const HostTensor>(std::move(t))));
    }
    KILN_RETURN_IF_ERROR(b.status());
    repl.push_back(v);
  }
  std::vector<std::string> names;
  for (size_t i = 0; i < repl.size(); ++i) {
    names.push_back(n->result(i)->name());
    g.replace_all_uses(n->result(i), repl[i]);
  }
  g.erase(n);
  // The replacements take the folded values' names, so that dumps stay readable.
  for (size_t i = 0; i < repl.size(); ++i)
    KILN_RETURN_IF_ERROR(g.rename(repl[i], names[i]));
  return repl[0];
}

}  // namespace kiln
