// Store::Impl: the state behind kdn::Store, composed of its parts, one object each:
//   the transaction layer  txn.h, txn.cc (group commit, log sync): store::TxnLog, the member `txn`
//   the chunk store        chunk_store.h, chunk_store.cc: store::ChunkStore, the member `chunks`
//                          (chunk files, capacity (store::Space), access times (store::TouchLog),
//                          layouts, engines, counters)
//   the namespace          namespace/ (one file per operation; namespace/namespace.h): the
//                          Store::Impl methods of the section below, with store::OpenCounts, the
//                          member `opens`
//   open and recovery      store_open.cc;  fsck  store_fsck.cc
// Dependencies point namespace -> chunk store -> transaction layer: the namespace calls `chunks`,
// which holds a reference to `txn`. Each lower part reaches the one above only through what that
// part hands it at open: eviction reaches the namespace through store::ReleaseNames
// (ReleaseNamesForChunks, in the chunk store's store::ChunkStoreSetup), and the transaction layer
// reaches the chunk files, access times and effects through store::TxnHooks (RegisterWithTxn,
// which has the chunk store make them).
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
  UniqueFd lock_fd;

  std::unique_ptr<store::DbPool> readers;
  store::OpenCounts opens;  // the namespace's open counts (store/namespace/namespace.h)

  // ---- the transaction layer (txn.h, txn.cc): the writer connection, group commit, the sticky
  // background error, the log's durability. Every change of either part is a txn.Write.
  store::TxnLog txn;
  // ---- the chunk store (chunk_store.h, chunk_store.cc); after `txn`, which it refers to.
  store::ChunkStore chunks{txn};

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

  // Registers what the transaction layer asks of the chunk store (store::TxnHooks: syncing and
  // installing chunk files, removing deleted ones, access times; the chunk store's
  // TxnHooksForChunks) and the effects of a committed change (the namespace's inode count and the
  // chunk store's ApplyEffects), at open, before any transaction.
  void RegisterWithTxn();

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
  // RemoveFilesWithContent as the chunk store's ReleaseNames, handed to it at open
  // (store::ChunkStoreSetup), before any eviction.
  store::ReleaseNames ReleaseNamesForChunks();
  // Stores a chunk prepared from the staged file open as `fd` and makes it the content of `ino`,
  // in one transaction (namespace/content.cc). Should the chunk turn out to need copying from the
  // file after its id was computed (content found stored, then gone before the commit; or no
  // capacity at hand while preparing), the copy is hashed again (CheckUnchanged): the id holds only
  // for the file as it was.
  Status CommitPreparedFile(Ino ino, store::PreparedChunk& chunk, int fd, const std::string& path,
                            const CommitOptions& options, InodeAttr* out);
  // Makes the prepared `chunk` the content of `ino` in the transaction of `db`.
  Status SetContent(store::Db& db, Ino ino, store::PreparedChunk& chunk, const CommitOptions& opts,
                    store::TxnEffects& fx, bool* vanished, InodeAttr* out);
};

}  // namespace kdn

#endif  // KDN_STORE_STORE_IMPL_H_
