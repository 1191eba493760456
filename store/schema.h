// The store's database schema (meta.db) and its creation.
#ifndef KDN_STORE_SCHEMA_H_
#define KDN_STORE_SCHEMA_H_

#include <cstdint>

#include "kdn/status.h"
#include "store/sqlite_db.h"

namespace kdn::store {

// 1: chunk bytes in segment files (an `extents` table); 2: a file per chunk.
inline constexpr int64_t kSchemaVersion = 2;

// Creates the tables and the root directory (ino 1, owned by uid/gid) if the database is new;
// checks the version of an existing one.
Status InitSchema(Db& db, uint32_t root_uid, uint32_t root_gid, int64_t now_ns);

// Per-connection settings: WAL, synchronous NORMAL (or OFF without syncs), memory temp store.
Status ConfigureConnection(Db& db, bool sync_full);

Result<int64_t> GetMetaInt(Db& db, const char* key, int64_t fallback);
Status SetMetaInt(Db& db, const char* key, int64_t value);

}  // namespace kdn::store

#endif  // KDN_STORE_SCHEMA_H_
