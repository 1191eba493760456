// Reclaiming inodes: dropping an inode (and its content reference) and dropping one link,
// shared by unlink, rename, eviction and recovery.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "store/clock.h"
#include "store/namespace/namespace.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::NowNs;
using store::PreparedChunk;
using store::RefKind;
using store::Stmt;
using store::TxnEffects;
using namespace store::ns;  // the helpers every operation shares (namespace.h)

Status Store::Impl::DropInode(Db& db, Ino ino, TxnEffects& fx) {
  Result<InodeAttr> a = LoadInode(db, ino);
  if (!a.ok()) return a.status().IsNotFound() ? Status::OK() : a.status();
  return DropInode(db, *a, fx);
}

Status Store::Impl::DropInode(Db& db, const InodeAttr& a, TxnEffects& fx) {
  {
    // Its attributes' bytes go back to the capacity with it.
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT COALESCE(SUM(length(name) + length(value)), "
                                            "0) FROM xattrs WHERE ino = ?"));
    q.BindInt(1, a.ino);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) fx.xattr_bytes_delta -= static_cast<int64_t>(q.U64(0));
  }
  static constexpr const char* kDeletes[] = {"DELETE FROM xattrs WHERE ino = ?",
                                             "DELETE FROM inodes WHERE ino = ?"};
  for (const char* sql : kDeletes) {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare(sql));
    q.BindInt(1, a.ino);
    KDN_RETURN_IF_ERROR(q.Run());
  }
  --fx.inode_delta;
  if (!a.chunk.IsZero()) {
    KDN_RETURN_IF_ERROR(chunks.DropChunkRef(db, a.chunk, RefKind::kInode, Keeps(a), fx));
  }
  return Status::OK();
}

Status Store::Impl::DropLink(Db& db, const InodeAttr& a, int64_t now, TxnEffects& fx) {
  // The last name of a closed file: the row goes, so its link count need not be written first
  // (an unlink is then 3 statements fewer: it runs once per file of an `rm -r`).
  if (a.nlink <= 1 && !opens.IsOpen(a.ino)) return DropInode(db, a, fx);
  return AddNlink(db, a.ino, -1, now);
}

}  // namespace kdn
