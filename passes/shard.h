// The shard pass (tensor parallelism, issue 22): a graph over whole weights becomes the graph
// that every rank of an N-rank group runs over its own shard of them, with the collectives
// (ir/ops_collective.h) that make each rank's outputs the original's. Megatron-style: a plan
// says which arguments are split along which axis (a linear's weight [out, in] along 0 is
// column-parallel, along 1 row-parallel; a KV cache along its kv-head axis); every other
// argument is replicated. The pass then follows each value's layout through the graph:
//
//   replicated     every rank holds the whole value
//   split(a, g)    rank r holds chunk r * g / N of g equal chunks along axis a (g divides N;
//                  g == N is the plain split, each chunk on one rank; g < N replicates each
//                  chunk on N / g consecutive ranks)
//   partial        the value is the sum of the ranks' values (a row-parallel GEMM's result)
//
// Grouped splits are how kv heads fewer than the ranks are shared, as Megatron and vLLM do:
// with KVH kv heads, N ranks and N % KVH == 0, the k/v projections, their biases and the
// caches split into KVH groups, so rank r holds kv head r * KVH / N whole, and its N-th of
// the query heads all belong to that kv head's group: attention stays local, no gather.
// (A split into N chunks of a kv-head axis that N does not divide moves the split inside a
// head, and the projections are gathered before attention; notes say so.)
//
// Ops keep a split where their result is the same op on the chunks (elementwise and
// broadcast ops, reductions and norms over other axes, views that keep the axis whole,
// attention and cache writes split by heads, a GEMM's rows or output columns); a GEMM whose
// contraction axis is split on both operands gives a partial value, which one all_reduce
// makes whole where an op first needs it whole (before a bias is added); a sum or
// difference of partial values that are used nowhere else stays partial (a parallel-residual
// block's attention and MLP outputs, as GPT-J, GPT-NeoX and Falcon add them, take one
// all_reduce; adding a replicated value sums first); a gather from a table split by rows
// (a vocab-parallel embedding) is each rank's masked lookup in its rows (which needs the
// rank's index: the input kRankInput), partial and summed at once. Where an op has no split form here,
// its split operands are made whole first (all_gather; all_reduce for partial values) and
// the pass says so in `notes`: correct, but communication a better plan
// would avoid. Graph outputs come out replicated, except those that are (or write) state
// inputs, which stay split as the plan splits the state.
//
// Pre: `g` verifies and holds no collective. Post: the result verifies; its arguments have
// the original names and the shapes of rank 0's shard (every rank's shard has that shape);
// evaluate_ranks over the shards (shard_arguments) gives every rank the outputs that
// evaluate gives on the whole arguments, up to the order of the sums.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/reference.h"

namespace kiln {

// The input a sharded graph gets when a rank's computation depends on which rank it is (a
// vocab-parallel embedding's rows): i64[], rank r's index, bound by shard_arguments.
inline constexpr std::string_view kRankInput = "tp_rank";

struct ShardRule {
  std::string pattern;          // an argument name; '*' matches any run of characters
  std::optional<int64_t> axis;  // split along it (negative: from the end); nullopt: replicated
  int64_t groups = 0;           // into this many chunks (dividing the ranks); 0: one per rank
};

struct ShardPlan {
  int64_t ranks = 1;
  std::vector<ShardRule> rules;  // the first rule whose pattern matches an argument decides
};

// Hugging Face Llama/Mistral/Qwen names (models/llama.cc): q/k/v/gate/up projections
// column-parallel (q/k/v biases with them), o/down row-parallel, KV caches by kv heads
// ("k_cache.*"/"v_cache.*": contiguous [B, KVH, S, D] along 1, paged [NB, block, KVH, D]
// along 2); with `vocab_parallel`, the embedding and LM head by vocabulary rows (the
// embedding a masked lookup summed over the ranks, the logits gathered: the vocabulary must
// divide by the ranks); norms replicated. Given `kv_heads` (the config's) fewer than the
// ranks and dividing them, the k/v projections, biases and caches split into kv_heads
// groups: each kv head replicated on ranks / kv_heads ranks.
ShardPlan llama_shard_plan(int64_t ranks, bool paged = false, bool vocab_parallel = true, int64_t kv_heads = 0);

// How an argument is split: along `axis` into `groups` equal chunks, rank r of N holding
// chunk r * groups / N (groups == N: chunk r).
struct ArgSplit {
  int64_t axis = 0, groups = 1;
  int64_t chunk(int64_t rank, int64_t ranks) const { return rank * groups / ranks; }
  bool operator==(const ArgSplit&) const = default;
};

struct ShardedGraph {
  Graph graph;                            // what every rank runs
  std::map<std::string, ArgSplit> split;  // argument name -> how it is split across ranks
  std::vector<std::string> notes;         // where a value was made whole for an op (see above)
};

absl::StatusOr<ShardedGraph> shard(const Graph& g, const ShardPlan& plan);

// Each rank's arguments: rank r gets its chunk of every split argument (ArgSplit::chunk),
// the others whole, and kRankInput = r where the graph has it.
absl::StatusOr<std::vector<TensorMap>> shard_arguments(const ShardedGraph& s, int64_t ranks, const TensorMap& whole);

// `g` on the whole arguments (evaluate) and `s` on their shards as `ranks` ranks
// (evaluate_ranks): for each rank, the outputs it should give (its share of g's: its chunk
// of each output that is a split state input or its write, the others whole) and those it gives.
struct ShardedRun {
  std::vector<std::vector<HostTensor>> expected, got;  // [rank][output]
};
absl::StatusOr<ShardedRun> evaluate_sharded(const Graph& g, const ShardedGraph& s, int64_t ranks,
                                            const TensorMap& whole);

}  // namespace kiln
