// Store::Impl: the state behind kdn::Store, shared by the files that implement its parts:
//   the transaction layer  txn.h, txn.cc (group commit, log sync): the member `txn`
//   the chunk store        chunk_store.h, chunk_store.cc
//   the namespace          namespace/ (one file per operation; namespace/namespace.h)
//   open and recovery      store_open.cc;  fsck  store_fsck.cc
// Dependencies point namespace -> chunk store -> transaction layer. Each lower part reaches the
// one above only through what that part registers at open: eviction reaches the namespace through
// store::ReleaseNames (RegisterWithChunks), and the transaction layer reaches the chunk files,
// access times and effects through store::TxnHooks (RegisterWithTxn).
// Each part's state is moving into objects of its own: so far the transaction layer's
// store::TxnLog (txn.h), the chunk store's store::Space and store::TouchLog (chunk_store.h) and the
// namespace's store::OpenCounts (namespace/namespace.h); the rest is still the members below,
// grouped by part.
//
// Concurrency:
//   txn.mu()   the one writer connection (store::TxnLog); every change is one transaction under
//              it. The layer's own locks (group commit, log sync, the sticky error) are its own:
//              see store::TxnLog.
//   opens.mu() the namespace's open counts (store::OpenCounts); held (after txn.mu()) by
//              transactions that may delete inodes, so an inode is never deleted while an
//              OpenInode of it is in progress.
//              Chunk files are renamed into place and unlinked only under txn.mu() too (in the
//              TxnHooks the layer calls under it), so a file and its row always change together
//              as seen by any other writer.
//   leaves     the chunk store's store::Space (capacity accounting: used and reserved bytes)
//              and store::TouchLog (access times not yet written) lock inside their own methods
//              only, hold nothing else meanwhile and never wait for txn.mu().
//   reads      lease a reader connection and an engine; a chunk's layout holds its file open,
//              so a read in progress keeps its bytes even if the chunk is deleted meanwhile.
#ifndef KDN_STORE_STORE_IMPL_H_
#define KDN_STORE_STORE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/store.h"
#include "store/chunk_files.h"
#include "store/chunk_id.h"
#include "store/chunk_io.h"
#include "store/chunk_layout.h"
#include "store/chunk_store.h"
#include "store/db_pool.h"
#include "store/engine_pool.h"
#include "store/format/file_io.h"
#include "store/kv_content.h"
#include "store/latency_histogram.h"
#include "store/namespace/namespace.h"
#include "store/sqlite_db.h"
#include "store/txn.h"

namespace kdn {

struct Store::Impl {
  std::string dir;
  StoreOptions options;
  bool sync_full = true;
  store::IoShape shape;
  UniqueFd lock_fd;

  std::unique_ptr<store::DbPool> readers;

  store::ChunkFiles files;
  store::Space space;  // capacity, used and reserved bytes (store/chunk_store.h)
  store::ReleaseNames release_names;  // eviction's call into the namespace (RegisterWithChunks)
  std::unique_ptr<store::EnginePool> engines;
  // Layouts hold their chunk file open: small enough to stay far from descriptor limits.
  store::LayoutCache layouts{256};

  store::OpenCounts opens;  // the namespace's open counts (store/namespace/namespace.h)
  store::TouchLog touches;  // access times not yet written (store/chunk_store.h)

  store::Counters counters;
  store::LatencyHistogram read_latency;
  std::atomic<int64_t> chunk_count{0};
  std::atomic<int64_t> inode_count{0};
  std::atomic<uint64_t> staging_seq{0};
  std::vector<std::string> open_problems;  // found while rebuilding at open; fsck reports them
  std::vector<std::string> open_warnings;  // fixed at open (Store::OpenWarnings)

  ~Impl();

  // ---- store_open.cc
  Status OpenAll(const std::string& path, const StoreOptions& opts);
  // Chunk files no committed row names (left by a crash between a file's rename and its commit,
  // or between a commit and the unlink) are removed; the used space is summed.
  Status RemoveStrayChunkFiles();
  // A version 1 store is migrated in place (store/migrate_v1.h).
  Status MigrateIfOld();
  Status ReclaimOrphans();
  Status CleanStaging();
  // Every name of `ino` removed, and the inode with them, when it is a regular file without
  // content (namespace/unlink.cc). The names removed are appended to *removed.
  Status RemoveEmptyFile(store::Db& db, Ino ino, store::TxnEffects& fx,
                         std::vector<EvictedName>* removed);

  // ---- the transaction layer (txn.h, txn.cc): the writer connection, group commit, the sticky
  // background error, the log's durability. Every change of either part is a txn.Write.
  store::TxnLog txn;

