// The fused-form rewrite of kernel IR: gelu's tanh form, 1 + tanh(u) and a division by a
// row statistic become kir::Intrinsic nodes, which the CUDA and CPU backends emit as their
// fast sequences (found from structure, never from printed text).
#pragma once

#include "codegen/kernel_ir.h"

namespace kiln::kir {

// Rewrites every expression of `k` (lets, stores, reduce values, GEMM operands and the
// scalars inside indices), outermost match first, all in f32:
//   (0.5 * x) * (1 + tanh(c * (x + ((k * x) * x) * x)))  ->  gelu_tanh(x, k1, k0)
//       as codegen/lower.cc writes the tanh gelu (the products and the 1 + tanh in either
//       operand order; every x the same tree by Expr::same_as; c, k constants), with
//       k0 = -2 c log2(e) and k1 = k0 k from the f32 values of c and k, rounded to f32;
//   1 + tanh(u)  ->  one_plus_tanh(u)
//   a / s, s a stage result (under casts or not), a float  ->  mul_reciprocal(a, s), in the
//       division's dtype.
// Pre: `k` is well formed (kernel_ir.h) and has no schedule. Post: the same kernel with those
// trees replaced (operands rewritten too); a node shared by several parents is rewritten
// once and stays shared, and a node with no match below it is the same node. Returns
// whether anything changed.
bool rewrite_intrinsics(Kernel& k);

}  // namespace kiln::kir
