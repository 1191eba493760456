#include "kdn-engine/thread_pool.h"

#include <algorithm>

namespace kdn::engine {

ThreadPool::ThreadPool(unsigned n_threads) {
  if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
  ranges_.resize(n_threads - 1);
  for (unsigned i = 0; i + 1 < n_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t, size_t)>& fn,
                             size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t units = (n + grain - 1) / grain;
  const size_t parts = std::min<size_t>(size(), units);
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  // Part p gets units [p*units/parts, (p+1)*units/parts).
  auto bound = [&](size_t p) { return std::min(n, (p * units / parts) * grain); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t w = 0; w < workers_.size(); ++w) {
      ranges_[w] = w + 1 < parts ? std::make_pair(bound(w + 1), bound(w + 2))
                                 : std::make_pair(size_t{0}, size_t{0});
    }
    job_ = &fn;
    pending_ = static_cast<unsigned>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  fn(0, bound(1));
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(unsigned index) {
  uint64_t seen = 0;
  for (;;) {
    std::pair<size_t, size_t> range;
    const std::function<void(size_t, size_t)>* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      range = ranges_[index];
      job = job_;
    }
    if (range.first < range.second) (*job)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace kdn::engine
