// The chunk store: content by id. Chunk files (store/chunk_files.h), content ids (chunk_id.h),
// reference counts, put with deduplication, space accounting, capacity and eviction (least
// recently used first), verified reads. It knows nothing of names: the namespace
// (store/namespace/) refers to content only by chunk id and takes and drops references through
// AddChunkRef / DropChunkRef / InstallChunk. Eviction, which must also remove the files whose
// content a chosen chunk is, does so through the ReleaseNames the namespace hands it at open
// (namespace/evict.cc, in the ChunkStoreSetup), in the same transaction: the dependency stays
// one-way. Every change runs through the transaction layer (store/txn.h); deleting a chunk's rows
// records its file in TxnEffects, unlinked once the deletion is durable. The layer knows no chunk
// files: what it needs done with them (syncing and installing a change's chunk file before its
// transaction, removing deleted chunks' files, writing access times, applying effects) it asks
// through the store::TxnHooks the chunk store hands it at open (ChunkStore::TxnHooksForChunks).
//
// Its state is one object, ChunkStore (below), a member of Store::Impl (store_impl.h), with its
// parts Space (capacity, used and reserved bytes) and TouchLog (access times not yet written). That
// state is private: the store's open hands it what it needs in one ChunkStoreSetup
// (ChunkStore::Open), recovery and the namespace change it only through named calls, and
// statistics, usage and fsck read it through const queries.
// Implementation: chunk_store.cc (those objects, the TxnHooks, and the chunk calls of kdn::Store,
// which forward to the ChunkStore: Put, Get, StatChunk, Release, Extents, OpenChunkForRead, Touch,
// VerifyChunk, ReserveSpace, ReleaseSpace).
#ifndef KDN_STORE_CHUNK_STORE_H_
#define KDN_STORE_CHUNK_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/store.h"
#include "store/chunk_files.h"
#include "store/chunk_id.h"
#include "store/chunk_io.h"
#include "store/chunk_layout.h"
#include "store/db_pool.h"
#include "store/engine_pool.h"
#include "store/format/file_io.h"
#include "store/kv_content.h"
#include "store/latency_histogram.h"
#include "store/txn.h"

namespace kdn::store {

// Operation counters since open.
struct Counters {
  std::atomic<uint64_t> puts{0}, put_bytes{0}, dedup_hits{0}, reads{0}, read_bytes{0};
  std::atomic<uint64_t> prefix_lookups{0}, prefix_hits{0}, evictions{0}, evicted_bytes{0};
  std::atomic<uint64_t> errors{0};
};

// Content hashed, checked and (unless already stored) written: ready for a transaction to
// publish it. Capacity it holds and its temporary file, if no commit published it, are given back
// when it goes away.
struct PreparedChunk {
  ChunkId id;
  uint64_t size = 0;
  std::vector<uint64_t> sums;
  std::optional<KvIndex> kv;
  uint64_t reserved = 0;  // capacity held for it (4 KiB-rounded size) until published or dropped
  std::string temp_path;  // its file in staging/, once written (until renamed into place)
  UniqueFd fd;            // that file (O_RDWR|O_DIRECT); after the rename, the chunk file
  bool written = false;    // the file holds its bytes (not yet synced)
  bool installed = false;  // synced and renamed to its chunk file name
  bool published = false;
};

// The chunk store's space accounting: the capacity, the bytes the committed chunks use (4
// KiB-rounded sizes, plus the extended attributes, which count against the capacity too) and the
// bytes held by chunks being written. The namespace asks it (HasRoomFor) but never changes it; a
// transaction's effects change it only after COMMIT (Apply). Its lock is a leaf: never held while
// taking another, so never while waiting for the writer.
class Space {
 public:
  uint64_t capacity() const { return capacity_.load(); }  // 0: no limit but the filesystem's
  void set_capacity(uint64_t bytes) { capacity_.store(bytes); }
  void SetUsed(uint64_t bytes) KDN_EXCLUDES(mu_);  // at open, from the committed rows
  uint64_t InUse() KDN_EXCLUDES(mu_);              // used and reserved
  // Holds `bytes` for `chunk` (or for a caller when `chunk` is a holder) if the capacity has room.
  bool TryReserve(PreparedChunk& chunk, uint64_t bytes) KDN_EXCLUDES(mu_);
  // Gives back `bytes` held (never below zero).
  void Unreserve(uint64_t bytes) KDN_EXCLUDES(mu_);
  // Whether `bytes` more fit beside what is used and reserved now (nothing is reserved).
  bool HasRoomFor(uint64_t bytes) KDN_EXCLUDES(mu_);
  // A committed transaction's effects: its published chunks' reservations become used bytes,
  // deleted chunks' bytes and removed attributes' bytes are freed.
  void Apply(TxnEffects& fx) KDN_EXCLUDES(mu_);

