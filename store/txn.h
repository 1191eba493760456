// The transaction layer: how the chunk store and the namespace change the store's database.
//
// What a change gets: a body `Status(Db&, TxnEffects&)` run by TxnLog::Write (txn.cc). The Db is
// the one writer connection, inside a savepoint of the current group commit: concurrent changes
// share one SQLite transaction (and the data syncs before it), each in its own savepoint so that
// one failing body leaves the others alone. A change that publishes a chunk passes its
// PreparedChunk to Write, which has the chunk store sync the chunk's file and rename it into place
// before the transaction. What the body changes outside the database it records in TxnEffects,
// applied by the caller's thread after the COMMIT: counts, capacity, and the files of deleted
// chunks, unlinked only once SyncLog has synced the WAL past the transaction, since a power loss
// could otherwise bring their rows back.
//
// What a reader gets: a read connection leased from the pool (store/db_pool.h), never the writer.
//
// Both parts use it, and it knows neither: dependencies point namespace -> chunk store (
// store/chunk_store.h) -> transaction layer. It handles chunks only as the opaque PreparedChunk a
// change hands to Write and as the ids in TxnEffects; what is done with their files, it asks of
// the chunk store through the TxnHooks the chunk store registers at open (as eviction reaches the
// namespace through store::ReleaseNames). Its state is one object, TxnLog, a member of
// Store::Impl (store_impl.h).
#ifndef KDN_STORE_TXN_H_
#define KDN_STORE_TXN_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/logger.h"
#include "kdn/status.h"
#include "kdn/store.h"
#include "store/chunk_id.h"
#include "store/format/file_io.h"
#include "store/sqlite_db.h"

namespace kdn::store {

struct PreparedChunk;  // store/chunk_store.h; opaque here

// What a committed transaction changes outside the database; applied only after COMMIT
// (deleted chunks' files removed only once the transaction is durable: see TxnLog::SyncLog).
struct TxnEffects {
  uint64_t commit_seq = 0;               // the transaction's place in commit order (at COMMIT)
  std::vector<ChunkId> deleted_chunks;  // their files are unlinked once the commit is durable
  uint64_t freed_bytes = 0;             // their 4 KiB-rounded sizes
  std::vector<PreparedChunk*> published;
  int64_t chunk_delta = 0;
  int64_t inode_delta = 0;
  std::vector<EvictedName> evicted;
  uint64_t evicted_chunks = 0;
  uint64_t evicted_bytes = 0;
  int64_t xattr_bytes_delta = 0;  // names and values of extended attributes added (or removed)
};

// One change: runs inside its savepoint of the group's transaction.
using TxnBody = std::function<Status(Db&, TxnEffects&)>;

// What the transaction layer asks of the chunk store, which makes it
// (store::ChunkStore::TxnHooksForChunks, chunk_store.cc) for Store::Impl::RegisterWithTxn to
// register at open. Chunk files are the chunk store's alone.
struct TxnHooks {
  // Stage 1 of a group commit (no lock held): makes the data of `chunk`, written for a change,
  // durable. A failure that leaves the bytes on disk in doubt the hook makes sticky itself
  // (TxnLog::SetBackgroundError).
  std::function<Status(PreparedChunk& chunk)> sync_data;
  // Stage 2, under the writer's lock, before BEGIN: puts the group's synced chunk files into
  // place, durably; (*results)[i] (sized like `chunks`) says how chunks[i] fared.
  std::function<void(const std::vector<PreparedChunk*>& chunks, std::vector<Status>* results)>
      install;
  // After the transaction, still under the writer's lock, so that any other writer sees files
  // follow the committed rows: `committed` holds the effects of the changes that committed,
  // `failed` the chunks handed in by the changes that did not (their installed files go unless
  // the chunk is stored). Returns the chunks whose files are to go once the transaction is
  // durable (deleted by it and not published again in it).
  std::function<std::vector<ChunkId>(Db& writer, const std::vector<const TxnEffects*>& committed,
                                     const std::vector<PreparedChunk*>& failed)>
      settle;
  // Under the writer's lock: removes the files of `chunks`, whose deletion is durable (or
  // committed, without durability). With `recheck`, the writer: a chunk stored again since keeps
  // its file.
  std::function<void(const std::vector<ChunkId>& chunks, Db* recheck)> remove_files;
  // Work that rides along with some transaction when due (access times not yet written, so that
  // their map stays small), in a savepoint of its own: failing it loses nothing but recency.
  std::function<bool()> ride_along_due;
  std::function<Status(Db& db)> ride_along;
  // A committed change's effects outside the database (counts, capacity), applied by the
  // caller's thread after the commit.
  std::function<void(TxnEffects& fx)> apply;
};

// The transaction layer's state: the writer connection, group commit, the sticky background
// error and the durability of the log.
//
// Locks:
//   mu()         the writer connection; every change is one transaction under it.
//   opens        the namespace's open counts (Options::opens_mu): taken after mu() for the
//                changes written with lock_opens; chunk files are renamed into place and
//                unlinked under mu() (and it, when taken), so a file and its row always change
//                together as seen by any other writer.
//   durable_mu_  the log sync's state: taken after mu(), never before (SyncLog takes mu() only
//                once it has released durable_mu_).
//   group_mu_    the group-commit queues: never held while syncing or committing.
//   bg_mu_, syncer_mu_  leaves.
class TxnLog {
 public:
  struct Options {
    std::string dir;  // the store's directory: meta.db and its WAL
    bool sync_full = true;
    uint32_t log_sync_interval_ms = 1000;  // 0: every change syncs the log before it returns
    std::shared_ptr<Logger> info_log;
    std::atomic<uint64_t>* errors = nullptr;  // the store's error counter (StoreStats::errors)
    // Held (after mu()) through the transactions of changes written with lock_opens: the
    // namespace's open counts, so that an inode is never deleted while an open is in progress.
    std::mutex* opens_mu = nullptr;
  };

