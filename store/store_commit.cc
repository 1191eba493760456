// Group commit: concurrent changes share data syncs and SQLite transactions; and the log sync
// that makes them durable against power loss.
//
// Every put costs a data fdatasync before its transaction: milliseconds on busy disks. Changes
// pass two stages, each run by whichever waiting caller finds it free (the leader), for
// everything queued at that moment:
//   1. sync: fdatasync of the segments the queued changes wrote;
//   2. commit: one transaction running each change in its own savepoint, one COMMIT.
// The stages overlap (the data of the next group syncs while the previous group commits), and the
// order per change is unchanged: its data is durable before the transaction that publishes it.
//
// The log. SQLite runs with synchronous=NORMAL: COMMIT writes the transaction's WAL frames to
// the OS (so it survives the death of this process) but does not fsync them; SQLite syncs only
// around checkpoints. With synchronous=FULL every transaction paid an fsync of the WAL, and a
// single creating or removing process (which cannot be grouped: it waits for each reply) paid a
// disk flush per file: 20,000 small files took minutes where ext4 takes a second, because ext4
// does not flush per create either (it commits its journal every 5 s, or at fsync). Here the
// log is synced by SyncLog: for Store::Sync (kdnfs's fsync), every log_sync_interval_ms from a
// background thread, and when the store closes. Until then two things wait for it:
//   - space released by a transaction (ApplyEffects): if it were reused and a power loss then
//     undid the release, the old chunk's rows would point at someone else's bytes;
//   - nothing else: a put's data is synced before its transaction is even written (stage 1), so
//     any prefix of the log that a power loss keeps names only durable bytes.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <set>

#include "store/schema.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::Stmt;

Status Store::Impl::Write(bool lock_opens, TxnBody body, std::vector<int> sync_fds) {
  WriteRequest req;
  req.body = std::move(body);
  req.lock_opens = lock_opens;
  req.sync_fds = std::move(sync_fds);
  if (!sync_full) req.sync_fds.clear();
  {
    std::unique_lock lock(group_mu);
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
  if (!req.status.ok()) return req.status;
  Status synced;
  if (sync_full && options.log_sync_interval_ms == 0) synced = SyncLog(req.fx.commit_seq);
  ApplyEffects(req.fx);  // committed whether or not the sync worked
  return synced;
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
    }
  }
  if (failed.empty()) return;
  std::lock_guard lock(group_mu);
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
      // Undo this change only; the others in the transaction stand.
      (void)Exec(*writer, "ROLLBACK TO change");
      (void)Exec(*writer, "RELEASE change");
      r->fx = store::TxnEffects();
    }
  }
  if (!begin.ok()) return;
  Status commit = Exec(*writer, "COMMIT");
  if (commit.ok()) {
    // Numbered after COMMIT has written the frames: a Sync that reads commit_seq covers them.
    const uint64_t seq = commit_seq.load() + 1;
    for (WriteRequest* r : batch) r->fx.commit_seq = seq;
    commit_seq.store(seq);
    return;
  }
  (void)Exec(*writer, "ROLLBACK");
  for (WriteRequest* r : batch) {
    if (r->status.ok()) {
      r->status = commit;
      r->fx = store::TxnEffects();
    }
  }
}

void Store::Impl::RetireNow(std::vector<store::PhysExtent> extents) {
  // After the cache no longer has them: reads that start from now on cannot reach this space.
  uint64_t tag = epochs.Advance();
  std::lock_guard lock(alloc_mu);
  alloc.Retire(std::move(extents), tag);
  alloc.Reclaim(epochs.OldestActive());
}

void Store::Impl::ApplyEffects(store::TxnEffects& fx) {
  for (const ChunkId& id : fx.deleted_chunks) layouts.Erase(id);
  for (store::PreparedChunk* p : fx.published) p->published = true;
  if (!fx.retired.empty()) {
    bool later = false;
    if (sync_full) {
      std::lock_guard lock(durable_mu);
      if (fx.commit_seq > durable_seq.load()) {
        later = true;
        uint64_t bytes = 0;
        for (const store::PhysExtent& e : fx.retired) bytes += e.len;
        unsynced_release_bytes += bytes;
        unsynced_releases.push_back(UnsyncedRelease{fx.commit_seq, std::move(fx.retired)});
      }
    }
    if (!later) RetireNow(std::move(fx.retired));
  }
  chunk_count += fx.chunk_delta;
  inode_count += fx.inode_delta;
  if (fx.evicted_chunks > 0) {
    counters.evictions += fx.evicted_chunks;
    counters.evicted_bytes += fx.evicted_bytes;
    if (options.on_evict && !fx.evicted.empty()) options.on_evict(fx.evicted);
  }
}

// ---- the log
// ---------------------------------------------------------------------------------------------

