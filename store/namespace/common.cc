// The helpers the namespace operations share (declared in namespace.h).
#include "store/namespace/namespace.h"

#include <sys/stat.h>

namespace kdn::store::ns {

InodeAttr ReadAttr(const Stmt& q, int c) {
  InodeAttr a;
  a.ino = q.U64(c);
  a.mode = static_cast<uint32_t>(q.U64(c + 1));
  a.uid = static_cast<uint32_t>(q.U64(c + 2));
  a.gid = static_cast<uint32_t>(q.U64(c + 3));
  a.nlink = static_cast<uint32_t>(q.U64(c + 4));
  a.size = q.U64(c + 5);
  a.atime_ns = q.Int(c + 6);
  a.mtime_ns = q.Int(c + 7);
  a.ctime_ns = q.Int(c + 8);
  a.rdev = q.U64(c + 9);
  a.chunk = q.IsNull(c + 10) ? ChunkId{} : q.Chunk(c + 10);
  a.evictable = q.Int(c + 11) != 0;
  a.pinned = q.Int(c + 12) != 0;
  return a;
}

Status CheckName(std::string_view name) {
  if (name.empty()) return Errno(ENOENT, "empty name");
  if (name.size() > 255) return Errno(ENAMETOOLONG, "name longer than 255 bytes");
  if (name == "." || name == "..") return Status::InvalidArgument("name " + Quote(name));
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument("name contains '/' or NUL");
  }
  return Status::OK();
}

Result<InodeAttr> LoadInode(Db& db, Ino ino) {
  KDN_ASSIGN_OR_RETURN(Stmt q,
                       db.Prepare("SELECT " KDN_INODE_COLS " FROM inodes i WHERE i.ino = ?"));
  q.BindInt(1, ino);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("inode " + std::to_string(ino) + " does not exist");
  return ReadAttr(q, 0);
}

Result<InodeAttr> LoadDir(Db& db, Ino ino) {
  KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
  if (!S_ISDIR(a.mode)) return Errno(ENOTDIR, "inode " + std::to_string(ino));
  if (a.nlink == 0) return Errno(ENOENT, "directory " + std::to_string(ino) + " was removed");
  return a;
}

Result<std::optional<Dentry>> FindDentry(Db& db, Ino parent, std::string_view name) {
  KDN_ASSIGN_OR_RETURN(Stmt q,
                       db.Prepare("SELECT id, ino FROM dentries WHERE parent = ? AND name = ?"));
  q.BindInt(1, parent).BindBlob(2, AsBytes(name));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return std::optional<Dentry>();
  return std::optional<Dentry>(Dentry{q.Int(0), q.U64(1)});
}

Status TouchDir(Db& db, Ino dir, int64_t now) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("UPDATE inodes SET mtime = ?, ctime = ? WHERE ino = ?"));
  q.BindInt(1, now).BindInt(2, now).BindInt(3, dir);
  return q.Run();
}

Status AddNlink(Db& db, Ino ino, int64_t delta, int64_t ctime) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("UPDATE inodes SET nlink = max(nlink + ?, 0), ctime = ? "
                                          "WHERE ino = ?"));
  q.BindInt(1, delta).BindInt(2, ctime).BindInt(3, ino);
  return q.Run();
}

Status SetParent(Db& db, Ino dir, Ino parent) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("UPDATE inodes SET parent = ? WHERE ino = ?"));
  q.BindInt(1, parent).BindInt(2, dir);
  return q.Run();
}

Result<bool> DirIsEmpty(Db& db, Ino dir) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT 1 FROM dentries WHERE parent = ? LIMIT 1"));
  q.BindInt(1, dir);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return !row;
}

Result<bool> IsWithin(Db& db, Ino dir, Ino ancestor) {
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT parent FROM inodes WHERE ino = ?"));
  for (int depth = 0; depth < 65536; ++depth) {
    if (dir == ancestor) return true;
    if (dir == kRootIno) return false;
    q.BindInt(1, dir);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row || q.IsNull(0)) return false;
    dir = q.U64(0);
    q.Reset();
  }
  return Status::Corruption("directory parents form a loop");
}

}  // namespace kdn::store::ns
