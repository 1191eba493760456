// The chunk store: content by id. Chunk files (store/chunk_files.h), content ids (chunk_id.h),
// reference counts, put with deduplication, space accounting, capacity and eviction (least
// recently used first), verified reads. It knows nothing of names: the namespace
// (store/namespace/) refers to content only by chunk id and takes and drops references through
// AddChunkRef / DropChunkRef / InstallChunk. Eviction, which must also remove the files whose
// content a chosen chunk is, does so through the ReleaseNames the namespace registered at open
// (namespace/evict.cc), in the same transaction: the dependency stays one-way. Every change runs
// through the transaction layer (store/txn.h); deleting a chunk's rows records its file in
// TxnEffects, unlinked once the deletion is durable. The layer knows no chunk files: what it needs
// done with them (syncing and installing a change's chunk file before its transaction, removing
// deleted chunks' files, writing access times, applying effects) it asks through the
// store::TxnHooks the chunk store registers at open (Store::Impl::RegisterWithTxn).
//
// Its own state so far: Space (capacity, used and reserved bytes) and TouchLog (access times not
// yet written), both below; the rest (chunk files, layout cache, engines, counters) is still in
// Store::Impl's "chunk store" section (store_impl.h).
// Implementation: chunk_store.cc (those two objects, the TxnHooks, Store::Impl's chunk store
// methods, and the chunk calls of kdn::Store: Put, Get, StatChunk, Release, Extents,
// OpenChunkForRead, Touch, VerifyChunk, ReserveSpace, ReleaseSpace).
#ifndef KDN_STORE_CHUNK_STORE_H_
#define KDN_STORE_CHUNK_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "store/chunk_id.h"
#include "store/format/file_io.h"
#include "store/kv_content.h"
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
// (Store::Impl::FlushTouched), so the map stays small. Its lock is a leaf.
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
// store knows no names: the namespace registers this at open (namespace/evict.cc).
using ReleaseNames =
    std::function<Result<bool>(Db& db, const ChunkId& id, int64_t now, TxnEffects& fx)>;

// Who holds a reference: a put (Store::Put, until Release) or an inode whose content it is.
enum class RefKind { kPut, kInode };

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_STORE_H_
