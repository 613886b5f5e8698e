// Tensor parallelism on the CPU (issue 22): the host group's collectives on threads against
// the reference's sums; sharded graphs (passes/shard.h) compiled as a RankGroup, every rank
// JIT-compiled with its communicator and called on its thread, against the whole graph on
// the reference evaluator at several sizes; the collective steps in the printed program;
// collectives along another axis than 0 (permutes around them); each rank's parameters
// read from a safetensors checkpoint as chunks; and the errors: no
// communicator, ranks that disagree, a rank that fails (the others are released, not hung).
#include <catch2/catch.hpp>

#include <thread>

#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "models/llama.h"
#include "passes/shard.h"
#include "runtime/communicator.h"
#include "test/common/catch_helpers.h"
#include "test/common/graphs.h"
#include "test/common/llama_args.h"
#include "test/common/parallel_check.h"
#include "test/common/scratch_dir.h"

using namespace kiln;
using namespace kiln::testing;

namespace {

int64_t count(const std::string& text, const std::string& what) {
  int64_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// `f(r)` on one thread per rank; the statuses in rank order.
template <typename F>
std::vector<absl::Status> on_threads(int64_t ranks, F f) {
  std::vector<absl::Status> st(static_cast<size_t>(ranks));
  std::vector<std::thread> ts;
  for (int64_t r = 0; r < ranks; ++r) ts.emplace_back([&, r] { st[r] = f(r); });
  for (std::thread& t : ts) t.join();
  return st;
}

std::unique_ptr<RankGroup> group_or_fail(const Graph& g, int64_t ranks, Mode mode = Mode::Default) {
  absl::StatusOr<std::unique_ptr<RankGroup>> group =
      RankGroup::compile(g, ranks, {.compile = {.mode = mode, .device = Device::Cpu}});
  if (!group.ok()) FAIL(status_message(group.status()));
  return *std::move(group);
}

std::string program_text(RankGroup& group, int64_t rank) {
  std::vector<CompiledGraph::SpecializationInfo> info = group.rank(rank).specialization_info();
  REQUIRE(!info.empty());
  return info.back().program->to_string();
}

}  // namespace

TEST_CASE("host group: all_reduce, all_gather and reduce_scatter over 3 ranks on threads", "[cpu][parallel]") {
  const int64_t ranks = 3, n = 4;
  std::vector<std::shared_ptr<Communicator>> comms = host_group(ranks);
  CHECK(comms[2]->describe() == "host group, rank 2 of 3");
  // f32: rank 0 holds 3 + 1.5 i, rank 1 1e8 and rank 2 -1e8 (all exact in f32): the sum in
  // f64 then rounded gives rank 0's values back, f32 partial sums would not (1e8 + x rounds x
  // to a multiple of 8).
  std::vector<std::vector<float>> in(ranks, std::vector<float>(ranks * n)), out(ranks, std::vector<float>(ranks * n));
  for (int64_t i = 0; i < ranks * n; ++i) in[0][i] = 3.0f + 1.5f * i, in[1][i] = 1e8f, in[2][i] = -1e8f;
  std::vector<absl::Status> st = on_threads(ranks, [&](int64_t r) {
    return comms[r]->all_reduce(in[r].data(), out[r].data(), ranks * n, DType::f32, nullptr);
  });
  for (int64_t r = 0; r < ranks; ++r) {
    REQUIRE(st[r].ok());
    for (int64_t i = 0; i < ranks * n; ++i) CHECK(out[r][i] == 3.0f + 1.5f * i);
  }
  st = on_threads(
      ranks, [&](int64_t r) { return comms[r]->reduce_scatter(in[r].data(), out[r].data(), n, DType::f32, nullptr); });
  for (int64_t r = 0; r < ranks; ++r) {
    REQUIRE(st[r].ok());
    for (int64_t i = 0; i < n; ++i) CHECK(out[r][i] == 3.0f + 1.5f * static_cast<float>(r * n + i));
  }
  st = on_threads(ranks,
                  [&](int64_t r) { return comms[r]->all_gather(in[r].data(), out[r].data(), n, DType::f32, nullptr); });
  for (int64_t r = 0; r < ranks; ++r) {
    REQUIRE(st[r].ok());
    for (int64_t q = 0; q < ranks; ++q)
      for (int64_t i = 0; i < n; ++i) CHECK(out[r][q * n + i] == in[q][i]);
  }
  // i32 wraps as two's complement.
  std::vector<int32_t> ii = {2147483647, 1, 5}, io(ranks);
  st = on_threads(ranks, [&](int64_t r) { return comms[r]->all_reduce(&ii[r], &io[r], 1, DType::i32, nullptr); });
  for (int64_t r = 0; r < ranks; ++r) CHECK(io[r] == -2147483643);
}

TEST_CASE("host group: ranks that disagree get an error each; an abort releases a waiting rank", "[cpu][parallel]") {
  std::vector<std::shared_ptr<Communicator>> comms = host_group(2);
  float x[4] = {1, 2, 3, 4}, y[8];
  std::vector<absl::Status> st = on_threads(2, [&](int64_t r) {
    return r == 0 ? comms[r]->all_reduce(x, y, 4, DType::f32, nullptr)
                  : comms[r]->all_gather(x, y, 4, DType::f32, nullptr);
  });
  for (const absl::Status& s : st) {
    REQUIRE(!s.ok());
    CHECK_THAT(status_message(s), Catch::Contains("the ranks disagree on a collective: rank 0 calls all_reduce of 4 "
                                                  "f32, rank 1 all_gather of 4 f32"));
  }
  // The group stays aborted; a new one: rank 0 waits, rank 1 aborts instead of calling.
  comms = host_group(2);
  std::thread waiter([&] { st[0] = comms[0]->all_reduce(x, y, 4, DType::f32, nullptr); });
  comms[1]->abort(absl::InternalError("rank 1 failed its kernel"));
  waiter.join();
  REQUIRE(absl::IsAborted(st[0]));
  CHECK_THAT(status_message(st[0]), Catch::Contains("aborted: rank 1 failed its kernel"));
  // bool has no sum.
  bool b[1] = {true}, bo[1];
  absl::Status s = host_group(1)[0]->all_reduce(b, bo, 1, DType::boolean, nullptr);
  CHECK_THAT(status_message(s), Catch::Contains("the host group sums f32, f16, bf16, f64, i32 and i64"));
}

TEST_CASE("RankGroup on the CPU: the GQA layer over 2 ranks and 4 ranks (sharing 2 kv heads): 2 all_reduces",
          "[cpu][parallel]") {
  Graph g = parse_or_fail(test_graphs::kGqaLayer);
  for (int64_t ranks : {2, 4}) {
    DYNAMIC_SECTION(ranks << " ranks") {
      absl::StatusOr<ShardedGraph> s = shard(g, test_graphs::gqa_layer_plan(ranks));
      REQUIRE(s.ok());
      std::unique_ptr<RankGroup> group = group_or_fail(s->graph, ranks);
      CHECK(group->communicator(1).describe() == str_cat("host group, rank 1 of ", ranks));
      for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}, Bindings{{"B", 2}, {"T", 33}}}) {
        TensorMap args = random_args(g, b, 7 + b["T"]);
        scale_weights_by_fan_in(g, args);
        check_rank_group(*group, g, *s, args, {1e-4, 1e-5});
      }
      std::string text = program_text(*group, ranks - 1);
      INFO(text);
      // 4 ranks hold 2 kv heads in 2 groups (each kv head whole on 2 ranks): attention runs
      // on each rank's query head and its kv head, nothing is gathered.
      CHECK(count(text, "all_reduce f32") == 2);
      CHECK(count(text, "all_gather f32") == 0);
    }
  }
}

