// Group commit: concurrent changes share data syncs and SQLite transactions.
//
// With synchronous=FULL every transaction costs a WAL fsync, and every put a data fdatasync
// before it: milliseconds each on busy disks. Changes pass two stages, each run by whichever
// waiting caller finds it free (the leader), for everything queued at that moment:
//   1. sync: fdatasync of the chunk files the queued changes wrote;
//   2. commit: the files renamed into place (their directories synced once for the group), one
//      transaction running each change in its own savepoint, one COMMIT, then the files of the
//      chunks the transaction deleted unlinked.
// The stages overlap (the data of the next group syncs while the previous group commits), and the
// order per change is unchanged: its data is durable before the transaction that publishes it.
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <utility>

#include "iouring/aligned_buffer.h"

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

Status Store::Impl::Write(bool lock_opens, TxnBody body, store::PreparedChunk* chunk) {
  KDN_RETURN_IF_ERROR(BackgroundError());
  WriteRequest req;
  req.body = std::move(body);
  req.lock_opens = lock_opens;
  if (chunk != nullptr && chunk->written && !chunk->installed) req.chunk = chunk;
  {
    UniqueLock lock(group_mu);
    (req.chunk != nullptr && sync_full ? sync_queue : commit_queue).push_back(&req);
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
  // One file per chunk: each needs its own fdatasync (a journal commit when the file is new), so
  // the group's syncs run side by side rather than one after another.
  std::vector<Status> results(batch.size());
  auto sync_one = [&](size_t i) {
    const int fd = batch[i]->chunk->fd.get();
    Result<store::EnginePool::Lease> engine = engines->Acquire();
    Status s = engine.ok() ? (*engine)->SyncData(fd) : engine.status();
    // WriteChunk set the size after its writes completed. Writes that a device (or the fault
    // injector's volatile cache) applies only at the sync may land past it (the last block's
    // padding): set it again then, and sync that too.
    struct stat st;
    if (s.ok() && ::fstat(fd, &st) == 0 &&
        static_cast<uint64_t>(st.st_size) != batch[i]->chunk->size) {
      s = ::ftruncate(fd, static_cast<off_t>(batch[i]->chunk->size)) == 0
              ? (*engine)->SyncData(fd)
              : Status::FromErrno("setting the size of " + batch[i]->chunk->temp_path, errno);
    }
    // Unsynced writes of this chunk file may be lost without another error ever saying so.
    if (!s.ok() && engine.ok()) SetBackgroundError(s.WithContext("syncing chunk data"));
    results[i] = std::move(s);
  };
  if (batch.size() == 1) {
    sync_one(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) threads.emplace_back(sync_one, i);
    for (std::thread& t : threads) t.join();
  }
  MutexLock lock(group_mu);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (results[i].ok()) continue;
    ++counters.errors;
    batch[i]->status = results[i].WithContext("syncing chunk data");  // never published
    batch[i]->done = true;
  }
}

void Store::Impl::CommitBatch(const std::vector<WriteRequest*>& batch) {
  bool lock_opens = false;
  for (WriteRequest* r : batch) lock_opens = lock_opens || r->lock_opens;
  std::unique_lock wlock(write_mu);
  std::unique_lock olock(open_mu, std::defer_lock);
  if (lock_opens) olock.lock();
  // The new chunk files into place, durably, before the transaction that names them.
  std::vector<std::string> dirs;
  for (WriteRequest* r : batch) {
    if (r->chunk == nullptr) continue;
    r->status = files.Install(r->chunk->temp_path, r->chunk->id, &dirs);
    if (r->status.ok()) {
      r->chunk->installed = true;
      r->chunk->temp_path.clear();
    } else {
      ++counters.errors;
    }
  }
  if (Status s = files.SyncDirs(dirs); !s.ok()) {
    ++counters.errors;
    for (WriteRequest* r : batch) {
      if (r->chunk != nullptr && r->status.ok()) r->status = s.WithContext("installing a chunk");
    }
  }
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
    if (!r->status.ok()) continue;  // its chunk file could not be installed
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
  Status commit = !begin.ok() ? begin : undone.ok() ? Exec(*writer, "COMMIT") : undone;
  if (begin.ok() && !commit.ok()) {
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
  // Still under write_mu: the files now follow the committed rows. A chunk deleted and published
  // again in this same transaction keeps its file; an installed file that no committed row names
  // (its change failed) goes, unless its chunk is stored (then it is that chunk's file: same
  // bytes).
  std::set<ChunkId> published, deleted;
  for (WriteRequest* r : batch) {
    if (!r->status.ok()) continue;
    for (const store::PreparedChunk* p : r->fx.published) published.insert(p->id);
    for (const ChunkId& id : r->fx.deleted_chunks) deleted.insert(id);
  }
  for (const ChunkId& id : deleted) {
    if (published.count(id) == 0) files.Remove(id);
  }
  for (WriteRequest* r : batch) {
    if (r->status.ok() || r->chunk == nullptr || !r->chunk->installed) continue;
    if (published.count(r->chunk->id) != 0) continue;
    Result<bool> stored = [&]() -> Result<bool> {
      KDN_ASSIGN_OR_RETURN(Stmt q, writer->Prepare("SELECT 1 FROM chunks WHERE id = ?"));
      q.BindId(1, r->chunk->id);
      return q.Step();
    }();
    if (stored.ok() && !*stored) files.Remove(r->chunk->id);
    r->chunk->installed = false;
    r->chunk->written = false;
  }
}

void Store::Impl::ApplyEffects(store::TxnEffects& fx) {
  for (const ChunkId& id : fx.deleted_chunks) layouts.Erase(id);
  {
    std::lock_guard lock(space_mu);
    for (store::PreparedChunk* p : fx.published) {
      p->published = true;
      reserved_bytes -= p->reserved;
      p->reserved = 0;
      used_bytes += io::AlignUp(p->size, io::kDirectAlign);
    }
    used_bytes -= std::min(used_bytes, fx.freed_bytes);
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