 private:
  std::atomic<uint64_t> capacity_{0};
  Mutex mu_;
  uint64_t used_ KDN_GUARDED_BY(mu_) = 0;      // committed chunks and attributes
  uint64_t reserved_ KDN_GUARDED_BY(mu_) = 0;  // held by chunks being written and by callers
};

// The chunk store's recency (for least-recently-used eviction): reads note a chunk's access time
// here, not in the database; the notes ride along with some transaction now and then
// (ChunkStore::FlushTouched), so the map stays small. Its lock is a leaf.
class TouchLog {
 public:
  void Touch(const ChunkId& id, int64_t now_ns) KDN_EXCLUDES(mu_);
  // The later of `atime_ns` and the access noted for `id` since the last flush.
  int64_t Latest(const ChunkId& id, int64_t atime_ns) KDN_EXCLUDES(mu_);
  size_t size() KDN_EXCLUDES(mu_);
  // Everything noted, leaving the log empty.
  std::unordered_map<ChunkId, int64_t, IdHasher> Take() KDN_EXCLUDES(mu_);

 private:
  Mutex mu_;
  std::unordered_map<ChunkId, int64_t, IdHasher> touched_ KDN_GUARDED_BY(mu_);
};

// What eviction asks of the names that refer to content, in the eviction's transaction: remove
// every file whose content `id` is, or, when one of them is open, nothing and false. The chunk
// store knows no names: the namespace hands this over at open (ChunkStoreSetup::release_names,
// made by Store::Impl::ReleaseNamesForChunks in namespace/evict.cc).
using ReleaseNames =
    std::function<Result<bool>(Db& db, const ChunkId& id, int64_t now, TxnEffects& fx)>;

// Who holds a reference: a put (Store::Put, until Release) or an inode whose content it is.
enum class RefKind { kPut, kInode };

// What the store's open hands the chunk store (ChunkStore::Open), once it knows all of it: after
// the database is up (the capacity is one of its rows), before the first transaction of recovery.
struct ChunkStoreSetup {
  std::string dir;             // the store's directory: chunks/ (ChunkFiles) and staging/ under it
  bool sync_full = true;       // SyncPolicy::kFull: chunk directories are synced too
  IoShape shape;               // queue depth and request size of chunk reads and writes
  DbPool* readers = nullptr;   // the store's reader connections (Store::Impl's); they outlive it
  uint64_t capacity = 0;       // the store's capacity row; 0: no limit but the filesystem's
  io::EngineOptions engines;   // of the I/O engines its pool makes
  ReleaseNames release_names;  // eviction's call into the namespace
  std::function<void(const std::vector<EvictedName>&)> on_evict;  // StoreOptions::on_evict
};

// The chunk store's state and operations. It reaches the transaction layer through `txn_` (every
// change is a txn_.Write) and the namespace only through `release_names_` (eviction). Its data
// members are private (see the top of this file): the calls below say what each use of them is.
//
// Concurrency: chunk files are renamed into place and unlinked only under txn.mu() (in the
// TxnHooks the layer calls under it), so a file and its row always change together as seen by any
// other writer. Space and TouchLog lock inside their own methods only (leaves). The layout cache,
// the engine pool and the reader pool lock inside their own calls too; a chunk's layout holds its
// file open, so a read in progress keeps its bytes even if the chunk is deleted meanwhile.
class ChunkStore {
 public:
  explicit ChunkStore(TxnLog& log) : txn_(log) {}
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // ---- open, recovery and close (called by store_open.cc)
  // Takes what open hands it and opens the chunk files (chunks/ is created when missing) and the
  // engine pool. An engine is made here, so that a refused io_uring (when asked for explicitly)
  // fails the open rather than the first read.
  Status Open(ChunkStoreSetup setup);
  // Recovery at open: removes the chunk files no committed row names (left by a crash between a
  // file's rename and its commit, or between a commit and the unlink) and returns the bytes the
  // committed chunks use. This is the whole of recovery for chunk data.
  Result<uint64_t> RemoveStrayFiles();
  // At open, from the committed rows: the bytes in use (chunks and extended attributes, which count
  // against the capacity too) and the number of chunks. Later, only committed effects change them
  // (ApplyEffects).
  void SetUsedBytes(uint64_t bytes) { space_.SetUsed(bytes); }
  void SetChunkCount(int64_t count) { chunk_count_ = count; }
  // Lets go of what it holds open (cached layouts hold their chunk files, the engines their rings),
  // before the store closes its readers and its writer.
  void Close();
  // The counter the transaction layer counts its errors in (TxnLog::Options::errors): one error
  // count for the whole store (StoreStats::errors).
  std::atomic<uint64_t>* error_counter() { return &counters_.errors; }

