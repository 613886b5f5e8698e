// The decompose pass: composite ops become primitives in numerically stable forms.
#pragma once

#include <functional>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Pre: `g` verifies. First, attention written out as matmul -> softmax -> matmul becomes the
// attention op (match_attention, passes/match_attention.h: while attention is decomposed here
// the match is this pass's prelude; it becomes a pipeline step of its own once fused
// attention kernels keep the op). Post: no softmax, log_softmax, layer_norm, rms_norm,
// scaled_dot_product_attention, attention, conv, conv_transpose, max_pool or avg_pool node
// remains (attention: GEMM -> softmax -> GEMM, GQA heads as GEMM rows, a paged cache
// gathered through its block table, visibility from iotas and kv_lens); each
// became primitives that compute the same value: softmax subtracts the row max, statistics
// are computed in f32 (f16/bf16 operands are cast to f32 first and the result cast back),
// causal masks compare iota indices; a conv is an im2col `window` view reshaped into a
// matmul with the weight (groups as a batch dim) plus bias, then reshaped to [N, Cout, o...];
// conv_transpose is a stride-1 conv over the input with zeros inserted; a pool reduces the
// kernel dims of a `window` (max, or an f32 sum divided by the window's element count).
// all_gather and reduce_scatter work along axis 0 (a permute to and from it where their axis
// was another). Returns whether anything changed. Errors name the node (e.g. attention with a symbolic
// head dim and no explicit scale).
// `keep_attention`, when set, says which attention nodes stay whole (the target runs them as
// one fused step, codegen/attention.h); those are the one exception to the post-condition.
// An sdpa that is such an attention (4-D, nothing broadcast; causal only with Tq = Tk)
// becomes one and stays whole too.
using KeepAttention = std::function<bool(const Node&)>;
absl::StatusOr<bool> decompose(Graph& g, const KeepAttention& keep_attention = nullptr);

}  // namespace kiln
