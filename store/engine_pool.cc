#include "store/engine_pool.h"

namespace kdn::store {

Result<EnginePool::Lease> EnginePool::Acquire() {
  std::unique_ptr<io::IoEngine> engine;
  {
    MutexLock lock(mu_);
    if (!idle_.empty()) {
      engine = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!engine) {
    KDN_ASSIGN_OR_RETURN(engine, io::CreateIoEngine(options_));
    MutexLock lock(mu_);
    kind_ = engine->kind();
  }
  return Lease(this, std::move(engine));
}

io::EngineKind EnginePool::kind() const {
  MutexLock lock(mu_);
  return kind_;
}

void EnginePool::Return(std::unique_ptr<io::IoEngine> engine) {
  // An engine left with operations in flight (only after an internal error) is not reused.
  if (engine->outstanding() != 0) return;
  MutexLock lock(mu_);
  idle_.push_back(std::move(engine));
}

}  // namespace kdn::store
