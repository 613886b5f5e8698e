#include "models/llama.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <filesystem>
#include <mutex>
#include <numbers>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "frontends/trace/trace.h"
#include "ir/checked.h"
#include "ir/file_io.h"
#include "ir/status.h"
#include "ir/str.h"
#include "models/sample.h"

namespace kiln::models {

namespace {

using nlohmann::json;
using namespace kiln::trace;

std::string layer_prefix(int64_t i) { return str_cat("model.layers.", i, "."); }

// inv_freq[i] = theta^(-2i/D), with Llama 3's scaling when configured; in double, then f32.
HostTensor rope_inv_freq(const LlamaConfig& c) {
  const int64_t half = c.hd() / 2;
  HostTensor t(DType::f32, {half});
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.hd()));
    if (const auto& s = c.rope_scaling) {
      const double old_len = static_cast<double>(s->original_max_positions);
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > old_len / s->low_freq_factor) {
        f /= s->factor;
      } else if (wavelen >= old_len / s->high_freq_factor) {
        double smooth = (old_len / wavelen - s->low_freq_factor) / (s->high_freq_factor - s->low_freq_factor);
        f = (1 - smooth) * f / s->factor + smooth * f;
      }
    }
    t.set(i, f);
  }
  return t;
}

// What every layer of one step shares: the rotary tables and the cache addressing.
struct StepContext {
  Tensor cos, sin;  // [B, 1, T, D] in the model's dtype
  Tensor start, kv_lens;
  std::optional<Tensor> block_table;
};

// x [B, H, T, D] rotated "rotate half" style, as HF's apply_rotary_pos_emb.
Tensor rotary(const Tensor& x, const StepContext& s, int64_t hd) {
  Tensor x1 = slice(x, -1, 0, hd / 2);
  Tensor x2 = slice(x, -1, hd / 2, hd);
  Tensor rotated = concat({-x2, x1}, -1);
  Tensor x_cos = x * s.cos;  // its own statement: C++ leaves the order of a + b's operands open
  return x_cos + rotated * s.sin;
}

// [B, T, H * D] -> [B, H, T, D]
Tensor heads_first(const Tensor& x, int64_t heads, int64_t hd) {
  return permute(reshape(x, {x.dim(0), x.dim(1), heads, hd}), {0, 2, 1, 3});
}

using Params = std::map<std::string, Tensor>;

std::optional<Tensor> maybe(const Params& p, const std::string& name) {
  auto it = p.find(name);
  return it == p.end() ? std::nullopt : std::optional<Tensor>(it->second);
}

// One decoder layer; appends its updated caches to `caches`.
Tensor layer(const LlamaConfig& c, const Params& p, int64_t i, const Tensor& x, const Tensor& k_cache,
             const Tensor& v_cache, const StepContext& s, std::vector<Tensor>& caches) {
  const std::string pre = layer_prefix(i);
  auto w = [&](const std::string& n) { return p.at(pre + n); };
  const int64_t hd = c.hd();
  Tensor h = rms_norm(x, w("input_layernorm.weight"), {-1}, c.rms_eps);
  Tensor q = heads_first(linear(h, w("self_attn.q_proj.weight"), maybe(p, pre + "self_attn.q_proj.bias")), c.heads, hd);
  Tensor k = heads_first(linear(h, w("self_attn.k_proj.weight"), maybe(p, pre + "self_attn.k_proj.bias")), c.kv_heads, hd);
  Tensor v = heads_first(linear(h, w("self_attn.v_proj.weight"), maybe(p, pre + "self_attn.v_proj.bias")), c.kv_heads, hd);
  q = rotary(q, s, hd);
  k = rotary(k, s, hd);
  Tensor kc = cache_write(k_cache, k, s.start, s.block_table);
  Tensor vc = cache_write(v_cache, v, s.start, s.block_table);
  caches.push_back(kc);
  caches.push_back(vc);
  Tensor a = attention(q, kc, vc,
                       {.kv_lens = s.kv_lens, .block_table = s.block_table, .causal = true, .window = c.sliding_window});
  a = reshape(permute(a, {0, 2, 1, 3}), {x.dim(0), x.dim(1), c.heads * hd});
  Tensor r = x + linear(a, w("self_attn.o_proj.weight"));
  Tensor m = rms_norm(r, w("post_attention_layernorm.weight"), {-1}, c.rms_eps);
  Tensor gate = silu(linear(m, w("mlp.gate_proj.weight")));
  Tensor gated = gate * linear(m, w("mlp.up_proj.weight"));
  return r + linear(gated, w("mlp.down_proj.weight"));
}

