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
#include <string>
#include <thread>
#include <utility>

#include "store/schema.h"
#include "store/txn.h"

namespace kdn::store {

TxnLog::~TxnLog() {
  StopLogSyncer();
}

Status TxnLog::Open(const Options& options, bool create) {
  options_ = options;
  const Db::Mode mode = create ? Db::Mode::kReadWriteCreate : Db::Mode::kReadWrite;
  KDN_ASSIGN_OR_RETURN(writer_, Db::Open(options_.dir + "/meta.db", mode));
  return ConfigureConnection(*writer_, options_.sync_full);
}

void TxnLog::SetBackgroundError(const Status& s) {
  MutexLock lock(bg_mu_);
  if (bg_error_.ok()) {
    bg_error_ = s.WithContext("writes refused until the store is reopened");
    Log(options_.info_log, LogLevel::kError, "store " + options_.dir + ": " + bg_error_.ToString());
  }
}

Status TxnLog::BackgroundError() {
  MutexLock lock(bg_mu_);
  return bg_error_;
}

Status TxnLog::Write(bool lock_opens, TxnBody body, PreparedChunk* chunk) {
  KDN_RETURN_IF_ERROR(BackgroundError());
  WriteRequest req;
  req.body = std::move(body);
  req.lock_opens = lock_opens;
  req.chunk = chunk;
  {
    UniqueLock lock(group_mu_);
    (req.chunk != nullptr && options_.sync_full ? sync_queue_ : commit_queue_).push_back(&req);
    while (!req.done) {
      if (!sync_leader_ && !sync_queue_.empty()) {
        sync_leader_ = true;
        std::vector<WriteRequest*> batch;
        batch.swap(sync_queue_);
        lock.unlock();
        SyncBatch(batch);
        lock.lock();
        for (WriteRequest* r : batch) {
          if (r->done) continue;  // its data could not be synced: failed
          commit_queue_.push_back(r);
        }
        sync_leader_ = false;
        group_cv_.notify_all();
      } else if (!commit_leader_ && !commit_queue_.empty()) {
        commit_leader_ = true;
        std::vector<WriteRequest*> batch;
        batch.swap(commit_queue_);
        lock.unlock();
        CommitBatch(batch);
        lock.lock();
        for (WriteRequest* r : batch) r->done = true;
        commit_leader_ = false;
        group_cv_.notify_all();
      } else {
        group_cv_.wait(lock);
      }
    }
  }
  if (!req.status.ok()) return req.status;
  Status synced;
  if (options_.sync_full && options_.log_sync_interval_ms == 0) synced = SyncLog(req.fx.commit_seq);
  hooks_.apply(req.fx);  // committed whether or not the sync worked
  return synced;
}

namespace {

Status Exec(Db& db, const char* sql) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare(sql));
  return q.Run();
}

}  // namespace

void TxnLog::SyncBatch(const std::vector<WriteRequest*>& batch) {
  // One file per chunk: each needs its own fdatasync (a journal commit when the file is new), so
  // the group's syncs run side by side rather than one after another.
  std::vector<Status> results(batch.size());
  auto sync_one = [&](size_t i) { results[i] = hooks_.sync_data(*batch[i]->chunk); };
  if (batch.size() == 1) {
    sync_one(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) threads.emplace_back(sync_one, i);
    for (std::thread& t : threads) t.join();
  }
  MutexLock lock(group_mu_);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (results[i].ok()) continue;
    CountError();
    batch[i]->status = results[i].WithContext("syncing chunk data");  // never published
    batch[i]->done = true;
  }
}

