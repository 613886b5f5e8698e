// kiln_bench_tp: tensor parallelism on the GPUs of one host (issue 22). For each group size
// in --ranks that the machine has GPUs for, a Llama preset's decode step (random-free: every
// weight byte 0x30, a tiny value, so nothing overflows) sharded over the ranks
// (llama_shard_plan: Megatron's split, vocab-parallel embedding and LM head), compiled as a
// RankGroup on CUDA (reduce-overhead: each rank replays its CUDA graph, NCCL inside), timed
// over --steps calls at --batch sequences and --context cache rows; then NCCL's all_reduce
// over the same ranks at --bytes, as nccl-tests reports it (algorithm bandwidth = bytes /
// time, bus bandwidth = that * 2 (n - 1) / n). One JSON line per measurement and a table.
//
//   kiln_bench_tp [--preset llama3-8b] [--batch 1] [--context 1024] [--ranks 1,2,4,8]
//                 [--steps 50] [--bytes 67108864]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
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
  int64_t batch = 1, context = 1024, steps = 50, bytes = 64 << 20;
  std::vector<int64_t> ranks = {1, 2, 4, 8};
};

// Rank r's arguments of the decode step: weights and caches as bytes 0x30 / zero, token 0 for
// every sequence, each sequence at the cache's last row.
std::vector<Tensor> step_args(RankGroup& g, int64_t r, const Options& o) {
  std::vector<Tensor> args;
  for (const Value* v : g.rank(r).module().args) {
    std::vector<int64_t> shape = check(evaluate_shape(v->shape(), {{"B", o.batch}, {"S", o.context}}), v->name());
    HostTensor h(v->dtype(), shape);
    if (v->is_param()) std::memset(h.data(), 0x30, static_cast<size_t>(h.nbytes()));
    else if (v->name() == "start")
      for (int64_t i = 0; i < h.numel(); ++i) h.set_int(i, o.context - 1);
    else if (v->name() == kRankInput) h.set_int(0, r);
    else std::memset(h.data(), 0, static_cast<size_t>(h.nbytes()));
    args.push_back(check(Tensor::from_host(h, DeviceId::cuda(static_cast<int>(r))), v->name()));
  }
  return args;
}

void run(const Options& o) {
  const int gpus = check(cuda::Device::count(), "CUDA devices");
  models::LlamaConfig c = check(models::preset(o.preset), "--preset");
  Graph step = models::trace_step(c, {.decode = true});
  std::printf("%-6s %-14s %-12s %-14s %-14s\n", "ranks", "step ms", "tokens/s", "allreduce GB/s", "bus GB/s");
  for (int64_t n : o.ranks) {
    if (n > gpus) {
      std::printf("%-6lld skipped: %d GPU%s here\n", static_cast<long long>(n), gpus, gpus == 1 ? "" : "s");
      continue;
    }
    ShardedGraph s = check(shard(step, llama_shard_plan(n)), str_cat("shard over ", n));
    auto group =
        check(RankGroup::compile(s.graph, n, {.compile = {.mode = Mode::ReduceOverhead, .device = Device::Cuda}}),
              str_cat("compile over ", n));
    std::vector<std::vector<Tensor>> args(static_cast<size_t>(n)), outs;
    for (int64_t r = 0; r < n; ++r) args[r] = step_args(*group, r, o);
    for (int i = 0; i < 3; ++i) check(group->run(args, outs), "warm-up step");
    sync_all(*group);
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i) check(group->run(args, outs), "step");
    sync_all(*group);
    const double step_ms = ms_since(t0) / static_cast<double>(o.steps);

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
    t0 = std::chrono::steady_clock::now();
    reduce(20);
    const double ar_ms = ms_since(t0) / 20;
    const double algbw = static_cast<double>(o.bytes) / (ar_ms * 1e6), busbw = algbw * 2.0 * (n - 1) / n;
    const double tokens = static_cast<double>(o.batch) * 1000.0 / step_ms;
    std::printf("%-6lld %-14.3f %-12.1f %-14.1f %-14.1f\n", static_cast<long long>(n), step_ms, tokens, algbw, busbw);
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
  app.add_option("--context", o.context, "cache rows (each sequence at the last)");
  app.add_option("--ranks", o.ranks, "group sizes to run (those above the GPU count are skipped)")->delimiter(',');
  app.add_option("--steps", o.steps, "timed steps per group size");
  app.add_option("--bytes", o.bytes, "all_reduce message size in bytes");
  CLI11_PARSE(app, argc, argv);
  kiln::run(o);
  return 0;
}
