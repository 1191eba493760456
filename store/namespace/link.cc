// Link: another name for an existing non-directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>
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

Result<InodeAttr> Store::Link(Ino ino, Ino new_parent, std::string_view new_name,
                              std::string_view outbox_note) {
  KDN_RETURN_IF_ERROR(CheckName(new_name));
  InodeAttr out;
  KDN_RETURN_IF_ERROR(impl_->txn.Write(false, [&](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(InodeAttr a, LoadInode(db, ino));
    if (S_ISDIR(a.mode)) return Errno(EPERM, "hard link to a directory");
    if (a.nlink >= kMaxLinks) {
      return Errno(EMLINK, "a file has at most " + std::to_string(kMaxLinks) + " names");
    }
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

}  // namespace kdn
