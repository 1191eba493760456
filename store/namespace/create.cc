// MakeNode: creating a file, directory, symlink or special file under a name.
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

Result<InodeAttr> Store::MakeNode(Ino parent, std::string_view name, const NewNode& node,
                                  std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  const uint32_t type = node.mode & S_IFMT;
  switch (type) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      break;
    case S_IFLNK:
      if (node.symlink_target.empty()) return Status::InvalidArgument("empty symlink target");
      if (node.symlink_target.size() >= 4096) return Errno(ENAMETOOLONG, "symlink target");
      break;
    default:
      return Status::InvalidArgument("unknown file type in mode " + std::to_string(node.mode));
  }
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->txn.Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr dir, LoadDir(db, parent));
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> existing, FindDentry(db, parent, name));
    if (existing) return Status::AlreadyExists(Quote(name) + " exists");
    const int64_t now = NowNs();
    const int64_t t = Resolve(node.time_ns, now);
    out = InodeAttr{};
    out.mode = node.mode;
    out.uid = node.uid;
    out.gid = node.gid;
    out.nlink = type == S_IFDIR ? 2 : 1;
    out.size = type == S_IFLNK ? node.symlink_target.size() : 0;
    out.atime_ns = out.mtime_ns = out.ctime_ns = t;
    out.rdev = (type == S_IFCHR || type == S_IFBLK) ? node.rdev : 0;
    out.evictable = dir.evictable;
    KDN_ASSIGN_OR_RETURN(
        Stmt q, db.Prepare("INSERT INTO inodes(mode, uid, gid, nlink, size, atime, mtime, ctime, "
                           "rdev, chunk, target, parent, evictable, pinned) "
                           "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, 0)"));
    q.BindInt(1, out.mode).BindInt(2, out.uid).BindInt(3, out.gid).BindInt(4, out.nlink);
    q.BindInt(5, out.size).BindInt(6, t).BindInt(7, t).BindInt(8, t).BindInt(9, out.rdev);
    if (type == S_IFLNK) {
      q.BindBlob(10, AsBytes(node.symlink_target));
    } else {
      q.BindNull(10);
    }
    if (type == S_IFDIR) {
      q.BindInt(11, parent);
    } else {
      q.BindNull(11);
    }
    q.BindInt(12, out.evictable ? 1 : 0);
    KDN_RETURN_IF_ERROR(q.Run());
    out.ino = static_cast<Ino>(db.LastInsertRowid());
    if (out.ino > kMaxStoreIno) return Status::NoSpace("inode numbers exhausted");
    KDN_ASSIGN_OR_RETURN(Stmt d, db.Prepare("INSERT INTO dentries(parent, name, ino) "
                                            "VALUES(?, ?, ?)"));
    d.BindInt(1, parent).BindBlob(2, AsBytes(name)).BindInt(3, out.ino);
    KDN_RETURN_IF_ERROR(d.Run());
    if (type == S_IFDIR) KDN_RETURN_IF_ERROR(AddNlink(db, parent, 1, now));
    KDN_RETURN_IF_ERROR(TouchDir(db, parent, now));
    ++fx.inode_delta;
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  }));
  return out;
}

}  // namespace kdn
