// The reference evaluator: runs any Graph on the CPU, op by op, exactly as DESIGN.md
// defines the semantics (f32 arithmetic for f16/bf16, rounded to the storage type on every
// op's output; f64 accumulation in reductions and matmul). It is the oracle of every test.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/host_tensor.h"

namespace kiln {

using TensorMap = std::map<std::string, HostTensor>;

// `args` holds every input and every parameter without host data, by name; symbols are
// bound from their shapes. Returns the graph's outputs in order. Errors name the argument
// or node at fault (missing or extra argument, wrong dtype/shape, index out of range).
absl::StatusOr<std::vector<HostTensor>> evaluate(const Graph& g, const TensorMap& args);

// `g` as the ranks of one tensor-parallel group, rank r with the arguments args[r] (each as
// evaluate's): node by node in lockstep, a collective (ir/ops_collective.h) combining the
// ranks' operands. Returns each rank's outputs. evaluate() is the one-rank case, where a
// collective over more ranks is an error.
absl::StatusOr<std::vector<std::vector<HostTensor>>> evaluate_ranks(const Graph& g, std::span<const TensorMap> args);

// The elementwise sum of the ranks' tensors (one dtype and shape, at least one), as all_reduce
// computes it (ops.def): in f64 in rank order, rounded once (integers: wrapping). What
// evaluate_ranks and the host group of compiled ranks (runtime/communicator.h) both sum with.
HostTensor sum_over_ranks(std::span<const HostTensor* const> in);

// Fresh random tensors for every input and every parameter without data, shaped under
// `b`: floats uniform in [-1, 1), integers in [0, int_high), bools fair coins.
TensorMap random_args(const Graph& g, const Bindings& b, uint64_t seed, int64_t int_high = 2);

// Scales every parameter of rank >= 2 in `args` by 1/sqrt(its fan-in, the product of its
// dims after the first: a [out, in] weight's in, a conv weight [Cout, C/groups, k...]'s
// C/groups*K), as in trained layers: uniform [-1, 1) weights make activations grow with the
// width until bf16 rounding flips, amplified through a layer, exceed any bf16 tolerance.
void scale_weights_by_fan_in(const Graph& g, TensorMap& args);

}  // namespace kiln
