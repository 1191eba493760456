// The namespace: inodes, directory entries and xattrs in the store's database, each call one
// transaction, and file content published with its chunk in the same transaction.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "store/clock.h"
#include "store/store_impl.h"

namespace kdn {

using store::Db;
using store::NowNs;
using store::PreparedChunk;
using store::RefKind;
using store::Stmt;
using store::TxnEffects;

namespace {

// Columns of an inode as ReadAttr expects them.
#define KDN_INODE_COLS                                                                         \
  "i.ino, i.mode, i.uid, i.gid, i.nlink, i.size, i.atime, i.mtime, i.ctime, i.rdev, i.chunk, " \
  "i.evictable, i.pinned"

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

Status Errno(int err, const std::string& what) {
  return Status::FromErrno(what, err);
}

std::string Quote(std::string_view name) {
  return "'" + std::string(name) + "'";
}

std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
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

bool Keeps(const InodeAttr& a) {
  return !a.evictable || a.pinned;
}

Result<InodeAttr> LoadInode(Db& db, Ino ino) {
  KDN_ASSIGN_OR_RETURN(Stmt q,
                       db.Prepare("SELECT " KDN_INODE_COLS " FROM inodes i WHERE i.ino = ?"));
  q.BindInt(1, ino);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("inode " + std::to_string(ino) + " does not exist");
  return ReadAttr(q, 0);
}

// A directory that can receive entries.
Result<InodeAttr> LoadDir(Db& db, Ino ino) {
  KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
  if (!S_ISDIR(a.mode)) return Errno(ENOTDIR, "inode " + std::to_string(ino));
  if (a.nlink == 0) return Errno(ENOENT, "directory " + std::to_string(ino) + " was removed");
  return a;
}

struct Dentry {
  int64_t id = 0;
  Ino ino = 0;
};

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

// Whether `dir` is `ancestor` or lies below it (walking up through the directories' parents).
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

int64_t Resolve(int64_t t, int64_t now) {
  return t == kTimeNow ? now : t;
}

}  // namespace

// ---- helpers shared with eviction and recovery
// ----------------------------------------------------

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
    KDN_RETURN_IF_ERROR(DropChunkRef(db, a.chunk, RefKind::kInode, Keeps(a), fx));
  }
  return Status::OK();
}

Status Store::Impl::DropLink(Db& db, const InodeAttr& a, int64_t now, TxnEffects& fx) {
  // The last name of a closed file: the row goes, so its link count need not be written first
  // (an unlink is then 3 statements fewer: it runs once per file of an `rm -r`).
  if (a.nlink <= 1 && !IsOpen(a.ino)) return DropInode(db, a, fx);
  return AddNlink(db, a.ino, -1, now);
}

// ---- reads
// ----------------------------------------------------------------------------------------

Result<InodeAttr> Store::GetAttr(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  return LoadInode(*db, ino);
}

Result<InodeAttr> Store::Lookup(Ino parent, std::string_view name) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  if (name == "." || name == "..") {
    KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
    KDN_ASSIGN_OR_RETURN(InodeAttr dir, LoadDir(*db, parent));
    if (name == ".") return dir;
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent FROM inodes WHERE ino = ?"));
    q.BindInt(1, parent);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    return LoadInode(*db, row && !q.IsNull(0) ? q.U64(0) : kRootIno);
  }
  if (name.size() > 255) return Errno(ENAMETOOLONG, "lookup");
  // One statement, so one snapshot: no BEGIN/COMMIT around it (this runs for every name the
  // kernel has not cached, the missing ones before each create included).
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT " KDN_INODE_COLS " FROM dentries d "
                                           "JOIN inodes i ON i.ino = d.ino "
                                           "WHERE d.parent = ? AND d.name = ?"));
  q.BindInt(1, parent).BindBlob(2, AsBytes(name));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) return ReadAttr(q, 0);
  q.Reset();
  // Absent: the directory itself may be gone (ENOENT) or not be one (ENOTDIR). A change between
  // the two statements makes no answer wrong that a slightly later lookup would have given.
  KDN_RETURN_IF_ERROR(LoadDir(*db, parent).status());
  return Status::NotFound(Quote(name) + " not found in directory " + std::to_string(parent));
}

Result<std::string> Store::ReadLink(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT mode, target FROM inodes WHERE ino = ?"));
  q.BindInt(1, ino);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::NotFound("inode " + std::to_string(ino) + " does not exist");
  if (!S_ISLNK(static_cast<mode_t>(q.U64(0)))) {
    return Status::InvalidArgument("inode " + std::to_string(ino) + " is not a symlink");
  }
  auto target = q.Blob(1);
  return std::string(reinterpret_cast<const char*>(target.data()), target.size());
}

