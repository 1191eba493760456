// Reader connections to meta.db. WAL mode lets any number of them read while the one writer
// commits; a thread leases one for a call (or a few statements in one snapshot) and gives it back.
#ifndef KDN_STORE_DB_POOL_H_
#define KDN_STORE_DB_POOL_H_

#include <memory>
#include <string>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/status.h"
#include "store/sqlite_db.h"

namespace kdn::store {

class DbPool {
 public:
  explicit DbPool(std::string path) : path_(std::move(path)) {}

  class Lease {
   public:
    Lease(DbPool* pool, std::unique_ptr<Db> db) : pool_(pool), db_(std::move(db)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (db_) pool_->Return(std::move(db_));
    }
    Db& operator*() const { return *db_; }
    Db* operator->() const { return db_.get(); }

   private:
    DbPool* pool_;
    std::unique_ptr<Db> db_;
  };

  Result<Lease> Acquire() {
    {
      MutexLock lock(mu_);
      if (!idle_.empty()) {
        std::unique_ptr<Db> db = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(db));
      }
    }
    KDN_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path_, Db::Mode::kReadWrite));
    KDN_RETURN_IF_ERROR(db->Exec("PRAGMA query_only=1; PRAGMA cache_size=-8192"));
    return Lease(this, std::move(db));
  }

 private:
  void Return(std::unique_ptr<Db> db) {
    MutexLock lock(mu_);
    idle_.push_back(std::move(db));
  }
  std::string path_;
  Mutex mu_;
  std::vector<std::unique_ptr<Db>> idle_ KDN_GUARDED_BY(mu_);
};

}  // namespace kdn::store

#endif  // KDN_STORE_DB_POOL_H_