  // ---- what the rest of the store reads (statistics, usage, fsck)
  // The store's operation counters (StoreStats): mostly the chunk store's; the namespace counts
  // its puts and prefix lookups (CountPut, CountPrefixLookup, CountPrefixHit), the transaction
  // layer its errors, here too.
  const Counters& counters() const { return counters_; }
  const LatencyHistogram& read_latency() const { return read_latency_; }
  int64_t chunk_count() const { return chunk_count_.load(); }
  uint64_t capacity() const { return space_.capacity(); }  // 0: no limit but the filesystem's
  uint64_t BytesInUse() { return space_.InUse(); }         // used and reserved
  io::EngineKind engine_kind() const { return engines_->kind(); }
  // The chunk files, for fsck to compare with the rows (names and listing only).
  const ChunkFiles& files() const { return files_; }

  // ---- what the namespace asks besides references (namespace/)
  // Whether `bytes` more fit beside what is used and reserved now, without reserving or evicting:
  // extended attributes are small and never evict content (namespace/xattr.cc).
  bool HasRoomFor(uint64_t bytes) { return space_.HasRoomFor(bytes); }
  // A file's content committed (namespace/content.cc): counted as a put of `bytes`, as Put counts.
  void CountPut(uint64_t bytes) {
    ++counters_.puts;
    counters_.put_bytes += bytes;
  }
  // A prefix lookup begun, and one that found something (namespace/prefix.cc).
  void CountPrefixLookup() { ++counters_.prefix_lookups; }
  void CountPrefixHit() { ++counters_.prefix_hits; }

  // What the transaction layer asks of the chunk store (syncing and installing chunk files,
  // removing deleted ones, access times), handed to txn at open, before any transaction, by
  // Store::Impl::RegisterWithTxn, which adds `apply`: ApplyEffects and the namespace's count.
  TxnHooks TxnHooksForChunks();
  // A committed change's effects on the chunk count, the capacity, the layout cache and the
  // eviction counters (and kdnfs's on_evict).
  void ApplyEffects(TxnEffects& fx);
  // Writes the access times noted in `touches_` in the transaction of `db`.
  Status FlushTouched(Db& db);

  Result<std::shared_ptr<const ChunkLayout>> LoadLayout(const ChunkId& id);
  Result<bool> ChunkExists(const ChunkId& id);
  // Hashes and checks `bytes`. When capacity is at hand (without evicting) it also writes them to
  // a temporary file, hashing each piece while the ones before it are on their way to the disk
  // (hashing is then off the put's critical path), and drops that file again if the id turns out
  // to be stored already.
  Result<std::unique_ptr<PreparedChunk>> PrepareMemory(std::span<const std::byte> bytes,
                                                       ChunkSource& source);
  // The same for a staged file; `held`: capacity the caller reserved for it, now the chunk's
  // (given back with it unless it is published). New content with capacity at hand is written
  // while it is hashed, in one read of the file (the id is that of the bytes written).
  Result<std::unique_ptr<PreparedChunk>> PrepareFile(int fd, const std::string& path,
                                                     uint64_t held);
  // A staged file whose content id the caller computed from it (CommitHashedFile): checked
  // (`.kv` content) and summed, then, unless the chunk is stored already, the file itself is the
  // chunk's temporary file, renamed into place by the commit (no copy, no second SHA-256 pass).
  Result<std::unique_ptr<PreparedChunk>> PrepareHashedFile(int fd, const std::string& path,
                                                           const ChunkId& id, uint64_t held);
  // Publishes (or references) a prepared chunk inside a transaction. False when the chunk is not
  // stored and `chunk` was not written (it vanished since we looked): write it and retry.
  Result<bool> InstallChunk(Db& db, PreparedChunk& chunk, RefKind kind, bool keep, TxnEffects& fx);
  Status AddChunkRef(Db& db, const ChunkId& id, RefKind kind, bool keep);
  Status DropChunkRef(Db& db, const ChunkId& id, RefKind kind, bool keep, TxnEffects& fx);
  // Stores content (written when new) and takes a reference with `commit` in one transaction.
  template <typename Commit>
  Status StoreAndCommit(PreparedChunk& chunk, ChunkSource& source, bool lock_opens,
                        Commit&& commit);
  // Holds `bytes` of capacity for a chunk being written, evicting when the store is full.
  Status Reserve(PreparedChunk& chunk, uint64_t bytes);
  // The same without evicting (so that content that turns out to be stored already never costs
  // an eviction); false when the capacity is not at hand.
  bool TryReserve(PreparedChunk& chunk, uint64_t bytes);
  // Gives back what an unpublished chunk holds: its capacity and its temporary file.
  void FreeUnpublished(PreparedChunk& chunk);
  Result<uint64_t> Evict(uint64_t want_bytes);
  Status ReadAll(const ChunkId& id, const std::function<Status(std::span<const std::byte>)>& sink);

