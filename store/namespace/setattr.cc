// Attributes: SetAttr (mode, owner, size, times), SetEvictable, SetPinned.
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

Result<InodeAttr> Store::SetAttr(Ino ino, const SetAttrRequest& req,
                                 std::string_view outbox_note) {
  InodeAttr a;
  KDN_RETURN_IF_ERROR(impl_->txn.Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_ASSIGN_OR_RETURN(a, LoadInode(db, ino));
    const int64_t now = NowNs();
    bool changed = false;
    if (req.mode) {
      a.mode = (a.mode & S_IFMT) | (*req.mode & 07777);
      changed = true;
    }
    if (req.uid) {
      a.uid = *req.uid;
      changed = true;
    }
    if (req.gid) {
      a.gid = *req.gid;
      changed = true;
    }
    if (req.size && *req.size != a.size) {
      if (S_ISDIR(a.mode)) return Errno(EISDIR, "truncate of a directory");
      if (!S_ISREG(a.mode)) return Status::InvalidArgument("truncate of a non-regular file");
      if (*req.size != 0) {
        return Status::InvalidArgument("committed content is immutable: truncation to " +
                                       std::to_string(*req.size) +
                                       " bytes must re-stage the file and commit it");
      }
      if (!a.chunk.IsZero()) {
        KDN_RETURN_IF_ERROR(impl_->chunks.DropChunkRef(db, a.chunk, RefKind::kInode, Keeps(a), fx));
      }
      a.chunk = ChunkId{};
      a.size = 0;
      a.mtime_ns = now;
      changed = true;
    }
    if (req.atime_ns) {
      a.atime_ns = Resolve(*req.atime_ns, now);
      changed = true;
    }
    if (req.mtime_ns) {
      a.mtime_ns = Resolve(*req.mtime_ns, now);
      changed = true;
    }
    if (req.ctime_ns) {
      a.ctime_ns = Resolve(*req.ctime_ns, now);
    } else if (changed) {
      a.ctime_ns = now;
    }
    KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE inodes SET mode = ?, uid = ?, gid = ?, "
                                            "size = ?, atime = ?, mtime = ?, ctime = ?, "
                                            "chunk = CASE WHEN ? THEN chunk ELSE NULL END "
                                            "WHERE ino = ?"));
    u.BindInt(1, a.mode).BindInt(2, a.uid).BindInt(3, a.gid).BindInt(4, a.size);
    u.BindInt(5, a.atime_ns).BindInt(6, a.mtime_ns).BindInt(7, a.ctime_ns);
    u.BindInt(8, a.chunk.IsZero() ? 0 : 1).BindInt(9, ino);
    KDN_RETURN_IF_ERROR(u.Run());
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  }));
  return a;
}

namespace {

// After a change of `a`'s evictable or pinned flag: its chunk's count of inodes that keep it
// follows, when whether `a` keeps it changed.
Status UpdateChunkKeep(Db& db, const InodeAttr& a, bool keep_before) {
  if (a.chunk.IsZero() || Keeps(a) == keep_before) return Status::OK();
  KDN_ASSIGN_OR_RETURN(Stmt c, db.Prepare("UPDATE chunks SET inode_keep = max(inode_keep + ?, 0) "
                                          "WHERE id = ?"));
  c.BindInt(1, Keeps(a) ? 1 : -1).BindId(2, a.chunk);
  return c.Run();
}

}  // namespace

Status Store::SetEvictable(Ino ino, bool evictable) {
  return impl_->txn.Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (a.evictable == evictable) return Status::OK();
    const bool keep_before = Keeps(a);
    a.evictable = evictable;
    KDN_RETURN_IF_ERROR(UpdateChunkKeep(db, a, keep_before));
    KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE inodes SET evictable = ?, ctime = ? "
                                            "WHERE ino = ?"));
    u.BindInt(1, evictable ? 1 : 0).BindInt(2, NowNs()).BindInt(3, ino);
    return u.Run();
  });
}

Status Store::SetPinned(Ino ino, bool pinned) {
  return impl_->txn.Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (S_ISDIR(a.mode)) return Status::InvalidArgument("only files can be pinned");
    if (a.pinned == pinned) return Status::OK();
    const bool keep_before = Keeps(a);
    a.pinned = pinned;
    KDN_RETURN_IF_ERROR(UpdateChunkKeep(db, a, keep_before));
    KDN_ASSIGN_OR_RETURN(Stmt u,
                         db.Prepare("UPDATE inodes SET pinned = ?, ctime = ? WHERE ino = ?"));
    u.BindInt(1, pinned ? 1 : 0).BindInt(2, NowNs()).BindInt(3, ino);
    return u.Run();
  });
}

}  // namespace kdn