void TxnLog::CommitBatch(const std::vector<WriteRequest*>& batch) {
  bool lock_opens = false;
  for (WriteRequest* r : batch) lock_opens = lock_opens || r->lock_opens;
  std::unique_lock wlock(mu_);
  std::unique_lock<std::mutex> olock;
  if (lock_opens && options_.opens_mu != nullptr) olock = std::unique_lock(*options_.opens_mu);
  // The new chunk files into place, durably, before the transaction that names them.
  {
    std::vector<WriteRequest*> with_chunk;
    std::vector<PreparedChunk*> chunks;
    for (WriteRequest* r : batch) {
      if (r->chunk == nullptr) continue;
      with_chunk.push_back(r);
      chunks.push_back(r->chunk);
    }
    if (!chunks.empty()) {
      std::vector<Status> installed(chunks.size());
      hooks_.install(chunks, &installed);
      for (size_t i = 0; i < chunks.size(); ++i) with_chunk[i]->status = std::move(installed[i]);
    }
  }
  Status begin = Exec(*writer_, "BEGIN IMMEDIATE");
  Status undone;  // the first failure to undo a change
  const bool ride_along = hooks_.ride_along_due();
  // Such work rides along with some transaction now and then; failing it loses nothing.
  if (begin.ok() && ride_along && Exec(*writer_, "SAVEPOINT ride_along").ok()) {
    if (!hooks_.ride_along(*writer_).ok()) (void)Exec(*writer_, "ROLLBACK TO ride_along");
    (void)Exec(*writer_, "RELEASE ride_along");
  }
  // A change alone in its transaction needs no savepoint: should it fail, the whole transaction
  // is rolled back (two statements less on each create, commit or unlink of a lone client).
  const bool alone = batch.size() == 1 && !ride_along;
  bool rolled_back = false;
  for (WriteRequest* r : batch) {
    if (!r->status.ok()) continue;  // its chunk file could not be installed
    if (!begin.ok()) {
      r->status = begin;
      continue;
    }
    if (alone) {
      r->status = r->body(*writer_, r->fx);
      if (!r->status.ok()) {
        r->fx = TxnEffects();
        Status rollback = Exec(*writer_, "ROLLBACK");
        if (!rollback.ok()) SetBackgroundError(rollback.WithContext("rolling back a transaction"));
        rolled_back = true;
      }
      continue;
    }
    r->status = Exec(*writer_, "SAVEPOINT change");
    if (r->status.ok()) r->status = r->body(*writer_, r->fx);
    if (r->status.ok()) {
      r->status = Exec(*writer_, "RELEASE change");
    } else {
      // Undo this change only; the others in the transaction stand, unless the undo failed:
      // then nothing of this transaction may commit.
      Status undo = Exec(*writer_, "ROLLBACK TO change");
      if (undo.ok()) undo = Exec(*writer_, "RELEASE change");
      if (!undo.ok() && undone.ok()) undone = undo.WithContext("undoing a failed change");
      r->fx = TxnEffects();
    }
  }
  Status commit = rolled_back  ? Status::OK()
                  : !begin.ok() ? begin
                  : undone.ok() ? Exec(*writer_, "COMMIT")
                                : undone;
  if (begin.ok() && commit.ok() && !rolled_back) {
    // Numbered after COMMIT has written the frames: a Sync that reads commit_seq covers them.
    const uint64_t seq = commit_seq_.load() + 1;
    for (WriteRequest* r : batch) r->fx.commit_seq = seq;
    commit_seq_.store(seq);
  }
  if (begin.ok() && !commit.ok()) {
    Status rollback = Exec(*writer_, "ROLLBACK");
    // A transaction that can be neither committed nor rolled back leaves the writer connection in
    // an unknown state; an I/O error at COMMIT (its WAL sync) leaves durability in doubt.
    if (!rollback.ok()) SetBackgroundError(rollback.WithContext("rolling back a transaction"));
    if (commit.code() == Code::kIOError || commit.code() == Code::kCorruption) {
      SetBackgroundError(commit.WithContext("committing a transaction"));
    }
    for (WriteRequest* r : batch) {
      if (r->status.ok()) {
        r->status = commit;
        r->fx = TxnEffects();
      }
    }
  }
  // Still under mu_: the chunk store makes the files follow the committed rows.
  std::vector<const TxnEffects*> committed;
  std::vector<PreparedChunk*> failed;
  for (WriteRequest* r : batch) {
    if (r->status.ok()) {
      committed.push_back(&r->fx);
    } else if (r->chunk != nullptr) {
      failed.push_back(r->chunk);
    }
  }
  std::vector<ChunkId> doomed = hooks_.settle(*writer_, committed, failed);
  if (!doomed.empty()) {
    // A deleted chunk's file goes once the deletion is durable (see the top of this file).
    bool later = false;
    if (options_.sync_full) {
      std::lock_guard lock(durable_mu_);
      if (commit_seq_.load() > durable_seq_.load()) {
        later = true;
        pending_removals_.push_back(PendingRemoval{commit_seq_.load(), std::move(doomed)});
      }
    }
    if (!later) hooks_.remove_files(doomed, nullptr);
  }
}

