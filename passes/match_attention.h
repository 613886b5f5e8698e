// The match_attention rewrite: attention written out as MatMul -> Softmax -> MatMul (as HF
// models export it to ONNX) becomes one attention op, so that a fused kernel can run it.
// decompose runs it first (the softmax must still be whole).
#pragma once

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

// Pre: `g` verifies. Post: every softmax over the last axis of s, where s is
// matmul(q, kt) [/ c or * c] [where(m, ., -big)] [+ mask], with q [B, H, Tq, D], kt a
// [B, H, D, Tk] value, c a scalar, m bool, mask a float broadcasting to [B, H, Tq, Tk], whose
// only user is matmul(., v) (same-dtype casts allowed between any two), and whose
// intermediate values have no other user, is gone: that matmul's result is attention(q',
// permute(kt), v[, mask']) with scale = 1/c or c for a constant c (else q' = q / c or q * c
// and scale 1), mask' = where(m, 0, -big) + mask (one additive mask, equal up to rounding
// of the masked scores, which softmax sends to 0). Returns whether anything changed.
absl::StatusOr<bool> match_attention(Graph& g);

}  // namespace kiln
