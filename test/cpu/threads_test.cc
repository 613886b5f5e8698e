// The thread-safety contract (README, "Threads"): one CompiledGraph called from several
// threads at once, each with its own inputs and sizes, gives every thread the reference's
// answer; compile() runs concurrently on several threads; one tensor-parallel RankGroup
// (a thread per rank, the host group's collectives) called from several threads at once;
// the host group's all_reduce, each rank summing its share for all, against the reference.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "compiler/compile.h"
#include "compiler/parallel.h"
#include "ir/compare.h"
#include "ir/reference.h"
#include "ir/str.h"
#include "runtime/communicator.h"
#include "test/common/catch_helpers.h"

using namespace kiln;
using kiln::testing::parse_or_fail;

namespace {

constexpr const char* kGraph = R"(graph t(%x: f32[B, 24], %w: f32[16, 24] param, %b: f32[16] param) {
  %l = linear(%x, %w, %b)
  %g = gelu(%l)
  %s = softmax(%g)
  %r = sum(%s, axes=[0])
  return %s, %r
}
)";

// Fresh random inputs under B with the parameters of seed 1: an executable may take a
// parameter at an address it saw before as unchanged, so every call passes the same values.
TensorMap call_args(const Graph& g, int64_t b, uint64_t seed) {
  TensorMap args = random_args(g, {{"B", b}}, seed);
  TensorMap params = random_args(g, {{"B", 1}}, 1);
  args["w"] = params.at("w");
  args["b"] = params.at("b");
  return args;
}

// Empty when `cg` on `args` matches the reference on `g`, else why not.
std::string mismatch(CompiledGraph& cg, const Graph& g, const TensorMap& args) {
  std::vector<Tensor> in;
  for (const Value* a : cg.module().args) in.push_back(*Tensor::from_host(args.at(a->name())));
  absl::StatusOr<std::vector<Tensor>> got = cg(in);
  if (!got.ok()) return status_message(got.status());
  absl::StatusOr<std::vector<HostTensor>> want = evaluate(g, args);
  if (!want.ok()) return status_message(want.status());
  for (size_t i = 0; i < want->size(); ++i) {
    Comparison c = compare_tensors((*want)[i], *(*got)[i].to_host(), default_tolerance((*want)[i].dtype()));
    if (!c.ok) return str_cat("output ", i, ": ", c.message);
  }
  return {};
}

}  // namespace

TEST_CASE("one CompiledGraph called from several threads at once", "[cpu][threads]") {
  Graph g = parse_or_fail(kGraph);
  absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
  REQUIRE(cg.ok());
  constexpr int kThreads = 4, kCalls = 12;
  const int64_t sizes[] = {1, 7, 33};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls && errors[t].empty(); ++c) {
        int64_t b = sizes[(t + c) % 3];
        TensorMap args = call_args(g, b, 1000 * t + c);
        errors[t] = mismatch(*cg, g, args);
        if (!errors[t].empty()) errors[t] = str_cat("thread ", t, " call ", c, " (B=", b, "): ", errors[t]);
      }
    });
  for (std::thread& th : threads) th.join();
  for (const std::string& e : errors) {
    INFO(e);
    CHECK(e.empty());
  }
}

TEST_CASE("compile() on several threads at once", "[cpu][threads]") {
  Graph g = parse_or_fail(kGraph);
  constexpr int kThreads = 3;
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      absl::StatusOr<CompiledGraph> cg = compile(g, {.device = Device::Cpu});
      if (!cg.ok()) {
        errors[t] = status_message(cg.status());
        return;
      }
      errors[t] = mismatch(*cg, g, call_args(g, 5 + t, 77 + t));
    });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    INFO("thread " << t << ": " << errors[t]);
    CHECK(errors[t].empty());
  }
}

TEST_CASE("one RankGroup of 2 ranks called from several threads at once", "[cpu][threads]") {
  // w and b column-parallel: gelu stays split, softmax gathers it (an all_gather per call).
  Graph g = parse_or_fail(kGraph);
  absl::StatusOr<ShardedGraph> s = shard(g, {2, {{"w", 0}, {"b", 0}}});
  REQUIRE(s.ok());
  absl::StatusOr<std::unique_ptr<RankGroup>> group =
      RankGroup::compile(s->graph, 2, {.compile = {.device = Device::Cpu}});
  REQUIRE(group.ok());
  constexpr int kThreads = 3, kCalls = 5;
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls && errors[t].empty(); ++c) {
        const int64_t b = 1 + 6 * ((t + c) % 3);
        TensorMap args = call_args(g, b, 500 * t + c);
        absl::StatusOr<std::vector<std::vector<HostTensor>>> got = (*group)->run_host(*shard_arguments(*s, 2, args));
        std::vector<HostTensor> want = *evaluate(g, args);
        for (int64_t r = 0; r < 2 && got.ok() && errors[t].empty(); ++r)
          for (size_t i = 0; i < want.size() && errors[t].empty(); ++i) {
            Comparison cmp = compare_tensors(want[i], (*got)[r][i], default_tolerance(want[i].dtype()));
            if (!cmp.ok) errors[t] = str_cat("thread ", t, " call ", c, " rank ", r, " output ", i, ": ", cmp.message);
          }
        if (!got.ok()) errors[t] = str_cat("thread ", t, " call ", c, ": ", status_message(got.status()));
      }
    });
  for (std::thread& th : threads) th.join();
  for (const std::string& e : errors) {
    INFO(e);
    CHECK(e.empty());
  }
}

TEST_CASE("host group: all_reduce over shares (counts of 1, fewer than the ranks, not divisible by them, large)",
          "[cpu][threads]") {
  // Each rank sums elements [r * count / N, (r + 1) * count / N) and writes them into every
  // rank's result: every result must be sum_over_ranks's, bit for bit, whoever summed which
  // element (f32's sum in f64 rounded once; bf16 rounded once from the f64 sum; i64 wraps).
  std::mt19937_64 rng(7);
  for (int64_t ranks : {1, 3, 4})
    for (int64_t count : {1, 2, 7, 100003})
      for (DType dtype : {DType::f32, DType::bf16, DType::i64}) {
        INFO(ranks << " ranks, " << count << " " << dtype_name(dtype));
        std::vector<std::shared_ptr<Communicator>> comms = host_group(ranks);
        std::vector<HostTensor> in, out;
        std::vector<const HostTensor*> parts;
        for (int64_t r = 0; r < ranks; ++r) {
          in.emplace_back(dtype, std::vector<int64_t>{count});
          out.emplace_back(dtype, std::vector<int64_t>{count});
          if (dtype == DType::i64)
            for (int64_t i = 0; i < count; ++i) in.back().set_int(i, static_cast<int64_t>(rng()));  // sums wrap
          else
            in.back().fill_random(rng, -1e3, 1e3);
        }
        for (const HostTensor& t : in) parts.push_back(&t);
        HostTensor want = sum_over_ranks(parts);
        std::vector<absl::Status> st(static_cast<size_t>(ranks));
        std::vector<std::thread> threads;
        for (int64_t r = 0; r < ranks; ++r)
          threads.emplace_back(
              [&, r] { st[r] = comms[r]->all_reduce(in[r].data(), out[r].data(), count, dtype, nullptr); });
        for (std::thread& t : threads) t.join();
        for (int64_t r = 0; r < ranks; ++r) {
          INFO("rank " << r);
          REQUIRE(st[r].ok());
          CHECK(std::memcmp(out[r].data(), want.data(), static_cast<size_t>(want.nbytes())) == 0);
        }
      }
}
