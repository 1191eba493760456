// One-shot completion with a status: what kdn_layer_wait and kdn_sync block on.
#ifndef KDN_GPU_COMPLETION_H_
#define KDN_GPU_COMPLETION_H_

#include <condition_variable>
#include <mutex>

#include "kdn/status.h"

namespace kdn::gpu {

class Completion {
 public:
  // The first call wins; later calls are ignored.
  void Finish(Status s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) return;
      done_ = true;
      status_ = std::move(s);
    }
    cv_.notify_all();
  }
  Status Wait() const {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return status_;
  }
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

}  // namespace kdn::gpu

#endif  // KDN_GPU_COMPLETION_H_
