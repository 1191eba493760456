// Open counts: OpenInode, CloseInode (an unlinked inode is reclaimed at its last close).
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

Status Store::OpenInode(Ino ino) {
  // Under the open counts' lock, so that a concurrent unlink either sees this open or has already committed the
  // inode's deletion (and then the check below fails).
  std::lock_guard lock(impl_->opens.mu());
  KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
  KDN_RETURN_IF_ERROR(LoadInode(*db, ino).status());
  impl_->opens.Open(ino);
  return Status::OK();
}

Status Store::CloseInode(Ino ino) {
  {
    std::lock_guard lock(impl_->opens.mu());
    const std::optional<uint32_t> left = impl_->opens.Close(ino);
    if (!left) return Status::InvalidArgument("inode " + std::to_string(ino) + " is not open");
    if (*left > 0) return Status::OK();
  }
  {
    // Nearly every file closed still has a name: nothing to reclaim, no transaction to pay for.
    // Sound without a lock: an unlink that found it open committed before the erase above (it
    // holds that lock through COMMIT), so this newer snapshot sees its nlink of 0; one that comes
    // later finds it closed and reclaims it itself.
    KDN_ASSIGN_OR_RETURN(store::DbPool::Lease db, impl_->readers->Acquire());
    Result<InodeAttr> a = LoadInode(*db, ino);
    if (a.ok() && a->nlink > 0) return Status::OK();
  }
  return impl_->txn.Write(true, [&](Db& db, TxnEffects& fx) -> Status {
    if (impl_->opens.IsOpen(ino)) return Status::OK();  // opened again meanwhile
    Result<InodeAttr> a = LoadInode(db, ino);
    if (!a.ok()) return a.status().IsNotFound() ? Status::OK() : a.status();
    if (a->nlink == 0) return impl_->DropInode(db, ino, fx);
    return Status::OK();
  });
}

}  // namespace kdn