double get_number(const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

// Parameters `next`, `next` + 1, ... of `specs` into `tensors` until none is left: one
// generator per parameter, seeded from `seed` and its index.
void fill_random_parameters(std::atomic<size_t>& next, const std::vector<ParamSpec>& specs, uint64_t seed,
                            std::vector<HostTensor>& tensors) {
  for (size_t i; (i = next.fetch_add(1)) < specs.size();) {
    const ParamSpec& p = specs[i];
    std::mt19937_64 rng(seed + 0x9e3779b97f4a7c15ull * (i + 1));
    HostTensor h(p.dtype, p.shape);
    const bool norm = p.name.ends_with("norm.weight"), bias = p.name.ends_with(".bias");
    const bool embed = p.name == "model.embed_tokens.weight";
    const double r = norm || bias ? 0.2 : embed ? 1.0 : 1.0 / std::sqrt(static_cast<double>(p.shape.back()));
    h.fill_random(rng, -r, r);
    if (norm)
      for (int64_t j = 0; j < h.numel(); ++j) h.set(j, 1.0 + h.get(j));
    tensors[i] = std::move(h);
  }
}

}  // namespace

absl::Status validate(const LlamaConfig& c) {
  for (auto [name, v] : {std::pair<const char*, int64_t>{"dim", c.dim}, {"layers", c.layers}, {"heads", c.heads},
                         {"kv_heads", c.kv_heads}, {"ffn", c.ffn}, {"vocab", c.vocab}, {"head_dim", c.hd()}})
    if (v <= 0) return invalid_argument("llama config: ", name, " = ", v, ", expected a positive size");
  if (c.heads % c.kv_heads != 0)
    return invalid_argument("llama config: kv_heads = ", c.kv_heads, " does not divide heads = ", c.heads);
  if (c.hd() % 2 != 0) return invalid_argument("llama config: head_dim = ", c.hd(), " must be even (rotary halves)");
  if (c.sliding_window < 0) return invalid_argument("llama config: sliding_window = ", c.sliding_window);
  if (!(c.rope_theta > 0) || !(c.rms_eps > 0)) return invalid_argument("llama config: rope_theta and rms_eps must be > 0");
  if (c.dtype != DType::f32 && c.dtype != DType::bf16 && c.dtype != DType::f16)
    return invalid_argument("llama config: dtype ", dtype_name(c.dtype), ", expected f32, bf16 or f16");
  if (c.rope_scaling && (!(c.rope_scaling->factor > 0) || !(c.rope_scaling->high_freq_factor > c.rope_scaling->low_freq_factor) ||
                         c.rope_scaling->original_max_positions <= 0))
    return invalid_argument("llama config: rope_scaling needs factor > 0, high_freq_factor > low_freq_factor and "
                            "original_max_position_embeddings > 0");
  for (int64_t x : {c.dim, c.ffn, c.vocab, c.heads * c.hd()})
    KILN_RETURN_IF_ERROR(checked_nbytes(c.dtype, std::vector<int64_t>{x, x}, "llama config: a weight").status());
  return absl::OkStatus();
}

