// A fixed set of worker threads that run one data-parallel loop at a time.
//
// ParallelFor splits [0, n) into one contiguous range per thread (the calling thread takes the
// first). Work is partitioned by output element, so each output is computed by exactly one thread
// with the same arithmetic whatever the thread count: results never depend on it.
#ifndef KDN_EXAMPLES_KDN_ENGINE_THREAD_POOL_H_
#define KDN_EXAMPLES_KDN_ENGINE_THREAD_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kdn::engine {

class ThreadPool {
 public:
  // n_threads counts the caller: 1 runs everything inline. 0 = hardware concurrency.
  explicit ThreadPool(unsigned n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n) and returns when all are done. Ranges
  // are multiples of `grain` (except the last), so a caller can keep aligned tiles together.
  // Not reentrant: fn must not call ParallelFor on the same pool.
  void ParallelFor(size_t n, const std::function<void(size_t, size_t)>& fn, size_t grain = 1);

 private:
  void WorkerLoop(unsigned index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  std::vector<std::pair<size_t, size_t>> ranges_;  // per worker, for the current job
  uint64_t generation_ = 0;
  unsigned pending_ = 0;
  bool stop_ = false;
};

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_THREAD_POOL_H_
