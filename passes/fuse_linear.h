// The fuse_linear pass: horizontal merging of GEMMs that share an input, and epilogue
// attachment of the elementwise ops that consume a GEMM's output.
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/schedule.h"

namespace kiln {

// Pre: `g` verifies, holds no composite op, and `s` has no groups.
// Post: (1) linears (matmuls) that read the same input with parameter weights of the same
// dtype (and all with or all without bias) are one linear (matmul) over weights
// concatenated along the output features, and each former result is a slice of it. The
// concatenation is folded at compile time into a new parameter when every weight has host
// data; otherwise it stays a concat node over parameters only, which fuse_elementwise
// puts in a weight_prep group (run once when the parameters are bound, never per call).
// (2) `s` holds one Gemm group per GEMM node, in node order; nodes[0] is the GEMM, followed
// by its epilogue: the chain of elementwise/broadcast ops, each the only user of the
// previous value, with the GEMM output's shape (bias add, activation, scale, cast,
// residual add, multiply by a same-shape tensor). Returns whether anything changed.
absl::StatusOr<bool> fuse_linear(Graph& g, Schedule& s);

}  // namespace kiln