absl::StatusOr<LlamaConfig> parse_hf_config(std::string_view json_text, std::string_view where) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid_argument(where, ": not a JSON object");
  auto bad = [&](const auto&... a) { return invalid_argument(where, ": ", a...); };
  std::string type = j.value("model_type", std::string());
  if (type != "llama" && type != "mistral" && type != "qwen2")
    return bad("model_type '", type, "' is not one kiln builds (llama, mistral, qwen2)");
  auto size = [&](const char* key, int64_t& out, bool required) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return required ? bad("missing '", key, "'") : absl::OkStatus();
    if (!it->is_number_integer() || it->get<int64_t>() < 0) return bad("'", key, "' must be a non-negative integer");
    out = it->get<int64_t>();
    return absl::OkStatus();
  };
  LlamaConfig c;
  KILN_RETURN_IF_ERROR(size("hidden_size", c.dim, true));
  KILN_RETURN_IF_ERROR(size("num_hidden_layers", c.layers, true));
  KILN_RETURN_IF_ERROR(size("num_attention_heads", c.heads, true));
  c.kv_heads = c.heads;
  KILN_RETURN_IF_ERROR(size("num_key_value_heads", c.kv_heads, false));
  KILN_RETURN_IF_ERROR(size("intermediate_size", c.ffn, true));
  KILN_RETURN_IF_ERROR(size("vocab_size", c.vocab, true));
  KILN_RETURN_IF_ERROR(size("head_dim", c.head_dim, false));
  if (std::string act = j.value("hidden_act", std::string("silu")); act != "silu")
    return bad("hidden_act '", act, "', kiln's Llama builder has silu only");
  if (j.value("mlp_bias", false)) return bad("mlp_bias is not supported");
  if (type == "llama" && j.value("attention_bias", false)) return bad("attention_bias (with an o_proj bias) is not supported");
  c.qkv_bias = type == "qwen2";
  if (type == "mistral") KILN_RETURN_IF_ERROR(size("sliding_window", c.sliding_window, false));
  if (type == "qwen2" && j.value("use_sliding_window", false))
    return bad("use_sliding_window (Qwen2's per-layer windows) is not supported");
  c.tied_embeddings = j.value("tie_word_embeddings", false);
  c.rms_eps = get_number(j, "rms_norm_eps", c.rms_eps);
  // transformers 5 moves rope_theta and rope_scaling into rope_parameters.
  const json* rope = j.contains("rope_parameters") && j["rope_parameters"].is_object() ? &j["rope_parameters"] : nullptr;
  c.rope_theta = get_number(rope ? *rope : j, "rope_theta", get_number(j, "rope_theta", c.rope_theta));
  const json* scaling = rope ? rope : (j.contains("rope_scaling") && j["rope_scaling"].is_object() ? &j["rope_scaling"] : nullptr);
  if (scaling) {
    std::string kind = scaling->value("rope_type", scaling->value("type", std::string("default")));
    if (kind == "llama3") {
      Llama3RopeScaling s;
      s.factor = get_number(*scaling, "factor", s.factor);
      s.low_freq_factor = get_number(*scaling, "low_freq_factor", s.low_freq_factor);
      s.high_freq_factor = get_number(*scaling, "high_freq_factor", s.high_freq_factor);
      s.original_max_positions = static_cast<int64_t>(
          get_number(*scaling, "original_max_position_embeddings", static_cast<double>(s.original_max_positions)));
      c.rope_scaling = s;
    } else if (kind != "default") {
      return bad("rope scaling '", kind, "' is not supported (default and llama3 are)");
    }
  }
  std::string dtype = j.value("torch_dtype", j.value("dtype", std::string("bfloat16")));
  if (dtype == "bfloat16") c.dtype = DType::bf16;
  else if (dtype == "float16") c.dtype = DType::f16;
  else if (dtype == "float32") c.dtype = DType::f32;
  else return bad("dtype '", dtype, "' (expected bfloat16, float16 or float32)");
  if (absl::Status s = validate(c); !s.ok()) return prefix_error(s, where, ": ");
  return c;
}

absl::StatusOr<LlamaConfig> read_hf_config(const std::string& path) {
  std::string file = std::filesystem::is_directory(path) ? (std::filesystem::path(path) / "config.json").string() : path;
  KILN_ASSIGN_OR_RETURN(std::string text, read_regular_file(file, 1 << 24));
  return parse_hf_config(text, file);
}

