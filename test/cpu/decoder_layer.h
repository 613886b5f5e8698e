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

// Random arguments with each 2-D weight scaled by 1/sqrt(fan-in) (scale_weights_by_fan_in).
TensorMap layer_args(const Graph& g, const Bindings& b, uint64_t seed);

}  // namespace kiln::testing
