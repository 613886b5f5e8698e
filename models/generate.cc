#include "models/generate.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "compiler/parallel.h"
#include "compiler/weights.h"
#include "ir/compare.h"
#include "ir/npy.h"
#include "ir/reference.h"
#include "ir/status.h"
#include "ir/str.h"
#include "passes/shard.h"

namespace kiln::models {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Finite noise for cache rows no step has written yet (never read: a read would show as a
// mismatch with the reference): a random block of at most 1 Mi elements, repeated. A cache of
// many GiB (batch 64 at 8k tokens) fills at memcpy speed instead of the generator's (minutes).
HostTensor noise(DType t, const std::vector<int64_t>& shape, std::mt19937_64& rng) {
  HostTensor h(t, shape);
  HostTensor block(t, {std::min<int64_t>(h.numel(), int64_t{1} << 20)});
  block.fill_random(rng);
  for (int64_t at = 0; at < h.nbytes(); at += block.nbytes())
    std::memcpy(h.data() + at, block.data(), static_cast<size_t>(std::min(block.nbytes(), h.nbytes() - at)));
  return h;
}

std::string bytes_text(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; b >= 1024 && u < 4; ++u) b /= 1024;
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

HostTensor ints(const std::vector<int64_t>& shape, const std::vector<int64_t>& values) {
  HostTensor h(DType::i32, shape);
  for (int64_t i = 0; i < h.numel(); ++i) h.set_int(i, values[static_cast<size_t>(i)]);
  return h;
}

// One compiled step and the graph the reference evaluator runs for it: one graph on one
// device, or its shard (passes/shard.h) on every rank of a RankGroup. The loop in generate()
// runs either the same way: rank r has its arguments (dev[r]), its weight store and its
// outputs; one device is one rank without a group.
struct Step {
  Graph graph;                        // the whole step
  std::optional<ShardedGraph> shard;  // what each rank of `group` runs
  CompiledGraph cg;                   // one device
  std::unique_ptr<RankGroup> group;   // or a group
  int64_t state_rows = 0;  // > 0: the first rows of state that has more (a cache for a bucket)
  int64_t ranks() const { return group ? group->ranks() : 1; }
  CompiledGraph& rank(int64_t r) { return group ? group->rank(r) : cg; }
  // Rank r's arguments that are not parameters, from `dev` by name.
  absl::StatusOr<std::vector<Tensor>> inputs(int64_t r, const std::map<std::string, Tensor>& dev) {
    std::vector<Tensor> args;
    for (const Value* a : rank(r).module().args) {
      if (a->is_param()) continue;
      const Tensor& t = dev.at(a->name());
      args.push_back(t);
      if (!a->is_state() || state_rows == 0 || t.shape()[0] == state_rows) continue;
      std::vector<int64_t> shape = t.shape();
      shape[0] = state_rows;
      KILN_ASSIGN_OR_RETURN(args.back(), Tensor::wrap(t.data(), t.dtype(), shape, {}, t.device()));
    }
    return args;
  }
  // One call of every rank with its parameters from stores[r] and its other arguments named
  // in dev[r] (caches, this step's inputs), done when it returns: each rank's outputs.
  // Caches are updated in place.
  absl::StatusOr<std::vector<std::vector<Tensor>>> run(const std::vector<std::map<std::string, Tensor>>& dev,
                                                       const std::vector<Weights>& stores) {
    std::vector<std::vector<Tensor>> args(static_cast<size_t>(ranks())), out(args.size());
    std::vector<const Weights*> held;
    for (int64_t r = 0; r < ranks(); ++r) {
      KILN_ASSIGN_OR_RETURN(args[r], inputs(r, dev[r]));
      held.push_back(&stores[r]);
    }
    if (group) {
      KILN_RETURN_IF_ERROR(group->run(args, held, out));
    } else {
      out[0].resize(cg.graph().outputs().size());
      KILN_RETURN_IF_ERROR(cg.run(args[0], stores[0], out[0]));
    }
    for (int64_t r = 0; r < ranks(); ++r)
      if (absl::Status st = rank(r).synchronize(); !st.ok()) return group ? prefix_error(st, "rank ", r, ": ") : st;
    return out;
  }
};

}  // namespace

absl::StatusOr<LoadedModel> load_model(const std::string& config, const std::string& checkpoint,
                                       std::optional<DType> dtype, uint64_t seed, int64_t layers,
                                       bool with_weights) {
  if (config.empty() && checkpoint.empty()) return invalid_argument("a model needs a config or a checkpoint directory");
  LoadedModel m;
  const std::string& config_path = config.empty() ? checkpoint : config;
  absl::StatusOr<LlamaConfig> named = preset(config_path);
  if (named.ok()) {
    m.config = *named;
  } else {
    std::error_code ec;
    if (!std::filesystem::exists(config_path, ec))
      return invalid_argument("model config '", config_path, "': no such file or directory, and ", named.status().message());
    KILN_ASSIGN_OR_RETURN(m.config, read_hf_config(config_path));
  }
  if (dtype) m.config.dtype = *dtype;
  if (layers != 0 && (layers < 1 || !checkpoint.empty()))
    return invalid_argument("a layer count (", layers, ") must be >= 1, and is for random weights only (no checkpoint)");
  if (layers > 0) m.config.layers = layers;
  KILN_RETURN_IF_ERROR(validate(m.config));
  if (!with_weights) return m;
  if (checkpoint.empty()) {
    m.weights = random_weights(m.config, seed);
  } else {
    KILN_ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::open(checkpoint));
    KILN_ASSIGN_OR_RETURN(m.weights, load_weights(m.config, ckpt));
  }
  return m;
}

