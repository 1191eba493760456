// A fixed set of worker threads running tasks in FIFO order.
//
// Tasks never wait for other tasks (the load pipelines chain work by submitting it, and count
// completions with atomics), so a pool of any size, even one thread, cannot deadlock.
// ParallelFor is for synchronous API calls: the calling thread takes part, so it also makes
// progress while the workers are busy with a long load.
#ifndef KDN_LIBKDN_WORKER_POOL_H_
#define KDN_LIBKDN_WORKER_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/status.h"

namespace kdn::libkdn {

class WorkerPool {
 public:
  // n_threads >= 1.
  explicit WorkerPool(uint32_t n_threads);
  ~WorkerPool();  // runs every queued task, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  uint32_t size() const { return static_cast<uint32_t>(threads_.size()); }

  // `task` must not throw; it runs on one of the workers.
  void Submit(std::function<void()> task);

  // Runs fn(i) for i in [0, n) on the caller and the workers; returns the first error (the
  // remaining items still run). fn must be safe to call concurrently.
  Status ParallelFor(uint64_t n, const std::function<Status(uint64_t)>& fn);

 private:
  void Run();

  Mutex mu_;
  std::condition_variable_any cv_;
  std::deque<std::function<void()>> queue_ KDN_GUARDED_BY(mu_);
  bool stopping_ KDN_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Worker count for a new context: $KDN_CPU_THREADS when it is a positive integer, else the
// hardware concurrency (at least 1).
uint32_t DefaultWorkerCount();

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_WORKER_POOL_H_