Result<std::vector<DirEntry>> Store::ReadDir(Ino dir, uint64_t cookie, size_t max_entries) {
  std::vector<DirEntry> out;
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_ASSIGN_OR_RETURN(InodeAttr self, LoadInode(*db, dir));
  if (!S_ISDIR(self.mode)) return Errno(ENOTDIR, "readdir of inode " + std::to_string(dir));
  // Cookies: 1 after ".", 2 after "..", entry id + 2 after an entry.
  if (cookie == 0 && out.size() < max_entries) out.push_back(DirEntry{".", self, 1});
  if (cookie <= 1 && out.size() < max_entries) {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent FROM inodes WHERE ino = ?"));
    q.BindInt(1, dir);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    Ino parent = row && !q.IsNull(0) ? q.U64(0) : kRootIno;
    Result<InodeAttr> up = LoadInode(*db, parent);
    out.push_back(DirEntry{"..", up.ok() ? *up : self, 2});
  }
  if (out.size() >= max_entries) return out;
  KDN_ASSIGN_OR_RETURN(Stmt q,
                       db->Prepare("SELECT d.id, d.name, " KDN_INODE_COLS
                                   " FROM dentries d JOIN inodes i ON i.ino = d.ino "
                                   "WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?"));
  q.BindInt(1, dir).BindInt(2, cookie >= 2 ? cookie - 2 : 0);
  q.BindInt(3, static_cast<int64_t>(max_entries - out.size()));
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    auto name = q.Blob(1);
    out.push_back(DirEntry{std::string(reinterpret_cast<const char*>(name.data()), name.size()),
                           ReadAttr(q, 2), q.U64(0) + 2});
  }
  return out;
}

Result<std::string> Store::PathOf(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  std::string path;
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent, name FROM dentries WHERE ino = ? "
                                           "ORDER BY id LIMIT 1"));
  for (int depth = 0; ino != kRootIno; ++depth) {
    if (depth > 65536) return Status::Corruption("directory parents form a loop");
    q.BindInt(1, ino);
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::NotFound("inode " + std::to_string(ino) + " has no name");
    auto name = q.Blob(1);
    path = "/" + std::string(reinterpret_cast<const char*>(name.data()), name.size()) + path;
    ino = q.U64(0);
    q.Reset();
  }
  return path.empty() ? std::string("/") : path;
}

Result<std::vector<std::string>> Store::PathsOf(Ino ino, size_t max_paths) {
  std::vector<std::pair<Ino, std::string>> names;
  {
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT parent, name FROM dentries WHERE ino = ? "
                                             "ORDER BY id LIMIT ?"));
    q.BindInt(1, ino).BindInt(2, static_cast<int64_t>(max_paths));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto name = q.Blob(1);
      names.emplace_back(q.U64(0),
                         std::string(reinterpret_cast<const char*>(name.data()), name.size()));
    }
  }
  std::vector<std::string> out;
  for (const auto& [parent, name] : names) {
    // A name whose directory went meanwhile is no path any more.
    Result<std::string> dir = PathOf(parent);
    if (!dir.ok()) {
      if (dir.status().IsNotFound()) continue;
      return dir.status();
    }
    out.push_back((*dir == "/" ? std::string() : *dir) + "/" + name);
  }
  return out;
}

// ---- creating and removing names
// ------------------------------------------------------------------

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
  KDN_RETURN_IF_ERROR(impl_->Write(false, [&](Db& db, TxnEffects& fx) -> Status {
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

Result<InodeAttr> Store::Link(Ino ino, Ino new_parent, std::string_view new_name,
                              std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(new_name));
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (S_ISDIR(a.mode)) return Errno(EPERM, "hard link to a directory");
    KDN_RETURN_IF_ERROR(LoadDir(db, new_parent).status());
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> existing, FindDentry(db, new_parent, new_name));
    if (existing) return Status::AlreadyExists(Quote(new_name) + " exists");
    const int64_t now = NowNs();
    KDN_ASSIGN_OR_RETURN(Stmt d, db.Prepare("INSERT INTO dentries(parent, name, ino) "
                                            "VALUES(?, ?, ?)"));
    d.BindInt(1, new_parent).BindBlob(2, AsBytes(new_name)).BindInt(3, ino);
    KDN_RETURN_IF_ERROR(d.Run());
    KDN_RETURN_IF_ERROR(AddNlink(db, ino, 1, now));
    KDN_RETURN_IF_ERROR(TouchDir(db, new_parent, now));
    KDN_ASSIGN_OR_RETURN(out, LoadInode(db, ino));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  }));
  return out;
}