// ---- the log
// ---------------------------------------------------------------------------------------------

Status TxnLog::SyncWalFile() {
  const std::string& dir = options_.dir;
  const std::string path = dir + "/meta.db-wal";
  struct stat now;
  if (::stat(path.c_str(), &now) != 0) {
    // No log (it exists from the first commit on, and is kept): nothing in it to sync.
    if (errno == ENOENT) return Status::OK();
    return Status::FromErrno("stat of " + path, errno);
  }
  bool fresh = false;
  struct stat held;
  if (!wal_fd_.valid() || ::fstat(wal_fd_.get(), &held) != 0 || held.st_ino != now.st_ino ||
      held.st_dev != now.st_dev) {
    // Our own descriptor: fdatasync flushes the file's pages whichever descriptor wrote them, and
    // SQLite's is not ours to use from another thread.
    wal_fd_ = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (!wal_fd_.valid()) return Status::FromErrno("opening " + path, errno);
    fresh = true;
  }
  if (::fdatasync(wal_fd_.get()) != 0) return Status::FromErrno("syncing " + path, errno);
  if (fresh) {
    // The log's name, too, must survive a power loss.
    UniqueFd d = OpenFd(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!d.valid() || ::fsync(d.get()) != 0) {
      int err = errno;
      wal_fd_.reset();  // synced again, name included, next time
      return Status::FromErrno("syncing " + dir, err);
    }
  }
  return Status::OK();
}

Status TxnLog::SyncLog(uint64_t upto) {
  if (!options_.sync_full) return Status::OK();
  upto = std::min(upto, commit_seq_.load());
  std::vector<ChunkId> ready;  // chunk files to remove once durable_mu_ is released
  Status result = [&]() -> Status {
  std::unique_lock lock(durable_mu_);
  while (durable_seq_.load() < upto) {
    if (log_sync_running_) {
      durable_cv_.wait(lock);  // the running sync may cover `upto`; if not, the loop syncs again
      continue;
    }
    log_sync_running_ = true;
    const uint64_t target = commit_seq_.load();  // every frame up to it is written
    lock.unlock();
    Status s = SyncWalFile();
    lock.lock();
    log_sync_running_ = false;
    if (!s.ok()) {
      CountError();
      durable_cv_.notify_all();
      return s.WithContext("making the metadata log durable");
    }
    ++log_syncs_;
    if (target > durable_seq_.load()) durable_seq_.store(target);
    // The files of chunks that the now durable transactions deleted can go.
    auto keep = std::partition(pending_removals_.begin(), pending_removals_.end(),
                               [&](const PendingRemoval& r) { return r.seq > target; });
    for (auto it = keep; it != pending_removals_.end(); ++it) {
      ready.insert(ready.end(), it->chunks.begin(), it->chunks.end());
    }
    pending_removals_.erase(keep, pending_removals_.end());
    durable_cv_.notify_all();
  }
  return Status::OK();
  }();
  if (!ready.empty()) {
    // Under mu_ (after durable_mu_, never inside it), like every change of the chunk files: a
    // chunk stored again since its deletion keeps its file.
    std::lock_guard wlock(mu_);
    hooks_.remove_files(ready, writer_.get());
  }
  return result;
}

