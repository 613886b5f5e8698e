// Reshaping a kernel's innermost domain dims for the CPU's emitter (merging them; splitting
// one: RowForm below). The emitter walks the outer domain as rows of its last dim, each a
// vectorized loop with a scalar remainder, and pays per row (the carried indices, the vector
// loop's checks, the remainder): a GroupNorm's affine and SiLU over [B, C, 10, 10] ran rows
// of 10 at 2 ns an element, rows of 400 at a tenth of that. Two dims d (extent D), e (extent
// E) that every index of the kernel reads only as d * E + e (scaled alike) are one dim of
// extent D * E: the same points in the same flat order, so the entry's ABI (a range of the
// flat outer domain) is unchanged.
//
// The test: every index with d -> q // E and e -> q % E, simplified (index_simplify.h) under
// the merged ranges, holds no more floor divisions and modulos than before. A dim read alone
// (nearest upsampling's o // 2, a concat's select on it, a clamped pad) keeps its division
// and the dims stay apart.
#pragma once

#include <optional>

#include "codegen/kernel_ir.h"

namespace kiln::cpu {

// `k` with its last domain dims merged as far as they pass the test (the last two, then the
// merged dim with the one before it, ...); nullopt where none merge (a GEMM kernel's domain
// is its GEMM's and stays).
std::optional<kir::Kernel> collapse_rows(const kir::Kernel& k);

// What the emitter compiles for `k`: its rows collapsed, then, for an elementwise kernel (one
// map stage) that reads its last dim o as o // c and o % c (nearest upsampling by c, a
// concat interleaving c inputs; c <= 4), that dim split into u = o // c, an outer dim, and
// r = o % c, the map stage's inner loop, where that leaves fewer divisions: the reads of
// o // c become consecutive and those of o interleaved groups of c (whole vector loads and
// shuffles, not gathers). `split`: c, or 1. The split kernel's flat outer point p covers the
// original points c p .. c p + c - 1 (the entry maps a range of the original's).
//
// fold_rows_below: rows shorter than this end in masked vector iterations instead of a scalar
// remainder (the vectorizer's predicate hint), where the kernel is one map stage over no
// inner loops and not split (0: never). A SiLU at 3 taps of a resize over rows of 20 took 158
// us with the scalar remainder, 36 folded (build machine). Not long rows: a folded loop is not
// interleaved, and a GroupNorm's SiLU over rows of 1600 ran 2-3x slower folded on the Xeon of
// the GPU machine (8-lane vectors there); nor a max pool's 2x2 windows (5 -> 25 us folded).
struct RowForm {
  kir::Kernel kernel;
  int64_t split = 1;
  int64_t fold_rows_below = 0;
};
RowForm row_form(const kir::Kernel& k);

}  // namespace kiln::cpu
