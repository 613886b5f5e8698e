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
// output is the rank's own state tensor, written in place). Rank r's tensors are on its
// device: the CPU, or cuda:r (RankGroup's default devices).
inline void check_rank_group(RankGroup& group, const Graph& g, const ShardedGraph& s, const TensorMap& whole,
                             Tolerance tol) {
  const int64_t ranks = group.ranks();
  absl::StatusOr<ShardedRun> want = evaluate_sharded(g, s, ranks, whole);
  if (!want.ok()) FAIL(status_message(want.status()));
  absl::StatusOr<std::vector<TensorMap>> shards = shard_arguments(s, ranks, whole);
  if (!shards.ok()) FAIL(status_message(shards.status()));
  std::vector<std::vector<Tensor>> args(static_cast<size_t>(ranks)), outs;
  for (int64_t r = 0; r < ranks; ++r)
    for (const Value* v : group.rank(r).module().args) {
      DeviceId dev = group.device() == Device::Cuda ? DeviceId::cuda(static_cast<int>(r)) : DeviceId::cpu();
      absl::StatusOr<Tensor> t = Tensor::from_host((*shards)[r].at(v->name()), dev);
      if (!t.ok()) FAIL(status_message(t.status()));
      args[r].push_back(*std::move(t));
    }
  absl::Status st = group.run(args, outs);
  for (int64_t r = 0; r < ranks && st.ok(); ++r) st = group.rank(r).synchronize();
  if (!st.ok()) FAIL(status_message(st));
  for (int64_t r = 0; r < ranks; ++r)
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      absl::StatusOr<HostTensor> got = outs[r][i].to_host();
      if (!got.ok()) FAIL(status_message(got.status()));
      Comparison c = compare_tensors(want->expected[r][i], *got, tol);
      INFO("rank " << r << ", output %" << g.outputs()[i]->name() << ": " << c.message);
      CHECK(c.ok);
    }
}

}  // namespace kiln::testing
