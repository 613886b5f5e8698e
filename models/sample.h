// Top-k / top-p / temperature sampling traced into a step, so that a decode step (and its
// CUDA graph) returns sampled token ids; the randomness is one uniform number per sequence
// that the caller draws from its own seeded generator.
#pragma once

#include "frontends/trace/trace.h"

namespace kiln::models {

// logits f32 [B, V]; per sequence: temperature f32 [B] (<= 0: greedy), top_k i32 [B]
// (<= 0: all), top_p f32 [B] (in (0, 1]; 1: all), uniform f32 [B] in [0, 1). Returns i64 [B].
// With p = softmax(logits / temperature): keeps the tokens whose p is at least the k-th
// largest (ties at the boundary kept), then the most probable of those whose mass reaches
// top_p of what is left, and returns the first token (by id) at which the kept mass summed
// in id order exceeds uniform * the kept total. Sorting-free: each threshold is found by
// bisection (32 bits in [0, 1) for the probabilities, log2 V for the index), one masked
// reduction over V per bit: ~80 passes over the logits per step.
trace::Tensor sample_tokens(const trace::Tensor& logits, const trace::Tensor& temperature, const trace::Tensor& top_k,
                            const trace::Tensor& top_p, const trace::Tensor& uniform);

}  // namespace kiln::models
