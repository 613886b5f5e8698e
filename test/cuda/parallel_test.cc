// Tensor parallelism on CUDA (issue 22) through NCCL: NCCL loads and names its version
// everywhere it is installed (also without a GPU); on a GPU, a one-rank NCCL group runs a
// graph with every collective (all_reduce, all_gather and reduce_scatter along axis 1) in
// f32 and bf16, directly and captured into a CUDA graph (reduce-overhead, replayed), against
// evaluate_ranks; with two or more GPUs, the GQA layer and a Llama decode step sharded over
// two ranks against the whole graph on the reference evaluator; with 4 and 8, Llama decode
// steps whose 2 kv heads the ranks share; generate --tp over a group of one NCCL rank (two
// with two GPUs) against the plain generate; a parallel-residual block's all_reduce overlapping
// its MLP branch on the comm stream, directly and captured, over a one-rank group.
#include <catch2/catch.hpp>

#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/parser.h"
#include "ir/reference.h"
#include "models/generate.h"
#include "models/llama.h"
#include "passes/shard.h"
#include "runtime/cuda/nccl.h"
#include "runtime/cuda_driver.h"
#include "test/common/catch_helpers.h"
#include "test/common/gpu_test.h"
#include "test/common/graphs.h"
#include "test/common/llama_args.h"
#include "test/common/parallel_check.h"

using namespace kiln;
using namespace kiln::testing;

TEST_CASE("NCCL loads from the toolkit and names its version", "[cuda][parallel]") {
  absl::StatusOr<std::string> v = cuda::nccl_version();
  require_ok(v.status());
  CHECK_THAT(*v, Catch::Matches(R"(2\.\d+\.\d+)"));
}

TEST_CASE("NCCL group of one rank: every collective, default and captured (reduce-overhead)", "[gpu][parallel]") {
  KILN_REQUIRE_GPU();
  for (const char* dtype : {"f32", "bf16"}) {
    Graph g = parse_or_fail(str_cat(R"(graph cc(%x: )", dtype, R"([B, 8], %w: )", dtype, R"([8, 8] param) {
  %h = linear(%x, %w)
  %y = reduce_scatter(%h, axis=1, ranks=1)
  %z = mul(%y, %y)
  %a = all_gather(%z, axis=-1, ranks=1)
  %s = all_reduce(%a, ranks=1)
  %o = add(%s, %x)
  return %o, %y
})"));
    for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
      DYNAMIC_SECTION(dtype << ", " << mode_name(mode)) {
        absl::StatusOr<std::unique_ptr<RankGroup>> group =
            RankGroup::compile(g, 1, {.compile = {.mode = mode, .device = Device::Cuda}});
        require_ok(group.status());
        CHECK_THAT((*group)->communicator(0).describe(), Catch::StartsWith("NCCL 2.") && Catch::EndsWith("on cuda:0"));
        // Batch 1, odd, large, then 1 again (its CUDA graph replayed on new values).
        int seed = 0;
        for (int64_t batch : {1, 7, 300, 1}) {
          TensorMap args = random_args(g, {{"B", batch}}, ++seed);
          absl::StatusOr<std::vector<std::vector<HostTensor>>> want = evaluate_ranks(g, std::vector<TensorMap>{args});
          require_ok(want.status());
          absl::StatusOr<std::vector<std::vector<HostTensor>>> got = (*group)->run_host({args});
          require_ok(got.status());
          for (size_t i = 0; i < 2; ++i) {
            Comparison c = compare_tensors((*want)[0][i], (*got)[0][i], default_tolerance((*want)[0][i].dtype()));
            INFO("batch " << batch << ", output " << i << ": " << c.message);
            CHECK(c.ok);
          }
        }
        if (mode == Mode::ReduceOverhead) CHECK((*group)->rank(0).stats().strategy == "capture and replay");
        std::string text = (*group)->rank(0).specialization_info().back().program->to_string();
        INFO(text);
        CHECK_THAT(text, Catch::Contains(str_cat("reduce_scatter ", dtype)) &&
                             Catch::Contains(str_cat("all_gather ", dtype)) &&
                             Catch::Contains(str_cat("all_reduce ", dtype)));
      }
    }
  }
}

