// The transaction layer: how the chunk store and the namespace change the store's database.
//
// What a change gets: a body `Status(Db&, TxnEffects&)` run by Store::Impl::Write (txn.cc). The
// Db is the one writer connection, inside a savepoint of the current group commit: concurrent
// changes share one SQLite transaction (and the data syncs before it), each in its own savepoint so
// that one failing body leaves the others alone. A change that publishes a chunk passes its
// PreparedChunk to Write, which syncs the chunk's file and renames it into place before the
// transaction. What the body changes outside the database it records in TxnEffects, applied by
// the caller's thread after the COMMIT: counts, capacity, and the hooks that must wait until the
// commit is durable (the files of deleted chunks are unlinked only once SyncLog has synced the
// WAL past the transaction, since a power loss could otherwise bring their rows back).
//
// What a reader gets: a read connection leased from the pool (store/db_pool.h), never the writer.
//
// Both parts use it, and it knows neither: dependencies point namespace -> chunk store (
// store/chunk_store.h) -> transaction layer. Its state (the writer, the group-commit queues, the
// log syncer) lives in Store::Impl (store_impl.h, "transactions" and "durability of the log").
#ifndef KDN_STORE_TXN_H_
#define KDN_STORE_TXN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"
#include "store/chunk_id.h"
#include "store/sqlite_db.h"

namespace kdn::store {

struct PreparedChunk;  // store/chunk_store.h

// What a committed transaction changes outside the database; applied only after COMMIT
// (deleted chunks' files removed only once the transaction is durable: see Store::Impl::SyncLog).
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

}  // namespace kdn::store

#endif  // KDN_STORE_TXN_H_