absl::StatusOr<GenerateReport> generate(const LlamaConfig& c, const std::map<std::string, HostTensor>& weights,
                                        const GenerateOptions& o) {
  KILN_RETURN_IF_ERROR(validate(c));
  // Prompts from a file fix the batch and the (common) prompt length.
  std::optional<HostTensor> given;
  if (!o.prompts_file.empty()) {
    KILN_ASSIGN_OR_RETURN(given, read_npy(o.prompts_file));
    if (given->rank() != 2 || !is_integer(given->dtype()) || given->numel() == 0)
      return invalid_argument(o.prompts_file, ": prompts must be integers [B, T], got ", given->type_string());
    for (int64_t i = 0; i < given->numel(); ++i)
      if (given->get_int(i) < 0 || given->get_int(i) >= c.vocab)
        return invalid_argument(o.prompts_file, ": token ", given->get_int(i), " at ", i, " is outside the vocabulary of ",
                                c.vocab);
  }
  if (o.batch < 1 || o.prompt_len < 1 || o.new_tokens < 0 || o.block_size < 1 || o.check_steps < 0 || o.tp < 0)
    return invalid_argument("generate: batch and prompt length must be >= 1, new tokens, check steps and tp >= 0");
  if (o.tp > 0 && (!o.buckets.empty() || o.compile_only))
    return invalid_argument("generate: tensor parallelism (tp ", o.tp, ") does not support ",
                            o.compile_only ? "compile_only (a group compiles on its devices)" : "batch buckets");
  if (o.tp > 0 && (c.heads % o.tp != 0 || c.vocab % o.tp != 0))
    return invalid_argument("generate: tp ", o.tp, " must divide the heads (", c.heads, ") and the vocabulary (",
                            c.vocab, "): each rank holds whole heads and an equal share of the vocabulary");
  const bool rank_reads = o.tp > 0 && o.checkpoint;  // each rank reads its slice of the checkpoint
  const bool paged = o.cache == CacheLayout::Paged;
  const int64_t B = given ? given->shape()[0] : o.batch, T = given ? given->shape()[1] : o.prompt_len;
  const int64_t S = T + std::max<int64_t>(o.new_tokens, 1), hd = c.hd();
  const int64_t blocks_per_seq = (S + o.block_size - 1) / o.block_size, NB = B * blocks_per_seq + 1;
  for (const ParamSpec& p : o.compile_only || rank_reads ? std::vector<ParamSpec>{} : parameters(c)) {
    auto it = weights.find(p.name);
    if (it == weights.end()) return invalid_argument("generate: no weight '", p.name, "'");
    if (it->second.dtype() != p.dtype || it->second.shape() != p.shape)
      return invalid_argument("generate: weight '", p.name, "' is ", it->second.type_string(), ", the config needs ",
                              dtype_name(p.dtype), "[", fmt::format("{}", fmt::join(p.shape, ", ")), "]");
  }
  GenerateReport r;
  r.weight_bytes = weight_bytes(c);

  // Compile both steps and build their specializations for this batch before timing anything.
  auto t0 = std::chrono::steady_clock::now();
  const bool sample = o.sampling.has_value();
  Step prefill{trace_step(c, {.decode = false, .cache = o.cache, .block_size = o.block_size, .sample = sample})};
  Step decode{trace_step(c, {.decode = true, .cache = o.cache, .block_size = o.block_size, .sample = sample})};
  r.compile.trace_ms = ms_since(t0);
  // A contiguous cache for the largest bucket, and each pad row's values.
  int64_t cache_batch = B;
  std::optional<BucketOptions> buckets;
  if (!o.buckets.empty()) {
    buckets = BucketOptions{"B", o.buckets, {{"start", -1}}};
    if (sample) buckets->pad = {{"start", -1}, {"temperature", 1}, {"top_p", 1}, {"uniform", 0.5}};
    if (B > o.buckets.back()) return invalid_argument("generate: batch ", B, " is beyond the largest bucket ", o.buckets.back());
    if (!paged) cache_batch = o.buckets.back();  // every bucket is captured over the cache
  }
  for (Step* s : {&prefill, &decode}) {
    CompileOptions co{.mode = o.mode, .device = o.device, .compile_only = o.compile_only};
    if (s == &decode) co.buckets = buckets;
    else if (cache_batch != B) s->state_rows = B;
    if (o.tp > 0) {  // the rank graph over a new group: its own communicators, the same devices
      auto sharded = shard(s->graph, llama_shard_plan(o.tp, paged, true, c.kv_heads));
      if (!sharded.ok())
        return prefix_error(sharded.status(), "generate: sharding ", s->graph.name(), " over ", o.tp, " ranks: ");
      s->shard = *std::move(sharded);
      auto group = RankGroup::compile(s->shard->graph, o.tp, {.compile = co});
      if (!group.ok())
        return prefix_error(group.status(), "generate: compiling ", s->graph.name(), " over ", o.tp, " ranks: ");
      s->group = *std::move(group);
    } else {
      auto cg = compile(s->graph, co);
      if (!cg.ok()) return prefix_error(cg.status(), "generate: compiling ", s->graph.name(), ": ");
      s->cg = *std::move(cg);
    }
    Bindings b{{"B", B}};
    if (s == &prefill) b["T"] = T;
    if (paged) b["NB"] = NB, b["MB"] = blocks_per_seq;
    else b["S"] = S;
    if (s == &decode && buckets) continue;  // warm_up_buckets, once the caches and weights exist
    for (int64_t r = 0; r < s->ranks(); ++r)
      if (absl::Status st = s->rank(r).warm_up(b); !st.ok())
        return prefix_error(st, "generate: building ", s->graph.name(), o.tp > 0 ? str_cat(" (rank ", r, ")") : "",
                            ": ");
  }
  r.compile_ms = r.compile.total_ms = ms_since(t0);
  for (Step* s : {&prefill, &decode})
    for (int64_t rank = 0; rank < s->ranks(); ++rank) {  // every rank's specializations
      CompileStats st = s->rank(rank).stats();
      CompileBreakdown& b = r.compile;
      b.device_ms += st.device_ms, b.pass_ms += st.pass_ms, b.lower_ms += st.lower_ms, b.build_ms += st.build_ms;
      b.codegen_ms += st.codegen_ms, b.backend_ms += st.compile_ms;
      b.kernels += st.kernels, b.shared += st.kernels_shared;
      b.compiled += st.cache_misses, b.disk_hits += st.cache_disk_hits, b.memory_hits += st.cache_memory_hits;
    }
  r.device = device_name(prefill.rank(0).device());
  r.ranks = prefill.ranks();
  if (prefill.group) r.communicator = prefill.group->communicator(0).describe();
  if ((r.compiled_only = o.compile_only)) return r;
  const int64_t ranks = prefill.ranks();
  std::vector<DeviceId> devices;
  for (int64_t i = 0; i < ranks; ++i) devices.push_back(prefill.rank(i).device());

  // Weights and caches live on the device for the whole run; the host keeps copies only
  // for the reference check. Both steps read one weight store: each weight held once, the
  // merged projections laid out merged (compiler/weights.h).
  // A group's ranks each hold their shard (shard_arguments) of the whole arguments, weights
  // included, on their own device; the host keeps the whole ones.
  std::mt19937_64 rng(o.seed);
  std::vector<std::map<std::string, Tensor>> dev(static_cast<size_t>(ranks));
  std::map<std::string, HostTensor> host;  // the reference's arguments
  auto shards = [&](const std::string& name, const HostTensor& whole) {
    return shard_arguments(*prefill.shard, ranks, TensorMap{{name, whole}});
  };
  auto put = [&](const std::string& name, const HostTensor& whole) -> absl::Status {
    if (!prefill.shard) {
      KILN_ASSIGN_OR_RETURN(dev[0][name], Tensor::from_host(whole, devices[0]));
      return absl::OkStatus();
    }
    KILN_ASSIGN_OR_RETURN(std::vector<TensorMap> part, shards(name, whole));
    for (int64_t i = 0; i < ranks; ++i)
      for (const auto& [n, t] : part[i]) {  // and the rank's index
        KILN_ASSIGN_OR_RETURN(dev[i][n], Tensor::from_host(t, devices[i]));
      }
    return absl::OkStatus();
  };
  std::vector<Weights> stores;
  for (int64_t i = 0; i < ranks; ++i) {
    KILN_ASSIGN_OR_RETURN(Weights w, Weights::create(prefill.rank(i)));
    if (rank_reads) {
      KILN_ASSIGN_OR_RETURN(TensorMap mine, read_rank_parameters(*prefill.shard, i, ranks, *o.checkpoint));
      KILN_RETURN_IF_ERROR(w.load(mine));
    }
    stores.push_back(std::move(w));
  }
  if (!prefill.shard) KILN_RETURN_IF_ERROR(stores[0].load(weights));
  else if (!rank_reads)
    for (const Weights::Parameter& p : stores[0].parameters()) {
      KILN_ASSIGN_OR_RETURN(std::vector<TensorMap> part, shards(p.name, weights.at(p.name)));
      for (int64_t i = 0; i < ranks; ++i) KILN_RETURN_IF_ERROR(stores[i].load(p.name, part[i].at(p.name)));
    }
  r.weight_store_bytes = stores[0].bytes();
  if (o.check_steps > 0 && rank_reads && weights.empty()) {
    KILN_ASSIGN_OR_RETURN(host, load_weights(c, *o.checkpoint));
  } else if (o.check_steps > 0) {
    for (const ParamSpec& p : parameters(c)) host[p.name] = weights.at(p.name);
  }
  std::vector<int64_t> cache_shape = paged ? std::vector<int64_t>{NB, o.block_size, c.kv_heads, hd}
                                           : std::vector<int64_t>{B, c.kv_heads, S, hd};
  std::mt19937_64 spare_rng(o.seed + 1);  // the rows past the batch's (buckets): the prompts stay those of `seed`
  for (int64_t i = 0; i < c.layers; ++i)
    for (const char* kv : {"k_cache.", "v_cache."}) {
      HostTensor h = noise(c.dtype, cache_shape, rng);
      std::string name = str_cat(kv, i);
      if (cache_batch != B) {
        std::vector<int64_t> shape = cache_shape;
        shape[0] = cache_batch;
        HostTensor all = noise(c.dtype, shape, spare_rng);
        std::copy(h.data(), h.data() + h.nbytes(), all.data());
        KILN_RETURN_IF_ERROR(put(name, all));
        r.cache_bytes += all.nbytes();
      } else {
        KILN_RETURN_IF_ERROR(put(name, h));
        r.cache_bytes += h.nbytes();
      }
      if (o.check_steps > 0) host[name] = std::move(h);
    }
  if (paged) {
    std::vector<int64_t> ids(static_cast<size_t>(NB - 1));
    std::iota(ids.begin(), ids.end(), 1);
    std::shuffle(ids.begin(), ids.end(), rng);
    host["block_table"] = ints({B, blocks_per_seq}, ids);
  }

  std::vector<int64_t> lens(static_cast<size_t>(B));
  HostTensor prompt(DType::i64, {B, T});
  for (int64_t b = 0; b < B; ++b)
    lens[b] = o.ragged && !given ? std::max<int64_t>(1, T - (b % 3) * std::max<int64_t>(1, T / 4)) : T;
  for (int64_t i = 0; i < prompt.numel(); ++i)
    prompt.set_int(i, given ? given->get_int(i) : static_cast<int64_t>(rng() % static_cast<uint64_t>(c.vocab)));
  host["tokens"] = std::move(prompt);
  host["start"] = ints({B}, std::vector<int64_t>(static_cast<size_t>(B), 0));
  host["lens"] = ints({B}, lens);
  if (sample) {
    HostTensor temp(DType::f32, {B}), top_k(DType::i32, {B}), top_p(DType::f32, {B});
    for (int64_t b = 0; b < B; ++b) {
      temp.set(b, o.sampling->temperature);
      top_k.set_int(b, o.sampling->top_k);
      top_p.set(b, o.sampling->top_p);
    }
    host["temperature"] = std::move(temp);
    host["top_k"] = std::move(top_k);
    host["top_p"] = std::move(top_p);
  }
  // Each step's uniform numbers, on the host and the device (before the step is timed).
  auto draw_uniform = [&]() -> absl::Status {
    if (!sample) return absl::OkStatus();
    HostTensor u(DType::f32, {B});
    for (int64_t b = 0; b < B; ++b)
      u.set(b, std::min(std::generate_canonical<double, 53>(rng), 0.99999994));  // < 1 in f32
    KILN_RETURN_IF_ERROR(put("uniform", u));
    host["uniform"] = std::move(u);
    return absl::OkStatus();
  };
  KILN_RETURN_IF_ERROR(draw_uniform());
  for (const char* name : {"tokens", "start", "lens", "block_table", "temperature", "top_k", "top_p"})
    if (host.count(name)) KILN_RETURN_IF_ERROR(put(name, host.at(name)));

  if (buckets) {  // every bucket built and captured before the first step
    auto tb = std::chrono::steady_clock::now();
    std::map<std::string, Tensor> shapes = dev[0];  // a decode step's: tokens [B] (their values are not read)
    KILN_ASSIGN_OR_RETURN(shapes["tokens"], Tensor::from_host(HostTensor(DType::i64, {B}), devices[0]));
    KILN_ASSIGN_OR_RETURN(std::vector<Tensor> args, decode.inputs(0, shapes));
    auto lines = decode.cg.warm_up_buckets(args, &stores[0], o.bucket_progress);
    if (!lines.ok()) return prefix_error(lines.status(), "generate: warming up the buckets of ", decode.graph.name(), ": ");
    r.buckets = *std::move(lines);
    r.buckets_ms = ms_since(tb);
  }

  // Runs a step; a timed one is recorded, checked against the reference when asked, and each
  // rank's next_token and next_start become its next step's tokens and start on its device
  // (no host round trip between steps, as a serving loop runs them). Every rank's logits and
  // tokens are the whole model's: rank 0's are recorded and checked.
  std::vector<Tensor> token_steps;
  auto step = [&](Step& s, int index, bool timed) -> absl::Status {
    auto t = std::chrono::steady_clock::now();
    auto got = s.run(dev, stores);
    if (!got.ok()) return prefix_error(got.status(), "generate: ", s.graph.name(), " step ", index, ": ");
    double ms = ms_since(t);
    if (!timed) return absl::OkStatus();
    (&s == &prefill ? r.prefill_ms : r.decode_ms.emplace_back()) = ms;
    const std::vector<Tensor>& out = (*got)[0];
    token_steps.push_back(out[1]);
    if (&s == &prefill && !o.logits_file.empty()) {
      KILN_ASSIGN_OR_RETURN(HostTensor logits, out[0].to_host());
      KILN_RETURN_IF_ERROR(write_npy(o.logits_file, logits));
    }
    if (o.check_steps > 0 && index <= o.check_steps) {
      KILN_ASSIGN_OR_RETURN(HostTensor logits, out[0].to_host());
      KILN_ASSIGN_OR_RETURN(HostTensor next, out[1].to_host());
      KILN_ASSIGN_OR_RETURN(std::vector<HostTensor> want, evaluate(s.graph, host));
      Comparison cmp = compare_tensors(want[0], logits, default_tolerance(c.dtype));
      r.max_logit_error = std::max(r.max_logit_error, cmp.max_abs_err);
      if (!cmp.ok)
        return invalid_argument("generate: ", s.graph.name(), " step ", index, ": logits differ from the reference at [",
                                fmt::format("{}", fmt::join(cmp.worst_coords, ", ")), "]: ", cmp.max_abs_err);
      for (int64_t b = 0; b < B; ++b)
        if (want[1].get_int(b) != next.get_int(b))
          return invalid_argument("generate: ", s.graph.name(), " step ", index, ": sequence ", b, " token ",
                                  next.get_int(b), ", the reference's ", want[1].get_int(b));
      for (int64_t i = 0; i < c.layers; ++i) {  // the reference's caches after the step
        host[str_cat("k_cache.", i)] = std::move(want[3 + 2 * static_cast<size_t>(i)]);
        host[str_cat("v_cache.", i)] = std::move(want[4 + 2 * static_cast<size_t>(i)]);
      }
      host["tokens"] = std::move(next);
      host["start"] = std::move(want[2]);
      host.erase("lens");
      r.checked_steps = index + 1;
    }
    for (int64_t i = 0; i < ranks; ++i) {
      dev[i]["tokens"] = (*got)[i][1];
      dev[i]["start"] = (*got)[i][2];
    }
    return absl::OkStatus();
  };
  // The first prefill and decode calls run twice (writing the same rows both times): the
  // second call is the timed one.
  KILN_RETURN_IF_ERROR(step(prefill, 0, false));
  KILN_RETURN_IF_ERROR(step(prefill, 0, true));
  for (int64_t n = 1; n < o.new_tokens; ++n) {
    KILN_RETURN_IF_ERROR(draw_uniform());
    if (n == 1) KILN_RETURN_IF_ERROR(step(decode, 1, false));
    KILN_RETURN_IF_ERROR(step(decode, static_cast<int>(n), true));
  }
  r.tokens.assign(static_cast<size_t>(B), {});
  for (const Tensor& t : token_steps) {
    KILN_ASSIGN_OR_RETURN(HostTensor h, t.to_host());
    for (int64_t b = 0; b < B; ++b) r.tokens[static_cast<size_t>(b)].push_back(h.get_int(b));
  }
  if (!r.decode_ms.empty())
    r.tokens_per_s = static_cast<double>(B) * 1000.0 * static_cast<double>(r.decode_ms.size()) /
                     std::accumulate(r.decode_ms.begin(), r.decode_ms.end(), 0.0);
  for (Step* s : {&prefill, &decode})
    for (int64_t i = ranks - 1; i >= 0; --i) {  // every rank's; rank 0's device
      CompiledGraph::Memory m = s->rank(i).memory();
      r.held_bytes += m.held.arena + m.held.scratch + m.held.weight_prep + m.held.constants + m.held.slots;
      r.weight_prep_bytes += m.held.weight_prep;
      r.device_memory = m.device;
    }
  return r;
}