  TxnLog() = default;
  TxnLog(const TxnLog&) = delete;
  TxnLog& operator=(const TxnLog&) = delete;
  ~TxnLog();

  // Before Open: what the chunk store does for the layer.
  void SetHooks(TxnHooks hooks) { hooks_ = std::move(hooks); }
  // Opens (with `create`, creates) meta.db as the writer connection.
  Status Open(const Options& options, bool create);
  bool is_open() const { return writer_ != nullptr; }
  // The writer connection and its lock. Outside Write, only at open and close and for fsck's
  // consistent view; a transaction committed on it outside Write is told with NoteCommit.
  std::mutex& mu() { return mu_; }
  Db& writer() { return *writer_; }
  // A transaction committed on the writer outside Write: made durable by the next log sync.
  void NoteCommit() { commit_seq_.fetch_add(1); }
  // Closes the writer connection (after the reader connections, so that SQLite's closing
  // checkpoint may run).
  void CloseWriter() { writer_.reset(); }

  // Runs `body` as one atomic change and returns once it is durable. Concurrent callers are
  // committed together (group commit): the chunk files they wrote (`chunk`: written for this
  // change and not yet in place) are synced first, then renamed into place with their directories
  // synced, then every body runs in one SQLite transaction, each inside its own savepoint so that
  // one failure leaves the others alone; after the COMMIT the files of deleted chunks are
  // unlinked. With `lock_opens`, open counts are frozen while the body runs (for changes that may
  // delete inodes). Effects are applied by the caller's thread after the commit.
  Status Write(bool lock_opens, TxnBody body, PreparedChunk* chunk = nullptr);

  // Sticky (LevelDB's bg_error_): set when a data sync failed or a transaction could not be
  // undone, i.e. once what is on disk is in doubt (after a failed fdatasync the kernel may have
  // dropped the dirty pages and a retry would report success). Every later change fails with it
  // until the store is reopened, whose recovery trusts only what committed rows reference.
  void SetBackgroundError(const Status& s) KDN_EXCLUDES(bg_mu_);
  Status BackgroundError() KDN_EXCLUDES(bg_mu_);

  // Transactions are written to the WAL (to the OS) at COMMIT and numbered in commit order
  // (commit_seq_); SyncLog(n) makes every transaction up to n durable with one fdatasync of the
  // WAL, shared by concurrent callers, then removes the files of the chunks those transactions
  // deleted (removing them earlier could lose bytes that a power loss brings back into use).
  // A background thread (LogSyncerLoop) calls it every log_sync_interval_ms while something is
  // unsynced.
  Status SyncLog(uint64_t upto);
  Status SyncAll() { return SyncLog(commit_seq_.load()); }  // everything committed so far
  void StartLogSyncer();
  void StopLogSyncer();
  uint64_t log_syncs() const { return log_syncs_.load(); }
  // Committed transactions not yet known durable.
  uint64_t unsynced() const {
    const uint64_t committed = commit_seq_.load(), durable = durable_seq_.load();
    return committed > durable ? committed - durable : 0;
  }

 private:
  struct WriteRequest {
    TxnBody body;
    bool lock_opens = false;
    PreparedChunk* chunk = nullptr;  // to sync and install before the transaction
    TxnEffects fx;
    Status status;
    bool done = false;
  };
  void SyncBatch(const std::vector<WriteRequest*>& batch);    // stage 1: data durable
  void CommitBatch(const std::vector<WriteRequest*>& batch);  // stage 2: one transaction
  Status SyncWalFile();
  void LogSyncerLoop();
  void WantCheckpoint();  // the WAL is long: checkpoint it from the background thread
  void CountError() {
    if (options_.errors != nullptr) ++*options_.errors;
  }

  Options options_;
  TxnHooks hooks_;

  std::mutex mu_;  // the writer's
  std::unique_ptr<Db> writer_;

  Mutex group_mu_;
  std::condition_variable_any group_cv_;
  // waiting for their data to be synced
  std::vector<WriteRequest*> sync_queue_ KDN_GUARDED_BY(group_mu_);
  std::vector<WriteRequest*> commit_queue_ KDN_GUARDED_BY(group_mu_);  // waiting for a transaction
  bool sync_leader_ KDN_GUARDED_BY(group_mu_) = false;
  bool commit_leader_ KDN_GUARDED_BY(group_mu_) = false;

  Mutex bg_mu_;
  Status bg_error_ KDN_GUARDED_BY(bg_mu_);

  std::atomic<uint64_t> commit_seq_{0};   // last committed transaction (WAL written)
  std::atomic<uint64_t> durable_seq_{0};  // last transaction known durable
  std::atomic<uint64_t> log_syncs_{0};
  std::mutex durable_mu_;  // guards the fields below; taken after mu_, never before
  std::condition_variable durable_cv_;
  bool log_sync_running_ = false;
  struct PendingRemoval {
    uint64_t seq;                 // the transaction that deleted them
    std::vector<ChunkId> chunks;  // their files stay until it is durable
  };
  std::vector<PendingRemoval> pending_removals_;
  UniqueFd wal_fd_;  // meta.db-wal, opened at the first log sync (SyncWalFile only)

  std::mutex syncer_mu_;  // the background syncer's sleep
  std::condition_variable syncer_cv_;
  bool syncer_stop_ = false;
  bool checkpoint_wanted_ = false;
  // The WAL's length (frames) when a checkpoint was last asked for; the writer's (its WAL hook).
  int frames_at_checkpoint_request_ = 0;
  std::thread log_syncer_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_TXN_H_
