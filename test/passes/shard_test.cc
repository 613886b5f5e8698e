// The shard pass (passes/shard.h): sharded graphs run as N ranks on the reference evaluator
// (evaluate_ranks) against the unsharded graph on the whole arguments, the collectives it
// inserts read from the printed IR, and the plans it refuses.
#include <algorithm>

#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "ir/verifier.h"
#include "models/llama.h"
#include "passes/shard.h"
#include "test/common/graphs.h"
#include "test/common/llama_args.h"
#include "test/passes/util.h"

namespace kiln::testing {
namespace {

ShardedGraph shard_or_fail(const Graph& g, const ShardPlan& plan) {
  absl::StatusOr<ShardedGraph> s = shard(g, plan);
  if (!s.ok()) FAIL(status_message(s.status()));
  absl::Status v = verify(s->graph);
  INFO(print_graph(s->graph));
  REQUIRE(v.ok());
  return *std::move(s);
}

int64_t count_ops(const Graph& g, Op op) {
  return std::count_if(g.nodes().begin(), g.nodes().end(), [&](const auto& n) { return n->op() == op; });
}

// Every rank's outputs of `s` on the shards of `args` against its share of `g`'s on `args`.
void check_ranks_match(const Graph& g, const ShardedGraph& s, int64_t ranks, const TensorMap& args, Tolerance tol) {
  absl::StatusOr<ShardedRun> run = evaluate_sharded(g, s, ranks, args);
  INFO((run.ok() ? std::string() : status_message(run.status())));
  REQUIRE(run.ok());
  for (int64_t r = 0; r < ranks; ++r)
    for (size_t i = 0; i < g.outputs().size(); ++i) {
      Comparison c = compare_tensors(run->expected[r][i], run->got[r][i], tol);
      INFO("rank " << r << ", output %" << g.outputs()[i]->name() << ": " << c.message);
      CHECK(c.ok);
    }
}

ShardPlan layer_plan(int64_t ranks) { return test_graphs::gqa_layer_plan(ranks); }

TEST_CASE("shard: a GQA decoder layer over 1, 2 and 4 ranks (two all_reduces, 4 ranks sharing 2 kv heads) matches",
          "[passes][shard]") {
  absl::StatusOr<Graph> g = parse_graph(test_graphs::kGqaLayer);
  REQUIRE(g.ok());
  for (int64_t ranks : {1, 2, 4}) {
    DYNAMIC_SECTION(ranks << " ranks") {
      ShardedGraph s = shard_or_fail(*g, layer_plan(ranks));
      CHECK(s.notes.empty());
      CHECK(count_ops(s.graph, Op::AllReduce) == (ranks > 1 ? 2 : 0));
      CHECK(count_ops(s.graph, Op::AllGather) == 0);
      if (ranks == 2) {
        // Heads split: 2 of 4 query heads and 1 of 2 kv heads per rank; the reshapes follow.
        require_checks(print_graph(s.graph), R"(
CHECK: %wq: f32[16, 32] param
CHECK-SAME: %wo: f32[32, 16] param
CHECK: %q1 = reshape(%q0, shape=[B, T, 2, 8])
CHECK: %k1 = reshape(%k0, shape=[B, T, 1, 8])
CHECK: %a = attention(%qr, %k, %v, causal=true) : f32[B, 2, T, 8]
CHECK: %a2 = reshape(%a1, shape=[B, T, 16])
CHECK: %o.partial = linear(%a2, %wo) : f32[B, T, 32]
CHECK-NEXT: %o = all_reduce(%o.partial, ranks=2)
CHECK: %d = all_reduce(%d.partial, ranks=2)
)");
      }
      if (ranks == 4) {
        // 1 of 4 query heads per rank, and its kv head whole: wk's rows of kv head r / 2.
        CHECK(s.split.at("wk") == ArgSplit{0, 2});
        CHECK(s.split.at("wq") == ArgSplit{0, 4});
        require_checks(print_graph(s.graph), R"(
CHECK: %wq: f32[8, 32] param
CHECK-SAME: %wk: f32[8, 32] param
CHECK: %q1 = reshape(%q0, shape=[B, T, 1, 8])
CHECK: %k1 = reshape(%k0, shape=[B, T, 1, 8])
CHECK: %a = attention(%qr, %k, %v, causal=true) : f32[B, 1, T, 8]
CHECK: %o = all_reduce(%o.partial, ranks=4)
)");
      }
      for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}}) {
        TensorMap args = random_args(*g, b, 11 + b["T"]);
        scale_weights_by_fan_in(*g, args);
        check_ranks_match(*g, s, ranks, args, {1e-4, 1e-5});
      }
    }
  }
  // Four ranks given a chunk each of 2 kv heads hold half heads: the k and v projections'
  // chunks are gathered back before their reshape into heads (notes say where), and the
  // result still matches.
  ShardedGraph four = shard_or_fail(*g, test_graphs::gqa_layer_plan(4, 0));
  CHECK(count_ops(four.graph, Op::AllGather) >= 2);
  REQUIRE(!four.notes.empty());
  CHECK_THAT(four.notes[0], Catch::Contains("%k1 = reshape") && Catch::Contains("moves the split axis"));
  TensorMap args = random_args(*g, {{"B", 2}, {"T", 3}}, 3);
  scale_weights_by_fan_in(*g, args);
  check_ranks_match(*g, four, 4, args, {1e-4, 1e-5});
}

