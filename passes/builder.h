// Emits replacement nodes for a pass: new nodes go before a given node and carry its source
// location. The first failure is kept and later calls are no-ops, so rewrite rules read as
// straight-line code and check status() once at the end.
#pragma once

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "ir/op_attrs.h"  // constant_value, which passes use with the builder

namespace kiln {

class Builder {
 public:
  // Inserts before `before` (nullptr: at the end), labelling nodes with `loc`; on
  // destruction the insertion point is the one before, so that builders nest (a fold inside
  // a rewrite).
  Builder(Graph& g, Node* before, std::string loc = {});
  ~Builder() { g_.set_insertion_point(saved_); }

  Value* op(Op op, std::vector<Value*> operands, Attrs attrs = {});
  Value* constant(double value, DType t);
  Value* cast(Value* v, DType t);  // v itself when it already has dtype t
  // One call per result, for multi-result ops (split).
  std::vector<Value*> op_results(Op op, std::vector<Value*> operands, Attrs attrs = {});

  const absl::Status& status() const { return status_; }
  Graph& graph() { return g_; }
  // Whether `v` is the result of a node this builder added.
  bool created(const Value* v) const;

 private:
  Graph& g_;
  Node* saved_;
  std::string loc_;
  absl::Status status_;
  std::vector<const Node*> created_;
};

}  // namespace kiln
