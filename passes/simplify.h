// The simplify pass: algebraic identities, constant folding, CSE and DCE, to a fixpoint.
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Pre: `g` verifies. Post: no rule of simplify.cc's table applies (x+0, x-0, x*1, x/1,
// neg(neg x), cast to the same dtype, identity views, permute of permute, reshape of
// reshape, one-operand concat); no node has operands that are all scalar constants or
// parameters with host data (up to 1M elements; bigger ones are left to run; iota stays
// index arithmetic); a node a rule made carries the name of the value it replaced; no two nodes
// compute the same op on the same operands with the same attributes; every node feeds an
// output. GEMM epilogues: an elementwise op reading reshape(z), z a GEMM's result (or an
// elementwise function of one), reads z instead and is reshaped after (its other operands
// reshaped to z's shape), so that fuse_linear makes it part of the GEMM's epilogue (a conv's
// bias, batch norm, activation, residual); y * s, y / s (s a parameter-only per-row scale,
// y = A @ B (+ c) with A and c parameter-only, y read once) become (A*s) @ B (+ c*s), and
// parameter-only adds and subtracts join the bias: batch norm folds into the conv's weight
// and bias (on the host when they have data). Returns whether anything changed.
absl::StatusOr<bool> simplify(Graph& g);

}  // namespace kiln
