// Tensor-parallel graphs on a device (compiler/parallel.h): a sharded graph compiled as a
// RankGroup, called on the shards of whole arguments, each rank's outputs against its share
// of the whole graph's on the reference evaluator (passes/shard.h, evaluate_sharded). Shared
// by the CPU (host group) and CUDA (NCCL) tests.
#pragma once

#include <catch2/catch.hpp>

#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "passes/shard.h"

namespace kiln::testing {

// Every rank's call of `group` on its shards of `whole`, compared output by output (a state
// output is the rank's own state tensor, written in place).
inline void check_rank_group(RankGroup& group, const Graph& g, const ShardedGraph& s, const TensorMap& whole,
                             Tolerance tol) {
  const int64_t ranks = group.ranks();
  absl::StatusOr<ShardedRun> want = evaluate_sharded(g, s, ranks, whole);
  if (!want.ok()) FAIL(status_message(want.status()));
  absl::StatusOr<std::vector<TensorMap>> shards = shard_arguments(s, ranks, whole);
  if (!shards.ok()) FAIL(status_message(shards.status()));
  absl::StatusOr<std::vector<std::vector<HostTensor>>> got = group.run_host(*shards);
  if (!got.ok()) FAIL(status_message(got.status()));
  for (int64_t r = 0; r < ranks; ++r)
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      Comparison c = compare_tensors(want->expected[r][i], (*got)[r][i], tol);
      INFO("rank " << r << ", output %" << g.outputs()[i]->name() << ": " << c.message);
      CHECK(c.ok);
    }
}

}  // namespace kiln::testing
