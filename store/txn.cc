// The transaction layer (store/txn.h): group commit, in which concurrent changes share data syncs
// and SQLite transactions; and the log sync that makes them durable against power loss.
//
// Every put costs a data fdatasync before its transaction: milliseconds on busy disks. Changes
// pass two stages, each run by whichever waiting caller finds it free (the leader), for
// everything queued at that moment:
//   1. sync: fdatasync of the chunk files the queued changes wrote;
//   2. commit: the files renamed into place (their directories synced once for the group), one
//      transaction running each change in its own savepoint, one COMMIT.
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
// background thread, and when the store closes. Until then one thing waits for it:
//   - the files of chunks a transaction deleted (CommitBatch): if they were unlinked and a power
//     loss then undid the deletion, the chunk's rows would name a file that is gone. They are
//     unlinked once the transaction is durable (SyncLog), unless a later commit stored the same
//     chunk again;
//   - nothing else: a put's data is synced before its transaction is even written (stage 1), so
//     any prefix of the log that a power loss keeps names only durable bytes.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "iouring/aligned_buffer.h"

#include "store/schema.h"
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
  std::unique_lock olock(opens.mu(), std::defer_lock);
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
  const bool flush_touches = touches.size() >= 4096;
  // LRU times ride along with some transaction now and then, so the map stays small. Failing to
  // write them loses nothing but recency.
  if (begin.ok() && flush_touches && Exec(*writer, "SAVEPOINT touches").ok()) {
    if (!FlushTouched(*writer).ok()) (void)Exec(*writer, "ROLLBACK TO touches");
    (void)Exec(*writer, "RELEASE touches");
  }
  // A change alone in its transaction needs no savepoint: should it fail, the whole transaction
  // is rolled back (two statements less on each create, commit or unlink of a lone client).
  const bool alone = batch.size() == 1 && !flush_touches;
  bool rolled_back = false;
  for (WriteRequest* r : batch) {
    if (!r->status.ok()) continue;  // its chunk file could not be installed
    if (!begin.ok()) {
      r->status = begin;
      continue;
    }
    if (alone) {
      r->status = r->body(*writer, r->fx);
      if (!r->status.ok()) {
        r->fx = store::TxnEffects();
        Status rollback = Exec(*writer, "ROLLBACK");
        if (!rollback.ok()) SetBackgroundError(rollback.WithContext("rolling back a transaction"));
        rolled_back = true;
      }
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
  Status commit = rolled_back  ? Status::OK()
                  : !begin.ok() ? begin
                  : undone.ok() ? Exec(*writer, "COMMIT")
                                : undone;
  if (begin.ok() && commit.ok() && !rolled_back) {
    // Numbered after COMMIT has written the frames: a Sync that reads commit_seq covers them.
    const uint64_t seq = commit_seq.load() + 1;
    for (WriteRequest* r : batch) r->fx.commit_seq = seq;
    commit_seq.store(seq);
  }
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
  std::vector<ChunkId> doomed;
  for (const ChunkId& id : deleted) {
    if (published.count(id) == 0) doomed.push_back(id);
  }
  if (!doomed.empty()) {
    // A deleted chunk's file goes once the deletion is durable (see the top of this file).
    bool later = false;
    if (sync_full) {
      std::lock_guard lock(durable_mu);
      if (commit_seq.load() > durable_seq.load()) {
        later = true;
        pending_removals.push_back(PendingRemoval{commit_seq.load(), std::move(doomed)});
      }
    }
    if (!later) {
      for (const ChunkId& id : doomed) files.Remove(id);
    }
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
  space.Apply(fx);
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
  std::vector<ChunkId> ready;  // chunk files to remove once durable_mu is released
  Status result = [&]() -> Status {
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
    // The files of chunks that the now durable transactions deleted can go.
    auto keep = std::partition(pending_removals.begin(), pending_removals.end(),
                               [&](const PendingRemoval& r) { return r.seq > target; });
    for (auto it = keep; it != pending_removals.end(); ++it) {
      ready.insert(ready.end(), it->chunks.begin(), it->chunks.end());
    }
    pending_removals.erase(keep, pending_removals.end());
    durable_cv.notify_all();
  }
  return Status::OK();
  }();
  if (!ready.empty()) {
    // Under write_mu (after durable_mu, never inside it), like every change of the chunk files:
    // a chunk stored again since its deletion keeps its file.
    std::lock_guard wlock(write_mu);
    for (const ChunkId& id : ready) {
      Result<bool> stored = [&]() -> Result<bool> {
        KDN_ASSIGN_OR_RETURN(Stmt q, writer->Prepare("SELECT 1 FROM chunks WHERE id = ?"));
        q.BindId(1, id);
        return q.Step();
      }();
      // When the database cannot say, the file stays: the next open removes it if it is stray.
      if (stored.ok() && !*stored) files.Remove(id);
    }
  }
  return result;
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
  // Asked once per kCheckpointFrames new frames: a passive checkpoint leaves the WAL as long as
  // it was (SQLite starts it over at a later write, once no reader still uses it), and asking at
  // every commit past the mark ran a checkpoint, with its two disk flushes, every few creates.
  auto on_commit = +[](void* arg, sqlite3*, const char*, int frames) -> int {
    Impl* impl = static_cast<Impl*>(arg);
    if (frames < impl->frames_at_checkpoint_request) impl->frames_at_checkpoint_request = 0;
    if (frames - impl->frames_at_checkpoint_request >= kCheckpointFrames) {
      impl->frames_at_checkpoint_request = frames;
      impl->WantCheckpoint();
    }
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
