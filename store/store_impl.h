// Store::Impl: the state behind kdn::Store, shared by the files that implement its parts
// (store_open.cc, store_chunks.cc, store_namespace.cc, store_fsck.cc).
//
// Concurrency:
//   write_mu   the one writer connection; every change is one transaction under it.
//   open_mu    open counts; held (after write_mu) by transactions that may delete inodes, so an
//              inode is never deleted while an OpenInode of it is in progress.
//   alloc_mu   the free-space map; never held while waiting for write_mu.
//   grow_mu    segment creation, one at a time.
//   reads      lease a reader connection and an engine; their epoch guards the space they read.
#ifndef KDN_STORE_STORE_IMPL_H_
#define KDN_STORE_STORE_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kdn/store.h"
#include "store/chunk_id.h"
#include "store/chunk_io.h"
#include "store/chunk_layout.h"
#include "store/db_pool.h"
#include "store/engine_pool.h"
#include "store/extent_allocator.h"
#include "store/format/file_io.h"
#include "store/kv_content.h"
#include "store/latency_histogram.h"
#include "store/read_epochs.h"
#include "store/segment_set.h"
#include "store/sqlite_db.h"

namespace kdn {

namespace store {

// Operation counters since open.
struct Counters {
  std::atomic<uint64_t> puts{0}, put_bytes{0}, dedup_hits{0}, reads{0}, read_bytes{0};
  std::atomic<uint64_t> prefix_lookups{0}, prefix_hits{0}, evictions{0}, evicted_bytes{0};
  std::atomic<uint64_t> errors{0};
};

// Content hashed, checked and (unless already stored) written: ready for a transaction to
// publish it. Space it holds and no commit published is freed when it goes away.
struct PreparedChunk {
  ChunkId id;
  uint64_t size = 0;
  std::vector<uint64_t> sums;
  std::optional<KvIndex> kv;
  std::vector<PhysExtent> allocation;  // written space; empty until written (or for empty content)
  std::vector<int> written_fds;        // segments holding it, to sync before the commit
  bool written = false;
  bool published = false;
};

// What a committed transaction changes outside the database; applied only after COMMIT
// (`retired` only once the transaction is durable: see Store::Impl::SyncLog).
struct TxnEffects {
  uint64_t commit_seq = 0;  // the transaction's place in commit order (set at COMMIT)
  std::vector<PhysExtent> retired;
  std::vector<ChunkId> deleted_chunks;
  std::vector<PreparedChunk*> published;
  int64_t chunk_delta = 0;
  int64_t inode_delta = 0;
  std::vector<EvictedName> evicted;
  uint64_t evicted_chunks = 0;
  uint64_t evicted_bytes = 0;
};

enum class RefKind { kPut, kInode };

}  // namespace store

struct Store::Impl {
  std::string dir;
  StoreOptions options;
  bool sync_full = true;
  store::IoShape shape;
  UniqueFd lock_fd;

  std::mutex write_mu;
  std::unique_ptr<store::Db> writer;
  std::unique_ptr<store::DbPool> readers;

  store::SegmentSet segments;
  std::mutex grow_mu;
  std::mutex alloc_mu;
  store::ExtentAllocator alloc;
  std::atomic<uint64_t> capacity{0};
  store::ReadEpochs epochs;
  std::unique_ptr<store::EnginePool> engines;  // after segments: engines go first at close
  store::LayoutCache layouts{8192};

  std::mutex open_mu;
  std::unordered_map<Ino, uint32_t> open_counts;
  std::mutex touch_mu;
  std::unordered_map<ChunkId, int64_t, store::IdHasher> touched;

  store::Counters counters;
  store::LatencyHistogram read_latency;
  std::atomic<int64_t> chunk_count{0};
  std::atomic<int64_t> inode_count{0};
  std::atomic<uint64_t> staging_seq{0};
  std::vector<std::string> open_problems;  // found while rebuilding at open; fsck reports them

  ~Impl();

  // ---- store_open.cc
  Status OpenAll(const std::string& path, const StoreOptions& opts);
  Status RebuildFreeSpace();
  Status ReclaimOrphans();
  Status CleanStaging();

