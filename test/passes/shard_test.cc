// The shard pass (passes/shard.h): sharded graphs run as N ranks on the reference evaluator
// (evaluate_ranks) against the unsharded graph on the whole arguments, the collectives it
// inserts read from the printed IR, and the plans it refuses.
#include <algorithm>

#include "ir/compare.h"
#include "ir/printer.h"
#include "ir/reference.h"
#include "ir/verifier.h"
#include "models/llama.h"
#include "passes/shard.h"
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

constexpr const char* kLayer =
    R"(graph layer(%x: f32[B, T, 32], %cos: f32[T, 8], %sin: f32[T, 8], %n1: f32[32] param, %wq: f32[32, 32] param, %wk: f32[16, 32] param, %wv: f32[16, 32] param, %wo: f32[32, 32] param, %n2: f32[32] param, %wg: f32[64, 32] param, %wu: f32[64, 32] param, %wd: f32[32, 64] param) {
  %h = rms_norm(%x, %n1, axes=[-1], eps=1e-06)
  %q0 = linear(%h, %wq)
  %q1 = reshape(%q0, shape=[B, T, 4, 8])
  %q = permute(%q1, dims=[0, 2, 1, 3])
  %k0 = linear(%h, %wk)
  %k1 = reshape(%k0, shape=[B, T, 2, 8])
  %k = permute(%k1, dims=[0, 2, 1, 3])
  %v0 = linear(%h, %wv)
  %v1 = reshape(%v0, shape=[B, T, 2, 8])
  %v = permute(%v1, dims=[0, 2, 1, 3])
  %qc = mul(%q, %cos)
  %qs = mul(%q, %sin)
  %qr = add(%qc, %qs)
  %a = attention(%qr, %k, %v, causal=true)
  %a1 = permute(%a, dims=[0, 2, 1, 3])
  %a2 = reshape(%a1, shape=[B, T, 32])
  %o = linear(%a2, %wo)
  %r = add(%x, %o)
  %m = rms_norm(%r, %n2, axes=[-1], eps=1e-06)
  %g = linear(%m, %wg)
  %gs = silu(%g)
  %u = linear(%m, %wu)
  %gu = mul(%gs, %u)
  %d = linear(%gu, %wd)
  %y = add(%r, %d)
  return %y
})";

ShardPlan layer_plan(int64_t ranks) {
  return {ranks, {{"wq", 0}, {"wk", 0}, {"wv", 0}, {"wg", 0}, {"wu", 0}, {"wo", 1}, {"wd", 1}}};
}

TEST_CASE("shard: a GQA decoder layer over 1 and 2 ranks (two all_reduces) matches; 4 ranks gather the 2 kv heads",
          "[passes][shard]") {
  absl::StatusOr<Graph> g = parse_graph(kLayer);
  REQUIRE(g.ok());
  for (int64_t ranks : {1, 2}) {
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
      for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}}) {
        TensorMap args = random_args(*g, b, 11 + b["T"]);
        scale_weights_by_fan_in(*g, args);
        check_ranks_match(*g, s, ranks, args, {1e-4, 1e-5});
      }
    }
  }
  // Four ranks cannot split 2 kv heads: the k and v projections' chunks are gathered back
  // before their reshape into heads (notes say where), and the result still matches.
  ShardedGraph four = shard_or_fail(*g, layer_plan(4));
  CHECK(count_ops(four.graph, Op::AllGather) >= 2);
  REQUIRE(!four.notes.empty());
  CHECK_THAT(four.notes[0], Catch::Contains("%k1 = reshape") && Catch::Contains("moves the split axis"));
  TensorMap args = random_args(*g, {{"B", 2}, {"T", 3}}, 3);
  scale_weights_by_fan_in(*g, args);
  check_ranks_match(*g, four, 4, args, {1e-4, 1e-5});
}

TEST_CASE("shard: a Llama step (GQA, RoPE, KV caches written in place) over 2 ranks matches the whole model",
          "[passes][shard]") {
  models::LlamaConfig c;
  c.dim = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.ffn = 48, c.vocab = 40, c.dtype = DType::f32;
  // Prefill and decode over contiguous caches; decode over a paged cache (blocks of 4 rows,
  // split by kv heads along axis 2) with Qwen2's q/k/v biases and a sliding window.
  for (int form : {0, 1, 2}) {
    const bool decode = form > 0, paged = form == 2;
    DYNAMIC_SECTION((form == 0 ? "prefill" : form == 1 ? "decode" : "paged decode, q/k/v biases, window")) {
      models::LlamaConfig cf = c;
      if (paged) cf.qkv_bias = true, cf.sliding_window = 3;
      Graph g = models::trace_step(
          cf, {.decode = decode, .cache = paged ? models::CacheLayout::Paged : models::CacheLayout::Contiguous,
               .block_size = 4});
      ShardedGraph s = shard_or_fail(g, llama_shard_plan(2, paged));
      CHECK(s.notes.empty());
      CHECK(count_ops(s.graph, Op::AllReduce) == 2 * cf.layers);
      CHECK(count_ops(s.graph, Op::AllGather) == 0);
      CHECK(s.split.at("k_cache.0") == (paged ? 2 : 1));
      CHECK(s.split.at("model.layers.1.self_attn.o_proj.weight") == 1);
      if (paged) CHECK(s.split.at("model.layers.0.self_attn.k_proj.bias") == 0);
      const int64_t B = 2, T = decode ? 1 : 3, S = 8;
      Bindings b{{"B", B}, {"S", S}, {"NB", 6}, {"MB", 2}};  // those the form lacks go unused
      if (!decode) b["T"] = T;
      TensorMap args = random_args(g, b, 5, c.vocab);
      for (auto& [name, t] : models::random_weights(cf, 9)) args[name] = t;
      HostTensor start(DType::i32, {B});
      for (int64_t i = 0; i < B; ++i) start.set_int(i, decode ? 2 + i : i);
      args["start"] = start;
      if (!decode) {
        HostTensor lens(DType::i32, {B});
        for (int64_t i = 0; i < B; ++i) lens.set_int(i, T - i % 2);
        args["lens"] = lens;
      }
      if (paged) {  // sequence i owns blocks {2i + 1, 2i} of the 6: a shuffled table
        HostTensor table(DType::i32, {B, 2});
        for (int64_t i = 0; i < B; ++i) table.set_int(2 * i, 2 * i + 1), table.set_int(2 * i + 1, 2 * i);
        args["block_table"] = table;
      }
      check_ranks_match(g, s, 2, args, {1e-4, 1e-5});
    }
  }
}

TEST_CASE("shard: plans it cannot honour are located errors; ops without a split form gather first",
          "[passes][shard]") {
  absl::StatusOr<Graph> g = parse_graph(kLayer);
  REQUIRE(g.ok());
  // A cache whose rows come from replicated projections.
  models::LlamaConfig c;
  c.dim = 32, c.layers = 1, c.heads = 4, c.kv_heads = 2, c.ffn = 48, c.vocab = 40, c.dtype = DType::f32;
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