std::string CompileBreakdown::to_text(std::string_view device) const {
  // Cold: some kernel was compiled; a warm start: every kernel came from the disk cache.
  const char* kind = compiled > 0 ? "cold" : disk_hits > 0 ? "warm start" : "warm (in memory)";
  return fmt::format(
      "{} {:.3f} s (trace {:.0f} ms, device {:.0f} ms, passes {:.0f} ms, lower {:.0f} ms, build {:.0f} ms: "
      "codegen {:.0f} ms, {} {:.0f} ms); {} kernels ({} shared with an identical one): {} compiled, {} "
      "from disk, {} from memory",
      kind, total_ms / 1000, trace_ms, device_ms, pass_ms, lower_ms, build_ms, codegen_ms,
      device.starts_with("cpu") ? "llvm" : "nvrtc", backend_ms, kernels, shared, compiled, disk_hits, memory_hits);
}

std::string GenerateReport::to_text() const {
  std::string s = fmt::format("device      {}\ncompile     {} (both steps, built for this batch)\n", device,
                              compile.to_text(device));
  if (!communicator.empty())
    s += fmt::format("group       {} rank{}, tensor parallel (rank 0: {}); weights {} per rank\n", ranks,
                     ranks == 1 ? "" : "s", communicator, bytes_text(double(weight_store_bytes)));
  if (!buckets.empty()) {
    s += fmt::format("buckets     {} of the decode step built{} in {:.1f} ms:", buckets.size(),
                     buckets[0].captures > 0 ? " and captured" : "", buckets_ms);
    for (const CompileStats::Bucket& b : buckets)
      s += fmt::format(" {} ({:.1f} + {:.1f} ms)", b.size, b.compile_ms, b.capture_ms);
    s += "\n";
  }
  if (compiled_only) return s;
  s += fmt::format("prefill     {:.3f} ms\n", prefill_ms);
  if (!decode_ms.empty()) {
    std::vector<double> d = decode_ms;
    std::sort(d.begin(), d.end());
    s += fmt::format("decode      {:.3f} ms per token (median; min {:.3f}, max {:.3f}; {} steps)\n", d[d.size() / 2],
                     d.front(), d.back(), d.size());
    s += fmt::format("throughput  {:.1f} tokens/s\n", tokens_per_s);
  }
  const char* each = ranks > 1 ? " per rank" : "";
  s += fmt::format(
      "memory      weights {} (held once: {} in the store{}, {} of weight prep), KV cache {}, held by "
      "the steps {}{}",
      bytes_text(double(weight_bytes)), bytes_text(double(weight_store_bytes)), each,
      bytes_text(double(weight_prep_bytes)), bytes_text(double(cache_bytes)), bytes_text(double(held_bytes)),
      ranks > 1 ? " (all ranks)" : "");
  if (device_memory) s += fmt::format(", device in use {}", bytes_text(double(device_memory->total - device_memory->free)));
  s += "\n";
  if (checked_steps > 0)
    s += fmt::format("check       prefill + {} decode steps match the reference (tokens identical, max |logit "
                     "error| {:.2e})\n", checked_steps - 1, max_logit_error);
  for (size_t b = 0; b < tokens.size() && b < 4; ++b) s += fmt::format("tokens[{}]   {}\n", b, fmt::join(tokens[b], " "));
  return s;
}

}  // namespace kiln::models