Result<InodeAttr> Store::Unlink(Ino parent, std::string_view name, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadDir(db, parent).status());
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> d, FindDentry(db, parent, name));
    if (!d) return Status::NotFound(Quote(name) + " not found");
    KDN_ASSIGN_OR_RETURN(out, LoadInode(db, d->ino));
    if (S_ISDIR(out.mode)) return Errno(EISDIR, "unlink of directory " + Quote(name));
    KDN_ASSIGN_OR_RETURN(Stmt del, db.Prepare("DELETE FROM dentries WHERE id = ?"));
    del.BindInt(1, d->id);
    KDN_RETURN_IF_ERROR(del.Run());
    const int64_t now = NowNs();
    KDN_RETURN_IF_ERROR(TouchDir(db, parent, now));
    KDN_RETURN_IF_ERROR(impl_->DropLink(db, out, now, fx));
    --out.nlink;
    out.ctime_ns = now;
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  }));
  return out;
}

Status Store::Impl::RemoveEmptyFile(Db& db, Ino ino, TxnEffects& fx,
                                    std::vector<EvictedName>* removed) {
  Result<InodeAttr> a = LoadInode(db, ino);
  if (!a.ok()) return a.status().IsNotFound() ? Status::OK() : a.status();
  if (!S_ISREG(a->mode) || !a->chunk.IsZero() || a->size != 0) return Status::OK();
  struct Name {
    int64_t id;
    Ino parent;
    std::string name;
  };
  std::vector<Name> names;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT id, parent, name FROM dentries WHERE ino = ?"));
    q.BindInt(1, ino);
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      std::span<const std::byte> n = q.Blob(2);
      names.push_back({q.Int(0), q.U64(1), std::string(reinterpret_cast<const char*>(n.data()),
                                                       n.size())});
    }
  }
  const int64_t now = NowNs();
  for (const Name& n : names) {
    KDN_ASSIGN_OR_RETURN(Stmt del, db.Prepare("DELETE FROM dentries WHERE id = ?"));
    del.BindInt(1, n.id);
    KDN_RETURN_IF_ERROR(del.Run());
    KDN_RETURN_IF_ERROR(TouchDir(db, n.parent, now));
    KDN_ASSIGN_OR_RETURN(InodeAttr current, LoadInode(db, ino));  // nlink as of this name
    KDN_RETURN_IF_ERROR(DropLink(db, current, now, fx));
    removed->push_back(EvictedName{n.parent, n.name, ino});
  }
  return Status::OK();
}

Result<std::vector<EvictedName>> Store::RemoveIfEmpty(Ino ino) {
  std::vector<EvictedName> removed;
  KDN_RETURN_IF_ERROR(impl_->Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    removed.clear();
    return impl_->RemoveEmptyFile(db, ino, fx, &removed);
  }));
  return removed;
}

Status Store::Rmdir(Ino parent, std::string_view name, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  return impl_->Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadDir(db, parent).status());
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> d, FindDentry(db, parent, name));
    if (!d) return Status::NotFound(Quote(name) + " not found");
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, d->ino));
    if (!S_ISDIR(a.mode)) return Errno(ENOTDIR, "rmdir of " + Quote(name));
    KDN_ASSIGN_OR_RETURN(bool empty, DirIsEmpty(db, d->ino));
    if (!empty) return Errno(ENOTEMPTY, "rmdir of " + Quote(name));
    KDN_ASSIGN_OR_RETURN(Stmt del, db.Prepare("DELETE FROM dentries WHERE id = ?"));
    del.BindInt(1, d->id);
    KDN_RETURN_IF_ERROR(del.Run());
    const int64_t now = NowNs();
    KDN_RETURN_IF_ERROR(AddNlink(db, parent, -1, now));
    KDN_RETURN_IF_ERROR(TouchDir(db, parent, now));
    KDN_RETURN_IF_ERROR(AddNlink(db, d->ino, -2, now));
    if (!impl_->IsOpen(d->ino)) KDN_RETURN_IF_ERROR(impl_->DropInode(db, d->ino, fx));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