TEST_CASE(
    "RankGroup on the CPU: Llama prefill, decode and paged decode over 2, 4 and 8 ranks write their caches in "
    "place",
    "[cpu][parallel]") {
  // 2 kv heads: split over 2 ranks; each whole on 2 of 4 ranks (4 query heads) and on 4 of 8
  // (8 query heads).
  for (auto [ranks, heads] : {std::pair<int64_t, int64_t>{2, 4}, {4, 4}, {8, 8}})
    for (int form : {0, 1, 2}) {
      LlamaForm f = tiny_llama_form(form, heads);
      DYNAMIC_SECTION(ranks << " ranks, " << f.name) {
        const bool decode = f.decode, paged = f.paged;
        const models::LlamaConfig& cf = f.config;
        const Graph& g = f.graph;
        absl::StatusOr<ShardedGraph> s = shard(g, llama_shard_plan(ranks, paged, true, cf.kv_heads));
        REQUIRE(s.ok());
        std::unique_ptr<RankGroup> group = group_or_fail(s->graph, ranks, Mode::ReduceOverhead);
        for (int64_t batch : {1, 3}) {
          TensorMap args = llama_step_args(cf, g, {.decode = decode, .paged = paged, .batch = batch, .prompt = 5});
          check_rank_group(*group, g, *s, args, {1e-4, 1e-5});
        }
        // Two per layer and the vocab-parallel embedding's; the logits gathered once.
        std::string text = program_text(*group, ranks - 1);
        CHECK(count(text, "all_reduce f32") == 2 * cf.layers + 1);
        CHECK(count(text, "all_gather f32") == 1);
      }
    }
}

