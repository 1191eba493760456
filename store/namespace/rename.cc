// Rename: moving (or exchanging) a name, replacing what the new name held.
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

Status Store::Rename(Ino parent, std::string_view name, Ino new_parent, std::string_view new_name,
                     uint32_t flags, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  KDN_RETURN_IF_ERROR(CheckName(new_name));
  if ((flags & ~(kRenameNoReplace | kRenameExchange)) != 0 ||
      flags == (kRenameNoReplace | kRenameExchange)) {
    return Status::InvalidArgument("rename flags " + std::to_string(flags));
  }
  return impl_->txn.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
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
        if (!impl_->opens.IsOpen(d.ino)) KDN_RETURN_IF_ERROR(impl_->DropInode(db, d.ino, fx));
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

}  // namespace kdn
