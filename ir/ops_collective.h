// The collective ops of tensor parallelism (ops.def: all_reduce, all_gather, reduce_scatter):
// their shape and dtype rules. Their semantics are ir/reference.cc's (evaluate_ranks runs
// one graph as N ranks in one process).
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/op.h"

namespace kiln {

bool is_collective(Op op);
// The `ranks` attribute of a collective node.
int64_t collective_ranks(const Node& n);

absl::StatusOr<std::vector<TensorType>> infer_all_reduce(std::span<const TensorType> in, const Attrs& a);
absl::StatusOr<std::vector<TensorType>> infer_all_gather(std::span<const TensorType> in, const Attrs& a);
absl::StatusOr<std::vector<TensorType>> infer_reduce_scatter(std::span<const TensorType> in, const Attrs& a);

}  // namespace kiln