TEST_CASE("RankGroup on the CPU: reduce_scatter and all_gather along axis 1, all_reduce of i32", "[cpu][parallel]") {
  Graph g = parse_or_fail(R"(graph cc(%x: f32[B, 8], %i: i32[B, 3]) {
  %y = reduce_scatter(%x, axis=1, ranks=2)
  %z = mul(%y, %y)
  %w = all_gather(%z, axis=-1, ranks=2)
  %j = all_reduce(%i, ranks=2)
  return %y, %w, %j
})");
  std::unique_ptr<RankGroup> group = group_or_fail(g, 2);
  for (int64_t batch : {1, 5, 64}) {
    std::vector<TensorMap> args{random_args(g, {{"B", batch}}, 1, 1000), random_args(g, {{"B", batch}}, 2, 1000)};
    absl::StatusOr<std::vector<std::vector<HostTensor>>> want = evaluate_ranks(g, args);
    REQUIRE(want.ok());
    absl::StatusOr<std::vector<std::vector<HostTensor>>> got = group->run_host(args);
    require_ok(got.status());
    for (int64_t r = 0; r < 2; ++r)
      for (size_t i = 0; i < 3; ++i) {
        Comparison c = compare_tensors((*want)[r][i], (*got)[r][i], {1e-6, 1e-6});
        INFO("batch " << batch << ", rank " << r << ", output " << i << ": " << c.message);
        CHECK(c.ok);
      }
  }
  std::string text = program_text(*group, 0);
  INFO(text);
  CHECK(count(text, "reduce_scatter f32") == 1);
  CHECK(count(text, "all_gather f32") == 1);
  CHECK(count(text, "all_reduce i32") == 1);
}

TEST_CASE("RankGroup on the CPU: no communicator, and a rank that fails, are errors that name them",
          "[cpu][parallel]") {
  Graph g = parse_or_fail(test_graphs::kGqaLayer);
  absl::StatusOr<ShardedGraph> s = shard(g, test_graphs::gqa_layer_plan(2));
  REQUIRE(s.ok());
  absl::StatusOr<CompiledGraph> alone = compile(s->graph, {.device = Device::Cpu});
  REQUIRE(!alone.ok());
  CHECK_THAT(status_message(alone.status()),
             Catch::Contains("all_reduce") && Catch::Contains("needs this rank's communicator"));
  alone = compile(s->graph, {.device = Device::Cpu, .communicator = host_group(3)[0]});
  REQUIRE(!alone.ok());
  CHECK_THAT(status_message(alone.status()), Catch::Contains("the communicator is host group, rank 0 of 3"));

  // Rank 1 called with a wrong batch: it fails its guards and aborts the group, rank 0 is
  // released from its all_reduce; the error names rank 1, and the group is unusable after.
  std::unique_ptr<RankGroup> group = group_or_fail(s->graph, 2);
  TensorMap whole = random_args(g, {{"B", 2}, {"T", 3}}, 3);
  std::vector<TensorMap> shards = *shard_arguments(*s, 2, whole);
  std::vector<std::vector<Tensor>> in(2), out;
  for (int64_t r = 0; r < 2; ++r)
    for (const Value* v : group->rank(r).module().args) in[r].push_back(*Tensor::from_host(shards[r].at(v->name())));
  in[1][0] = *Tensor::from_host(HostTensor(DType::f32, {2, 3, 31}));
  absl::Status st = group->run(in, out);
  REQUIRE(!st.ok());
  CHECK_THAT(status_message(st), Catch::StartsWith("rank 1: "));
  st = group->run(in, out);
  CHECK_THAT(status_message(st), Catch::Contains("the rank group failed before: rank 1: "));
}

