// Group commit: concurrent changes share one data sync and one SQLite transaction.
//
// With synchronous=FULL every transaction costs a WAL fsync, and every put a data fdatasync
// before it: milliseconds each on real disks. Callers queue their change; whoever finds no leader
// becomes it, takes everything queued, syncs the segments those changes wrote, runs each change
// in its own savepoint inside one transaction and commits once. The commit order per change is
// unchanged (its data is durable before the transaction that publishes it), only shared.
#include <set>

#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::Stmt;

Status Store::Impl::Write(bool lock_opens, TxnBody body, std::vector<int> sync_fds) {
  WriteRequest req;
  req.body = std::move(body);
  req.lock_opens = lock_opens;
  req.sync_fds = std::move(sync_fds);
  {
    std::unique_lock lock(group_mu);
    group_queue.push_back(&req);
    while (!req.done) {
      if (group_leader) {
        group_cv.wait(lock);
        continue;
      }
      group_leader = true;
      std::vector<WriteRequest*> batch;
      batch.swap(group_queue);
      lock.unlock();
      RunBatch(batch);
      lock.lock();
      group_leader = false;
      group_cv.notify_all();
    }
  }
  if (req.status.ok()) ApplyEffects(req.fx);
  return req.status;
}

namespace {

Status Exec(Db& db, const char* sql) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare(sql));
  return q.Run();
}

}  // namespace

void Store::Impl::RunBatch(const std::vector<WriteRequest*>& batch) {
  // 1. The data the changes publish reaches the disk first.
  std::set<int> fds;
  for (WriteRequest* r : batch) fds.insert(r->sync_fds.begin(), r->sync_fds.end());
  std::set<int> failed_fds;
  Status sync_error;
  if (!fds.empty() && sync_full) {
    Result<store::EnginePool::Lease> engine = engines->Acquire();
    for (int fd : fds) {
      Status s = engine.ok() ? (*engine)->SyncData(fd) : engine.status();
      if (!s.ok()) {
        ++counters.errors;
        failed_fds.insert(fd);
        sync_error = s.WithContext("syncing segment data");
      }
    }
  }
  // 2. One transaction, a savepoint per change.
  bool lock_opens = false;
  for (WriteRequest* r : batch) lock_opens = lock_opens || r->lock_opens;
  std::unique_lock wlock(write_mu);
  std::unique_lock olock(open_mu, std::defer_lock);
  if (lock_opens) olock.lock();
  Status begin = Exec(*writer, "BEGIN IMMEDIATE");
  size_t applied = 0;
  for (WriteRequest* r : batch) {
    if (!begin.ok()) {
      r->status = begin;
      continue;
    }
    bool synced = true;
    for (int fd : r->sync_fds) synced = synced && failed_fds.count(fd) == 0;
    if (!synced) {
      r->status = sync_error;
      continue;
    }
    r->status = Exec(*writer, "SAVEPOINT change");
    if (r->status.ok()) r->status = r->body(*writer, r->fx);
    if (r->status.ok()) {
      r->status = Exec(*writer, "RELEASE change");
    } else {
      // Undo this change only; the others in the transaction stand.
      (void)Exec(*writer, "ROLLBACK TO change");
      (void)Exec(*writer, "RELEASE change");
      r->fx = store::TxnEffects();
    }
    if (r->status.ok()) ++applied;
  }
  if (begin.ok()) {
    Status commit = Exec(*writer, "COMMIT");
    if (!commit.ok()) {
      (void)Exec(*writer, "ROLLBACK");
      for (WriteRequest* r : batch) {
        if (r->status.ok()) {
          r->status = commit;
          r->fx = store::TxnEffects();
        }
      }
    }
  }
  if (olock.owns_lock()) olock.unlock();
  wlock.unlock();
  std::lock_guard lock(group_mu);
  for (WriteRequest* r : batch) r->done = true;
}

void Store::Impl::ApplyEffects(store::TxnEffects& fx) {
  for (const ChunkId& id : fx.deleted_chunks) layouts.Erase(id);
  for (store::PreparedChunk* p : fx.published) p->published = true;
  if (!fx.retired.empty()) {
    // After the cache no longer has them: reads that start from now on cannot reach this space.
    uint64_t tag = epochs.Advance();
    std::lock_guard lock(alloc_mu);
    alloc.Retire(std::move(fx.retired), tag);
    alloc.Reclaim(epochs.OldestActive());
  }
  chunk_count += fx.chunk_delta;
  inode_count += fx.inode_delta;
  if (fx.evicted_chunks > 0) {
    counters.evictions += fx.evicted_chunks;
    counters.evicted_bytes += fx.evicted_bytes;
    if (options.on_evict && !fx.evicted.empty()) options.on_evict(fx.evicted);
  }
}

}  // namespace kdn
