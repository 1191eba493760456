// Group commit: concurrent changes share data syncs and SQLite transactions.
//
// With synchronous=FULL every transaction costs a WAL fsync, and every put a data fdatasync
// before it: milliseconds each on busy disks. Changes pass two stages, each run by whichever
// waiting caller finds it free (the leader), for everything queued at that moment:
//   1. sync: fdatasync of the segments the queued changes wrote;
//   2. commit: one transaction running each change in its own savepoint, one COMMIT.
// The stages overlap (the data of the next group syncs while the previous group commits), and the
// order per change is unchanged: its data is durable before the transaction that publishes it.
#include <map>
#include <set>

#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::Stmt;

void Store::Impl::SetBackgroundError(const Status& s) {
  MutexLock lock(bg_mu);
  if (bg_error.ok()) {
    bg_error = s.WithContext("writes refused until the store is reopened");
    Log(options.info_log, LogLevel::kError, "store " + dir + ": " + bg_error.ToString());
  }
}

Status Store::Impl::BackgroundError() {
  MutexLock lock(bg_mu);
  return bg_error;
}

Status Store::Impl::Write(bool lock_opens, TxnBody body, std::vector<int> sync_fds) {
  KDN_RETURN_IF_ERROR(BackgroundError());
  WriteRequest req;
  req.body = std::move(body);
  req.lock_opens = lock_opens;
  req.sync_fds = std::move(sync_fds);
  if (!sync_full) req.sync_fds.clear();
  {
    UniqueLock lock(group_mu);
    (req.sync_fds.empty() ? commit_queue : sync_queue).push_back(&req);
    while (!req.done) {
      if (!sync_leader && !sync_queue.empty()) {
        sync_leader = true;
        std::vector<WriteRequest*> batch;
        batch.swap(sync_queue);
        lock.unlock();
        SyncBatch(batch);
        lock.lock();
        for (WriteRequest* r : batch) {
          if (r->done) continue;  // its data could not be synced: failed
          commit_queue.push_back(r);
        }
        sync_leader = false;
        group_cv.notify_all();
      } else if (!commit_leader && !commit_queue.empty()) {
        commit_leader = true;
        std::vector<WriteRequest*> batch;
        batch.swap(commit_queue);
        lock.unlock();
        CommitBatch(batch);
        lock.lock();
        for (WriteRequest* r : batch) r->done = true;
        commit_leader = false;
        group_cv.notify_all();
      } else {
        group_cv.wait(lock);
      }
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

void Store::Impl::SyncBatch(const std::vector<WriteRequest*>& batch) {
  std::set<int> fds;
  for (WriteRequest* r : batch) fds.insert(r->sync_fds.begin(), r->sync_fds.end());
  std::map<int, Status> failed;
  Result<store::EnginePool::Lease> engine = engines->Acquire();
  for (int fd : fds) {
    Status s = engine.ok() ? (*engine)->SyncData(fd) : engine.status();
    if (!s.ok()) {
      ++counters.errors;
      failed[fd] = s.WithContext("syncing segment data");
      // Unsynced writes of this segment may be lost without another error ever saying so.
      if (engine.ok()) SetBackgroundError(failed[fd]);
    }
  }
  if (failed.empty()) return;
  MutexLock lock(group_mu);
  for (WriteRequest* r : batch) {
    for (int fd : r->sync_fds) {
      auto it = failed.find(fd);
      if (it == failed.end()) continue;
      r->status = it->second;  // never published: its data may not be on disk
      r->done = true;
      break;
    }
  }
}

void Store::Impl::CommitBatch(const std::vector<WriteRequest*>& batch) {
  bool lock_opens = false;
  for (WriteRequest* r : batch) lock_opens = lock_opens || r->lock_opens;
  std::unique_lock wlock(write_mu);
  std::unique_lock olock(open_mu, std::defer_lock);
  if (lock_opens) olock.lock();
  Status begin = Exec(*writer, "BEGIN IMMEDIATE");
  Status undone;  // the first failure to undo a change
  bool flush_touches;
  {
    std::lock_guard lock(touch_mu);
    flush_touches = touched.size() >= 4096;
  }
  // LRU times ride along with some transaction now and then, so the map stays small. Failing to
  // write them loses nothing but recency.
  if (begin.ok() && flush_touches && Exec(*writer, "SAVEPOINT touches").ok()) {
    if (!FlushTouched(*writer).ok()) (void)Exec(*writer, "ROLLBACK TO touches");
    (void)Exec(*writer, "RELEASE touches");
  }
  for (WriteRequest* r : batch) {
    if (!begin.ok()) {
      r->status = begin;
      continue;
    }
    r->status = Exec(*writer, "SAVEPOINT change");
    if (r->status.ok()) r->status = r->body(*writer, r->fx);
    if (r->status.ok()) {
      r->status = Exec(*writer, "RELEASE change");
    } else {
      // Undo this change only; the others in the transaction stand, unless the undo failed:
      // then nothing of this transaction may commit.
      Status undo = Exec(*writer, "ROLLBACK TO change");
      if (undo.ok()) undo = Exec(*writer, "RELEASE change");
      if (!undo.ok() && undone.ok()) undone = undo.WithContext("undoing a failed change");
      r->fx = store::TxnEffects();
    }
  }
  if (!begin.ok()) return;
  Status commit = undone.ok() ? Exec(*writer, "COMMIT") : undone;
  if (commit.ok()) return;
  Status rollback = Exec(*writer, "ROLLBACK");
  // A transaction that can be neither committed nor rolled back leaves the writer connection in
  // an unknown state; an I/O error at COMMIT (its WAL sync) leaves durability in doubt.
  if (!rollback.ok()) SetBackgroundError(rollback.WithContext("rolling back a transaction"));
  if (commit.code() == Code::kIOError || commit.code() == Code::kCorruption) {
    SetBackgroundError(commit.WithContext("committing a transaction"));
  }
  for (WriteRequest* r : batch) {
    if (r->status.ok()) {
      r->status = commit;
      r->fx = store::TxnEffects();
    }
  }
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
