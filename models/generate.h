// Greedy generation with compiled prefill and decode steps (models/llama.h): what `kiln
// generate` runs and times, and what the tests check against the reference evaluator.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/compile.h"
#include "frontends/safetensors/safetensors.h"
#include "models/llama.h"

namespace kiln::models {

struct GenerateOptions {
  Device device = Device::Auto;
  Mode mode = Mode::Default;
  int64_t batch = 1, prompt_len = 16, new_tokens = 16;
  // Prompt b is prompt_len - (b % 3) * max(1, prompt_len / 4) tokens long (at least 1), padded
  // to prompt_len; false: every prompt is prompt_len long.
  bool ragged = true;
  CacheLayout cache = CacheLayout::Contiguous;
  int64_t block_size = 16;  // paged cache: rows per block (the table is a shuffled permutation)
  // The prefill and the first `check_steps` decode steps are also run by the reference
  // evaluator on the same inputs and caches: logits within the dtype's tolerance, greedy
  // tokens identical. 0: no check.
  int check_steps = 0;
  // Sampling (models/sample.h) instead of greedy decoding, the same parameters for every
  // sequence; each step's uniform numbers come from `seed`.
  struct Sampling {
    double temperature = 1.0;
    int64_t top_k = 0;    // <= 0: every token
    double top_p = 1.0;   // 1: every token
  };
  std::optional<Sampling> sampling;
  uint64_t seed = 0;  // prompts, the caches' initial contents and the sampling
  // A .npy of integer prompts [B, T] (then batch and prompt_len are its shape, not ragged)
  // instead of random ones; and where to save the prefill's logits (.npy f32 [B, vocab]).
  // Both empty: neither. They let bench/llama_torch.py decode the same batch and compare.
  std::string prompts_file, logits_file;
  // Batch buckets of the decode step (CompileOptions::buckets): it runs at the smallest size
  // >= batch, pad rows at start -1 (they write no cache row); every size is built (and, in
  // reduce-overhead on a GPU, its CUDA graph captured) before the first step, each reported
  // to `bucket_progress` when set. A contiguous cache gets the largest bucket's rows. Empty: none.
  std::vector<int64_t> buckets;
  std::function<void(const CompileStats::Bucket&)> bucket_progress;
  // Build both steps' specializations (CUDA: every kernel NVRTC-compiled, no device needed)
  // and stop: the report holds the compile breakdown only. Weights are not needed.
  bool compile_only = false;
  // Tensor parallelism (issue 22): tp >= 1 runs both steps sharded over a group of `tp` ranks
  // (passes/shard.h, llama_shard_plan: heads, FFN and vocabulary split; compiler/parallel.h:
  // a thread per rank over the host group on the CPU, a GPU per rank over NCCL on CUDA), each
  // rank with its shard of the weights and of the KV caches (by kv heads); 1 is a group of
  // one (NCCL on one GPU). The loop, sampling and check are the single device's; the check
  // runs the whole model. Not with `buckets` or `compile_only` (a group compiles on its
  // devices). 0: one device, no group.
  int64_t tp = 0;
  // With tp >= 1: each rank reads only its slice of the weights from here
  // (read_rank_parameters) instead of taking chunks of `weights`, which may then be empty
  // (the check's reference then reads them whole from here).
  const SafetensorsCheckpoint* checkpoint = nullptr;
};

// Where compiling both steps went (CompileStats summed over the steps), and whether the
// kernels came from NVRTC (cold), the disk cache (a warm start) or this process's memory.
struct CompileBreakdown {
  double total_ms = 0;  // tracing, compile() and warm_up() of both steps, wall time
  double trace_ms = 0, pass_ms = 0, lower_ms = 0;  // tracing both steps' graphs, their passes and lowering
  double device_ms = 0;  // the device adapters (the first CUDA one loads the driver and creates the context)
  double build_ms = 0;   // building the specializations, of which:
  double codegen_ms = 0, backend_ms = 0;  // backend: NVRTC or LLVM, with cache lookups
  int kernels = 0;  // kernels of both steps' specializations (each layer's counted)
  int shared = 0;   // of those, built once with an identical kernel (identical layers)
  int64_t compiled = 0, disk_hits = 0, memory_hits = 0;
  std::string to_text(std::string_view device) const;  // "cold 2.31 s (passes ..., nvrtc ...), ..."
};

struct GenerateReport {
  double compile_ms = 0;  // compile() and warm_up() of both steps (without the buckets' warm-up)
  CompileBreakdown compile;
  bool compiled_only = false;  // GenerateOptions::compile_only: nothing below was measured
  std::vector<CompileStats::Bucket> buckets;  // the decode step's warm-up per bucket, largest first
  double buckets_ms = 0;                      // all of it
  double prefill_ms = 0;  // one prefill call, after a first untimed one
  std::vector<double> decode_ms;  // per decode step, until its tokens are on the host
  double tokens_per_s = 0;        // batch / mean decode step
  int64_t weight_bytes = 0, cache_bytes = 0, held_bytes = 0;  // held: arenas, scratch, weight prep, graph slots
  int64_t weight_store_bytes = 0;  // the weight store both steps read (weights held once), per rank
  int64_t weight_prep_bytes = 0;   // of held_bytes: weight-prep copies the steps still made (0 with the store)
  std::optional<DeviceMemoryInfo> device_memory;
  std::vector<std::vector<int64_t>> tokens;  // per sequence: its greedy tokens (prefill's first)
  int checked_steps = 0;
  double max_logit_error = 0;  // largest |compiled - reference| over the checked steps
  std::string device;
  int64_t ranks = 1;         // GenerateOptions::tp
  std::string communicator;  // with ranks > 1: rank 0's (Communicator::describe)
  std::string to_text() const;
};

// A model to generate with: `config` is a preset name (models/llama.h), a config.json or a
// directory holding one, or empty for the checkpoint's own; without a checkpoint the weights
// are random from `seed`. `dtype`, when set, replaces the config's (checkpoint tensors are
// converted). `layers` > 0: that many decoder layers instead of the config's (random weights
// only). `with_weights` false: the config only (weights left empty).
struct LoadedModel {
  LlamaConfig config;
  std::map<std::string, HostTensor> weights;
};
absl::StatusOr<LoadedModel> load_model(const std::string& config, const std::string& checkpoint,
                                       std::optional<DType> dtype, uint64_t seed, int64_t layers = 0,
                                       bool with_weights = true);

// Compiles the steps of `c` for `o.device`, prefills a random batch of prompts and decodes
// o.new_tokens tokens greedily. An error names the step and what went wrong, including a
// check that failed (the step, the sequence and the worst logit). With o.compile_only only
// the compile is done (`weights` may be empty).
absl::StatusOr<GenerateReport> generate(const LlamaConfig& c, const std::map<std::string, HostTensor>& weights,
                                        const GenerateOptions& o);

}  // namespace kiln::models
