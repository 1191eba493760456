#include "libkdn/worker_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <string>

namespace kdn::libkdn {

WorkerPool::WorkerPool(uint32_t n_threads) {
  threads_.reserve(std::max(1u, n_threads));
  for (uint32_t i = 0; i < std::max(1u, n_threads); ++i) threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Submit(std::function<void()> task) {
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      UniqueLock lock(mu_);
      while (!stopping_ && queue_.empty()) cv_.wait(lock);
      if (queue_.empty()) return;  // stopping, and everything queued has run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

namespace {

// Shared by the caller of ParallelFor and the helpers it submits. Helpers that start after every
// item is taken touch nothing but this state, which they keep alive themselves.
struct ParallelState {
  uint64_t n = 0;
  const std::function<Status(uint64_t)>* fn = nullptr;  // valid while items remain
  std::atomic<uint64_t> next{0};
  Mutex mu;
  std::condition_variable_any cv;
  uint64_t done KDN_GUARDED_BY(mu) = 0;
  Status first_error KDN_GUARDED_BY(mu);

  void Drain() {
    for (;;) {
      const uint64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) return;
      Status s;
      try {
        s = (*fn)(i);
      } catch (const std::bad_alloc&) {
        s = Status::NoMemory("worker pool");
      } catch (const std::exception& e) {
        s = Status::Internal(std::string("unexpected exception: ") + e.what());
      } catch (...) {
        s = Status::Internal("unexpected exception");
      }
      MutexLock lock(mu);
      if (!s.ok() && first_error.ok()) first_error = s;
      if (++done == n) cv.notify_all();
    }
  }
};

}  // namespace

Status WorkerPool::ParallelFor(uint64_t n, const std::function<Status(uint64_t)>& fn) {
  if (n == 0) return Status::OK();
  auto state = std::make_shared<ParallelState>();
  state->n = n;
  state->fn = &fn;
  const uint64_t helpers = std::min<uint64_t>(size(), n - 1);
  for (uint64_t i = 0; i < helpers; ++i) Submit([state] { state->Drain(); });
  state->Drain();
  UniqueLock lock(state->mu);
  while (state->done != state->n) state->cv.wait(lock);
  return state->first_error;
}

uint32_t DefaultWorkerCount() {
  if (const char* env = std::getenv("KDN_CPU_THREADS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != nullptr && *end == '\0' && v > 0) return static_cast<uint32_t>(std::min(v, 1024L));
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace kdn::libkdn
