// One-shot completion with a status: what kdn_layer_wait and kdn_sync block on.
#ifndef KDN_LIBKDN_COMPLETION_H_
#define KDN_LIBKDN_COMPLETION_H_

#include <condition_variable>

#include "base/thread_annotations.h"
#include "kdn/status.h"

namespace kdn::libkdn {

class Completion {
 public:
  // The first call wins; later calls are ignored.
  void Finish(Status s) {
    {
      MutexLock lock(mu_);
      if (done_) return;
      done_ = true;
      status_ = std::move(s);
    }
    cv_.notify_all();
  }
  Status Wait() const {
    UniqueLock lock(mu_);
    while (!done_) cv_.wait(lock);
    return status_;
  }
  bool done() const {
    MutexLock lock(mu_);
    return done_;
  }

 private:
  mutable Mutex mu_;
  mutable std::condition_variable_any cv_;
  bool done_ KDN_GUARDED_BY(mu_) = false;
  Status status_ KDN_GUARDED_BY(mu_);
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_COMPLETION_H_
