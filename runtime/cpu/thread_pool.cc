#include "runtime/cpu/thread_pool.h"

#include <algorithm>
#include <cstdlib>

namespace kiln::cpu {

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(threads, 1); ++i) workers_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

ThreadPool& ThreadPool::shared() {
  static ThreadPool* pool = [] {
    int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* env = std::getenv("KILN_CPU_THREADS")) {
      int want = std::atoi(env);
      if (want >= 1) n = std::min(n, want);
    }
    return new ThreadPool(n);  // never destroyed: workers outlive static destructors
  }();
  return *pool;
}

// Takes chunks until none are left; the last finisher wakes the caller.
void ThreadPool::run_chunks() {
  std::unique_lock<std::mutex> lock(mu_);
  while (next_ < n_) {
    int64_t i = next_++;
    const std::function<void(int64_t)>* fn = fn_;
    lock.unlock();
    (*fn)(i);
    lock.lock();
    if (++finished_ == n_) done_.notify_all();
  }
}

void ThreadPool::work() {
  uint64_t seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_chunks();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || workers_.empty()) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  // Only as many workers as there are chunks beside the caller's: a worker woken for
  // nothing still costs a futex wake-up and a turn on the mutex.
  int64_t helpers = std::min<int64_t>(n - 1, static_cast<int64_t>(workers_.size()));
  if (helpers == static_cast<int64_t>(workers_.size())) {
    wake_.notify_all();
  } else {
    for (int64_t i = 0; i < helpers; ++i) wake_.notify_one();
  }
  run_chunks();
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return finished_ == n_; });
  fn_ = nullptr;
}

}  // namespace kiln::cpu
