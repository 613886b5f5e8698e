// Storing a graph's floats in a narrower type: the "--bf16" of an inference compiler. A model
// exported in f32 (ONNX, or traced) runs with every f32 tensor stored as bf16 or f16, as
// `model.to(torch.bfloat16)` would; arithmetic stays f32 and rounds on store (DESIGN.md).
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Returns a copy of `g` in which every f32 value is of type `to` (bf16 or f16): inputs and
// outputs change type, parameter host data is rounded once, and Cast, Constant and Iota
// nodes that produce f32 produce `to` instead. Finite values beyond `to`'s range (constants,
// parameter data) saturate to its largest finite value, as finfo(dtype).min masks expect. Other dtypes are untouched; value names,
// symbol bounds and source locations are kept. Errors: `to` is not bf16 or f16, or a node's
// types do not infer after the change (named by the node).
absl::StatusOr<Graph> convert_float(const Graph& g, DType to);

}  // namespace kiln
