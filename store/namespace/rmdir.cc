// Rmdir: removing an empty directory.
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

Status Store::Rmdir(Ino parent, std::string_view name, std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(name));
  return impl_->txn.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
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
    if (!impl_->opens.IsOpen(d->ino)) KDN_RETURN_IF_ERROR(impl_->DropInode(db, d->ino, fx));
    return impl_->AppendOutbox(db, ChunkId{}, outbox_note);
  });
}

}  // namespace kdn
