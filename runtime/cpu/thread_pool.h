// A small fixed pool of worker threads that runs the chunks of one parallel loop at a time
// (the outer domain of a CPU kernel) on as many threads as its work is worth; the calling
// thread takes chunks too. Workers spin a while between loops, then sleep.
#pragma once

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // total threads including the caller; >= 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(0) .. fn(n-1), each exactly once, on at most `max_threads` threads (the caller
  // included), whichever comes first taking the next index; returns when all are done.
  // n < 2^31 (chunks, not elements). Calls from several threads at once are serialized.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn, int max_threads = INT_MAX);

  // The threads a loop is worth: one per kMinThreadNs of the `ns` one thread would take it,
  // at least one, at most threads(). See thread_pool.cc for the numbers behind it.
  int threads_for(double ns) const;
  static constexpr double kMinThreadNs = 10'000;

  // part(lo, hi) over [0, items) in chunks: on the calling thread alone where the loop is
  // worth one thread (threads_for(ns)), else on the threads it is worth, up to 4 chunks each
  // (whichever thread is free takes the next).
  template <typename F>
  void parallel_ranges(int64_t items, double ns, const F& part) {
    const int t = threads_for(ns);
    const int64_t chunks = std::min<int64_t>(items, 4 * static_cast<int64_t>(t));
    if (chunks <= 1 || t <= 1) {
      if (items > 0) part(int64_t{0}, items);
      return;
    }
    // One pointer captured: std::function keeps it without allocating.
    struct Split {
      const F* part;
      int64_t items, chunks;
    } s{&part, items, chunks};
    parallel_for(
        chunks, [&s](int64_t c) { (*s.part)(s.items * c / s.chunks, s.items * (c + 1) / s.chunks); }, t);
  }

  // The process-wide pool: min(hardware threads, KILN_CPU_THREADS if set).
  static ThreadPool& shared();

 private:
  // A worker's place to sleep: woken only when a loop wants it.
  struct alignas(64) Slot {
    std::mutex mu;
    std::condition_variable cv;
    std::atomic<bool> sleeping{false};
  };
  void work(int id);
  void run_chunks(uint64_t generation);

  std::vector<std::thread> workers_;
  std::vector<std::unique_ptr<Slot>> slots_;  // per worker
  std::mutex run_mu_;                         // one parallel_for at a time
  // The loop: generation << 32 | next index to take (2^32 - 1 while being set up). Taking
  // an index is a compare-exchange of both, so a worker late for one loop never takes an
  // index of the next.
  alignas(64) std::atomic<uint64_t> state_{0};
  std::atomic<const std::function<void(int64_t)>*> fn_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<int> helpers_{0};                  // workers 1..helpers_ join the loop
  alignas(64) std::atomic<int64_t> pending_{0};  // indices not finished
  std::atomic<bool> stop_{false};
};

}  // namespace kiln::cpu
