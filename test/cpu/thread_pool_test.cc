// The CPU backend's thread pool: every index of a parallel loop runs exactly once, whatever
// the pool size, chunk count and thread limit (a loop joins only the workers it wants, so
// later loops meet workers that spun or slept through earlier ones, and workers asleep after
// a pause), loops from several calling threads are serialized, and a loop runs on no more
// threads than its work is worth.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "runtime/cpu/thread_pool.h"

using kiln::cpu::ThreadPool;

namespace {

// Runs parallel_for(n) on `pool` on at most `max_threads` threads and requires each index to
// have run once, on at most that many threads.
void require_each_once(ThreadPool& pool, int64_t n, int max_threads = 1 << 30) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
  std::mutex mu;
  std::set<std::thread::id> ran_on;
  pool.parallel_for(
      n,
      [&](int64_t i) {
        runs[static_cast<size_t>(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        ran_on.insert(std::this_thread::get_id());
      },
      max_threads);
  for (int64_t i = 0; i < n; ++i) {
    INFO("n " << n << " index " << i);
    REQUIRE(runs[static_cast<size_t>(i)].load() == 1);
  }
  REQUIRE(static_cast<int>(ran_on.size()) <= max_threads);
}

}  // namespace

TEST_CASE("cpu thread pool: each index once for every pool size and chunk count", "[cpu][threads]") {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    REQUIRE(pool.threads() == threads);
    // Few chunks (some workers stay asleep), then many, then few again, many times over.
    for (int round = 0; round < 50; ++round)
      for (int64_t n : {0, 1, 2, 3, 7, 64, 2, 1000}) require_each_once(pool, n);
    // Limited to fewer threads, and after pauses long enough for the workers to sleep.
    for (int round = 0; round < 20; ++round) {
      require_each_once(pool, 64, 1 + round % 3);
      if (round % 4 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
      require_each_once(pool, 7);
    }
  }
}

TEST_CASE("cpu thread pool: a loop gets one thread per 10 us of work, ranges cover it once", "[cpu][threads]") {
  ThreadPool pool(8);
  constexpr double us = 1000;
  REQUIRE(pool.threads_for(0) == 1);
  REQUIRE(pool.threads_for(5 * us) == 1);  // a 5 us kernel: on the calling thread
  REQUIRE(pool.threads_for(19 * us) == 1);
  REQUIRE(pool.threads_for(20 * us) == 2);
  REQUIRE(pool.threads_for(45 * us) == 4);
  REQUIRE(pool.threads_for(1e9) == 8);
  REQUIRE(ThreadPool(1).threads_for(1e9) == 1);
  for (double ns : {1 * us, 30 * us, 1e9})
    for (int64_t items : {1, 3, 1000}) {
      std::vector<std::atomic<int>> runs(static_cast<size_t>(items));
      std::mutex mu;
      std::set<std::thread::id> ran_on;
      std::atomic<int> parts{0};
      pool.parallel_ranges(items, ns, [&](int64_t lo, int64_t hi) {
        parts.fetch_add(1);
        for (int64_t i = lo; i < hi; ++i) runs[static_cast<size_t>(i)].fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        ran_on.insert(std::this_thread::get_id());
      });
      INFO("ns " << ns << " items " << items);
      for (std::atomic<int>& r : runs) REQUIRE(r.load() == 1);
      REQUIRE(static_cast<int>(ran_on.size()) <= pool.threads_for(ns));
      REQUIRE(parts.load() <= 4 * pool.threads_for(ns));
      if (pool.threads_for(ns) == 1) {  // one part, on the calling thread
        REQUIRE(parts.load() == 1);
        REQUIRE(*ran_on.begin() == std::this_thread::get_id());
      }
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