  // The chunk calls of kdn::Store (include/kdn/store.h), which forward here.
  Result<ChunkId> Put(std::span<const std::byte> bytes, const PutOptions& options);
  Result<size_t> Get(const ChunkId& id, uint64_t offset, std::span<std::byte> out);
  Result<ChunkInfo> StatChunk(const ChunkId& id);
  Status Release(const ChunkId& id);
  Result<std::vector<Extent>> Extents(const ChunkId& id);
  Result<int> OpenChunkForRead(const ChunkId& id);
  void Touch(const ChunkId& id);
  Status VerifyChunk(const ChunkId& id);
  Status ReserveSpace(uint64_t bytes, bool evict);
  void ReleaseSpace(uint64_t bytes);

 private:
  // Reserves capacity and writes the chunk's bytes to a new temporary file (not yet synced: the
  // commit does that).
  Status WriteData(PreparedChunk& chunk, ChunkSource& source);
  // Writes them to a new temporary file (dropped on failure), feeding `hasher` when given.
  Status WriteFile(PreparedChunk& chunk, ChunkSource& source, ContentHasher* hasher);
  Status DeleteChunkRows(Db& db, const ChunkId& id, TxnEffects& fx);
  // Caches the layout of a chunk this thread published (skipped if any chunk was deleted since
  // `generation`, which might have been this one).
  void CacheLayout(PreparedChunk& chunk, uint64_t generation);

  // ---- state, set by Open (the first block) or kept by the chunk store itself. Destroyed in the
  // reverse order: the layouts (which hold chunk files open) before the engines.
  TxnLog& txn_;  // the transaction layer: every change is a txn_.Write
  IoShape shape_;
  DbPool* readers_ = nullptr;  // the store's reader connections (Store::Impl's), from Open on
  ChunkFiles files_;
  Space space_;                 // capacity, used and reserved bytes
  ReleaseNames release_names_;  // eviction's call into the namespace (handed over at Open)
  std::function<void(const std::vector<EvictedName>&)> on_evict_;  // StoreOptions::on_evict
  std::unique_ptr<EnginePool> engines_;
  // Layouts hold their chunk file open: small enough to stay far from descriptor limits.
  LayoutCache layouts_{256};
  TouchLog touches_;  // access times not yet written
  Counters counters_;
  LatencyHistogram read_latency_;
  std::atomic<int64_t> chunk_count_{0};
};

template <typename Commit>
Status ChunkStore::StoreAndCommit(PreparedChunk& chunk, ChunkSource& source, bool lock_opens,
                                  Commit&& commit) {
  struct FreeGuard {
    ChunkStore* chunks;
    PreparedChunk& chunk;
    ~FreeGuard() { chunks->FreeUnpublished(chunk); }
  } guard{this, chunk};
  for (int attempt = 0; attempt < 3; ++attempt) {
    const uint64_t generation = layouts_.generation();
    if (!chunk.written && chunk.size > 0) {
      KDN_ASSIGN_OR_RETURN(bool exists, ChunkExists(chunk.id));
      if (!exists || attempt > 0) KDN_RETURN_IF_ERROR(WriteData(chunk, source));
    }
    bool vanished = false;
    // The file, when written for this commit and not yet in place, is synced and installed by it.
    Status s = txn_.Write(
        lock_opens, [&](Db& db, TxnEffects& fx) -> Status { return commit(db, fx, &vanished); },
        chunk.written && !chunk.installed ? &chunk : nullptr);
    if (vanished) continue;  // deleted between our look and our commit: write it and retry
    // Readers of a chunk just written usually come soon: give them its layout.
    if (s.ok() && chunk.published) CacheLayout(chunk, generation);
    return s;
  }
  return Status::Internal("chunk " + chunk.id.ToHex() + " kept vanishing during commit");
}

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_STORE_H_
