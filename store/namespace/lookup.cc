// Lookups: GetAttr, Lookup (a name in a directory), ReadLink.
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

}  // namespace kdn