std::string to_hf_config(const LlamaConfig& c) {
  std::string type = c.qkv_bias ? "qwen2" : c.sliding_window > 0 ? "mistral" : "llama";
  json j = {{"model_type", type},
            {"hidden_size", c.dim},
            {"num_hidden_layers", c.layers},
            {"num_attention_heads", c.heads},
            {"num_key_value_heads", c.kv_heads},
            {"head_dim", c.hd()},
            {"intermediate_size", c.ffn},
            {"vocab_size", c.vocab},
            {"hidden_act", "silu"},
            {"rope_theta", c.rope_theta},
            {"rms_norm_eps", c.rms_eps},
            {"tie_word_embeddings", c.tied_embeddings},
            {"torch_dtype", c.dtype == DType::bf16 ? "bfloat16" : c.dtype == DType::f16 ? "float16" : "float32"}};
  if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  if (const auto& s = c.rope_scaling)
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", s->factor}, {"low_freq_factor", s->low_freq_factor},
                         {"high_freq_factor", s->high_freq_factor},
                         {"original_max_position_embeddings", s->original_max_positions}};
  return j.dump(2) + "\n";
}

absl::StatusOr<LlamaConfig> preset(std::string_view name) {
  LlamaConfig c;
  if (name == "tiny") {
    c = {.dim = 64, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 96, .vocab = 256};
  } else if (name == "llama3.2-1b") {
    c = {.dim = 2048, .layers = 16, .heads = 32, .kv_heads = 8, .ffn = 8192, .vocab = 128256, .head_dim = 64,
         .rope_theta = 500000, .rope_scaling = Llama3RopeScaling{32, 1, 4, 8192}, .tied_embeddings = true};
  } else if (name == "llama3-8b") {
    c = {.dim = 4096, .layers = 32, .heads = 32, .kv_heads = 8, .ffn = 14336, .vocab = 128256, .rope_theta = 500000};
  } else {
    return invalid_argument("no model preset '", name, "' (tiny, llama3.2-1b, llama3-8b)");
  }
  return c;
}

std::vector<ParamSpec> parameters(const LlamaConfig& c) {
  const int64_t hd = c.hd();
  std::vector<ParamSpec> out{{"model.embed_tokens.weight", c.dtype, {c.vocab, c.dim}}};
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = layer_prefix(i);
    out.push_back({p + "input_layernorm.weight", c.dtype, {c.dim}});
    out.push_back({p + "self_attn.q_proj.weight", c.dtype, {c.heads * hd, c.dim}});
    out.push_back({p + "self_attn.k_proj.weight", c.dtype, {c.kv_heads * hd, c.dim}});
    out.push_back({p + "self_attn.v_proj.weight", c.dtype, {c.kv_heads * hd, c.dim}});
    if (c.qkv_bias) {
      out.push_back({p + "self_attn.q_proj.bias", c.dtype, {c.heads * hd}});
      out.push_back({p + "self_attn.k_proj.bias", c.dtype, {c.kv_heads * hd}});
      out.push_back({p + "self_attn.v_proj.bias", c.dtype, {c.kv_heads * hd}});
    }
    out.push_back({p + "self_attn.o_proj.weight", c.dtype, {c.dim, c.heads * hd}});
    out.push_back({p + "post_attention_layernorm.weight", c.dtype, {c.dim}});
    out.push_back({p + "mlp.gate_proj.weight", c.dtype, {c.ffn, c.dim}});
    out.push_back({p + "mlp.up_proj.weight", c.dtype, {c.ffn, c.dim}});
    out.push_back({p + "mlp.down_proj.weight", c.dtype, {c.dim, c.ffn}});
  }
  out.push_back({"model.norm.weight", c.dtype, {c.dim}});
  if (!c.tied_embeddings) out.push_back({"lm_head.weight", c.dtype, {c.vocab, c.dim}});
  return out;
}

int64_t weight_bytes(const LlamaConfig& c) {
  int64_t total = 0;
  for (const ParamSpec& p : parameters(c)) {
    int64_t n = dtype_size(p.dtype);
    for (int64_t d : p.shape) n *= d;
    total += n;
  }
  return total;
}

