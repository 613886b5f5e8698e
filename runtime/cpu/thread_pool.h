// A small fixed pool of worker threads that runs the chunks of one parallel loop at a time
// (the outer domain of a CPU kernel); the calling thread takes chunks too.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
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

  // Runs fn(0) .. fn(n-1), each exactly once, spread over the threads; returns when all
  // are done. Calls from several threads at once are serialized.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

  // The process-wide pool: min(hardware threads, KILN_CPU_THREADS if set).
  static ThreadPool& shared();

 private:
  void work();
  void run_chunks();

  std::vector<std::thread> workers_;
  std::mutex run_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, next_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

}  // namespace kiln::cpu
