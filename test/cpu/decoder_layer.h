// The Llama-style decoder layer of examples/decoder_layer.kiln with its sizes as parameters,
// so that tests run the same layer small and at full size, and arguments for it.
#pragma once

#include <cstdint>
#include <string>

#include "ir/graph.h"
#include "ir/reference.h"

namespace kiln::testing {

// The layer's text IR: model dim d, h heads of dim e (h * e == d), MLP hidden dim f.
// decoder_layer_text(2048, 16, 128, 5632) is examples/decoder_layer.kiln.
std::string decoder_layer_text(int d, int h, int e, int f);

// Random arguments with each 2-D weight scaled by 1/sqrt(fan-in), as trained layers are:
// unscaled uniform weights make activations grow with the width (attention scores in the
// hundreds at full size), until bf16 rounding flips, amplified through the layer, exceed
// any bf16 tolerance whatever the backend.
TensorMap layer_args(const Graph& g, const Bindings& b, uint64_t seed);

}  // namespace kiln::testing