Graph trace_step(const LlamaConfig& c, const StepOptions& o) {
  const int64_t hd = c.hd();
  const bool paged = o.cache == CacheLayout::Paged;
  Tracer t(str_cat(o.decode ? "decode" : "prefill", paged ? "_paged" : ""));
  Tensor tokens = o.decode ? t.input("tokens", DType::i64, {"B"}) : t.input("tokens", DType::i64, {"B", "T"});
  Tensor start = t.input("start", DType::i32, {"B"});
  std::optional<Tensor> lens;
  if (!o.decode) lens = t.input("lens", DType::i32, {"B"});
  StepContext s;
  if (paged) s.block_table = t.input("block_table", DType::i32, {"B", "MB"});
  std::vector<Tensor> sampling;
  if (o.sample)
    for (auto [name, dtype] : {std::pair{"temperature", DType::f32}, {"top_k", DType::i32}, {"top_p", DType::f32},
                               {"uniform", DType::f32}})
      sampling.push_back(t.input(name, dtype, {"B"}));
  std::vector<Tensor> k_caches, v_caches;
  for (int64_t i = 0; i < c.layers; ++i) {
    Dims shape = paged ? Dims{"NB", o.block_size, c.kv_heads, hd} : Dims{"B", c.kv_heads, "S", hd};
    k_caches.push_back(t.state(str_cat("k_cache.", i), c.dtype, shape));
    v_caches.push_back(t.state(str_cat("v_cache.", i), c.dtype, shape));
  }
  Params p;
  for (const ParamSpec& spec : parameters(c)) {
    Shape shape(spec.shape.begin(), spec.shape.end());
    p[spec.name] = t.param(spec.name, spec.dtype, Dims(shape));
  }
  Tensor inv_freq = t.param("rope.inv_freq", rope_inv_freq(c));

  if (o.decode) tokens = unsqueeze(tokens, {1});  // [B, 1]
  Tensor bt = tokens;
  // Positions [B, T] = start + t; rotary angles in f32 as HF computes them, tables in c.dtype.
  Tensor offsets = t.iota(Dims{bt.dim(0), bt.dim(1)}, 1, DType::i32);
  Tensor pos = unsqueeze(start, {1}) + offsets;
  Tensor angles = unsqueeze(cast(pos, DType::f32), {2}) * inv_freq;  // [B, T, D/2]
  Tensor emb = concat({angles, angles}, -1);
  s.cos = unsqueeze(cast(cos(emb), c.dtype), {1});
  s.sin = unsqueeze(cast(sin(emb), c.dtype), {1});
  s.start = start;
  // Keys seen: the cache up to this step's last row, start + T (causal masking does the rest).
  s.kv_lens = o.decode ? start + 1 : start + sum(cast(ge(offsets, 0), DType::i32), Axes{1});
  Tensor x = t.name(gather(p.at("model.embed_tokens.weight"), bt, 0), "embed");  // [B, T, dim]

  std::vector<Tensor> caches;
  for (int64_t i = 0; i < c.layers; ++i) x = t.name(layer(c, p, i, x, k_caches[i], v_caches[i], s, caches), str_cat("layer", i));

  // Each sequence's last token (lens - 1 of the prompt; the only one when decoding).
  Tensor last = o.decode ? squeeze(x, Axes{1})
                         : sum(where(unsqueeze(eq(offsets, unsqueeze(*lens - 1, {1})), {2}), x, 0.0), Axes{1});
  Tensor h = rms_norm(last, p.at("model.norm.weight"), {-1}, c.rms_eps);
  Tensor head = c.tied_embeddings ? p.at("model.embed_tokens.weight") : p.at("lm_head.weight");
  Tensor logits = cast(linear(h, head), DType::f32);
  t.output(logits, "logits");
  t.output(o.sample ? sample_tokens(logits, sampling[0], sampling[1], sampling[2], sampling[3]) : argmax(logits, -1),
           "next_token");
  t.output(o.decode ? start + 1 : start + *lens, "next_start");
  for (int64_t i = 0; i < c.layers; ++i) {
    t.output(caches[2 * i], str_cat("k_cache.", i, ".out"));
    t.output(caches[2 * i + 1], str_cat("v_cache.", i, ".out"));
  }
  return t.finish();
}