TEST_CASE("read_rank_parameters: each rank's chunk of a two-file Llama checkpoint, as shard_arguments cuts it",
          "[cpu][parallel]") {
  models::LlamaConfig c = tiny_llama();
  Graph g = models::trace_step(c, {.decode = true});
  // Over 4 ranks the 2 kv heads' projections are read whole per kv head: rank r's is kv head r / 2.
  absl::StatusOr<ShardedGraph> four = shard(g, llama_shard_plan(4, false, true, c.kv_heads));
  REQUIRE(four.ok());
  absl::StatusOr<ShardedGraph> s = shard(g, llama_shard_plan(2));
  REQUIRE(s.ok());
  ScratchDir dir;
  std::map<std::string, HostTensor> weights = models::random_weights(c, 3);
  // Stored as bf16 (as Hugging Face ships them): read back converted to the graph's f32.
  std::map<std::string, HostTensor> stored;
  for (const auto& [name, t] : weights) stored.emplace(name, t.converted(DType::bf16));
  require_ok(models::write_checkpoint(dir.path().string(), c, stored, 2));
  absl::StatusOr<SafetensorsCheckpoint> ckpt = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(ckpt.status());
  TensorMap whole;
  for (const auto& [name, t] : stored) whole[name] = ckpt->read(name)->converted(DType::f32);
  std::vector<TensorMap> want = *shard_arguments(*s, 2, whole);
  for (int64_t r = 0; r < 2; ++r) {
    absl::StatusOr<TensorMap> got = read_rank_parameters(*s, r, 2, *ckpt);
    require_ok(got.status());
    CHECK(got->size() == weights.size());
    for (const auto& [name, t] : *got) {
      INFO("rank " << r << ", " << name);
      CHECK(t.dtype() == DType::f32);
      CHECK(compare_tensors(want[r].at(name), t, {0, 0}).ok);
    }
  }
  CHECK(read_rank_parameters(*s, 0, 2, *ckpt)->at("model.layers.0.self_attn.o_proj.weight").shape() ==
        std::vector<int64_t>{32, 16});
  std::vector<TensorMap> want4 = *shard_arguments(*four, 4, whole);
  for (int64_t r = 0; r < 4; ++r) {
    absl::StatusOr<TensorMap> got = read_rank_parameters(*four, r, 4, *ckpt);
    require_ok(got.status());
    for (const auto& [name, t] : *got) {
      INFO("rank " << r << " of 4, " << name);
      CHECK(compare_tensors(want4[r].at(name), t, {0, 0}).ok);
    }
    const std::string k = "model.layers.1.self_attn.k_proj.weight";
    CHECK(compare_tensors(whole.at(k).chunk(0, r / 2, 2), got->at(k), {0, 0}).ok);
  }
  // A checkpoint of another width: the tensor and both shapes are named.
  models::LlamaConfig wide = c;
  wide.ffn = 64;
  ScratchDir other;
  require_ok(models::write_checkpoint(other.path().string(), wide, models::random_weights(wide, 1)));
  absl::StatusOr<TensorMap> bad = read_rank_parameters(*s, 1, 2, *SafetensorsCheckpoint::open(other.path().string()));
  REQUIRE(!bad.ok());
  CHECK_THAT(status_message(bad.status()), Catch::Contains("has shape [64, 32], the graph needs [48, 32]"));
}

TEST_CASE(
    "RankGroup on the CPU: a parallel-residual block's attention all_reduce overlaps its MLP branch, kept out of its "
    "memory; a Llama layer's all_reduces overlap nothing",
    "[cpu][parallel]") {
  // With biases on o and down, each branch is summed before its bias: the attention branch's
  // sum is independent of the MLP branch, which runs before its join; the MLP's sum is needed
  // next (its bias).
  Graph g = parse_or_fail(test_graphs::parallel_residual(2, true));
  absl::StatusOr<ShardedGraph> s = shard(g, test_graphs::parallel_residual_plan(2));
  REQUIRE(s.ok());
  std::unique_ptr<RankGroup> group = group_or_fail(s->graph, 2);
  for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}, Bindings{{"B", 2}, {"T", 70}}}) {
    TensorMap args = random_args(g, b, 11 + b["T"]);
    scale_weights_by_fan_in(g, args);
    check_rank_group(*group, g, *s, args, {1e-4, 1e-5});
    std::shared_ptr<const Program> p = group->rank(1).specialization_info().back().program;
    CHECK(check_overlapped_memory(*p, b) == 2);
  }
  std::string text = program_text(*group, 1);
  INFO(text);
  CHECK(count(text, "all_reduce f32") == 4);
  CHECK(count(text, ", overlaps ") == 2);
  require_checks(text, R"(
CHECK: all_reduce f32 {{.*}}, 2 ranks, overlaps {{[0-9]+ steps?}} (in line here: the host group's call is synchronous), joined before group
CHECK: all_reduce f32 {{.*}}, 2 ranks{{$}}
CHECK: all_reduce f32 {{.*}}, 2 ranks, overlaps {{[0-9]+ steps?}} (in line here: the host group's call is synchronous), joined before group
CHECK: all_reduce f32 {{.*}}, 2 ranks{{$}}
)");

  Graph layer = parse_or_fail(test_graphs::kGqaLayer);
  absl::StatusOr<ShardedGraph> ls = shard(layer, test_graphs::gqa_layer_plan(2));
  REQUIRE(ls.ok());
  std::unique_ptr<RankGroup> lgroup = group_or_fail(ls->graph, 2);
  TensorMap args = random_args(layer, {{"B", 2}, {"T", 3}}, 5);
  scale_weights_by_fan_in(layer, args);
  check_rank_group(*lgroup, layer, *ls, args, {1e-4, 1e-5});
  std::string ltext = program_text(*lgroup, 0);
  INFO(ltext);
  CHECK(count(ltext, "all_reduce f32") == 2);
  CHECK(count(ltext, ", overlaps ") == 0);
}
