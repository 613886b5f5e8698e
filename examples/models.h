// The example models, traced from ordinary C++ with kiln's tracing API: a Llama-style MLP
// and decoder layer with symbolic batch B (and sequence length T). The example programs
// print and run them at their real sizes; the tests compile them at small sizes.
#pragma once

#include <cstdint>

#include "ir/graph.h"

namespace kiln::examples {

// x [B, dim] -> SiLU-gated MLP (hidden size `hidden`) -> RMS norm; returns the norm and
// the gated hidden activations, named as in the foundation issue's hand-written IR.
struct MlpConfig {
  int64_t dim = 4096, hidden = 11008;
  DType dtype = DType::bf16;  // of the input, the weights and every value
};
Graph trace_mlp(const MlpConfig& c = {});

// x [B, T, dim]: pre-norm causal self-attention with rotary embeddings (cos and sin
// [T, dim / heads] are inputs), then a SiLU-gated MLP, each with a residual connection.
struct DecoderConfig {
  int64_t dim = 2048, heads = 16, hidden = 5632;
  DType dtype = DType::bf16;  // of the inputs, the weights and every value
};
Graph trace_decoder_layer(const DecoderConfig& c = {});
// `layers` decoder layers in sequence, each with its own parameters (prefixed "l<i>_"), as
// one graph: the compile-time benchmark's whole-model graph.
Graph trace_decoder_stack(const DecoderConfig& c, int layers);

// x f32[B, 64] through `ops` elementwise ops (sin, + x, * x, tanh, over again), returned:
// one fused kernel as long as the graph, for the compile-time benchmark and tests.
Graph trace_elementwise_chain(int64_t ops);

}  // namespace kiln::examples
