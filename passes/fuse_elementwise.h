// The fuse_elementwise pass: partitions every node not yet in a GEMM group into kernel
// groups of elementwise/broadcast/view ops with at most one reduction pattern.
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

// Pre: `g` verifies, holds no composite op; `s` holds fuse_linear's Gemm groups.
// Post: every node except scalar constants is in exactly one group, groups are in an
// executable order (ids = positions), and:
//  - a view node (single-result) has one user: shared views were duplicated, since a
//    view is index arithmetic and costs nothing to repeat;
//  - views feeding only a GEMM group sit in its prologue (strided loads, no copy);
//  - an Elementwise group's outputs all have one shape (its index space);
//  - a Reduction group's reductions share one input shape and axes, and each output has
//    that shape or the reduced shape (a whole softmax, rms_norm with the residual add
//    before it, layer_norm followed by gelu);
//  - groups reading only parameters are weight_prep and hold nothing else;
//  - the group graph is acyclic, and no node is computed in two groups.
// Groups are grown greedily along producer->consumer edges in node order, each merge
// checked against these rules. Returns whether anything changed.
absl::StatusOr<bool> fuse_elementwise(Graph& g, Schedule& s);

}  // namespace kiln
