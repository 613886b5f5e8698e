// The Llama-family builder: HF configs, checkpoints written and read back, and compiled
// prefill + 16 decode steps against the reference evaluator on the CPU (ragged batches,
// contiguous and paged caches, Llama / Qwen2 / Mistral / tied-embedding variants).
#include <cstring>
#include <fstream>

#include <catch2/catch.hpp>

#include "frontends/safetensors/safetensors.h"
#include "ir/printer.h"
#include "ir/str.h"
#include "models/generate.h"
#include "models/llama.h"
#include "test/common/catch_helpers.h"
#include "test/common/scratch_dir.h"

namespace kiln::models {
namespace {

using testing::require_ok;
using testing::ScratchDir;

LlamaConfig tiny(DType dtype = DType::f32) {
  return {.dim = 48, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 80, .vocab = 97, .dtype = dtype};
}

const char* kLlama32Config = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
  "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
  "intermediate_size": 8192, "vocab_size": 128256, "hidden_act": "silu", "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "attention_bias": false, "mlp_bias": false, "max_position_embeddings": 131072,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";

TEST_CASE("llama: HF config.json files parse, and the builder's own round-trip") {
  absl::StatusOr<LlamaConfig> c = parse_hf_config(kLlama32Config, "config.json");
  require_ok(c.status());
  CHECK(c->dim == 2048);
  CHECK(c->layers == 16);
  CHECK(c->kv_heads == 8);
  CHECK(c->hd() == 64);
  CHECK(c->tied_embeddings);
  CHECK(c->rope_theta == 500000.0);
  REQUIRE(c->rope_scaling);
  CHECK(c->rope_scaling->factor == 32.0);
  CHECK(c->dtype == DType::bf16);
  CHECK(weight_bytes(*c) == weight_bytes(*preset("llama3.2-1b")));

  LlamaConfig qwen = tiny(), mistral = tiny(DType::bf16), tied = tiny(DType::f16);
  qwen.qkv_bias = true;
  mistral.sliding_window = 5;
  tied.tied_embeddings = true;
  for (const LlamaConfig& want : {qwen, mistral, tied, *c}) {
    absl::StatusOr<LlamaConfig> got = parse_hf_config(to_hf_config(want), "x");
    require_ok(got.status());
    CHECK(to_hf_config(*got) == to_hf_config(want));
  }
  CHECK_THAT(to_hf_config(qwen), Catch::Contains(R"("model_type": "qwen2")"));
  CHECK_THAT(to_hf_config(mistral), Catch::Contains(R"("sliding_window": 5)"));

  struct Bad {
    std::string patch_from, patch_to, want;
  };
  const Bad bads[] = {
      {R"("model_type": "llama")", R"("model_type": "gpt2")", "model_type 'gpt2' is not one kiln builds"},
      {R"("hidden_size": 2048,)", "", "missing 'hidden_size'"},
      {R"("num_key_value_heads": 8)", R"("num_key_value_heads": 7)", "kv_heads = 7 does not divide heads = 32"},
      {R"("hidden_act": "silu")", R"("hidden_act": "gelu")", "hidden_act 'gelu'"},
      {R"("rope_type": "llama3")", R"("rope_type": "yarn")", "rope scaling 'yarn' is not supported"},
      {R"("vocab_size": 128256)", R"("vocab_size": -3)", "'vocab_size' must be a non-negative integer"},
      {R"("torch_dtype": "bfloat16")", R"("torch_dtype": "int8")", "dtype 'int8'"},
      {R"("mlp_bias": false)", R"("mlp_bias": true)", "mlp_bias is not supported"},
  };
  for (const Bad& b : bads) {
    std::string text = kLlama32Config;
    size_t at = text.find(b.patch_from);
    REQUIRE(at != std::string::npos);
    text.replace(at, b.patch_from.size(), b.patch_to);
    absl::StatusOr<LlamaConfig> got = parse_hf_config(text, "dir/config.json");
    REQUIRE_FALSE(got.ok());
    CHECK_THAT(status_message(got.status()), Catch::StartsWith("dir/config.json: ") && Catch::Contains(b.want));
  }
  CHECK_FALSE(parse_hf_config("{", "x").ok());
  CHECK_FALSE(preset("llama9").ok());
}

TEST_CASE("llama: checkpoints written as HF saves them load back, sharded or not") {
  LlamaConfig c = tiny(DType::bf16);
  c.qkv_bias = true;
  std::map<std::string, HostTensor> w = random_weights(c, 5);
  for (int shards : {1, 3}) {
    ScratchDir dir;
    require_ok(write_checkpoint(dir.path().string(), c, w, shards));
    absl::StatusOr<LlamaConfig> rc = read_hf_config(dir.path().string());
    require_ok(rc.status());
    absl::StatusOr<SafetensorsCheckpoint> ckpt = SafetensorsCheckpoint::open(dir.path().string());
    require_ok(ckpt.status());
    absl::StatusOr<std::map<std::string, HostTensor>> got = load_weights(*rc, *ckpt);
    require_ok(got.status());
    REQUIRE(got->size() == w.size());
    for (const auto& [name, t] : w) CHECK(std::memcmp(got->at(name).data(), t.data(), t.nbytes()) == 0);
  }
  // An f32 checkpoint loads into a bf16 model (rounded); a missing or misshapen tensor is named.
  ScratchDir dir;
  LlamaConfig c32 = c;
  c32.dtype = DType::f32;
  std::map<std::string, HostTensor> w32 = random_weights(c32, 6);
  require_ok(write_checkpoint(dir.path().string(), c32, w32));
  auto ckpt = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(ckpt.status());
  auto bf = load_weights(c, *ckpt);
  require_ok(bf.status());
  const HostTensor& q = bf->at("model.layers.1.self_attn.q_proj.weight");
  CHECK(q.dtype() == DType::bf16);
  CHECK(std::abs(q.get(7) - w32.at("model.layers.1.self_attn.q_proj.weight").get(7)) < 1e-2);
  w32.erase("model.layers.1.mlp.up_proj.weight");
  w32["model.norm.weight"] = HostTensor(DType::f32, {c.dim + 1});
  require_ok(write_checkpoint(dir.path().string(), c32, w32));
  ckpt = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(ckpt.status());
  CHECK_THAT(status_message(load_weights(c32, *ckpt).status()),
             Catch::Contains("no tensor 'model.layers.1.mlp.up_proj.weight'"));
  w32["model.layers.1.mlp.up_proj.weight"] = HostTensor(DType::f32, {c.ffn, c.dim});
  require_ok(write_checkpoint(dir.path().string(), c32, w32));
  ckpt = SafetensorsCheckpoint::open(dir.path().string());
  CHECK_THAT(status_message(load_weights(c32, *ckpt).status()),
             Catch::Contains("tensor 'model.norm.weight' has shape [49], the config needs [48]"));
}

TEST_CASE("llama: every layer traces to the same nodes") {
  // The ops of an n+1-layer step are those of the n-layer step with one layer's block repeated.
  for (bool decode : {false, true}) {
    for (bool paged : {false, true}) {
      LlamaConfig c = tiny();
      std::vector<std::vector<Op>> ops;
      for (int64_t layers : {1, 2, 3}) {
        c.layers = layers;
        Graph g = trace_step(c, {.decode = decode, .cache = paged ? CacheLayout::Paged : CacheLayout::Contiguous});
        ops.emplace_back();
        for (const auto& n : g.nodes()) ops.back().push_back(n->op());
      }
      const size_t d = ops[1].size() - ops[0].size();
      REQUIRE(d > 10);
      CHECK(ops[2].size() - ops[1].size() == d);
      bool repeated = false;
      for (size_t p = 0; p + d <= ops[1].size() && !repeated; ++p) {
        std::vector<Op> want(ops[1].begin(), ops[1].begin() + static_cast<long>(p + d));
        want.insert(want.end(), ops[1].begin() + static_cast<long>(p), ops[1].begin() + static_cast<long>(p + d));
        want.insert(want.end(), ops[1].begin() + static_cast<long>(p + d), ops[1].end());
        repeated = want == ops[2];
      }
      CHECK(repeated);
    }
  }
}

struct Variant {
  const char* name;
  LlamaConfig config;
};

std::vector<Variant> variants() {
  LlamaConfig llama = tiny(), qwen = tiny(), mistral = tiny(), tied = tiny();
  qwen.qkv_bias = true;
  mistral.sliding_window = 4;  // the prompts (9 tokens) and 16 steps are longer than the window
  tied.tied_embeddings = true;
  tied.rope_scaling = Llama3RopeScaling{8, 1, 4, 16};
  return {{"llama", llama}, {"qwen2 (qkv bias)", qwen}, {"mistral (window 4)", mistral}, {"tied, llama3 rope", tied}};
}

// Writes a random checkpoint, loads it back, and runs prefill + 16 checked decode steps.
GenerateReport check_variant(const LlamaConfig& c, const GenerateOptions& o) {
  ScratchDir dir;
  require_ok(write_checkpoint(dir.path().string(), c, random_weights(c, 42), 2));
  absl::StatusOr<LlamaConfig> rc = read_hf_config(dir.path().string());
  require_ok(rc.status());
  auto ckpt = SafetensorsCheckpoint::open(dir.path().string());
  require_ok(ckpt.status());
  auto w = load_weights(*rc, *ckpt);
  require_ok(w.status());
  absl::StatusOr<GenerateReport> r = generate(*rc, *w, o);
  require_ok(r.status());
  INFO(r->to_text());
  CHECK(r->checked_steps == o.check_steps + 1);
  CHECK(r->tokens.size() == static_cast<size_t>(o.batch));
  CHECK(r->tokens[0].size() == static_cast<size_t>(o.new_tokens));
  return *r;
}

TEST_CASE("llama: compiled prefill + 16 decode steps match the reference on the CPU") {
  for (const Variant& v : variants()) {
    for (int64_t batch : {1, 3}) {
      INFO(v.name << ", batch " << batch);
      GenerateReport r = check_variant(v.config, {.device = Device::Cpu, .batch = batch, .prompt_len = 9,
                                                  .new_tokens = 17, .check_steps = 16, .seed = 1});
      if (batch == 3) CHECK(r.tokens[0] != r.tokens[2]);  // the sequences really differ
    }
  }
}

TEST_CASE("llama: a paged cache with a shuffled block table gives the reference's tokens") {
  LlamaConfig c = tiny();
  c.sliding_window = 6;
  check_variant(c, {.device = Device::Cpu, .batch = 3, .prompt_len = 11, .new_tokens = 17,
                    .cache = CacheLayout::Paged, .block_size = 4, .check_steps = 16, .seed = 2});
}

TEST_CASE("llama: sampled tokens (temperature, top-k, top-p in the graph) match the reference's") {
  LlamaConfig c = tiny();
  GenerateOptions o{.device = Device::Cpu, .batch = 3, .prompt_len = 6, .new_tokens = 17, .check_steps = 16,
                    .sampling = GenerateOptions::Sampling{.temperature = 1.5, .top_k = 20, .top_p = 0.9}, .seed = 8};
  GenerateReport sampled = check_variant(c, o);
  o.sampling->top_k = 1;  // top-k 1 is greedy decoding
  GenerateReport top1 = check_variant(c, o);
  o.sampling.reset();
  GenerateReport greedy = check_variant(c, o);
  CHECK(top1.tokens == greedy.tokens);
  CHECK(sampled.tokens != greedy.tokens);
}

TEST_CASE("llama: bf16 weights and cache, batch 2, against the reference") {
  check_variant(tiny(DType::bf16), {.device = Device::Cpu, .batch = 2, .prompt_len = 7, .new_tokens = 9,
                                    .check_steps = 8, .seed = 3});
}

#if KILN_WITH_CUDA_BACKEND
TEST_CASE("llama: the steps generate and NVRTC-compile for CUDA (no GPU needed)") {
  LlamaConfig c = tiny(DType::bf16);
  c.qkv_bias = true;
  c.sliding_window = 8;
  // Prefill over a contiguous cache; decode over a paged one, sampling (every feature once).
  for (bool decode : {false, true}) {
    INFO((decode ? "decode, paged, sampling" : "prefill"));
    Graph g = trace_step(c, {.decode = decode, .cache = decode ? CacheLayout::Paged : CacheLayout::Contiguous,
                             .block_size = 16, .sample = decode});
    auto cg = compile(g, {.device = Device::Cuda, .compile_only = true});
    require_ok(cg.status());
    Bindings b{{"B", 3}};
    if (decode) b["NB"] = 9, b["MB"] = 3;
    else b["T"] = 17, b["S"] = 40;
    require_ok(cg->warm_up(b));
    CHECK(cg->stats().kernels > 0);
  }
}

TEST_CASE("llama: identical layers share their kernels: 4 layers compile no more kernels than 2 (no GPU needed)") {
  // An rms eps no other test uses makes every kernel source new to this process, so the
  // kernel cache's lookups (compiled + disk + memory hits) count the distinct sources.
  LlamaConfig c = tiny(DType::bf16);
  c.rms_eps = 3.0517578125e-05;
  auto build = [&](int64_t layers) {
    c.layers = layers;
    absl::StatusOr<GenerateReport> r =
        generate(c, {}, {.device = Device::Cuda, .batch = 3, .prompt_len = 9, .new_tokens = 4, .compile_only = true});
    require_ok(r.status());
    INFO(layers << " layers: " << r->compile.to_text(r->device));
    CHECK(r->compiled_only);
    CHECK(r->compile.backend_ms > 0);
    return r->compile;
  };
  CompileBreakdown one = build(1), two = build(2), four = build(4);
  const int64_t distinct_one = one.compiled + one.disk_hits + one.memory_hits;
  const int64_t distinct_two = two.compiled + two.disk_hits + two.memory_hits;
  const int64_t distinct_four = four.compiled + four.disk_hits + four.memory_hits;
  INFO("distinct sources: 1 layer " << distinct_one << ", 2 layers " << distinct_two << ", 4 layers " << distinct_four);
  // Each layer's kernels are counted, but a layer like the one before it adds no source.
  CHECK(four.kernels > two.kernels);
  CHECK(two.kernels > one.kernels);
  CHECK(four.shared > two.shared);
  CHECK(four.kernels - four.shared == distinct_four);  // the rest are the cache's lookups
  CHECK(distinct_four == distinct_two);
  CHECK(distinct_two < 2 * distinct_one);
}
#endif

TEST_CASE("llama: generate refuses bad sizes and missing weights with a message") {
  LlamaConfig c = tiny();
  auto w = random_weights(c, 1);
  CHECK_THAT(status_message(generate(c, w, {.device = Device::Cpu, .batch = 0}).status()),
             Catch::Contains("batch and prompt length must be >= 1"));
  w["model.norm.weight"] = HostTensor(DType::f32, {3});
  CHECK_THAT(status_message(generate(c, w, {.device = Device::Cpu}).status()),
             Catch::Contains("weight 'model.norm.weight' is f32[3], the config needs f32[48]"));
  w.erase("model.norm.weight");
  CHECK_THAT(status_message(generate(c, w, {.device = Device::Cpu}).status()), Catch::Contains("no weight 'model.norm.weight'"));
  LlamaConfig bad = c;
  bad.kv_heads = 3;
  CHECK_THAT(status_message(generate(bad, w, {.device = Device::Cpu}).status()), Catch::Contains("does not divide"));
}

}  // namespace
}  // namespace kiln::models
