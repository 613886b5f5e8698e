// The CPU backend's thread pool: every index of a parallel loop runs exactly once, whatever
// the pool size and chunk count (workers are woken only as many as there are chunks beside
// the caller's, so later loops meet workers that slept through earlier ones), and loops
// from several calling threads are serialized.
#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "runtime/cpu/thread_pool.h"

using kiln::cpu::ThreadPool;

namespace {

// Runs parallel_for(n) on `pool` and requires each index to have run once.
void require_each_once(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
  pool.parallel_for(n, [&](int64_t i) { runs[static_cast<size_t>(i)].fetch_add(1); });
  for (int64_t i = 0; i < n; ++i) {
    INFO("n " << n << " index " << i);
    REQUIRE(runs[static_cast<size_t>(i)].load() == 1);
  }
}

}  // namespace

TEST_CASE("cpu thread pool: each index once for every pool size and chunk count", "[cpu][threads]") {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    REQUIRE(pool.threads() == threads);
    // Few chunks (some workers stay asleep), then many, then few again, many times over.
    for (int round = 0; round < 50; ++round)
      for (int64_t n : {0, 1, 2, 3, 7, 64, 2, 1000}) require_each_once(pool, n);
  }
}

TEST_CASE("cpu thread pool: loops from several calling threads are serialized", "[cpu][threads]") {
  ThreadPool pool(4);
  std::atomic<int> inside{0}, overlap{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        std::atomic<int64_t> sum{0};
        pool.parallel_for(5, [&](int64_t i) {
          if (i == 0 && inside.fetch_add(1) != 0) overlap.fetch_add(1);
          sum.fetch_add(i + 1);
          if (i == 0) inside.fetch_sub(1);
        });
        if (sum.load() != 15) overlap.fetch_add(100);
      }
    });
  for (std::thread& t : callers) t.join();
  REQUIRE(overlap.load() == 0);
}
