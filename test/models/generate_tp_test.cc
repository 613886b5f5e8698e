// generate() over a tensor-parallel group on the CPU (models/generate.h, GenerateOptions::tp):
// both steps sharded over 1, 2 and 4 ranks (a thread per rank, the host group), prefill and
// decode steps checked against the whole model on the reference evaluator, and the tokens
// those of one device at the same seed (greedy and sampled); each rank reading its slice of a
// checkpoint; and what tp refuses, named.
#include <catch2/catch.hpp>

#include "frontends/safetensors/safetensors.h"
#include "ir/str.h"
#include "models/generate.h"
#include "test/common/catch_helpers.h"
#include "test/common/scratch_dir.h"

namespace kiln::models {
namespace {

using testing::require_ok;

// Heads, kv heads and vocabulary divide by 4.
LlamaConfig tp_tiny(int64_t kv_heads) {
  return {.dim = 64, .layers = 2, .heads = 4, .kv_heads = kv_heads, .ffn = 96, .vocab = 96, .dtype = DType::f32};
}

GenerateReport run(const LlamaConfig& c, const std::map<std::string, HostTensor>& w, const GenerateOptions& o) {
  absl::StatusOr<GenerateReport> r = generate(c, w, o);
  require_ok(r.status());
  INFO(r->to_text());
  CHECK(r->checked_steps == o.check_steps + 1);
  return *r;
}

TEST_CASE("generate --tp on the CPU: 1, 2 and 4 ranks, contiguous and paged, batch 1 and 3: the whole model's tokens",
          "[cpu][parallel]") {
  for (int64_t kv_heads : {2, 4}) {
    const LlamaConfig c = tp_tiny(kv_heads);
    const auto w = random_weights(c, 11);
    for (bool paged : {false, true})
      for (int64_t batch : {1, 3}) {
        GenerateOptions o{.device = Device::Cpu,
                          .batch = batch,
                          .prompt_len = 9,
                          .new_tokens = 9,
                          .cache = paged ? CacheLayout::Paged : CacheLayout::Contiguous,
                          .block_size = 4,
                          .check_steps = 8,
                          .seed = 5};
        const GenerateReport one = run(c, w, o);
        CHECK(one.ranks == 1);
        CHECK(one.communicator.empty());
        for (int64_t tp : {1, 2, 4}) {  // 2 kv heads over 4 ranks: each on 2 of them
          INFO("kv heads " << kv_heads << ", " << (paged ? "paged" : "contiguous") << ", batch " << batch << ", tp "
                           << tp);
          o.tp = tp;
          const GenerateReport r = run(c, w, o);
          CHECK(r.ranks == tp);
          CHECK(r.communicator == str_cat("host group, rank 0 of ", tp));
          CHECK(r.tokens == one.tokens);
          CHECK(r.cache_bytes == one.cache_bytes);  // the ranks' shards add up to the whole cache
          // Each rank's store holds its share: the split weights 1/tp (the k/v projections
          // 1/kv heads where those are fewer), the norms whole.
          const int64_t kv_bytes = 4 * 2 * c.layers * c.kv_heads * c.hd() * c.dim;
          const int64_t shared = kv_bytes / std::min(tp, kv_heads) - kv_bytes / tp;
          CHECK(r.weight_store_bytes < one.weight_store_bytes / tp + shared + 4 * c.dim * (2 * c.layers + 1));
          CHECK(r.weight_store_bytes >= one.weight_store_bytes / tp + shared);
          CHECK_THAT(r.to_text(), Catch::Contains(str_cat("group       ", tp, " rank")));
        }
      }
  }
}

TEST_CASE("generate --tp 2 on the CPU: sampled tokens are one device's at the same seed", "[cpu][parallel]") {
  const LlamaConfig c = tp_tiny(2);
  const auto w = random_weights(c, 12);
  GenerateOptions o{.device = Device::Cpu,
                    .batch = 3,
                    .prompt_len = 6,
                    .new_tokens = 9,
                    .check_steps = 8,
                    .sampling = GenerateOptions::Sampling{.temperature = 1.5, .top_k = 20, .top_p = 0.9},
                    .seed = 8};
  const GenerateReport one = run(c, w, o);
  o.tp = 2;
  CHECK(run(c, w, o).tokens == one.tokens);
}

TEST_CASE("generate --tp 2 from a checkpoint: each rank reads its slice; the tokens of the whole weights",
          "[cpu][parallel]") {
  testing::ScratchDir dir;
  LlamaConfig c = tp_tiny(2);
  c.qkv_bias = true;
  c.tied_embeddings = true;
  const auto w = random_weights(c, 13);
  require_ok(write_checkpoint(dir.path().string(), c, w, 2));
  auto ckpt = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(ckpt.status());
  GenerateOptions o{.device = Device::Cpu, .batch = 3, .prompt_len = 7, .new_tokens = 6, .check_steps = 5, .seed = 3};
  const GenerateReport one = run(c, w, o);
  o.tp = 2;
  o.checkpoint = &*ckpt;
  CHECK(run(c, {}, o).tokens == one.tokens);  // the check's reference read the checkpoint whole
  o.check_steps = 0;
  absl::StatusOr<GenerateReport> unchecked = generate(c, {}, o);
  require_ok(unchecked.status());
  CHECK(unchecked->tokens == one.tokens);
}

TEST_CASE("generate --tp: ranks that do not divide the model, buckets and compile-only are refused, named",
          "[cpu][parallel]") {
  LlamaConfig c = tp_tiny(2);
  const auto w = random_weights(c, 1);
  auto error = [&](const LlamaConfig& cfg, const std::map<std::string, HostTensor>& weights, GenerateOptions o) {
    o.device = Device::Cpu;
    absl::StatusOr<GenerateReport> r = generate(cfg, weights, o);
    REQUIRE_FALSE(r.ok());
    return status_message(r.status());
  };
  CHECK_THAT(error(c, w, {.tp = 3}), Catch::Contains("tp 3 must divide the heads (4) and the vocabulary (96)"));
  CHECK_THAT(error(c, w, {.tp = 8}), Catch::Contains("tp 8 must divide the heads (4)"));
  LlamaConfig odd = c;
  odd.vocab = 95;
  CHECK_THAT(error(odd, random_weights(odd, 1), {.tp = 2}), Catch::Contains("the vocabulary (95)"));
  CHECK_THAT(error(c, w, {.buckets = {1, 4}, .tp = 2}), Catch::Contains("(tp 2) does not support batch buckets"));
  CHECK_THAT(error(c, {}, {.compile_only = true, .tp = 2}), Catch::Contains("does not support compile_only"));
  CHECK_THAT(error(c, w, {.tp = -1}), Catch::Contains("tp >= 0"));
}

}  // namespace
}  // namespace kiln::models
