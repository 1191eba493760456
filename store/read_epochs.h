// Read epochs: when may released space be reused?
//
// A read enters an epoch before it looks up where a chunk lies and leaves it when its I/O is done.
// Releasing space advances the epoch and tags the space with the old one: reads that entered
// later cannot find the released chunk (its rows are gone, its cached location dropped), so the
// space is reusable once no read with an epoch at or below the tag is still running.
#ifndef KDN_STORE_READ_EPOCHS_H_
#define KDN_STORE_READ_EPOCHS_H_

#include <cstdint>
#include <map>
#include <mutex>

#include "base/thread_annotations.h"

namespace kdn::store {

class ReadEpochs {
 public:
  uint64_t Enter() {
    MutexLock lock(mu_);
    ++active_[current_];
    return current_;
  }
  void Exit(uint64_t epoch) {
    MutexLock lock(mu_);
    auto it = active_.find(epoch);
    if (it != active_.end() && --it->second == 0) active_.erase(it);
  }
  // The tag for space released now.
  uint64_t Advance() {
    MutexLock lock(mu_);
    return current_++;
  }
  // Space tagged below this is no longer read by anyone.
  uint64_t OldestActive() const {
    MutexLock lock(mu_);
    return active_.empty() ? current_ : active_.begin()->first;
  }

 private:
  mutable Mutex mu_;
  uint64_t current_ KDN_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, uint32_t> active_ KDN_GUARDED_BY(mu_);  // epoch -> running reads
};

// Scope of one read.
class ReadGuard {
 public:
  explicit ReadGuard(ReadEpochs& epochs) : epochs_(epochs), epoch_(epochs.Enter()) {}
  ~ReadGuard() { epochs_.Exit(epoch_); }
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;

 private:
  ReadEpochs& epochs_;
  uint64_t epoch_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_READ_EPOCHS_H_
