// Evaluation of a node on the host when all its operands are known (scalar constants or
// parameters with host data), through the reference evaluator so folding cannot change
// semantics. Used by simplify (constant folding) and fuse_linear (concatenated weights).
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Whether `n` has operands, every one a scalar constant or a parameter with host data, and
// its results are static with at most `max_numel` elements each.
bool foldable(const Node& n, int64_t max_numel);

// Pre: foldable(*n, ...). Replaces n's results with a scalar constant (rank 0) or a new
// parameter carrying the computed data, each named as the value it replaces, and erases n.
// Returns the replacement of result 0.
absl::StatusOr<Value*> fold_on_host(Graph& g, Node* n);

}  // namespace kiln