Status Store::Rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                     uint32_t flags, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  KDN_RETURN_IF_ERROR(CheckName(new_name));
  if ((flags & ~(kRenameNoReplace | kRenameExchange)) != 0 ||
      flags == (kRenameNoReplace | kRenameExchange)) {
    return Status::InvalidArgument("rename flags " + std::to_string(flags));
  }
  return impl_->Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadDir(db, parent).status());
    KDN_RETURN_IF_ERROR(LoadDir(db, new_parent).status());
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> src, FindDentry(db, parent, name));
    if (!src) return Status::NotFound(Quote(name) + " not found");
    KDN_ASSIGN_OR_RETURN(std::optional<Dentry> dst, FindDentry(db, new_parent, new_name));
    KDN_ASSIGN_OR_RETURN(InodeAttr s, LoadInode(db, src->ino));
    const bool s_dir = S_ISDIR(s.mode);
    const int64_t now = NowNs();
    if (dst && dst->ino == src->ino) return Status::OK();  // two names of one inode: nothing to do

    if (flags & kRenameExchange) {
      if (!dst) return Status::NotFound(Quote(new_name) + " not found (exchange)");
      KDN_ASSIGN_OR_RETURN(InodeAttr d, LoadInode(db, dst->ino));
      const bool d_dir = S_ISDIR(d.mode);
      if (s_dir && parent != new_parent) {
        KDN_ASSIGN_OR_RETURN(bool loop, IsWithin(db, new_parent, s.ino));
        if (loop) return Status::InvalidArgument("rename would move a directory into itself");
      }
      if (d_dir && parent != new_parent) {
        KDN_ASSIGN_OR_RETURN(bool loop, IsWithin(db, parent, d.ino));
        if (loop) return Status::InvalidArgument("rename would move a directory into itself");
      }
      KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE dentries SET ino = ? WHERE id = ?"));
      u.BindInt(1, d.ino).BindInt(2, src->id);
      KDN_RETURN_IF_ERROR(u.Run());
      u.BindInt(1, s.ino).BindInt(2, dst->id);
      KDN_RETURN_IF_ERROR(u.Run());
      if (parent != new_parent) {
        if (s_dir) {
          KDN_RETURN_IF_ERROR(SetParent(db, s.ino, new_parent));
          KDN_RETURN_IF_ERROR(AddNlink(db, parent, -1, now));
          KDN_RETURN_IF_ERROR(AddNlink(db, new_parent, 1, now));
        }
        if (d_dir) {
          KDN_RETURN_IF_ERROR(SetParent(db, d.ino, parent));
          KDN_RETURN_IF_ERROR(AddNlink(db, new_parent, -1, now));
          KDN_RETURN_IF_ERROR(AddNlink(db, parent, 1, now));
        }
      }
      KDN_RETURN_IF_ERROR(AddNlink(db, s.ino, 0, now));
      KDN_RETURN_IF_ERROR(AddNlink(db, d.ino, 0, now));
      KDN_RETURN_IF_ERROR(TouchDir(db, parent, now));
      KDN_RETURN_IF_ERROR(TouchDir(db, new_parent, now));
      return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
    }

    if (s_dir && new_parent != parent) {
      KDN_ASSIGN_OR_RETURN(bool loop, IsWithin(db, new_parent, s.ino));
      if (loop) return Status::InvalidArgument("rename would move a directory into itself");
    }
    if (dst) {
      if (flags & kRenameNoReplace) return Status::AlreadyExists(Quote(new_name) + " exists");
      KDN_ASSIGN_OR_RETURN(InodeAttr d, LoadInode(db, dst->ino));
      const bool d_dir = S_ISDIR(d.mode);
      if (s_dir && !d_dir) return Errno(ENOTDIR, "rename of a directory over " + Quote(new_name));
      if (!s_dir && d_dir) return Errno(EISDIR, "rename over directory " + Quote(new_name));
      if (d_dir) {
        KDN_ASSIGN_OR_RETURN(bool empty, DirIsEmpty(db, d.ino));
        if (!empty) return Errno(ENOTEMPTY, "rename over " + Quote(new_name));
      }
      KDN_ASSIGN_OR_RETURN(Stmt del, db.Prepare("DELETE FROM dentries WHERE id = ?"));
      del.BindInt(1, dst->id);
      KDN_RETURN_IF_ERROR(del.Run());
      if (d_dir) {
        KDN_RETURN_IF_ERROR(AddNlink(db, new_parent, -1, now));
        KDN_RETURN_IF_ERROR(AddNlink(db, d.ino, -2, now));
        if (!impl_->IsOpen(d.ino)) KDN_RETURN_IF_ERROR(impl_->DropInode(db, d.ino, fx));
      } else {
        KDN_RETURN_IF_ERROR(impl_->DropLink(db, d, now, fx));
      }
    }
    KDN_ASSIGN_OR_RETURN(Stmt mv,
                         db.Prepare("UPDATE dentries SET parent = ?, name = ? WHERE id = ?"));
    mv.BindInt(1, new_parent).BindBlob(2, AsBytes(new_name)).BindInt(3, src->id);
    KDN_RETURN_IF_ERROR(mv.Run());
    if (s_dir && parent != new_parent) {
      KDN_RETURN_IF_ERROR(SetParent(db, s.ino, new_parent));
      KDN_RETURN_IF_ERROR(AddNlink(db, parent, -1, now));
      KDN_RETURN_IF_ERROR(AddNlink(db, new_parent, 1, now));
    }
    KDN_RETURN_IF_ERROR(AddNlink(db, s.ino, 0, now));  // ctime
    KDN_RETURN_IF_ERROR(TouchDir(db, parent, now));
    KDN_RETURN_IF_ERROR(TouchDir(db, new_parent, now));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

// ---- attributes
// -----------------------------------------------------------------------------------