  // ---- transactions (store_commit.cc)
  // Runs `body` as one atomic change and returns once it is durable. Concurrent callers are
  // committed together (group commit): the data files they name (`sync_fds`: segments they
  // wrote) are synced first, then every body runs in one SQLite transaction, each inside its own
  // savepoint so that one failure leaves the others alone. With `lock_opens`, open counts are
  // frozen while the body runs (for changes that may delete inodes). Effects are applied by the
  // caller's thread after the commit.
  using TxnBody = std::function<Status(store::Db&, store::TxnEffects&)>;
  Status Write(bool lock_opens, TxnBody body, std::vector<int> sync_fds = {});
  struct WriteRequest {
    TxnBody body;
    bool lock_opens = false;
    std::vector<int> sync_fds;
    store::TxnEffects fx;
    Status status;
    bool done = false;
  };
  void SyncBatch(const std::vector<WriteRequest*>& batch);    // stage 1: data durable
  void CommitBatch(const std::vector<WriteRequest*>& batch);  // stage 2: one transaction
  std::mutex group_mu;
  std::condition_variable group_cv;
  std::vector<WriteRequest*> sync_queue;    // waiting for their data to be synced
  std::vector<WriteRequest*> commit_queue;  // waiting for a transaction
  bool sync_leader = false;
  bool commit_leader = false;

  void ApplyEffects(store::TxnEffects& fx);
  // Hands released space to the allocator (free once the reads that may use it are done).
  void RetireNow(std::vector<store::PhysExtent> extents);

  // ---- durability of the log (store_commit.cc)
  // Transactions are written to the WAL (to the OS) at COMMIT and numbered in commit order
  // (`commit_seq`); SyncLog(n) makes every transaction up to n durable with one fdatasync of the
  // WAL, shared by concurrent callers, then hands the space those transactions released to the
  // allocator (reusing it earlier could overwrite bytes that a power loss brings back into use).
  // A background thread (LogSyncerLoop) calls it every log_sync_interval_ms while something is
  // unsynced.
  Status SyncLog(uint64_t upto);
  Status SyncWalFile();
  void StartLogSyncer();
  void StopLogSyncer();
  void LogSyncerLoop();
  std::atomic<uint64_t> commit_seq{0};   // last committed transaction (WAL written)
  std::atomic<uint64_t> durable_seq{0};  // last transaction known durable
  std::atomic<uint64_t> log_syncs{0};
  std::mutex durable_mu;  // guards the fields below; taken before alloc_mu, never after
  std::condition_variable durable_cv;
  bool log_sync_running = false;
  std::mutex syncer_mu;  // the background syncer's sleep
  std::condition_variable syncer_cv;
  bool syncer_stop = false;
  bool checkpoint_wanted = false;
  void WantCheckpoint();  // the WAL is long: checkpoint it from the background thread
  UniqueFd wal_fd;  // meta.db-wal, opened at the first log sync (SyncWalFile only)
  struct UnsyncedRelease {
    uint64_t seq;
    std::vector<store::PhysExtent> extents;
  };
  std::vector<UnsyncedRelease> unsynced_releases;
  std::atomic<uint64_t> unsynced_release_bytes{0};
  std::thread log_syncer;
  bool IsOpen(Ino ino);  // caller holds open_mu
  Status FlushTouched(store::Db& db);