TEST_CASE("NCCL group of one rank: an all_reduce overlapping the MLP branch on the comm stream, default and captured",
          "[gpu][parallel][overlap]") {
  KILN_REQUIRE_GPU();
  // Two parallel-residual blocks with biases sharded over 2 ranks, rank 0's graph run by a
  // group of one: each block's attention all_reduce runs on the comm stream beside its MLP branch.
  absl::StatusOr<ShardedGraph> s =
      shard(parse_or_fail(test_graphs::parallel_residual(2, true)), test_graphs::parallel_residual_plan(2));
  require_ok(s.status());
  Graph g = one_rank_graph(*s, 2);
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    DYNAMIC_SECTION(mode_name(mode)) {
      absl::StatusOr<std::unique_ptr<RankGroup>> group =
          RankGroup::compile(g, 1, {.compile = {.mode = mode, .device = Device::Cuda}});
      require_ok(group.status());
      // Batch 1, odd, large, then 1 again (its CUDA graph replayed on new values).
      int seed = 0;
      for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}, Bindings{{"B", 4}, {"T", 300}},
                         Bindings{{"B", 1}, {"T", 1}}}) {
        TensorMap args = random_args(g, b, ++seed);
        scale_weights_by_fan_in(g, args);
        absl::StatusOr<std::vector<std::vector<HostTensor>>> want = evaluate_ranks(g, std::vector<TensorMap>{args});
        require_ok(want.status());
        absl::StatusOr<std::vector<std::vector<HostTensor>>> got = (*group)->run_host({args});
        require_ok(got.status());
        Comparison c = compare_tensors((*want)[0][0], (*got)[0][0], default_tolerance(DType::f32));
        INFO("B " << b["B"] << ", T " << b["T"] << ": " << c.message);
        CHECK(c.ok);
        CHECK(check_overlapped_memory(*(*group)->rank(0).specialization_info().back().program, b) == 2);
      }
      if (mode == Mode::ReduceOverhead) CHECK((*group)->rank(0).stats().strategy == "capture and replay");
      std::string text = (*group)->rank(0).specialization_info().back().program->to_string();
      INFO(text);
      require_checks(text, R"(
CHECK: all_reduce f32 {{.*}}, 1 ranks, overlaps {{[0-9]+ steps?}} on the comm stream, joined before group
CHECK: all_reduce f32 {{.*}}, 1 ranks{{$}}
CHECK: all_reduce f32 {{.*}}, 1 ranks, overlaps {{[0-9]+ steps?}} on the comm stream, joined before group
CHECK: all_reduce f32 {{.*}}, 1 ranks{{$}}
)");
    }
  }
}

TEST_CASE("NCCL over two GPUs: the GQA layer and a Llama decode step sharded over 2 ranks", "[gpu][parallel]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<int> gpus = cuda::Device::count();
  require_ok(gpus.status());
  if (*gpus < 2) {
    WARN("SKIPPED (one GPU): the two-rank NCCL test needs two GPUs, this machine has " << *gpus);
    return;
  }
  Graph layer = parse_or_fail(test_graphs::kGqaLayer);
  absl::StatusOr<ShardedGraph> s = shard(layer, test_graphs::gqa_layer_plan(2));
  require_ok(s.status());
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead}) {
    absl::StatusOr<std::unique_ptr<RankGroup>> group =
        RankGroup::compile(s->graph, 2, {.compile = {.mode = mode, .device = Device::Cuda}});
    require_ok(group.status());
    for (Bindings b : {Bindings{{"B", 1}, {"T", 1}}, Bindings{{"B", 3}, {"T", 5}}, Bindings{{"B", 2}, {"T", 130}}}) {
      TensorMap args = random_args(layer, b, 7 + b["T"]);
      scale_weights_by_fan_in(layer, args);
      check_rank_group(**group, layer, *s, args, {1e-3, 1e-4});
    }
  }
  models::LlamaConfig c;
  c.dim = 64, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.ffn = 96, c.vocab = 40, c.dtype = DType::f32;
  Graph step = models::trace_step(c, {.decode = true});
  absl::StatusOr<ShardedGraph> ss = shard(step, llama_shard_plan(2));
  require_ok(ss.status());
  absl::StatusOr<std::unique_ptr<RankGroup>> group =
      RankGroup::compile(ss->graph, 2, {.compile = {.mode = Mode::ReduceOverhead, .device = Device::Cuda}});
  require_ok(group.status());
  for (int64_t batch : {1, 3})
    check_rank_group(**group, step, *ss, llama_step_args(c, step, {.decode = true, .batch = batch}), {1e-3, 1e-4});
}

