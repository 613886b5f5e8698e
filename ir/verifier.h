// Checks the invariants every pass must preserve: SSA order, no dangling or erased values,
// result types equal to what the op's rule infers, outputs defined, names unique.
#pragma once

#include "absl/status/status.h"
#include "ir/graph.h"

namespace kiln {

// The error names the node ("%g = linear (mlp.kiln:2:3)") and what was expected.
absl::Status verify(const Graph& g);

}  // namespace kiln