  // ---- store_chunks.cc
  Result<std::shared_ptr<const store::ChunkLayout>> LoadLayout(const ChunkId& id);
  // Hashes and checks `bytes`. When free space is at hand it also writes them there, hashing each
  // piece while the ones before it are on their way to the disk (hashing is then off the put's
  // critical path), and frees that space again if the id turns out to be stored already.
  Result<std::unique_ptr<store::PreparedChunk>> PrepareMemory(std::span<const std::byte> bytes,
                                                              store::ChunkSource& source);
  Result<std::unique_ptr<store::PreparedChunk>> PrepareFile(int fd, const std::string& path);
  // Writes the chunk's bytes to newly reserved space (not yet synced: the commit does that).
  Status WriteData(store::PreparedChunk& chunk, store::ChunkSource& source);
  // Writes them to chunk.allocation (freed on failure), feeding `hasher` when given.
  Status WriteAllocated(store::PreparedChunk& chunk, store::ChunkSource& source,
                        store::ContentHasher* hasher);
  Result<bool> ChunkExists(const ChunkId& id);
  // Publishes (or references) a prepared chunk inside a transaction. False when the chunk is not
  // stored and `chunk` was not written (it vanished since we looked): write it and retry.
  Result<bool> InstallChunk(store::Db& db, store::PreparedChunk& chunk, store::RefKind kind,
                            bool keep, store::TxnEffects& fx);
  Status AddChunkRef(store::Db& db, const ChunkId& id, store::RefKind kind, bool keep);
  Status DropChunkRef(store::Db& db, const ChunkId& id, store::RefKind kind, bool keep,
                      store::TxnEffects& fx);
  Status DeleteChunkRows(store::Db& db, const ChunkId& id, store::TxnEffects& fx);
  // Stores content (written when new) and takes a reference with `commit` in one transaction.
  template <typename Commit>
  Status StoreAndCommit(store::PreparedChunk& chunk, store::ChunkSource& source, bool lock_opens,
                        Commit&& commit);
  Result<std::vector<store::PhysExtent>> Reserve(uint64_t bytes);
  // Space already free in the segments, within the capacity: no eviction, no new segment (so that
  // content that turns out to be stored already never costs either). Empty when there is none.
  std::vector<store::PhysExtent> TakeFreeSpace(uint64_t bytes);
  void FreeUnpublished(store::PreparedChunk& chunk);
  // Caches the layout of a chunk this thread published (skipped if any chunk was deleted since
  // `generation`, which might have been this one).
  void CacheLayout(const store::PreparedChunk& chunk, uint64_t generation);
  Result<uint64_t> Evict(uint64_t want_bytes);
  Status ReadAll(const ChunkId& id, const std::function<Status(std::span<const std::byte>)>& sink);

  // ---- store_namespace.cc
  Status DropInode(store::Db& db, Ino ino, store::TxnEffects& fx);
  Status DropInode(store::Db& db, const InodeAttr& a, store::TxnEffects& fx);  // `a` loaded in db
  // One name fewer for a non-directory (`a`: as loaded in this transaction); reclaimed when that
  // was the last and it is not open.
  Status DropLink(store::Db& db, const InodeAttr& a, int64_t now, store::TxnEffects& fx);
  // Makes `chunk` (a prepared chunk, or `existing` when null) the content of `ino` in the
  // transaction of `db`.
  Status SetContent(store::Db& db, Ino ino, store::PreparedChunk* chunk, const ChunkId* existing,
                    const CommitOptions& opts, store::TxnEffects& fx, bool* vanished,
                    InodeAttr* out);
};

template <typename Commit>
Status Store::Impl::StoreAndCommit(store::PreparedChunk& chunk, store::ChunkSource& source,
                                   bool lock_opens, Commit&& commit) {
  struct FreeGuard {
    Impl* impl;
    store::PreparedChunk& chunk;
    ~FreeGuard() { impl->FreeUnpublished(chunk); }
  } guard{this, chunk};
  for (int attempt = 0; attempt < 3; ++attempt) {
    const uint64_t generation = layouts.generation();
    if (!chunk.written && chunk.size > 0) {
      KDN_ASSIGN_OR_RETURN(bool exists, ChunkExists(chunk.id));
      if (!exists || attempt > 0) KDN_RETURN_IF_ERROR(WriteData(chunk, source));
    }
    bool vanished = false;
    Status s = Write(
        lock_opens,
        [&](store::Db& db, store::TxnEffects& fx) -> Status { return commit(db, fx, &vanished); },
        chunk.written_fds);
    if (vanished) continue;  // deleted between our look and our commit: write it and retry
    // Readers of a chunk just written usually come soon: give them its layout.
    if (s.ok() && chunk.published) CacheLayout(chunk, generation);
    return s;
  }
  return Status::Internal("chunk " + chunk.id.ToHex() + " kept vanishing during commit");
}

}  // namespace kdn

#endif  // KDN_STORE_STORE_IMPL_H_