TEST_CASE(
    "generate --tp over NCCL: a group of one (and of two where there are two GPUs) gives the plain generate's "
    "tokens, checked against the whole model; more ranks than GPUs is an error naming them",
    "[gpu][parallel]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<int> gpus = cuda::Device::count();
  require_ok(gpus.status());
  models::LlamaConfig c{.dim = 64, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 96, .vocab = 96, .dtype = DType::f32};
  const auto w = models::random_weights(c, 21);
  for (Mode mode : {Mode::Default, Mode::ReduceOverhead})
    for (bool paged : {false, true}) {
      models::GenerateOptions o{.device = Device::Cuda,
                                .mode = mode,
                                .batch = 3,
                                .prompt_len = 9,
                                .new_tokens = 9,
                                .cache = paged ? models::CacheLayout::Paged : models::CacheLayout::Contiguous,
                                .block_size = 4,
                                .check_steps = 8,
                                .seed = 4};
      absl::StatusOr<models::GenerateReport> plain = models::generate(c, w, o);
      require_ok(plain.status());
      for (int64_t tp : {1, 2}) {
        INFO(mode_name(mode) << (paged ? ", paged" : ", contiguous") << ", tp " << tp);
        if (tp > *gpus) {
          WARN("SKIPPED (one GPU): generate --tp " << tp << " needs " << tp << " GPUs, this machine has " << *gpus);
          continue;
        }
        o.tp = tp;
        absl::StatusOr<models::GenerateReport> r = models::generate(c, w, o);
        require_ok(r.status());
        INFO(r->to_text());
        CHECK_THAT(r->communicator, Catch::StartsWith("NCCL 2."));
        CHECK(r->checked_steps == 9);
        CHECK(r->tokens == plain->tokens);
      }
    }
  // A group one power of two larger than the GPUs: 16 heads divide.
  models::LlamaConfig wide{
      .dim = 256, .layers = 1, .heads = 16, .kv_heads = 16, .ffn = 64, .vocab = 256, .dtype = DType::f32};
  int64_t tp = 2;
  while (tp <= *gpus) tp *= 2;
  absl::StatusOr<models::GenerateReport> over =
      models::generate(wide, models::random_weights(wide, 1), {.device = Device::Cuda, .tp = tp});
  REQUIRE_FALSE(over.ok());
  CHECK_THAT(status_message(over.status()), Catch::Contains(str_cat("and this machine has ", *gpus, " GPU")));
}

TEST_CASE("NCCL over 4 and 8 GPUs: Llama decode steps whose 2 kv heads are shared by the ranks", "[gpu][parallel]") {
  KILN_REQUIRE_GPU();
  absl::StatusOr<int> gpus = cuda::Device::count();
  require_ok(gpus.status());
  // 2 kv heads in 2 groups: each whole on 2 of 4 ranks (4 query heads), on 4 of 8 (8 query
  // heads); contiguous and paged decode, captured (reduce-overhead).
  for (auto [ranks, heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 8}}) {
    if (*gpus < ranks) {
      WARN("SKIPPED: " << ranks << " ranks need " << ranks << " GPUs, this machine has " << *gpus);
      continue;
    }
    for (int form : {1, 2}) {
      LlamaForm f = tiny_llama_form(form, heads);
      DYNAMIC_SECTION(ranks << " ranks, " << f.name) {
        absl::StatusOr<ShardedGraph> s = shard(f.graph, llama_shard_plan(ranks, f.paged, true, f.config.kv_heads));
        require_ok(s.status());
        CHECK(s->split.at("k_cache.0").groups == 2);
        absl::StatusOr<std::unique_ptr<RankGroup>> group =
            RankGroup::compile(s->graph, ranks, {.compile = {.mode = Mode::ReduceOverhead, .device = Device::Cuda}});
        require_ok(group.status());
        for (int64_t batch : {1, 3})
          check_rank_group(**group, f.graph, *s,
                           llama_step_args(f.config, f.graph, {.decode = true, .paged = f.paged, .batch = batch}),
                           {1e-3, 1e-4});
      }
    }
  }
}