TEST_CASE("shard: a Llama step (GQA, RoPE, KV caches written in place) over 2, 4 and 8 ranks matches the whole model",
          "[passes][shard]") {
  // Prefill and decode over contiguous caches; decode over a paged cache (split by kv heads
  // along axis 2) with Qwen2's q/k/v biases and a sliding window. 2 kv heads over 2 ranks,
  // and shared by 4 ranks (4 query heads) and 8 (8 query heads): each rank's cache is its kv
  // head's whole.
  for (auto [ranks, heads] : {std::pair<int64_t, int64_t>{2, 4}, {4, 4}, {8, 8}})
    for (int form : {0, 1, 2}) {
      LlamaForm f = tiny_llama_form(form, heads);
      DYNAMIC_SECTION(ranks << " ranks, " << f.name) {
        const bool paged = f.paged;
        const models::LlamaConfig& cf = f.config;
        const Graph& g = f.graph;
        ShardedGraph s = shard_or_fail(g, llama_shard_plan(ranks, paged, true, cf.kv_heads));
        // Two all_reduces per layer, one for the vocab-parallel embedding's partial rows, and
        // the logits gathered once (the output, and argmax over the whole vocabulary).
        CHECK(count_ops(s.graph, Op::AllReduce) == 2 * cf.layers + 1);
        CHECK(count_ops(s.graph, Op::AllGather) == 1);
        REQUIRE(s.notes.size() == 1);
        CHECK_THAT(s.notes[0], Catch::Contains("%next_token = argmax") && Catch::Contains("made whole first"));
        CHECK(s.split.at("model.embed_tokens.weight") == ArgSplit{0, ranks});
        REQUIRE(s.graph.find(std::string(kRankInput)));
        require_checks(print_graph(s.graph), str_cat(R"(
CHECK: %tp_rank: i64[]
CHECK: %embed.gather = gather(%model.embed_tokens.weight, %embed.where_1, axis=0)
CHECK: %embed = all_reduce(%embed.partial, ranks=)",
                                                     ranks, R"()
CHECK: attention(
CHECK-SAME: : f32[B, )",
                                                     heads / ranks, ", ", f.decode ? "1" : "T", R"(, 8]
CHECK: %logits.all_gather = all_gather(%logits, axis=1, ranks=)",
                                                     ranks, ")\n"));
        const int64_t kv_groups = std::min<int64_t>(ranks, cf.kv_heads);
        CHECK(s.split.at("k_cache.0") == ArgSplit{paged ? 2 : 1, kv_groups});
        CHECK(s.split.at("model.layers.1.self_attn.v_proj.weight") == ArgSplit{0, kv_groups});
        CHECK(s.split.at("model.layers.1.self_attn.o_proj.weight") == ArgSplit{1, ranks});
        if (paged) CHECK(s.split.at("model.layers.0.self_attn.k_proj.bias") == ArgSplit{0, kv_groups});
        for (int64_t batch : {1, 3}) {
          TensorMap args = llama_step_args(
              cf, g, {.decode = f.decode, .paged = paged, .batch = batch, .seed = static_cast<uint64_t>(5 + batch)});
          check_ranks_match(g, s, ranks, args, {1e-4, 1e-5});
        }
      }
    }
}

TEST_CASE("shard: a parallel-residual block's attention and MLP outputs, both partial, take one all_reduce",
          "[passes][shard]") {
  absl::StatusOr<Graph> g = parse_graph(test_graphs::parallel_residual(2));
  if (!g.ok()) FAIL(status_message(g.status()));
  ShardPlan plan = test_graphs::parallel_residual_plan(2);
  ShardedGraph s = shard_or_fail(*g, plan);
  CHECK(s.notes.empty());
  CHECK(count_ops(s.graph, Op::AllReduce) == 2);  // one per block
  CHECK(count_ops(s.graph, Op::AllGather) == 0);
  // partial + partial stays partial; + the replicated residual needs the sum first.
  require_checks(print_graph(s.graph), R"(
CHECK: %o0.partial = linear(%ar0, %wo0)
CHECK: %d0.partial = linear(%g0, %wd0)
CHECK-NEXT: %s0.partial = add(%o0.partial, %d0.partial)
CHECK-NEXT: %s0 = all_reduce(%s0.partial, ranks=2)
CHECK-NEXT: %y0 = add(%s0, %x)
CHECK: %s1 = all_reduce(%s1.partial, ranks=2)
CHECK-NEXT: %y1 = add(%s1, %y0)
)");
  for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}}) {
    TensorMap args = random_args(*g, b, 21 + b["T"]);
    scale_weights_by_fan_in(*g, args);
    check_ranks_match(*g, s, 2, args, {1e-4, 1e-5});
  }
}

