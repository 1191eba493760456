// Migration of a version 1 store (chunk bytes in 1 GiB segment files, seg/NNNNNN.seg, located by
// an `extents` table, chunks named by XXH3-128) to version 2 (a file per chunk, named by SHA-256).
//
// Crash-safe and resumable: every chunk is first copied to its chunk file (read from the segments
// with its block checksums verified, written to staging/, synced, renamed into chunks/, the
// directory synced), touching nothing of version 1; then one transaction renames every chunk to
// its new id everywhere (chunks, inodes, `.kv` metadata, prefixes), drops `extents` and records
// version 2; then seg/ is removed. A crash before the transaction leaves a version 1 store (the
// copies are redone or found done at the next open; strays are removed once it is version 2); a
// crash after it leaves a version 2 store with seg/ still there, removed at the next open.
#ifndef KDN_STORE_MIGRATE_V1_H_
#define KDN_STORE_MIGRATE_V1_H_

#include <cstdint>
#include <functional>
#include <string>

#include "kdn/status.h"
#include "store/chunk_files.h"
#include "store/sqlite_db.h"

namespace kdn::store {

// Migrates the store in `dir` whose database (`db`, the writer connection, schema version 1) is
// open and locked. `files` is opened on `dir`. `progress` (may be empty) hears of every chunk
// copied.
Status MigrateV1(Db& db, const std::string& dir, ChunkFiles& files, bool sync_full,
                 const std::function<void(uint64_t done, uint64_t total)>& progress);

// Removes seg/ of a store already migrated (a crash came between the commit and the removal).
Status RemoveV1Segments(const std::string& dir);

}  // namespace kdn::store

#endif  // KDN_STORE_MIGRATE_V1_H_