std::map<std::string, HostTensor> random_weights(const LlamaConfig& c, uint64_t seed) {
  // One generator per parameter, seeded from `seed` and its index, filled on every core: the
  // 8B shapes take minutes on one thread, and the values do not depend on the thread count.
  const std::vector<ParamSpec> specs = parameters(c);
  std::vector<HostTensor> tensors(specs.size());
  std::atomic<size_t> next{0};
  std::mutex failed_mu;
  std::exception_ptr failed;  // the first worker's exception (bad_alloc), rethrown by the caller
  auto work = [&] {
    try {
      fill_random_parameters(next, specs, seed, tensors);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failed_mu);
      if (!failed) failed = std::current_exception();
      next = specs.size();
    }
  };
  std::vector<std::thread> threads(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 32) - 1);
  for (std::thread& t : threads) t = std::thread(work);
  work();
  for (std::thread& t : threads) t.join();
  if (failed) std::rethrow_exception(failed);
  std::map<std::string, HostTensor> out;
  for (size_t i = 0; i < specs.size(); ++i) out.emplace(specs[i].name, std::move(tensors[i]));
  return out;
}

absl::StatusOr<std::map<std::string, HostTensor>> load_weights(const LlamaConfig& c, const SafetensorsCheckpoint& ckpt) {
  std::map<std::string, HostTensor> out;
  for (const ParamSpec& p : parameters(c)) {
    KILN_ASSIGN_OR_RETURN(auto fe, ckpt.find(p.name));
    const SafetensorsEntry& e = *fe.second;
    if (e.shape != p.shape)
      return invalid_argument(fe.first->path(), ": tensor '", p.name, "' has shape [", fmt::format("{}", fmt::join(e.shape, ", ")),
                              "], the config needs [", fmt::format("{}", fmt::join(p.shape, ", ")), "]");
    KILN_ASSIGN_OR_RETURN(HostTensor h, fe.first->read(p.name));
    if (h.dtype() != p.dtype) {
      if (!is_float(h.dtype()))
        return invalid_argument(fe.first->path(), ": tensor '", p.name, "' is ", dtype_name(h.dtype()),
                                ", expected a float dtype");
      h = h.converted(p.dtype);
    }
    out.emplace(p.name, std::move(h));
  }
  return out;
}

absl::Status write_checkpoint(const std::string& dir, const LlamaConfig& c,
                              const std::map<std::string, HostTensor>& weights, int shards) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return invalid_argument(dir, ": cannot create the directory: ", ec.message());
  {
    std::string tmp = (fs::path(dir) / "config.json.tmp").string();
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) return invalid_argument(tmp, ": cannot create");
    std::string text = to_hf_config(c);
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), (fs::path(dir) / "config.json").c_str()) != 0)
      return invalid_argument(tmp, ": cannot write");
  }
  if (shards <= 1) return write_safetensors((fs::path(dir) / "model.safetensors").string(), weights, {{"format", "pt"}});
  std::vector<std::map<std::string, HostTensor>> parts(shards);
  json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
  int i = 0;
  for (const auto& [name, h] : weights) {
    int shard = i++ % shards;
    parts[shard].emplace(name, h);
    index["weight_map"][name] = fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, shards);
  }
  for (int s = 0; s < shards; ++s)
    KILN_RETURN_IF_ERROR(write_safetensors(
        (fs::path(dir) / fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards)).string(), parts[s],
        {{"format", "pt"}}));
  std::string text = index.dump(2);
  std::FILE* f = std::fopen((fs::path(dir) / "model.safetensors.index.json").c_str(), "wb");
  if (!f) return invalid_argument(dir, ": cannot write model.safetensors.index.json");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fclose(f) == 0 && ok;
  return ok ? absl::OkStatus() : invalid_argument(dir, ": cannot write model.safetensors.index.json");
}

}  // namespace kiln::models
