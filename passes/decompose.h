// The decompose pass: composite ops become primitives in numerically stable forms.
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Pre: `g` verifies. Post: no softmax, log_softmax, layer_norm, rms_norm or
// scaled_dot_product_attention node remains; each became primitives that compute the same
// value: softmax subtracts the row max, statistics are computed in f32 (f16/bf16 operands
// are cast to f32 first and the result cast back), causal masks compare iota indices.
// Returns whether anything changed. Errors name the node (e.g. attention with a symbolic
// head dim and no explicit scale).
absl::StatusOr<bool> decompose(Graph& g);

}  // namespace kiln