Result<InodeAttr> Store::SetAttr(Ino ino, const SetAttrRequest& req,
                                 std::string_view outbox_note) {
  InodeAttr a;
  KDN_RETURN_IF_ERROR(impl_->Write(false, [&](Db& db, TxnEffects& fx) -> Status {
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
        KDN_RETURN_IF_ERROR(impl_->DropChunkRef(db, a.chunk, RefKind::kInode, Keeps(a), fx));
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

Status Store::SetEvictable(Ino ino, bool evictable) {
  return impl_->Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (a.evictable == evictable) return Status::OK();
    const bool keep_before = Keeps(a);
    a.evictable = evictable;
    if (!a.chunk.IsZero() && Keeps(a) != keep_before) {
      KDN_ASSIGN_OR_RETURN(Stmt c,
                           db.Prepare("UPDATE chunks SET inode_keep = max(inode_keep + ?, 0) "
                                      "WHERE id = ?"));
      c.BindInt(1, Keeps(a) ? 1 : -1).BindId(2, a.chunk);
      KDN_RETURN_IF_ERROR(c.Run());
    }
    KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE inodes SET evictable = ?, ctime = ? "
                                            "WHERE ino = ?"));
    u.BindInt(1, evictable ? 1 : 0).BindInt(2, NowNs()).BindInt(3, ino);
    return u.Run();
  });
}

Status Store::SetPinned(Ino ino, bool pinned) {
  return impl_->Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (S_ISDIR(a.mode)) return Status::InvalidArgument("only files can be pinned");
    if (a.pinned == pinned) return Status::OK();
    const bool keep_before = Keeps(a);
    a.pinned = pinned;
    if (!a.chunk.IsZero() && Keeps(a) != keep_before) {
      KDN_ASSIGN_OR_RETURN(Stmt c,
                           db.Prepare("UPDATE chunks SET inode_keep = max(inode_keep + ?, 0) "
                                      "WHERE id = ?"));
      c.BindInt(1, Keeps(a) ? 1 : -1).BindId(2, a.chunk);
      KDN_RETURN_IF_ERROR(c.Run());
    }
    KDN_ASSIGN_OR_RETURN(Stmt u,
                         db.Prepare("UPDATE inodes SET pinned = ?, ctime = ? WHERE ino = ?"));
    u.BindInt(1, pinned ? 1 : 0).BindInt(2, NowNs()).BindInt(3, ino);
    return u.Run();
  });
}

// ---- xattrs
// ---------------------------------------------------------------------------------------

Result<std::string> Store::GetXattr(Ino ino, std::string_view name) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT value FROM xattrs WHERE ino = ? AND name = ?"));
  q.BindInt(1, ino).BindBlob(2, AsBytes(name));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) {
    auto v = q.Blob(0);
    return std::string(reinterpret_cast<const char*>(v.data()), v.size());
  }
  q.Reset();
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  return Status::NotFound("no attribute " + Quote(name));
}

Status Store::SetXattr(Ino ino, std::string_view name, std::string_view value, XattrSetMode mode,
                       std::string_view outbox_note) {
  if (name.empty() || name.size() > 255) return Errno(ERANGE, "attribute name length");
  if (value.size() > 65536) return Errno(E2BIG, "attribute value longer than 64 KiB");
  return impl_->Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadInode(db, ino).status());
    bool exists;
    uint64_t old_bytes = 0;  // name + value of the attribute replaced
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT length(name) + length(value) FROM xattrs "
                                              "WHERE ino = ? AND name = ?"));
      q.BindInt(1, ino).BindBlob(2, AsBytes(name));
      KDN_ASSIGN_OR_RETURN(exists, q.Step());
      if (exists) old_bytes = q.U64(0);
    }
    if (exists && mode == XattrSetMode::kCreate) {
      return Status::AlreadyExists("attribute " + Quote(name) + " exists");
    }
    if (!exists && mode == XattrSetMode::kReplace) {
      return Status::NotFound("no attribute " + Quote(name));
    }
    uint64_t inode_bytes = 0;  // every attribute of the inode
    {
      KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("SELECT COALESCE(SUM(length(name) + "
                                              "length(value)), 0) FROM xattrs WHERE ino = ?"));
      q.BindInt(1, ino);
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (row) inode_bytes = q.U64(0);
    }
    const uint64_t new_bytes = name.size() + value.size();
    if (inode_bytes - old_bytes + new_bytes > kMaxXattrBytes) {
      return Errno(ENOSPC, "the inode's attributes would hold " +
                               std::to_string(inode_bytes - old_bytes + new_bytes) +
                               " bytes, more than " + std::to_string(kMaxXattrBytes));
    }
    if (new_bytes > old_bytes) {
      // Capacity for the growth; the transaction's effects turn it into used bytes. Checked
      // against what is used and reserved now: attributes are small and never evict content.
      const uint64_t grow = new_bytes - old_bytes;
      const uint64_t cap = impl_->capacity.load();
      MutexLock lock(impl_->space_mu);
      if (cap != 0 && impl_->used_bytes + impl_->reserved_bytes + grow > cap) {
        return Status::NoSpace("store is full: no room for " + std::to_string(grow) +
                               " more bytes of extended attributes");
      }
    }
    fx.xattr_bytes_delta += static_cast<int64_t>(new_bytes) - static_cast<int64_t>(old_bytes);
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT OR REPLACE INTO xattrs(ino, name, value) "
                                            "VALUES(?, ?, ?)"));
    q.BindInt(1, ino).BindBlob(2, AsBytes(name)).BindBlob(3, AsBytes(value));
    KDN_RETURN_IF_ERROR(q.Run());
    KDN_RETURN_IF_ERROR(AddNlink(db, ino, 0, NowNs()));  // ctime
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

