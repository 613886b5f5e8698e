// `kiln generate`: a Llama-family model (models/) from a preset, a config.json or a checkpoint
// directory, compiled as prefill and decode steps; prefills a random batch of prompts, decodes
// greedily (or samples) and prints compile time, prefill latency, per-token decode latency, tokens/s and
// memory. --check compares the prefill and the first decode steps with the reference evaluator.
// --buckets builds (and captures) the decode step per batch bucket before the first step.
// --tp N runs the same loop over an N-rank tensor-parallel group (models/generate.h).
#include <cstdio>

#include "compiler/cli/commands.h"
#include "models/generate.h"

namespace kiln::cli {

void register_generate(CLI::App& app) {
  struct Options {
    std::string config, checkpoint, dtype, device = "auto", mode = "default";
    models::GenerateOptions gen;
    models::GenerateOptions::Sampling sampling{.temperature = 0};
    bool check = false, paged = false, fixed = false;
    int64_t layers = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "greedy generation with a compiled Llama-family model, timed");
  cmd->add_option("--config", o->config, "a preset (tiny, llama3.2-1b, llama3-8b), a config.json or its directory");
  cmd->add_option("--checkpoint", o->checkpoint, "an HF checkpoint directory (*.safetensors); default: random weights");
  cmd->add_option("--prompt-len", o->gen.prompt_len, "tokens per prompt (padded length)")->capture_default_str();
  cmd->add_option("--new-tokens", o->gen.new_tokens, "tokens generated per sequence")->capture_default_str();
  cmd->add_option("--batch", o->gen.batch, "sequences")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, cuda or auto")->capture_default_str();
  cmd->add_option("--mode", o->mode, "default, reduce-overhead or max-autotune")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "f32, bf16 or f16 instead of the config's");
  cmd->add_option("--seed", o->gen.seed, "prompts, caches and random weights")->capture_default_str();
  cmd->add_flag("--check", o->check, "compare the prefill and the first decode steps with the reference evaluator");
  cmd->add_option("--check-steps", o->gen.check_steps, "decode steps that --check compares (default 4)");
  cmd->add_flag("--paged", o->paged, "a paged KV cache with a shuffled block table");
  cmd->add_option("--block-size", o->gen.block_size, "rows per block of the paged cache")->capture_default_str();
  cmd->add_flag("--fixed-len", o->fixed, "every prompt --prompt-len long (default: ragged lengths)");
  cmd->add_option("--temperature", o->sampling.temperature, "sample (in the graph) at this temperature; 0: greedy");
  cmd->add_option("--top-k", o->sampling.top_k, "sample among the k most probable tokens (0: all)");
  cmd->add_option("--top-p", o->sampling.top_p, "sample among the most probable tokens holding this mass (1: all)");
  cmd->add_option("--prompts", o->gen.prompts_file, "a .npy of prompts [B, T] instead of random ones");
  cmd->add_option("--layers", o->layers, "decoder layers instead of the config's (random weights only)");
  cmd->add_flag("--compile-only", o->gen.compile_only, "build both steps (CUDA: NVRTC, no GPU needed), print the compile, stop");
  cmd->add_option("--logits-out", o->gen.logits_file, "save the prefill's logits (.npy f32 [B, vocab])");
  cmd->add_option("--buckets", o->gen.buckets,
                  "batch sizes of the decode step, ascending (1,8,32): it runs at the smallest >= --batch, every "
                  "size built (and with reduce-overhead on a GPU captured) first")->delimiter(',');
  cmd->add_option("--tp", o->gen.tp,
                  "tensor parallelism: N ranks, each with its shard of the weights and KV caches (heads, FFN and "
                  "vocabulary split; a checkpoint read by each rank only for its slice): --device cpu a thread per "
                  "rank, cuda a GPU per rank over NCCL (1: a group of one). N must divide the heads and the "
                  "vocabulary, and the kv heads divide N or N them (fewer kv heads than ranks are each shared by "
                  "N / kv heads ranks). Not with --buckets or --compile-only")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([o] {
    std::optional<Device> device = parse_device(o->device);
    std::optional<Mode> mode = parse_mode(o->mode);
    if (!device || !mode) throw CliError(str_cat("unknown --device '", o->device, "' or --mode '", o->mode, "'"));
    if (absl::Status s = device_available(*device); !s.ok() && !(o->gen.compile_only && *device == Device::Cuda)) throw CliError(str_cat("--device ", o->device, ": ", status_message(s)));
    std::optional<DType> dtype;
    if (!o->dtype.empty() && !(dtype = parse_dtype(o->dtype))) throw CliError(str_cat("unknown --dtype '", o->dtype, "'"));
    // With --tp each rank reads its slice of a checkpoint: nothing is read whole here.
    const bool rank_reads = o->gen.tp > 0 && !o->checkpoint.empty();
    models::LoadedModel m = check(models::load_model(o->config, o->checkpoint, dtype, o->gen.seed, o->layers,
                                                     !o->gen.compile_only && !rank_reads));
    std::optional<SafetensorsCheckpoint> ckpt;
    if (rank_reads) ckpt = check(SafetensorsCheckpoint::open(o->checkpoint));
    models::GenerateOptions g = o->gen;
    if (ckpt) g.checkpoint = &*ckpt;
    g.device = *device;
    g.mode = *mode;
    g.cache = o->paged ? models::CacheLayout::Paged : models::CacheLayout::Contiguous;
    g.ragged = !o->fixed;
    if (o->sampling.temperature > 0) g.sampling = o->sampling;
    g.bucket_progress = [](const CompileStats::Bucket& b) {
      std::printf("bucket      B = %lld: compile %.1f ms, capture %.1f ms\n", (long long)b.size, b.compile_ms, b.capture_ms);
      std::fflush(stdout);
    };
    g.check_steps = !o->check ? 0 : g.check_steps == 0 ? 4 : g.check_steps;
    const models::LlamaConfig& c = m.config;
    std::printf("model       %lld layers, dim %lld, heads %lld/%lld, ffn %lld, vocab %lld, %s%s\n", (long long)c.layers,
                (long long)c.dim, (long long)c.heads, (long long)c.kv_heads, (long long)c.ffn, (long long)c.vocab,
                std::string(dtype_name(c.dtype)).c_str(), o->checkpoint.empty() ? ", random weights" : "");
    if (g.prompts_file.empty())
      std::printf("batch       %lld x %lld prompt tokens%s, %lld new tokens\n", (long long)g.batch, (long long)g.prompt_len,
                  g.ragged ? " (ragged)" : "", (long long)g.new_tokens);
    std::fputs(check(models::generate(c, m.weights, g)).to_text().c_str(), stdout);
  });
}

}  // namespace kiln::cli
