// Checks the invariants every pass must preserve: SSA order, no dangling or erased values,
// result types equal to what the op's rule infers, outputs defined, names unique.
#pragma once

#include "absl/status/status.h"
#include "ir/graph.h"

namespace kiln {

// The error names the node ("%g = linear (mlp.kiln:2:3)") and what was expected.
absl::Status verify(const Graph& g);

// DESIGN.md, State: a state input is written at most once, by an op that aliases it (its
// operand 0); only state inputs are written; once written, it is read only through the
// writer's result (every read sees the new value); the graph returns that result and never
// a state input itself. verify() checks it; the parser reports it at the graph's return.
absl::Status check_state(const Graph& g);

// A slice whose bounds are not clamped (symbolic ones, ops.def) lies in its dim for every
// value the graph's symbol bounds allow (`symbol S in [lo, hi]`), or the error says which
// condition may fail. Builders call it where they make slices; verify() calls it for all.
absl::Status check_slice_range(const Graph& g, const Node& slice);

}  // namespace kiln