  // ---- the chunk store (chunk_store.h, chunk_store.cc)
  // Registers what the transaction layer asks of the chunk store (store::TxnHooks: syncing and
  // installing chunk files, removing deleted ones, access times, effects), at open, before any
  // transaction.
  void RegisterWithTxn();
  // A committed change's effects on the counts, the capacity and the layout cache.
  void ApplyEffects(store::TxnEffects& fx);
  // Writes the access times noted in `touches` in the transaction of `db`.
  Status FlushTouched(store::Db& db);
  Result<std::shared_ptr<const store::ChunkLayout>> LoadLayout(const ChunkId& id);
  // Hashes and checks `bytes`. When capacity is at hand (without evicting) it also writes them to
  // a temporary file, hashing each piece while the ones before it are on their way to the disk
  // (hashing is then off the put's critical path), and drops that file again if the id turns out
  // to be stored already.
  Result<std::unique_ptr<store::PreparedChunk>> PrepareMemory(std::span<const std::byte> bytes,
                                                              store::ChunkSource& source);
  // The same for a staged file; `held`: capacity the caller reserved for it, now the chunk's
  // (given back with it unless it is published). New content with capacity at hand is written
  // while it is hashed, in one read of the file (the id is that of the bytes written).
  Result<std::unique_ptr<store::PreparedChunk>> PrepareFile(int fd, const std::string& path,
                                                            uint64_t held);
  // A staged file whose content id the caller computed from it (CommitHashedFile): checked
  // (`.kv` content) and summed, then, unless the chunk is stored already, the file itself is the
  // chunk's temporary file, renamed into place by the commit (no copy, no second SHA-256 pass).
  Result<std::unique_ptr<store::PreparedChunk>> PrepareHashedFile(int fd, const std::string& path,
                                                                  const ChunkId& id, uint64_t held);
  // Reserves capacity and writes the chunk's bytes to a new temporary file (not yet synced: the
  // commit does that).
  Status WriteData(store::PreparedChunk& chunk, store::ChunkSource& source);
  // Writes them to a new temporary file (dropped on failure), feeding `hasher` when given.
  Status WriteFile(store::PreparedChunk& chunk, store::ChunkSource& source,
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
  // Holds `bytes` of capacity for a chunk being written, evicting when the store is full.
  Status Reserve(store::PreparedChunk& chunk, uint64_t bytes);
  // The same without evicting (so that content that turns out to be stored already never costs
  // an eviction); false when the capacity is not at hand.
  bool TryReserve(store::PreparedChunk& chunk, uint64_t bytes);
  // Gives back what an unpublished chunk holds: its capacity and its temporary file.
  void FreeUnpublished(store::PreparedChunk& chunk);
  // Caches the layout of a chunk this thread published (skipped if any chunk was deleted since
  // `generation`, which might have been this one).
  void CacheLayout(store::PreparedChunk& chunk, uint64_t generation);
  Result<uint64_t> Evict(uint64_t want_bytes);
  Status ReadAll(const ChunkId& id, const std::function<Status(std::span<const std::byte>)>& sink);

  // ---- the namespace (namespace/: outbox.cc, reclaim.cc, evict.cc, content.cc)
  // Writes an outbox note (OutboxNote) in the transaction of `db`; nothing when `note` is empty.
  Status AppendOutbox(store::Db& db, const ChunkId& chunk, std::string_view note);
  Status DropInode(store::Db& db, Ino ino, store::TxnEffects& fx);
  Status DropInode(store::Db& db, const InodeAttr& a, store::TxnEffects& fx);  // `a` loaded in db
  // One name fewer for a non-directory (`a`: as loaded in this transaction); reclaimed when that
  // was the last and it is not open.
  Status DropLink(store::Db& db, const InodeAttr& a, int64_t now, store::TxnEffects& fx);
  // For eviction (namespace/evict.cc): removes every name of the files whose content is `id`, and
  // the files, unless one of them is open (then nothing, and false). Caller holds opens.mu().
  Result<bool> RemoveFilesWithContent(store::Db& db, const ChunkId& id, int64_t now,
                                      store::TxnEffects& fx);
  // Registers RemoveFilesWithContent as the chunk store's release_names (at open, before any
  // eviction).
  void RegisterWithChunks();
  // Makes the prepared `chunk` the content of `ino` in the transaction of `db`.
  Status SetContent(store::Db& db, Ino ino, store::PreparedChunk& chunk, const CommitOptions& opts,
                    store::TxnEffects& fx, bool* vanished, InodeAttr* out);
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
    // The file, when written for this commit and not yet in place, is synced and installed by it.
    Status s = txn.Write(
        lock_opens,
        [&](store::Db& db, store::TxnEffects& fx) -> Status { return commit(db, fx, &vanished); },
        chunk.written && !chunk.installed ? &chunk : nullptr);
    if (vanished) continue;  // deleted between our look and our commit: write it and retry
    // Readers of a chunk just written usually come soon: give them its layout.
    if (s.ok() && chunk.published) CacheLayout(chunk, generation);
    return s;
  }
  return Status::Internal("chunk " + chunk.id.ToHex() + " kept vanishing during commit");
}

}  // namespace kdn

#endif  // KDN_STORE_STORE_IMPL_H_
