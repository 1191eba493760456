#include "store/schema.h"

#include <sys/stat.h>

#include <string>

namespace kdn::store {
namespace {

// Chunk ids and prefix hashes are 16-byte keys (store/chunk_id.h). Reference counts are split by
// kind so that eviction can tell weak from strong holders:
//   put_refs / put_keep     references taken by Put (put_keep: the non-evictable ones)
//   inode_refs / inode_keep inodes whose content the chunk is (inode_keep: of those, the ones
//                           that are not evictable or are pinned)
// A chunk is an eviction candidate when put_keep = inode_keep = pins = 0 (chunks_lru). `pins`
// stays 0: pinning is per file (inodes.pinned, counted in inode_keep); the column remains so that
// existing stores open unchanged.
// Its bytes are its chunk file (store/chunk_files.h); `stored` is its size rounded up to 4 KiB,
// what the capacity counts.
// `sums` holds one xxh3-64 (little-endian) per `block_bytes` of content: every read checks them.
// Directories record their parent (for "..", loop checks and paths); dentry ids are the readdir
// cookies, so they only grow. Inodes with nlink = 0 are orphans: open files that lost their last
// name, reclaimed at close or at the next open.
constexpr const char* kSchema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE chunks(
  id BLOB PRIMARY KEY,
  size INTEGER NOT NULL,
  stored INTEGER NOT NULL,
  block_bytes INTEGER NOT NULL,
  sums BLOB NOT NULL,
  put_refs INTEGER NOT NULL,
  put_keep INTEGER NOT NULL,
  inode_refs INTEGER NOT NULL,
  inode_keep INTEGER NOT NULL,
  pins INTEGER NOT NULL,
  atime INTEGER NOT NULL,
  ctime INTEGER NOT NULL,
  kv INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX chunks_lru ON chunks(atime) WHERE put_keep = 0 AND inode_keep = 0 AND pins = 0;
CREATE TABLE kv_meta(
  chunk BLOB PRIMARY KEY,
  model TEXT NOT NULL,
  fingerprint BLOB NOT NULL,
  n_layers INTEGER NOT NULL,
  n_tokens INTEGER NOT NULL,
  position_offset INTEGER NOT NULL,
  chunk_tokens INTEGER NOT NULL,
  codec TEXT NOT NULL,
  raw_bytes INTEGER NOT NULL,
  file_bytes INTEGER NOT NULL,
  n_prefix INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE prefixes(
  hash BLOB NOT NULL,
  chunk BLOB NOT NULL,
  idx INTEGER NOT NULL,
  PRIMARY KEY(hash, chunk)
) WITHOUT ROWID;
CREATE INDEX prefixes_chunk ON prefixes(chunk);
CREATE TABLE inodes(
  ino INTEGER PRIMARY KEY AUTOINCREMENT,
  mode INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  gid INTEGER NOT NULL,
  nlink INTEGER NOT NULL,
  size INTEGER NOT NULL,
  atime INTEGER NOT NULL,
  mtime INTEGER NOT NULL,
  ctime INTEGER NOT NULL,
  rdev INTEGER NOT NULL,
  chunk BLOB,
  target BLOB,
  parent INTEGER,
  evictable INTEGER NOT NULL,
  pinned INTEGER NOT NULL
);
CREATE INDEX inodes_chunk ON inodes(chunk) WHERE chunk IS NOT NULL;
CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;
CREATE TABLE dentries(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  parent INTEGER NOT NULL,
  name BLOB NOT NULL,
  ino INTEGER NOT NULL
);
CREATE UNIQUE INDEX dentries_name ON dentries(parent, name);
CREATE INDEX dentries_list ON dentries(parent, id);
CREATE INDEX dentries_ino ON dentries(ino);
CREATE TABLE xattrs(
  ino INTEGER NOT NULL,
  name BLOB NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY(ino, name)
) WITHOUT ROWID;
)sql";

// The outbox (Store::ReadOutbox): notes for a follower of the store's changes, written in the
// transaction of the change. Added to version 2 without a version change: a build that does not
// know the table ignores it, and IF NOT EXISTS adds it to stores made before it.
constexpr const char* kOutboxSchema = R"sql(
CREATE TABLE IF NOT EXISTS outbox(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  chunk BLOB,
  body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_chunk ON outbox(chunk) WHERE chunk IS NOT NULL;
)sql";

}  // namespace

Status ConfigureConnection(Db& db, bool sync_full) {
  KDN_RETURN_IF_ERROR(db.Exec("PRAGMA journal_mode=WAL"));
  // NORMAL: a COMMIT writes its WAL frames but does not sync them; the store syncs the log itself
  // (store::TxnLog::SyncLog, txn.cc), and SQLite syncs around checkpoints.
  KDN_RETURN_IF_ERROR(
      db.Exec(sync_full ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=OFF"));
  KDN_RETURN_IF_ERROR(db.Exec("PRAGMA temp_store=MEMORY"));
  KDN_RETURN_IF_ERROR(db.Exec("PRAGMA cache_size=-16384"));  // 16 MiB per connection
  return Status::OK();
}

Result<int64_t> GetMetaInt(Db& db, const char* key, int64_t fallback) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT value FROM meta WHERE key = ?"));
  q.BindText(1, key);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.Int(0) : fallback;
}

Status SetMetaInt(Db& db, const char* key, int64_t value) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)"));
  q.BindText(1, key).BindInt(2, value);
  return q.Run();
}

Status InitSchema(Db& db, uint32_t root_uid, uint32_t root_gid, int64_t now_ns) {
  KDN_ASSIGN_OR_RETURN(WriteTxn txn, WriteTxn::Begin(db));
  bool have = false;
  {
    KDN_ASSIGN_OR_RETURN(
        Stmt exists, db.Prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"));
    KDN_ASSIGN_OR_RETURN(have, exists.Step());
  }
  if (have) {
    KDN_ASSIGN_OR_RETURN(int64_t version, GetMetaInt(db, "schema_version", 0));
    if (version == 1) {
      return Status::Unsupported("store schema version 1 (segment files): this build reads "
                                 "version " + std::to_string(kSchemaVersion) +
                                 " (a file per chunk)");
    }
    if (version != kSchemaVersion) {
      return Status::Unsupported("store schema version " + std::to_string(version) +
                                 " (this build reads version " + std::to_string(kSchemaVersion) +
                                 ")");
    }
    KDN_RETURN_IF_ERROR(db.Exec(kOutboxSchema));  // stores made before the outbox existed
    return txn.Commit();
  }
  KDN_RETURN_IF_ERROR(db.Exec(kSchema));
  KDN_RETURN_IF_ERROR(db.Exec(kOutboxSchema));
  KDN_RETURN_IF_ERROR(SetMetaInt(db, "schema_version", kSchemaVersion));
  KDN_RETURN_IF_ERROR(SetMetaInt(db, "created_ns", now_ns));
  KDN_ASSIGN_OR_RETURN(
      Stmt root, db.Prepare("INSERT INTO inodes(ino, mode, uid, gid, nlink, size, atime, mtime, "
                            "ctime, rdev, parent, evictable, pinned) "
                            "VALUES(1, ?, ?, ?, 2, 0, ?, ?, ?, 0, 1, 0, 0)"));
  root.BindInt(1, S_IFDIR | 0755).BindInt(2, root_uid).BindInt(3, root_gid);
  root.BindInt(4, now_ns).BindInt(5, now_ns).BindInt(6, now_ns);
  KDN_RETURN_IF_ERROR(root.Run());
  return txn.Commit();
}

}  // namespace kdn::store
