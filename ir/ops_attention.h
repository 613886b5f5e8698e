// The attention and cache_write ops (ops.def): which optional operand is which, and their
// shape/dtype rules. Their semantics are ir/reference.cc's.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/op.h"

namespace kiln {

// Positions of attention's optional operands (after q, k, v), told apart by dtype and rank:
// a float/bool operand is the mask, an integer one of rank 1 kv_lens, of rank 2 the block
// table. An error when they are not in that order or one appears twice.
struct AttentionOperands {
  std::optional<size_t> mask, kv_lens, block_table;
  bool paged() const { return block_table.has_value(); }
};
absl::StatusOr<AttentionOperands> attention_operands(std::span<const TensorType> in);
AttentionOperands attention_operands(const Node& n);  // of a node the verifier accepted

absl::StatusOr<std::vector<TensorType>> infer_attention(std::span<const TensorType> in, const Attrs& a);
absl::StatusOr<std::vector<TensorType>> infer_cache_write(std::span<const TensorType> in, const Attrs& a);

}  // namespace kiln
