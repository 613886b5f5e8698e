// kiln_bench_tp: tensor parallelism on the GPUs of one host (issue 22). For each group size
// in --ranks that the machine has GPUs for, a Llama preset's decode step (random-free: every
// weight byte 0x30, a tiny value, so nothing overflows) sharded over the ranks
// (llama_shard_plan: Megatron's split, vocab-parallel embedding and LM head), compiled as a
// RankGroup on CUDA (reduce-overhead: each rank replays its CUDA graph, NCCL inside), timed
// over --steps calls at --batch sequences and --context cache rows; the prefill of --batch
// prompts of --prompt tokens (default mode, over the same weights), mean of 5; then NCCL's all_reduce
// over the same ranks at --bytes, as nccl-tests reports it (algorithm bandwidth = bytes /
// time, bus bandwidth = that * 2 (n - 1) / n). One JSON line per measurement and a table.
//
//   kiln_bench_tp [--preset llama3-8b] [--batch 1] [--context 1024] [--prompt 1024]
//                 [--ranks 1,2,4,8] [--steps 50] [--bytes 67108864]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "compiler/parallel.h"
#include "ir/str.h"
#include "models/llama.h"
#include "passes/shard.h"
#include "runtime/cuda_driver.h"

namespace kiln {
namespace {

void check(const absl::Status& s, const std::string& what) {
  if (s.ok()) return;
  std::fprintf(stderr, "kiln_bench_tp: %s: %s\n", what.c_str(), status_message(s).c_str());
  std::exit(1);
}

template <typename T>
T check(absl::StatusOr<T> v, const std::string& what) {
  check(v.status(), what);
  return *std::move(v);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void sync_all(RankGroup& g) {
  for (int64_t r = 0; r < g.ranks(); ++r) check(g.rank(r).synchronize(), str_cat("synchronize rank ", r));
}

struct Options {
  std::string preset = "llama3-8b";
  int64_t batch = 1, context = 1024, prompt = 1024, steps = 50, bytes = 64 << 20;
  std::vector<int64_t> ranks = {1, 2, 4, 8};
};

// Rank r's arguments of a step: parameters from `params` (made on first use: every byte 0x30),
// caches zero, token 0 everywhere; decode: each sequence at the cache's last row; prefill:
// prompts of --prompt tokens from row 0.
std::vector<Tensor> step_args(RankGroup& g, int64_t r, const Options& o, bool decode,
                              std::map<std::string, Tensor>& params) {
  std::vector<Tensor> args;
  for (const Value* v : g.rank(r).module().args) {
    if (v->is_param() && params.contains(v->name())) {
      args.push_back(params.at(v->name()));
      continue;
    }
    std::vector<int64_t> shape =
        check(evaluate_shape(v->shape(), {{"B", o.batch}, {"S", o.context}, {"T", o.prompt}}), v->name());
    HostTensor h(v->dtype(), shape);
    std::memset(h.data(), v->is_param() ? 0x30 : 0, static_cast<size_t>(h.nbytes()));
    if (v->name() == "start")
      for (int64_t i = 0; i < h.numel(); ++i) h.set_int(i, decode ? o.context - 1 : 0);
    else if (v->name() == "lens")
      for (int64_t i = 0; i < h.numel(); ++i) h.set_int(i, o.prompt);
    else if (v->name() == kRankInput) h.set_int(0, r);
    args.push_back(check(Tensor::from_host(h, DeviceId::cuda(static_cast<int>(r))), v->name()));
    if (v->is_param()) params.emplace(v->name(), args.back());
  }
  return args;
}

// The mean ms of `times` calls of `group` on `args`, after `warm` calls.
double time_calls(RankGroup& group, const std::vector<std::vector<Tensor>>& args, int64_t warm, int64_t times) {
  std::vector<std::vector<Tensor>> outs;
  for (int64_t i = 0; i < warm; ++i) check(group.run(args, outs), "warm-up call");
  sync_all(group);
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < times; ++i) check(group.run(args, outs), "call");
  sync_all(group);
  return ms_since(t0) / static_cast<double>(times);
}

void run(const Options& o) {
  const int gpus = check(cuda::Device::count(), "CUDA devices");
  models::LlamaConfig c = check(models::preset(o.preset), "--preset");
  Graph step = models::trace_step(c, {.decode = true}), prefill = models::trace_step(c, {.decode = false});
  std::printf("%-6s %-14s %-12s %-14s %-14s %-14s\n", "ranks", "step ms", "tokens/s", "prefill ms", "allreduce GB/s",
              "bus GB/s");
  for (int64_t n : o.ranks) {
    if (n > gpus) {
      std::printf("%-6lld skipped: %d GPU%s here\n", static_cast<long long>(n), gpus, gpus == 1 ? "" : "s");
      continue;
    }
    // The decode step in reduce-overhead (replayed CUDA graphs), the prefill in default mode,
    // over the same parameter tensors.
    std::vector<std::map<std::string, Tensor>> params(static_cast<size_t>(n));
    double ms[2];
    std::unique_ptr<RankGroup> group;
    for (int form = 0; form < 2; ++form) {
      const bool decode = form == 0;
      ShardedGraph s =
          check(shard(decode ? step : prefill, llama_shard_plan(n, false, true, c.kv_heads)), str_cat("shard over ", n));
      group = check(
          RankGroup::compile(
              s.graph, n, {.compile = {.mode = decode ? Mode::ReduceOverhead : Mode::Default, .device = Device::Cuda}}),
          str_cat("compile over ", n));
      std::vector<std::vector<Tensor>> args(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) args[r] = step_args(*group, r, o, decode, params[r]);
      ms[form] = decode ? time_calls(*group, args, 3, o.steps) : time_calls(*group, args, 2, 5);
    }
    const double step_ms = ms[0], prefill_ms = ms[1];

    // all_reduce of o.bytes (bf16) on each rank's thread, 20 times after 5.
    const int64_t count = o.bytes / 2;
    std::vector<Tensor> in, out;
    for (int64_t r = 0; r < n; ++r) {
      in.push_back(check(Tensor::empty_cuda(DType::bf16, {count}, static_cast<int>(r)), "all_reduce buffer"));
      out.push_back(check(Tensor::empty_cuda(DType::bf16, {count}, static_cast<int>(r)), "all_reduce buffer"));
    }
    auto reduce = [&](int times) {
      std::vector<std::thread> ts;
      for (int64_t r = 0; r < n; ++r)
        ts.emplace_back([&, r] {
          Communicator& comm = group->communicator(r);
          for (int i = 0; i < times; ++i)
            check(comm.all_reduce(in[r].data(), out[r].data(), count, DType::bf16, nullptr), "all_reduce");
        });
      for (std::thread& t : ts) t.join();
      sync_all(*group);
    };
    reduce(5);
    auto t0 = std::chrono::steady_clock::now();
    reduce(20);
    const double ar_ms = ms_since(t0) / 20;
    const double algbw = static_cast<double>(o.bytes) / (ar_ms * 1e6), busbw = algbw * 2.0 * (n - 1) / n;
    const double tokens = static_cast<double>(o.batch) * 1000.0 / step_ms;
    std::printf("%-6lld %-14.3f %-12.1f %-14.3f %-14.1f %-14.1f\n", static_cast<long long>(n), step_ms, tokens,
                prefill_ms, algbw, busbw);
    nlohmann::json j = {{"preset", o.preset},
                        {"ranks", n},
                        {"batch", o.batch},
                        {"context", o.context},
                        {"step_ms", step_ms},
                        {"tokens_per_s", tokens},
                        {"allreduce_bytes", o.bytes},
                        {"allreduce_ms", ar_ms},
                        {"algbw_gbs", algbw},
                        {"busbw_gbs", busbw},
                        {"communicator", group->communicator(0).describe()}};
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  kiln::Options o;
  CLI::App app("Tensor-parallel decode steps and NCCL all_reduce over the GPUs of this host");
  app.add_option("--preset", o.preset, "a Llama preset (models::preset)");
  app.add_option("--batch", o.batch, "sequences per step");
  app.add_option("--context", o.context, "cache rows (each decoded sequence at the last)");
  app.add_option("--prompt", o.prompt, "prompt tokens per sequence of the timed prefill (at most --context)");
  app.add_option("--ranks", o.ranks, "group sizes to run (those above the GPU count are skipped)")->delimiter(',');
  app.add_option("--steps", o.steps, "timed steps per group size");
  app.add_option("--bytes", o.bytes, "all_reduce message size in bytes");
  CLI11_PARSE(app, argc, argv);
  kiln::run(o);
  return 0;
}