TEST_CASE("shard: a value split into fewer groups than ranks is gathered whole once, its copies dropped",
          "[passes][shard]") {
  // wk's rows in g groups over 4 ranks: the projection's columns split alike; softmax over
  // them, and a sum (a partial sum would count each group 4 / g times), need them whole.
  absl::StatusOr<Graph> g = parse_graph(R"(graph kv(%x: f32[B, 32], %wk: f32[16, 32] param) {
  %k = linear(%x, %wk)
  %s = softmax(%k, axis=-1)
  %t = sum(%k, axes=[-1])
  return %s, %t
})");
  REQUIRE(g.ok());
  for (int64_t groups : {1, 2}) {
    DYNAMIC_SECTION(groups << " groups") {
      ShardedGraph s = shard_or_fail(*g, {4, {{"wk", 0, groups}}});
      CHECK(s.split.at("wk") == ArgSplit{0, groups});
      CHECK(count_ops(s.graph, Op::AllGather) == 1);
      CHECK(count_ops(s.graph, Op::AllReduce) == 0);
      CHECK(s.notes.size() == 2);
      const int64_t c = 16 / groups;
      require_checks(print_graph(s.graph), str_cat(R"(
CHECK: %wk: f32[)",
                                                   c, R"(, 32] param
CHECK: %k = linear(%x, %wk) : f32[B, )",
                                                   c, R"(]
CHECK-NEXT: %k.all_gather = all_gather(%k, axis=1, ranks=4) : f32[B, )",
                                                   4 * c, R"(]
CHECK-NEXT: %k.reshape = reshape(%k.all_gather, shape=[B, )",
                                                   groups, ", ", 4 / groups, ", ", c, R"(])
CHECK-NEXT: %k.slice = slice(%k.reshape, axis=2, start=0, end=1)
CHECK-NEXT: %k.reshape_1 = reshape(%k.slice, shape=[B, 16])
CHECK-NEXT: %s = softmax(%k.reshape_1, axis=-1)
CHECK-NEXT: %t = sum(%k.reshape_1, axes=[-1])
)"));
      for (int64_t batch : {1, 5}) {
        TensorMap args = random_args(*g, {{"B", batch}}, 9 + batch);
        check_ranks_match(*g, s, 4, args, {1e-5, 1e-6});
      }
    }
  }
  // Groups must divide the ranks.
  absl::StatusOr<ShardedGraph> bad = shard(*g, {4, {{"wk", 0, 3}}});
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("%wk split into 3 groups, which do not divide the 4 ranks"));
}

TEST_CASE("shard: plans it cannot honour are located errors; ops without a split form gather first",
          "[passes][shard]") {
  absl::StatusOr<Graph> g = parse_graph(test_graphs::kGqaLayer);
  REQUIRE(g.ok());
  // A cache whose rows come from replicated projections.
  models::LlamaConfig c = tiny_llama();
  c.layers = 1;
  Graph step = models::trace_step(c, {.decode = true});
  ShardPlan caches_only{2, {{"k_cache.*", 1}, {"v_cache.*", 1}}};
  absl::StatusOr<ShardedGraph> bad = shard(step, caches_only);
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("are not split alike by kv heads"));
  // An axis the argument lacks.
  bad = shard(*g, {2, {{"n1", 1}}});
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("%n1 of type f32[32] has no axis 1"));
  // A sharded graph is not sharded again.
  ShardedGraph once = shard_or_fail(*g, layer_plan(2));
  bad = shard(once.graph, layer_plan(2));
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("the graph is sharded already"));
  // Splitting the norm weight of a replicated input: rms_norm has no split form over its own
  // axis, so the weight is gathered (a note says so) and the result still matches.
  ShardedGraph norm = shard_or_fail(*g, {2, {{"n2", 0}}});
  CHECK(count_ops(norm.graph, Op::AllGather) == 1);
  REQUIRE(norm.notes.size() == 1);
  CHECK_THAT(norm.notes[0], Catch::Contains("%m = rms_norm") && Catch::Contains("made whole first"));
  TensorMap args = random_args(*g, {{"B", 2}, {"T", 3}}, 4);
  scale_weights_by_fan_in(*g, args);
  check_ranks_match(*g, norm, 2, args, {1e-4, 1e-5});
}

}  // namespace
}  // namespace kiln::testing
