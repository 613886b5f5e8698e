// Simplification of kernel-IR indices under the ranges of the loop variables, so that the
// floordiv/mod chains reshapes produce collapse back to the affine index they stand for:
// a reshape [B, S, H] -> [B*S, H] reads x[(o // S) * S + o % S] which is x[o], and a GEMM
// operand read through such a view becomes a strided matrix a library can take.
#pragma once

#include <vector>

#include "codegen/kernel_ir.h"

namespace kiln::kir {

// The extents of the loop variables an index is evaluated under: outer var d in
// [0, outer[d]), inner var d in [0, inner[d]). Symbols are dims, so never negative.
struct VarRanges {
  std::vector<Dim> outer, inner;
};

// The floordiv and mod nodes of `i` (not those of the scalars inside it): the measure the
// simplification below and the CPU emitter's row reshapes (cpu/collapse.h) minimize.
int count_divmod(const Index& i);

// `i` in a canonical sum of products with these rewrites, each exact for every value the
// variables take (divisors are positive, as IndexKind requires):
//   (q*d + r) // d = q + r // d  and  (q*d + r) % d = r % d   (d a product of dims)
//   x // d = 0  and  x % d = x                                 (0 <= x < d by the ranges)
//   (x // a) // b = x // (a*b), and x // (a*b) = (x // a) // b where x // a and x % a
//   simplify (x % (a*b) likewise)
//   (x % (a*b)) // a = (x // a) % b  and  (x % (a*b)) % a = x % a
//   (x // (a*b)) * b + (x // a) % b = x // a                   (a = 1: (x // b) * b + x % b = x)
// Returns `i` itself unless the result has fewer floordiv/mod nodes, so an index that does
// not simplify keeps the form lowering gave it.
Index simplify_index(const Index& i, const VarRanges& ranges);

// Every load, store and index value of `k`'s stages simplified under the kernel's domain
// and the stage's extents (not the GEMM operands: lowering simplifies those over k).
void simplify_indices(Kernel& k);

}  // namespace kiln::kir