Status Store::Impl::SyncWalFile() {
  const std::string path = dir + "/meta.db-wal";
  struct stat now;
  if (::stat(path.c_str(), &now) != 0) {
    // No log (it exists from the first commit on, and is kept): nothing in it to sync.
    if (errno == ENOENT) return Status::OK();
    return Status::FromErrno("stat of " + path, errno);
  }
  bool fresh = false;
  struct stat held;
  if (!wal_fd.valid() || ::fstat(wal_fd.get(), &held) != 0 || held.st_ino != now.st_ino ||
      held.st_dev != now.st_dev) {
    // Our own descriptor: fdatasync flushes the file's pages whichever descriptor wrote them, and
    // SQLite's is not ours to use from another thread.
    wal_fd = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (!wal_fd.valid()) return Status::FromErrno("opening " + path, errno);
    fresh = true;
  }
  if (::fdatasync(wal_fd.get()) != 0) return Status::FromErrno("syncing " + path, errno);
  if (fresh) {
    // The log's name, too, must survive a power loss.
    UniqueFd d = OpenFd(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!d.valid() || ::fsync(d.get()) != 0) {
      int err = errno;
      wal_fd.reset();  // synced again, name included, next time
      return Status::FromErrno("syncing " + dir, err);
    }
  }
  return Status::OK();
}

Status Store::Impl::SyncLog(uint64_t upto) {
  if (!sync_full) return Status::OK();
  upto = std::min(upto, commit_seq.load());
  std::unique_lock lock(durable_mu);
  while (durable_seq.load() < upto) {
    if (log_sync_running) {
      durable_cv.wait(lock);  // the running sync may cover `upto`; if not, the loop syncs again
      continue;
    }
    log_sync_running = true;
    const uint64_t target = commit_seq.load();  // every frame up to it is written
    lock.unlock();
    Status s = SyncWalFile();
    lock.lock();
    log_sync_running = false;
    if (!s.ok()) {
      ++counters.errors;
      durable_cv.notify_all();
      return s.WithContext("making the metadata log durable");
    }
    ++log_syncs;
    if (target > durable_seq.load()) durable_seq.store(target);
    // What the now durable transactions released can be reused.
    std::vector<store::PhysExtent> ready;
    auto keep = std::partition(unsynced_releases.begin(), unsynced_releases.end(),
                               [&](const UnsyncedRelease& r) { return r.seq > target; });
    for (auto it = keep; it != unsynced_releases.end(); ++it) {
      for (const store::PhysExtent& e : it->extents) {
        unsynced_release_bytes -= e.len;
        ready.push_back(e);
      }
    }
    unsynced_releases.erase(keep, unsynced_releases.end());
    if (!ready.empty()) RetireNow(std::move(ready));
    durable_cv.notify_all();
  }
  return Status::OK();
}

namespace {

// WAL frames (pages) after which the background thread checkpoints: SQLite's own default.
constexpr int kCheckpointFrames = 1000;

}  // namespace

void Store::Impl::WantCheckpoint() {
  {
    std::lock_guard lock(syncer_mu);
    if (checkpoint_wanted) return;
    checkpoint_wanted = true;
  }
  syncer_cv.notify_all();
}

void Store::Impl::StartLogSyncer() {
  if (!sync_full || options.log_sync_interval_ms == 0) return;
  // Checkpoints move to the background thread too. SQLite runs them in the committing thread
  // (every 1000 pages, with an fsync of the WAL and one of meta.db), which put two disk flushes
  // on the reply of every few hundredth create; with this hook installed it no longer does.
  // Called by SQLite on the writer's thread after each COMMIT, with the frames now in the WAL.
  auto on_commit = +[](void* arg, sqlite3*, const char*, int frames) -> int {
    if (frames >= kCheckpointFrames) static_cast<Impl*>(arg)->WantCheckpoint();
    return SQLITE_OK;
  };
  sqlite3_wal_hook(writer->handle(), on_commit, this);
  log_syncer = std::thread([this] { LogSyncerLoop(); });
}

void Store::Impl::StopLogSyncer() {
  {
    std::lock_guard lock(syncer_mu);
    syncer_stop = true;
  }
  syncer_cv.notify_all();
  if (log_syncer.joinable()) log_syncer.join();
}

void Store::Impl::LogSyncerLoop() {
  const auto period = std::chrono::milliseconds(options.log_sync_interval_ms);
  std::unique_ptr<Db> checkpointer;  // its own connection: it runs beside the writer
  auto last_sync = std::chrono::steady_clock::now();
  std::unique_lock lock(syncer_mu);
  while (!syncer_stop) {
    syncer_cv.wait_until(lock, last_sync + period,
                         [this] { return syncer_stop || checkpoint_wanted; });
    if (syncer_stop) break;
    const bool checkpoint = checkpoint_wanted;
    checkpoint_wanted = false;
    lock.unlock();
    if (std::chrono::steady_clock::now() >= last_sync + period) {
      last_sync = std::chrono::steady_clock::now();
      if (durable_seq.load() < commit_seq.load()) {
        (void)SyncLog(commit_seq.load());  // counted as an error; the next period tries again
      }
    }
    if (checkpoint) {
      // PASSIVE: copies what no reader still needs, never waits for anyone. It syncs the WAL
      // before and meta.db after (synchronous=NORMAL), so it never loses a durable change.
      if (!checkpointer) {
        auto db = Db::Open(dir + "/meta.db", Db::Mode::kReadWrite);
        if (db.ok() && store::ConfigureConnection(**db, sync_full).ok()) {
          checkpointer = std::move(*db);
        }
      }
      if (!checkpointer || !checkpointer->Exec("PRAGMA wal_checkpoint(PASSIVE)").ok()) {
        ++counters.errors;
      }
    }
    lock.lock();
  }
}

Status Store::Sync() {
  return impl_->SyncLog(impl_->commit_seq.load());
}

}  // namespace kdn