namespace {

// WAL frames (pages) after which the background thread checkpoints: SQLite's own default.
constexpr int kCheckpointFrames = 1000;

}  // namespace

void TxnLog::WantCheckpoint() {
  {
    std::lock_guard lock(syncer_mu_);
    if (checkpoint_wanted_) return;
    checkpoint_wanted_ = true;
  }
  syncer_cv_.notify_all();
}

void TxnLog::StartLogSyncer() {
  if (!options_.sync_full || options_.log_sync_interval_ms == 0) return;
  // Checkpoints move to the background thread too. SQLite runs them in the committing thread
  // (every 1000 pages, with an fsync of the WAL and one of meta.db), which put two disk flushes
  // on the reply of every few hundredth create; with this hook installed it no longer does.
  // Called by SQLite on the writer's thread after each COMMIT, with the frames now in the WAL.
  // Asked once per kCheckpointFrames new frames: a passive checkpoint leaves the WAL as long as
  // it was (SQLite starts it over at a later write, once no reader still uses it), and asking at
  // every commit past the mark ran a checkpoint, with its two disk flushes, every few creates.
  auto on_commit = +[](void* arg, sqlite3*, const char*, int frames) -> int {
    TxnLog* log = static_cast<TxnLog*>(arg);
    if (frames < log->frames_at_checkpoint_request_) log->frames_at_checkpoint_request_ = 0;
    if (frames - log->frames_at_checkpoint_request_ >= kCheckpointFrames) {
      log->frames_at_checkpoint_request_ = frames;
      log->WantCheckpoint();
    }
    return SQLITE_OK;
  };
  sqlite3_wal_hook(writer_->handle(), on_commit, this);
  log_syncer_ = std::thread([this] { LogSyncerLoop(); });
}

void TxnLog::StopLogSyncer() {
  {
    std::lock_guard lock(syncer_mu_);
    syncer_stop_ = true;
  }
  syncer_cv_.notify_all();
  if (log_syncer_.joinable()) log_syncer_.join();
}

void TxnLog::LogSyncerLoop() {
  const auto period = std::chrono::milliseconds(options_.log_sync_interval_ms);
  std::unique_ptr<Db> checkpointer;  // its own connection: it runs beside the writer
  auto last_sync = std::chrono::steady_clock::now();
  std::unique_lock lock(syncer_mu_);
  while (!syncer_stop_) {
    syncer_cv_.wait_until(lock, last_sync + period,
                          [this] { return syncer_stop_ || checkpoint_wanted_; });
    if (syncer_stop_) break;
    const bool checkpoint = checkpoint_wanted_;
    checkpoint_wanted_ = false;
    lock.unlock();
    if (std::chrono::steady_clock::now() >= last_sync + period) {
      last_sync = std::chrono::steady_clock::now();
      if (durable_seq_.load() < commit_seq_.load()) {
        (void)SyncLog(commit_seq_.load());  // counted as an error; the next period tries again
      }
    }
    if (checkpoint) {
      // PASSIVE: copies what no reader still needs, never waits for anyone. It syncs the WAL
      // before and meta.db after (synchronous=NORMAL), so it never loses a durable change.
      if (!checkpointer) {
        auto db = Db::Open(options_.dir + "/meta.db", Db::Mode::kReadWrite);
        if (db.ok() && ConfigureConnection(**db, options_.sync_full).ok()) {
          checkpointer = std::move(*db);
        }
      }
      if (!checkpointer || !checkpointer->Exec("PRAGMA wal_checkpoint(PASSIVE)").ok()) {
        CountError();
      }
    }
    lock.lock();
  }
}

}  // namespace kdn::store