Result<std::vector<std::string>> Store::ListXattr(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT name FROM xattrs WHERE ino = ? ORDER BY name"));
  q.BindInt(1, ino);
  std::vector<std::string> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    auto n = q.Blob(0);
    out.emplace_back(reinterpret_cast<const char*>(n.data()), n.size());
  }
  return out;
}

Status Store::RemoveXattr(Ino ino, std::string_view name, std::string_view outbox_note) {
  return impl_->Write(false, [&](Db& db, TxnEffects& fx) -> Status {
    KDN_RETURN_IF_ERROR(LoadInode(db, ino).status());
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("DELETE FROM xattrs WHERE ino = ? AND name = ? "
                                            "RETURNING length(name) + length(value)"));
    q.BindInt(1, ino).BindBlob(2, AsBytes(name));
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::NotFound("no attribute " + Quote(name));
    fx.xattr_bytes_delta -= static_cast<int64_t>(q.U64(0));
    q.Reset();
    KDN_RETURN_IF_ERROR(AddNlink(db, ino, 0, NowNs()));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

// ---- open files
// -----------------------------------------------------------------------------------

Status Store::OpenInode(Ino ino) {
  // Under open_mu, so that a concurrent unlink either sees this open or has already committed the
  // inode's deletion (and then the check below fails).
  std::lock_guard lock(impl_->open_mu);
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  ++impl_->open_counts[ino];
  return Status::OK();
}

Status Store::CloseInode(Ino ino) {
  {
    std::lock_guard lock(impl_->open_mu);
    auto it = impl_->open_counts.find(ino);
    if (it == impl_->open_counts.end()) {
      return Status::InvalidArgument("inode " + std::to_string(ino) + " is not open");
    }
    if (--it->second > 0) return Status::OK();
    impl_->open_counts.erase(it);
  }
  {
    // Nearly every file closed still has a name: nothing to reclaim, no transaction to pay for.
    // Sound without a lock: an unlink that found it open committed before the erase above (it
    // holds open_mu through COMMIT), so this newer snapshot sees its nlink of 0; one that comes
    // later finds it closed and reclaims it itself.
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
    Result<InodeAttr> a = LoadInode(*db, ino);
    if (a.ok() && a->nlink > 0) return Status::OK();
  }
  return impl_->Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    if (impl_->IsOpen(ino)) return Status::OK();  // opened again meanwhile
    Result<InodeAttr> a = LoadInode(db, ino);
    if (!a.ok()) return a.status().IsNotFound() ? Status::OK() : a.status();
    if (a->nlink == 0) return impl_->DropInode(db, ino, fx);
    return Status::OK();
  });
}

// ---- content
// --------------------------------------------------------------------------------------

Status Store::Impl::SetContent(Db& db, Ino ino, PreparedChunk& chunk, const CommitOptions& opts,
                               TxnEffects& fx, bool* vanished, InodeAttr* out) {
  KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
  if (S_ISDIR(a.mode)) return Errno(EISDIR, "content for directory " + std::to_string(ino));
  if (!S_ISREG(a.mode)) return Status::InvalidArgument("content for a non-regular file");
  const bool keep = Keeps(a);
  ChunkId id;
  const uint64_t size = chunk.size;
  if (size > 0) {
    KDN_ASSIGN_OR_RETURN(bool ok, InstallChunk(db, chunk, RefKind::kInode, keep, fx));
    if (!ok) {
      *vanished = true;
      return Status::Internal("chunk vanished during commit");
    }
    id = chunk.id;
  }
  // The new reference first, so that committing the same content again never drops the chunk.
  if (!a.chunk.IsZero()) KDN_RETURN_IF_ERROR(DropChunkRef(db, a.chunk, RefKind::kInode, keep, fx));
  const int64_t now = NowNs();
  a.chunk = id;
  a.size = size;
  a.mtime_ns = Resolve(opts.mtime_ns, now);
  a.ctime_ns = now;
  KDN_ASSIGN_OR_RETURN(Stmt u, db.Prepare("UPDATE inodes SET chunk = ?, size = ?, mtime = ?, "
                                          "ctime = ? WHERE ino = ?"));
  if (id.IsZero()) {
    u.BindNull(1);
  } else {
    u.BindId(1, id);
  }
  u.BindInt(2, size).BindInt(3, a.mtime_ns).BindInt(4, now).BindInt(5, ino);
  KDN_RETURN_IF_ERROR(u.Run());
  KDN_RETURN_IF_ERROR(AppendOutbox(db, id, opts.outbox_note));
  *out = a;
  return Status::OK();
}

