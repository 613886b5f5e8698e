// A chain of view ops (reshape, permute, slice, expand, squeeze, unsqueeze) read as one
// strided view of the dense buffer it starts from: what a routine that loads through
// strides (the fused attention step) needs in place of the copy a view kernel would make.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "ir/graph.h"

namespace kiln {

// `v` as elements of `base` (a dense row-major buffer): element (i0, i1, ..) of v is at
// base + offset + sum(i_d * strides[d]). Symbolic, like the shapes.
struct StridedView {
  const Value* base = nullptr;
  Dim offset;
  std::vector<Dim> strides;  // one per dim of v (a broadcast or size-1 dim may have 0)
};

// Walks back from `v` through the producers that `through` accepts (each a view op) to the
// first value whose producer it does not accept, and composes those views. nullopt when
// one of them is not a strided view of its input (a reshape that merges dims which are
// not contiguous there, or that splits or merges symbolic dims it cannot match; a slice
// with a negative step).
std::optional<StridedView> strided_view(const Value* v, const std::function<bool(const Node*)>& through);

}  // namespace kiln
