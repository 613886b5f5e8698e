// The Llama family (Llama 2/3, Mistral, Qwen2) traced as whole-model prefill and decode
// steps over a KV cache, from a config struct or a Hugging Face config.json, with HF
// tensor names as the graph's parameters so that a checkpoint directory loads directly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "frontends/safetensors/safetensors.h"
#include "ir/graph.h"
#include "ir/host_tensor.h"

namespace kiln::models {

// Llama 3's rope_scaling ("rope_type": "llama3"): long wavelengths are divided by `factor`,
// short ones kept, the band between interpolated.
struct Llama3RopeScaling {
  double factor = 8, low_freq_factor = 1, high_freq_factor = 4;
  int64_t original_max_positions = 8192;
};

struct LlamaConfig {
  int64_t dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0;
  int64_t head_dim = 0;  // 0: dim / heads
  double rope_theta = 10000, rms_eps = 1e-5;
  std::optional<Llama3RopeScaling> rope_scaling;
  bool tied_embeddings = false;  // the LM head is embed_tokens' weight
  bool qkv_bias = false;         // Qwen2: q/k/v projections have a bias
  int64_t sliding_window = 0;    // Mistral: a query sees the last `sliding_window` keys; 0: all
  DType dtype = DType::bf16;     // of the weights, activations and KV cache

  int64_t hd() const { return head_dim > 0 ? head_dim : (heads > 0 ? dim / heads : 0); }
};

// Sizes positive, kv_heads dividing heads, an even head dim, a float dtype.
absl::Status validate(const LlamaConfig& c);
// A Hugging Face config.json of model_type llama, mistral or qwen2 (hidden_act silu, no MLP
// bias, rope scaling none or llama3). Errors name `where` and the field.
absl::StatusOr<LlamaConfig> parse_hf_config(std::string_view json_text, std::string_view where);
// `path`: a config.json, or a directory holding one.
absl::StatusOr<LlamaConfig> read_hf_config(const std::string& path);
// The config.json text that parse_hf_config reads back to `c` (model_type qwen2 with qkv_bias,
// mistral with a sliding window, else llama).
std::string to_hf_config(const LlamaConfig& c);
// Named shapes: "llama3.2-1b", "llama3-8b", and "tiny" (2 layers, dim 64, for checks).
absl::StatusOr<LlamaConfig> preset(std::string_view name);

// One parameter of the model: its HF name, dtype and shape, in the graph's signature order.
struct ParamSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
std::vector<ParamSpec> parameters(const LlamaConfig& c);
int64_t weight_bytes(const LlamaConfig& c);

enum class CacheLayout : uint8_t { Contiguous, Paged };
struct StepOptions {
  bool decode = false;  // one token per sequence; else a padded batch of prompts
  CacheLayout cache = CacheLayout::Contiguous;
  int64_t block_size = 16;  // rows per block of a paged cache
  // next_token sampled (models/sample.h) from the inputs temperature f32 [B], top_k i32 [B],
  // top_p f32 [B] and uniform f32 [B], which follow block_table; else greedy.
  bool sample = false;
};

// A prefill or decode step. Arguments, in order:
//   prefill: tokens i64 [B, T] (prompts padded to T), start i32 [B] (cache row of each
//            prompt's first token, 0 for a fresh sequence), lens i32 [B] (each prompt's
//            length, 1..T: padding after it is written to the cache but never read);
//   decode:  tokens i64 [B], start i32 [B] (the new token's position = the cache length);
//   paged:   block_table i32 [B, MB];
//   state:   k_cache.N, v_cache.N per layer N, [B, KVH, S, D] contiguous or [NB, block_size,
//            KVH, D] paged (HF's head_dim D);
//   then the parameters of parameters(c), by their HF names.
// Outputs: logits f32 [B, vocab] of each sequence's last token, next_token i64 [B] (greedy
// or sampled),
// next_start i32 [B] (start + lens, or start + 1: where the next token goes), then the
// updated caches (aliasing the state arguments). next_token and next_start are the next
// decode step's tokens and start, so a decode loop needs no host round trip. Layers trace to the same nodes
// in the same order, differing only in their parameters' and caches' names.
Graph trace_step(const LlamaConfig& c, const StepOptions& o);

// Random weights from `seed` (uniform, scaled by 1/sqrt(fan-in); norms near 1).
std::map<std::string, HostTensor> random_weights(const LlamaConfig& c, uint64_t seed);
// The model's parameters from a checkpoint: every ParamSpec present with its shape (float
// tensors of another dtype are converted to c.dtype); extra tensors are ignored. Errors name
// the checkpoint and the tensor.
absl::StatusOr<std::map<std::string, HostTensor>> load_weights(const LlamaConfig& c, const SafetensorsCheckpoint& ckpt);
// Writes config.json and the weights as `shards` safetensors files (with an index when more
// than one) into `dir`, created if needed: a checkpoint as Hugging Face saves one.
absl::Status write_checkpoint(const std::string& dir, const LlamaConfig& c,
                              const std::map<std::string, HostTensor>& weights, int shards = 1);

}  // namespace kiln::models