Result<InodeAttr> Store::CommitFileContent(Ino ino, const std::string& staged_path,
                                           const CommitOptions& options) {
  // The capacity the caller holds goes back unless the prepared chunk takes it over.
  struct HeldSpace {
    Store* store;
    uint64_t bytes;
    ~HeldSpace() { store->ReleaseSpace(bytes); }
  } held{this, options.reserved_bytes};
  UniqueFd fd = OpenFd(staged_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!fd.valid()) return Status::FromErrno("opening " + staged_path, errno);
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<PreparedChunk> chunk,
                       impl_->PrepareFile(fd.get(), staged_path));
  chunk->reserved = std::exchange(held.bytes, 0);
  store::FileChunkSource source(fd.get(), chunk->size, staged_path);
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->StoreAndCommit(
      *chunk, source, false, [&](Db& db, TxnEffects& fx, bool* vanished) -> Status {
        if (chunk->written && chunk->size > 0)
          KDN_RETURN_IF_ERROR(source.CheckUnchanged(chunk->id));
        return impl_->SetContent(db, ino, *chunk, options, fx, vanished, &out);
      }));
  ::unlink(staged_path.c_str());
  ++impl_->counters.puts;
  impl_->counters.put_bytes += chunk->size;
  return out;
}

Result<InodeAttr> Store::CommitFileContent(Ino ino, std::span<const std::byte> content,
                                           const CommitOptions& options) {
  struct HeldSpace {
    Store* store;
    uint64_t bytes;
    ~HeldSpace() { store->ReleaseSpace(bytes); }
  } held{this, options.reserved_bytes};
  store::MemoryChunkSource source(content);
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<PreparedChunk> chunk,
                       impl_->PrepareMemory(content, source));
  chunk->reserved += std::exchange(held.bytes, 0);
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->StoreAndCommit(
      *chunk, source, false, [&](Db& db, TxnEffects& fx, bool* vanished) -> Status {
        return impl_->SetContent(db, ino, *chunk, options, fx, vanished, &out);
      }));
  ++impl_->counters.puts;
  impl_->counters.put_bytes += chunk->size;
  return out;
}

// ---- the outbox
// -----------------------------------------------------------------------------------

Status Store::Impl::AppendOutbox(Db& db, const ChunkId& chunk, std::string_view note) {
  if (note.empty()) return Status::OK();
  KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT INTO outbox(chunk, body) VALUES(?, ?)"));
  if (chunk.IsZero()) {
    q.BindNull(1);
  } else {
    q.BindId(1, chunk);
  }
  q.BindBlob(2, AsBytes(note));
  return q.Run();
}

Result<std::vector<OutboxNote>> Store::ReadOutbox(uint64_t after_seq, size_t max_notes) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT seq, chunk, body FROM outbox WHERE seq > ? "
                                           "ORDER BY seq LIMIT ?"));
  q.BindInt(1, static_cast<int64_t>(after_seq)).BindInt(2, static_cast<int64_t>(max_notes));
  std::vector<OutboxNote> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    std::span<const std::byte> body = q.Blob(2);
    out.push_back(OutboxNote{q.U64(0), q.Chunk(1),
                             std::string(reinterpret_cast<const char*>(body.data()), body.size())});
  }
  return out;
}

Status Store::RemoveOutboxNote(uint64_t seq) {
  return impl_->Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("DELETE FROM outbox WHERE seq = ?"));
    q.BindInt(1, static_cast<int64_t>(seq));
    return q.Run();
  });
}

Result<Store::OutboxState> Store::GetOutboxState() {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT count(*), ifnull(min(seq), 0), "
                                           "ifnull(max(seq), 0) FROM outbox"));
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  OutboxState state;
  if (row) state = OutboxState{q.U64(0), q.U64(1), q.U64(2)};
  return state;
}

Result<bool> Store::OutboxNamesChunk(const ChunkId& chunk) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT 1 FROM outbox WHERE chunk = ? LIMIT 1"));
  q.BindId(1, chunk);
  return q.Step();
}

// ---- content lookups
// ------------------------------------------------------------------------------

