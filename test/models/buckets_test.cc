// Batch buckets (CompileOptions::buckets) on the Llama decode step: a batch runs at its
// bucket with pad rows that write no cache row, against the reference evaluator on the
// unpadded batch; the shared pool; cache_size_limit; bad options. [gpu]: one CUDA graph per
// bucket captured by warm_up_buckets, replayed on new inputs.
#include <cstring>
#include <random>

#include <catch2/catch.hpp>

#include "compiler/compile.h"
#include "compiler/weights.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "models/generate.h"
#include "models/llama.h"
#include "test/common/catch_helpers.h"
#include "test/common/gpu_test.h"

namespace kiln::models {
namespace {

using testing::require_ok;

LlamaConfig tiny() { return {.dim = 48, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 80, .vocab = 97, .dtype = DType::f32}; }
constexpr int64_t kS = 12;  // cache rows per sequence

BucketOptions buckets(std::vector<int64_t> sizes = {1, 2, 4, 8}) {
  return {.symbol = "B", .sizes = std::move(sizes), .pad = {{"start", -1}}};  // pad rows write outside the cache
}

// The first `rows` rows of `h`.
HostTensor first_rows(const HostTensor& h, int64_t rows) {
  std::vector<int64_t> shape = h.shape();
  shape[0] = rows;
  HostTensor out(h.dtype(), shape);
  std::memcpy(out.data(), h.data(), static_cast<size_t>(out.nbytes()));
  return out;
}

// A decode step's arguments for `b` sequences over caches of `cache_rows` rows (random
// history, random positions), and the weights.
struct DecodeCall {
  std::map<std::string, HostTensor> args;
  DecodeCall(const LlamaConfig& c, const std::map<std::string, HostTensor>& weights, int64_t b, int64_t cache_rows,
             uint64_t seed) {
    std::mt19937_64 rng(seed);
    args = weights;
    HostTensor tokens(DType::i64, {b}), start(DType::i32, {b});
    for (int64_t i = 0; i < b; ++i) {
      tokens.set_int(i, static_cast<int64_t>(rng() % static_cast<uint64_t>(c.vocab)));
      start.set_int(i, 1 + static_cast<int64_t>(rng() % (kS - 2)));
    }
    args["tokens"] = std::move(tokens);
    args["start"] = std::move(start);
    for (int64_t l = 0; l < c.layers; ++l)
      for (const char* kv : {"k_cache.", "v_cache."}) {
        HostTensor h(c.dtype, {cache_rows, c.kv_heads, kS, c.hd()});
        h.fill_random(rng);
        args[str_cat(kv, l)] = std::move(h);
      }
  }
  // The same call for the reference: the caches' first b rows.
  std::map<std::string, HostTensor> unpadded(int64_t b) const {
    std::map<std::string, HostTensor> out = args;
    for (auto& [name, h] : out)
      if (name.find("_cache.") != std::string::npos) h = first_rows(h, b);
    return out;
  }
};

// Checks a compiled bucketed call at batch b against the reference on the unpadded batch:
// outputs, the caches' real rows, and cache rows past b untouched.
void check_bucketed_call(CompiledGraph& cg, const Graph& g, const LlamaConfig& c,
                         const std::map<std::string, HostTensor>& weights, int64_t b, int64_t cache_rows,
                         uint64_t seed) {
  INFO("batch " << b << ", caches of " << cache_rows << " rows");
  DecodeCall call(c, weights, b, cache_rows, seed);
  auto got = run_host(cg, call.args);
  require_ok(got.status());
  auto want = evaluate(g, call.unpadded(b));
  require_ok(want.status());
  REQUIRE(got->size() == want->size());
  CHECK(compare_tensors((*want)[0], (*got)[0], default_tolerance(c.dtype)).ok);  // logits [b, vocab]
  for (size_t j : {1, 2}) {                                                       // next_token, next_start
    REQUIRE((*got)[j].shape() == (*want)[j].shape());
    for (int64_t i = 0; i < b; ++i) CHECK((*got)[j].get_int(i) == (*want)[j].get_int(i));
  }
  for (size_t j = 3; j < got->size(); ++j) {  // the caches, all their rows
    const HostTensor& cache = (*got)[j];
    REQUIRE(cache.shape()[0] == cache_rows);
    CHECK(compare_tensors((*want)[j], first_rows(cache, b), default_tolerance(c.dtype)).ok);
    const std::string& name = g.outputs()[j]->name();
    const HostTensor& before = call.args.at(name.substr(0, name.size() - 4));  // "k_cache.0.out"
    CHECK(std::memcmp(cache.data(), before.data(), static_cast<size_t>(cache.nbytes())) != 0);
    int64_t row_bytes = cache.nbytes() / cache_rows;
    CHECK(std::memcmp(cache.data() + b * row_bytes, before.data() + b * row_bytes,
                      static_cast<size_t>((cache_rows - b) * row_bytes)) == 0);
  }
}

TEST_CASE("buckets: decode at b = 1, 3, 5, 7, 5 runs at buckets {1, 2, 4, 8}, pad rows write no cache row") {
  LlamaConfig c = tiny();
  auto weights = random_weights(c, 1);
  Graph g = trace_step(c, {.decode = true});
  auto cg = compile(g, {.device = Device::Cpu, .buckets = buckets()});
  require_ok(cg.status());
  uint64_t seed = 10;
  // 7 then 5 at bucket 8: the rows 5, 6 that held the 7-batch are padded again.
  for (int64_t b : {1, 3, 5, 7, 5}) check_bucketed_call(*cg, g, c, weights, b, 8, ++seed);
  // Caches of exactly the bucket's rows, and more than the largest bucket's.
  check_bucketed_call(*cg, g, c, weights, 3, 4, ++seed);
  check_bucketed_call(*cg, g, c, weights, 2, 11, ++seed);
  CompileStats s = cg->stats();
  REQUIRE(s.buckets.size() == 4);
  std::vector<int64_t> calls;
  for (const CompileStats::Bucket& bs : s.buckets) calls.push_back(bs.calls);
  CHECK(calls == std::vector<int64_t>{1, 1, 2, 3});
  CHECK(s.compiles == 2);  // B == 1 and B >= 2: the buckets share the dynamic specialization
  CHECK_THAT(s.to_text(), Catch::Contains("bucket 8: 3 calls"));
  CHECK_THAT(s.to_json(), Catch::Contains("\"buckets\":[{\"size\":1,\"calls\":1"));
}

TEST_CASE("buckets: a batch beyond the largest bucket and state smaller than its bucket are errors") {
  LlamaConfig c = tiny();
  auto weights = random_weights(c, 1);
  Graph g = trace_step(c, {.decode = true});
  auto cg = compile(g, {.device = Device::Cpu, .buckets = buckets()});
  require_ok(cg.status());
  CHECK_THAT(status_message(run_host(*cg, DecodeCall(c, weights, 9, 9, 1).args).status()),
             Catch::Contains("B = 9 is beyond the largest bucket (1, 2, 4, 8)"));
  CHECK_THAT(status_message(run_host(*cg, DecodeCall(c, weights, 3, 3, 1).args).status()),
             Catch::Contains("B is 3 (bucket 4): state is never copied"));
  CHECK(cg->stats().buckets[2].calls == 0);
}

TEST_CASE("buckets: every bucket's arena comes from one pool, sized by the largest") {
  LlamaConfig c = tiny();
  auto weights = random_weights(c, 1);
  Graph g = trace_step(c, {.decode = true});
  auto bucketed = compile(g, {.device = Device::Cpu, .buckets = buckets()});
  require_ok(bucketed.status());
  int64_t sum = 0, largest = 0;
  for (int64_t b : {8, 4, 2, 1}) {
    require_ok(run_host(*bucketed, DecodeCall(c, weights, b, 8, 2).args).status());
    auto alone = compile(g, {.device = Device::Cpu});  // the same batch in a graph of its own
    require_ok(alone.status());
    require_ok(run_host(*alone, DecodeCall(c, weights, b, b, 2).args).status());
    int64_t arena = alone->memory().held.arena;
    sum += arena;
    largest = std::max(largest, arena);
  }
  CompiledGraph::Memory m = bucketed->memory();
  INFO("pooled " << m.held.arena << ", largest alone " << largest << ", sum alone " << sum);
  CHECK(m.held.arena == largest);
  CHECK(m.held.arena < sum);
  CHECK(bucketed->stats().compiles == 2);
}

TEST_CASE("buckets: cache_size_limit keeps the specializations it has and names the limit and the failed guards") {
  LlamaConfig c = tiny();
  auto weights = random_weights(c, 1);
  Graph g = trace_step(c, {.decode = true});
  auto cg = compile(g, {.device = Device::Cpu, .dynamic = false, .cache_size_limit = 2});
  require_ok(cg.status());
  require_ok(run_host(*cg, DecodeCall(c, weights, 1, 1, 3).args).status());
  require_ok(run_host(*cg, DecodeCall(c, weights, 2, 2, 3).args).status());
  std::string err = status_message(run_host(*cg, DecodeCall(c, weights, 3, 3, 3).args).status());
  CHECK_THAT(err, Catch::Contains("cache_size_limit 2 reached (2 specializations kept)"));
  CHECK_THAT(err, Catch::Contains("B = 3, S = 12"));
  CHECK_THAT(err, Catch::Contains("(specialization 1)"));
  CHECK(cg->stats().compiles == 2);
  require_ok(run_host(*cg, DecodeCall(c, weights, 2, 2, 4).args).status());  // what exists still runs
  CHECK(cg->stats().compiles == 2);
  // Buckets with every size a specialization must fit the limit.
  CHECK_THAT(status_message(compile(g, {.device = Device::Cpu, .dynamic = false, .buckets = buckets(),
                                        .cache_size_limit = 3}).status()),
             Catch::Contains("4 sizes of B with dynamic = false are as many specializations, above cache_size_limit 3"));
  CHECK_THAT(status_message(compile(g, {.device = Device::Cpu, .cache_size_limit = 0}).status()),
             Catch::Contains("cache_size_limit must be >= 1"));
}

TEST_CASE("buckets: bad options are errors naming the option") {
  Graph g = trace_step(tiny(), {.decode = true});
  auto err = [&](BucketOptions o) { return status_message(compile(g, {.device = Device::Cpu, .buckets = o}).status()); };
  CHECK_THAT(err({.symbol = "N", .sizes = {1}}), Catch::Contains("has no symbol N"));
  CHECK_THAT(err({.symbol = "B", .sizes = {}}), Catch::Contains("no sizes for B"));
  CHECK_THAT(err({.symbol = "B", .sizes = {4, 2}}), Catch::Contains("must be ascending, got 4 then 2"));
  CHECK_THAT(err({.symbol = "B", .sizes = {0, 2}}), Catch::Contains("size 0 of B is outside its bounds"));
  CHECK_THAT(err({.symbol = "S", .sizes = {16}}), Catch::Contains("%k_cache.0 f32[B, 2, S, 12] has S outside its leading dim"));
  CHECK_THAT(err({.symbol = "B", .sizes = {2}, .pad = {{"k_cache.0", 0}}}), Catch::Contains("is state"));
  CHECK_THAT(err({.symbol = "B", .sizes = {2}, .pad = {{"nope", 0}}}), Catch::Contains("%nope, which is no argument"));
}

TEST_CASE("buckets: generate with decode buckets gives the reference's and the unbucketed run's tokens") {
  LlamaConfig c = tiny();
  auto w = random_weights(c, 1);
  for (bool paged : {false, true}) {
    INFO((paged ? "paged cache, sampling" : "contiguous cache, greedy"));
    GenerateOptions o{.device = Device::Cpu, .batch = 3, .prompt_len = 7, .new_tokens = 9,
                      .cache = paged ? CacheLayout::Paged : CacheLayout::Contiguous, .block_size = 4, .check_steps = 8,
                      .seed = 4};
    if (paged) o.sampling = GenerateOptions::Sampling{.temperature = 1.2, .top_k = 10, .top_p = 0.9};
    auto plain = generate(c, w, o);
    require_ok(plain.status());
    o.buckets = {1, 2, 4, 8};
    std::vector<int64_t> progress;
    o.bucket_progress = [&](const CompileStats::Bucket& b) { progress.push_back(b.size); };
    auto bucketed = generate(c, w, o);
    require_ok(bucketed.status());
    CHECK(bucketed->checked_steps == 9);
    CHECK(bucketed->tokens == plain->tokens);
    CHECK(progress == std::vector<int64_t>{8, 4, 2, 1});
    CHECK_THAT(bucketed->to_text(), Catch::Contains("buckets     4 of the decode step built in"));
  }
  GenerateOptions beyond{.device = Device::Cpu, .batch = 9, .buckets = {1, 8}};
  CHECK_THAT(status_message(generate(c, w, beyond).status()), Catch::Contains("batch 9 is beyond the largest bucket 8"));
}

#if KILN_WITH_CUDA_BACKEND
TEST_CASE("buckets: the decode step's buckets NVRTC-compile for CUDA (no GPU needed)") {
  Graph g = trace_step(tiny(), {.decode = true, .cache = CacheLayout::Paged, .block_size = 4});
  auto cg = compile(g, {.mode = Mode::ReduceOverhead, .device = Device::Cuda, .compile_only = true,
                        .buckets = BucketOptions{"B", {1, 2, 4, 8}, {{"start", -1}}}});
  require_ok(cg.status());
  for (int64_t size : {8, 4, 2, 1}) require_ok(cg->warm_up({{"B", size}, {"NB", 17}, {"MB", 4}}));
  CHECK(cg->specializations().size() == 2);
  CHECK(cg->stats().kernels > 0);
}

TEST_CASE("buckets: warm_up_buckets captures one CUDA graph per bucket; calls replay them on new inputs", "[gpu]") {
  KILN_REQUIRE_GPU();
  LlamaConfig c = tiny();
  auto weights = random_weights(c, 1);
  Graph g = trace_step(c, {.decode = true});
  auto cg = compile(g, {.mode = Mode::ReduceOverhead, .device = Device::Cuda, .buckets = buckets()});
  require_ok(cg.status());
  DecodeCall call(c, weights, 3, 8, 5);
  std::vector<Tensor> args;
  for (const Value* a : cg->module().args) {
    auto t = Tensor::from_host(call.args.at(a->name()), cg->device());
    require_ok(t.status());
    args.push_back(*t);
  }
  std::vector<int64_t> order;
  auto lines = cg->warm_up_buckets(args, nullptr, [&](const CompileStats::Bucket& b) { order.push_back(b.size); });
  require_ok(lines.status());
  CHECK(order == std::vector<int64_t>{8, 4, 2, 1});
  for (const CompileStats::Bucket& b : *lines) CHECK(b.captures == 1);
  // Warming up wrote no cache row: every row was a pad row.
  for (size_t i = 0; i < args.size(); ++i)
    if (cg->module().args[i]->is_state()) {
      auto h = args[i].to_host();
      require_ok(h.status());
      CHECK(std::memcmp(h->data(), call.args.at(cg->module().args[i]->name()).data(), static_cast<size_t>(h->nbytes())) == 0);
    }
  // Calls on new tokens and positions over the same caches (kept where they are, as a server
  // keeps its KV cache): b = 3 twice (bucket 4), then 7 (bucket 8), each against the reference.
  std::mt19937_64 rng(6);
  for (int64_t b : {3, 3, 7}) {
    INFO("batch " << b);
    std::map<std::string, HostTensor> host = weights;
    HostTensor tokens(DType::i64, {b}), start(DType::i32, {b});
    for (int64_t i = 0; i < b; ++i) {
      tokens.set_int(i, static_cast<int64_t>(rng() % static_cast<uint64_t>(c.vocab)));
      start.set_int(i, 1 + static_cast<int64_t>(rng() % (kS - 2)));
    }
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& name = cg->module().args[i]->name();
      if (name == "tokens" || name == "start") {
        auto t = Tensor::from_host(name == "tokens" ? tokens : start, cg->device());
        require_ok(t.status());
        args[i] = *t;
      } else if (cg->module().args[i]->is_state()) {
        auto h = args[i].to_host();
        require_ok(h.status());
        host[name] = first_rows(*h, b);
      }
    }
    host["tokens"] = tokens;
    host["start"] = start;
    auto got = (*cg)(args);
    require_ok(got.status());
    auto want = evaluate(g, host);
    require_ok(want.status());
    for (size_t j = 0; j < want->size(); ++j) {
      auto h = (*got)[j].to_host();
      require_ok(h.status());
      CHECK(compare_tensors((*want)[j], j < 3 ? *h : first_rows(*h, b), default_tolerance(c.dtype)).ok);
    }
  }
  CompileStats s = cg->stats();
  CHECK(s.buckets[2].captures == 1);
  CHECK(s.buckets[2].replays == 2);
  CHECK(s.buckets[3].captures == 1);
  CHECK(s.buckets[3].replays == 1);
  CHECK(cg->memory().held.arena > 0);
}
#endif

}  // namespace
}  // namespace kiln::models
