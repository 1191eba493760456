// I/O engines for the store's threads: a thread leases an idle engine (one ring per thread at any
// moment) for one operation and gives it back, so the number of rings follows the number of
// concurrent operations rather than the number of threads that ever called.
#ifndef KDN_STORE_ENGINE_POOL_H_
#define KDN_STORE_ENGINE_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "base/thread_annotations.h"
#include "iouring/io_engine.h"
#include "kdn/status.h"

namespace kdn::store {

class EnginePool {
 public:
  explicit EnginePool(const io::EngineOptions& options) : options_(options) {}

  class Lease {
   public:
    Lease(EnginePool* pool, std::unique_ptr<io::IoEngine> engine)
        : pool_(pool), engine_(std::move(engine)) {}
    ~Lease() {
      if (engine_) pool_->Return(std::move(engine_));
    }
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    io::IoEngine* operator->() const { return engine_.get(); }
    io::IoEngine& operator*() const { return *engine_; }

   private:
    EnginePool* pool_;
    std::unique_ptr<io::IoEngine> engine_;
  };

  // An idle engine (or a new one).
  Result<Lease> Acquire();
  io::EngineKind kind() const;  // of the engines this pool makes (after the first)

 private:
  void Return(std::unique_ptr<io::IoEngine> engine);

  io::EngineOptions options_;
  mutable Mutex mu_;
  std::vector<std::unique_ptr<io::IoEngine>> idle_ KDN_GUARDED_BY(mu_);
  io::EngineKind kind_ KDN_GUARDED_BY(mu_) = io::EngineKind::kAuto;
};

}  // namespace kdn::store

#endif  // KDN_STORE_ENGINE_POOL_H_