Result<std::vector<PrefixMatch>> Store::LookupPrefix(const Hash128& hash, size_t max_results) {
  ++impl_->counters.prefix_lookups;
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  std::vector<PrefixMatch> out;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT p.chunk, p.idx, k.n_tokens FROM prefixes p "
                                             "JOIN kv_meta k ON k.chunk = p.chunk "
                                             "WHERE p.hash = ? LIMIT ?"));
    q.BindId(1, hash).BindInt(2, static_cast<int64_t>(max_results));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      out.push_back(PrefixMatch{q.Chunk(0), static_cast<uint32_t>(q.U64(1)),
                                static_cast<uint32_t>(q.U64(2)), 0});
    }
  }
  KDN_ASSIGN_OR_RETURN(Stmt f, db->Prepare("SELECT ino FROM inodes WHERE chunk = ? AND nlink > 0 "
                                           "ORDER BY ino LIMIT 1"));
  for (PrefixMatch& m : out) {
    f.BindId(1, m.chunk);
    KDN_ASSIGN_OR_RETURN(bool row, f.Step());
    if (row) m.ino = f.U64(0);
    f.Reset();
  }
  if (!out.empty()) ++impl_->counters.prefix_hits;
  return out;
}

Result<std::vector<DirPrefixMatch>> Store::LookupPrefixInDir(Ino dir, const Hash128& hash,
                                                             std::span<const uint32_t> owners,
                                                             size_t max_results) {
  ++impl_->counters.prefix_lookups;
  std::vector<DirPrefixMatch> out;
  if (owners.empty() || max_results == 0) return out;
  if (owners.size() > kMaxPrefixOwners) {
    return Status::InvalidArgument("more than " + std::to_string(kMaxPrefixOwners) +
                                   " owners for a prefix lookup");
  }
  // One statement text for every call (Db caches statements by their text's address): a fixed
  // number of owner slots, the unused ones repeating the first owner.
  static const std::string sql = [] {
    std::string s =
        "SELECT d.name, d.ino, p.idx FROM prefixes p "
        "JOIN inodes i ON i.chunk = p.chunk JOIN dentries d ON d.ino = i.ino "
        "WHERE p.hash = ? AND d.parent = ? AND i.uid IN (";
    for (size_t k = 0; k < kMaxPrefixOwners; ++k) s += k == 0 ? "?" : ", ?";
    return s + ") ORDER BY d.name LIMIT ?";
  }();
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(store::ReadTxn snapshot, store::ReadTxn::Begin(*db));
  std::vector<std::pair<std::string, Ino>> rows;
  std::vector<uint32_t> idx;
  {
    KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare(sql.c_str()));
    q.BindId(1, hash).BindInt(2, static_cast<int64_t>(dir));
    for (size_t k = 0; k < kMaxPrefixOwners; ++k) {
      q.BindInt(static_cast<int>(3 + k), owners[k < owners.size() ? k : 0]);
    }
    q.BindInt(static_cast<int>(3 + kMaxPrefixOwners), static_cast<int64_t>(max_results));
    while (true) {
      KDN_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      auto name = q.Blob(0);
      rows.emplace_back(std::string(reinterpret_cast<const char*>(name.data()), name.size()),
                        q.U64(1));
      idx.push_back(static_cast<uint32_t>(q.U64(2)));
    }
  }
  for (size_t k = 0; k < rows.size(); ++k) {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(*db, rows[k].second));
    if (!S_ISREG(a.mode)) continue;
    out.push_back(DirPrefixMatch{std::move(rows[k].first), a, idx[k]});
  }
  if (!out.empty()) ++impl_->counters.prefix_hits;
  return out;
}

Result<std::vector<Ino>> Store::InodesWithChunk(const ChunkId& chunk, size_t max_results) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT ino FROM inodes WHERE chunk = ? AND nlink > 0 "
                                           "ORDER BY ino LIMIT ?"));
  q.BindId(1, chunk).BindInt(2, static_cast<int64_t>(max_results));
  std::vector<Ino> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.U64(0));
  }
  return out;
}

// ---- quota figures
// --------------------------------------------------------------------------------

Result<uint64_t> Store::FileBytesOfOwner(uint32_t uid) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT COALESCE(SUM((size + 4095) / 4096 * 4096), 0) "
                                           "FROM inodes WHERE uid = ? AND (mode & 61440) = 32768"));
  q.BindInt(1, uid);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.U64(0) : uint64_t{0};
}

Result<uint64_t> Store::FileBytesInDir(Ino dir) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT COALESCE(SUM((i.size + 4095) / 4096 * 4096), 0) "
                                           "FROM dentries d JOIN inodes i ON i.ino = d.ino "
                                           "WHERE d.parent = ? AND (i.mode & 61440) = 32768"));
  q.BindInt(1, dir);
  KDN_ASSIGN_OR_RETURN(bool row, q.Step());
  return row ? q.U64(0) : uint64_t{0};
}

Result<std::vector<Ino>> Store::ParentsOf(Ino ino) {
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_ASSIGN_OR_RETURN(Stmt q, db->Prepare("SELECT DISTINCT parent FROM dentries WHERE ino = ?"));
  q.BindInt(1, ino);
  std::vector<Ino> out;
  while (true) {
    KDN_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.U64(0));
  }
  return out;
}

}  // namespace kdn
