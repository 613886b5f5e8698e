#include "runtime/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace kiln::cpu {
namespace {

// How long a worker waits for the next loop awake (spinning) before it sleeps. A model's
// call is tens to thousands of loops a few microseconds apart, its parallel ones up to a few
// hundred apart; waking a sleeping thread (futex, and under KVM an idle vCPU's halt exit)
// took 10-50 us on the build machine, more than most loops, and a woken worker that takes a
// loop's last chunk late holds up the caller: with 100 us, mobilenet_v2's first depthwise
// conv took 25 us on 2 threads against 11 on one (2 threads 226 us a call against 212 on one;
// 211 with 1 ms). The caller never sleeps: it spins for the other threads' last chunks.
constexpr auto kSpin = std::chrono::microseconds(1000);
// Spinning past this long yields the core between looks, so that on a machine with more
// runnable threads than cores (other jobs) the threads with work get it.
constexpr auto kPauseOnly = std::chrono::microseconds(10);

void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

constexpr uint64_t kIndexMask = 0xffffffffu;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(threads, 1); ++i) slots_.push_back(std::make_unique<Slot>());
  for (int i = 1; i < std::max(threads, 1); ++i) workers_.emplace_back([this, i] { work(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  for (const std::unique_ptr<Slot>& s : slots_) {
    std::lock_guard<std::mutex> lock(s->mu);
    s->cv.notify_one();
  }
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

// The rule behind kMinThreadNs: a loop of W ns on t threads takes about W / t plus a cost per
// thread (taking indices: a compare-exchange on a line all threads write; the part's inputs
// and outputs moving between cores' caches; a thread that was asleep or preempted starting
// late), so each thread must bring enough work to pay for itself: one per 10 us, and all 16
// of a 16-core machine only from 160 us up. On the build machine (2 vCPUs under KVM), a loop
// of 23.5 us of arithmetic split in two took 33 us when the workers slept between loops (the
// pool before this one) and 12.4 us with them spinning; 5.9 us took 3.6 us, 1.5 us gained
// nothing. Over the model zoo on 2 threads, 10 us per thread beat 5 us (llama 118 -> 138 us,
// resnet 134 -> 160 us at 5) and 20 us (gpt2 75 -> 91 us, unet 1711 -> 2003 us at 20).
int ThreadPool::threads_for(double ns) const {
  double t = ns / kMinThreadNs;
  return t < 2 ? 1 : t >= threads() ? threads() : static_cast<int>(t);
}

// Takes indices of loop `generation` until none are left. fn_ and n_ are read once the loop
// is open; an index taken under them is the loop's: had they been rewritten for the next
// loop, the state would have been closed first (see parallel_for) and the take would fail.
void ThreadPool::run_chunks(uint64_t generation) {
  uint64_t s = state_.load(std::memory_order_acquire);
  while (s >> 32 == generation && (s & kIndexMask) == kIndexMask) {  // being set up
    pause();
    s = state_.load(std::memory_order_acquire);
  }
  if (s >> 32 != generation) return;
  const std::function<void(int64_t)>* fn = fn_.load(std::memory_order_acquire);
  const uint64_t n = static_cast<uint64_t>(n_.load(std::memory_order_acquire));
  while (s >> 32 == generation && (s & kIndexMask) < n) {
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    (*fn)(static_cast<int64_t>(s & kIndexMask));
    pending_.fetch_sub(1, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::work(int id) {
  Slot& slot = *slots_[static_cast<size_t>(id - 1)];
  uint64_t seen = 0;
  auto idle_since = std::chrono::steady_clock::now();
  for (int spins = 0;; ++spins) {
    if (stop_.load(std::memory_order_relaxed)) return;
    uint64_t generation = state_.load(std::memory_order_acquire) >> 32;
    if (generation != seen) {
      seen = generation;
      if (id <= helpers_.load(std::memory_order_relaxed)) run_chunks(generation);
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    if (spins % 64 != 0) {
      pause();
      continue;
    }
    if (auto idle = std::chrono::steady_clock::now() - idle_since; idle < kSpin) {
      if (idle > kPauseOnly) std::this_thread::yield();
      continue;
    }
    // Asleep: parallel_for wakes this worker when a loop wants it. `sleeping` is set before
    // the generation is read again, and parallel_for reads it after publishing a loop, so
    // one of them sees the other (both sequentially consistent).
    std::unique_lock<std::mutex> lock(slot.mu);
    slot.sleeping.store(true);
    slot.cv.wait(lock, [&] { return stop_.load() || state_.load() >> 32 != seen; });
    slot.sleeping.store(false);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn, int max_threads) {
  if (n <= 0) return;
  // Only as many workers as there are indices beside the caller's.
  int64_t helpers = std::min<int64_t>({n - 1, static_cast<int64_t>(workers_.size()), max_threads - 1});
  if (helpers <= 0) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  // The new generation first closed (no index can be taken), then the loop's fields, then
  // open: a worker still holding the last loop's state and reading the new n_ cannot take
  // an index, as its compare-exchange meets the closed state.
  // helpers_ goes before the closing store: a worker may see the new generation in the
  // closed state already, and then reads helpers_ to decide whether it joins (read after
  // it, it let a worker the loop did not want join it: more threads than max_threads).
  const uint64_t generation = ((state_.load(std::memory_order_relaxed) >> 32) + 1) & kIndexMask;
  helpers_.store(static_cast<int>(helpers), std::memory_order_relaxed);
  state_.store(generation << 32 | kIndexMask);
  fn_.store(&fn, std::memory_order_release);
  n_.store(n, std::memory_order_release);
  pending_.store(n, std::memory_order_relaxed);
  state_.store(generation << 32);  // open (sequentially consistent: see work())
  for (int64_t i = 0; i < helpers; ++i) {
    Slot& s = *slots_[static_cast<size_t>(i)];
    if (!s.sleeping.load()) continue;
    std::lock_guard<std::mutex> lock(s.mu);
    s.cv.notify_one();
  }
  run_chunks(generation);
  // The other threads' last indices: spin, then yield the core between looks (a worker that
  // was preempted needs it on a busy machine).
  auto start = std::chrono::steady_clock::now();
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 64 || std::chrono::steady_clock::now() - start < kPauseOnly) pause();
    else std::this_thread::yield();
  }
}

}  // namespace kiln::cpu
