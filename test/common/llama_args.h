// The tiny Llama steps the tests of sharded graphs share (models/llama.h, trace_step), and
// their arguments: random inputs and weights, each sequence's start row, prompt lengths (prefill, the
// last prompt one row short) and a shuffled block table (paged: sequence i owns blocks
// 2i + 1 and 2i of 2 * batch blocks of 4 rows).
#pragma once

#include "ir/reference.h"
#include "models/llama.h"

namespace kiln::testing {

// dim 32, 2 layers, 4 query and 2 kv heads, FFN 48, vocabulary 40, f32; other query head
// counts keep the head dim 8 (dim 8 * heads).
inline models::LlamaConfig tiny_llama(int64_t heads = 4) {
  models::LlamaConfig c;
  c.dim = 8 * heads, c.layers = 2, c.heads = heads, c.kv_heads = 2, c.ffn = 48, c.vocab = 40, c.dtype = DType::f32;
  return c;
}

// Three forms of tiny_llama()'s step: 0 prefill and 1 decode over contiguous caches (1 with
// tied embeddings), 2 decode over a paged cache (blocks of 4 rows) with Qwen2's q/k/v biases
// and a sliding window of 3; of tiny_llama(heads).
struct LlamaForm {
  models::LlamaConfig config;
  Graph graph;
  bool decode = false, paged = false;
  const char* name = "";
};
inline LlamaForm tiny_llama_form(int form, int64_t heads = 4) {
  LlamaForm f{tiny_llama(heads), Graph(""), form > 0, form == 2,
              form == 0   ? "prefill"
              : form == 1 ? "decode, tied embeddings"
                          : "paged decode, q/k/v biases, window"};
  if (f.paged) f.config.qkv_bias = true, f.config.sliding_window = 3;
  f.config.tied_embeddings = form == 1;
  f.graph =
      models::trace_step(f.config, {.decode = f.decode,
                                    .cache = f.paged ? models::CacheLayout::Paged : models::CacheLayout::Contiguous,
                                    .block_size = 4});
  return f;
}

struct LlamaArgs {
  bool decode = false, paged = false;
  int64_t batch = 2, prompt = 3, cache_rows = 8;  // B; T of a prefill; S of a contiguous cache
  uint64_t seed = 5;
};

inline TensorMap llama_step_args(const models::LlamaConfig& c, const Graph& g, const LlamaArgs& a) {
  const int64_t B = a.batch, T = a.decode ? 1 : a.prompt;
  Bindings b{{"B", B}, {"S", a.cache_rows}, {"NB", 2 * B}, {"MB", 2}};  // those the form lacks go unused
  if (!a.decode) b["T"] = T;
  TensorMap args = random_args(g, b, a.seed, c.vocab);
  for (auto& [name, t] : models::random_weights(c, a.seed + 4)) args[name] = t;
  HostTensor start(DType::i32, {B});
  for (int64_t i = 0; i < B; ++i) start.set_int(i, a.decode ? 2 + i : i);
  args["start"] = start;
  if (!a.decode) {
    HostTensor lens(DType::i32, {B});
    for (int64_t i = 0; i < B; ++i) lens.set_int(i, T - (i % 2 == 1 && T > 1 ? 1 : 0));
    args["lens"] = lens;
  }
  if (a.paged) {
    HostTensor table(DType::i32, {B, 2});
    for (int64_t i = 0; i < B; ++i) table.set_int(2 * i, 2 * i + 1), table.set_int(2 * i + 1, 2 * i);
    args["block_table"] = table;
  }
  return args;
}

}  // namespace kiln::testing
