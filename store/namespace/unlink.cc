// Unlink, and removing the names of an empty regular file (RemoveIfEmpty).
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

Result<InodeAttr> Store::Unlink(Ino parent, std::string_view name, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->txn.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
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
  KDN_RETURN_IF_ERROR(impl_->txn.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    removed.clear();
    return impl_->RemoveEmptyFile(db, ino, fx, &removed);
  }));
  return removed;
}

}  // namespace kdn
