// Tensor-parallel graphs on a device (compiler/parallel.h): a sharded graph compiled as a
// RankGroup, called on the shards of whole arguments, each rank's outputs against its share
// of the whole graph's on the reference evaluator (passes/shard.h, evaluate_sharded). Shared
// by the CPU (host group) and CUDA (NCCL) tests; and the memory of overlapped collectives.
#pragma once

#include <catch2/catch.hpp>

#include "codegen/program.h"
#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "passes/shard.h"
#include "test/common/catch_helpers.h"

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

// Rank 0's graph of `s`, sharded over `ranks`, as a group of one runs it (a one-GPU NCCL group,
// a host group of one): every collective over 1 rank, so each all_reduce sums one partial value.
inline Graph one_rank_graph(const ShardedGraph& s, int64_t ranks) {
  std::string text = print_graph(s.graph);
  const std::string from = str_cat("ranks=", ranks);
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at))
    text.replace(at, from.size(), "ranks=1");
  return parse_or_fail(text);
}

// Under `b`, every overlapped collective of `p` (CollectiveStep::join): no arena buffer of a
// step between it and its join shares a byte with its input's or output's (the memory plan
// keeps them live until the join), except its input itself, which such a step may only read.
// Returns how many collectives overlap.
inline int check_overlapped_memory(const Program& p, const Bindings& b) {
  absl::StatusOr<Program::ArenaLayout> l = p.arena_layout(b);
  if (!l.ok()) FAIL(status_message(l.status()));
  auto extent = [&](int buf) -> std::optional<std::pair<int64_t, int64_t>> {
    if (buf < 0 || p.buffers[buf].placement != Placement::Arena) return std::nullopt;
    absl::StatusOr<std::vector<int64_t>> shape = evaluate_shape(p.buffers[buf].shape, b);
    if (!shape.ok()) FAIL(status_message(shape.status()));
    int64_t bytes = dtype_size(p.buffers[buf].dtype);
    for (int64_t d : *shape) bytes *= d;
    int64_t at = l->offsets[p.buffers[buf].index];
    return std::pair{at, at + bytes};
  };
  int overlapped = 0;
  for (size_t i = 0; i < p.steps.size(); ++i) {
    if (p.steps[i].kind != Step::Kind::Collective || p.collectives[p.steps[i].index].join < 0) continue;
    const CollectiveStep& c = p.collectives[p.steps[i].index];
    ++overlapped;
    for (size_t j = i + 1; j < static_cast<size_t>(c.join); ++j)
      for (int buf : p.buffers_of(p.steps[j]))
        for (int mine : {c.input, c.output}) {
          std::optional<std::pair<int64_t, int64_t>> x = extent(buf), y = extent(mine);
          if (buf == c.input || !x || !y || x->first == x->second || y->first == y->second) continue;
          INFO("step " << j << "'s b" << buf << " at [" << x->first << ", " << x->second << ") and step " << i << "'s b"
                       << mine << " at [" << y->first << ", " << y->second << ")");
          CHECK((x->second <= y->first || y->second <= x->first));
        }
  }
  return overlapped;
}

}  // namespace kiln::testing
